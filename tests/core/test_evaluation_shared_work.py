"""evaluate_case's shared work gives the separate computations' numbers to the last bit.

The surface distances find each mask's edge voxels once and query them against MONAI's crop corner;
the calibration metrics of one target and region share one validation (``calibration_summary``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics.utils import get_edge_surface_distance

from napari_seg_uncertainty.core.calibration import (
    brier_score_per_class,
    calibration_summary,
    negative_log_likelihood,
    reliability_bins,
    thresholded_adaptive_ce,
)
from napari_seg_uncertainty.core.evaluation import evaluate_case


def _blobs(shape, num_classes, seed):
    """Label maps of overlapping random balls; the first of each class is centred on the first slice."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    labels = np.zeros(shape, dtype=np.uint8)
    for c in range(1, num_classes):
        for ball in range(2):
            centre = rng.uniform(0, np.array(shape))
            centre[0] = 0.0 if ball == 0 else centre[0]
            radius = rng.uniform(2, min(shape) / 2.5)
            labels[np.sqrt(sum((g - o) ** 2 for g, o in zip(grid, centre))) < radius] = c
    return labels


def _monai_scores(pred, ref, tolerance, spacing):
    """Surface Dice and HD95 from MONAI's edge distances on the whole images (the reference computation)."""
    _, (d_pg, d_gp), _ = get_edge_surface_distance(torch.from_numpy(pred), torch.from_numpy(ref),
                                                   spacing=list(spacing), symmetric=True)
    nsd = float((torch.sum(d_pg <= tolerance) + torch.sum(d_gp <= tolerance)) / (len(d_pg) + len(d_gp)))
    return nsd, max(float(np.quantile(d.numpy(), 0.95)) for d in (d_pg, d_gp))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_scores_equal_monai_bit_for_bit(seed):
    shape, spacing, tolerance = (9, 20, 17), (2.5, 0.8, 1.3), 1.6
    raters = np.stack([_blobs(shape, 3, seed + 10 * r) for r in range(2)])
    prediction = _blobs(shape, 3, seed + 100)
    probs = np.eye(3, dtype=np.float32)[prediction].transpose(3, 0, 1, 2) * 0.9 + 0.1 / 3
    result = evaluate_case(probs, raters, spacing=spacing, tolerance_mm=tolerance, reference="majority")
    assert (prediction[0] > 0).any() and (raters[:, 0] > 0).any()  # the structures reach the border
    for r, rater in enumerate(raters):
        for c in (1, 2):
            pred, ref = prediction == c, rater == c
            if not (pred.any() and ref.any()):
                continue
            nsd, hd95 = _monai_scores(pred, ref, tolerance, spacing)
            assert result.per_rater["surface_dice"][r, c] == nsd
            assert result.per_rater["hd95"][r, c] == hd95


@pytest.mark.parametrize("target_name", ["labels", "soft"])
def test_calibration_summary_equals_the_separate_metrics(target_name):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 7, 11, 9)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    probs[:, :2] = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, 11, 9))].transpose(3, 0, 1, 2)  # ties at 0, 1
    labels = rng.integers(0, 3, (7, 11, 9))
    soft = np.eye(3, dtype=np.float32)[labels].transpose(3, 0, 1, 2) * 0.7 + 0.1
    target = labels if target_name == "labels" else soft
    mask = rng.random((7, 11, 9)) < 0.6
    summary = calibration_summary(probs, target, num_bins=12, tace_num_bins=12, mask=mask)
    bins = reliability_bins(probs, target, num_bins=12, mask=mask)
    np.testing.assert_array_equal(summary.bins.count, bins.count)
    assert summary.ece == bins.expected_calibration_error
    assert summary.tace == thresholded_adaptive_ce(probs, target, num_bins=12, mask=mask)
    assert summary.nll == negative_log_likelihood(probs, target, mask=mask)
    np.testing.assert_array_equal(summary.brier_per_class, brier_score_per_class(probs, target, mask=mask))
    bad = probs.copy()
    bad[:, 3, 4, 5] = [0.5, 0.3, 0.1]
    with pytest.raises(ValueError, match="sum to 1"):  # checked once, still checked
        calibration_summary(bad, target)


def _tace_by_sorting(probs, labels, num_bins, threshold=1e-3):
    """TACE from a full sort: equal-count bins of the sorted values, tied values sharing their mean indicator."""
    errors = []
    for k in range(probs.shape[0]):
        values = probs[k].ravel().astype(np.float64)
        hit = (labels.ravel() == k).astype(np.float64)
        keep = values > threshold
        values, hit = values[keep], hit[keep]
        if values.size == 0:
            continue
        order = np.argsort(values, kind="stable")
        values, hit = values[order], hit[order]
        _, group = np.unique(values, return_inverse=True)
        hit = (np.bincount(group, weights=hit) / np.bincount(group))[group]
        count = min(num_bins, values.size)
        sizes = np.full(count, values.size // count)
        sizes[: values.size % count] += 1
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        errors.append(np.mean([abs(hit[a:b].mean() - values[a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:])]))
    return float(np.mean(errors))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tace_with_ties_equals_a_full_sort_and_hard_equals_one_hot(seed):
    rng = np.random.default_rng(seed)
    shape, classes = (6, 13, 11), 4
    raw = rng.integers(0, 5, size=(classes, *shape)).astype(np.float32) ** 2 + 1e-4 * (seed % 2 + 1)  # many ties
    raw[:, :2] = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, (2, *shape[1:]))].transpose(3, 0, 1, 2)
    probs = raw / raw.sum(axis=0)
    labels = np.where(rng.random(shape) < 0.7, probs.argmax(axis=0), rng.integers(0, classes, shape))
    one_hot = np.eye(classes, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    for num_bins in (1, 7, 15):
        hard = thresholded_adaptive_ce(probs, labels, num_bins=num_bins)
        assert hard == thresholded_adaptive_ce(probs, one_hot, num_bins=num_bins, target_kind="soft")
        assert hard == pytest.approx(_tace_by_sorting(probs, labels, num_bins), rel=1e-12, abs=1e-15)
