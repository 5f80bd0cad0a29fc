"""Calibration metrics for voxel-wise class probabilities, and post-hoc temperature scaling.

All metrics take probabilities ``probs`` shaped ``(C, *spatial)`` (float, summing to 1 over ``C``)
and a ``target`` in one of three forms, told apart by shape and dtype:

* hard labels, integer ``(*spatial)``;
* a rater stack, integer ``(R, *spatial)``: used as the soft target "rater mean" (mean of the raters'
  one-hot maps), i.e. the metric is the expected one against a rater drawn at random;
* soft labels, float ``(C, *spatial)`` summing to 1 over ``C`` (e.g. a rater mean or STAPLE posteriors).

An optional boolean ``mask`` (``(*spatial)``) restricts every metric to the selected voxels;
:func:`foreground_box_mask` builds the dilated bounding box of the foreground that Mehrtash et al.
(calibration paper, Sec. VI-D) use to keep the many easy background voxels from dominating.

Conventions (where the papers differ, the default is stated first)
------------------------------------------------------------------
Confidence and accuracy
    Confidence is the maximum probability over classes, the predicted class is its arg-max (ties go
    to the lower class index, as :func:`numpy.argmax`). Accuracy of a voxel is 1 if the predicted class
    equals the hard label; with a soft target it is the target probability of the predicted class
    (expected accuracy against the raters). Confidences are clipped to [0, 1] before binning.
Reliability bins (``closed``)
    ``"right"`` (default): bin *m* holds confidences in ``((m-1)/M, m/M]``, as in Mehrtash et al.
    eq. (5); a confidence of exactly 1.0 falls in the last bin and 0 in the first.
    ``"left"``: bins ``[(m-1)/M, m/M)`` with the last bin closed, the convention of Guo et al. and the
    google-research code used by the SoftSeg label-fusion paper. Edges are the bin boundaries ``k/M``
    rounded to the dtype of ``probs`` (float32), so a float32 confidence equal to ``np.float32(0.3)`` is
    *on* the edge 0.3.
ECE
    ``sum_m |D_m|/N * |acc(D_m) - conf(D_m)|`` with equal-width bins (``n_bins=10``, as all papers).
TACE
    Thresholded adaptive calibration error (Nixon et al. 2019, used with threshold 1e-3 by the SVLS
    paper): for every class *k*, the probabilities ``p_k`` of all voxels (not only the arg-max) above
    ``threshold`` are sorted and split into ``n_bins`` bins of equal count (sizes differ by at most one,
    larger bins first); per bin the gap is ``|mean(y_k) - mean(p_k)|`` with ``y_k`` the (soft) indicator
    of class *k*. TACE is the unweighted mean of the gaps over bins and then over classes.
    A class with fewer values than ``n_bins`` gets one bin per value; a class with no value above the
    threshold (an empty class) is left out of the mean; if no class has any, TACE is NaN.
    Voxels with tied probabilities that straddle a bin boundary are exchangeable: each of them counts
    with the mean indicator of its tie group, so a bin's accuracy is its average over all orderings of
    the tied voxels. This keeps the metric independent of voxel order (saturated models produce many
    probabilities of exactly 1.0 or 0.0).
NLL
    ``-1/N sum_i sum_k y_ik ln max(p_ik, eps)`` (Mehrtash eq. 3, natural log, ``eps=1e-7``); with a
    soft target this is the cross-entropy against the soft labels.
Brier
    ``reduction="mean"`` (default): ``1/N sum_i 1/K sum_k (p_ik - y_ik)^2``, Mehrtash eq. (4).
    ``reduction="sum"``: the original Brier (1950) score, sum over classes (= K times the mean).
    ``reduction="none"``: one score per class, ``1/N sum_i (p_ik - y_ik)^2``, as the SoftSeg
    label-fusion paper reports it (eq. 2) against the rater mean.

Temperature scaling (:func:`fit_temperature`, :func:`apply_temperature`) is not in the papers: it fits
one scalar ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out voxels (Guo et al. 2017) and
is applied at inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

from ._validation import (
    CHUNK_VOXELS,
    Target,
    as_label_array,
    as_mask,
    as_probability_array,
    as_target,
    check_positive,
    check_probability,
    check_probability_chunk,
    check_spacing,
    describe,
    iter_chunks,
    to_numpy_array,
)

__all__ = [
    "CalibrationSummary",
    "ReliabilityBins",
    "apply_temperature",
    "brier_score",
    "calibration_summary",
    "expected_calibration_error",
    "fit_temperature",
    "foreground_box_mask",
    "negative_log_likelihood",
    "reliability_bins",
    "thresholded_adaptive_ce",
]

BinClosure = Literal["right", "left"]
BrierReduction = Literal["mean", "sum", "none"]


# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------


def _check_n_bins(n_bins: Any, *, name: str = "n_bins") -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(n_bins)}.")
    if not 1 <= int(n_bins) <= 10_000:
        raise ValueError(f"{name} must be between 1 and 10000, got {n_bins}.")
    return int(n_bins)


def _check_closed(closed: Any) -> str:
    if closed not in ("right", "left"):
        raise ValueError(f"closed must be 'right' or 'left', got {closed!r}.")
    return str(closed)


def _prepare(
    probs: Any, target: Any, mask: Any, *, check_values: bool = False
) -> tuple[np.ndarray, Target, np.ndarray | None]:
    """Validate and flatten: probs ``(C, N)``, target (labels ``(N,)`` or soft ``(C, N)``), mask ``(N,)``."""
    p = as_probability_array(probs, name="probs", check_values=check_values)
    num_classes = p.shape[0]
    spatial = p.shape[1:]
    tgt = as_target(target, num_classes=num_classes, spatial_shape=spatial, name="target")
    m = as_mask(mask, spatial_shape=spatial, name="mask")
    flat_p = p.reshape(num_classes, -1)
    if tgt.soft is not None:
        flat_t = Target(labels=None, soft=tgt.soft.reshape(num_classes, -1))
    else:
        assert tgt.labels is not None
        flat_t = Target(labels=tgt.labels.reshape(-1), soft=None)
    flat_m = None if m is None else m.reshape(-1)
    return flat_p, flat_t, flat_m


def _confidence_and_prediction(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _bin_index(conf: np.ndarray, edges: np.ndarray, n_bins: int, closed: str) -> np.ndarray:
    """Equal-width bin of each confidence in [0, 1], exact with respect to the rounded ``edges``."""
    if n_bins <= 32:
        # Count the inner edges below each confidence: a few cheap passes, exact by construction.
        k = np.zeros(conf.shape, dtype=np.uint8)
        for edge in edges[1:-1]:
            passed = conf > edge if closed == "right" else conf >= edge
            k += passed.view(np.uint8)
        return k
    k = (conf * n_bins).astype(np.intp)
    np.clip(k, 0, n_bins - 1, out=k)
    # conf * n_bins is rounded, so the floor may be one off near an edge: correct against the edges.
    if closed == "right":  # (e[k], e[k+1]]; bin 0 also holds 0
        k += conf > edges[k + 1]
        k -= (conf <= edges[k]) & (k > 0)
    else:  # [e[k], e[k+1]); the last bin also holds 1
        k -= conf < edges[k]
        k += (conf >= edges[k + 1]) & (k < n_bins - 1)
    return k


# ----------------------------------------------------------------------------------------------
# reliability bins and ECE
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (equal-width bins on max-probability confidence).

    Attributes
    ----------
    edges : numpy.ndarray
        ``n_bins + 1`` bin edges from 0 to 1.
    count : numpy.ndarray
        Number of voxels per bin (int64).
    confidence : numpy.ndarray
        Mean confidence per bin (NaN for an empty bin).
    accuracy : numpy.ndarray
        Mean accuracy per bin (NaN for an empty bin); with a soft target the mean target probability
        of the predicted class.
    closed : str
        ``"right"`` or ``"left"``: which side of each bin interval is closed.
    """

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    closed: str = "right"

    @property
    def n_bins(self) -> int:
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

    @property
    def expected_calibration_error(self) -> float:
        """ECE: count-weighted mean of ``|accuracy - confidence|`` over the non-empty bins."""
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        weights = self.count[filled] / self.count[filled].sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))

    @property
    def maximum_calibration_error(self) -> float:
        """MCE: largest ``|accuracy - confidence|`` over the non-empty bins."""
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        return float(np.max(np.abs(self.accuracy[filled] - self.confidence[filled])))

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
            for i in range(self.n_bins)
        ]


