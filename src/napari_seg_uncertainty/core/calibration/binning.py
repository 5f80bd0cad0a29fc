"""Equal-width reliability bins on the max-probability confidence: ECE, ACE, MCE and the L2 error.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020,
   eq. (5).
.. [2] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks",
   ICML 2017.
.. [3] M. P. Naeini, G. F. Cooper, M. Hauskrecht, "Obtaining Well Calibrated Probabilities Using
   Bayesian Binning", AAAI 2015 (MCE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import CHUNK_VOXELS, iter_chunks
from ._targets import BinClosure, Prepared, check_closed, check_num_bins, prepare

__all__ = [
    "ReliabilityBins",
    "average_calibration_error",
    "bin_edges",
    "expected_calibration_error",
    "l2_calibration_error",
    "reliability_bins",
]


def bin_edges(num_bins: int, dtype: Any = np.float64) -> np.ndarray:
    """The ``num_bins + 1`` edges ``k / num_bins`` of equal-width bins on [0, 1], exact in ``dtype``.

    Each edge is the division ``k / M`` rounded once in ``dtype`` (not a float64 ``linspace`` cast
    afterwards), so a confidence equal to ``dtype(0.3)`` sits exactly on the edge 0.3.

    Examples
    --------
    >>> bin_edges(10)[[3, 7]].tolist()
    [0.3, 0.7]
    >>> bool(bin_edges(10, np.float32)[3] == np.float32(0.3))
    True
    """
    dt = np.dtype(dtype)
    return np.arange(num_bins + 1, dtype=dt) / dt.type(num_bins)


def confidence_and_prediction(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Max probability and arg-max over axis 0 of a ``(C, m)`` block (first class wins ties).

    The arg-max is updated arithmetically (``pred += better * (c - pred)`` in unsigned modular
    arithmetic), which is several times faster than masked assignment or :func:`numpy.argmax` on axis 0.
    """
    num_classes = p.shape[0]
    dtype = np.uint8 if num_classes <= 256 else np.uint16
    conf = p[0].copy()
    pred = np.zeros(p.shape[1], dtype=dtype)
    for c in range(1, num_classes):
        better = p[c] > conf
        np.maximum(conf, p[c], out=conf)
        pred += better.view(np.uint8).astype(dtype, copy=False) * (dtype(c) - pred)
    return conf, pred


