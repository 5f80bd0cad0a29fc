"""The lazy distribution's plane cache (review 15 #9, #16): a whole sample leaves the planes on screen cached,
and ``cached_plane`` / ``cached_slice_labels`` read a cached plane without ever running the source.

Reference: the in-memory :class:`LowRankLogits` the planes come from (its own ``slice_labels`` and
``sample_labels_at``).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.ssn import synthetic_distribution
from napari_seg_uncertainty.core.ssn.lazy import ArrayPlaneSource, LazyLowRankLogits


class CountingSource(ArrayPlaneSource):
    def __init__(self, distribution):
        super().__init__(distribution)
        self.calls: list[int] = []
        self.broken = False

    def plane_parameters(self, z):
        if self.broken:
            raise AssertionError("the source must not run")
        self.calls.append(z)
        return super().plane_parameters(z)


@pytest.fixture(params=[False, True], ids=["3d", "per-plane"])
def full(request):
    base = synthetic_distribution((7, 12, 10), num_classes=3, rank=2, seed=6)
    return type(base)(base.mean, base.cov_factor, base.cov_diag, independent_planes=request.param)


def test_a_whole_sample_keeps_the_cached_planes_and_their_order(full):
    source = CountingSource(full)
    lazy = LazyLowRankLogits(source, cache_planes=3).with_temperature(1.5).scale_class(2, 0.5)
    shown = [lazy.slice_labels(z, seed=2, sample_index=1) for z in (4, 1)]
    assert lazy.cached_planes == (4, 1) and source.calls == [4, 1]
    sample = lazy.sample_labels_at(3, seed=9)
    reference = full.with_temperature(1.5).scale_class(2, 0.5)
    np.testing.assert_array_equal(sample, reference.sample_labels_at(3, seed=9))
    assert lazy.cached_planes == (4, 1)  # nothing evicted, nothing inserted, order unchanged
    assert sorted(source.calls[2:]) == [0, 2, 3, 5, 6] and lazy.planes_computed == 7
    source.broken = True  # the planes on screen (and their label maps) are still at hand
    np.testing.assert_array_equal(lazy.slice_labels(4, seed=2, sample_index=1), shown[0])
    np.testing.assert_array_equal(lazy.slice_labels(1, seed=2, sample_index=1), shown[1])


def test_cached_plane_never_runs_the_source(full):
    source = CountingSource(full)
    lazy = LazyLowRankLogits(source, cache_planes=2)
    hot = lazy.with_temperature(2.0)
    assert hot.cached_plane(3) is None and hot.cached_slice_labels(3, seed=1, sample_index=2) is None
    assert source.calls == []
    lazy.slice(3)  # now cached (the derived distribution shares the cache)
    source.broken = True
    plane = hot.cached_plane(3)
    np.testing.assert_array_equal(plane.mean, full.mean[:, 3])
    np.testing.assert_array_equal(plane.cov_factor, full.cov_factor[:, :, 3])
    assert plane.temperature == 2.0 and plane.class_names == hot.class_names
    np.testing.assert_array_equal(plane.mean_prediction(), np.argmax(full.mean[:, 3], axis=0))
    labels = hot.cached_slice_labels(3, seed=1, sample_index=2)
    np.testing.assert_array_equal(labels, full.with_temperature(2.0).slice_labels(3, seed=1, sample_index=2))


def test_a_cached_plane_read_survives_its_eviction(full):
    source = CountingSource(full)
    lazy = LazyLowRankLogits(source, cache_planes=1)
    lazy.slice(0)
    plane = lazy.cached_plane(0)
    lazy.slice(1)  # evicts plane 0
    assert lazy.cached_planes == (1,) and lazy.cached_plane(0) is None
    np.testing.assert_array_equal(plane.cov_diag, full.cov_diag[:, 0])