def reliability_bins(
    probs: Any,
    target: Any,
    *,
    n_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
) -> ReliabilityBins:
    """Bin voxels by max-probability confidence and measure confidence and accuracy per bin.

    Streams over the voxels in chunks (no full-size temporaries), so 35 million voxels x 4 classes
    take well under a second on two CPU cores.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``, float, summing to 1 over ``C``.
    target : array_like
        Hard labels ``(*spatial)``, an integer rater stack ``(R, *spatial)`` (soft target: rater mean)
        or soft labels ``(C, *spatial)``.
    n_bins : int
        Number of equal-width confidence bins on [0, 1].
    mask : array_like of bool, optional
        ``(*spatial)``; only voxels where it is True are counted.
    closed : {"right", "left"}
        ``"right"``: bins ``(lo, hi]`` (Mehrtash et al.); ``"left"``: bins ``[lo, hi)`` (Guo et al.).
        Either way a confidence of exactly 1.0 lands in the last bin.

    Returns
    -------
    ReliabilityBins
        Edges, per-bin count, mean confidence and mean accuracy; ``.expected_calibration_error``.

    Raises
    ------
    ValueError
        If the probabilities are not normalised, the shapes disagree, labels are out of range or the
        mask selects nothing.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)  # (C=2, Y=1, X=2)
    >>> target = np.array([[0, 0]])
    >>> bins = reliability_bins(probs, target, n_bins=10)
    >>> bins.count[[6, 8]].tolist()
    [1, 1]
    >>> bins.accuracy[[6, 8]].tolist()
    [0.0, 1.0]
    >>> round(bins.expected_calibration_error, 3)
    0.4
    """
    n_bins = _check_n_bins(n_bins)
    closed = _check_closed(closed)
    p, tgt, m = _prepare(probs, target, mask)
    edges = np.linspace(0.0, 1.0, n_bins + 1).astype(p.dtype)
    edges[0], edges[-1] = 0.0, 1.0
    overflow = n_bins  # masked-out voxels go to an extra bin that is dropped
    count = np.zeros(n_bins + 1, dtype=np.int64)
    conf_sum = np.zeros(n_bins + 1, dtype=np.float64)
    acc_sum = np.zeros(n_bins + 1, dtype=np.float64)
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        check_probability_chunk(block, name="probs")
        conf, pred = _confidence_and_prediction(block)
        np.clip(conf, 0.0, 1.0, out=conf)
        k = _bin_index(conf, edges, n_bins, closed).astype(np.intp)
        if m is not None:
            k[~m[sl]] = overflow
        if tgt.labels is not None:
            correct = (pred == tgt.labels[sl]).view(np.uint8)
            both = np.bincount(2 * k + correct, minlength=2 * (n_bins + 1))
            count += both[0::2] + both[1::2]
            acc_sum += both[1::2]
        else:
            assert tgt.soft is not None
            agreement = np.take_along_axis(tgt.soft[:, sl], pred.astype(np.intp)[None], axis=0)[0]
            count += np.bincount(k, minlength=n_bins + 1)
            acc_sum += np.bincount(k, weights=agreement, minlength=n_bins + 1)
        conf_sum += np.bincount(k, weights=conf, minlength=n_bins + 1)
    count, conf_sum, acc_sum = count[:n_bins], conf_sum[:n_bins], acc_sum[:n_bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, conf_sum / count, np.nan)
        accuracy = np.where(count > 0, acc_sum / count, np.nan)
    return ReliabilityBins(
        edges=edges.astype(np.float64), count=count, confidence=confidence, accuracy=accuracy, closed=closed
    )


