"""Calibration errors against the peer libraries themselves: torchmetrics and MONAI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.functional.classification import multiclass_calibration_error

from napari_seg_uncertainty.core.calibration import (
    ReliabilityAccumulator,
    average_calibration_error,
    classwise_calibration_error,
    expected_calibration_error,
    l2_calibration_error,
    reliability_bins,
)
from napari_seg_uncertainty.core.labels import rater_mean


def _random_probs(rng, shape, num_classes, sharpness=2.0) -> np.ndarray:
    z = rng.normal(scale=sharpness, size=(num_classes, *shape))
    e = np.exp(z - z.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def _case(seed: int, shape=(24, 20), num_classes=4):
    rng = np.random.default_rng(seed)
    probs = _random_probs(rng, shape, num_classes)
    # labels drawn from a sharper distribution: the model is under-confident
    labels = (rng.random(shape)[None] < np.cumsum(probs**2 / (probs**2).sum(0), axis=0)).argmax(axis=0)
    return probs, labels


def _torchmetrics_ce(probs: np.ndarray, labels: np.ndarray, num_bins: int, norm: str) -> float:
    c = probs.shape[0]
    preds = torch.from_numpy(probs.reshape(c, -1).T.copy())
    target = torch.from_numpy(labels.reshape(-1).astype(np.int64))
    return float(multiclass_calibration_error(preds, target, num_classes=c, n_bins=num_bins, norm=norm))


@pytest.mark.parametrize("num_bins", [5, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_l2_and_mce_match_torchmetrics(seed, num_bins):
    probs, labels = _case(seed)
    # torchmetrics bins are [lo, hi): our closed="left"
    options = {"num_bins": num_bins, "closed": "left"}
    ece = expected_calibration_error(probs, labels, **options)
    assert ece == pytest.approx(_torchmetrics_ce(probs, labels, num_bins, "l1"), rel=1e-5, abs=1e-7)
    l2 = l2_calibration_error(probs, labels, **options)
    assert l2 == pytest.approx(_torchmetrics_ce(probs, labels, num_bins, "l2"), rel=1e-5, abs=1e-7)
    mce = reliability_bins(probs, labels, **options).maximum_calibration_error
    assert mce == pytest.approx(_torchmetrics_ce(probs, labels, num_bins, "max"), rel=1e-5, abs=1e-7)
    assert l2 >= ece  # the root mean square is at least the mean


def test_accumulator_matches_torchmetrics_cumulative_metric_and_concatenation():
    cases = [_case(seed, shape=(10 + seed, 13)) for seed in range(4)]
    ours = ReliabilityAccumulator(num_bins=10, closed="left")
    theirs = MulticlassCalibrationError(num_classes=4, n_bins=10, norm="l1")
    for probs, labels in cases:
        ours.update(probs, labels)
        theirs.update(torch.from_numpy(probs.reshape(4, -1).T.copy()), torch.from_numpy(labels.reshape(-1)))
    pooled = ours.aggregate()
    assert pooled.expected_calibration_error == pytest.approx(float(theirs.compute()), rel=1e-5)
    # the same as all voxels in one image
    all_probs = np.concatenate([p.reshape(4, 1, -1) for p, _ in cases], axis=2)
    all_labels = np.concatenate([t.reshape(1, -1) for _, t in cases], axis=1)
    together = reliability_bins(all_probs, all_labels, num_bins=10, closed="left")
    np.testing.assert_array_equal(pooled.count, together.count)
    assert pooled.expected_calibration_error == pytest.approx(together.expected_calibration_error, rel=1e-12)


def _monai(probs: np.ndarray, target_map: np.ndarray, *, num_bins, include_background, reduction) -> np.ndarray:
    metric = CalibrationErrorMetric(
        num_bins=num_bins,
        include_background=include_background,
        calibration_reduction=reduction,
        metric_reduction="none",
    )
    metric(y_pred=torch.from_numpy(probs[None]), y=torch.from_numpy(target_map[None].astype(np.float32)))
    return metric.aggregate().numpy()[0]


@pytest.mark.parametrize("reduction", ["expected", "average", "maximum"])
@pytest.mark.parametrize("include_background", [True, False])
def test_classwise_error_matches_monai(include_background, reduction):
    probs, labels = _case(3, shape=(30, 25))
    one_hot = np.stack([labels == k for k in range(4)])
    theirs = _monai(probs, one_hot, num_bins=10, include_background=include_background, reduction=reduction)
    ours = classwise_calibration_error(
        probs, labels, num_bins=10, reduction=reduction, include_background=include_background
    )
    expected_classes = ours.per_class if include_background else ours.per_class[1:]
    np.testing.assert_allclose(expected_classes, theirs, rtol=1e-5, atol=1e-7)
    assert ours.mean == pytest.approx(float(np.nanmean(theirs)), rel=1e-5)
    if not include_background:
        assert np.isnan(ours.per_class[0])


def test_classwise_error_with_raters_matches_monai_on_the_rater_mean():
    rng = np.random.default_rng(5)
    probs = _random_probs(rng, (20, 22), 3)
    raters = rng.integers(0, 3, size=(5, 20, 22))
    theirs = _monai(probs, rater_mean(raters, num_classes=3), num_bins=8, include_background=True, reduction="expected")
    ours = classwise_calibration_error(probs, raters, num_bins=8)
    np.testing.assert_allclose(ours.per_class, theirs, rtol=1e-5, atol=1e-7)


def test_average_calibration_error_matches_monai_on_the_confidence():
    probs, labels = _case(4)
    confidence = probs.max(axis=0)
    correct = (probs.argmax(axis=0) == labels).astype(np.float32)
    theirs = _monai(
        confidence[None], correct[None], num_bins=10, include_background=True, reduction="average"
    )
    assert average_calibration_error(probs, labels, num_bins=10) == pytest.approx(float(theirs[0]), rel=1e-5)
    # unweighted over the non-empty bins, by hand
    bins = reliability_bins(probs, labels, num_bins=10)
    filled = bins.count > 0
    assert bins.average_calibration_error == pytest.approx(
        float(np.mean(np.abs(bins.accuracy[filled] - bins.confidence[filled]))), rel=1e-12
    )
