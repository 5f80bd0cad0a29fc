"""Distances between sets of segmentations: GED², sample diversity and Dice against a reference.

Definitions follow Monteiro et al. (2020), Sec. 5.2 and App. A.2, after Kohl et al. (2018):

* ``d(a, b) = 1 - mean over foreground classes c = 1..C-1 of IoU_c(a, b)``, where a class absent
  from both maps (empty union) counts as IoU 1, so two empty maps have ``d = 0``;
* ``GED² = 2 E[d(s, y)] - E[d(s, s')] - E[d(y, y')]`` for samples ``s`` and raters ``y``;
* sample diversity ``= E[d(s, s')]``.

The expectations are means over all ordered pairs of the two sets (the exact values for the
empirical distributions, self-pairs with ``d = 0`` included); ``include_self_pairs=False`` uses
only pairs of different members instead.  Intersections of every pair come from one matrix
product per class, so the cost is linear in the number of pixels and needs no per-pair loop.

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
.. [2] Kohl, S., et al. "A Probabilistic U-Net for Segmentation of Ambiguous Images." NeurIPS 2018.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._validation import as_label_array, as_rater_stack, check_flag, check_num_classes, describe

__all__ = [
    "dice_against_reference",
    "generalized_energy_distance",
    "pairwise_iou_distance",
    "sample_diversity",
]

# Pixels per block of the indicator matrices: float32 sums of 0/1 stay exact below 2**24.
_MAX_BLOCK_ELEMENTS = 1 << 22


def _check_same_grid(first: np.ndarray, first_name: str, second: np.ndarray, second_name: str) -> None:
    if first.shape[1:] != second.shape[1:]:
        raise ValueError(
            f"{first_name} and {second_name} must label the same grid, got spatial shapes "
            f"{first.shape[1:]} and {second.shape[1:]}."
        )


def _overlaps(
    first: np.ndarray, second: np.ndarray | None, num_classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per foreground class: intersections ``(C-1, N, M)`` and areas ``(C-1, N)``, ``(C-1, M)``."""
    first_flat = first.reshape(first.shape[0], -1)
    second_flat = first_flat if second is None else second.reshape(second.shape[0], -1)
    n, m = first_flat.shape[0], second_flat.shape[0]
    pixels = first_flat.shape[1]
    check_allocation(
        array_bytes((num_classes - 1, n + 1, m + 1), np.float64),
        what=f"the intersections of {num_classes - 1} classes x {n} x {m} maps",
        cause=f"num_classes={num_classes} with {n} and {m} label maps",
        advice="check num_classes or compare fewer maps at once",
    )
    block = max(1024, min(pixels, _MAX_BLOCK_ELEMENTS // max(n, m)))
    foreground = num_classes - 1
    intersections = np.zeros((foreground, n, m), dtype=np.float64)
    areas_first = np.zeros((foreground, n), dtype=np.float64)
    areas_second = np.zeros((foreground, m), dtype=np.float64)
    for start in range(0, pixels, block):
        chunk_first = first_flat[:, start : start + block]
        chunk_second = second_flat[:, start : start + block]
        for k in range(foreground):
            ind_first = (chunk_first == k + 1).astype(np.float32)
            ind_second = ind_first if second is None else (chunk_second == k + 1).astype(np.float32)
            intersections[k] += ind_first @ ind_second.T
            areas_first[k] += ind_first.sum(axis=1, dtype=np.float64)
            areas_second[k] += ind_second.sum(axis=1, dtype=np.float64)
    return intersections, areas_first, areas_second


def pairwise_iou_distance(first: Any, second: Any = None, *, num_classes: int) -> np.ndarray:
    """Distance ``d = 1 - mean foreground IoU`` between every map of one stack and every map of another.

    Parameters
    ----------
    first : array_like, shape (N, *spatial)
        Integer label maps (samples or raters).
    second : array_like, shape (M, *spatial), optional
        Second stack on the same grid; ``None`` compares ``first`` with itself.
    num_classes : int
        Number of classes ``C >= 2`` including background 0; IoU is averaged over ``1..C-1``.
        A class absent from both maps counts as IoU 1 (two empty maps have ``d = 0``).

    Returns
    -------
    numpy.ndarray, shape (N, M), float64
        ``d[i, j]`` between ``first[i]`` and ``second[j]``, in ``[0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    >>> pairwise_iou_distance(a, num_classes=2)
    array([[0., 1.],
           [1., 0.]])
    """
    num_classes = check_num_classes(num_classes, minimum=2)
    first_arr = as_rater_stack(first, name="first", num_classes=num_classes)
    second_arr = None
    if second is not None:
        second_arr = as_rater_stack(second, name="second", num_classes=num_classes)
        _check_same_grid(first_arr, "first", second_arr, "second")
    intersections, areas_first, areas_second = _overlaps(first_arr, second_arr, num_classes)
    unions = areas_first[:, :, None] + areas_second[:, None, :] - intersections
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(unions > 0, intersections / np.where(unions > 0, unions, 1.0), 1.0)
    return 1.0 - iou.mean(axis=0)


def _mean_pairs(distances: np.ndarray, *, within: bool, include_self_pairs: bool, name: str) -> float:
    if within and not include_self_pairs:
        count = distances.shape[0]
        if count < 2:
            raise ValueError(
                f"{name} holds {count} map; include_self_pairs=False needs at least 2 to form a pair."
            )
        return float((distances.sum() - np.trace(distances)) / (count * (count - 1)))
    return float(distances.mean())


def generalized_energy_distance(
    samples: Any, raters: Any, *, num_classes: int, include_self_pairs: bool = True
) -> float:
    """Squared generalized energy distance between predicted samples and rater annotations.

    ``GED² = 2 E[d(s, y)] - E[d(s, s')] - E[d(y, y')]`` with ``d = 1 - mean foreground IoU``
    (empty union of a class counts as IoU 1; eq. 8 of the SSN paper).

    Parameters
    ----------
    samples : array_like, shape (N, *spatial)
        Sampled label maps.
    raters : array_like, shape (R, *spatial)
        Annotations on the same grid.
    num_classes : int
        Number of classes ``C >= 2`` including background.
    include_self_pairs : bool
        True (default): within-set means run over all ``N**2`` (``R**2``) ordered pairs, the exact
        value for the empirical distributions.  False: only pairs of different members (needs
        ``N, R >= 2``; can then come out slightly negative).

    Returns
    -------
    float
        GED², lower is better; 0 when the two sets are equal.

    References
    ----------
    .. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty." NeurIPS 2020, eq. 8.

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.array([[[1, 1, 0, 0]], [[0, 1, 1, 0]]])
    >>> generalized_energy_distance(raters, raters, num_classes=2)
    0.0
    >>> round(generalized_energy_distance(raters[:1], raters, num_classes=2), 4)
    0.3333
    """
    num_classes = check_num_classes(num_classes, minimum=2)
    include_self_pairs = check_flag(include_self_pairs, name="include_self_pairs")
    samples_arr = as_rater_stack(samples, name="samples", num_classes=num_classes)
    raters_arr = as_rater_stack(raters, name="raters", num_classes=num_classes)
    _check_same_grid(samples_arr, "samples", raters_arr, "raters")
    count = samples_arr.shape[0]
    # One pass over the joint stack gives the three blocks of pairwise distances.
    joint = np.concatenate([samples_arr, raters_arr])
    distances = pairwise_iou_distance(joint, num_classes=num_classes)
    cross = distances[:count, count:].mean()
    within_samples = _mean_pairs(
        distances[:count, :count], within=True, include_self_pairs=include_self_pairs, name="samples"
    )
    within_raters = _mean_pairs(
        distances[count:, count:], within=True, include_self_pairs=include_self_pairs, name="raters"
    )
    return float(2.0 * cross - within_samples - within_raters)


def sample_diversity(samples: Any, *, num_classes: int, include_self_pairs: bool = True) -> float:
    """Mean distance ``d = 1 - mean foreground IoU`` between pairs of samples (SSN paper, Sec. 5.2).

    Parameters
    ----------
    samples : array_like, shape (N, *spatial)
        Sampled label maps (or raters, for the diversity between experts).
    num_classes : int
        Number of classes ``C >= 2`` including background.
    include_self_pairs : bool
        True (default): mean over all ``N**2`` ordered pairs (self-pairs add ``d = 0``), as in the
        GED² terms.  False: mean over pairs of different samples (needs ``N >= 2``).

    Returns
    -------
    float
        Diversity in ``[0, 1]``; 0 when all samples are equal.

    Examples
    --------
    >>> import numpy as np
    >>> samples = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])
    >>> sample_diversity(samples, num_classes=2)
    0.5
    >>> sample_diversity(samples, num_classes=2, include_self_pairs=False)
    1.0
    """
    num_classes = check_num_classes(num_classes, minimum=2)
    include_self_pairs = check_flag(include_self_pairs, name="include_self_pairs")
    samples_arr = as_rater_stack(samples, name="samples", num_classes=num_classes)
    distances = pairwise_iou_distance(samples_arr, num_classes=num_classes)
    return _mean_pairs(distances, within=True, include_self_pairs=include_self_pairs, name="samples")


def dice_against_reference(samples: Any, reference: Any, *, num_classes: int) -> np.ndarray:
    """Dice of every foreground class between each sample and one reference map (e.g. the mean prediction).

    Parameters
    ----------
    samples : array_like, shape (N, *spatial) or (*spatial)
        Label maps; a single map is treated as ``N = 1``.
    reference : array_like, shape (*spatial)
        Reference label map on the same grid.
    num_classes : int
        Number of classes ``C >= 2`` including background.

    Returns
    -------
    numpy.ndarray, shape (N, C - 1), float64
        ``2 |A ∩ B| / (|A| + |B|)`` for classes ``1..C-1``; NaN where the class is absent from both
        maps (undefined, as in the SSN paper, App. A.2).  Average with ``numpy.nanmean``.

    Examples
    --------
    >>> import numpy as np
    >>> reference = np.array([[1, 1, 2, 0]])
    >>> dice_against_reference(np.array([[[1, 0, 2, 0]]]), reference, num_classes=3)
    array([[0.66666667, 1.        ]])
    """
    num_classes = check_num_classes(num_classes, minimum=2)
    reference_arr = as_label_array(reference, name="reference", num_classes=num_classes)
    if isinstance(samples, (str, bytes)) or samples is None:
        raise TypeError(f"samples must be an array of integer label maps, got {describe(samples)}.")
    samples_np = np.asarray(samples) if not hasattr(samples, "shape") else samples
    if getattr(samples_np, "ndim", None) == reference_arr.ndim:
        samples_np = samples_np[None]
    samples_arr = as_rater_stack(samples_np, name="samples", num_classes=num_classes)
    if samples_arr.shape[1:] != reference_arr.shape:
        raise ValueError(
            f"samples and reference must label the same grid, got spatial shapes {samples_arr.shape[1:]} "
            f"and {reference_arr.shape}."
        )
    intersections, areas_samples, areas_reference = _overlaps(samples_arr, reference_arr[None], num_classes)
    totals = areas_samples + areas_reference[:, 0][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(totals > 0, 2.0 * intersections[:, :, 0] / np.where(totals > 0, totals, 1.0), np.nan)
    return dice.T
