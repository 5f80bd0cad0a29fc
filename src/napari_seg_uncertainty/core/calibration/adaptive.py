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

The bins are found by selection, not by sorting (:mod:`._equal_count`): a radix count of the values'
bit patterns, then a sort of only the few values next to the bin boundaries.

References
----------
.. [1] J. Nixon, M. Dusenberry, L. Zhang, G. Jerfel, D. Tran, "Measuring Calibration in Deep
   Learning", CVPR Workshops 2019.
.. [2] M. M. Islam, B. Glocker, "Spatially Varying Label Smoothing: Capturing Uncertainty from Expert
   Annotations", IPMI 2021 (TACE with threshold 1e-3).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import _memory
from .._validation import check_probability
from . import _equal_count
from ._equal_count import equal_count_bins
from ._targets import Prepared, check_num_bins, prepare

__all__ = ["thresholded_adaptive_ce", "thresholded_adaptive_ce_per_class"]


def check_threshold(threshold: Any) -> float:
    threshold = check_probability(threshold, name="threshold")
    if threshold >= 1.0:
        raise ValueError(f"threshold must be below 1 (no probability exceeds 1), got {threshold}.")
    return threshold


def _class_tace(prep: Prepared, k: int, *, num_bins: int, threshold: float) -> float:
    """TACE of class ``k`` (NaN when no value is above ``threshold``)."""
    p, m = prep.probs, prep.mask
    keep = p[k] > threshold
    if m is not None:
        keep &= m
    if not keep.any():
        return float("nan")
    values = p[k][keep]
    if prep.labels is not None:
        indicator = prep.labels[keep] == k
    else:
        assert prep.soft is not None
        # float64, not the soft map's float32: equal_count_bins sums a float32 indicator in float32 where it
        # counts the tie groups of a straddling bucket (torch.bincount keeps the weights' dtype).
        indicator = prep.soft[k][keep].astype(np.float64)
    conf, acc = equal_count_bins(values, indicator, num_bins)
    return float(np.mean(np.abs(acc - conf)))


def _workers(num_classes: int, num_voxels: int) -> int:
    """Threads for the per-class work: the classes are independent and numpy/torch release the GIL."""
    if num_voxels < 1_000_000:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(num_classes, cores, 4))


def _class_bytes(prep: Prepared) -> int:
    """Peak bytes one class of :func:`_class_tace` holds at most (every voxel above the threshold): the
    ``keep`` mask, the gathered values, the gathered labels or soft indicator (float64) with the bool
    indicator, and the chunk buffers of the bucket passes (about 6 int64/float64 arrays of a chunk)."""
    num_voxels = int(prep.probs.shape[1])
    per_voxel = 1 + prep.probs.itemsize
    if prep.labels is not None:
        per_voxel += prep.labels.itemsize + 1
    else:
        per_voxel += 8
    return num_voxels * per_voxel + 6 * 8 * min(_equal_count._CHUNK, num_voxels)


def _memory_workers(workers: int, prep: Prepared) -> int:
    """``workers`` bounded so that the threads' per-class temporaries fit in the available memory (each
    thread holds one class's, :func:`_class_bytes`); at least one (the sequential computation)."""
    available = _memory.available_memory_bytes()
    if workers <= 1 or available is None:
        return workers
    return max(1, min(workers, available // max(_class_bytes(prep), 1)))


def tace_per_class(prep: Prepared, *, num_bins: int, threshold: float) -> np.ndarray:
    """TACE of every class of validated inputs (NaN for a class with no value above ``threshold``).

    Large inputs run the classes in parallel threads (the same numbers: each class is computed alone), as
    many as the available memory holds the per-class temporaries of.
    """
    def one(k: int) -> float:
        return _class_tace(prep, k, num_bins=num_bins, threshold=threshold)

    workers = _memory_workers(_workers(prep.num_classes, prep.probs.shape[1]), prep)
    if workers == 1:
        return np.array([one(k) for k in range(prep.num_classes)], dtype=np.float64)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.array(list(pool.map(one, range(prep.num_classes))), dtype=np.float64)


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
