"""evaluate_case: every number against a direct computation, the project's own functions or a library."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from torchmetrics.functional.classification import multiclass_calibration_error

from napari_seg_uncertainty.core.calibration import (
    brier_score,
    brier_score_per_class,
    expected_calibration_error,
    foreground_box_mask,
    negative_log_likelihood,
    reliability_bins,
    thresholded_adaptive_ce,
)
from napari_seg_uncertainty.core.evaluation import CaseEvaluation, evaluate_case
from napari_seg_uncertainty.core.labels import majority_vote, rater_mean, staple
from napari_seg_uncertainty.core.ssn.metrics import generalized_energy_distance, sample_diversity
from napari_seg_uncertainty.core.uncertainty.agreement import dice_per_class, surface_dice_per_class
from napari_seg_uncertainty.core.uncertainty.segments import segment_entropy

SPACING_3D = (2.5, 0.8, 1.2)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def _case(shape=(6, 12, 10), num_classes=3, raters=3, seed=0):
    """Blobby rater maps and probabilities that roughly follow them (with errors)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, dtype=float)[:, None] / 2
    stack = []
    for _ in range(raters):
        lab = np.zeros(shape, dtype=np.uint8)
        for c in range(1, num_classes):
            offset = centre[:, 0] + rng.normal(scale=0.8, size=len(shape)) + (c - 1) * np.array(shape) / 5
            dist = np.sqrt(sum((g - o) ** 2 for g, o in zip(grid, offset)))
            lab[dist < min(shape) / 3.5] = c
        stack.append(lab)
    stack = np.stack(stack)
    logits = 3.0 * np.eye(num_classes)[stack[0]].transpose(-1, *range(len(shape))) + rng.normal(
        scale=1.2, size=(num_classes, *shape)
    )
    return _softmax(logits), stack


def _monai_onehot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels == c for c in range(num_classes)]).astype(np.float32))[None]


def test_overlap_metrics_match_numpy_and_monai_on_anisotropic_3d():
    probs, raters = _case()
    result = evaluate_case(probs, raters, spacing=SPACING_3D, tolerance_mm=1.5, reference="majority")
    pred = probs.argmax(axis=0)
    ref = majority_vote(raters, num_classes=3)
    for c in (1, 2):
        p, r = pred == c, ref == c
        assert result.per_class["dice"][c] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    nsd = compute_surface_dice(
        _monai_onehot(pred, 3), _monai_onehot(ref, 3), class_thresholds=[1.5] * 3, include_background=True,
        spacing=list(SPACING_3D),
    )[0].numpy()
    hd = compute_hausdorff_distance(
        _monai_onehot(pred, 3), _monai_onehot(ref, 3), include_background=True, percentile=95,
        spacing=list(SPACING_3D),
    )[0].numpy()
    np.testing.assert_allclose(result.per_class["surface_dice"][1:], nsd[1:], rtol=1e-6)
    np.testing.assert_allclose(result.per_class["hd95"][1:], hd[1:], rtol=1e-6)
    assert np.isnan(result.per_class["dice"][0]) and np.isnan(result.per_class["hd95"][0])
    # the same numbers as the project's MONAI wrappers (evaluate_case scores each class on its box)
    np.testing.assert_allclose(result.per_class["dice"], dice_per_class(pred, ref, num_classes=3), equal_nan=True)
    project_nsd = surface_dice_per_class(pred, ref, num_classes=3, tolerance=1.5, spacing=SPACING_3D)
    np.testing.assert_allclose(result.per_class["surface_dice"], project_nsd, rtol=1e-6, equal_nan=True)
    # spacing matters: the same maps in voxels give other distances
    in_voxels = evaluate_case(probs, raters, tolerance_mm=1.5)
    assert not np.allclose(in_voxels.per_class["hd95"][1:], result.per_class["hd95"][1:])


