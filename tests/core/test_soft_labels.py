"""Tests for core.labels (smoothing, fusion, sampler, methods) against independent computations written here."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from napari_seg_uncertainty.core.labels import (
    RandomRaterSampler,
    fusion,
    label_smoothing,
    majority_vote,
    methods,
    msvls,
    one_hot,
    rater_mean,
    sampler,
    smoothing,
    staple,
    svls,
    svls_kernel,
)

# --------------------------------------------------------------------------------------------------------
# independent reference computations
# --------------------------------------------------------------------------------------------------------


def paper_kernel(ndim: int, sigma: float = 1.0, spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """The SVLS weight matrix as the paper words it, divided by its sum (the conv output normalisation).

    G_ND(x; σ) = (2πσ²)^(-N/2) exp(-|x|² / 2σ²) on the 3^N grid (|x| in mm when a spacing is given), the
    centre weight replaced by the sum of the surrounding weights, then everything divided by the centre.
    """
    step = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    weights = np.zeros((3,) * ndim)
    for index in itertools.product(range(3), repeat=ndim):
        distance_sq = sum(((i - 1) * s) ** 2 for i, s in zip(index, step))
        weights[index] = math.exp(-distance_sq / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** (ndim / 2)
    centre = (1,) * ndim
    weights[centre] = 0.0
    weights[centre] = weights.sum()  # the sum of the surrounding weights
    weights = weights / weights[centre]
    return weights / weights.sum()


def direct_svls(labels: np.ndarray, num_classes: int, kernel: np.ndarray) -> np.ndarray:
    """Direct (non-separable) correlation of each one-hot channel, replicate padding, float64 loops."""
    padded = np.pad(labels, 1, mode="edge")
    out = np.zeros((num_classes, *labels.shape))
    for index in itertools.product(range(3), repeat=labels.ndim):
        window = padded[tuple(slice(i, i + n) for i, n in zip(index, labels.shape))]
        for class_index in range(num_classes):
            out[class_index] += kernel[index] * (window == class_index)
    return out


def random_labels(shape: tuple[int, ...], num_classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # blocky labels (regions and boundaries) plus isolated noise voxels
    coarse = rng.integers(0, num_classes, size=tuple(max(1, n // 3) for n in shape))
    labels = coarse
    for axis, n in enumerate(shape):
        labels = np.repeat(labels, 3, axis=axis)
        labels = np.take(labels, np.arange(n), axis=axis, mode="clip")
    noise = rng.random(shape) < 0.1
    labels = labels.copy()
    labels[noise] = rng.integers(0, num_classes, size=int(noise.sum()))
    return labels


# --------------------------------------------------------------------------------------------------------
# one-hot, LS, rater mean, majority vote
# --------------------------------------------------------------------------------------------------------


def test_one_hot_matches_identity_matrix_indexing():
    labels = random_labels((7, 9), 4, seed=1)
    expected = np.moveaxis(np.eye(4, dtype=np.float32)[labels], -1, 0)
    result = one_hot(labels, num_classes=4)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)


def test_one_hot_accepts_bool_and_whole_floats():
    np.testing.assert_array_equal(one_hot(np.array([[True, False]]), num_classes=2)[1], [[1.0, 0.0]])
    np.testing.assert_array_equal(one_hot(np.array([[2.0, 0.0]]), num_classes=3)[2], [[1.0, 0.0]])


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.3, 1.0])
def test_label_smoothing_formula(alpha):
    labels = random_labels((4, 5, 6), 3, seed=2)
    onehot = np.moveaxis(np.eye(3)[labels], -1, 0)
    expected = onehot * (1 - alpha) + alpha / 3
    result = label_smoothing(labels, num_classes=3, alpha=alpha)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-7)
    np.testing.assert_allclose(result.sum(axis=0), 1.0, atol=1e-6)


def test_rater_mean_counts_votes():
    raters = np.stack([random_labels((6, 8), 3, seed=s) for s in range(5)])
    expected = np.zeros((3, 6, 8))
    for r, y, x in itertools.product(range(5), range(6), range(8)):
        expected[raters[r, y, x], y, x] += 1 / 5
    result = rater_mean(raters, num_classes=3)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-7)
    # a list of label maps works the same
    np.testing.assert_array_equal(rater_mean(list(raters), num_classes=3), result)


def test_majority_vote_matches_simpleitk_label_voting_where_no_tie():
    raters = np.stack([random_labels((5, 9, 11), 4, seed=s) for s in range(5)])
    voting = sitk.LabelVotingImageFilter()
    voting.SetLabelForUndecidedPixels(255)
    expected = sitk.GetArrayFromImage(voting.Execute([sitk.GetImageFromArray(r.astype(np.uint8)) for r in raters]))
    result = majority_vote(raters)
    assert result.shape == raters.shape[1:] and result.dtype == np.uint8
    decided = expected != 255
    assert decided.sum() > 0.5 * decided.size
    np.testing.assert_array_equal(result[decided], expected[decided])
    # ties go to the lowest tied class
    for index in zip(*np.nonzero(~decided)):
        votes = np.bincount(raters[(slice(None), *index)], minlength=4)
        assert result[index] == np.flatnonzero(votes == votes.max())[0]


def test_majority_vote_tie_prefers_lower_class_and_num_classes_is_checked():
    raters = np.array([[[0, 3]], [[2, 1]]])
    np.testing.assert_array_equal(majority_vote(raters), [[0, 1]])
    with pytest.raises(ValueError, match="raters contains label 3"):
        majority_vote(raters, num_classes=3)


# --------------------------------------------------------------------------------------------------------
# SVLS kernel
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_svls_kernel_matches_paper_construction(ndim, sigma):
    kernel = svls_kernel(ndim, sigma=sigma)
    np.testing.assert_allclose(kernel, paper_kernel(ndim, sigma), rtol=1e-12, atol=1e-15)
    assert kernel[(1,) * ndim] == pytest.approx(0.5)  # centre carries half the weight
    assert kernel.sum() == pytest.approx(1.0)


def test_svls_kernel_2d_values_by_hand():
    # σ = 1: neighbour weights e^(-1/2) (edges) and e^(-1) (corners) relative to the centre Gaussian 1;
    # centre := 4e^(-1/2) + 4e^(-1); total = 2 * centre.
    edge, corner = math.exp(-0.5), math.exp(-1.0)
    centre = 4 * edge + 4 * corner
    kernel = svls_kernel(2)
    assert kernel[0, 1] == pytest.approx(edge / (2 * centre))
    assert kernel[0, 0] == pytest.approx(corner / (2 * centre))
    assert kernel[0, 1] == pytest.approx(0.0778074164, abs=1e-9)
    assert kernel[2, 2] == pytest.approx(0.0471925836, abs=1e-9)


def test_svls_kernel_with_spacing_matches_physical_gaussian():
    spacing = (3.0, 1.0, 0.5)
    np.testing.assert_allclose(
        svls_kernel(3, sigma=1.5, spacing=spacing), paper_kernel(3, 1.5, spacing), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(svls_kernel(3, spacing=(1, 1, 1)), svls_kernel(3), rtol=0, atol=0)


def test_svls_kernel_tiny_sigma_is_finite_and_keeps_face_neighbours():
    kernel = svls_kernel(3, sigma=0.01)
    assert np.all(np.isfinite(kernel))
    assert kernel.sum() == pytest.approx(1.0)
    # limit σ → 0: the 6 face neighbours share the half equally
    assert kernel[0, 1, 1] == pytest.approx(0.5 / 6)
    assert kernel[0, 0, 1] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------------------
# SVLS against direct convolution and the paper's toy properties
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "sigma", "spacing"),
    [
        ((12, 15), 1.0, None),
        ((9, 10, 11), 1.0, None),
        ((9, 10, 11), 0.7, None),
        ((6, 13, 8), 2.0, (2.5, 1.0, 1.0)),
        ((6, 13, 8), 1.0, (0.8, 1.1, 1.4)),
        ((10, 7), 1.3, (2.0, 0.5)),
        ((1, 5, 6), 1.0, None),  # single slice: replicate padding along z
        ((1, 1), 1.0, None),
    ],
)
def test_svls_matches_direct_convolution(shape, sigma, spacing):
    labels = random_labels(shape, 4, seed=len(shape) + int(sigma * 10))
    expected = direct_svls(labels, 4, paper_kernel(len(shape), sigma, spacing))
    result = svls(labels, num_classes=4, sigma=sigma, spacing=spacing)
    assert result.dtype == np.float32 and result.shape == (4, *shape)
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_allclose(result.sum(axis=0), 1.0, atol=1e-6)


def test_svls_matches_scipy_correlate_with_nearest_mode():
    labels = random_labels((8, 9, 10), 3, seed=5)
    kernel = paper_kernel(3)
    result = svls(labels, num_classes=3)
    for class_index in range(3):
        expected = ndimage.correlate((labels == class_index).astype(np.float64), kernel, mode="nearest")
        np.testing.assert_allclose(result[class_index], expected, atol=1e-6)


def test_svls_matches_reference_grouped_conv3d():
    torch = pytest.importorskip("torch")
    labels = random_labels((7, 12, 10), 4, seed=6)
    weights = torch.from_numpy(paper_kernel(3) * 2).float()  # any positive multiple: divided below
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), 4).permute(3, 0, 1, 2)[None].float()
    padded = torch.nn.functional.pad(onehot, (1,) * 6, mode="replicate")
    expected = torch.nn.functional.conv3d(padded, weights.expand(4, 1, 3, 3, 3), groups=4) / weights.sum()
    np.testing.assert_allclose(svls(labels, num_classes=4), expected[0].numpy(), atol=1e-6)


def test_benchmark_reference_pipeline_agrees_with_svls():
    """benchmarks/bench_soft_labels.py times svls against the reference code's pipeline; both must still run."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_soft_labels.py"
    spec = importlib.util.spec_from_file_location("bench_soft_labels", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    labels = bench.make_labels((9, 12, 10), 4, seed=0)
    _, fast = bench.timed(svls, labels, num_classes=4)
    np.testing.assert_allclose(fast, bench.reference_svls(labels, 4), atol=1e-6)
    raters = np.stack([labels, bench.make_labels((9, 12, 10), 4, seed=1)])
    _, fast_mean = bench.timed(msvls, raters, num_classes=4)
    np.testing.assert_allclose(fast_mean, bench.reference_msvls(raters, 4), atol=1e-6)


def test_svls_across_many_slabs_matches_direct(monkeypatch):
    # force tiny slabs so that the halo planes between slabs are exercised
    monkeypatch.setattr(smoothing, "_SLAB_VOXELS", 40)
    labels = random_labels((17, 6, 5), 3, seed=7)
    expected = direct_svls(labels, 3, paper_kernel(3))
    np.testing.assert_allclose(svls(labels, num_classes=3), expected, atol=1e-6)
    raters = np.stack([labels, random_labels((17, 6, 5), 3, seed=8)])
    expected_mean = (expected + direct_svls(raters[1], 3, paper_kernel(3))) / 2
    np.testing.assert_allclose(msvls(raters, num_classes=3), expected_mean, atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_svls_homogeneous_region_stays_one_hot(ndim):
    labels = np.full((6,) * ndim, 2)
    result = svls(labels, num_classes=3)
    np.testing.assert_allclose(result[2], 1.0, atol=1e-6)
    np.testing.assert_allclose(result[:2], 0.0, atol=0)
    # and the interior of a large region next to another class stays one-hot
    labels = np.zeros((8,) * ndim, dtype=int)
    labels[(slice(None),) * (ndim - 1) + (slice(4, None),)] = 1
    result = svls(labels, num_classes=2)
    interior = (slice(None),) * (ndim - 1) + (slice(0, 3),)
    np.testing.assert_allclose(result[0][interior], 1.0, atol=1e-6)
    boundary = (slice(None),) * (ndim - 1) + (3,)
    assert np.all(result[0][boundary] < 1.0) and np.all(result[0][boundary] > 0.5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
def test_svls_isolated_voxel_gets_equal_probability(ndim, sigma):
    labels = np.full((5,) * ndim, 1)
    labels[(2,) * ndim] = 3
    result = svls(labels, num_classes=4, sigma=sigma)
    centre = (slice(None),) + (2,) * ndim
    np.testing.assert_allclose(result[centre], [0.0, 0.5, 0.0, 0.5], atol=1e-6)


def test_svls_of_an_impulse_reproduces_the_kernel():
    labels = np.zeros((7, 7, 7), dtype=int)
    labels[3, 3, 3] = 1
    result = svls(labels, num_classes=2, sigma=1.2, spacing=(2.0, 1.0, 1.0))
    expected = np.zeros((7, 7, 7))
    expected[2:5, 2:5, 2:5] = paper_kernel(3, 1.2, (2.0, 1.0, 1.0))  # symmetric kernel: flip not needed
    np.testing.assert_allclose(result[1], expected, atol=1e-7)


def test_svls_paper_toy_example_one_more_red_neighbour_more_red():
    # Fig. 2(b): the centre pixel with more red (class 1) neighbours gets higher red probability
    example_1 = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]])
    example_2 = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    p1 = svls(example_1, num_classes=2)[1, 1, 1]
    p2 = svls(example_2, num_classes=2)[1, 1, 1]
    kernel = paper_kernel(2)
    assert p1 == pytest.approx(float((kernel * (example_1 == 1)).sum()), abs=1e-6)
    assert p1 > p2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.sampled_from([(5, 6), (4, 5, 6), (3, 3, 7), (2, 8)]),
    num_classes=st.integers(2, 5),
    sigma=st.floats(0.3, 4.0),
    anisotropic=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_svls_property_matches_direct(shape, num_classes, sigma, anisotropic, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape)
    spacing = tuple(float(s) for s in rng.uniform(0.5, 3.0, size=len(shape))) if anisotropic else None
    result = svls(labels, num_classes=num_classes, sigma=sigma, spacing=spacing)
    expected = direct_svls(labels, num_classes, paper_kernel(len(shape), sigma, spacing))
    np.testing.assert_allclose(result, expected, atol=1e-6)
    np.testing.assert_allclose(result.sum(axis=0), 1.0, atol=1e-6)


