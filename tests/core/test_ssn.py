"""LowRankLogits: analytic moments, class scaling, temperature, lazy slices, saving, lazy stacks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.ssn import (
    LowRankLogits,
    SampleLabelStack,
    argmax_labels,
    load_distribution,
    save_distribution,
    synthetic_distribution,
)
from napari_seg_uncertainty.core.ssn import sampling as ssn_sampling
from napari_seg_uncertainty.core.ssn.sampling import NoiseModel


def _random_parameters(num_classes, spatial, rank, seed):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(num_classes, *spatial)).astype(np.float32)
    factor = (0.7 * rng.normal(size=(rank, num_classes, *spatial))).astype(np.float32)
    diag = rng.uniform(0.05, 0.5, size=(num_classes, *spatial)).astype(np.float32)
    return mean, factor, diag


def _flat_factor(factor):
    """(K, C, *S) -> (C*prod(S), K), rows in the order of mean.reshape(-1)."""
    return np.ascontiguousarray(factor.reshape(factor.shape[0], -1).T)


def _dense_covariance(factor, diag, noise_scales):
    """Sigma = (W P)(W P)^T + W^2 D with W the per-element noise scale, built from the raw arrays."""
    flat = factor.reshape(factor.shape[0], -1).T.astype(np.float64)  # (n, K)
    per_element = np.repeat(np.asarray(noise_scales, np.float64), diag[0].size)
    scaled = flat * per_element[:, None]
    return scaled @ scaled.T + np.diag(diag.reshape(-1).astype(np.float64) * per_element**2)


# ---------------------------------------------------------------------------------- moments
@pytest.mark.parametrize(
    ("spatial", "layout", "scales", "temperature"),
    [
        ((3, 4), "stacked", None, 1.0),
        ((3, 4), "flat", None, 1.0),
        ((2, 2, 3), "stacked", None, 1.0),
        ((3, 4), "flat", (0.5, -2.0), 1.5),
    ],
)
def test_sampled_logits_have_the_analytic_mean_and_covariance(spatial, layout, scales, temperature):
    num_classes, rank, draws = 2, 3, 12000
    mean, factor, diag = _random_parameters(num_classes, spatial, rank, seed=1)
    given_factor = factor if layout == "stacked" else _flat_factor(factor)
    dist = LowRankLogits(mean, given_factor, diag, class_scales=scales, temperature=temperature)

    samples = dist.sample(draws, seed=123).reshape(draws, -1).astype(np.float64)

    noise_scales = temperature * np.asarray(scales if scales is not None else (1.0, 1.0))
    sigma = _dense_covariance(factor, diag, noise_scales)
    # empirical mean within 5 standard errors everywhere
    standard_error = np.sqrt(np.diag(sigma) / draws)
    assert np.max(np.abs(samples.mean(0) - mean.reshape(-1)) / standard_error) < 5.0
    # empirical covariance: every entry within 5.5 of its standard error sqrt((s_ii s_jj + s_ij^2) / M)
    empirical = np.cov(samples, rowvar=False)
    entry_error = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / draws)
    assert np.max(np.abs(empirical - sigma) / entry_error) < 5.5
    # and the low-rank structure is there: correlations far from zero exist
    assert np.max(np.abs(sigma - np.diag(np.diag(sigma)))) > 0.3


def test_both_factor_layouts_describe_the_same_distribution():
    mean, factor, diag = _random_parameters(3, (5, 6), 4, seed=2)
    stacked = LowRankLogits(mean, factor, diag)
    flat = LowRankLogits(mean, _flat_factor(factor), diag.reshape(-1))
    np.testing.assert_allclose(stacked.sample(3, seed=9), flat.sample(3, seed=9), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(stacked.cov_factor, flat.cov_factor)
    np.testing.assert_array_equal(stacked.cov_diag, flat.cov_diag)


def test_torch_distribution_has_the_same_parameters():
    mean, factor, diag = _random_parameters(2, (3, 3), 2, seed=3)
    dist = LowRankLogits(mean, factor, diag, class_scales=(1.0, 0.5), temperature=2.0)
    torch_dist = dist.to_torch_distribution()
    np.testing.assert_allclose(torch_dist.loc.numpy(), mean.reshape(-1))
    expected = _dense_covariance(factor, diag, (2.0, 1.0))
    np.testing.assert_allclose(torch_dist.covariance_matrix.numpy(), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------- manipulation
@pytest.mark.parametrize("spatial", [(6, 7), (3, 5, 4)])
def test_scaling_a_class_to_zero_removes_its_noise_only(spatial):
    mean, factor, diag = _random_parameters(3, spatial, 4, seed=4)
    dist = LowRankLogits(mean, factor, diag)
    quiet = dist.scale_class(1, 0.0)
    original = dist.sample(4, seed=5)
    scaled = quiet.sample(4, seed=5)
    for sample in scaled:
        np.testing.assert_array_equal(sample[1], mean[1])
    np.testing.assert_array_equal(scaled[:, [0, 2]], original[:, [0, 2]])
    # both parts of the covariance vanish for that class
    assert not np.any(quiet.effective_cov_factor()[:, 1])
    assert not np.any(quiet.effective_cov_diag()[1])
    np.testing.assert_array_equal(quiet.effective_cov_factor()[:, 0], factor[:, 0])
    # the fields keep the parameters as given
    np.testing.assert_array_equal(quiet.cov_factor, factor)
    np.testing.assert_array_equal(quiet.cov_diag, diag)


def test_class_weight_scales_the_noise_of_that_class_linearly():
    mean, factor, diag = _random_parameters(3, (8, 8), 3, seed=6)
    dist = LowRankLogits(mean, factor, diag)
    base = dist.sample(2, seed=1).astype(np.float64)
    for weight in (-3.0, -1.0, 0.5, 3.0):
        scaled = dist.scale_class(2, weight).sample(2, seed=1).astype(np.float64)
        np.testing.assert_allclose(scaled[:, 2] - mean[2], weight * (base[:, 2] - mean[2]), atol=2e-5)
        np.testing.assert_array_equal(scaled[:, :2], base[:, :2])
    # scales compose by multiplication, with_class_scales replaces them
    assert dist.scale_class(2, 2.0).scale_class(2, -1.5).class_scales == (1.0, 1.0, -3.0)
    assert dist.scale_class(2, 2.0).with_class_scales([1, 1, 0.5]).class_scales == (1.0, 1.0, 0.5)
    np.testing.assert_allclose(dist.scale_class(0, -2.0).effective_cov_factor()[:, 0], -2.0 * factor[:, 0], rtol=1e-6)
    np.testing.assert_allclose(dist.scale_class(0, -2.0).effective_cov_diag()[0], 4.0 * diag[0], rtol=1e-6)


def test_temperature_scales_all_noise():
    mean, factor, diag = _random_parameters(2, (5, 5), 2, seed=7)
    dist = LowRankLogits(mean, factor, diag)
    base = dist.sample(2, seed=3).astype(np.float64)
    hot = dist.with_temperature(2.5).sample(2, seed=3).astype(np.float64)
    np.testing.assert_allclose(hot - mean, 2.5 * (base - mean), atol=3e-5)
    frozen = dist.with_temperature(0.0).sample(3, seed=3)
    np.testing.assert_array_equal(frozen, np.broadcast_to(mean, frozen.shape))
    # with_temperature replaces the temperature, it does not multiply
    assert dist.with_temperature(2.0).with_temperature(0.5).temperature == 0.5
    # manipulation shares the large arrays instead of copying them
    hot = dist.with_temperature(2.0)
    assert hot.cov_factor is dist.cov_factor and hot.mean is dist.mean and hot.cov_diag is dist.cov_diag


# ---------------------------------------------------------------------------------- determinism and slices
def test_samples_are_deterministic_for_a_seed_and_independent_of_n():
    dist = synthetic_distribution((24, 20), num_classes=3, rank=4, seed=2)
    first = dist.sample(3, seed=11)
    np.testing.assert_array_equal(first, dist.sample(3, seed=11))
    np.testing.assert_array_equal(first[:2], dist.sample(2, seed=11))
    np.testing.assert_array_equal(first[2], dist.sample_at(2, seed=11))
    assert not np.array_equal(first, dist.sample(3, seed=12))
    assert not np.array_equal(first[0], first[1])


@pytest.mark.parametrize("layout", ["stacked", "flat"])
def test_slice_equals_the_slice_of_the_full_sample(layout):
    mean, factor, diag = _random_parameters(3, (7, 9, 8), 5, seed=8)
    dist = LowRankLogits(mean, factor if layout == "stacked" else _flat_factor(factor), diag)
    dist = dist.scale_class(2, -1.5).with_temperature(1.3)
    for sample_index in (0, 3):
        volume = dist.sample_at(sample_index, seed=21)
        labels = dist.sample_labels_at(sample_index, seed=21)
        for z in range(7):
            np.testing.assert_array_equal(dist.slice(z, seed=21, sample_index=sample_index), volume[:, z])
            np.testing.assert_array_equal(dist.slice_labels(z, seed=21, sample_index=sample_index), labels[z])
    np.testing.assert_array_equal(dist.sample(4, seed=21)[3], dist.sample_at(3, seed=21))


def test_slice_draws_only_one_plane_of_random_numbers(monkeypatch):
    dist = synthetic_distribution((40, 48, 48), num_classes=3, rank=4, seed=0)
    plane_elements = 3 * 48 * 48
    requested: list[int] = []
    real_randn = torch.randn

    def recording_randn(*args, **kwargs):
        tensor = real_randn(*args, **kwargs)
        requested.append(tensor.numel())
        return tensor

    monkeypatch.setattr(ssn_sampling.torch, "randn", recording_randn)
    tracemalloc.start()
    logits = dist.slice(17, seed=4, sample_index=2)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    monkeypatch.undo()
    assert logits.shape == (3, 48, 48)
    assert max(requested) == plane_elements
    assert sum(requested) <= plane_elements + dist.rank
    volume_bytes = 3 * 40 * 48 * 48 * 4
    assert peak < volume_bytes / 8
    np.testing.assert_array_equal(logits, dist.sample_at(2, seed=4)[:, 17])


def test_labels_are_the_argmax_of_the_logits():
    dist = synthetic_distribution((4, 16, 18), num_classes=4, rank=3, seed=1)
    logits = dist.sample(2, seed=6)
    np.testing.assert_array_equal(dist.sample_labels(2, seed=6), np.argmax(logits, axis=1))
    assert dist.sample_labels(2, seed=6).dtype == np.uint8
    np.testing.assert_array_equal(dist.mean_prediction(), np.argmax(dist.mean, axis=0))
    values = np.random.default_rng(0).normal(size=(5, 7, 6))
    values[:, 0, 0] = 1.0  # ties go to the first class, as numpy's argmax
    np.testing.assert_array_equal(argmax_labels(values), np.argmax(values, axis=0))


# ---------------------------------------------------------------------------------- validation
def test_invalid_inputs_raise_errors_naming_the_argument():
    mean, factor, diag = _random_parameters(2, (4, 5), 2, seed=9)
    with pytest.raises(ValueError, match="mean must be a logit map"):
        LowRankLogits(mean[0], factor, diag)
    with pytest.raises(ValueError, match="mean.shape\\[0\\]"):
        LowRankLogits(mean[:1], factor[:, :1], diag[:1])
    with pytest.raises(ValueError, match="cov_factor must be shaped"):
        LowRankLogits(mean, factor[:, :, :3], diag)
    with pytest.raises(ValueError, match="cov_diag must be shaped"):
        LowRankLogits(mean, factor, diag[:, :2])
    with pytest.raises(ValueError, match="cov_diag contains negative"):
        LowRankLogits(mean, factor, -diag)
    bad = mean.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="mean contains NaN"):
        LowRankLogits(bad, factor, diag)
    with pytest.raises(TypeError, match="cov_factor must be an array"):
        LowRankLogits(mean, "factor", diag)
    with pytest.raises(ValueError, match="class_scales must have one entry per class"):
        LowRankLogits(mean, factor, diag, class_scales=(1.0,))
    with pytest.raises(ValueError, match="temperature"):
        LowRankLogits(mean, factor, diag, temperature=-1.0)
    with pytest.raises(ValueError, match="class_names"):
        LowRankLogits(mean, factor, diag, class_names=["only one"])
    with pytest.raises(ValueError, match="spacing"):
        LowRankLogits(mean, factor, diag, spacing=(1.0, 2.0, 3.0))
    dist = LowRankLogits(mean, factor, diag)
    with pytest.raises(ValueError, match="seed"):
        dist.sample(1, seed=-1)
    with pytest.raises(TypeError, match="seed"):
        dist.sample(1, seed=1.5)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        dist.sample(0)
    with pytest.raises(ValueError, match="slice needs a 3-D distribution"):
        dist.slice(0)
    with pytest.raises(ValueError, match="class_index"):
        dist.scale_class(2, 1.0)
    with pytest.raises(ValueError, match="weight"):
        dist.scale_class(0, float("nan"))
    volume = synthetic_distribution((3, 8, 8), num_classes=2, rank=1)
    with pytest.raises(ValueError, match="z must lie in 0..2"):
        volume.slice(3)
    with pytest.raises(ValueError, match="to_torch_distribution needs"):
        dist.scale_class(0, 0.0).to_torch_distribution()


def test_rank_zero_is_a_diagonal_model():
    mean, _, diag = _random_parameters(2, (4, 4), 1, seed=10)
    dist = LowRankLogits(mean, None, diag)
    assert dist.rank == 0 and dist.cov_factor is None
    samples = dist.sample(4000, seed=0).reshape(4000, -1)
    empirical_var = samples.var(axis=0)
    np.testing.assert_allclose(empirical_var, diag.reshape(-1), rtol=0.15)


# ---------------------------------------------------------------------------------- saving and loading
@pytest.mark.parametrize("layout", ["stacked", "flat"])
def test_save_and_load_round_trip(tmp_path, layout):
    mean, factor, diag = _random_parameters(3, (4, 6, 5), 2, seed=11)
    dist = LowRankLogits(
        mean,
        factor if layout == "stacked" else _flat_factor(factor),
        diag,
        class_names=["bg", "core", "edge"],
        spacing=(2.5, 1.0, 0.5),
    ).scale_class(1, -2.0)
    path = save_distribution(tmp_path / "dist.npz", dist)
    loaded = load_distribution(path)
    assert loaded.class_names == ("bg", "core", "edge")
    assert loaded.spacing == (2.5, 1.0, 0.5)
    assert loaded.class_scales == (1.0, -2.0, 1.0)
    np.testing.assert_array_equal(loaded.mean, mean)
    np.testing.assert_array_equal(loaded.sample(2, seed=3), dist.sample(2, seed=3))
    with pytest.raises(ValueError, match="exists"):
        save_distribution(path, dist)
    save_distribution(path, dist.with_temperature(0.5), overwrite=True)
    assert load_distribution(path).temperature == 0.5


def test_load_distribution_accepts_the_documented_minimal_file(tmp_path):
    mean, factor, diag = _random_parameters(2, (5, 5), 3, seed=12)
    path = tmp_path / "minimal.npz"
    np.savez(path, mean=mean, cov_factor=_flat_factor(factor), cov_diag=diag)
    loaded = load_distribution(path)
    assert loaded.rank == 3 and loaded.class_names == ("class 0", "class 1") and loaded.spacing is None
    np.savez(tmp_path / "broken.npz", mean=mean, cov_diag=diag)
    with pytest.raises(ValueError, match="lacks \\['cov_factor'\\]"):
        load_distribution(tmp_path / "broken.npz")
    with pytest.raises(ValueError, match="not an existing file"):
        load_distribution(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="must end with .npz"):
        save_distribution(tmp_path / "dist.nii.gz", loaded)


# ---------------------------------------------------------------------------------- synthetic data
def test_synthetic_distribution_is_deterministic_and_plausible():
    first = synthetic_distribution((48, 48), num_classes=4, rank=10, seed=3)
    again = synthetic_distribution((48, 48), num_classes=4, rank=10, seed=3)
    np.testing.assert_array_equal(first.cov_factor, again.cov_factor)
    assert not np.array_equal(first.mean, synthetic_distribution((48, 48), num_classes=4, rank=10, seed=4).mean)
    mean_labels = first.mean_prediction()
    assert set(np.unique(mean_labels)) == {0, 1, 2, 3}
    samples = first.sample_labels(8, seed=0)
    agreement = (samples == mean_labels).mean(axis=(1, 2))
    # samples vary around the mean prediction without being noise
    assert np.all(agreement > 0.6) and np.all(agreement < 1.0)
    with pytest.raises(ValueError, match="shape\\[1\\]"):
        synthetic_distribution((48, 1), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_distribution((16, 16), num_classes=1)


# ---------------------------------------------------------------------------------- lazy stack
def test_sample_label_stack_indexing_matches_eager_samples():
    dist = synthetic_distribution((5, 12, 14), num_classes=3, rank=3, seed=5).scale_class(1, 2.0)
    stack = SampleLabelStack(dist, [0, 1, 7], seed=4)
    eager = np.stack([dist.sample_labels_at(i, seed=4) for i in (0, 1, 7)])
    assert stack.shape == eager.shape and stack.dtype == eager.dtype and stack.ndim == 4
    np.testing.assert_array_equal(np.asarray(stack), eager)
    np.testing.assert_array_equal(stack[2, 3], eager[2, 3])
    np.testing.assert_array_equal(stack[1, -1, 2:5], eager[1, -1, 2:5])
    np.testing.assert_array_equal(stack[:, 2], eager[:, 2])
    np.testing.assert_array_equal(stack[..., 3], eager[..., 3])
    np.testing.assert_array_equal(stack[np.int64(0), np.int64(4)], eager[0, 4])
    with pytest.raises(IndexError):
        stack[0, 5]


def test_sample_label_stack_follows_new_scales_and_sample_indices():
    dist = synthetic_distribution((20, 22), num_classes=3, rank=4, seed=6)
    stack = SampleLabelStack(dist, range(3), seed=8)
    before = stack[1]
    manipulated = dist.with_class_scales([1.0, -3.0, 0.5]).with_temperature(1.7)
    stack.set_distribution(manipulated)
    np.testing.assert_array_equal(stack[1], manipulated.sample_labels_at(1, seed=8))
    assert not np.array_equal(stack[1], before)
    stack.set_sample_index(1, 42)
    np.testing.assert_array_equal(stack[1], manipulated.sample_labels_at(42, seed=8))
    assert stack.sample_indices == (0, 42, 2)
    with pytest.raises(ValueError, match="classes on the grid"):
        stack.set_distribution(synthetic_distribution((20, 23), num_classes=3, rank=4))
    with pytest.raises(ValueError, match="sample_indices is empty"):
        SampleLabelStack(dist, [], seed=0)


def test_independent_planes_decorrelate_planes_and_keep_slices_exact(tmp_path):
    num_classes, spatial, rank, draws = 2, (3, 2, 2), 2, 12000
    mean, factor, diag = _random_parameters(num_classes, spatial, rank, seed=13)
    dist = LowRankLogits(mean, factor, diag, independent_planes=True)
    assert dist.independent_planes
    samples = dist.sample(draws, seed=1).reshape(draws, -1).astype(np.float64)
    # analytic covariance: the low-rank part only within a plane
    sigma = _dense_covariance(factor, diag, (1.0, 1.0))
    plane_of = np.tile(np.repeat(np.arange(spatial[0]), 4), num_classes)
    sigma[plane_of[:, None] != plane_of[None, :]] = 0.0
    empirical = np.cov(samples, rowvar=False)
    entry_error = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / draws)
    assert np.max(np.abs(empirical - sigma) / entry_error) < 5.5
    np.testing.assert_allclose(
        dist.to_torch_distribution().covariance_matrix.numpy(), sigma, rtol=1e-5, atol=1e-5
    )
    volume = dist.sample_at(2, seed=4)
    for z in range(spatial[0]):
        np.testing.assert_array_equal(dist.slice(z, seed=4, sample_index=2), volume[:, z])
    reloaded = load_distribution(save_distribution(tmp_path / "planes.npz", dist))
    assert reloaded.independent_planes
    np.testing.assert_array_equal(reloaded.sample_at(2, seed=4), volume)
    # a 2-D map has a single plane: the flag has no effect there
    flat_map = LowRankLogits(mean[:, 0], factor[:, :, 0], diag[:, 0], independent_planes=True)
    assert not flat_map.independent_planes


# ---------------------------------------------------------------------------------- whole-sample noise cache
@pytest.mark.parametrize("kind", ["stacked", "flat", "independent_planes", "rank0"])
def test_whole_sample_noise_is_the_planes_noise_bit_for_bit(kind):
    num_classes, spatial, rank = 3, (5, 9, 11), 4
    mean, factor, diag = _random_parameters(num_classes, spatial, rank, seed=21)
    given = {"stacked": factor, "flat": _flat_factor(factor), "independent_planes": factor, "rank0": None}[kind]
    dist = LowRankLogits(mean, given, diag, independent_planes=kind == "independent_planes")
    volume = dist._volume_noise(7, 3)
    assert volume.shape == (num_classes, *spatial) and volume.dtype == np.float32
    for z in range(spatial[0]):
        np.testing.assert_array_equal(volume[:, z], dist._plane_noise(7, 3, z))
    # scaled and argmax'd, it is the sample drawn plane by plane, for any scales and temperature
    manipulated = dist.with_class_scales([0.0, -2.5, 1.3]).with_temperature(0.7)
    np.testing.assert_array_equal(manipulated._labels_from_noise(volume), manipulated.sample_labels_at(3, seed=7))


def test_stack_keeps_the_noise_of_a_whole_sample_and_redraws_exactly():
    dist = synthetic_distribution((6, 18, 20), num_classes=4, rank=5, seed=2)
    stack = SampleLabelStack(dist, range(3), seed=9)
    assert stack.cached_sample(1) is None and not stack.has_noise(1)
    first = stack.sample(1)
    assert stack.has_noise(1) and stack.cached_sample(1) is first
    np.testing.assert_array_equal(first, dist.sample_labels_at(1, seed=9))
    calls = []
    original = NoiseModel.plane
    try:
        NoiseModel.plane = lambda *a, **k: calls.append(1) or original(*a, **k)
        for scales, temperature in (([1, 2, -1, 0.5], 1.0), ([1, 0, 1, 1], 2.5), ([-3, 1, 1, 3], 0.0)):
            manipulated = dist.with_class_scales(scales).with_temperature(temperature)
            stack.set_distribution(manipulated)
            assert stack.cached_sample(1) is None  # the labels follow the new scales
            redrawn = stack.sample(1)
            expected_logits = manipulated.sample_at(1, seed=9)
            np.testing.assert_array_equal(redrawn, np.argmax(expected_logits, axis=0))
            np.testing.assert_array_equal(stack[1, 4], manipulated.slice_labels(4, seed=9, sample_index=1))
    finally:
        NoiseModel.plane = original
    # sample_at / slice_labels above draw their own noise; the stack itself drew none
    assert len(calls) == 3 * (6 + 1)
    # another entry, without keeping its noise
    stack.sample(2, keep_noise=False)
    assert not stack.has_noise(2) and stack.prepare_noise(2) and stack.has_noise(2)
    # a new sample index has new noise
    stack.set_sample_index(1, 17)
    assert not stack.has_noise(1)
    np.testing.assert_array_equal(stack.sample(1), stack.distribution.sample_labels_at(17, seed=9))
    # other parameters (not just scales) drop the kept noise
    stack.set_distribution(synthetic_distribution((6, 18, 20), num_classes=4, rank=5, seed=3))
    assert not stack.has_noise(2)


def test_stack_falls_back_to_planes_when_the_noise_does_not_fit():
    dist = synthetic_distribution((4, 16, 16), num_classes=3, rank=2, seed=1)
    stack = SampleLabelStack(dist, range(2), seed=0, volume_cache_bytes=0)
    np.testing.assert_array_equal(stack.sample(0), dist.sample_labels_at(0, seed=0))
    assert not stack.has_noise(0)


def test_with_class_names_keeps_the_samples():
    dist = synthetic_distribution((12, 12), num_classes=3, rank=2, seed=1)
    named = dist.with_class_names(["background", "organ", "lesion"])
    assert named.class_names == ("background", "organ", "lesion")
    np.testing.assert_array_equal(named.sample(2, seed=3), dist.sample(2, seed=3))
    with pytest.raises(ValueError, match="3 strings"):
        dist.with_class_names(["a", "b"])


@pytest.mark.parametrize(("spatial", "rank"), [((3, 7, 5), 1), ((4, 16, 17), 3), ((7, 13, 31), 10), ((2, 64, 65), 7)])
def test_whole_sample_noise_is_exact_for_odd_sizes_and_ranks(spatial, rank):
    mean, factor, diag = _random_parameters(2, spatial, rank, seed=rank)
    dist = LowRankLogits(mean, factor, diag)
    volume = dist._volume_noise(1, 5)
    np.testing.assert_array_equal(volume, np.stack([dist._plane_noise(1, 5, z) for z in range(spatial[0])], axis=1))