def test_per_rater_values_and_their_mean():
    probs, raters = _case(seed=1)
    result = evaluate_case(probs, raters, spacing=SPACING_3D)
    pred = probs.argmax(axis=0)
    assert result.per_rater["dice"].shape == (3, 3)
    for i, rater in enumerate(raters):
        for c in (1, 2):
            p, r = pred == c, rater == c
            assert result.per_rater["dice"][i, c] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
        hd = compute_hausdorff_distance(
            _monai_onehot(pred, 3), _monai_onehot(rater, 3), include_background=True, percentile=95,
            spacing=list(SPACING_3D),
        )[0].numpy()
        np.testing.assert_allclose(result.per_rater["hd95"][i, 1:], hd[1:], rtol=1e-6)
    for name in ("dice", "surface_dice", "hd95"):
        np.testing.assert_allclose(result.per_class[f"{name}_rater_mean"][1:], result.per_rater[name][:, 1:].mean(0))


@pytest.mark.parametrize("reference", ["staple", "majority", "mean"])
def test_reference_choice(reference):
    probs, raters = _case(shape=(14, 12), seed=2)
    result = evaluate_case(probs, raters, reference=reference)
    fused = {
        "staple": lambda: staple(raters, num_classes=3).labels,
        "majority": lambda: majority_vote(raters, num_classes=3),
        "mean": lambda: rater_mean(raters, num_classes=3).argmax(axis=0),
    }[reference]()
    pred = probs.argmax(axis=0)
    p, r = pred == 1, fused == 1
    assert result.reference == reference
    assert result.per_class["dice"][1] == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
    assert result.scalars["nll_reference_volume"] == pytest.approx(negative_log_likelihood(probs, fused))
    np.testing.assert_array_equal(result.reference_labels, fused)
    assert not any("reference_labels" in str(row) for row in result.rows())
    assert "reference_labels" not in result.to_dict()


def test_calibration_matches_project_functions_and_torchmetrics():
    probs, raters = _case(shape=(16, 14), seed=3)
    result = evaluate_case(probs, raters, num_bins=10)
    soft = rater_mean(raters, num_classes=3)
    fused = majority_vote(raters, num_classes=3)
    s = result.scalars
    assert s["ece_raters_volume"] == pytest.approx(expected_calibration_error(probs, soft, num_bins=10))
    assert s["mce_raters_volume"] == pytest.approx(reliability_bins(probs, soft).maximum_calibration_error)
    assert s["tace_raters_volume"] == pytest.approx(thresholded_adaptive_ce(probs, soft, num_bins=10))
    assert s["nll_raters_volume"] == pytest.approx(negative_log_likelihood(probs, soft))
    assert s["brier_raters_volume"] == pytest.approx(brier_score(probs, raters, rater_average="target"))
    np.testing.assert_allclose(result.per_class["brier_raters_volume"], brier_score_per_class(probs, soft))
    # against the hard reference: torchmetrics has ECE and MCE (its bins are [lo, hi); ours (lo, hi],
    # the same unless a confidence sits on an edge, which random float32 values do not)
    preds = torch.from_numpy(probs.reshape(3, -1).T.copy())
    target = torch.from_numpy(fused.reshape(-1).astype(np.int64))
    for norm, key in (("l1", "ece"), ("max", "mce")):
        peer = float(multiclass_calibration_error(preds, target, num_classes=3, n_bins=10, norm=norm))
        assert s[f"{key}_reference_volume"] == pytest.approx(peer, rel=1e-5, abs=1e-7)
    nll = float(torch.nn.functional.nll_loss(torch.log(preds.clamp_min(1e-7)), target))
    assert s["nll_reference_volume"] == pytest.approx(nll, rel=1e-5)
    onehot = np.eye(3)[fused].transpose(2, 0, 1)
    assert s["brier_reference_volume"] == pytest.approx(np.mean((probs - onehot) ** 2), rel=1e-5)