# --------------------------------------------------------------------------------------------------------
# mSVLS
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(9, 12), (5, 8, 9)])
def test_msvls_is_mean_of_per_rater_direct_svls(shape):
    raters = np.stack([random_labels(shape, 3, seed=s) for s in range(4)])
    kernel = paper_kernel(len(shape), 1.5)
    expected = np.mean([direct_svls(r, 3, kernel) for r in raters], axis=0)
    result = msvls(raters, num_classes=3, sigma=1.5)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_msvls_many_raters_uses_wider_counts():
    # 3-D with 30 raters: 12 diagonal neighbours x 30 raters overflows uint8 counts
    raters = np.stack([random_labels((4, 5, 6), 2, seed=s) for s in range(30)])
    kernel = paper_kernel(3)
    expected = np.mean([direct_svls(r, 2, kernel) for r in raters], axis=0)
    np.testing.assert_allclose(msvls(raters, num_classes=2), expected, atol=1e-6)


def test_msvls_single_rater_equals_svls_and_differs_from_rater_mean():
    labels = random_labels((6, 7), 3, seed=3)
    np.testing.assert_allclose(msvls(labels[None], num_classes=3), svls(labels, num_classes=3), atol=0)
    raters = np.stack([labels, np.roll(labels, 1, axis=0)])
    # Fig. 3: mOH gives zero probability to a class seen only in the neighbourhood, mSVLS does not
    assert np.any((rater_mean(raters, num_classes=3) == 0) & (msvls(raters, num_classes=3) > 0))


