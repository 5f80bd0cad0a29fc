"""GED², sample diversity, pairwise IoU distance and Dice against a reference, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_seg_uncertainty.core.ssn import (
    dice_against_reference,
    generalized_energy_distance,
    pairwise_iou_distance,
    sample_diversity,
)


def _distance(a, b, num_classes):
    """Brute force d = 1 - mean over foreground classes of IoU; a class absent from both counts as IoU 1."""
    ious = []
    for c in range(1, num_classes):
        in_a, in_b = a == c, b == c
        union = np.logical_or(in_a, in_b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(in_a, in_b).sum() / union)
    return 1.0 - float(np.mean(ious))


def _mean_distance(first, second, num_classes, *, distinct=False):
    values = [
        _distance(a, b, num_classes)
        for (i, a), (j, b) in itertools.product(enumerate(first), enumerate(second))
        if not (distinct and i == j)
    ]
    return float(np.mean(values))


def _ged(samples, raters, num_classes, *, distinct=False):
    return (
        2 * _mean_distance(samples, raters, num_classes)
        - _mean_distance(samples, samples, num_classes, distinct=distinct)
        - _mean_distance(raters, raters, num_classes, distinct=distinct)
    )


def test_distance_of_hand_made_maps():
    empty = np.zeros((4, 4), int)
    square = empty.copy()
    square[1:3, 1:3] = 1
    shifted = empty.copy()
    shifted[1:3, 2:4] = 1
    both = square.copy()
    both[0, 0] = 2
    maps = np.stack([empty, square, shifted, both])
    distances = pairwise_iou_distance(maps, num_classes=3)
    # empty vs empty: 0; empty vs square: class 1 IoU 0, class 2 absent from both (IoU 1) -> 0.5
    assert distances[0, 0] == 0.0
    assert distances[0, 1] == pytest.approx(0.5)
    # square vs shifted: class 1 IoU 2/6, class 2 absent -> d = 1 - (1/3 + 1) / 2
    assert distances[1, 2] == pytest.approx(1 - (2 / 6 + 1) / 2)
    # square vs both: class 1 identical, class 2 only in one -> d = 0.5
    assert distances[1, 3] == pytest.approx(0.5)
    np.testing.assert_allclose(distances, distances.T)


def test_metrics_match_brute_force_on_random_maps():
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 4, size=(6, 9, 11)) * (rng.random((6, 9, 11)) < 0.6)
    raters = rng.integers(0, 4, size=(3, 9, 11)) * (rng.random((3, 9, 11)) < 0.4)
    raters[0] = 0  # an empty annotation, as in LIDC
    expected = np.array([[_distance(a, b, 4) for b in raters] for a in samples])
    np.testing.assert_allclose(pairwise_iou_distance(samples, raters, num_classes=4), expected, atol=1e-12)
    assert generalized_energy_distance(samples, raters, num_classes=4) == pytest.approx(
        _ged(samples, raters, 4), abs=1e-12
    )
    assert generalized_energy_distance(
        samples, raters, num_classes=4, include_self_pairs=False
    ) == pytest.approx(_ged(samples, raters, 4, distinct=True), abs=1e-12)
    assert sample_diversity(samples, num_classes=4) == pytest.approx(
        _mean_distance(samples, samples, 4), abs=1e-12
    )
    assert sample_diversity(samples, num_classes=4, include_self_pairs=False) == pytest.approx(
        _mean_distance(samples, samples, 4, distinct=True), abs=1e-12
    )


def test_ged_of_a_set_with_itself_is_zero_and_3d_stacks_work():
    rng = np.random.default_rng(1)
    raters = rng.integers(0, 3, size=(4, 3, 6, 5))
    assert generalized_energy_distance(raters, raters, num_classes=3) == pytest.approx(0.0, abs=1e-12)
    assert generalized_energy_distance(raters[:2], raters, num_classes=3) == pytest.approx(
        _ged(raters[:2], raters, 3), abs=1e-12
    )
    # all-empty maps: no diversity at all
    assert sample_diversity(np.zeros((3, 4, 4), np.uint8), num_classes=2) == 0.0


def test_large_maps_are_counted_exactly_across_blocks():
    # more pixels than one block of the indicator matrices: counts must still be exact
    rng = np.random.default_rng(2)
    maps = (rng.random((3, 1200, 1500)) < 0.5).astype(np.uint8)
    expected = np.array([[_distance(a, b, 2) for b in maps] for a in maps])
    np.testing.assert_allclose(pairwise_iou_distance(maps, num_classes=2), expected, atol=1e-12)


def test_dice_against_reference_matches_brute_force_and_leaves_undefined_as_nan():
    reference = np.zeros((6, 6), int)
    reference[1:4, 1:4] = 1
    samples = np.zeros((2, 6, 6), int)
    samples[0, 2:5, 2:5] = 1
    samples[1, 0, 0] = 2
    dice = dice_against_reference(samples, reference, num_classes=3)
    expected_first = 2 * np.logical_and(samples[0] == 1, reference == 1).sum() / (9 + 9)
    assert dice.shape == (2, 2)
    assert dice[0, 0] == pytest.approx(expected_first)
    assert np.isnan(dice[0, 1])  # class 2 absent from both
    assert dice[1, 0] == 0.0 and dice[1, 1] == 0.0
    np.testing.assert_array_equal(dice_against_reference(samples[0], reference, num_classes=3), dice[:1])


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
        elements=st.integers(0, 2),
    ),
    arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(5), st.just(5)), elements=st.integers(0, 2)),
)
def test_properties_against_brute_force(samples, raters):
    samples = np.resize(samples, (samples.shape[0], 5, 5))
    distances = pairwise_iou_distance(samples, num_classes=3)
    assert np.all((distances >= 0) & (distances <= 1))
    np.testing.assert_allclose(np.diag(distances), 0.0)
    ged = generalized_energy_distance(samples, raters, num_classes=3)
    assert ged == pytest.approx(_ged(samples, raters, 3), abs=1e-12)
    assert sample_diversity(samples, num_classes=3) == pytest.approx(
        _mean_distance(samples, samples, 3), abs=1e-12
    )


def test_invalid_inputs_raise_errors_naming_the_argument():
    maps = np.zeros((2, 4, 4), int)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        sample_diversity(maps, num_classes=1)
    with pytest.raises(ValueError, match="samples contains label 3"):
        sample_diversity(maps + 3, num_classes=3)
    with pytest.raises(ValueError, match="samples and raters must label the same grid"):
        generalized_energy_distance(maps, np.zeros((2, 4, 5), int), num_classes=2)
    with pytest.raises(ValueError, match="raters must be stacked"):
        generalized_energy_distance(maps, np.zeros((4, 4), int), num_classes=2)
    with pytest.raises(ValueError, match="needs at least 2"):
        sample_diversity(maps[:1], num_classes=2, include_self_pairs=False)
    with pytest.raises(TypeError, match="include_self_pairs"):
        sample_diversity(maps, num_classes=2, include_self_pairs="yes")
    with pytest.raises(ValueError, match="samples and reference must label the same grid"):
        dice_against_reference(maps, np.zeros((4, 5), int), num_classes=2)