def test_box_restriction_equals_a_manual_crop():
    rng = np.random.default_rng(4)
    shape = (8, 20, 18)
    raters = np.zeros((2, *shape), dtype=np.uint8)
    raters[0, 3:5, 6:10, 5:9] = 1
    raters[1, 3:6, 7:11, 5:10] = 1  # one class: the per-class boxes are one box
    probs = _softmax(rng.normal(scale=2.0, size=(3, *shape)))
    # 1 mm in-plane at 0.5 mm = 2 voxels; 2 slices out of plane (Mehrtash): z 1:8, y 4:13, x 3:12
    result = evaluate_case(probs, raters, spacing=(3.0, 0.5, 0.5), box_margin_mm=1.0, box_slice_margin=2)
    crop = (slice(None), slice(1, 8), slice(4, 13), slice(3, 12))
    soft = rater_mean(raters, num_classes=3)[crop]
    fused = majority_vote(raters, num_classes=3)[crop[1:]]
    s = result.scalars
    assert s["ece_raters_box"] == pytest.approx(expected_calibration_error(probs[crop], soft))
    assert s["nll_raters_box"] == pytest.approx(negative_log_likelihood(probs[crop], soft))
    assert s["brier_reference_box"] == pytest.approx(brier_score(probs[crop], fused))
    assert s["tace_reference_box"] == pytest.approx(thresholded_adaptive_ce(probs[crop], fused))
    hd = -(probs * np.log(probs)).sum(0) / np.log(3)
    freq = rater_mean(raters, num_classes=3).astype(np.float64)
    hr = -(freq * np.log(np.where(freq > 0, freq, 1))).sum(0) / np.log(3)
    assert s["entropy_mae_box"] == pytest.approx(np.abs(hd - hr)[crop[1:]].mean(), rel=1e-4)
    assert s["ece_raters_box"] != pytest.approx(s["ece_raters_volume"])


def test_entropy_mae_segment_entropy_and_uncertainty_error_overlap_vs_numpy():
    probs, raters = _case(shape=(5, 8, 9), seed=5)
    result = evaluate_case(probs, raters, uncertainty_threshold=0.4)
    h = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(0) / np.log(3)
    freq = rater_mean(raters, num_classes=3).astype(np.float64)
    hr = -(freq * np.log(np.where(freq > 0, freq, 1))).sum(0) / np.log(3)
    assert result.scalars["entropy_mae_volume"] == pytest.approx(np.abs(h - hr).mean(), rel=1e-4)
    pred = probs.argmax(0)
    for c in (1, 2):
        q = probs[c][pred == c].astype(np.float64)
        expected = -np.mean(q * np.log(q) + (1 - q) * np.log(1 - q))
        assert result.per_class["segment_entropy"][c] == pytest.approx(expected, rel=1e-4)
    np.testing.assert_allclose(result.per_class["segment_entropy"], segment_entropy(probs), equal_nan=True)
    assert result.structures and result.structures[0].mean_entropy >= result.structures[-1].mean_entropy
    u, e = h >= 0.4, pred != majority_vote(raters, num_classes=3)
    assert result.scalars["uncertainty_error_dice"] == pytest.approx(2 * (u & e).sum() / (u.sum() + e.sum()))


def test_samples_and_members():
    probs, raters = _case(shape=(10, 11), seed=6)
    rng = np.random.default_rng(0)
    members = np.stack([_softmax(np.log(probs) + rng.normal(scale=0.7, size=probs.shape)) for _ in range(4)])
    result = evaluate_case(members.mean(0), raters, member_probabilities=members)
    samples = members.argmax(axis=1)
    assert result.scalars["ged2"] == pytest.approx(generalized_energy_distance(samples, raters, num_classes=3))
    assert result.scalars["sample_diversity"] == pytest.approx(sample_diversity(samples, num_classes=3))
    mean = members.mean(0).astype(np.float64)
    h_mean = -(mean * np.log(mean)).sum(0)
    h_each = -(members * np.log(members)).sum(1).mean(0)
    assert result.scalars["mutual_information"] == pytest.approx(((h_mean - h_each) / np.log(3)).mean(), rel=1e-4)
    # label samples: MI of one-hot members is the entropy of their label frequencies
    by_samples = evaluate_case(probs, raters, samples=samples)
    freq = rater_mean(samples, num_classes=3).astype(np.float64)
    h = -(freq * np.log(np.where(freq > 0, freq, 1))).sum(0) / np.log(3)
    assert by_samples.scalars["mutual_information"] == pytest.approx(h.mean(), rel=1e-5)
    assert by_samples.scalars["ged2"] == pytest.approx(result.scalars["ged2"])
    assert "ged2" not in evaluate_case(probs, raters).scalars


