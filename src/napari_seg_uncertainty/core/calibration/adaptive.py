"""Thresholded adaptive calibration error (TACE): equal-count bins per class above a threshold.

For every class *k*, the probabilities ``p_k`` of all voxels (not only the arg-max) above ``threshold``
are sorted and split into ``num_bins`` bins of equal count (sizes differ by at most one, larger bins
first); per bin the gap is ``|mean(y_k) - mean(p_k)|`` with ``y_k`` the (soft) indicator of class *k*.
TACE is the unweighted mean of the gaps over bins and then over classes. A class with fewer values than
``num_bins`` gets one bin per value; a class with no value above the threshold (an empty class) is left
out of the mean; if no class has any, TACE is NaN.

Voxels with tied probabilities that straddle a bin boundary are exchangeable: each of them counts with
the mean indicator of its tie group, so a bin's accuracy is its average over all orderings of the tied
voxels. This keeps the metric independent of voxel order (saturated models produce many probabilities
of exactly 1.0 or 0.0).

References
----------
.. [1] J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel, D. Tran, "Measuring Calibration in Deep
   Learning", CVPR Workshops 2019.
.. [2] M. M. Islam, B. Glocker, "Spatially Varying Label Smoothing: Capturing Uncertainty from Expert
   Annotations", IPMI 2021 (TACE with threshold 1e-3).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import check_probability
from ._targets import Prepared, check_num_bins, prepare

__all__ = ["thresholded_adaptive_ce", "thresholded_adaptive_ce_per_class"]


def _equal_count_bins(values: np.ndarray, indicator: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean value and tie-averaged mean indicator per equal-count bin of the sorted ``values``.

    Works without a full sort: only the order statistics next to the bin boundaries are found (with
    :func:`numpy.partition`); every value whose tie group does not straddle a boundary belongs to the bin
    given by the number of boundary values it reaches, and straddling tie groups are shared out between
    bins in proportion to their overlap, each member counting with the group's mean indicator.
    A boolean ``indicator`` (hard labels) is counted in integers: one ``bincount`` gives the voxels
    and the hits of every bin, the same numbers as summing it as 0/1 floats.
    """
    n = values.size
    r = min(num_bins, n)
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
    hard = indicator.dtype == bool
    if hard:  # voxels and hits of every bin from one integer count of 2 * bin + hit
        both = np.bincount(bin_index * 2 + indicator, minlength=2 * r)
        count = (both[0::2] + both[1::2]).astype(np.float64)
        indicator_sum = both[1::2].astype(np.float64)
    else:
        count = np.bincount(bin_index, minlength=r).astype(np.float64)
        indicator_sum = np.bincount(bin_index, weights=indicator, minlength=r)
    value_sum = np.bincount(bin_index, weights=values, minlength=r)
    # Tie groups spanning a boundary: move them out of the bin they were counted in and share them out.
    lo, hi = starts[:-1], starts[1:]
    for tied in np.unique(lower_edge[before_edge == lower_edge]):
        members = values == tied
        n_tied = int(members.sum())
        tied_indicator = float(np.count_nonzero(members & indicator) if hard else indicator[members].sum())
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


def check_threshold(threshold: Any) -> float:
    threshold = check_probability(threshold, name="threshold")
    if threshold >= 1.0:
        raise ValueError(f"threshold must be below 1 (no probability exceeds 1), got {threshold}.")
    return threshold


def tace_per_class(prep: Prepared, *, num_bins: int, threshold: float) -> np.ndarray:
    """TACE of every class of validated inputs (NaN for a class with no value above ``threshold``)."""
    p, m = prep.probs, prep.mask
    errors = np.full(prep.num_classes, np.nan)
    for k in range(prep.num_classes):
        keep = p[k] > threshold
        if m is not None:
            keep &= m
        if not keep.any():
            continue
        values = p[k][keep]
        if prep.labels is not None:
            indicator = prep.labels[keep] == k
        else:
            assert prep.soft is not None
            indicator = prep.soft[k][keep].astype(np.float64)
        conf, acc = _equal_count_bins(values, indicator, num_bins)
        errors[k] = float(np.mean(np.abs(acc - conf)))
    return errors


def mean_over_classes(errors: np.ndarray) -> float:
    """Mean of the per-class errors over the non-empty classes (NaN if all are empty)."""
    if np.all(np.isnan(errors)):
        return float("nan")
    return float(np.nanmean(errors))


def thresholded_adaptive_ce_per_class(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    threshold: float = 1e-3,
    mask: Any = None,
    target_kind: str | None = None,
) -> np.ndarray:
    """TACE of every class: the mean gap over the class's equal-count bins (see the module docstring).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    num_bins : int
        Number of equal-count bins per class.
    threshold : float
        Only probabilities strictly above this value are binned (in [0, 1)).
    mask : array_like of bool, optional
        Restrict to these voxels.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64, NaN for a class with no probability above the threshold.

    References
    ----------
    Nixon et al., CVPR Workshops 2019; Islam and Glocker, IPMI 2021.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.8, 0.6]], [[0.2, 0.4]]], dtype=np.float32)
    >>> target = np.array([[0, 1]])
    >>> np.round(thresholded_adaptive_ce_per_class(probs, target, num_bins=1), 3).tolist()
    [0.2, 0.2]
    """
    num_bins = check_num_bins(num_bins)
    threshold = check_threshold(threshold)
    prep = prepare(probs, target, mask, target_kind=target_kind)
    return tace_per_class(prep, num_bins=num_bins, threshold=threshold)


def thresholded_adaptive_ce(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    threshold: float = 1e-3,
    mask: Any = None,
    target_kind: str | None = None,
) -> float:
    """Thresholded adaptive calibration error (TACE): the mean over classes of the per-class error.

    The arguments are those of :func:`thresholded_adaptive_ce_per_class`; classes with no probability
    above ``threshold`` are left out of the mean.

    Returns
    -------
    float
        TACE, NaN when no probability exceeds the threshold.

    References
    ----------
    Nixon et al., CVPR Workshops 2019; Islam and Glocker, IPMI 2021 (``threshold=1e-3``).

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.8, 0.6]], [[0.2, 0.4]]], dtype=np.float32)
    >>> round(thresholded_adaptive_ce(probs, np.array([[0, 1]]), num_bins=1), 3)
    0.2
    """
    return mean_over_classes(
        thresholded_adaptive_ce_per_class(
            probs, target, num_bins=num_bins, threshold=threshold, mask=mask, target_kind=target_kind
        )
    )
