"""Class-wise calibration error: equal-width bins on each class's probability, one error per class.

Where the ECE bins the max-probability confidence, the class-wise error bins the probability ``p_k``
of every class *k* over all voxels and compares each bin's mean ``p_k`` with the bin's fraction of
voxels of class *k* (the mean target share for a rater stack or soft labels). The per-class errors are
reduced over bins as the ECE (count-weighted), the ACE (unweighted) or the MCE (maximum), and averaged
over the classes, with or without the background class 0: MONAI's ``CalibrationErrorMetric``.

References
----------
.. [1] M. Kull, M. Perello-Nieto, M. Kängsepp, T. Silva Filho, H. Song, P. Flach, "Beyond Temperature
   Scaling: Obtaining Well-Calibrated Multiclass Probabilities with Dirichlet Calibration",
   NeurIPS 2019 (class-wise ECE).
.. [2] T. Barfoot et al., "Average Calibration Losses for Reliable Uncertainty in Medical Image
   Segmentation", arXiv:2506.03942, 2025; MONAI ``monai.metrics.CalibrationErrorMetric``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .._validation import CHUNK_VOXELS, check_choice, check_flag, iter_chunks
from ._targets import BinClosure, Prepared, check_closed, check_num_bins, prepare
from .binning import bin_edges, bin_index

__all__ = ["ClasswiseCalibration", "classwise_calibration_error"]

BinReduction = Literal["expected", "average", "maximum"]
BIN_REDUCTIONS = ("expected", "average", "maximum")


@dataclass(frozen=True)
class ClasswiseCalibration:
    """Calibration error of every class and their mean.

    Attributes
    ----------
    per_class : numpy.ndarray
        ``(C,)`` float64 error of each class; NaN for the background when it is excluded and for a
        class whose bins are all empty.
    count : numpy.ndarray
        ``(C, num_bins)`` int64 voxels per class and bin.
    confidence, accuracy : numpy.ndarray
        ``(C, num_bins)`` mean probability of the class and mean target share per bin (NaN if empty).
    reduction : str
        ``"expected"``, ``"average"`` or ``"maximum"``: how the bins of a class were reduced.
    include_background : bool
        Whether class 0 is part of :attr:`mean`.
    """

    per_class: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    reduction: str
    include_background: bool

    @property
    def mean(self) -> float:
        """Mean of :attr:`per_class` over the evaluated classes (NaN if none has a value)."""
        values = self.per_class[~np.isnan(self.per_class)]
        return float(values.mean()) if values.size else float("nan")


def _class_bin_sums(prep: Prepared, *, num_bins: int, closed: str) -> tuple[np.ndarray, ...]:
    """Per class and bin: voxel count, sum of ``p_k`` and sum of the target share of class *k*."""
    p, m = prep.probs, prep.mask
    c_count, size = prep.num_classes, num_bins + 1  # an extra bin collects the masked-out voxels
    edges = bin_edges(num_bins, p.dtype)
    count = np.zeros((c_count, size), dtype=np.int64)
    p_sum = np.zeros((c_count, size), dtype=np.float64)
    y_sum = np.zeros((c_count, size), dtype=np.float64)
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        for k in range(c_count):
            values = np.clip(block[k], 0.0, 1.0)
            index = bin_index(values, edges, num_bins, closed)
            if m is not None:
                index[~m[sl]] = num_bins
            if prep.labels is not None:
                share = (prep.labels[sl] == k).astype(np.float64)
            else:
                assert prep.soft is not None
                share = prep.soft[k, sl]
            count[k] += np.bincount(index, minlength=size)
            p_sum[k] += np.bincount(index, weights=values, minlength=size)
            y_sum[k] += np.bincount(index, weights=share, minlength=size)
    return count[:, :num_bins], p_sum[:, :num_bins], y_sum[:, :num_bins]


def _reduce(gap: np.ndarray, count: np.ndarray, reduction: str) -> float:
    filled = count > 0
    if not filled.any():
        return float("nan")
    if reduction == "expected":
        return float(np.sum(count[filled] * gap[filled]) / count[filled].sum())
    if reduction == "average":
        return float(np.mean(gap[filled]))
    return float(np.max(gap[filled]))


def classwise_calibration_error(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    reduction: BinReduction = "expected",
    include_background: bool = True,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
) -> ClasswiseCalibration:
    """Class-wise calibration error (MONAI's ``CalibrationErrorMetric`` on one case).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    num_bins : int
        Number of equal-width bins on each class probability.
    reduction : {"expected", "average", "maximum"}
        Per class: count-weighted mean (ECE), unweighted mean (ACE) or maximum (MCE) of the gaps
        ``|mean share - mean p_k|`` over the non-empty bins.
    include_background : bool
        Whether class 0 takes part (False: its error is NaN and left out of the mean).
    mask : array_like of bool, optional
        Restrict to these voxels.
    closed : {"right", "left"}
        Bin closure, see :func:`~napari_seg_uncertainty.core.calibration.reliability_bins`.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.

    Returns
    -------
    ClasswiseCalibration
        ``per_class`` errors, their ``mean`` and the per-class bins.

    References
    ----------
    Kull et al., NeurIPS 2019; Barfoot et al., arXiv:2506.03942, 2025.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> result = classwise_calibration_error(probs, np.array([[0, 0]]), include_background=False)
    >>> np.round(result.per_class, 3).tolist(), round(result.mean, 3)
    ([nan, 0.4], 0.4)
    """
    num_bins = check_num_bins(num_bins)
    reduction = check_choice(reduction, name="reduction", choices=BIN_REDUCTIONS)
    include_background = check_flag(include_background, name="include_background")
    closed = check_closed(closed)
    prep = prepare(probs, target, mask, target_kind=target_kind)
    count, p_sum, y_sum = _class_bin_sums(prep, num_bins=num_bins, closed=closed)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, p_sum / count, np.nan)
        accuracy = np.where(count > 0, y_sum / count, np.nan)
    gap = np.abs(accuracy - confidence)
    per_class = np.array([_reduce(gap[k], count[k], reduction) for k in range(prep.num_classes)])
    if not include_background:
        per_class[0] = np.nan
    return ClasswiseCalibration(
        per_class=per_class,
        count=count,
        confidence=confidence,
        accuracy=accuracy,
        reduction=reduction,
        include_background=include_background,
    )