def test_empty_classes_give_nan_not_errors():
    shape = (9, 9)
    raters = np.zeros((2, *shape), dtype=np.uint8)
    raters[:, 3:6, 3:6] = 1  # class 2 absent from the raters
    probs = np.full((3, *shape), 0.1, dtype=np.float32)
    probs[0] = 0.8
    probs[:, 0, 0] = (0.1, 0.1, 0.8)  # class 2 predicted at one voxel; class 1 never predicted
    result = evaluate_case(probs, raters)
    pc = result.per_class
    assert pc["dice"][1] == 0.0 and np.isnan(pc["hd95"][1])  # class 1 missed: Dice 0, no HD
    assert pc["dice"][2] == 0.0 and np.isnan(pc["hd95"][2])
    assert np.isnan(pc["segment_entropy"][1]) and not np.isnan(pc["segment_entropy"][2])
    pred, ref = probs.argmax(0), majority_vote(raters, num_classes=3)
    np.testing.assert_allclose(pc["surface_dice"], surface_dice_per_class(pred, ref, num_classes=3), equal_nan=True)
    # no foreground anywhere: overlap NaN, the box metrics NaN, the volume metrics still defined
    nothing = evaluate_case(np.stack([np.full(shape, 0.9), np.full(shape, 0.1)]).astype(np.float32),
                            np.zeros((2, *shape), dtype=np.uint8))
    assert np.isnan(nothing.per_class["dice"][1]) and np.isnan(nothing.per_class["surface_dice"][1])
    assert math.isnan(nothing.scalars["ece_raters_box"]) and math.isnan(nothing.scalars["entropy_mae_box"])
    assert nothing.scalars["ece_raters_volume"] == pytest.approx(0.1)
    assert math.isnan(nothing.scalars["uncertainty_error_dice"])


def test_rows_and_to_dict():
    probs, raters = _case(shape=(3, 10, 10), seed=7)
    result = evaluate_case(probs, raters, class_names=["bg", "a", "b"], case_id="c7")
    assert isinstance(result, CaseEvaluation)
    with pytest.raises(AttributeError):
        result.case_id = "x"  # frozen
    rows = result.rows()
    assert {tuple(r) for r in rows} == {("case_id", "class", "metric", "value")}
    assert {r["class"] for r in rows} == {"a", "b", "all"}
    lookup = {(r["class"], r["metric"]): r["value"] for r in rows}
    assert lookup[("b", "dice")] == result.per_class["dice"][2]
    assert lookup[("a", "hd95/rater_2")] == result.per_rater["hd95"][1, 1]
    assert lookup[("all", "nll_raters_box")] == result.scalars["nll_raters_box"]
    d = result.to_dict()
    assert d["case_id"] == "c7" and d["per_class"]["dice"]["a"] == result.per_class["dice"][1]
    assert d["per_rater"]["dice"][2]["b"] == result.per_rater["dice"][2, 2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reference": "union"}, ValueError, "reference"),
        ({"tolerance_mm": -1.0}, ValueError, "tolerance_mm"),
        ({"box_margin_mm": "8"}, TypeError, "box_margin_mm"),
        ({"num_bins": 0}, ValueError, "num_bins"),
        ({"num_classes": 4}, ValueError, "num_classes"),
        ({"class_names": ["a", "b"]}, ValueError, "class_names"),
        ({"class_names": "abc"}, TypeError, "class_names"),
        ({"spacing": (1.0,)}, ValueError, "spacing"),
        ({"uncertainty_threshold": 0.0}, ValueError, "uncertainty_threshold"),
        ({"samples": np.zeros((2, 4, 4), dtype=np.uint8)}, ValueError, "samples"),
        ({"member_probabilities": np.full((2, 3, 5, 5), 1 / 3, np.float32)}, ValueError, "member_probabilities"),
        ({"case_id": 3}, TypeError, "case_id"),
    ],
)
def test_input_validation(kwargs, error, match):
    probs, raters = _case(shape=(6, 6), seed=8)
    with pytest.raises(error, match=match):
        evaluate_case(probs, raters, **kwargs)


