"""Per-voxel rater votes at CT scale: counts per class, count-vector codes and vote patterns, slab by slab.

Every statistic of an ``(R, *spatial)`` rater stack that the package computes voxel by voxel depends only on
what the raters said at that voxel: the rater mean, the majority vote and the entropy depend only on the
*count vector* (how many raters chose each class), STAPLE's E-step only on the *vote pattern* (the tuple of
the R labels). This module computes those once, in one pass over the raters, slab by slab along the first
spatial axis, so that no temporary grows with the volume: the only volume-size arrays are the outputs.

* :func:`map_count_vectors` applies a per-voxel function of the count vector. Where the number of possible
  count vectors is small it evaluates the function once per count vector (a lookup table) and gathers;
  otherwise it evaluates it on each slab's counts. Both give the same numbers as evaluating the function on
  the whole ``(C, *spatial)`` count array, because the function is applied column by column.
* :func:`vote_patterns` encodes each voxel's pattern as one integer (mixed radix ``C``) and returns the
  histogram of patterns with, optionally, the per-voxel pattern index to map per-pattern results back.
* :func:`overlap_counts` counts, per class, the voxels that each pair of raters both assign to it.

Counts of up to 255 raters are held in ``uint8`` (:func:`count_dtype`).

References
----------
Lemay et al., "Label fusion and training methods for reliable representation of inter-rater uncertainty",
MELBA 2023 (the rater mean and its entropy). Warfield et al., IEEE TMI 23(7) 2004 (STAPLE's E-step
depends on a voxel's labels only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .._memory import array_bytes, check_allocation

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core import multiarray as _multiarray

__all__ = [
    "VotePatterns",
    "count_dtype",
    "empty_output",
    "flat_voxels",
    "iter_slabs",
    "map_count_vectors",
    "overlap_counts",
    "slab_class_counts",
    "vote_fractions",
    "vote_patterns",
]

#: Voxels per slab: small enough for a slab's temporaries to stay in the CPU caches.
SLAB_VOXELS = 1 << 16
#: Largest number of vote patterns (``C**R``) evaluated as a lookup table indexed by the pattern code.
PATTERN_TABLE_LIMIT = 1 << 16
#: Largest number of count-vector codes (``(R+1)**(C-1)``) evaluated as a lookup table (beyond: slab by slab).
COUNT_TABLE_LIMIT = 1 << 16
#: Largest pattern code space counted with a dense ``bincount`` (beyond: sorted unique codes).
DENSE_PATTERN_LIMIT = 1 << 20


def count_dtype(num_raters: int) -> np.dtype:
    """Smallest unsigned dtype that holds a count of ``0 … num_raters`` raters.

    Examples
    --------
    >>> [str(count_dtype(n)) for n in (4, 255, 256)]
    ['uint8', 'uint8', 'uint16']
    """
    return np.dtype(np.min_scalar_type(int(num_raters)))


def _uint_for(largest: int) -> np.dtype:
    """Smallest unsigned dtype that holds ``largest`` (at least uint8)."""
    return np.dtype(np.min_scalar_type(int(largest)))


def iter_slabs(num_voxels: int, *, voxels: int = SLAB_VOXELS) -> Iterator[slice]:
    """Consecutive ranges of ``voxels`` voxels (the last shorter) over ``num_voxels`` flattened voxels.

    Examples
    --------
    >>> [(s.start, s.stop) for s in iter_slabs(10, voxels=4)]
    [(0, 4), (4, 8), (8, 10)]
    """
    for start in range(0, num_voxels, voxels):
        yield slice(start, min(start + voxels, num_voxels))


def flat_voxels(array: np.ndarray, lead: int = 1) -> np.ndarray:
    """``array`` with its spatial axes (after the first ``lead`` axes) flattened: a view when contiguous."""
    return array.reshape(*array.shape[:lead], -1)


def empty_output(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """``numpy.empty`` for a volume-size output that is written once, slab by slab, without numpy's
    transparent-huge-page advice.

    numpy advises the kernel to back large arrays with huge pages; where the kernel then compacts memory
    on each fault (``/sys/kernel/mm/transparent_hugepage/defrag`` = ``madvise``, a common default), filling
    a fresh 1 GB array measured 3-4 s instead of 1 s on the CT benchmark machine. The advice is switched
    off for this one allocation (numpy's own switch; a no-op where numpy lacks it).
    """
    switch = getattr(_multiarray, "_set_madvise_hugepage", None)
    if switch is None:  # pragma: no cover - numpy without the switch
        return np.empty(shape, dtype=dtype)
    previous = switch(False)
    try:
        return np.empty(shape, dtype=dtype)
    finally:
        switch(previous)


def slab_class_counts(slab: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, *slab spatial)`` number of raters choosing each class in an ``(R, *spatial)`` slab."""
    counts = np.zeros((num_classes, *slab.shape[1:]), dtype=count_dtype(slab.shape[0]))
    for rater_labels in slab:
        for class_index in range(num_classes):
            counts[class_index] += rater_labels == class_index
    return counts


def vote_fractions(counts: np.ndarray, num_raters: int) -> np.ndarray:
    """``(C, M)`` rater counts as float32 fractions of ``num_raters`` (the rater mean, mOH).

    Examples
    --------
    >>> vote_fractions(np.array([[1], [3]], dtype=np.uint8), 4).tolist()
    [[0.25], [0.75]]
    """
    out = counts.astype(np.float32)
    out /= np.float32(num_raters)
    return out


def _power_within(base: int, exponent: int, limit: int) -> bool:
    """``base ** exponent <= limit``, decided in log space first so that an absurd ``num_classes`` or number of
    raters (``10**12``) never builds a gigantic Python integer (``3 ** 10**12`` would not finish)."""
    if exponent <= 0 or base <= 1:
        return 1 <= limit
    if exponent * math.log2(base) > math.log2(limit) + 1.0:
        return False
    return base**exponent <= limit


def _count_weights(num_raters: int, num_classes: int) -> np.ndarray | None:
    """Weights ``w[c]`` with ``code = sum_r w[label_r]`` a unique code of the count vector, or None when the
    codes would not fit the lookup-table limit. The last class is implied (its count is ``R`` minus the rest)."""
    if not _power_within(num_raters + 1, num_classes - 1, COUNT_TABLE_LIMIT):
        return None
    size = (num_raters + 1) ** (num_classes - 1)
    weights = np.zeros(num_classes, dtype=_uint_for(size - 1))
    weights[:-1] = (num_raters + 1) ** np.arange(num_classes - 1)
    return weights


def _count_table(num_raters: int, num_classes: int) -> np.ndarray:
    """``(C, K)`` every count-vector code's count vector (codes that no count vector has get zeros)."""
    size = (num_raters + 1) ** (num_classes - 1)
    codes = np.arange(size)
    table = np.zeros((num_classes, size), dtype=count_dtype(num_raters))
    rest = codes.copy()
    for class_index in range(num_classes - 1):
        table[class_index] = rest % (num_raters + 1)
        rest //= num_raters + 1
    leftover = num_raters - table[:-1].sum(axis=0, dtype=np.int64)
    table[-1] = np.clip(leftover, 0, None)  # codes with a negative remainder are never looked up
    return table


def _pattern_count_table(num_raters: int, num_classes: int) -> np.ndarray:
    """``(C, C**R)`` the count vector of every mixed-radix pattern code (see :func:`vote_patterns`)."""
    patterns = _decode(np.arange(num_classes**num_raters), num_raters, num_classes)
    return np.stack([np.count_nonzero(patterns == c, axis=1) for c in range(num_classes)]).astype(
        count_dtype(num_raters))


def _voxel_codes(slab: np.ndarray, num_classes: int, weights: np.ndarray | None) -> np.ndarray:
    """Each voxel's lookup-table code in a ``(R, M)`` slab, as ``intp``: the pattern code (``weights`` None,
    arithmetic only) or the count-vector code ``sum_r weights[label_r]``."""
    if weights is None:
        return _slab_codes(slab, num_classes, _uint_for(num_classes ** slab.shape[0] - 1)).astype(np.intp)
    code = np.zeros(slab.shape[1], dtype=weights.dtype)
    for rater_labels in slab:
        code += weights[rater_labels]
    return code.astype(np.intp)


def map_count_vectors(
    stack: np.ndarray, num_classes: int, function: Callable[[np.ndarray], np.ndarray], out: np.ndarray
) -> np.ndarray:
    """Fill ``out[..., *spatial]`` with ``function(counts)`` of each voxel's count vector.

    ``function`` takes a ``(C, M)`` count array (dtype :func:`count_dtype`) and returns ``(M,)`` or
    ``(K, M)`` values computed column by column; ``out`` is ``(*spatial)`` or ``(K, *spatial)``. Where the
    possible vote patterns (``C**R``) or count vectors (``(R+1)**(C-1)``) are few, the function runs once on
    all of them (a lookup table) and each slab computes its codes and gathers; otherwise it runs on each
    slab's counts. The numbers are the same either way: the function is applied column by column.
    """
    num_raters = stack.shape[0]
    weights, table = None, None
    if _power_within(num_classes, num_raters, PATTERN_TABLE_LIMIT):
        table = function(_pattern_count_table(num_raters, num_classes))
    else:
        weights = _count_weights(num_raters, num_classes)
        if weights is not None:
            table = function(_count_table(num_raters, num_classes))
        else:  # per-slab class counts (and what the function makes of them), before anything is allocated
            slab_bytes = array_bytes((num_classes, min(SLAB_VOXELS, max(stack[0].size, 1))), count_dtype(num_raters))
            check_allocation(
                3 * slab_bytes,
                what="the per-voxel class counts of one slab",
                cause=f"num_classes={num_classes}",
                advice="check num_classes (labels are 0 .. num_classes - 1)",
            )
    lead = out.ndim - (stack.ndim - 1)
    flat_stack, flat_out = flat_voxels(stack), flat_voxels(out, lead)
    rows = flat_out.reshape(-1, flat_out.shape[-1])
    if table is not None:
        table = np.asarray(table, dtype=out.dtype).reshape(rows.shape[0], -1)
    for region in iter_slabs(flat_stack.shape[1]):
        slab = flat_stack[:, region]
        if table is None:
            values = function(slab_class_counts(slab, num_classes))
            rows[:, region] = values.reshape(rows.shape[0], -1)
            continue
        code = _voxel_codes(slab, num_classes, weights)  # one conversion, then one gather per output row
        for row, values in zip(rows, table):
            np.take(values, code, out=row[region], mode="clip")  # codes are in range; 'raise' buffers
    if not np.shares_memory(flat_out, out):  # a non-contiguous out was copied by reshape: copy back
        out[...] = flat_out.reshape(out.shape)
    return out


def overlap_counts(stack: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, R, R)`` int64: ``[c, i, j]`` voxels that raters ``i`` and ``j`` both assign to class ``c``.

    The diagonal is each rater's voxel count of the class. From the vote-pattern histogram where the
    patterns are few (one pass); otherwise slab by slab with a float32 matrix product of the raters' class
    masks (exact: a slab holds fewer than 2**24 voxels).
    """
    num_raters = stack.shape[0]
    if _power_within(num_classes, num_raters, DENSE_PATTERN_LIMIT):
        found = vote_patterns(stack, num_classes, keep_index=False)
        out = np.empty((num_classes, num_raters, num_raters), dtype=np.int64)
        for class_index in range(num_classes):
            masks = (found.patterns == class_index).astype(np.int64)  # (P, R)
            out[class_index] = masks.T @ (masks * found.counts[:, None])
        return out
    out = np.zeros((num_classes, num_raters, num_raters), dtype=np.int64)
    flat = flat_voxels(stack)
    for region in iter_slabs(flat.shape[1], voxels=4 * SLAB_VOXELS):
        slab = flat[:, region]
        for class_index in range(num_classes):
            masks = (slab == class_index).astype(np.float32)
            out[class_index] += np.rint(masks @ masks.T).astype(np.int64)
    return out


@dataclass(frozen=True)
class VotePatterns:
    """The histogram of the raters' vote patterns.

    Attributes
    ----------
    patterns : numpy.ndarray of int64, shape (P, R)
        The patterns that occur: row ``p`` holds the label each rater gave.
    counts : numpy.ndarray of int64, shape (P,)
        Voxels with each pattern.
    index : numpy.ndarray of unsigned int, shape (*spatial), or None
        Each voxel's pattern slot, when asked for: ``slots[p]`` for pattern ``p``.
    slots : numpy.ndarray of int64, shape (P,)
        The value ``index`` holds for each pattern (its mixed-radix code when the codes are few, else ``p``).
    num_slots : int
        One more than the largest slot.
    """

    patterns: np.ndarray
    counts: np.ndarray
    index: np.ndarray | None
    slots: np.ndarray
    num_slots: int

    def to_voxels(self, *values: np.ndarray) -> list[np.ndarray]:
        """Per-pattern ``values`` (each ``(..., P)``) as per-voxel maps ``(..., *spatial)``, in one pass."""
        if self.index is None:
            raise ValueError("these vote patterns were counted without the per-voxel index (keep_index=False).")
        tables, outs, rows = [], [], []
        for value in values:
            lead = value.shape[:-1]
            table = np.zeros((*lead, self.num_slots), dtype=value.dtype)
            table[..., self.slots] = value
            out = empty_output((*lead, *self.index.shape), value.dtype)
            tables += list(table.reshape(-1, self.num_slots))
            rows += list(flat_voxels(out, len(lead)).reshape(-1, self.index.size))
            outs.append(out)
        flat_index = self.index.reshape(-1)
        for region in iter_slabs(flat_index.size):
            slots = flat_index[region].astype(np.intp)  # one conversion, then one gather per map
            for table, row in zip(tables, rows):
                np.take(table, slots, out=row[region], mode="clip")  # slots are in range; 'raise' buffers
        return outs


def _slab_codes(slab: np.ndarray, num_classes: int, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """Mixed-radix code of each voxel's pattern: ``sum_r label_r * C**(R-1-r)`` (Horner's rule), written into
    ``out`` when given (labels are below ``C``, so no step overflows ``dtype``).

    The addition runs in ``dtype`` itself (``dtype=``): left to numpy's promotion, uint64 codes plus signed
    labels (int64, numpy's default) would be added in float64 and lose codes above ``2**53``."""
    code = np.empty(slab.shape[1:], dtype=dtype) if out is None else out
    np.copyto(code, slab[0], casting="unsafe")  # an integer-to-integer cast, exact for labels below C
    for rater_labels in slab[1:]:
        np.multiply(code, dtype.type(num_classes), out=code, dtype=dtype)
        np.add(code, rater_labels, out=code, dtype=dtype, casting="unsafe")
    return code


def _decode(codes: np.ndarray, num_raters: int, num_classes: int) -> np.ndarray:
    """``(P, R)`` labels of mixed-radix pattern codes."""
    patterns = np.empty((codes.size, num_raters), dtype=np.int64)
    rest = codes.astype(np.uint64)
    for rater_index in range(num_raters - 1, -1, -1):
        patterns[:, rater_index] = (rest % np.uint64(num_classes)).astype(np.int64)
        rest //= np.uint64(num_classes)
    return patterns


def vote_patterns(stack: np.ndarray, num_classes: int, *, keep_index: bool = True) -> VotePatterns:
    """Histogram of the vote patterns of an ``(R, *spatial)`` stack (labels below ``num_classes``).

    Each voxel's pattern is coded as one integer (mixed radix ``num_classes``). Up to
    :data:`DENSE_PATTERN_LIMIT` possible codes, the code itself is the per-voxel index (uint8 for up to 256
    codes, e.g. 4 raters and 3 classes) and the histogram is a ``bincount``, in one pass. Beyond, the codes
    that occur are collected first (sorted unique codes per slab), then each voxel is mapped to the rank of
    its code, in the smallest unsigned dtype that holds the number of patterns that occur.

    Raises
    ------
    ValueError
        When ``num_classes ** R`` codes do not fit in 64 bits (too many raters and classes).
    """
    num_raters = stack.shape[0]
    if not _power_within(num_classes, num_raters, int(np.iinfo(np.uint64).max)):
        raise ValueError(
            f"{num_raters} raters with {num_classes} classes have {num_classes}**{num_raters} possible vote "
            "patterns, more than a 64-bit code holds; use method='simpleitk'."
        )
    space = num_classes**num_raters
    code_dtype = _uint_for(space - 1)
    flat = flat_voxels(stack)
    regions = list(iter_slabs(flat.shape[1]))
    index = empty_output(stack.shape[1:], code_dtype) if keep_index and space <= DENSE_PATTERN_LIMIT else None
    if space <= DENSE_PATTERN_LIMIT:
        dense = np.zeros(space, dtype=np.int64)
        flat_index = None if index is None else index.reshape(-1)
        for region in regions:
            codes = _slab_codes(flat[:, region], num_classes, code_dtype,
                                out=None if flat_index is None else flat_index[region])
            dense += np.bincount(codes, minlength=space)
        present = np.flatnonzero(dense)
        return VotePatterns(patterns=_decode(present, num_raters, num_classes), counts=dense[present],
                            index=index, slots=present, num_slots=space)
    present = np.zeros(0, dtype=code_dtype)
    for region in regions:
        present = np.union1d(present, np.unique(_slab_codes(flat[:, region], num_classes, code_dtype)))
    index_dtype = _uint_for(max(present.size - 1, 0))
    index = empty_output(stack.shape[1:], index_dtype) if keep_index else None
    counts = np.zeros(present.size, dtype=np.int64)
    for region in regions:
        ranks = np.searchsorted(present, _slab_codes(flat[:, region], num_classes, code_dtype))
        counts += np.bincount(ranks, minlength=present.size)
        if index is not None:
            index.reshape(-1)[region] = ranks
    return VotePatterns(patterns=_decode(present, num_raters, num_classes), counts=counts, index=index,
                        slots=np.arange(present.size), num_slots=present.size)
