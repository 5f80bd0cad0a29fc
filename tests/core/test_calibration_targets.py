"""Calibration fixes: exact bin edges, ambiguous integer targets and the cumulative accumulator."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.calibration import (
    ReliabilityAccumulator,
    bin_edges,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    thresholded_adaptive_ce,
)


def _random_probs(rng, shape, num_classes, sharpness=2.0) -> np.ndarray:
    z = rng.normal(scale=sharpness, size=(num_classes, *shape))
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# bin edges k/M in the input dtype
# ------------------------------------------------------------------------------------------------


def test_issue_example_float64_confidence_on_an_edge():
    probs = np.array([[[0.7]], [[0.3]]])  # float64
    target = np.zeros((1, 1), int)
    assert reliability_bins(probs, target, closed="left").count.tolist() == [0] * 7 + [1, 0, 0]
    assert reliability_bins(probs, target, closed="right").count.tolist() == [0] * 6 + [1, 0, 0, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_bins", [3, 7, 10, 20, 50, 100])
def test_every_edge_value_sits_on_its_edge(dtype, num_bins):
    edges = bin_edges(num_bins, dtype)
    assert edges.dtype == dtype and edges[0] == 0 and edges[-1] == 1
    ks = [k for k in range(1, num_bins) if 2 * k > num_bins]  # confidences above 1/2 with two classes
    conf = np.array([dtype(k) / dtype(num_bins) for k in ks], dtype=dtype)
    probs = np.stack([conf, 1 - conf])[:, None, :]
    target = np.zeros((1, conf.size), int)
    left = reliability_bins(probs, target, num_bins=num_bins, closed="left")
    right = reliability_bins(probs, target, num_bins=num_bins, closed="right")
    expected_left = np.zeros(num_bins, int)
    expected_left[ks] = 1
    np.testing.assert_array_equal(left.count, expected_left)
    np.testing.assert_array_equal(right.count, np.roll(expected_left, -1))


def test_bins_report_exact_edges():
    bins = reliability_bins(np.full((2, 2, 2), 0.5, np.float32), np.zeros((2, 2), int))
    np.testing.assert_array_equal(bins.edges, np.arange(11) / 10)
    assert bins.to_records()[2]["upper"] == 0.3


# ------------------------------------------------------------------------------------------------
# integer (C, *spatial) targets: one-hot or raters
# ------------------------------------------------------------------------------------------------


def _one_hot_case():
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, (12, 14), 3)
    labels = rng.integers(0, 3, size=(12, 14))
    one_hot = np.stack([labels == k for k in range(3)]).astype(np.uint8)
    return probs, labels, one_hot


@pytest.mark.parametrize("as_bool", [False, True])
def test_one_hot_integer_target_is_ambiguous(as_bool):
    probs, _, one_hot = _one_hot_case()
    target = one_hot.astype(bool) if as_bool else one_hot
    for metric in (expected_calibration_error, thresholded_adaptive_ce, negative_log_likelihood, brier_score):
        with pytest.raises(ValueError, match="target_kind") as info:
            metric(probs, target)
        assert "one-hot" in str(info.value) and "raters" in str(info.value)
    with pytest.raises(ValueError, match="target_kind"):
        calibration_summary(probs, target)
    with pytest.raises(ValueError, match="target_kind"):
        fit_temperature(np.log(probs), target)


def test_one_hot_and_raters_readings_by_name():
    probs, labels, one_hot = _one_hot_case()
    # read as a stack of 3 raters with labels 0/1, the soft target is their mean
    mean = np.stack([(one_hot == k).mean(axis=0) for k in range(3)]).astype(np.float32)
    for metric in (expected_calibration_error, thresholded_adaptive_ce, negative_log_likelihood, brier_score):
        assert metric(probs, one_hot, target_kind="one_hot") == pytest.approx(metric(probs, labels), rel=1e-12)
    for metric in (expected_calibration_error, thresholded_adaptive_ce, negative_log_likelihood):
        assert metric(probs, one_hot, target_kind="raters") == pytest.approx(metric(probs, mean), rel=1e-6)
    assert brier_score(probs, one_hot, target_kind="raters", rater_average="target") == pytest.approx(
        brier_score(probs, mean), rel=1e-6
    )
    # and the two readings really differ (the old silent reading was the rater one)
    assert expected_calibration_error(probs, one_hot, target_kind="one_hot") != pytest.approx(
        expected_calibration_error(probs, one_hot, target_kind="raters"), abs=1e-3
    )


def test_rater_stack_that_is_not_one_hot_needs_no_kind():
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, (6, 7), 3)
    raters = rng.integers(0, 3, size=(3, 6, 7))  # R == C, but labels 2 are no one-hot values
    assert expected_calibration_error(probs, raters) == expected_calibration_error(
        probs, raters, target_kind="raters"
    )
    two = np.array([[[0, 0]], [[1, 0]]])  # voxel 1: no rater says 1, so no one-hot map
    assert brier_score(np.full((2, 1, 2), 0.5, np.float32), two) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("target", "kind", "words"),
    [
        (np.zeros((2, 3, 3), int), "labels", ["target_kind='labels'", "(3, 3)"]),
        (np.zeros((3, 3), int), "raters", ["target_kind='raters'", "(R,"]),
        (np.zeros((2, 3, 3), int), "one_hot", ["one_hot", "exactly one 1"]),
        (np.zeros((3, 3, 3), np.uint8), "one_hot", ["one_hot", "(2, 3, 3)"]),
        (np.zeros((2, 3, 3), np.float32), "soft", ["target", "sum to 1"]),
    ],
)
def test_target_kind_mismatch_names_the_problem(target, kind, words):
    probs = np.full((2, 3, 3), 0.5, np.float32)
    with pytest.raises(ValueError) as info:
        reliability_bins(probs, target, target_kind=kind)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ValueError, match="target_kind"):
        reliability_bins(probs, np.zeros((3, 3), int), target_kind="onehot")


# ------------------------------------------------------------------------------------------------
# cumulative reliability accumulator
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("closed", ["right", "left"])
def test_accumulator_equals_concatenation_in_any_order(closed):
    rng = np.random.default_rng(2)
    cases = []
    for i in range(5):
        shape = (3 + i, 5, 6) if i % 2 else (8, 9 + i)
        probs = _random_probs(rng, shape, 3)
        raters = rng.integers(0, 3, size=(4, *shape))
        mask = rng.random(shape) < 0.7
        cases.append((probs, raters, mask))
    flat_probs = np.concatenate([p[:, m][:, None] for p, _, m in cases], axis=2)
    flat_raters = np.concatenate([r[:, m][:, None] for _, r, m in cases], axis=2)
    together = reliability_bins(flat_probs, flat_raters, num_bins=12, closed=closed)
    for order in (range(5), reversed(range(5))):
        acc = ReliabilityAccumulator(num_bins=12, closed=closed)
        for i in order:
            probs, raters, mask = cases[i]
            single = acc.update(probs, raters, mask=mask)
            assert single.total == int(mask.sum())
        pooled = acc.aggregate()
        assert acc.num_cases == 5 and pooled.count.dtype == np.int64
        np.testing.assert_array_equal(pooled.count, together.count)
        np.testing.assert_allclose(pooled.accuracy, together.accuracy, rtol=1e-12)
        np.testing.assert_allclose(pooled.confidence, together.confidence, rtol=1e-12)
        assert pooled.expected_calibration_error == pytest.approx(together.expected_calibration_error, rel=1e-12)


def test_accumulator_exact_counts_reset_and_validation():
    probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], np.float32)
    acc = ReliabilityAccumulator(num_bins=10)
    for _ in range(1000):
        acc.update(probs, np.array([[0, 0]]))
    bins = acc.aggregate()
    assert bins.count[[6, 8]].tolist() == [1000, 1000] and bins.total == 2000
    assert bins.accuracy[[6, 8]].tolist() == [0.0, 1.0]
    assert acc.count.sum() == 2000
    acc.reset()
    assert acc.num_cases == 0
    with pytest.raises(ValueError, match="update"):
        acc.aggregate()
    with pytest.raises(ValueError, match="num_bins"):
        ReliabilityAccumulator(num_bins=0)
    with pytest.raises(ValueError, match="closed"):
        ReliabilityAccumulator(closed="both")
    with pytest.raises(ValueError, match="target"):
        acc.update(probs, np.zeros((3, 3), int))