def expected_calibration_error(
    probs: Any,
    target: Any,
    *,
    n_bins: int = 10,
    mask: Any = None,
    closed: BinClosure = "right",
) -> float:
    """Expected calibration error with equal-width bins on max-probability confidence.

    ``ECE = sum_m |D_m| / N * |acc(D_m) - conf(D_m)|`` (Mehrtash et al. eq. 5; Guo et al. 2017).
    See the module docstring for the bin and soft-target conventions.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    n_bins : int
        Number of equal-width bins.
    mask : array_like of bool, optional
        Restrict to these voxels (e.g. :func:`foreground_box_mask`).
    closed : {"right", "left"}
        Bin closure, see :func:`reliability_bins`.

    Returns
    -------
    float
        ECE in [0, 1] (multiply by 100 for the ECE% of the papers).

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> round(expected_calibration_error(probs, np.array([[0, 1]])), 3)
    0.2
    """
    return reliability_bins(probs, target, n_bins=n_bins, mask=mask, closed=closed).expected_calibration_error


# ----------------------------------------------------------------------------------------------
# TACE
# ----------------------------------------------------------------------------------------------


def _equal_count_bins(
    values: np.ndarray, indicator: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean value and tie-averaged mean indicator per equal-count bin of the sorted ``values``.

    Works without a full sort: only the order statistics next to the bin boundaries are found (with
    :func:`numpy.partition`); every value whose tie group does not straddle a boundary belongs to the bin
    given by the number of boundary values it reaches, and straddling tie groups are shared out between
    bins in proportion to their overlap, each member counting with the group's mean indicator.
    """
    n = values.size
    r = min(n_bins, n)
    sizes = np.full(r, n // r, dtype=np.int64)
    sizes[: n % r] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)])
    inner = starts[1:-1]
    if inner.size == 0:
        return (
            np.array([float(np.sum(values, dtype=np.float64))]) / n,
            np.array([float(np.sum(indicator, dtype=np.float64))]) / n,
        )
    kth = np.unique(np.concatenate([inner - 1, inner]))
    order_stats = np.partition(values, kth)
    lower_edge = order_stats[inner]  # smallest value of bins 1..r-1
    before_edge = order_stats[inner - 1]  # largest value of bins 0..r-2
    bin_of = np.zeros(n, dtype=np.uint8 if r <= 255 else np.int64)
    for edge in lower_edge:
        bin_of += (values >= edge).view(np.uint8)
    bin_index = bin_of.astype(np.intp)
    count = np.bincount(bin_index, minlength=r).astype(np.float64)
    value_sum = np.bincount(bin_index, weights=values, minlength=r)
    indicator_sum = np.bincount(bin_index, weights=indicator, minlength=r)
    # Tie groups spanning a boundary: move them out of the bin they were counted in and share them out.
    lo, hi = starts[:-1], starts[1:]
    for tied in np.unique(lower_edge[before_edge == lower_edge]):
        members = values == tied
        n_tied = int(members.sum())
        tied_indicator = float(indicator[members].sum())
        counted_in = int(np.sum(lower_edge <= tied))
        count[counted_in] -= n_tied
        value_sum[counted_in] -= n_tied * float(tied)
        indicator_sum[counted_in] -= tied_indicator
        first = int(np.sum(values < tied))
        overlap = np.clip(np.minimum(first + n_tied, hi) - np.maximum(first, lo), 0, None)
        count += overlap
        value_sum += overlap * float(tied)
        indicator_sum += overlap * (tied_indicator / n_tied)
    assert np.array_equal(count, sizes), "equal-count binning lost voxels"
    return value_sum / sizes, indicator_sum / sizes


def thresholded_adaptive_ce(
    probs: Any,
    target: Any,
    *,
    n_bins: int = 10,
    threshold: float = 1e-3,
    mask: Any = None,
    per_class: bool = False,
) -> float | np.ndarray:
    """Thresholded adaptive calibration error (TACE): equal-count bins per class above a threshold.

    For each class ``k`` the probabilities ``p_k > threshold`` of all (masked) voxels are sorted and
    split into ``n_bins`` equal-count bins; the class error is the mean over bins of
    ``|mean indicator - mean p_k|`` and TACE the mean over classes (Nixon et al. 2019; the SVLS paper
    uses ``threshold=1e-3``). Empty classes are left out; tied values across a bin boundary count with
    their group's mean indicator, i.e. bin accuracies are averaged over the orderings of tied values
    (see the module docstring).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    n_bins : int
        Number of equal-count bins per class.
    threshold : float
        Only probabilities strictly above this value are binned (in [0, 1)).
    mask : array_like of bool, optional
        Restrict to these voxels.
    per_class : bool
        Return the error of every class (NaN for an empty class) instead of the mean.

    Returns
    -------
    float or numpy.ndarray
        TACE (NaN when no probability exceeds the threshold), or a ``(C,)`` array if ``per_class``.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.8, 0.6]], [[0.2, 0.4]]], dtype=np.float32)
    >>> target = np.array([[0, 1]])
    >>> errors = thresholded_adaptive_ce(probs, target, n_bins=1, per_class=True)
    >>> np.round(errors, 3).tolist()
    [0.2, 0.2]
    """
    n_bins = _check_n_bins(n_bins)
    threshold = check_probability(threshold, name="threshold")
    if threshold >= 1.0:
        raise ValueError(f"threshold must be below 1 (no probability exceeds 1), got {threshold}.")
    if not isinstance(per_class, bool):
        raise TypeError(f"per_class must be True or False, got {describe(per_class)}.")
    p, tgt, m = _prepare(probs, target, mask)
    num_classes = p.shape[0]
    for sl in iter_chunks(p.shape[1], 4 * CHUNK_VOXELS):
        check_probability_chunk(p[:, sl], name="probs")
    errors = np.full(num_classes, np.nan)
    for k in range(num_classes):
        keep = p[k] > threshold
        if m is not None:
            keep &= m
        if not keep.any():
            continue
        values = p[k][keep]
        if tgt.labels is not None:
            indicator = (tgt.labels[keep] == k).astype(np.float64)
        else:
            assert tgt.soft is not None
            indicator = tgt.soft[k][keep].astype(np.float64)
        conf, acc = _equal_count_bins(values, indicator, n_bins)
        errors[k] = float(np.mean(np.abs(acc - conf)))
    if per_class:
        return errors
    if np.all(np.isnan(errors)):
        return float("nan")
    return float(np.nanmean(errors))


# ----------------------------------------------------------------------------------------------
# proper scoring rules
# ----------------------------------------------------------------------------------------------


def negative_log_likelihood(
    probs: Any,
    target: Any,
    *,
    mask: Any = None,
    eps: float = 1e-7,
) -> float:
    """Mean negative log-likelihood (cross-entropy) of the target under the probabilities.

    ``NLL = -1/N sum_i sum_k y_ik ln max(p_ik, eps)`` (Mehrtash et al. eq. 3, natural log). With hard
    labels this is ``-mean ln p(true class)``; with a soft target the cross-entropy to the soft labels.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    mask : array_like of bool, optional
        Restrict to these voxels.
    eps : float
        Probabilities are clipped below at ``eps`` so that a zero probability costs ``-ln eps``
        (16.1 for the default) instead of infinity.

    Returns
    -------
    float
        The mean NLL in nats.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 0.25]], [[0.5, 0.75]]], dtype=np.float32)
    >>> round(negative_log_likelihood(probs, np.array([[0, 1]])), 4)  # -(ln .5 + ln .75) / 2
    0.4904
    """
    eps = check_positive(eps, name="eps")
    if eps >= 1:
        raise ValueError(f"eps must be below 1, got {eps}.")
    p, tgt, m = _prepare(probs, target, mask)
    total = 0.0
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        check_probability_chunk(block, name="probs")
        if tgt.labels is not None:
            lab = tgt.labels[sl].astype(np.intp, copy=False)
            picked = np.take_along_axis(block, lab[None], axis=0)[0].astype(np.float64)
            loss = -np.log(np.maximum(picked, eps))
        else:
            assert tgt.soft is not None
            logp = np.log(np.maximum(block.astype(np.float64), eps))
            loss = -np.sum(tgt.soft[:, sl] * logp, axis=0)
        if m is not None:
            loss = loss[m[sl]]
        total += float(loss.sum())
    n = p.shape[1] if m is None else int(m.sum())
    return total / n


def brier_score(
    probs: Any,
    target: Any,
    *,
    mask: Any = None,
    reduction: BrierReduction = "mean",
) -> float | np.ndarray:
    """Brier score: mean squared difference between probabilities and the (one-hot or soft) target.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    mask : array_like of bool, optional
        Restrict to these voxels.
    reduction : {"mean", "sum", "none"}
        ``"mean"``: average over classes too (Mehrtash et al. eq. 4, default, in [0, 1]);
        ``"sum"``: sum over classes (Brier 1950, in [0, 2]); ``"none"``: one score per class (SoftSeg
        label-fusion paper eq. 2), a ``(C,)`` array.

    Returns
    -------
    float or numpy.ndarray
        The score (lower is better).

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    >>> brier_score(probs, np.array([[0, 1]]))  # voxel 2: (0.25 + 0.25) / 2, averaged with 0
    0.125
    >>> brier_score(probs, np.array([[0, 1]]), reduction="none").tolist()
    [0.125, 0.125]
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    p, tgt, m = _prepare(probs, target, mask)
    num_classes = p.shape[0]
    per_class = np.zeros(num_classes, dtype=np.float64)
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        check_probability_chunk(block, name="probs")
        keep = None if m is None else m[sl]
        for c in range(num_classes):
            if tgt.labels is not None:
                diff = block[c].astype(np.float64) - (tgt.labels[sl] == c)
            else:
                assert tgt.soft is not None
                diff = block[c].astype(np.float64) - tgt.soft[c, sl]
            sq = diff * diff
            per_class[c] += float(sq.sum() if keep is None else sq[keep].sum())
    n = p.shape[1] if m is None else int(m.sum())
    per_class /= n
    if reduction == "none":
        return per_class
    if reduction == "sum":
        return float(per_class.sum())
    return float(per_class.mean())


