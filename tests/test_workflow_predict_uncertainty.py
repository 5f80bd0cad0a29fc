"""Uncertainty maps of CT-size probability layers slab by slab: equal to the whole computation, small temporaries."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.uncertainty import entropy, predictive_uncertainty
from napari_seg_uncertainty.workflow import uncertainty as workflow
from napari_seg_uncertainty.workflow.uncertainty import MEMBERS, compute_uncertainty_maps


def probabilities(shape, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(shape[0]), size=shape[1:])
    return np.moveaxis(p, -1, 0).astype(dtype)


@pytest.fixture
def small_slabs(monkeypatch):
    monkeypatch.setattr(workflow, "SLAB_BYTES", 3 * 7 * 9 * 4 * 2)  # two planes of a (3, Z, 7, 9) float32 layer


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_entropy_maps_equal_the_whole_computation(small_slabs, dtype):
    data = {"a": probabilities((3, 11, 7, 9), 0, dtype), "b": probabilities((3, 7, 9), 1, dtype)}
    results = compute_uncertainty_maps(data)
    assert [r.name for r in results] == ["a entropy", "b entropy"]
    for result, source in zip(results, data.values()):
        assert result.data.dtype == np.float32
        np.testing.assert_array_equal(result.data, entropy(source))


def test_member_and_ensemble_maps_equal_the_whole_computation(small_slabs):
    members = np.stack([probabilities((3, 11, 7, 9), s) for s in range(4)])
    whole = predictive_uncertainty(members)
    by_layer = compute_uncertainty_maps({"m": members}, layout=MEMBERS)
    np.testing.assert_array_equal(by_layer[0].data, whole.predictive_entropy)
    np.testing.assert_array_equal(by_layer[1].data, whole.mutual_information)
    ensemble = compute_uncertainty_maps({f"p{i}": m for i, m in enumerate(members)}, as_ensemble=True)
    assert [r.name for r in ensemble] == ["ensemble entropy", "ensemble mutual information"]
    np.testing.assert_array_equal(ensemble[0].data, whole.predictive_entropy)
    np.testing.assert_array_equal(ensemble[1].data, whole.mutual_information)


def test_memmap_layers_are_read_slab_by_slab(tmp_path, small_slabs):
    path = tmp_path / "p.npy"
    source = probabilities((3, 11, 7, 9), 3)
    np.save(path, source)
    (result,) = compute_uncertainty_maps({"p": np.load(path, mmap_mode="r")})
    np.testing.assert_array_equal(result.data, entropy(source))


def test_bad_layers_name_the_layer():
    with pytest.raises(ValueError, match="layer 'x'"):
        compute_uncertainty_maps({"x": np.ones(3, np.float32)})
