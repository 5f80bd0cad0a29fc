"""Equal-count bins of one class's probabilities by selection, without sorting them (for TACE).

TACE needs, per class, the mean probability and the mean indicator of every equal-count bin of the
sorted probabilities. Sorting 35 M values per class takes seconds; only the order statistics next to the
bin boundaries matter. This module finds them by a two-level radix selection on the bit patterns of the
probabilities (a positive IEEE float orders like its bits read as an integer):

1. one pass in chunks counts every *bucket* of values sharing their top bits (``bits >> shift``) with
   :func:`torch.bincount`, together with the bucket's hits (or soft-indicator sum) and value sum;
2. a bucket lies wholly inside one bin unless a bin boundary falls strictly inside it; only the values
   of those few *straddling* buckets are gathered (a second pass) and sorted, and their ranks decide
   which bin each belongs to.

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


def _gather(values: np.ndarray, indicator: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values (and indicators) whose bucket is marked in the boolean lookup ``wanted``."""
    bits, shift = _bits(values)
    key = np.empty(min(_CHUNK, values.size), dtype=np.intp)
    picked_values, picked_indicator = [], []
    for start in range(0, values.size, _CHUNK):
        stop = min(start + _CHUNK, values.size)
        k = key[: stop - start]
        np.right_shift(bits[start:stop], shift, out=k, casting="unsafe")
        take = wanted[k]
        picked_values.append(values[start:stop][take])
        picked_indicator.append(indicator[start:stop][take])
    return np.concatenate(picked_values), np.concatenate(picked_indicator)


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
        wanted = np.zeros(num_buckets, dtype=bool)
        wanted[straddling] = True
        sub_values, sub_indicator = _gather(values, indicator, wanted)
        order = np.argsort(sub_values, kind="stable")
        sub_values, sub_indicator = sub_values[order], sub_indicator[order].astype(np.float64)
        # Ranks: each straddling bucket's values follow its bucket start, in sorted order.
        sub_buckets = straddling[np.repeat(np.arange(straddling.size), counts[straddling])]
        offsets = np.arange(sub_values.size) - np.repeat(np.cumsum(counts[straddling]) - counts[straddling],
                                                          counts[straddling])
        ranks = bucket_start[sub_buckets] + offsets
        bins = np.searchsorted(inner, ranks, side="right")
        # Every member of a tie group counts with the group's mean indicator (orderings averaged).
        _, group, group_size = np.unique(sub_values, return_inverse=True, return_counts=True)
        group_mean = np.bincount(group, weights=sub_indicator) / group_size
        count += np.bincount(bins, minlength=r)
        value_total += np.bincount(bins, weights=sub_values.astype(np.float64), minlength=r)
        indicator_total += np.bincount(bins, weights=group_mean[group], minlength=r)
    assert np.array_equal(count, sizes), "equal-count binning lost voxels"
    return value_total / sizes, indicator_total / sizes
