"""Equal-count bins of one class's probabilities by selection, without sorting them (for TACE).

TACE needs, per class, the mean probability and the mean indicator of every equal-count bin of the
sorted probabilities. Sorting 35 M values per class takes seconds; only the order statistics next to the
bin boundaries matter. This module finds them by a two-level radix selection on the bit patterns of the
probabilities (a positive IEEE float orders like its bits read as an integer):

1. one pass in chunks counts every *bucket* of values sharing their top bits (``bits >> shift``) with
   :func:`torch.bincount`, together with the bucket's hits (or soft-indicator sum) and value sum;
2. a bucket lies wholly inside one bin unless a bin boundary falls strictly inside it; the values of
   those few *straddling* buckets are counted a second time by their remaining low bits (float32: every
   distinct value its own count, so huge tie groups cost nothing extra), or gathered and sorted (float64),
   and the ranks of these distinct values decide which bin each belongs to.

Tie groups (equal values) never span two buckets; a tie group that spans a bin boundary inside a
straddling bucket is shared out between the bins with its mean indicator, as the module docstring of
:mod:`.adaptive` defines. The result equals the sort-based computation up to the order of floating-point
summation (tested against a full sort).

Written by hand because neither numpy (``partition`` with many ``kth`` plus one comparison pass per
boundary was 1.9 s per class at 35 M values) nor torch/scipy offer equal-count binning with these
tie semantics.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["equal_count_bins"]

#: Values counted per chunk in the bucket pass (bounded temporaries, cache-friendly).
_CHUNK = 1 << 22


def _bits(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer view of positive floats and the shift that leaves at most about 2^18–2^21 buckets in [0, 1]."""
    if values.dtype == np.float32:
        return values.view(np.int32), 12  # sign, exponent, 11 mantissa bits: <= 260,097 buckets
    if values.dtype == np.float64:
        return values.view(np.int64), 41  # sign, exponent, 11 mantissa bits: <= 2,095,105 buckets
    raise TypeError(f"equal_count_bins needs float32 or float64 values, got {values.dtype}.")


