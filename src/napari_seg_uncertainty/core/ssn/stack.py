"""A lazy, cached, read-only array of label maps sampled from a :class:`~.distribution.LowRankLogits`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import check_index, check_seed, describe
from .distribution import LowRankLogits
from .lazy import LazyLowRankLogits

__all__ = ["SampleLabelStack"]


def _normalize_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """Expand ``key`` to one entry per axis (Ellipsis and missing trailing axes become full slices)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is None for k in key):
        raise IndexError("SampleLabelStack does not support numpy.newaxis in indices.")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...').")
    if Ellipsis in key:
        position = key.index(Ellipsis)
        fill = (slice(None),) * (ndim - len(key) + 1)
        key = key[:position] + fill + key[position + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a stack with {ndim} dimensions: {len(key)} given.")
    return key + (slice(None),) * (ndim - len(key))


def _as_plane_index(value: Any) -> int | None:
    """The index when ``value`` picks a single plane (an integer), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        return int(value)
    return None


class SampleLabelStack:
    """Read-only array of sampled label maps, shape ``(N, *S)``, computed on demand.

    Indexing a single sample and, for 3-D maps, a single plane (``stack[i, z]``, what a viewer
    showing one plane asks for) computes only that plane with :meth:`LowRankLogits.slice_labels`;
    other indices compute whole samples.  Results are cached (least recently used first out)
    until :meth:`set_distribution` or :meth:`set_sample_index` changes what a sample is.  The
    standard-normal part of recently shown planes is cached too, so a new distribution that
    differs only in class scales or temperature (a slider move) is redrawn without drawing new
    random numbers.  Thread-safe.

    Parameters
    ----------
    distribution : LowRankLogits or LazyLowRankLogits
        Distribution to sample from (scales and temperature included).  A lazy one is only ever
        computed plane by plane (its whole-sample noise is never held).
    sample_indices : sequence of int
        For each of the ``N`` entries, which sample of the seeded sequence it shows.
    seed : int
        Seed of the samples (``>= 0``).
    cache_bytes : int
        Upper bound on the memory kept for label maps (default 256 MiB).
    noise_cache_bytes : int
        Upper bound on the memory kept for unscaled noise planes (default 64 MiB; 0 disables).
    volume_cache_bytes : int
        Upper bound on the memory kept for the unscaled noise of whole 3-D samples (default
        320 MiB: two samples of 4 classes on 155×240×240).  A whole sample, once computed, keeps
        its noise here, so a class-scale or temperature change redraws the whole volume with one
        scaling and argmax pass (no new random numbers), and its planes come from it too.

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> dist = synthetic_distribution((4, 32, 32), num_classes=3, rank=2)
    >>> stack = SampleLabelStack(dist, range(5), seed=1)
    >>> stack.shape, stack.dtype
    ((5, 4, 32, 32), dtype('uint8'))
    >>> bool(np.array_equal(stack[3, 2], dist.slice_labels(2, seed=1, sample_index=3)))
    True
    """

    def __init__(
        self,
        distribution: LowRankLogits,
        sample_indices: Sequence[int],
        *,
        seed: int = 0,
        cache_bytes: int = 256 << 20,
        noise_cache_bytes: int = 64 << 20,
        volume_cache_bytes: int = 320 << 20,
    ) -> None:
        if not isinstance(distribution, (LowRankLogits, LazyLowRankLogits)):
            raise TypeError(
                f"distribution must be a LowRankLogits or LazyLowRankLogits, got {describe(distribution)}."
            )
        if isinstance(sample_indices, (str, bytes)) or not hasattr(sample_indices, "__iter__"):
            raise TypeError(f"sample_indices must be a sequence of integers, got {describe(sample_indices)}.")
        indices = [check_index(i, name=f"sample_indices[{k}]") for k, i in enumerate(sample_indices)]
        if not indices:
            raise ValueError("sample_indices is empty; give at least one sample index.")
        self._distribution = distribution
        self._indices = indices
        self._seed = check_seed(seed)
        self._cache_bytes = check_index(cache_bytes, name="cache_bytes")
        self._cache: OrderedDict[tuple[int, int | None], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._noise_cache_bytes = check_index(noise_cache_bytes, name="noise_cache_bytes")
        self._noise_cache: OrderedDict[tuple[int, int | None], np.ndarray] = OrderedDict()
        self._noise_cached_bytes = 0
        self._noise_owner: LowRankLogits | None = None
        self._volume_cache_bytes = check_index(volume_cache_bytes, name="volume_cache_bytes")
        self._volume_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._volume_cached_bytes = 0
        self._volume_owner: LowRankLogits | None = None
        self._lock = threading.RLock()

    # array protocol ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *S)``."""
        return (len(self._indices), *self._distribution.spatial_shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions, ``1 + spatial_ndim``."""
        return 1 + self._distribution.spatial_ndim

    @property
    def dtype(self) -> np.dtype:
        """Label dtype (``uint8`` for up to 256 classes)."""
        return label_dtype(self._distribution.num_classes)

    @property
    def size(self) -> int:
        """Number of elements."""
        return prod(self.shape)

    def __len__(self) -> int:
        return len(self._indices)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self[:]
        return full if dtype is None else full.astype(dtype)

    # state ---------------------------------------------------------------------------
    @property
    def distribution(self) -> LowRankLogits | LazyLowRankLogits:
        """The distribution the samples come from."""
        return self._distribution

    @property
    def seed(self) -> int:
        """Seed of the samples."""
        return self._seed

    @property
    def sample_indices(self) -> tuple[int, ...]:
        """Which sample of the seeded sequence each entry shows."""
        return tuple(self._indices)

    def set_distribution(self, distribution: LowRankLogits | LazyLowRankLogits) -> None:
        """Show samples of another distribution on the same grid (e.g. new scales); clears the cache.

        Parameters
        ----------
        distribution : LowRankLogits
            Same number of classes and grid as the current one.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.set_distribution(dist.with_temperature(0.0))
        >>> bool(np.array_equal(stack[1], dist.mean_prediction()))
        True
        """
        if not isinstance(distribution, (LowRankLogits, LazyLowRankLogits)):
            raise TypeError(
                f"distribution must be a LowRankLogits or LazyLowRankLogits, got {describe(distribution)}."
            )
        if (distribution.num_classes, distribution.spatial_shape) != (
            self._distribution.num_classes,
            self._distribution.spatial_shape,
        ):
            raise ValueError(
                f"distribution must have {self._distribution.num_classes} classes on the grid "
                f"{self._distribution.spatial_shape}, got {distribution.num_classes} on "
                f"{distribution.spatial_shape}."
            )
        with self._lock:
            self._distribution = distribution
            self._cache.clear()
            self._cached_bytes = 0

    def set_sample_index(self, entry: int, sample_index: int) -> None:
        """Make ``entry`` show sample number ``sample_index`` of the seeded sequence (a "new sample").

        Parameters
        ----------
        entry : int
            Position in the stack, ``0 <= entry < N``.
        sample_index : int
            Which sample of the seeded sequence it shows from now on.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.set_sample_index(0, 9)
        >>> stack.sample_indices
        (9, 1)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        sample_index = check_index(sample_index, name="sample_index")
        with self._lock:
            self._indices[entry] = sample_index
            for key in [k for k in self._cache if k[0] == entry]:
                self._cached_bytes -= self._cache.pop(key).nbytes

    # computation ---------------------------------------------------------------------
    @staticmethod
    def _store(cache: Any, key: Any, value: np.ndarray, total: int, limit: int) -> int:
        """Insert into an LRU cache, evict the oldest entries beyond ``limit`` bytes; return the new total."""
        if key in cache:
            total -= cache.pop(key).nbytes
        cache[key] = value
        total += value.nbytes
        while total > limit and cache:
            _, dropped = cache.popitem(last=False)
            total -= dropped.nbytes
        return total

    def _noise(self, distribution: LowRankLogits, sample_index: int, plane: int | None) -> np.ndarray:
        key = (sample_index, plane)
        with self._lock:
            owner = self._noise_owner
            if owner is not None and distribution._shares_parameters(owner) and key in self._noise_cache:
                self._noise_cache.move_to_end(key)
                return self._noise_cache[key]
        noise = distribution._plane_noise(self._seed, sample_index, plane)
        noise.flags.writeable = False
        with self._lock:
            if self._noise_owner is None or not distribution._shares_parameters(self._noise_owner):
                self._noise_cache.clear()
                self._noise_cached_bytes = 0
                self._noise_owner = distribution
            self._noise_cached_bytes = self._store(
                self._noise_cache, key, noise, self._noise_cached_bytes, self._noise_cache_bytes
            )
        return noise

    def _cached_volume_noise(self, distribution: LowRankLogits, sample_index: int) -> np.ndarray | None:
        with self._lock:
            owner = self._volume_owner
            if owner is not None and distribution._shares_parameters(owner) and sample_index in self._volume_cache:
                self._volume_cache.move_to_end(sample_index)
                return self._volume_cache[sample_index]
        return None

    def _volume_noise(self, distribution: LowRankLogits, sample_index: int, *, keep: bool) -> np.ndarray:
        """Unscaled noise of a whole 3-D sample: from the cache, or computed (and kept if ``keep``)."""
        noise = self._cached_volume_noise(distribution, sample_index)
        if noise is not None:
            return noise
        noise = distribution._volume_noise(self._seed, sample_index)
        noise.flags.writeable = False
        if keep and noise.nbytes <= self._volume_cache_bytes:
            with self._lock:
                if self._volume_owner is None or not distribution._shares_parameters(self._volume_owner):
                    self._volume_cache.clear()
                    self._volume_cached_bytes = 0
                    self._volume_owner = distribution
                self._volume_cached_bytes = self._store(
                    self._volume_cache, sample_index, noise, self._volume_cached_bytes, self._volume_cache_bytes
                )
        return noise

    def _whole_sample_noise_fits(self, distribution: LowRankLogits) -> bool:
        if getattr(distribution, "lazy", False):
            return False
        size = array_bytes((distribution.num_classes, *distribution.spatial_shape), np.float32)
        return size <= max(self._volume_cache_bytes, 1 << 20)

    def _cached(self, entry: int, plane: int | None, *, keep_noise: bool = True) -> np.ndarray:
        key = (entry, plane)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if plane is not None and (entry, None) in self._cache:
                return self._cache[(entry, None)][plane]
            distribution, sample_index = self._distribution, self._indices[entry]
        if plane is None and distribution.spatial_ndim == 3:
            if self._whole_sample_noise_fits(distribution):
                noise = self._volume_noise(distribution, sample_index, keep=keep_noise)
                result = distribution._labels_from_noise(noise)
            else:  # too large to hold the noise: plane by plane, O(C * Y * X) memory
                result = distribution.sample_labels_at(sample_index, seed=self._seed)
        else:
            volume = None if plane is None else self._cached_volume_noise(distribution, sample_index)
            if volume is not None:
                result = distribution._labels_from_noise(volume[:, plane], plane=plane)
            else:
                noise = self._noise(distribution, sample_index, plane)
                result = distribution._labels_from_noise(noise, plane=plane)
        result.flags.writeable = False
        with self._lock:
            if distribution is self._distribution and sample_index == self._indices[entry]:
                self._cached_bytes = self._store(
                    self._cache, key, result, self._cached_bytes, self._cache_bytes
                )
        return result

    def cached_sample(self, entry: int) -> np.ndarray | None:
        """Whole label map of one entry if it is computed already (read-only), else ``None``; never computes.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.cached_sample(1) is None
        True
        >>> _ = stack.sample(1)
        >>> stack.cached_sample(1).shape
        (16, 16)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            found = self._cache.get((entry, None))
            if found is not None:
                self._cache.move_to_end((entry, None))
            return found

    def has_noise(self, entry: int) -> bool:
        """True when the unscaled noise of the whole sample of ``entry`` is cached (a redraw is fast)."""
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            distribution, sample_index = self._distribution, self._indices[entry]
        if distribution.spatial_ndim == 2:
            return True
        return self._cached_volume_noise(distribution, sample_index) is not None

    def prepare_noise(self, entry: int) -> bool:
        """Compute and keep the unscaled noise of the whole sample of ``entry`` (3-D), for fast redraws.

        Returns True when the noise is kept (always for 2-D, where planes are the samples), False
        when it does not fit ``volume_cache_bytes``.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> stack = SampleLabelStack(synthetic_distribution((4, 16, 16), num_classes=3, rank=2), range(2), seed=0)
        >>> stack.has_noise(1), stack.prepare_noise(1), stack.has_noise(1)
        (False, True, True)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            distribution, sample_index = self._distribution, self._indices[entry]
        if distribution.spatial_ndim == 2:
            return True
        if not self._whole_sample_noise_fits(distribution):
            return False
        self._volume_noise(distribution, sample_index, keep=True)
        return self.has_noise(entry)

    def sample(self, entry: int, *, keep_noise: bool = True) -> np.ndarray:
        """Whole label map of one entry, shape ``S`` (read-only, cached).

        Parameters
        ----------
        entry : int
            Position in the stack, ``0 <= entry < N``.
        keep_noise : bool
            3-D: keep the sample's unscaled noise (``C * prod(S)`` float32, up to
            ``volume_cache_bytes``) so that the next class-scale or temperature change redraws it
            without new random numbers.  Pass False when going through many samples once (metrics,
            export), so they do not push the sample on screen out of the cache.

        Returns
        -------
        numpy.ndarray
            ``distribution.sample_labels_at(sample_indices[entry], seed=seed)``.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2)
        >>> SampleLabelStack(dist, range(2), seed=0).sample(1).shape
        (16, 16)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        return self._cached(entry, None, keep_noise=bool(keep_noise))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _normalize_key(key, self.ndim)
        entries = np.arange(len(self._indices))[key[0]]
        single_entry = np.ndim(entries) == 0
        plane = _as_plane_index(key[1]) if self._distribution.spatial_ndim == 3 else None
        if plane is not None:
            depth = self._distribution.spatial_shape[0]
            if not -depth <= plane < depth:
                raise IndexError(f"index {plane} is out of bounds for axis 1 with size {depth}.")
            plane %= depth
            rest = key[2:]
        else:
            rest = key[1:]
        entry_list = np.atleast_1d(entries)
        if len(entry_list) > 1:  # one map is never larger than the distribution's own mean
            map_shape = self.shape[1:] if plane is None else self.shape[2:]
            check_allocation(
                array_bytes((len(entry_list), *map_shape), self.dtype),
                what=f"{len(entry_list)} sampled label maps of shape {map_shape}",
                cause=f"index {key!r}",
                advice="index fewer samples (or one plane) at a time",
            )
        maps = [self._cached(int(e), plane)[rest] for e in entry_list]
        if single_entry:
            return maps[0].copy()
        if not maps:
            shape_rest = np.empty(self.shape[1:] if plane is None else self.shape[2:], dtype=bool)[rest].shape
            return np.empty((0, *shape_rest), dtype=self.dtype)
        return np.stack(maps)

    def __repr__(self) -> str:
        return f"SampleLabelStack(shape={self.shape}, dtype={self.dtype}, seed={self._seed})"
