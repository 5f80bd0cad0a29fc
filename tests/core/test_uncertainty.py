"""Uncertainty maps, segment-level entropy and rater agreement against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

import napari_seg_uncertainty as nsu
from napari_seg_uncertainty.core.raters import rater_entropy
from napari_seg_uncertainty.core.uncertainty import (
    RaterAgreement,
    agreement,
    agreement_with_raters,
    dice_per_class,
    entropy,
    entropy_agreement,
    expected_entropy,
    mutual_information,
    predictive_uncertainty,
    rank_cases_for_review,
    segment_entropy,
    segments,
    structure_entropy,
    surface_dice_per_class,
    voxelwise,
)


def _random_probs(rng, shape, num_classes, sharpness=2.0) -> np.ndarray:
    z = rng.normal(scale=sharpness, size=(num_classes, *shape))
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def _h(v) -> float:
    return -sum(x * math.log(x) for x in v if x > 0)


def _hb(p: float) -> float:
    return _h([p, 1 - p])


# ------------------------------------------------------------------------------------------------
# entropy and mutual information
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4)])
def test_entropy_matches_loop(shape):
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, shape, 3)
    got_nats = entropy(probs, normalize=False)
    got = entropy(probs)
    for idx in np.ndindex(*shape):
        v = [float(probs[(c, *idx)]) for c in range(3)]
        assert got_nats[idx] == pytest.approx(_h(v), rel=1e-5, abs=1e-7)
        assert got[idx] == pytest.approx(_h(v) / math.log(3), rel=1e-5, abs=1e-7)
    assert got.dtype == np.float32 and got.shape == shape


def test_entropy_edge_cases():
    probs = np.array([[[1.0, 0.25]], [[0.0, 0.25]], [[0.0, 0.5]]], dtype=np.float32)
    h = entropy(probs)
    assert h[0, 0] == 0.0  # 0 ln 0 = 0
    assert h[0, 1] == pytest.approx(_h([0.25, 0.25, 0.5]) / math.log(3), rel=1e-6)
    assert np.all(entropy(np.ones((1, 3, 3), np.float32)) == 0)  # single class
    uniform = np.full((4, 2, 2), 0.25, np.float32)
    np.testing.assert_allclose(entropy(uniform), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="probs"):
        entropy(np.full((2, 2, 2), 0.9, np.float32))
    with pytest.raises(TypeError, match="normalize"):
        entropy(uniform, normalize="yes")


def test_rater_entropy_hand_computed():
    raters = np.array([[[0, 1, 2]], [[0, 1, 1]], [[0, 0, 2]], [[0, 1, 1]]])
    h = rater_entropy(raters, num_classes=3)
    assert h[0, 0] == 0.0
    assert h[0, 1] == pytest.approx(_h([0.25, 0.75]) / math.log(3), rel=1e-6)
    assert h[0, 2] == pytest.approx(_h([0.5, 0.5]) / math.log(3), rel=1e-6)
    with pytest.raises(ValueError, match="raters"):
        rater_entropy(raters, num_classes=2)


def test_mutual_information_matches_loop():
    rng = np.random.default_rng(1)
    members = np.stack([_random_probs(rng, (3, 4), 3) for _ in range(5)])
    u = predictive_uncertainty(members, normalize=False)
    for idx in np.ndindex(3, 4):
        vs = [[float(members[(m, c, *idx)]) for c in range(3)] for m in range(5)]
        mean = [sum(v[c] for v in vs) / 5 for c in range(3)]
        h_mean = _h(mean)
        h_exp = sum(_h(v) for v in vs) / 5
        assert u.predictive_entropy[idx] == pytest.approx(h_mean, rel=1e-5)
        assert u.expected_entropy[idx] == pytest.approx(h_exp, rel=1e-5)
        assert u.mutual_information[idx] == pytest.approx(max(h_mean - h_exp, 0), abs=1e-6)
        assert u.mean_probs[(slice(None), *idx)] == pytest.approx(mean, rel=1e-6)
    normalized = mutual_information(members)
    np.testing.assert_allclose(normalized, u.mutual_information / math.log(3), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(expected_entropy(members), u.expected_entropy / math.log(3), rtol=1e-5)


def test_mutual_information_extremes_and_logits():
    import torch

    agree = np.repeat(np.array([[[[0.3]], [[0.7]]]], dtype=np.float32), 4, axis=0)
    assert float(mutual_information(agree)[0, 0]) == pytest.approx(0.0, abs=1e-7)
    disagree = np.array([[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]], dtype=np.float32)
    assert float(mutual_information(disagree)[0, 0]) == pytest.approx(1.0)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(
        mutual_information(logits, from_logits=True), mutual_information(probs), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="member_probs"):
        mutual_information(np.full((2, 3, 3), 0.5, np.float32))


# ------------------------------------------------------------------------------------------------
# segment-level entropy
# ------------------------------------------------------------------------------------------------


def test_segment_entropy_eq7_by_loop():
    rng = np.random.default_rng(3)
    probs = _random_probs(rng, (6, 7), 4, sharpness=1.0)
    pred = probs.argmax(axis=0)
    got = segment_entropy(probs)
    got_bits = segment_entropy(probs, normalize=True, include_background=True)
    for k in range(4):
        values = [_hb(float(probs[k][idx])) for idx in np.ndindex(6, 7) if pred[idx] == k]
        expected = sum(values) / len(values) if values else float("nan")
        if k == 0:
            assert np.isnan(got[0])
        elif values:
            assert got[k] == pytest.approx(expected, rel=1e-6)
        if values:
            assert got_bits[k] == pytest.approx(expected / math.log(2), rel=1e-6)


def test_segment_entropy_absent_class_and_given_labels():
    probs = np.zeros((3, 1, 4), np.float32)
    probs[0, 0] = [0.6, 0.6, 0.2, 0.1]
    probs[1, 0] = [0.4, 0.4, 0.8, 0.9]
    got = segment_entropy(probs)
    assert np.isnan(got[2])  # class 2 never predicted
    assert got[1] == pytest.approx((_hb(0.8) + _hb(0.9)) / 2, rel=1e-6)
    labels = np.array([[1, 1, 0, 0]])  # e.g. a post-processed prediction
    got_l = segment_entropy(probs, labels=labels)
    assert got_l[1] == pytest.approx(_hb(0.4), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        segment_entropy(probs, labels=np.array([[1, 1, 0, 5]]))


def test_structure_entropy_components_and_connectivity():
    probs = np.zeros((3, 6, 6), np.float32)
    probs[0] = 1.0
    # class-1 blob A (2x2 at top-left, p=0.9) and blob B touching A only diagonally (p=0.6)
    for (y, x), p in {(0, 0): 0.9, (0, 1): 0.9, (1, 0): 0.9, (1, 1): 0.9, (2, 2): 0.6}.items():
        probs[1, y, x], probs[0, y, x] = p, 1 - p
    # class-2 blob (p=0.7) at the bottom right
    for y, x in [(5, 4), (5, 5)]:
        probs[2, y, x], probs[0, y, x] = 0.7, 0.3
    faces = structure_entropy(probs, connectivity=1)
    assert [(r.class_index, r.voxels) for r in faces] == [(1, 1), (2, 2), (1, 4)]
    assert faces[0].mean_entropy == pytest.approx(_hb(0.6), rel=1e-6)
    assert faces[0].centroid == (2.0, 2.0)
    assert faces[1].mean_entropy == pytest.approx(_hb(0.7), rel=1e-6)
    assert faces[1].centroid == (5.0, 4.5)
    assert faces[1].bbox_start == (5, 4) and faces[1].bbox_stop == (6, 6)
    assert faces[2].mean_entropy == pytest.approx(_hb(0.9), rel=1e-6)
    corners = structure_entropy(probs)  # default: full connectivity merges A and B
    merged = [r for r in corners if r.class_index == 1]
    assert len(merged) == 1 and merged[0].voxels == 5
    assert merged[0].mean_entropy == pytest.approx((4 * _hb(0.9) + _hb(0.6)) / 5, rel=1e-6)
    assert merged[0].centroid == pytest.approx(((0 + 0 + 1 + 1 + 2) / 5, (0 + 1 + 0 + 1 + 2) / 5))
    big_only = structure_entropy(probs, connectivity=1, min_voxels=2)
    assert [r.voxels for r in big_only] == [2, 4]
    bits = structure_entropy(probs, connectivity=1, normalize=True)
    assert bits[0].mean_entropy == pytest.approx(_hb(0.6) / math.log(2), rel=1e-6)
    with pytest.raises(ValueError, match="connectivity"):
        structure_entropy(probs, connectivity=3)


def test_structure_entropy_3d_matches_scipy_labelling():
    rng = np.random.default_rng(4)
    probs = _random_probs(rng, (5, 8, 8), 2, sharpness=1.5)
    pred = probs.argmax(axis=0)
    comps, n = ndimage.label(pred == 1, structure=np.ones((3, 3, 3)))
    records = structure_entropy(probs)
    assert len(records) == n
    hb = -(probs[1] * np.log(probs[1]) + (1 - probs[1]) * np.log(1 - probs[1]))
    expected = sorted(
        ((float(hb[comps == i].mean()), int((comps == i).sum())) for i in range(1, n + 1)),
        key=lambda t: (-t[0], -t[1]),
    )
    got = [(r.mean_entropy, r.voxels) for r in records]
    for (e_h, e_n), (g_h, g_n) in zip(expected, got):
        assert g_h == pytest.approx(e_h, rel=1e-5) and g_n == e_n


def test_rank_cases_for_review_orders_by_score_and_puts_empty_last():
    sure = np.array([[[0.02, 0.99]], [[0.98, 0.01]]], dtype=np.float32)
    unsure = np.array([[[0.4, 0.9]], [[0.6, 0.1]]], dtype=np.float32)
    nothing = np.array([[[0.9, 0.8]], [[0.1, 0.2]]], dtype=np.float32)  # no foreground predicted
    rows = rank_cases_for_review({"sure": sure, "empty": nothing, "unsure": unsure})
    assert [r.name for r in rows] == ["unsure", "sure", "empty"]
    assert [r.rank for r in rows] == [1, 2, 3]
    assert rows[0].score == pytest.approx(_hb(0.6), rel=1e-6)
    assert rows[1].score == pytest.approx(_hb(0.98), rel=1e-6)
    assert np.isnan(rows[2].score)
    three = np.zeros((3, 1, 2), np.float32)
    three[1, 0] = [0.6, 0.0]
    three[0, 0] = [0.4, 0.1]
    three[2, 0] = [0.0, 0.9]
    by_max = rank_cases_for_review([three], score="max")
    assert by_max[0].name == "case 0"
    assert by_max[0].score == pytest.approx(max(_hb(0.6), _hb(0.9)), rel=1e-6)
    with pytest.raises(ValueError, match="score"):
        rank_cases_for_review([three], score="median")
    with pytest.raises(ValueError, match="cases\\['bad'\\]"):
        rank_cases_for_review({"bad": np.full((2, 2, 2), 0.9, np.float32)})


# ------------------------------------------------------------------------------------------------
# entropy of the prediction vs entropy of the raters
# ------------------------------------------------------------------------------------------------


def test_entropy_agreement_units():
    rng = np.random.default_rng(5)
    probs = _random_probs(rng, (3, 4, 5), 2, sharpness=1.0)
    raters = rng.integers(0, 2, size=(3, 3, 4, 5))
    h_p = np.zeros((3, 4, 5))
    h_r = np.zeros((3, 4, 5))
    for idx in np.ndindex(3, 4, 5):
        h_p[idx] = _h([float(probs[(0, *idx)]), float(probs[(1, *idx)])]) / math.log(2)
        share = sum(int(raters[(r, *idx)] == 1) for r in range(3)) / 3
        h_r[idx] = _h([share, 1 - share]) / math.log(2)
    vox = entropy_agreement(probs, raters, unit="voxel")
    assert vox.predicted.size == 60
    assert vox.mae == pytest.approx(np.mean(np.abs(h_p - h_r)), rel=1e-5)
    sl = entropy_agreement(probs, raters, unit="slice")
    np.testing.assert_allclose(sl.predicted, h_p.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(sl.raters, h_r.mean(axis=(1, 2)), rtol=1e-5, atol=1e-7)
    img = entropy_agreement(probs, raters, unit="image")
    assert img.predicted[0] == pytest.approx(h_p.mean(), rel=1e-5)
    sub = entropy_agreement(probs, raters, unit="voxel", max_points=10, seed=1)
    assert sub.predicted.size == 10
    again = entropy_agreement(probs, raters, unit="voxel", max_points=10, seed=1)
    np.testing.assert_array_equal(sub.predicted, again.predicted)
    with pytest.raises(ValueError, match="unit='slice'"):
        entropy_agreement(probs[:, 0], raters[:, 0], unit="slice")


# ------------------------------------------------------------------------------------------------
# Dice and surface Dice
# ------------------------------------------------------------------------------------------------


def _numpy_dice(a: np.ndarray, b: np.ndarray, c: int) -> float:
    pa, pb = a == c, b == c
    denominator = pa.sum() + pb.sum()
    return float("nan") if denominator == 0 else 2 * float((pa & pb).sum()) / float(denominator)


def test_dice_per_class_matches_counts():
    rng = np.random.default_rng(6)
    a = rng.integers(0, 3, size=(6, 7, 8))
    b = rng.integers(0, 3, size=(6, 7, 8))
    b[b == 2] = 1  # class 2 only in a -> 0
    got = dice_per_class(a, b, num_classes=4, include_background=True)
    for c in range(3):
        assert got[c] == pytest.approx(_numpy_dice(a, b, c), rel=1e-6)
    assert got[2] == 0.0
    assert np.isnan(got[3])  # absent from both
    assert np.isnan(dice_per_class(a, b, num_classes=4)[0])
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(a, b[:-1], num_classes=4)


def _numpy_surface_dice(a: np.ndarray, b: np.ndarray, c: int, tol: float, spacing) -> float:
    ma, mb = a == c, b == c
    ea = ma & ~ndimage.binary_erosion(ma)
    eb = mb & ~ndimage.binary_erosion(mb)
    if ea.sum() + eb.sum() == 0:
        return float("nan")
    if ea.sum() == 0 or eb.sum() == 0:
        return 0.0
    da = ndimage.distance_transform_edt(~eb, sampling=spacing)[ea]
    db = ndimage.distance_transform_edt(~ea, sampling=spacing)[eb]
    return float(((da <= tol).sum() + (db <= tol).sum()) / (ea.sum() + eb.sum()))


@pytest.mark.parametrize("spacing", [None, (1.0, 0.5)])
def test_surface_dice_matches_edge_distance_computation(spacing):
    a = np.zeros((20, 24), dtype=np.uint8)
    b = np.zeros((20, 24), dtype=np.uint8)
    a[4:12, 5:15] = 1
    b[5:13, 6:18] = 1
    a[15:18, 2:5] = 2  # class 2 only in a
    sampling = spacing or (1.0, 1.0)
    got = surface_dice_per_class(a, b, num_classes=4, tolerance=1.5, spacing=spacing)
    assert np.isnan(got[0])
    assert got[1] == pytest.approx(_numpy_surface_dice(a, b, 1, 1.5, sampling), rel=1e-6)
    assert 0 < got[1] < 1
    assert got[2] == 0.0
    assert np.isnan(got[3])
    loose = surface_dice_per_class(a, b, num_classes=4, tolerance=[0, 10.0, 0, 0], spacing=spacing)
    assert loose[1] == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice_per_class(a, b, num_classes=4, tolerance=[1.0, 2.0])


def test_agreement_with_raters_rows():
    rng = np.random.default_rng(7)
    raters = rng.integers(0, 3, size=(3, 10, 10))
    pred = rng.integers(0, 3, size=(10, 10))
    # majority vote by hand: the most frequent label, lowest label on ties
    vote = np.zeros((10, 10), dtype=int)
    for idx in np.ndindex(10, 10):
        counts = [sum(int(raters[r][idx] == c) for r in range(3)) for c in range(3)]
        vote[idx] = counts.index(max(counts))
    rows = agreement_with_raters(pred, raters, num_classes=3, tolerance=1.0)
    assert [r.reference for r in rows] == ["rater 1"] * 2 + ["rater 2"] * 2 + ["rater 3"] * 2 + [
        "majority vote"
    ] * 2
    refs = [*raters, vote]
    for row in rows:
        ref = refs[[r.reference for r in rows[::2]].index(row.reference)]
        assert row.dice == pytest.approx(_numpy_dice(pred, ref, row.class_index), rel=1e-6)
        assert row.surface_dice == pytest.approx(
            _numpy_surface_dice(pred, ref, row.class_index, 1.0, (1.0, 1.0)), rel=1e-6
        )
    assert all(isinstance(r, RaterAgreement) for r in rows) and nsu.RaterAgreement is RaterAgreement
    fused = agreement_with_raters(pred, raters, num_classes=3, fused=raters[0], fused_name="STAPLE")
    assert fused[-1].reference == "STAPLE" and fused[-1].dice == rows[1].dice
    with pytest.raises(ValueError, match="rater_names"):
        agreement_with_raters(pred, raters, num_classes=3, rater_names=["a"])


def test_docstring_examples_run():
    import doctest

    attempted = 0
    for module in (voxelwise, segments, agreement):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 10


def test_one_rater_entropy_and_no_metric_reexports():
    from napari_seg_uncertainty.core import uncertainty

    assert nsu.rater_entropy is rater_entropy
    for name in ("rater_entropy", "rater_entropy_map", "generalised_energy_distance", "sample_diversity"):
        assert not hasattr(uncertainty, name), name
