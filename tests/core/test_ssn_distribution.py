"""LowRankLogits as a frozen dataclass: changes make new objects, independent planes survive every change."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_seg_uncertainty.core.ssn import (
    LowRankLogits,
    SampleLabelStack,
    argmax_labels,
    load_distribution,
    save_distribution,
    synthetic_distribution,
)
from napari_seg_uncertainty.core.ssn import _parameters as parameter_checks


def _parameters(num_classes=3, spatial=(4, 5, 6), rank=2, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(num_classes, *spatial)).astype(np.float32)
    factor = (0.7 * rng.normal(size=(rank, num_classes, *spatial))).astype(np.float32)
    diag = rng.uniform(0.05, 0.5, size=(num_classes, *spatial)).astype(np.float32)
    return mean, factor, diag


def _plane_shared_noise(dist, seed=3):
    """Rank-1, all-ones factor, zero diagonal: the noise of plane z is the weight e drawn for plane z."""
    noise = dist.sample_at(0, seed=seed) - dist.mean
    return noise[0, :, 0, 0]


def _ones_distribution(independent_planes, spatial=(5, 3, 4)):
    return LowRankLogits(
        np.zeros((2, *spatial), np.float32),
        np.ones((1, 2, *spatial), np.float32),
        np.zeros((2, *spatial), np.float32),
        independent_planes=independent_planes,
    )


# ---------------------------------------------------------------------------------- frozen dataclass
def test_distribution_is_frozen_and_its_arrays_read_only():
    dist = synthetic_distribution((8, 9), num_classes=3, rank=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        dist.temperature = 2.0  # type: ignore[misc]
    for array in (dist.mean, dist.cov_factor, dist.cov_diag):
        with pytest.raises(ValueError, match="read-only"):
            array[(0,) * array.ndim] = 1.0
    names = [f.name for f in dataclasses.fields(dist) if f.init]
    assert names == [
        "mean", "cov_factor", "cov_diag", "class_scales", "temperature", "class_names", "spacing",
        "independent_planes",
    ]


def test_replace_validates_new_values_and_keeps_checked_arrays(monkeypatch):
    mean, factor, diag = _parameters()
    dist = LowRankLogits(mean, factor, diag)
    assert dist.mean.base is mean or np.shares_memory(dist.mean, mean)  # float32 input is not copied
    with pytest.raises(ValueError, match="temperature"):
        dataclasses.replace(dist, temperature=-1.0)
    with pytest.raises(ValueError, match="cov_diag"):
        dataclasses.replace(dist, cov_diag=-diag)
    with pytest.raises(ValueError, match="class_scales"):
        dataclasses.replace(dist, class_scales=(1.0, 2.0))
    with pytest.raises(TypeError, match="independent_planes"):
        dataclasses.replace(dist, independent_planes="yes")

    def no_check(*args, **kwargs):
        raise AssertionError("a stored array was checked again")

    monkeypatch.setattr(parameter_checks, "as_float_tensor", no_check)
    changed = dataclasses.replace(dist, temperature=2.0, class_names=("a", "b", "c"))
    assert changed.mean is dist.mean and changed.cov_factor is dist.cov_factor and changed.cov_diag is dist.cov_diag
    assert dist.temperature == 1.0 and changed.temperature == 2.0
    np.testing.assert_allclose(changed.sample(1, seed=2) - mean, 2.0 * (dist.sample(1, seed=2) - mean), atol=1e-5)


def test_rank_is_named_k_in_messages_and_fields():
    mean, factor, diag = _parameters(spatial=(4, 4))
    with pytest.raises(ValueError, match=r"\('K', 3, 4, 4\)"):
        LowRankLogits(mean, factor[:, :, :3], diag)
    flat = np.ascontiguousarray(factor.reshape(factor.shape[0], -1).T)
    dist = LowRankLogits(mean, flat, diag.reshape(-1))
    assert dist.cov_factor.shape == factor.shape and dist.cov_diag.shape == diag.shape  # stored as (K, C, *S)
    np.testing.assert_array_equal(dist.cov_factor, factor)


def test_more_than_256_classes_use_the_shared_label_dtype():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(300, 3, 4)).astype(np.float32)
    labels = argmax_labels(logits)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=0))
    dist = LowRankLogits(logits, None, np.full_like(logits, 0.1))
    assert dist.sample_labels(1, seed=0).dtype == np.uint16
    np.testing.assert_array_equal(dist.sample_labels_at(0, seed=0), np.argmax(dist.sample_at(0, seed=0), axis=0))


# ---------------------------------------------------------------------------------- independent planes
def test_independent_planes_draw_their_own_weights_per_plane():
    shared = _plane_shared_noise(_ones_distribution(False))
    own = _plane_shared_noise(_ones_distribution(True))
    assert np.all(shared == shared[0])  # one weight for the volume
    assert len(np.unique(own)) == own.size  # one weight per plane


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.with_temperature(0.5), id="temperature"),
        pytest.param(lambda d: d.scale_class(1, -2.0), id="scale_class"),
        pytest.param(lambda d: d.with_class_scales([1.0, 0.5]), id="class_scales"),
        pytest.param(lambda d: d.with_class_names(["bg", "fg"]), id="class_names"),
        pytest.param(lambda d: dataclasses.replace(d, spacing=(2.0, 1.0, 1.0)), id="replace"),
        pytest.param(lambda d: d.crop((slice(1, 4), slice(None), slice(1, 3))), id="crop"),
    ],
)
def test_independent_planes_survive_every_change(tmp_path, change):
    for flag in (True, False):
        changed = change(_ones_distribution(flag))
        assert changed.independent_planes is flag
        reloaded = load_distribution(save_distribution(tmp_path / f"{flag}.npz", changed, overwrite=True))
        assert reloaded.independent_planes is flag
        np.testing.assert_array_equal(reloaded.sample(2, seed=5), changed.sample(2, seed=5))
        noise = _plane_shared_noise(reloaded.with_temperature(1.0).with_class_scales([1.0, 1.0]))
        assert (len(np.unique(noise)) == noise.size) if flag else np.all(noise == noise[0])


def test_a_2d_map_has_no_independent_planes_and_a_stack_draws_them_exactly():
    mean, factor, diag = _parameters(spatial=(5, 6))
    assert not LowRankLogits(mean, factor, diag, independent_planes=True).independent_planes
    volume = synthetic_distribution((4, 10, 12), num_classes=3, rank=3, seed=2)
    planes = dataclasses.replace(volume, independent_planes=True)
    stack = SampleLabelStack(planes, range(2), seed=1)
    np.testing.assert_array_equal(stack.sample(1), planes.sample_labels_at(1, seed=1))
    np.testing.assert_array_equal(stack[0, 2], planes.slice_labels(2, seed=1, sample_index=0))
    assert not np.array_equal(planes.sample_labels(2, seed=1), volume.sample_labels(2, seed=1))


# ---------------------------------------------------------------------------------- crop
@pytest.mark.parametrize("independent_planes", [False, True])
def test_crop_is_the_marginal_distribution_of_the_box(independent_planes):
    mean, factor, diag = _parameters(num_classes=2, spatial=(3, 4, 3), rank=2, seed=4)
    dist = LowRankLogits(mean, factor, diag, independent_planes=independent_planes, class_scales=(1.0, -1.5))
    dist = dist.with_temperature(0.8)
    region = (slice(1, 3), slice(0, 2), slice(1, None))
    cropped = dist.crop(region)
    assert cropped.spatial_shape == (2, 2, 2) and cropped.independent_planes == independent_planes
    assert np.shares_memory(cropped.cov_factor, dist.cov_factor)  # views, no copy
    full = dist.to_torch_distribution()
    inside = np.zeros(dist.mean.shape, bool)
    inside[(slice(None), *region)] = True
    keep = np.flatnonzero(inside.reshape(-1))
    small = cropped.to_torch_distribution()
    np.testing.assert_array_equal(small.loc.numpy(), full.loc.numpy()[keep])
    np.testing.assert_allclose(
        small.covariance_matrix.numpy(), full.covariance_matrix.numpy()[np.ix_(keep, keep)], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    ("region", "error", "match"),
    [
        ((slice(0, 2), slice(None)), TypeError, "region must be 3 slices"),
        ((slice(0, 2), slice(None), 3), TypeError, r"region\[2\] must be a slice"),
        ((slice(0, 4, 2), slice(None), slice(None)), ValueError, r"region\[0\].*step 1"),
        ((slice(2, 2), slice(None), slice(None)), ValueError, r"region\[0\].*non-empty"),
    ],
)
def test_crop_rejects_bad_regions(region, error, match):
    dist = synthetic_distribution((4, 6, 6), num_classes=2, rank=1)
    with pytest.raises(error, match=match):
        dist.crop(region)