def test_mismatched_inputs():
    probs, raters = _case(shape=(6, 6), seed=9)
    with pytest.raises(ValueError, match="raters"):
        evaluate_case(probs, raters[:, :5])
    with pytest.raises(TypeError, match="probabilities"):
        evaluate_case(raters, raters)  # integer labels are not probabilities
    with pytest.raises(ValueError, match="raters"):
        evaluate_case(probs, raters + 3)


def test_box_of_two_separate_structures_matches_the_mask_on_the_whole_image():
    rng = np.random.default_rng(10)
    raters = np.zeros((2, 30, 28), dtype=np.uint8)
    raters[:, 3:7, 2:6] = 1
    raters[:, 20:25, 19:24] = 2  # two boxes: their union is not a rectangle
    probs = _softmax(rng.normal(scale=2.0, size=(3, 30, 28)))
    result = evaluate_case(probs, raters, box_margin_mm=2.0)
    box = foreground_box_mask(raters.max(axis=0), in_plane_margin=2.0)
    soft, fused = rater_mean(raters, num_classes=3), majority_vote(raters, num_classes=3)
    s = result.scalars
    assert s["ece_raters_box"] == pytest.approx(expected_calibration_error(probs, soft, mask=box))
    assert s["mce_reference_box"] == pytest.approx(reliability_bins(probs, fused, mask=box).maximum_calibration_error)
    assert s["tace_raters_box"] == pytest.approx(thresholded_adaptive_ce(probs, soft, mask=box))
    assert s["nll_reference_box"] == pytest.approx(negative_log_likelihood(probs, fused, mask=box))
    np.testing.assert_allclose(result.per_class["brier_raters_box"], brier_score_per_class(probs, soft, mask=box))


@pytest.mark.parametrize("reference", ["majority", "staple", "mean"])
def test_recall_and_precision_match_sklearn(reference):
    from sklearn.metrics import precision_score, recall_score

    probs, stack = _case(num_classes=4, raters=3, seed=3)
    probs[3] = 0.0  # class 3 never predicted: precision undefined
    probs /= probs.sum(axis=0)
    result = evaluate_case(probs, stack, num_classes=4, reference=reference)
    fused = {"majority": lambda: majority_vote(stack, num_classes=4),
             "staple": lambda: np.asarray(staple(stack, num_classes=4).labels),
             "mean": lambda: np.argmax(rater_mean(stack, num_classes=4), axis=0)}[reference]()
    truth, predicted = fused.ravel(), probs.argmax(axis=0).ravel()
    options = {"labels": [1, 2, 3], "average": None, "zero_division": np.nan}
    np.testing.assert_allclose(result.per_class["recall"][1:], recall_score(truth, predicted, **options), rtol=1e-12)
    np.testing.assert_allclose(result.per_class["precision"][1:], precision_score(truth, predicted, **options),
                               rtol=1e-12)
    assert np.isnan(result.per_class["precision"][3]) and np.isnan(result.per_class["recall"][0])
    rows = {(r["class"], r["metric"]) for r in result.rows()}
    assert {("class 1", "recall"), ("class 2", "precision")} <= rows
