"""The *SSN samples* dock on a distribution computed plane by plane (a CT): layers and whole samples.

* :class:`LazyPlanes` — what the ``SSN samples`` and mean layers hold for a
  :class:`~napari_seg_uncertainty.core.ssn.lazy.LazyLowRankLogits`: dask arrays of one plane per chunk;
  a plane not computed yet reads as empty at once and is computed in a worker.
* :func:`whole_sample_steps` — one whole sample ("Keep this sample", "Export current sample"), plane by
  plane in a worker, yielding its progress and stopping when asked; the planes on screen stay cached.

References
----------
.. [1] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty", NeurIPS 2020.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from ..core.ssn import SampleLabelStack

__all__ = ["HeldSample", "LazyPlanes", "whole_sample_steps", "whole_sample_work"]

_DASK_NAMES = itertools.count()  # every LazyPlanes array has its own dask name (no cached chunk is reused)


class _PlaneBlocks:
    """An array-like for :func:`dask.array.from_array` whose every block is one plane, read by ``plane(*lead)``."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, plane: Any) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self._plane = plane

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        lead = tuple(k.indices(s)[0] for k, s in zip(key[:-2], self.shape[:-2]))
        return self._plane(*lead)[key[-2:]][(None,) * len(lead)]


class LazyPlanes:
    """What the samples and mean layers hold for a lazy distribution: dask arrays, one plane per chunk.

    A plane whose parameters the distribution holds already (its small cache of recent planes) is
    computed when napari reads it (the sample's plane: scaling and argmax, ~20 ms at 512²); a plane it
    does not hold (a 2-D SSN runs its network on it, a 3-D one reads it from disk) reads as empty labels at
    once and, in 2-D display, ``request(z)`` computes it in a worker; the widget then refreshes the layers.
    The parameters are taken in one locked lookup (``cached_plane`` / ``cached_slice_labels``), so a plane
    dropped from the cache meanwhile never makes napari's slicing thread run the network.
    In 3-D display only the planes computed so far are shown (a whole volume would run the network on
    every plane). The layers must not use napari's dask cache (``cache=False``): a placeholder is not data.
    """

    #: Mean-prediction planes kept (uint8 512²: 256 KiB each); the mean does not change with the sliders.
    MEAN_PLANES = 64

    def __init__(self, stack: SampleLabelStack, *, request: Any, display_3d: Any) -> None:
        self.stack = stack
        self._request = request
        self._display_3d = display_3d
        self._means: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def compute(self, z: int, entry: int) -> None:
        """In a worker: plane ``z``'s parameters (the network, for a 2-D SSN), its mean labels and the plane of
        sample ``entry``, so that showing them on the GUI thread only reads caches."""
        stack = self.stack
        distribution = stack.distribution
        self._keep_mean(z, distribution.mean_plane_labels(z))
        distribution.slice_labels(z, seed=stack.seed, sample_index=stack.sample_indices[entry])  # fills its cache

    def prefetch(self, z: int, sample_index: int) -> None:
        """In a worker: the labels of plane ``z`` of sample ``sample_index`` (the next "New sample"), cached."""
        distribution = self.stack.distribution
        if distribution.cached_plane(z) is not None:  # never runs the network for a prefetch
            distribution.slice_labels(z, seed=self.stack.seed, sample_index=sample_index)

    def _keep_mean(self, z: int, labels: np.ndarray) -> np.ndarray:
        with self._lock:
            self._means[z] = labels
            self._means.move_to_end(z)
            while len(self._means) > self.MEAN_PLANES:
                self._means.popitem(last=False)
        return labels

    def ready(self, z: int) -> bool:
        """Whether plane ``z``'s parameters are at hand now (reading it would not run the network)."""
        return z in self.stack.distribution.cached_planes

    def _missing(self, z: int) -> np.ndarray:
        if not self._display_3d():
            self._request(z)
        return np.zeros(self.stack.shape[2:], self.stack.dtype)

    def sample_plane(self, entry: int, z: int) -> np.ndarray:
        """Plane ``z`` of sample ``entry`` (exact), or empty labels while the plane is being computed."""
        stack = self.stack
        labels = stack.distribution.cached_slice_labels(z, seed=stack.seed, sample_index=stack.sample_indices[entry])
        return self._missing(z) if labels is None else labels

    def mean_plane(self, z: int) -> np.ndarray:
        """Plane ``z`` of the mean prediction, or empty labels while the plane is being computed."""
        with self._lock:
            known = self._means.get(z)
            if known is not None:
                self._means.move_to_end(z)
                return known
        plane = self.stack.distribution.cached_plane(z)  # one lookup: still valid if the cache drops it now
        return self._missing(z) if plane is None else self._keep_mean(z, plane.mean_prediction())

    def _dask(self, shape: tuple[int, ...], plane: Any, what: str) -> Any:
        import dask.array as da

        chunks = (*(1,) * (len(shape) - 2), *shape[-2:])
        return da.from_array(_PlaneBlocks(shape, self.stack.dtype, plane), chunks=chunks, lock=False,
                             asarray=False, fancy=False, name=f"ssn-{what}-{next(_DASK_NAMES)}",
                             meta=np.empty((0,) * len(shape), self.stack.dtype))

    def samples(self) -> Any:
        """The ``(N, Z, Y, X)`` samples as a dask array."""
        return self._dask(self.stack.shape, self.sample_plane, "samples")

    def mean(self) -> Any:
        """The ``(Z, Y, X)`` mean prediction as a dask array."""
        return self._dask(self.stack.shape[1:], self.mean_plane, "mean")


