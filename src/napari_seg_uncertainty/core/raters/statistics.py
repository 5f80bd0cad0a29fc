"""Inter-rater statistics on an ``(R, *spatial)`` integer stack: pairwise Dice, agreement, entropy.

Each is computed in one pass over the raters, slab by slab (:mod:`.votes`): the agreement and the entropy
depend only on a voxel's count vector, so they are looked up from a table over the possible count vectors
(computed with the same float operations as on the whole map, so the numbers are the same); the pairwise
Dice comes from per-class pairwise overlap counts. No temporary grows with the volume.

``num_classes`` counts the classes including background; when omitted it is ``max label + 1``
(at least 2).

References
----------
Lemay et al., "Label fusion and training methods for reliable representation of inter-rater
uncertainty", MELBA 2023 (entropy of the raters' mean, the "GT average" of SoftSeg).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._numeric import entropy_nats
from .._validation import as_rater_stack, check_flag, check_num_classes
from .votes import empty_output, map_count_vectors, overlap_counts, vote_fractions

__all__ = ["agreement_map", "dice_from_overlaps", "pairwise_dice", "rater_entropy"]


def _stack_and_classes(raters: Any, num_classes: int | None) -> tuple[np.ndarray, int]:
    """The validated rater stack and its number of classes (given, or ``max label + 1``, at least 2)."""
    if num_classes is None:
        stack = as_rater_stack(raters, name="raters")
        return stack, max(int(stack.max()) + 1, 2)
    num_classes = check_num_classes(num_classes)
    return as_rater_stack(raters, name="raters", num_classes=num_classes), num_classes


def pairwise_dice(raters: Any, *, num_classes: int | None = None, empty_value: float = 1.0) -> np.ndarray:
    """Dice overlap between every pair of raters, per class.

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.
    empty_value : float
        Dice when both raters leave the class empty (default 1: they agree that it is absent;
        pass ``numpy.nan`` to exclude such pairs from means).

    Returns
    -------
    numpy.ndarray
        ``(C, R, R)`` float64 matrix; ``[c, i, j]`` is ``2|A_i ∩ A_j| / (|A_i| + |A_j|)`` for class ``c``.
        The diagonal is 1 where a rater labelled the class and ``empty_value`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[[0, 1, 1, 1]], [[0, 0, 1, 1]]])
    >>> float(pairwise_dice(r, num_classes=2)[1, 0, 1])
    0.8
    """
    stack, c = _stack_and_classes(raters, num_classes)
    r = stack.shape[0]
    check_allocation(array_bytes((c, r, r), np.float64) * 2,
                     what=f"the Dice matrices of shape {(c, r, r)}",
                     cause=f"num_classes={c} with {r} raters", advice="check num_classes")
    return dice_from_overlaps(overlap_counts(stack, c), empty_value=empty_value)


def dice_from_overlaps(overlaps: np.ndarray, *, empty_value: float = 1.0) -> np.ndarray:
    """``(C, R, R)`` Dice from the ``(C, R, R)`` pairwise overlap counts of :func:`.votes.overlap_counts`."""
    out = np.empty(overlaps.shape, dtype=np.float64)
    for k, inter in enumerate(overlaps):
        sizes = np.diag(inter)
        denom = sizes[:, None] + sizes[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1), empty_value)
    return out


def agreement_map(raters: Any, *, num_classes: int | None = None) -> np.ndarray:
    """Fraction of raters that assign each voxel to each class.

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.

    Returns
    -------
    numpy.ndarray
        float32 ``(C, *spatial)`` in [0, 1], summing to 1 over classes (the mean of the raters'
        one-hot maps).

    Examples
    --------
    >>> import numpy as np
    >>> agreement_map(np.array([[[0, 1]], [[1, 1]]]), num_classes=2)[1].tolist()
    [[0.5, 1.0]]
    """
    stack, c = _stack_and_classes(raters, num_classes)
    _check_maps_fit(stack, c, what="the agreement map", per_class=True)
    out = empty_output((c, *stack.shape[1:]), np.float32)
    r = stack.shape[0]
    return map_count_vectors(stack, c, lambda counts: vote_fractions(counts, r), out)


def rater_entropy(raters: Any, *, num_classes: int | None = None, normalize: bool = True) -> np.ndarray:
    """Entropy of the raters' label distribution per voxel (the entropy of :func:`agreement_map`).

    Parameters
    ----------
    raters : array_like
        Integer label maps stacked as ``(R, *spatial)``.
    num_classes : int, optional
        Number of classes including background; defaults to ``max label + 1``.
    normalize : bool
        Divide by ``ln C`` so the map lies in [0, 1] (0 for a single class); otherwise nats.

    Returns
    -------
    numpy.ndarray
        float32 ``(*spatial)``: ``-Σ_c p_c ln p_c`` (divided by ``ln C``) with ``p`` the
        :func:`agreement_map`; 0 where all raters agree, 1 (normalized) where they spread evenly
        over all classes.

    References
    ----------
    Lemay et al., MELBA 2023: the entropy of the "GT average" soft label.

    Examples
    --------
    >>> import numpy as np
    >>> rater_entropy(np.array([[[0, 1]], [[1, 1]]]), num_classes=2).round(3).tolist()
    [[1.0, 0.0]]
    """
    normalize = check_flag(normalize, name="normalize")
    stack, c = _stack_and_classes(raters, num_classes)
    _check_maps_fit(stack, c, what="the entropy map", per_class=False)
    r = stack.shape[0]
    out = empty_output(stack.shape[1:], np.float32)
    return map_count_vectors(stack, c, lambda counts: _entropy_of_counts(counts, r, normalize), out)


def _entropy_of_counts(counts: np.ndarray, num_raters: int, normalize: bool) -> np.ndarray:
    """Entropy of the vote fractions of ``(C, M)`` counts, float32 ``(M,)``; the same operations as computing it
    on the whole agreement map (float32 fractions, float64 entropy summed class by class, then float32)."""
    p = vote_fractions(counts, num_raters)
    h = entropy_nats(p, axis=0)
    if normalize:
        c = p.shape[0]
        h = np.clip(h / np.log(c), 0.0, 1.0) if c > 1 else np.zeros_like(h)
    return h.astype(np.float32)


def _check_maps_fit(stack: np.ndarray, num_classes: int, *, what: str, per_class: bool) -> None:
    """Refuse, before allocating, a float32 ``(C, *spatial)`` (or ``(*spatial)``) map that cannot fit."""
    shape = (num_classes, *stack.shape[1:]) if per_class else stack.shape[1:]
    check_allocation(array_bytes(shape, np.float32), what=f"{what} of shape {shape} (float32)",
                     cause=f"num_classes={num_classes} with label maps of shape {stack.shape[1:]}",
                     advice="check num_classes (labels are 0 .. num_classes - 1) or use a smaller region")
