"""An SSN distribution over a whole scan whose planes are computed (or read) only when they are needed.

At CT size (300×512×512, rank 10, 3 classes) the covariance factor ``(K, C, Z, Y, X)`` alone is 9.4 GB
of float32: :class:`~.distribution.LowRankLogits` cannot hold it.  :class:`LazyLowRankLogits` holds a
:class:`PlaneSource` instead — something that gives one plane's ``mean (C, Y, X)``, ``cov_factor
(K, C, Y, X)`` and ``cov_diag (C, Y, X)`` on request — and keeps the parameters of the last few planes
used in a small LRU cache:

* a 2-D SSN on a volume: the source runs the network on the plane when it is first needed
  (:class:`~napari_seg_uncertainty.core.training.ssn_inference.SlicePredictor`);
* a 3-D SSN: the source reads the plane back from a zarr store written slab by slab
  (:class:`~.store.ZarrPlaneSource`, :func:`~napari_seg_uncertainty.core.training.ssn_inference.write_ssn_store`);
* :class:`ArrayPlaneSource`: the planes of an in-memory :class:`~.distribution.LowRankLogits` (tests, small files).

Samples are those of the full distribution: :meth:`LazyLowRankLogits.slice` draws plane ``z`` from the
same random streams as :meth:`LowRankLogits.slice` (see :mod:`.sampling`), so a lazily drawn plane is
bit for bit the plane of the full computation.  The viewer reads the volume through dask arrays whose
chunks are single planes (:meth:`LazyLowRankLogits.mean_labels_dask`, :meth:`~LazyLowRankLogits.sample_labels_dask`).

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np

from .._numeric import label_dtype
from .._validation import check_index, check_int, check_positive, check_real, check_seed, check_spacing, describe
from . import _parameters
from .distribution import LowRankLogits
from .sampling import argmax_into, labels_from_noise, plane_noise, scaled_logits

__all__ = [
    "DEFAULT_CACHE_PLANES",
    "LABEL_CACHE_MAPS",
    "ArrayPlaneSource",
    "LazyLowRankLogits",
    "PlaneParameters",
    "PlaneSource",
]

#: Label maps (sample or mean labels of one plane) a :class:`LazyLowRankLogits` keeps: 32 MiB at 512² uint8.
LABEL_CACHE_MAPS = 128

#: Planes whose parameters a :class:`LazyLowRankLogits` keeps by default (rank 10, 3 classes, 512²: 38 MiB each).
DEFAULT_CACHE_PLANES = 8

_names = itertools.count()


@dataclass(frozen=True)
class PlaneParameters:
    """The parameters of one plane ``z`` of a low-rank logit distribution.

    Attributes
    ----------
    mean : numpy.ndarray
        ``(C, Y, X)`` float32 mean logits.
    cov_factor : numpy.ndarray or None
        ``(K, C, Y, X)`` float32 covariance factor (None for rank 0).
    cov_diag : numpy.ndarray
        ``(C, Y, X)`` float32 covariance diagonal (variances).
    """

    mean: np.ndarray
    cov_factor: np.ndarray | None
    cov_diag: np.ndarray


class PlaneSource:
    """Where a :class:`LazyLowRankLogits` gets its planes: subclass and implement :meth:`plane_parameters`.

    Attributes
    ----------
    num_classes, rank : int
        ``C`` and ``K`` (0 without a factor).
    spatial_shape : tuple of int
        ``(Z, Y, X)``.
    independent_planes : bool
        True when every plane has its own low-rank weights (a 2-D SSN run plane by plane).
    class_names : tuple of str or None
    spacing : tuple of float or None
    """

    num_classes: int
    rank: int
    spatial_shape: tuple[int, int, int]
    independent_planes: bool
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None

    def plane_parameters(self, z: int) -> PlaneParameters:
        """Mean, factor and diagonal of plane ``z`` (``0 <= z < Z``), float32."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short text for ``repr``."""
        return type(self).__name__