# ----------------------------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSummary:
    """All calibration numbers of one probability map against one target (what the dock shows)."""

    bins: ReliabilityBins
    ece: float
    tace: float
    nll: float
    brier: float
    voxels: int

    def to_dict(self) -> dict[str, float]:
        """The scalar metrics as a dict (ECE, TACE, NLL, Brier, voxels)."""
        return {
            "ece": self.ece,
            "tace": self.tace,
            "nll": self.nll,
            "brier": self.brier,
            "voxels": self.voxels,
        }


def calibration_summary(
    probs: Any,
    target: Any,
    *,
    n_bins: int = 10,
    tace_bins: int = 10,
    tace_threshold: float = 1e-3,
    mask: Any = None,
    closed: BinClosure = "right",
) -> CalibrationSummary:
    """Reliability bins, ECE, TACE, NLL and Brier (mean over classes) in one call.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    n_bins : int
        Equal-width bins of the reliability diagram and ECE.
    tace_bins : int
        Equal-count bins per class for TACE.
    tace_threshold : float
        TACE threshold.
    mask : array_like of bool, optional
        Restrict every metric to these voxels.
    closed : {"right", "left"}
        Bin closure of the reliability bins.

    Returns
    -------
    CalibrationSummary
        ``bins``, ``ece``, ``tace``, ``nll``, ``brier`` and the number of voxels used.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> summary = calibration_summary(probs, np.array([[0, 1]]))
    >>> round(summary.ece, 3), summary.voxels
    (0.2, 2)
    """
    p = as_probability_array(probs, name="probs", check_values=False)
    tgt = as_target(target, num_classes=p.shape[0], spatial_shape=p.shape[1:], name="target")
    target_array = tgt.labels if tgt.labels is not None else tgt.soft
    bins = reliability_bins(p, target_array, n_bins=n_bins, mask=mask, closed=closed)
    tace = thresholded_adaptive_ce(p, target_array, n_bins=tace_bins, threshold=tace_threshold, mask=mask)
    nll = negative_log_likelihood(p, target_array, mask=mask)
    brier = brier_score(p, target_array, mask=mask, reduction="mean")
    return CalibrationSummary(
        bins=bins,
        ece=bins.expected_calibration_error,
        tace=float(tace),
        nll=nll,
        brier=float(brier),
        voxels=bins.total,
    )