def whole_sample_steps(
    stack: SampleLabelStack, entry: int, *, cancelled: Callable[[], bool]
) -> Generator[tuple[int, int], None, np.ndarray | None]:
    """Sample ``entry`` of a lazy ``stack`` whole, plane by plane: yields ``(planes done, planes)``.

    Returns the ``(Z, Y, X)`` labels (exactly ``stack.sample(entry)``), or None once ``cancelled()`` is
    true (checked before every plane). Planes whose parameters are cached are used as they are; the others
    go through a private one-plane cache on the same source, so the planes on screen stay cached and a
    whole sample never evicts them.
    """
    distribution = stack.distribution
    seed, sample_index = stack.seed, stack.sample_indices[entry]
    depth = distribution.spatial_shape[0]
    private = type(distribution)(
        distribution.source, cache_planes=1, class_scales=distribution.class_scales,
        temperature=distribution.temperature, class_names=distribution.class_names, spacing=distribution.spacing,
    )  # fmt: skip
    labels = np.empty(distribution.spatial_shape, dtype=stack.dtype)
    for z in range(depth):
        if cancelled():
            return None
        plane = distribution.cached_slice_labels(z, seed=seed, sample_index=sample_index)
        labels[z] = private.slice_labels(z, seed=seed, sample_index=sample_index) if plane is None else plane
        yield z + 1, depth
    return labels


def whole_sample_work(stack: SampleLabelStack, entry: int, then: Callable[[np.ndarray], Any], *,
                      cancelled: Callable[[], bool]) -> Callable[[], Any]:
    """The worker function passing the whole sample ``entry`` to ``then`` and returning its result.

    For a lazy distribution a generator function (:func:`whole_sample_steps`: yields ``(done, total)``;
    returns None without calling ``then`` once ``cancelled()``); otherwise a plain function.
    """
    if not getattr(stack.distribution, "lazy", False):
        return lambda: then(np.array(stack.sample(entry)))

    def _steps() -> Generator[tuple[int, int], None, Any]:
        labels = yield from whole_sample_steps(stack, entry, cancelled=cancelled)
        return None if labels is None else then(labels)

    return _steps


class HeldSample:
    """``stack`` with the whole sample of ``entry`` computed already (what ``export_samples`` reads)."""

    def __init__(self, stack: SampleLabelStack, entry: int, labels: np.ndarray) -> None:
        self._stack, self._entry, self._labels = stack, entry, labels

    def sample(self, entry: int, *, keep_noise: bool = True) -> np.ndarray:
        return self._labels if entry == self._entry else self._stack.sample(entry, keep_noise=keep_noise)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stack, name)
