"""Calibration metrics against independent, loop-based computations on small hand-made cases."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_seg_uncertainty.core import calibration
from napari_seg_uncertainty.core.calibration import (
    apply_temperature,
    brier_score,
    brier_score_per_class,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    foreground_box_mask,
    negative_log_likelihood,
    reliability_bins,
    thresholded_adaptive_ce,
    thresholded_adaptive_ce_per_class,
)

# ------------------------------------------------------------------------------------------------
# independent reference implementations (plain Python loops over voxels)
# ------------------------------------------------------------------------------------------------


def _voxels(probs: np.ndarray) -> list[list[float]]:
    """Per-voxel probability vectors in C order."""
    c = probs.shape[0]
    flat = probs.reshape(c, -1)
    return [[float(flat[k, i]) for k in range(c)] for i in range(flat.shape[1])]


def _argmax_first(v: list[float]) -> int:
    best = 0
    for k in range(1, len(v)):
        if v[k] > v[best]:
            best = k
    return best


def _bin_of(conf: float, num_bins: int, closed: str) -> int:
    """Bin by direct comparison with the float32 edges k/M."""
    edges = [float(np.float32(k) / np.float32(num_bins)) for k in range(num_bins + 1)]
    conf = min(max(conf, 0.0), 1.0)
    if closed == "right":
        for m in range(1, num_bins + 1):
            if conf <= edges[m]:
                return m - 1
        return num_bins - 1
    for m in range(num_bins - 1, -1, -1):
        if conf >= edges[m]:
            return m
    return 0


def _reference_bins(probs, accuracy_of, num_bins, closed, keep=None):
    """accuracy_of(i, predicted_class) -> accuracy of voxel i."""
    count = [0] * num_bins
    conf_sum = [0.0] * num_bins
    acc_sum = [0.0] * num_bins
    for i, v in enumerate(_voxels(probs)):
        if keep is not None and not keep[i]:
            continue
        k = _argmax_first(v)
        b = _bin_of(v[k], num_bins, closed)
        count[b] += 1
        conf_sum[b] += v[k]
        acc_sum[b] += accuracy_of(i, k)
    return count, conf_sum, acc_sum


def _reference_ece(count, conf_sum, acc_sum) -> float:
    n = sum(count)
    return sum(abs(a / c - s / c) * c / n for c, s, a in zip(count, conf_sum, acc_sum) if c > 0)


def _random_probs(rng, shape, num_classes, sharpness=3.0) -> np.ndarray:
    z = rng.normal(scale=sharpness, size=(num_classes, *shape))
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# reliability bins and ECE
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("closed", ["right", "left"])
@pytest.mark.parametrize("num_bins", [1, 7, 10, 50])
def test_reliability_bins_match_loop_reference_hard_labels(closed, num_bins):
    rng = np.random.default_rng(1)
    probs = _random_probs(rng, (9, 11), 4)
    target = rng.integers(0, 4, size=(9, 11))
    flat_t = target.reshape(-1)
    count, conf_sum, acc_sum = _reference_bins(probs, lambda i, k: float(k == flat_t[i]), num_bins, closed)
    bins = reliability_bins(probs, target, num_bins=num_bins, closed=closed)
    np.testing.assert_array_equal(bins.count, count)
    for b in range(num_bins):
        if count[b]:
            assert bins.confidence[b] == pytest.approx(conf_sum[b] / count[b], rel=1e-6)
            assert bins.accuracy[b] == pytest.approx(acc_sum[b] / count[b], rel=1e-12)
        else:
            assert np.isnan(bins.confidence[b]) and np.isnan(bins.accuracy[b])
    assert bins.expected_calibration_error == pytest.approx(
        _reference_ece(count, conf_sum, acc_sum), rel=1e-6
    )
    assert expected_calibration_error(probs, target, num_bins=num_bins, closed=closed) == pytest.approx(
        _reference_ece(count, conf_sum, acc_sum), rel=1e-6
    )


def test_reliability_bins_3d_and_large_chunks_match_loop_reference():
    rng = np.random.default_rng(2)
    # > one chunk of voxels so the streaming accumulation across chunks is exercised
    probs = _random_probs(rng, (3, 300, 250), 3)
    target = rng.integers(0, 3, size=(3, 300, 250))
    conf = probs.max(axis=0).reshape(-1).astype(np.float64)
    pred = probs.argmax(axis=0).reshape(-1)
    correct = (pred == target.reshape(-1)).astype(float)
    # independent: np.histogram with edges, right-closed handled by negating the values
    idx = np.clip(np.ceil(conf * 10 - 1e-9).astype(int) - 1, 0, 9)
    count = np.array([np.sum(idx == b) for b in range(10)])
    acc = np.array([correct[idx == b].mean() if count[b] else np.nan for b in range(10)])
    bins = reliability_bins(probs, target)
    # random float32 confidences essentially never sit on an edge, so the rounded-edge rule agrees
    np.testing.assert_array_equal(bins.count, count)
    np.testing.assert_allclose(bins.accuracy, acc, rtol=1e-12)
    assert bins.total == probs[0].size


def test_confidence_exactly_one_and_on_bin_edges():
    # voxels with max-probabilities 1.0, 0.5 (tie), 0.4, 0.7 and a mid-bin 0.55
    probs = np.zeros((3, 1, 5), dtype=np.float32)
    probs[0, 0] = [1.0, 0.5, 0.3, 0.7, 0.55]
    probs[1, 0] = [0.0, 0.5, 0.3, 0.3, 0.45]
    probs[2, 0] = [0.0, 0.0, 0.4, 0.0, 0.0]
    assert np.allclose(probs.sum(0), 1)
    target = np.array([[0, 1, 2, 0, 1]])
    # confidences: 1.0 (class 0, correct), 0.5 (tie -> class 0, wrong), 0.4 (class 2, correct),
    # 0.7 (class 0, correct), 0.55 (class 0, wrong)
    right = reliability_bins(probs, target, num_bins=10, closed="right")
    # right-closed: 1.0 -> bin 9, 0.5 -> (0.4, 0.5] bin 4, 0.4 -> bin 3, 0.7 -> bin 6, 0.55 -> bin 5
    expected_right = np.zeros(10, dtype=int)
    expected_right[[9, 4, 3, 6, 5]] = 1
    np.testing.assert_array_equal(right.count, expected_right)
    assert right.accuracy[4] == 0.0 and right.accuracy[3] == 1.0 and right.accuracy[9] == 1.0
    left = reliability_bins(probs, target, num_bins=10, closed="left")
    # left-closed: 1.0 -> last bin 9, 0.5 -> [0.5, 0.6) bin 5 (with 0.55), 0.4 -> bin 4, 0.7 -> bin 7
    expected_left = np.zeros(10, dtype=int)
    expected_left[[9, 4, 7]] = 1
    expected_left[5] = 2
    np.testing.assert_array_equal(left.count, expected_left)
    assert left.accuracy[5] == 0.0


def test_float32_edge_value_is_on_the_edge():
    # np.float32(0.3) is slightly above 0.3; it must still count as sitting on the edge 0.3
    probs = np.zeros((4, 1, 2), dtype=np.float32)
    probs[:, 0, 0] = [np.float32(0.3), 0.25, 0.25, 0.2]
    probs[:, 0, 1] = [0.3, 0.3, 0.2, 0.2]  # tie, class 0 wins
    probs[3, 0, 0] = 1 - probs[:3, 0, 0].sum()
    target = np.zeros((1, 2), dtype=int)
    right = reliability_bins(probs, target, num_bins=10, closed="right")
    left = reliability_bins(probs, target, num_bins=10, closed="left")
    assert right.count[2] == 2  # (0.2, 0.3]
    assert left.count[3] == 2  # [0.3, 0.4)


def test_empty_bins_are_nan_and_ignored_by_ece():
    probs = np.array([[[0.95, 0.95, 0.95, 0.95]], [[0.05, 0.05, 0.05, 0.05]]], dtype=np.float32)
    target = np.array([[0, 0, 0, 1]])
    bins = reliability_bins(probs, target, num_bins=5)
    assert bins.count.tolist() == [0, 0, 0, 0, 4]
    assert np.isnan(bins.accuracy[:4]).all()
    assert bins.accuracy[4] == 0.75
    # hand computation: one bin, |0.75 - 0.95|
    assert bins.expected_calibration_error == pytest.approx(0.2, abs=1e-6)
    assert bins.maximum_calibration_error == pytest.approx(0.2, abs=1e-6)
    records = bins.to_records()
    assert len(records) == 5 and records[4]["count"] == 4 and records[4]["upper"] == 1.0


def test_single_class_is_perfectly_calibrated():
    probs = np.ones((1, 4, 4), dtype=np.float32)
    target = np.zeros((4, 4), dtype=np.uint8)
    bins = reliability_bins(probs, target)
    assert bins.count[-1] == 16 and bins.accuracy[-1] == 1.0
    assert bins.expected_calibration_error == 0.0
    assert thresholded_adaptive_ce(probs, target) == 0.0
    assert negative_log_likelihood(probs, target) == 0.0
    assert brier_score(probs, target) == 0.0


def test_soft_target_accuracy_is_mean_over_raters():
    rng = np.random.default_rng(3)
    probs = _random_probs(rng, (8, 8), 3)
    raters = rng.integers(0, 3, size=(4, 8, 8))
    soft_bins = reliability_bins(probs, raters, num_bins=10)
    per_rater = [reliability_bins(probs, r, num_bins=10) for r in raters]
    filled = soft_bins.count > 0
    # bins depend on the probabilities only; accuracy is linear in the target
    expected = np.mean([b.accuracy for b in per_rater], axis=0)
    np.testing.assert_allclose(soft_bins.accuracy[filled], expected[filled], rtol=1e-6)
    # explicit soft labels (rater mean written out by hand) give the same result as the rater stack
    soft = np.stack([(raters == c).mean(axis=0) for c in range(3)]).astype(np.float32)
    explicit = reliability_bins(probs, soft, num_bins=10)
    np.testing.assert_allclose(explicit.accuracy[filled], soft_bins.accuracy[filled], rtol=1e-6)


def test_mask_equals_metric_on_selected_voxels():
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, (10, 12), 3)
    target = rng.integers(0, 3, size=(10, 12))
    mask = rng.random((10, 12)) < 0.4
    sub_probs = probs[:, mask][:, None, :]  # (C, 1, n) 2-D image of the selected voxels
    sub_target = target[mask][None, :]
    assert expected_calibration_error(probs, target, mask=mask) == pytest.approx(
        expected_calibration_error(sub_probs, sub_target), rel=1e-9
    )
    assert negative_log_likelihood(probs, target, mask=mask) == pytest.approx(
        negative_log_likelihood(sub_probs, sub_target), rel=1e-9
    )
    assert brier_score(probs, target, mask=mask) == pytest.approx(
        brier_score(sub_probs, sub_target), rel=1e-9
    )
    assert thresholded_adaptive_ce(probs, target, mask=mask) == pytest.approx(
        thresholded_adaptive_ce(sub_probs, sub_target), rel=1e-9
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_classes=st.integers(1, 5),
    num_bins=st.integers(1, 40),
    closed=st.sampled_from(["right", "left"]),
)
def test_ece_property_matches_reference(seed, num_classes, num_bins, closed):
    rng = np.random.default_rng(seed)
    # quantised probabilities put many confidences exactly on bin edges
    raw = rng.integers(0, 5, size=(num_classes, 3, 4)).astype(np.float32) + 1e-3 * (rng.random() < 0.5)
    raw[0] += 1
    probs = (raw / raw.sum(axis=0)).astype(np.float32)
    target = rng.integers(0, num_classes, size=(3, 4))
    flat_t = target.reshape(-1)
    count, conf_sum, acc_sum = _reference_bins(probs, lambda i, k: float(k == flat_t[i]), num_bins, closed)
    bins = reliability_bins(probs, target, num_bins=num_bins, closed=closed)
    np.testing.assert_array_equal(bins.count, count)
    ece = bins.expected_calibration_error
    assert ece == pytest.approx(_reference_ece(count, conf_sum, acc_sum), abs=1e-7)
    assert 0.0 <= ece <= 1.0


# ------------------------------------------------------------------------------------------------
# TACE
# ------------------------------------------------------------------------------------------------


def _reference_class_tace(values: list[float], labels: list[float], num_bins: int) -> float:
    """Equal-count bins; bin accuracies averaged over every ordering of tied values (enumerated)."""
    n = len(values)
    r = min(num_bins, n)
    sizes = [n // r + (1 if i < n % r else 0) for i in range(r)]
    groups: dict[float, list[float]] = {}
    for v, y in zip(values, labels):
        groups.setdefault(v, []).append(y)
    distinct = sorted(groups)
    orderings = [list(itertools.permutations(groups[v])) for v in distinct]
    acc_total = [0.0] * r
    conf = None
    n_orderings = 0
    for combo in itertools.product(*orderings):
        seq_v = [v for v, ys in zip(distinct, combo) for _ in ys]
        seq_y = [y for ys in combo for y in ys]
        start = 0
        confs = []
        for b, size in enumerate(sizes):
            acc_total[b] += sum(seq_y[start : start + size]) / size
            confs.append(sum(seq_v[start : start + size]) / size)
            start += size
        conf = confs
        n_orderings += 1
    accs = [a / n_orderings for a in acc_total]
    return sum(abs(a - c) for a, c in zip(accs, conf)) / r


def test_tace_matches_reference_with_distinct_values():
    rng = np.random.default_rng(5)
    probs = _random_probs(rng, (5, 6), 3, sharpness=1.0)
    target = rng.integers(0, 3, size=(5, 6))
    flat_t = target.reshape(-1)
    expected = []
    for k in range(3):
        vals = [float(v) for v in probs[k].reshape(-1)]
        keep = [i for i, v in enumerate(vals) if v > 1e-3]
        expected.append(
            _reference_class_tace([vals[i] for i in keep], [float(flat_t[i] == k) for i in keep], 4)
        )
    got = thresholded_adaptive_ce_per_class(probs, target, num_bins=4)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert thresholded_adaptive_ce(probs, target, num_bins=4) == pytest.approx(np.mean(expected), rel=1e-9)


def test_tace_ties_across_bin_boundaries_average_over_orderings():
    # class-1 probabilities with big tie groups (0.5 x4, 1.0 x3) that straddle equal-count boundaries
    p1 = np.array([0.2, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 0.9], dtype=np.float32)
    probs = np.stack([1 - p1, p1])[:, None, :]
    target = np.array([[1, 0, 1, 1, 0, 1, 0, 1, 1]])
    got = thresholded_adaptive_ce_per_class(probs, target, num_bins=4)
    for k in range(2):
        vals = [float(v) for v in probs[k, 0]]
        keep = [i for i, v in enumerate(vals) if v > 1e-3]
        ref = _reference_class_tace([vals[i] for i in keep], [float(target[0, i] == k) for i in keep], 4)
        assert got[k] == pytest.approx(ref, rel=1e-9)


def test_tace_is_invariant_to_voxel_order():
    rng = np.random.default_rng(6)
    q = rng.integers(0, 4, size=(2, 40)).astype(np.float32) / 4  # heavy ties
    probs = np.stack([q[0] * 0.5, 1 - q[0] * 0.5])[:, None, :].astype(np.float32)
    target = rng.integers(0, 2, size=(1, 40))
    perm = rng.permutation(40)
    a = thresholded_adaptive_ce(probs, target, num_bins=6)
    b = thresholded_adaptive_ce(probs[:, :, perm], target[:, perm], num_bins=6)
    assert a == pytest.approx(b, rel=1e-12)


def test_tace_empty_class_and_threshold():
    # class 2 never exceeds the threshold -> left out of the mean; fewer values than bins -> one per value
    probs = np.zeros((3, 1, 3), dtype=np.float32)
    probs[0, 0] = [0.9, 0.2, 0.6]
    probs[1, 0] = [0.1, 0.8, 0.4]
    target = np.array([[0, 1, 1]])
    per_class = thresholded_adaptive_ce_per_class(probs, target, num_bins=10)
    assert np.isnan(per_class[2])
    # class 0: values 0.9 (y=1), 0.2 (y=0), 0.6 (y=0) -> one bin each: gaps 0.1, 0.2, 0.6
    assert per_class[0] == pytest.approx((0.1 + 0.2 + 0.6) / 3, abs=1e-6)
    # class 1: 0.1 (y=0), 0.8 (y=1), 0.4 (y=1) -> gaps 0.1, 0.2, 0.6
    assert per_class[1] == pytest.approx((0.1 + 0.2 + 0.6) / 3, abs=1e-6)
    assert thresholded_adaptive_ce(probs, target, num_bins=10) == pytest.approx(0.3, abs=1e-6)
    # a threshold above every probability leaves nothing: NaN
    assert math.isnan(thresholded_adaptive_ce(probs, target, threshold=0.95))


def test_tace_soft_target_uses_soft_indicator():
    p1 = np.array([0.1, 0.3, 0.6, 0.9], dtype=np.float32)
    probs = np.stack([1 - p1, p1])[:, None, :]
    raters = np.array([[[0, 0, 1, 1]], [[0, 1, 1, 1]], [[1, 0, 0, 1]]])
    soft1 = (raters == 1).mean(axis=0)[0]
    got = thresholded_adaptive_ce_per_class(probs, raters, num_bins=2)
    # class 1, two bins of two values: {0.1, 0.3} and {0.6, 0.9}
    gap1 = abs(np.mean(soft1[:2]) - np.mean(p1[:2])) + abs(np.mean(soft1[2:]) - np.mean(p1[2:]))
    assert got[1] == pytest.approx(gap1 / 2, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# NLL and Brier
# ------------------------------------------------------------------------------------------------


def test_nll_hand_computed_and_eps_clipping():
    probs = np.array([[[0.5, 0.25, 1.0]], [[0.5, 0.75, 0.0]]], dtype=np.float32)
    target = np.array([[0, 1, 1]])
    expected = -(math.log(0.5) + math.log(0.75) + math.log(1e-7)) / 3
    assert negative_log_likelihood(probs, target) == pytest.approx(expected, rel=1e-6)
    assert negative_log_likelihood(probs, target, eps=1e-3) == pytest.approx(
        -(math.log(0.5) + math.log(0.75) + math.log(1e-3)) / 3, rel=1e-6
    )


def test_nll_soft_target_is_cross_entropy():
    rng = np.random.default_rng(7)
    probs = _random_probs(rng, (4, 5), 3, sharpness=1.0)
    raters = rng.integers(0, 3, size=(3, 4, 5))
    total = 0.0
    for i, v in enumerate(_voxels(probs)):
        yx = np.unravel_index(i, (4, 5))
        for k in range(3):
            y = sum(int(raters[r][yx] == k) for r in range(3)) / 3
            total -= y * math.log(max(v[k], 1e-7))
    assert negative_log_likelihood(probs, raters) == pytest.approx(total / 20, rel=1e-6)


def test_brier_reductions_match_loops():
    rng = np.random.default_rng(8)
    probs = _random_probs(rng, (3, 7), 4, sharpness=1.0)
    target = rng.integers(0, 4, size=(3, 7))
    flat_t = target.reshape(-1)
    per_class = [0.0] * 4
    for i, v in enumerate(_voxels(probs)):
        for k in range(4):
            per_class[k] += (v[k] - float(flat_t[i] == k)) ** 2
    per_class = [s / 21 for s in per_class]
    np.testing.assert_allclose(brier_score_per_class(probs, target), per_class, rtol=1e-6)
    assert brier_score(probs, target) == pytest.approx(sum(per_class) / 4, rel=1e-6)
    assert brier_score(probs, target, reduction="sum") == pytest.approx(sum(per_class), rel=1e-6)


def test_brier_against_raters_is_the_expectation_over_raters():
    probs = np.array([[[0.5, 0.9]], [[0.5, 0.1]]], dtype=np.float32)
    raters = np.array([[[0, 0]], [[1, 0]]])  # rater mean: voxel 0 = (0.5, 0.5), voxel 1 = (1, 0)
    per_rater = [brier_score(probs, r) for r in raters]
    # voxel 0: 0.25 against either rater; voxel 1: (0.1^2 + 0.1^2) / 2 = 0.01; mean over raters and voxels
    assert brier_score(probs, raters) == pytest.approx(np.mean(per_rater), abs=1e-7)
    assert brier_score(probs, raters) == pytest.approx(0.13, abs=1e-7)
    # the rater-mean variant, by name: voxel 0 matches the mean exactly
    assert brier_score(probs, raters, rater_average="target") == pytest.approx(0.005, abs=1e-7)
    per_class_mean = brier_score_per_class(probs, raters, rater_average="target")
    np.testing.assert_allclose(per_class_mean, [0.005, 0.005], atol=1e-7)
    np.testing.assert_allclose(
        brier_score_per_class(probs, raters), np.mean([brier_score_per_class(probs, r) for r in raters], axis=0),
        atol=1e-7,
    )


def test_brier_issue_example_and_random_raters_match_mean_over_raters():
    half = np.array([[[0.5]], [[0.5]]], np.float32)
    raters = np.array([[[0]], [[1]]])
    assert brier_score(half, raters, target_kind="raters") == pytest.approx(0.25)
    assert brier_score(half, raters, target_kind="raters", rater_average="target") == 0.0
    rng = np.random.default_rng(11)
    probs = _random_probs(rng, (5, 6), 3, sharpness=1.0)
    stack = rng.integers(0, 3, size=(5, 5, 6))
    for reduction in ("mean", "sum"):
        expected = np.mean([brier_score(probs, r, reduction=reduction) for r in stack])
        assert brier_score(probs, stack, reduction=reduction) == pytest.approx(expected, rel=1e-6)
    summary = calibration_summary(probs, stack)
    assert summary.brier == pytest.approx(np.mean([brier_score(probs, r) for r in stack]), rel=1e-6)
    assert calibration_summary(probs, stack, rater_average="target").brier == pytest.approx(
        brier_score(probs, stack, rater_average="target"), rel=1e-12
    )


# ------------------------------------------------------------------------------------------------
# summary, validation
# ------------------------------------------------------------------------------------------------


def test_calibration_summary_agrees_with_the_functions():
    rng = np.random.default_rng(9)
    probs = _random_probs(rng, (6, 6), 3)
    target = rng.integers(0, 3, size=(6, 6))
    s = calibration_summary(probs, target, num_bins=8, tace_num_bins=5)
    assert s.ece == pytest.approx(expected_calibration_error(probs, target, num_bins=8))
    assert s.tace == pytest.approx(thresholded_adaptive_ce(probs, target, num_bins=5))
    assert s.nll == pytest.approx(negative_log_likelihood(probs, target))
    assert s.brier == pytest.approx(brier_score(probs, target))
    assert s.voxels == 36 and set(s.to_dict()) == {"ece", "tace", "nll", "brier", "voxels"}


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"probs": np.full((2, 3, 3), 0.7, np.float32)}, ValueError, ["probs", "sum to 1"]),
        ({"probs": np.ones((2, 3, 3), np.int64)}, TypeError, ["probs", "floating"]),
        ({"probs": np.full((2, 3, 3), np.nan, np.float32)}, ValueError, ["probs", "NaN"]),
        ({"probs": np.ones((3, 3), np.float32)}, ValueError, ["probs", "(C, Y, X)"]),
        ({"target": np.full((3, 3), 5)}, ValueError, ["target", "label 5"]),
        ({"target": np.zeros((4, 4), int)}, ValueError, ["target", "shape"]),
        ({"mask": np.zeros((3, 3), bool)}, ValueError, ["mask", "no voxel"]),
        ({"mask": np.ones((2, 2), bool)}, ValueError, ["mask", "(3, 3)"]),
        ({"num_bins": 0}, ValueError, ["num_bins", "0"]),
        ({"num_bins": 2.5}, TypeError, ["num_bins"]),
        ({"closed": "both"}, ValueError, ["closed", "both"]),
        ({"target": "labels"}, TypeError, ["target"]),
    ],
)
def test_reliability_bins_validation(kwargs, error, words):
    args = {"probs": np.full((2, 3, 3), 0.5, np.float32), "target": np.zeros((3, 3), int)}
    args.update(kwargs)
    with pytest.raises(error) as info:
        reliability_bins(**args)
    for word in words:
        assert word in str(info.value)


def test_other_metric_validation():
    probs = np.full((2, 3, 3), 0.5, np.float32)
    target = np.zeros((3, 3), int)
    with pytest.raises(ValueError, match="threshold"):
        thresholded_adaptive_ce(probs, target, threshold=1.0)
    with pytest.raises(ValueError, match="reduction"):
        brier_score(probs, target, reduction="median")
    with pytest.raises(ValueError, match="eps"):
        negative_log_likelihood(probs, target, eps=2.0)
    with pytest.raises(ValueError, match="soft labels with 3 classes"):
        reliability_bins(probs, np.full((3, 3, 3), 1 / 3, np.float32))


@pytest.mark.parametrize(
    "metric",
    [
        reliability_bins, expected_calibration_error, thresholded_adaptive_ce, thresholded_adaptive_ce_per_class,
        negative_log_likelihood, brier_score, brier_score_per_class, calibration_summary,
        calibration.average_calibration_error, calibration.l2_calibration_error,
        calibration.classwise_calibration_error, calibration.ReliabilityAccumulator().update,
    ],
)
@pytest.mark.parametrize(("value", "words"), [(0.7, "sum to 1"), (np.nan, "NaN"), (1.5, "[0, 1]")])
def test_every_entry_point_checks_the_probabilities(metric, value, words):
    probs = np.full((2, 40, 30), 0.5, np.float32)
    probs[:, 37, 29] = value  # one voxel near the end, on a mask's excluded side too
    mask = np.zeros((40, 30), bool)
    mask[:10] = True
    with pytest.raises(ValueError, match=re.escape(words)):
        metric(probs, np.zeros((40, 30), int), mask=mask)


def test_calibration_summary_without_the_value_check_gives_the_same_numbers():
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, (9, 7), 3)
    target = rng.integers(0, 3, size=(2, 9, 7))
    mask = rng.random((9, 7)) < 0.6
    checked = calibration_summary(probs, target, mask=mask, num_bins=6)
    trusted = calibration_summary(probs, target, mask=mask, num_bins=6, check_values=False)
    assert checked.to_dict() == trusted.to_dict()
    np.testing.assert_array_equal(checked.brier_per_class, trusted.brier_per_class)
    np.testing.assert_array_equal(checked.bins.count, trusted.bins.count)
    with pytest.raises(TypeError, match="check_values"):
        calibration_summary(probs, target, check_values="no")


# ------------------------------------------------------------------------------------------------
# foreground bounding box
# ------------------------------------------------------------------------------------------------


def test_foreground_box_mask_2d_physical_margin():
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[5:8, 10:12] = 1
    mask = foreground_box_mask(labels, spacing=(2.0, 0.5), in_plane_margin=3.0)
    # margin: ceil(3/2)=2 rows, ceil(3/0.5)=6 columns
    expected = np.zeros_like(mask)
    expected[3:10, 4:18] = True
    np.testing.assert_array_equal(mask, expected)


def test_foreground_box_mask_3d_slices_and_per_class_union():
    labels = np.zeros((10, 12, 12), dtype=np.uint8)
    labels[4, 1, 1] = 1
    labels[5, 9, 9] = 2
    per_class = foreground_box_mask(labels, in_plane_margin=1, slice_margin=2)
    expected = np.zeros_like(per_class)
    expected[2:7, 0:3, 0:3] = True
    expected[3:8, 8:11, 8:11] = True
    np.testing.assert_array_equal(per_class, expected)
    single = foreground_box_mask(labels, in_plane_margin=1, slice_margin=2, per_class=False)
    expected_single = np.zeros_like(single)
    expected_single[2:8, 0:11, 0:11] = True
    np.testing.assert_array_equal(single, expected_single)


def test_foreground_box_mask_without_foreground_raises():
    with pytest.raises(ValueError, match="no foreground"):
        foreground_box_mask(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="slice_margin"):
        foreground_box_mask(np.ones((4, 4, 4), dtype=np.uint8), slice_margin=-1)


# ------------------------------------------------------------------------------------------------
# temperature scaling
# ------------------------------------------------------------------------------------------------


def _nll_at_temperature(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    z = logits.reshape(logits.shape[0], -1) / t
    lse = np.log(np.sum(np.exp(z - z.max(axis=0)), axis=0)) + z.max(axis=0)
    return float(np.mean(lse - z[labels.reshape(-1), np.arange(z.shape[1])]))


def test_fit_temperature_minimises_nll_against_grid_search():
    rng = np.random.default_rng(10)
    logits = rng.normal(scale=3.0, size=(3, 30, 30))
    # labels drawn from a softened version of the logits: the model is over-confident
    probs_true = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=0)
    u = rng.random((30, 30))
    labels = (u[None] < np.cumsum(probs_true, axis=0)).argmax(axis=0)
    t = fit_temperature(logits, labels)
    grid = np.linspace(0.5, 6.0, 2201)
    nll = [_nll_at_temperature(logits, labels, g) for g in grid]
    best = grid[int(np.argmin(nll))]
    assert abs(t - best) <= 0.005
    assert _nll_at_temperature(logits, labels, t) <= min(nll) + 1e-9


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(11)
    logits = rng.normal(scale=4.0, size=(4, 200, 200))
    probs = apply_temperature(logits, temperature=1.7).astype(np.float64)
    labels = (rng.random((200, 200))[None] < np.cumsum(probs, axis=0)).argmax(axis=0)
    assert fit_temperature(logits, labels) == pytest.approx(1.7, rel=0.05)
    # subsampling with a seed is reproducible
    a = fit_temperature(logits, labels, max_voxels=5000, seed=3)
    assert a == fit_temperature(logits, labels, max_voxels=5000, seed=3)


def test_fit_temperature_hits_bounds_and_soft_target():
    logits = np.zeros((2, 4, 4))
    logits[0] = 5.0
    labels = np.zeros((4, 4), dtype=int)  # always right: wants T -> 0
    assert fit_temperature(logits, labels, bounds=(0.1, 10.0)) == 0.1
    soft = np.full((2, 4, 4), 0.5, dtype=np.float32)  # coin flips: wants T -> inf
    assert fit_temperature(logits, soft, bounds=(0.1, 10.0)) == 10.0
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, labels, bounds=(2.0, 1.0))
    with pytest.raises(TypeError, match="logits"):
        fit_temperature(np.zeros((2, 4, 4), dtype=int), labels)


def test_apply_temperature_is_softmax_of_scaled_logits():
    import torch

    rng = np.random.default_rng(12)
    logits = rng.normal(size=(3, 5, 5))
    out = apply_temperature(logits, temperature=0.7)
    expected = torch.softmax(torch.from_numpy(logits) / 0.7, dim=0).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, temperature=0.0)


def test_docstring_examples_run():
    import doctest
    import importlib
    import pkgutil

    from napari_seg_uncertainty.core import calibration

    attempted = 0
    for info in pkgutil.iter_modules(calibration.__path__):
        module = importlib.import_module(f"{calibration.__name__}.{info.name}")
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, info.name
        attempted += result.attempted
    assert attempted > 10