# --------------------------------------------------------------------------------------------------------
# RandomRaterSampler
# --------------------------------------------------------------------------------------------------------


def test_sampler_same_seed_same_sequence_and_targets():
    raters = np.stack([random_labels((5, 6), 3, seed=s) for s in range(4)])
    first = RandomRaterSampler(raters, num_classes=3, seed=11)
    second = RandomRaterSampler(raters, num_classes=3, seed=11)
    sequence = [first.sample_index() for _ in range(50)]
    assert sequence == [second.sample_index() for _ in range(50)]
    assert sequence != [RandomRaterSampler(raters, num_classes=3, seed=12).sample_index() for _ in range(50)]
    index, target = first.sample_with_index()
    np.testing.assert_array_equal(target, np.moveaxis(np.eye(3, dtype=np.float32)[raters[index]], -1, 0))
    first.reset()
    assert [first.sample_index() for _ in range(50)] == sequence


def test_sampler_is_uniform():
    raters = np.zeros((4, 2, 2), dtype=int)
    sampler = RandomRaterSampler(raters, num_classes=2, seed=0)
    counts = np.bincount([sampler.sample_index() for _ in range(4000)], minlength=4)
    # binomial(4000, 1/4): sd ~ 27; 6 sd bounds
    assert np.all(np.abs(counts - 1000) < 165)