def bin_index(values: np.ndarray, edges: np.ndarray, num_bins: int, closed: str) -> np.ndarray:
    """Equal-width bin of each value in [0, 1], exact with respect to ``edges`` (:func:`bin_edges`)."""
    if num_bins <= 32:
        # Count the inner edges below each value: a few cheap passes, exact by construction.
        k = np.zeros(values.shape, dtype=np.uint8)
        for edge in edges[1:-1]:
            passed = values > edge if closed == "right" else values >= edge
            k += passed.view(np.uint8)
        return k.astype(np.intp)
    k = (values * num_bins).astype(np.intp)
    np.clip(k, 0, num_bins - 1, out=k)
    # values * num_bins is rounded, so the floor may be one off near an edge: correct against the edges.
    if closed == "right":  # (e[k], e[k+1]]; bin 0 also holds 0
        k += values > edges[k + 1]
        k -= (values <= edges[k]) & (k > 0)
    else:  # [e[k], e[k+1]); the last bin also holds 1
        k -= values < edges[k]
        k += (values >= edges[k + 1]) & (k < num_bins - 1)
    return k


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (equal-width bins on max-probability confidence).

    Attributes
    ----------
    edges : numpy.ndarray
        ``num_bins + 1`` bin edges ``k / num_bins`` (float64).
    count : numpy.ndarray
        Number of voxels per bin (int64).
    confidence : numpy.ndarray
        Mean confidence per bin (NaN for an empty bin).
    accuracy : numpy.ndarray
        Mean accuracy per bin (NaN for an empty bin); with a rater stack or soft target the mean target
        probability of the predicted class (the expected accuracy against a rater drawn at random).
    closed : str
        ``"right"`` or ``"left"``: which side of each bin interval is closed.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    closed: str = "right"

    @classmethod
    def from_sums(
        cls, count: np.ndarray, confidence_sum: np.ndarray, accuracy_sum: np.ndarray, *, closed: str
    ) -> ReliabilityBins:
        """Bins from per-bin voxel counts and sums of confidence and accuracy."""
        count = np.asarray(count, dtype=np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            confidence = np.where(count > 0, confidence_sum / count, np.nan)
            accuracy = np.where(count > 0, accuracy_sum / count, np.nan)
        return cls(edges=bin_edges(count.size), count=count, confidence=confidence, accuracy=accuracy, closed=closed)

    @property
    def num_bins(self) -> int:
        """Number of bins."""
        return int(self.count.size)

    @property
    def total(self) -> int:
        """Number of voxels counted."""
        return int(self.count.sum())

    @property
    def fraction(self) -> np.ndarray:
        """Fraction of the voxels in each bin (the confidence histogram)."""
        return self.count / max(self.total, 1)

    @property
    def gap(self) -> np.ndarray:
        """Confidence minus accuracy per bin (> 0: over-confident); NaN for empty bins."""
        return self.confidence - self.accuracy

    def _filled_gaps(self) -> tuple[np.ndarray, np.ndarray]:
        filled = self.count > 0
        return np.abs(self.accuracy[filled] - self.confidence[filled]), self.count[filled]

    @property
    def expected_calibration_error(self) -> float:
        """ECE: count-weighted mean of ``|accuracy - confidence|`` over the non-empty bins."""
        gaps, count = self._filled_gaps()
        if count.size == 0:
            return float("nan")
        return float(np.sum(count / count.sum() * gaps))

    @property
    def average_calibration_error(self) -> float:
        """ACE: unweighted mean of ``|accuracy - confidence|`` over the non-empty bins."""
        gaps, count = self._filled_gaps()
        return float(np.mean(gaps)) if count.size else float("nan")

    @property
    def maximum_calibration_error(self) -> float:
        """MCE: largest ``|accuracy - confidence|`` over the non-empty bins."""
        gaps, count = self._filled_gaps()
        return float(np.max(gaps)) if count.size else float("nan")

    @property
    def l2_calibration_error(self) -> float:
        """RMS calibration error: ``sqrt(sum_m |D_m|/N (accuracy - confidence)^2)`` over the non-empty bins."""
        gaps, count = self._filled_gaps()
        if count.size == 0:
            return float("nan")
        return float(np.sqrt(np.sum(count / count.sum() * gaps * gaps)))

    def to_records(self) -> list[dict[str, float | int]]:
        """One dict per bin (lower, upper, count, fraction, confidence, accuracy, gap) for tables and CSV."""
        fraction = self.fraction
        return [
            {
                "bin": i,
                "lower": float(self.edges[i]),
                "upper": float(self.edges[i + 1]),
                "count": int(self.count[i]),
                "fraction": float(fraction[i]),
                "confidence": float(self.confidence[i]),
                "accuracy": float(self.accuracy[i]),
                "gap": float(self.gap[i]),
            }
            for i in range(self.num_bins)
        ]


def bin_sums(prep: Prepared, *, num_bins: int, closed: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin voxel count, correct count (hard labels), confidence sum and soft accuracy sum.

    Streams over the voxels in chunks (no full-size temporaries). Counts are exact int64; with hard
    labels the accuracy is the integer correct count, with a soft target the float64 ``soft_sum``.
    """
    p = prep.probs
    edges = bin_edges(num_bins, p.dtype)
    overflow = num_bins  # masked-out voxels go to an extra bin that is dropped
    count = np.zeros(num_bins + 1, dtype=np.int64)
    correct = np.zeros(num_bins + 1, dtype=np.int64)
    conf_sum = np.zeros(num_bins + 1, dtype=np.float64)
    soft_sum = np.zeros(num_bins + 1, dtype=np.float64)
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        conf, pred = confidence_and_prediction(block)
        np.clip(conf, 0.0, 1.0, out=conf)
        k = bin_index(conf, edges, num_bins, closed)
        if prep.mask is not None:
            k[~prep.mask[sl]] = overflow
        if prep.labels is not None:
            hit = (pred == prep.labels[sl]).view(np.uint8)
            both = np.bincount(2 * k + hit, minlength=2 * (num_bins + 1))
            count += both[0::2] + both[1::2]
            correct += both[1::2]
        else:
            assert prep.soft is not None
            agreement = np.take_along_axis(prep.soft[:, sl], pred.astype(np.intp)[None], axis=0)[0]
            count += np.bincount(k, minlength=num_bins + 1)
            soft_sum += np.bincount(k, weights=agreement, minlength=num_bins + 1)
        conf_sum += np.bincount(k, weights=conf, minlength=num_bins + 1)
    return count[:num_bins], correct[:num_bins], conf_sum[:num_bins], soft_sum[:num_bins]


def reliability_bins(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
) -> ReliabilityBins:
    """Bin voxels by max-probability confidence and measure confidence and accuracy per bin.

    Streams over the voxels in chunks (no full-size temporaries), so 35 million voxels x 4 classes
    take well under a second on two CPU cores. To add up many cases, use
    :class:`~napari_seg_uncertainty.core.calibration.ReliabilityAccumulator`.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``, float, summing to 1 over ``C``.
    target : array_like
        Hard labels ``(*spatial)``, an integer rater stack ``(R, *spatial)``, a one-hot map or soft
        labels ``(C, *spatial)`` (see the package docstring).
    num_bins : int
        Number of equal-width confidence bins on [0, 1].
    mask : array_like of bool, optional
        ``(*spatial)``; only voxels where it is True are counted.
    closed : {"right", "left"}
        ``"right"``: bins ``(lo, hi]`` (Mehrtash et al.); ``"left"``: bins ``[lo, hi)`` (Guo et al.).
        Either way a confidence of exactly 1.0 lands in the last bin. The edges are ``k / num_bins``
        computed in the dtype of ``probs``.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target``; needed only when an integer ``(C, *spatial)`` target is ambiguous.

    Returns
    -------
    ReliabilityBins
        Edges, per-bin count, mean confidence and mean accuracy; ``.expected_calibration_error``.

    Raises
    ------
    ValueError
        If the probabilities are not normalized, the shapes disagree, labels are out of range, the
        target is ambiguous or the mask selects nothing.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, eq. (5); Guo et al., ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)  # (C=2, Y=1, X=2)
    >>> target = np.array([[0, 0]])
    >>> bins = reliability_bins(probs, target, num_bins=10)
    >>> bins.count[[6, 8]].tolist()
    [1, 1]
    >>> bins.accuracy[[6, 8]].tolist()
    [0.0, 1.0]
    >>> round(bins.expected_calibration_error, 3)
    0.4
    """
    num_bins = check_num_bins(num_bins)
    closed = check_closed(closed)
    prep = prepare(probs, target, mask, target_kind=target_kind)
    return bins_of(prep, num_bins=num_bins, closed=closed)


def bins_of(prep: Prepared, *, num_bins: int, closed: str) -> ReliabilityBins:
    """:class:`ReliabilityBins` of validated inputs."""
    count, correct, conf_sum, soft_sum = bin_sums(prep, num_bins=num_bins, closed=closed)
    return ReliabilityBins.from_sums(count, conf_sum, correct + soft_sum, closed=closed)


def expected_calibration_error(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
) -> float:
    """Expected calibration error with equal-width bins on max-probability confidence.

    ``ECE = sum_m |D_m| / N * |acc(D_m) - conf(D_m)|`` (Mehrtash et al. eq. 5; Guo et al. 2017).
    The arguments are those of :func:`reliability_bins`.

    Returns
    -------
    float
        ECE in [0, 1] (multiply by 100 for the ECE% of the papers); NaN if no voxel is counted.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, eq. (5); Guo et al., ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> round(expected_calibration_error(probs, np.array([[0, 1]])), 3)
    0.2
    """
    bins = reliability_bins(probs, target, num_bins=num_bins, mask=mask, closed=closed, target_kind=target_kind)
    return bins.expected_calibration_error


def average_calibration_error(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
) -> float:
    """Average calibration error: the unweighted mean of ``|acc - conf|`` over the non-empty bins.

    Unlike the ECE, every non-empty bin counts the same whatever its size, so the few voxels of low
    confidence weigh as much as the many confident ones (MONAI's ``calibration_reduction="average"``).
    The arguments are those of :func:`reliability_bins`.

    Returns
    -------
    float
        ACE in [0, 1]; NaN if no voxel is counted.

    References
    ----------
    Naeini et al., AAAI 2015; T. Barfoot et al., "Average Calibration Losses for Reliable Uncertainty
    in Medical Image Segmentation", arXiv:2506.03942, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.9, 0.3]], [[0.1, 0.1, 0.7]]], dtype=np.float32)
    >>> round(average_calibration_error(probs, np.array([[0, 0, 0]])), 3)  # (0.1 + 0.7) / 2
    0.4
    """
    bins = reliability_bins(probs, target, num_bins=num_bins, mask=mask, closed=closed, target_kind=target_kind)
    return bins.average_calibration_error


def l2_calibration_error(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
) -> float:
    """Root-mean-square (L2) calibration error ``sqrt(sum_m |D_m|/N (acc - conf)^2)``.

    The ``norm="l2"`` calibration error of torchmetrics; it weighs large gaps more than the ECE.
    The arguments are those of :func:`reliability_bins`.

    Returns
    -------
    float
        The L2 calibration error in [0, 1]; NaN if no voxel is counted.

    References
    ----------
    A. Kumar, P. Liang, T. Ma, "Verified Uncertainty Calibration", NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> round(l2_calibration_error(probs, np.array([[0, 1]])), 3)
    0.224
    """
    bins = reliability_bins(probs, target, num_bins=num_bins, mask=mask, closed=closed, target_kind=target_kind)
    return bins.l2_calibration_error