def _bucket_totals(
    values: np.ndarray, indicator: np.ndarray, num_buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bucket: number of values, indicator sum and value sum (float64), chunk by chunk.

    Element-wise steps run in numpy into reused buffers; the counting in :func:`torch.bincount` (on the
    same memory), which is several times faster than :func:`numpy.bincount` on int64 keys.
    """
    bits, shift = _bits(values)
    hard = indicator.dtype == bool
    size = min(_CHUNK, values.size)
    key = np.empty(size, dtype=np.int64)
    as_double = np.empty(size, dtype=np.float64)
    counts = torch.zeros(num_buckets * (2 if hard else 1), dtype=torch.int64)
    ind_sum = None if hard else torch.zeros(num_buckets, dtype=torch.float64)
    value_sum = torch.zeros(num_buckets, dtype=torch.float64)
    for start in range(0, values.size, _CHUNK):
        stop = min(start + _CHUNK, values.size)
        k, w = key[: stop - start], as_double[: stop - start]
        np.right_shift(bits[start:stop], shift, out=k, casting="unsafe")
        np.copyto(w, values[start:stop])
        tk = torch.from_numpy(k)
        value_sum += torch.bincount(tk, weights=torch.from_numpy(w), minlength=num_buckets)
        if hard:  # voxels and hits of every bucket from one integer count of 2 * bucket + hit
            np.left_shift(k, 1, out=k)
            np.add(k, indicator[start:stop].view(np.uint8), out=k, casting="unsafe")
            counts += torch.bincount(tk, minlength=2 * num_buckets)
        else:
            counts += torch.bincount(tk, minlength=num_buckets)
            np.copyto(w, indicator[start:stop])
            ind_sum += torch.bincount(tk, weights=torch.from_numpy(w), minlength=num_buckets)
    if hard:
        both = counts.numpy()
        return both[0::2] + both[1::2], both[1::2].astype(np.float64), value_sum.numpy()
    assert ind_sum is not None
    return counts.numpy(), ind_sum.numpy(), value_sum.numpy()


def _groups_by_low_bits(
    values: np.ndarray, indicator: np.ndarray, straddling: np.ndarray, num_buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tie groups of the float32 values in the ``straddling`` buckets, by a second count on their low bits.

    Within a bucket the 12 low bits of a float32 tell its value, so counting (bucket, low bits) pairs gives
    every distinct value's count and indicator sum without sorting, however large the tie groups.
    Returns ``(bucket, value, count, indicator_sum)`` of every non-empty group, in value order.
    """
    bits, shift = _bits(values)
    low_size = 1 << shift
    slot_of = np.full(num_buckets, -1, dtype=np.int64)
    slot_of[straddling] = np.arange(straddling.size)
    hard = indicator.dtype == bool
    size = straddling.size * low_size
    counts = torch.zeros(size * (2 if hard else 1), dtype=torch.int64)
    ind_sum = torch.zeros(size, dtype=torch.float64)
    key = np.empty(min(_CHUNK, values.size), dtype=np.int64)
    for start in range(0, values.size, _CHUNK):
        stop = min(start + _CHUNK, values.size)
        k = key[: stop - start]
        np.right_shift(bits[start:stop], shift, out=k, casting="unsafe")
        slot = slot_of[k]
        take = slot >= 0
        code = slot[take] * low_size + (bits[start:stop][take] & (low_size - 1))
        if hard:
            counts += torch.bincount(torch.from_numpy(code * 2 + indicator[start:stop][take]), minlength=2 * size)
        else:
            tc = torch.from_numpy(code)
            counts += torch.bincount(tc, minlength=size)
            ind_sum += torch.bincount(tc, weights=torch.from_numpy(indicator[start:stop][take]), minlength=size)
    if hard:
        both = counts.numpy()
        counts_np, ind_np = both[0::2] + both[1::2], both[1::2].astype(np.float64)
    else:
        counts_np, ind_np = counts.numpy(), ind_sum.numpy()
    nonzero = np.flatnonzero(counts_np)
    bucket = straddling[nonzero // low_size]
    value = ((bucket << shift) | (nonzero % low_size)).astype(np.int32).view(np.float32).astype(np.float64)
    return bucket, value, counts_np[nonzero], ind_np[nonzero]


def _groups_by_sort(
    values: np.ndarray, indicator: np.ndarray, straddling: np.ndarray, num_buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tie groups of the (float64) values in the ``straddling`` buckets by gathering and sorting them.

    Returns ``(bucket, value, count, indicator_sum)`` of every distinct value, in value order.
    """
    bits, shift = _bits(values)
    wanted = np.zeros(num_buckets, dtype=bool)
    wanted[straddling] = True
    key = np.empty(min(_CHUNK, values.size), dtype=np.intp)
    picked_values, picked_indicator = [], []
    for start in range(0, values.size, _CHUNK):
        stop = min(start + _CHUNK, values.size)
        k = key[: stop - start]
        np.right_shift(bits[start:stop], shift, out=k, casting="unsafe")
        take = wanted[k]
        picked_values.append(values[start:stop][take])
        picked_indicator.append(indicator[start:stop][take])
    sub_values = np.concatenate(picked_values)
    distinct, group, count = np.unique(sub_values, return_inverse=True, return_counts=True)
    ind_sum = np.bincount(group, weights=np.concatenate(picked_indicator).astype(np.float64), minlength=count.size)
    return distinct.view(np.int64) >> shift, distinct.astype(np.float64), count, ind_sum


def _share_groups(
    first_rank: np.ndarray, count: np.ndarray, value: np.ndarray, ind_sum: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, value sum and indicator sum of tie groups that start at ``first_rank``.

    A group spanning a bin boundary is shared out in proportion to its overlap with each bin, every
    member counting with the group's mean indicator (the average over all orderings of the ties).
    """
    r = starts.size - 1
    first_bin = np.searchsorted(starts, first_rank, side="right") - 1
    last_bin = np.searchsorted(starts, first_rank + count - 1, side="right") - 1
    alone = first_bin == last_bin
    bin_count = np.bincount(first_bin[alone], weights=count[alone], minlength=r).astype(np.float64)
    value_total = np.bincount(first_bin[alone], weights=count[alone] * value[alone], minlength=r).astype(np.float64)
    ind_total = np.bincount(first_bin[alone], weights=ind_sum[alone], minlength=r).astype(np.float64)
    for g in np.flatnonzero(~alone):  # at most r - 1 groups straddle a boundary
        lo, hi = starts[first_bin[g] : last_bin[g] + 1], starts[first_bin[g] + 1 : last_bin[g] + 2]
        overlap = np.minimum(first_rank[g] + count[g], hi) - np.maximum(first_rank[g], lo)
        span = slice(first_bin[g], last_bin[g] + 1)
        bin_count[span] += overlap
        value_total[span] += overlap * value[g]
        ind_total[span] += overlap * (ind_sum[g] / count[g])
    return bin_count, value_total, ind_total


def equal_count_bins(values: np.ndarray, indicator: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean value and tie-averaged mean indicator per equal-count bin of the sorted positive ``values``.

    Parameters
    ----------
    values : numpy.ndarray
        ``(N,)`` float32 or float64 probabilities, all ``> 0``, N >= 1.
    indicator : numpy.ndarray
        ``(N,)`` bool (hard labels) or float64 (soft indicator).
    num_bins : int
        Bins wanted; ``min(num_bins, N)`` bins of sizes differing by at most one (larger first).

    Returns
    -------
    tuple of numpy.ndarray
        ``(conf, acc)``: per bin the mean value and the mean indicator, float64.

    References
    ----------
    .. [1] J. Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019 (adaptive,
       equal-count binning).
    """
    n = values.size
    r = min(num_bins, n)
    sizes = np.full(r, n // r, dtype=np.int64)
    sizes[: n % r] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)])
    inner = starts[1:-1]
    hard = indicator.dtype == bool
    if inner.size == 0:
        hits = np.count_nonzero(indicator) if hard else np.sum(indicator, dtype=np.float64)
        return np.array([float(np.sum(values, dtype=np.float64))]) / n, np.array([float(hits)]) / n
    values = np.ascontiguousarray(values)
    indicator = np.ascontiguousarray(indicator)
    bits, shift = _bits(values)
    num_buckets = (int(bits.max()) >> shift) + 1
    counts, ind_sum, value_sum = _bucket_totals(values, indicator, num_buckets)
    bucket_end = np.cumsum(counts)
    bucket_start = bucket_end - counts
    # A boundary rank q (first rank of a bin) falls strictly inside the bucket b with start < q < end.
    holder = np.searchsorted(bucket_end, inner, side="right")
    straddling = np.unique(holder[bucket_start[holder] < inner])
    whole = np.ones(num_buckets, dtype=bool)
    whole[straddling] = False
    whole &= counts > 0
    bin_of_bucket = np.searchsorted(inner, bucket_start[whole], side="right")
    count = np.bincount(bin_of_bucket, weights=counts[whole], minlength=r).astype(np.int64)
    value_total = np.bincount(bin_of_bucket, weights=value_sum[whole], minlength=r).astype(np.float64)
    indicator_total = np.bincount(bin_of_bucket, weights=ind_sum[whole], minlength=r).astype(np.float64)
    if straddling.size:
        find_groups = _groups_by_low_bits if values.dtype == np.float32 else _groups_by_sort
        group_bucket, group_value, group_count, group_ind = find_groups(values, indicator, straddling, num_buckets)
        # each group's first rank: its bucket's start plus the groups before it in the same bucket
        within = np.cumsum(group_count) - group_count  # exclusive, over all groups in value order
        first_in_bucket = np.searchsorted(group_bucket, group_bucket)  # groups come sorted by bucket
        first_rank = bucket_start[group_bucket] + within - within[first_in_bucket]
        extra = _share_groups(first_rank, group_count, group_value, group_ind, starts)
        count += np.rint(extra[0]).astype(np.int64)
        value_total += extra[1]
        indicator_total += extra[2]
    assert np.array_equal(count, sizes), "equal-count binning lost voxels"
    return value_total / sizes, indicator_total / sizes