def test_sampler_without_replacement_cycles_through_permutations():
    raters = np.zeros((5, 2, 2), dtype=int)
    sampler = RandomRaterSampler(raters, num_classes=2, seed=3, replacement=False)
    draws = [sampler.sample_index() for _ in range(20)]
    for block in range(4):
        assert sorted(draws[5 * block : 5 * block + 5]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("target", ["labels", "label_smoothing", "svls"])
def test_sampler_targets(target):
    raters = np.stack([random_labels((6, 7), 3, seed=s) for s in range(3)])
    sampler = RandomRaterSampler(raters, num_classes=3, seed=0, target=target, alpha=0.2, sigma=1.5)
    index, result = sampler.sample_with_index()
    labels = raters[index]
    if target == "labels":
        np.testing.assert_array_equal(result, labels)
    elif target == "label_smoothing":
        np.testing.assert_allclose(result, np.moveaxis(np.eye(3)[labels], -1, 0) * 0.8 + 0.2 / 3, atol=1e-7)
    else:
        np.testing.assert_allclose(result, direct_svls(labels, 3, paper_kernel(2, 1.5)), atol=1e-6)
    assert sampler().shape == result.shape


# --------------------------------------------------------------------------------------------------------
# validation messages
# --------------------------------------------------------------------------------------------------------


ZEROS = np.zeros((3, 3), dtype=int)
STACK = np.zeros((2, 3, 3), dtype=int)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: svls(np.zeros((3, 3)), num_classes=0), ValueError, "num_classes must be at least 1, got 0"),
        (lambda: svls(np.zeros((3, 3)), num_classes=2.5), TypeError, "num_classes must be an integer"),
        (lambda: svls(np.full((3, 3), 0.5), num_classes=2), ValueError, "labels contains non-integer"),
        (lambda: svls(np.full((3, 3), 2), num_classes=2), ValueError, "labels contains label 2"),
        (lambda: svls(np.zeros(4, dtype=int), num_classes=2), ValueError, "labels must be 2-D or 3-D, got 1-D"),
        (lambda: svls(ZEROS, num_classes=2, sigma=-1), ValueError, "sigma must be a finite number > 0"),
        (lambda: svls(ZEROS, num_classes=2, sigma="1"), TypeError, "sigma must be a number"),
        (lambda: svls(ZEROS, num_classes=2, spacing=(1, 1, 1)), ValueError, "spacing must have 2"),
        (lambda: label_smoothing(ZEROS, num_classes=2, alpha=1.5), ValueError, r"alpha must lie in \[0, 1\]"),
        (lambda: msvls(ZEROS, num_classes=2), ValueError, r"raters must be stacked as \(R, Y, X\)"),
        (lambda: rater_mean([np.zeros((2, 2)), ZEROS], num_classes=2), ValueError, "raters have different shapes"),
        (lambda: staple(np.zeros((2, 3, 3)), confidence_weight=0), ValueError, "confidence_weight"),
        (lambda: staple(np.zeros((2, 3, 3)), max_iterations=0), ValueError, "max_iterations must be at least 1"),
        (lambda: svls_kernel(4), ValueError, r"ndim must be 2 or 3 .*got 4"),
        (lambda: RandomRaterSampler(STACK, num_classes=2, target="mean"), ValueError, "target must be one of"),
        (lambda: RandomRaterSampler(STACK, num_classes=2, seed=1.5), TypeError, "seed must be a non-negative integer"),
        (lambda: RandomRaterSampler(STACK, num_classes=2).target_for(2), ValueError, r"rater_index must lie"),
    ],
)
def test_invalid_input_messages_name_the_argument(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


@pytest.mark.parametrize("module", [fusion, smoothing, sampler, methods])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5
    assert result.failed == 0