# ----------------------------------------------------------------------------------------------
# foreground bounding box
# ----------------------------------------------------------------------------------------------


def foreground_box_mask(
    labels: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
    per_class: bool = True,
) -> np.ndarray:
    """Dilated bounding box(es) of the foreground, the evaluation region of the calibration paper.

    Mehrtash et al. compute calibration metrics inside bounding boxes of the foreground structures,
    dilated by 8 mm in-plane and by 2 slices out of plane, so that the many trivially certain
    background voxels far from the structures do not dominate the statistics.

    Parameters
    ----------
    labels : array_like
        Integer labels ``(Y, X)`` or ``(Z, Y, X)``; 0 is background. To use several raters, pass the
        union of their foreground (e.g. ``raters.max(axis=0)``).
    spacing : float or sequence of float, optional
        Voxel size per axis. With it ``in_plane_margin`` is in physical units (mm); without it, voxels.
    in_plane_margin : float
        Margin added on both sides along the in-plane axes (the last two), rounded up to whole voxels.
    slice_margin : int
        Margin in slices along the first axis of 3-D data (ignored for 2-D data).
    per_class : bool
        True: the union of one box per foreground class (boxes around each structure); False: one box
        around all foreground.

    Returns
    -------
    numpy.ndarray
        Boolean mask with the shape of ``labels``.

    Raises
    ------
    ValueError
        If there is no foreground voxel.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((7, 7), dtype=np.uint8)
    >>> labels[3, 3] = 1
    >>> int(foreground_box_mask(labels, in_plane_margin=1).sum())
    9
    """
    lab = as_label_array(labels, name="labels")
    spc = check_spacing(spacing, lab.ndim)
    in_plane_margin = check_positive(in_plane_margin, name="in_plane_margin", allow_zero=True)
    if isinstance(slice_margin, bool) or not isinstance(slice_margin, Integral) or slice_margin < 0:
        raise ValueError(f"slice_margin must be a non-negative integer, got {describe(slice_margin)}.")
    if not isinstance(per_class, bool):
        raise TypeError(f"per_class must be True or False, got {describe(per_class)}.")
    if not (lab > 0).any():
        raise ValueError(
            "labels has no foreground voxel (all 0); a bounding box of the foreground needs at least one "
            "labelled voxel. Evaluate on the whole image instead (mask=None)."
        )
    margins = []
    for axis in range(lab.ndim):
        if lab.ndim == 3 and axis == 0:
            margins.append(int(slice_margin))
        else:
            step = 1.0 if spc is None else spc[axis]
            margins.append(int(np.ceil(in_plane_margin / step - 1e-9)))
    groups = [lab == c for c in np.unique(lab[lab > 0])] if per_class else [lab > 0]
    out = np.zeros(lab.shape, dtype=bool)
    for fg in groups:
        index = []
        for axis in range(lab.ndim):
            other = tuple(a for a in range(lab.ndim) if a != axis)
            present = np.flatnonzero(fg.any(axis=other))
            lo = max(int(present[0]) - margins[axis], 0)
            hi = min(int(present[-1]) + margins[axis] + 1, lab.shape[axis])
            index.append(slice(lo, hi))
        out[tuple(index)] = True
    return out