class ArrayPlaneSource(PlaneSource):
    """The planes of an in-memory 3-D :class:`LowRankLogits` (for tests, small volumes and saved files).

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> full = synthetic_distribution((4, 16, 16), num_classes=3, rank=2)
    >>> lazy = LazyLowRankLogits(ArrayPlaneSource(full))
    >>> bool(np.array_equal(lazy.slice_labels(2, seed=1), full.slice_labels(2, seed=1)))
    True
    """

    def __init__(self, distribution: LowRankLogits) -> None:
        if not isinstance(distribution, LowRankLogits) or distribution.spatial_ndim != 3:
            raise TypeError(f"distribution must be a 3-D LowRankLogits, got {describe(distribution)}.")
        self.distribution = distribution
        self.num_classes = distribution.num_classes
        self.rank = distribution.rank
        self.spatial_shape = distribution.spatial_shape  # type: ignore[assignment]
        self.independent_planes = distribution.independent_planes
        self.class_names = distribution.class_names
        self.spacing = distribution.spacing

    def plane_parameters(self, z: int) -> PlaneParameters:
        dist = self.distribution
        factor = None if dist.cov_factor is None else dist.cov_factor[:, :, z]
        return PlaneParameters(dist.mean[:, z], factor, dist.cov_diag[:, z])


