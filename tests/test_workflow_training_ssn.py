"""The Qt-free training and SSN-sample helpers of the workflow layer (what the Train and SSN docks run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.geometry import Geometry
from napari_seg_uncertainty.core.ssn import (
    LowRankLogits,
    SampleLabelStack,
    generalized_energy_distance,
    sample_diversity,
    synthetic_distribution,
)
from napari_seg_uncertainty.workflow import ssn as ssn_workflow
from napari_seg_uncertainty.workflow.ssn import (
    EXPORT_ALL,
    EXPORT_CURRENT,
    SampleMetrics,
    distribution_from_checkpoint,
    export_samples,
    sample_metrics,
)
from napari_seg_uncertainty.workflow.training import foreground_box, parse_patch_size, prediction_geometry


def _prediction(reference: LowRankLogits, **extra):
    return {"mean": reference.mean, "cov_factor": reference.cov_factor, "cov_diag": reference.cov_diag, **extra}


@pytest.mark.parametrize("planes", [True, False])
def test_a_checkpoint_prediction_keeps_independent_planes(tmp_path, planes):
    reference = synthetic_distribution((3, 8, 9), num_classes=2, rank=2, seed=1)
    checkpoint = tmp_path / "model.pt"
    torch.save({"stub": 1}, checkpoint)
    seen = []

    def predict(path, image):
        seen.append((path, image.shape))
        return _prediction(reference, independent_planes=planes, crop_start=(1, 0, 0))

    dist, placement = distribution_from_checkpoint(checkpoint, np.zeros((3, 8, 9)), scale=(3.0, 0.8, 0.8),
                                                   predict=predict)
    assert dist.independent_planes is planes and dist.spacing == (3.0, 0.8, 0.8)
    assert placement["crop_start"] == (1, 0, 0) and seen == [(str(checkpoint), (3, 8, 9))]


def test_a_typed_prediction_is_used_as_it_is(tmp_path):
    base = synthetic_distribution((3, 8, 9), num_classes=2, rank=2)
    typed = LowRankLogits(base.mean, base.cov_factor, base.cov_diag, independent_planes=True)
    checkpoint = tmp_path / "model.pt"
    torch.save({"stub": 1}, checkpoint)
    dist, placement = distribution_from_checkpoint(checkpoint, np.zeros((3, 8, 9)), predict=lambda p, i: typed)
    assert dist is typed and dist.independent_planes
    assert placement == {"origin": None, "direction": None, "crop_start": None}


def test_no_prediction_function_says_what_to_do(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.pt"
    torch.save({"stub": 1}, checkpoint)
    monkeypatch.setattr(ssn_workflow, "prediction_function", lambda: None)
    with pytest.raises(RuntimeError, match="predict_ssn_distribution"):
        distribution_from_checkpoint(checkpoint, np.zeros((8, 9)))
    junk = tmp_path / "x.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a checkpoint of this plugin"):
        distribution_from_checkpoint(junk, np.zeros((8, 9)))


def test_sample_metrics_are_the_core_measures():
    rng = np.random.default_rng(0)
    samples, raters = rng.integers(0, 3, (5, 6, 7)), rng.integers(0, 3, (4, 6, 7))
    metrics = sample_metrics(samples, raters, num_classes=3)
    assert isinstance(metrics, SampleMetrics) and (metrics.num_samples, metrics.num_raters) == (5, 4)
    assert metrics.ged2 == pytest.approx(generalized_energy_distance(samples, raters, num_classes=3), abs=1e-12)
    assert metrics.sample_diversity == pytest.approx(sample_diversity(samples, num_classes=3), abs=1e-12)
    assert metrics.rater_diversity == pytest.approx(sample_diversity(raters, num_classes=3), abs=1e-12)


def test_export_keeps_seed_indices_and_scales_and_refuses_to_overwrite(tmp_path):
    dist = synthetic_distribution((6, 7), num_classes=3, rank=2, seed=2, spacing=(0.5, 0.5))
    dist = dist.with_class_scales([1, 2, 0])
    stack = SampleLabelStack(dist, [4, 5, 6], seed=3)
    out = export_samples(tmp_path / "s.npz", stack, what=EXPORT_CURRENT, entry=1)
    with np.load(out) as archive:
        assert archive["samples"].shape == (1, 6, 7) and archive["sample_indices"].tolist() == [5]
        np.testing.assert_array_equal(archive["samples"][0], stack.sample(1))
        assert archive["class_scales"].tolist() == [1, 2, 0] and archive["spacing"].tolist() == [0.5, 0.5]
    with pytest.raises(FileExistsError):
        export_samples(out, stack, what=EXPORT_ALL)
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        export_samples(out, stack, what=EXPORT_ALL, overwrite="yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]  # no temporary file left


def test_training_helpers():
    assert parse_patch_size("") is None and parse_patch_size("16;16") == (16, 16)
    with pytest.raises(ValueError, match="patch size 'a, 4' is not a list of integers"):
        parse_patch_size("a, 4")
    assert foreground_box(np.zeros((2, 4, 4), np.uint8), 1) == (None, None)
    image = Geometry(spacing=(2.0, 1.0), origin=(5.0, 0.0))
    assert prediction_geometry(image, (8, 8), (8, 8), crop_start=(1, 2)).origin == (7.0, 2.0)