# ----------------------------------------------------------------------------------------------
# temperature scaling
# ----------------------------------------------------------------------------------------------


def _softmax(z: np.ndarray, axis: int = 0) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def _as_logits(logits: Any, *, name: str = "logits") -> np.ndarray:
    arr = to_numpy_array(logits, name=name)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be shaped (C, Y, X) or (C, Z, Y, X) (class axis first), got {arr.ndim}-D data "
            f"of shape {arr.shape}."
        )
    if arr.size == 0 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 classes and one voxel, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must be floating point (network outputs before the softmax), got {arr.dtype}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def apply_temperature(logits: Any, *, temperature: float) -> np.ndarray:
    """Temperature-scaled softmax ``softmax(logits / T)`` over the class axis.

    Parameters
    ----------
    logits : array_like
        Network outputs before the softmax, ``(C, *spatial)``.
    temperature : float
        ``T > 0``; ``T > 1`` softens over-confident predictions, ``T = 1`` is the plain softmax.

    Returns
    -------
    numpy.ndarray
        Probabilities ``(C, *spatial)``, float32, summing to 1 over ``C``.

    Examples
    --------
    >>> import numpy as np
    >>> logits = np.array([[[2.0]], [[0.0]]])
    >>> [round(float(v), 4) for v in apply_temperature(logits, temperature=2.0)[:, 0, 0]]
    [0.7311, 0.2689]
    """
    z = _as_logits(logits)
    t = check_positive(temperature, name="temperature")
    # shift before dividing: z - max <= 0, so a tiny T gives -inf (weight 0), never inf - inf = NaN
    z = z.astype(np.float64)
    z -= z.max(axis=0, keepdims=True)
    with np.errstate(over="ignore", divide="ignore"):
        z /= t
    return _softmax(z).astype(np.float32)