class _PlaneCache:
    """LRU cache of 2-D :class:`LowRankLogits` (scales 1) per plane, shared by every derived distribution."""

    def __init__(self, source: PlaneSource, size: int) -> None:
        self.source = source
        self.size = size
        self.lock = threading.Lock()
        self.planes: OrderedDict[int, LowRankLogits] = OrderedDict()
        self.labels: OrderedDict[tuple, np.ndarray] = OrderedDict()  # label maps of recently shown planes
        self.pending: dict[int, threading.Lock] = {}  # planes being computed now
        self.computed = 0  # planes computed (or read) so far, for tests and benchmarks

    def get(self, z: int) -> LowRankLogits:
        with self.lock:
            found = self.planes.get(z)
            if found is not None:
                self.planes.move_to_end(z)
                return found
            pending = self.pending.setdefault(z, threading.Lock())
        with pending:  # two viewers' threads asking for the same new plane: one computes, the other waits
            with self.lock:
                found = self.planes.get(z)
            if found is not None:
                return found
            try:
                params = self.source.plane_parameters(z)
                plane = LowRankLogits(params.mean, params.cov_factor, params.cov_diag)
                with self.lock:
                    self.computed += 1
                    self.planes[z] = plane
                    self.planes.move_to_end(z)
                    while len(self.planes) > self.size:
                        self.planes.popitem(last=False)
            finally:
                with self.lock:
                    self.pending.pop(z, None)
        return plane

    def peek(self, z: int) -> LowRankLogits | None:
        """Plane ``z`` if it is in the cache now (marked as just used), else None; never calls the source."""
        with self.lock:
            found = self.planes.get(z)
            if found is not None:
                self.planes.move_to_end(z)
            return found

    def compute_uncached(self, z: int) -> LowRankLogits:
        """Plane ``z`` from the cache if there (its place unchanged), else from the source *without* inserting
        it: a pass over the whole volume leaves the planes on screen in the cache."""
        with self.lock:
            found = self.planes.get(z)
            pending = self.pending.get(z)
        if found is None and pending is not None:  # another thread is computing it for the cache: wait
            with pending:
                with self.lock:
                    found = self.planes.get(z)
        if found is not None:
            return found
        params = self.source.plane_parameters(z)
        with self.lock:
            self.computed += 1
        return LowRankLogits(params.mean, params.cov_factor, params.cov_diag)

    def cached(self) -> tuple[int, ...]:
        with self.lock:
            return tuple(self.planes)

    def cached_labels(self, key: tuple, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A label map from the LRU of the last ``LABEL_CACHE_MAPS`` ones, else ``compute()`` (kept read-only)."""
        with self.lock:
            found = self.labels.get(key)
            if found is not None:
                self.labels.move_to_end(key)
                return found
        labels = compute()
        labels.flags.writeable = False
        with self.lock:
            self.labels[key] = labels
            while len(self.labels) > LABEL_CACHE_MAPS:
                self.labels.popitem(last=False)
        return labels


class _PlaneArray:
    """A read-only ``(Z, *rest)`` array-like computing planes on demand, for :func:`dask.array.from_array`."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, plane: Callable[[int], np.ndarray], axis: int) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self._plane, self._axis = plane, axis

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        planes = range(self.shape[self._axis])[key[self._axis]]
        if isinstance(planes, int):
            rest = key[: self._axis] + key[self._axis + 1 :]
            return self._plane(planes)[rest]
        rest = key[: self._axis] + (slice(None),) + key[self._axis + 1 :]
        if len(planes) == 0:
            return np.empty(np.empty(self.shape, dtype=bool)[key].shape, dtype=self.dtype)
        return np.stack([self._plane(z) for z in planes], axis=self._axis)[rest]


@dataclass(frozen=True, eq=False, repr=False)
class LazyLowRankLogits:
    """A 3-D low-rank logit distribution whose planes come from a :class:`PlaneSource` when first needed.

    The read API of :class:`LowRankLogits` where it does not need the whole volume: shape, scales,
    temperature, names, :meth:`slice` / :meth:`slice_labels` (bit for bit those of the full
    distribution), :meth:`plane` (one plane as a 2-D :class:`LowRankLogits`) and dask arrays of one
    plane per chunk for napari.  A frozen dataclass: :meth:`with_temperature`, :meth:`scale_class`,
    :meth:`with_class_scales` and :meth:`with_class_names` return new objects sharing the source and
    the plane cache.

    Parameters
    ----------
    source : PlaneSource
        Gives each plane's mean, factor and diagonal.
    cache_planes : int
        How many planes' parameters to keep (least recently used first out; default 8).
    class_scales : sequence of float, optional
        Factor on each class's noise (default all 1), as in :class:`LowRankLogits`.
    temperature : float
        Factor ``T >= 0`` on all noise (default 1).
    class_names : sequence of str, optional
        Default: the source's, else ``"class 0"``, ...
    spacing : sequence of float, optional
        Default: the source's.

    Notes
    -----
    Memory: ``cache_planes * (K + 3) * C * Y * X`` float32 (38 MiB per 512² plane at rank 10 with
    3 classes), up to :data:`LABEL_CACHE_MAPS` label maps of planes shown (32 MiB at 512²), plus what
    the source holds.  Thread-safe: a plane asked for by two threads at once is computed once (the
    second waits for it).

    References
    ----------
    .. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty." NeurIPS 2020.

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> full = synthetic_distribution((6, 16, 16), num_classes=3, rank=2)
    >>> lazy = LazyLowRankLogits(ArrayPlaneSource(full), cache_planes=2)
    >>> lazy.spatial_shape, lazy.rank
    ((6, 16, 16), 2)
    >>> hot = lazy.with_temperature(2.0).scale_class(1, 0.5)
    >>> bool(np.array_equal(hot.slice(3, seed=4), full.with_temperature(2.0).scale_class(1, 0.5).slice(3, seed=4)))
    True
    """

    source: PlaneSource
    _: KW_ONLY
    cache_planes: int = DEFAULT_CACHE_PLANES
    class_scales: tuple[float, ...] | None = None
    temperature: float = 1.0
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None
    _cache: _PlaneCache | None = field(default=None, repr=False)
    _name: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        source = self.source
        if not isinstance(source, PlaneSource):
            raise TypeError(f"source must be a PlaneSource, got {describe(source)}.")
        if len(source.spatial_shape) != 3:
            raise ValueError(f"a lazy distribution is 3-D, its source has spatial shape {source.spatial_shape}.")
        cache_planes = check_int(self.cache_planes, name="cache_planes", minimum=1)
        cache = self._cache
        if cache is None or cache.source is not source:
            cache = _PlaneCache(source, cache_planes)
        cache.size = cache_planes
        num_classes = int(source.num_classes)
        names = self.class_names if self.class_names is not None else source.class_names
        spacing = self.spacing if self.spacing is not None else source.spacing
        values = {
            "cache_planes": cache_planes,
            "class_scales": _parameters.class_scales(self.class_scales, num_classes),
            "temperature": check_positive(self.temperature, name="temperature", allow_zero=True),
            "class_names": _parameters.class_names(names, num_classes),
            "spacing": check_spacing(spacing, 3),
            "_cache": cache,
            "_name": self._name or f"lazy-ssn-{next(_names)}",
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ shape and scales
    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.source.num_classes)

    @property
    def rank(self) -> int:
        """Rank ``K`` of the covariance factor (0 for a diagonal-only model)."""
        return int(self.source.rank)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(Z, Y, X)``."""
        return tuple(int(s) for s in self.source.spatial_shape)

    @property
    def spatial_ndim(self) -> int:
        """Always 3."""
        return 3

    @property
    def independent_planes(self) -> bool:
        """True when every plane draws its own low-rank weights (a 2-D SSN applied plane by plane)."""
        return bool(self.source.independent_planes)

    @property
    def noise_scales(self) -> np.ndarray:
        """Effective factor on each class's noise: ``temperature * class_scales``, shape ``(C,)``."""
        return self.temperature * np.asarray(self.class_scales)

    @property
    def lazy(self) -> bool:
        """True: planes are computed on demand (:class:`~.stack.SampleLabelStack` then never holds a volume)."""
        return True

    @property
    def cached_planes(self) -> tuple[int, ...]:
        """Planes whose parameters are in the cache now, least recently used first."""
        assert self._cache is not None
        return self._cache.cached()

    @property
    def planes_computed(self) -> int:
        """How many planes the source has computed (or read) so far, for all derived distributions together."""
        assert self._cache is not None
        return self._cache.computed

    def __repr__(self) -> str:
        return (
            f"LazyLowRankLogits(num_classes={self.num_classes}, spatial_shape={self.spatial_shape}, "
            f"rank={self.rank}, class_scales={self.class_scales}, temperature={self.temperature}, "
            f"independent_planes={self.independent_planes}, source={self.source.describe()}, "
            f"cache_planes={self.cache_planes})"
        )

    # ------------------------------------------------------------------ changes (new objects)
    def scale_class(self, class_index: int, weight: float) -> LazyLowRankLogits:
        """Multiply the noise of one class by ``weight`` (as :meth:`LowRankLogits.scale_class`)."""
        class_index = check_index(class_index, name="class_index", size=self.num_classes)
        scales = list(self.class_scales or ())
        scales[class_index] *= check_real(weight, name="weight")
        return dataclasses.replace(self, class_scales=tuple(scales))

    def with_class_scales(self, class_scales: Sequence[float]) -> LazyLowRankLogits:
        """The same distribution with another factor on every class's noise (replaces the current scales)."""
        return dataclasses.replace(self, class_scales=class_scales)

    def with_temperature(self, temperature: float) -> LazyLowRankLogits:
        """The same distribution with temperature ``T >= 0`` (replaces the current one)."""
        return dataclasses.replace(self, temperature=temperature)

    def with_class_names(self, class_names: Sequence[str]) -> LazyLowRankLogits:
        """The same distribution with other class names."""
        return dataclasses.replace(self, class_names=class_names)

    # ------------------------------------------------------------------ planes
    def _base_plane(self, z: int) -> LowRankLogits:
        z = check_index(z, name="z", size=self.spatial_shape[0])
        assert self._cache is not None
        return self._cache.get(z)

    def plane(self, z: int) -> LowRankLogits:
        """Plane ``z`` as a 2-D :class:`LowRankLogits` with this distribution's scales, temperature and names.

        Its parameters are those of the full distribution's plane; its own samples (``sample_at``)
        use a 2-D map's random streams, so they are *not* :meth:`slice` — use :meth:`slice` /
        :meth:`slice_labels` for the planes of this distribution's samples.
        """
        return self._scaled(self._base_plane(z))

    def cached_plane(self, z: int) -> LowRankLogits | None:
        """Plane ``z`` as :meth:`plane` gives it if its parameters are in the cache now, else None.

        One locked lookup that never runs the source (the network): a viewer thread can ask for a plane
        without the check-then-read race of ``z in cached_planes`` followed by :meth:`plane`. The object
        returned keeps its parameters even if the cache drops the plane afterwards.
        """
        z = check_index(z, name="z", size=self.spatial_shape[0])
        assert self._cache is not None
        base = self._cache.peek(z)
        return None if base is None else self._scaled(base)

    def cached_slice_labels(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray | None:
        """:meth:`slice_labels` if plane ``z``'s parameters are in the cache now, else None (the source is not run).

        As :meth:`cached_plane`: one locked lookup, then the labels from the plane found, so a plane
        dropped from the cache in between does not make this call run the network.
        """
        z = check_index(z, name="z", size=self.spatial_shape[0])
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        assert self._cache is not None
        base = self._cache.peek(z)
        if base is None:
            return None
        key = (z, seed, sample_index, tuple(float(v) for v in self.noise_scales))
        return self._cache.cached_labels(key, lambda: self._labels_of(base, z, seed, sample_index)).copy()

    def _scaled(self, base: LowRankLogits) -> LowRankLogits:
        return dataclasses.replace(
            base,
            class_scales=self.class_scales,
            temperature=self.temperature,
            class_names=self.class_names,
            spacing=None if self.spacing is None else self.spacing[1:],
        )

    def _noise_of(self, base: LowRankLogits, seed: int, sample_index: int, plane: int) -> np.ndarray:
        noise = base._noise
        return plane_noise(
            noise.factor,
            noise.diag_std,
            seed,
            sample_index,
            plane=int(plane),
            low_rank_plane=int(plane) if self.independent_planes else None,
        )

    def _slice_of(self, base: LowRankLogits, z: int, seed: int, sample_index: int) -> np.ndarray:
        noise = self._noise_of(base, seed, sample_index, z)
        return scaled_logits(base.mean, noise, self.noise_scales, None, noise)

    def _labels_of(self, base: LowRankLogits, z: int, seed: int, sample_index: int) -> np.ndarray:
        logits = self._slice_of(base, z, seed, sample_index)
        return argmax_into(logits, np.empty(logits.shape[1:], dtype=label_dtype(self.num_classes)))

    def _plane_noise(self, seed: int, sample_index: int, plane: int | None) -> np.ndarray:
        """Unscaled noise of plane ``plane``, bit for bit that of the full distribution's plane."""
        if plane is None:
            raise ValueError("a lazy distribution draws noise one plane at a time; give the plane index.")
        return self._noise_of(self._base_plane(plane), seed, sample_index, plane)

    def _labels_from_noise(
        self, noise: np.ndarray, labels: np.ndarray | None = None, *, plane: int | None = None
    ) -> np.ndarray:
        """Labels of plane ``plane`` of the sample with unscaled noise ``noise`` under this distribution's scales."""
        if plane is None:
            raise ValueError("a lazy distribution computes labels one plane at a time; give the plane index.")
        return labels_from_noise(self._base_plane(plane).mean, noise, self.noise_scales, labels=labels)

    def _shares_parameters(self, other: Any) -> bool:
        """True when ``other`` differs from this distribution at most by scales, temperature and names."""
        return isinstance(other, LazyLowRankLogits) and other._cache is self._cache

    def slice(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Logits of plane ``z`` of sample ``sample_index`` of ``seed``, ``(C, Y, X)`` float32.

        Exactly :meth:`LowRankLogits.slice` of the full distribution (same random streams).
        """
        z = check_index(z, name="z", size=self.spatial_shape[0])
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        return self._slice_of(self._base_plane(z), z, seed, sample_index)

    def slice_labels(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Label map of plane ``z`` of a sample: exactly :meth:`LowRankLogits.slice_labels` of the full distribution.

        The last :data:`LABEL_CACHE_MAPS` label maps are kept (keyed by plane, seed, sample and the
        effective noise scales), so going back to a plane shown before costs a copy.
        """
        z = check_index(z, name="z", size=self.spatial_shape[0])
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")

        assert self._cache is not None
        key = (z, seed, sample_index, tuple(float(v) for v in self.noise_scales))
        labels = self._cache.cached_labels(key, lambda: self._labels_of(self._base_plane(z), z, seed, sample_index))
        return labels.copy()

    def sample_labels_at(self, sample_index: int, *, seed: int = 0) -> np.ndarray:
        """Whole label map ``(Z, Y, X)`` of one sample, plane by plane (computes every plane: slow for a 2-D SSN).

        Neither cache changes: planes already cached are used, the others are computed and dropped, so
        the planes on screen (and their label maps) stay cached.
        """
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        labels = np.empty(self.spatial_shape, dtype=label_dtype(self.num_classes))
        assert self._cache is not None
        for z in range(self.spatial_shape[0]):
            base = self._cache.compute_uncached(z)
            argmax_into(self._slice_of(base, z, seed, sample_index), labels[z])
        return labels

    def mean_plane_labels(self, z: int) -> np.ndarray:
        """Label map of the mean logits of plane ``z`` (unaffected by scales and temperature), ``(Y, X)``."""
        z = check_index(z, name="z", size=self.spatial_shape[0])
        assert self._cache is not None
        return self._cache.cached_labels((z, "mean"), lambda: self._base_plane(z).mean_prediction()).copy()

    def mean_plane_probabilities(self, z: int) -> np.ndarray:
        """Softmax of the mean logits of plane ``z``, ``(C, Y, X)`` float32."""
        mean = self._base_plane(z).mean
        shifted = mean - mean.max(axis=0, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=0, keepdims=True)
        return shifted

    # ------------------------------------------------------------------ dask arrays for a viewer
    def _dask(self, what: str, shape: tuple[int, ...], dtype: Any, plane: Callable[[int], np.ndarray], axis: int):
        import dask.array as da

        chunks = tuple(1 if a == axis else s for a, s in enumerate(shape))
        array = _PlaneArray(shape, dtype, plane, axis)
        return da.from_array(
            array,
            chunks=chunks,
            name=f"{self._name}-{what}-{next(_names)}",
            lock=False,
            asarray=False,
            fancy=False,
            meta=np.empty((0,) * len(shape), dtype=dtype),
        )

    def mean_labels_dask(self) -> Any:
        """The mean prediction as a lazy ``(Z, Y, X)`` dask array, one plane per chunk."""
        return self._dask("mean-labels", self.spatial_shape, label_dtype(self.num_classes), self.mean_plane_labels, 0)

    def mean_probabilities_dask(self) -> Any:
        """Softmax of the mean logits as a lazy ``(C, Z, Y, X)`` float32 dask array, chunks ``(C, 1, Y, X)``."""
        shape = (self.num_classes, *self.spatial_shape)
        return self._dask("mean-probabilities", shape, np.float32, self.mean_plane_probabilities, 1)

    def sample_labels_dask(self, *, seed: int = 0, sample_index: int = 0) -> Any:
        """Labels of one sample as a lazy ``(Z, Y, X)`` dask array, one plane per chunk (:meth:`slice_labels`)."""
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")

        def plane(z: int) -> np.ndarray:
            return self.slice_labels(z, seed=seed, sample_index=sample_index)

        return self._dask(f"sample-{seed}-{sample_index}", self.spatial_shape, label_dtype(self.num_classes), plane, 0)