def fit_temperature(
    logits: Any,
    target: Any,
    *,
    mask: Any = None,
    bounds: tuple[float, float] = (0.05, 20.0),
    max_voxels: int = 1_000_000,
    seed: int = 0,
) -> float:
    """Fit the temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (temperature scaling).

    Post-hoc calibration beyond the papers (Guo et al. 2017): fit on a validation case, then apply
    :func:`apply_temperature` to new predictions. The NLL is convex in ``1/T``, so a safeguarded Newton
    search on ``1/T`` finds the global minimum within ``bounds``; if the optimum lies outside, the
    nearest bound is returned (e.g. a perfectly separable prediction wants ``T -> 0``).

    Parameters
    ----------
    logits : array_like
        Network outputs before the softmax, ``(C, *spatial)`` with ``C >= 2``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)`` or soft labels ``(C, *spatial)``.
    mask : array_like of bool, optional
        Fit on these voxels only.
    bounds : tuple of float
        Smallest and largest temperature allowed.
    max_voxels : int
        Fit on at most this many voxels, drawn at random (``seed``) when there are more.
    seed : int
        Seed of the voxel subsample (same seed, same result).

    Returns
    -------
    float
        The fitted temperature.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> logits = rng.normal(scale=4.0, size=(3, 64, 64))
    >>> cumulative = np.cumsum(apply_temperature(logits, temperature=2.0), axis=0)
    >>> labels = (rng.random((64, 64))[None] < cumulative).argmax(axis=0)  # sampled at T = 2
    >>> round(fit_temperature(logits, labels), 1)
    2.0
    """
    z = _as_logits(logits)
    num_classes = z.shape[0]
    spatial = z.shape[1:]
    tgt = as_target(target, num_classes=num_classes, spatial_shape=spatial, name="target")
    m = as_mask(mask, spatial_shape=spatial, name="mask")
    try:
        pair = tuple(bounds) if not isinstance(bounds, (str, bytes)) else ()
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(isinstance(b, Real) and not isinstance(b, bool) for b in pair):
        raise TypeError(f"bounds must be two numbers (T_min, T_max), got {describe(bounds)}.")
    t_min, t_max = (float(b) for b in pair)
    if not (0 < t_min < t_max and np.isfinite(t_max)):
        raise ValueError(f"bounds must satisfy 0 < T_min < T_max < inf, got {bounds}.")
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, Integral) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive integer, got {describe(max_voxels)}.")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"seed must be an integer, got {describe(seed)}.")

    flat_z = z.reshape(num_classes, -1)
    index = np.flatnonzero(m.reshape(-1)) if m is not None else np.arange(flat_z.shape[1])
    if index.size > max_voxels:
        rng = np.random.default_rng(int(seed))
        index = np.sort(rng.choice(index, size=int(max_voxels), replace=False))
    zs = flat_z[:, index].astype(np.float64)
    # softmax and the NLL gradient ignore this per-voxel shift; beta * zs then stays finite
    zs -= zs.max(axis=0, keepdims=True)
    if tgt.labels is not None:
        ys = np.zeros_like(zs)
        ys[tgt.labels.reshape(-1)[index], np.arange(index.size)] = 1.0
    else:
        assert tgt.soft is not None
        ys = tgt.soft.reshape(num_classes, -1)[:, index].astype(np.float64)
    target_logit = np.mean(np.sum(ys * zs, axis=0))

    def gradient_and_curvature(beta: float) -> tuple[float, float]:
        p = _softmax(beta * zs)
        mean_z = np.sum(p * zs, axis=0)
        var_z = np.sum(p * zs * zs, axis=0) - mean_z**2
        return float(np.mean(mean_z) - target_logit), float(np.mean(np.maximum(var_z, 0.0)))

    # bracket on beta = 1/T (capped: T_min may be subnormal); d NLL / d beta is non-decreasing
    lo, hi = 1.0 / t_max, min(1.0 / t_min, 1e300)
    g_lo, _ = gradient_and_curvature(lo)
    if g_lo >= 0:
        return t_max
    g_hi, _ = gradient_and_curvature(hi)
    if g_hi <= 0:
        return t_min
    beta = 1.0
    if not lo < beta < hi:
        beta = 0.5 * (lo + hi)
    for _ in range(100):
        g, h = gradient_and_curvature(beta)
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else np.nan
        beta_new = step if lo < step < hi else 0.5 * (lo + hi)
        if abs(beta_new - beta) <= 1e-10 * beta or hi - lo <= 1e-12 * hi:
            beta = beta_new
            break
        beta = beta_new
    return float(1.0 / beta)
