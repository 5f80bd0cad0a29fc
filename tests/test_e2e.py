"""End to end: the GUI demo in a real viewer, step by step, as a new user would click through it.

Raters loaded → soft labels compared → short training (mSVLS U-Net, then SSN) → SSN samples with the
temperature and class-noise sliders → calibration (reliability diagram) → uncertainty maps. After
each step the layers and the numbers the widgets show are checked against computations written here.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_seg_uncertainty.widgets import _common, _guide_queue
from napari_seg_uncertainty.widgets.calibration import ENTROPY_SCATTER
from napari_seg_uncertainty.widgets.demo_window import run_gui_demo
from napari_seg_uncertainty.widgets.ssn_samples import MEAN_LAYER, SAMPLES_LAYER
from napari_seg_uncertainty.workflow.demo import DemoTraining, load_demo_data

STEP_TIMEOUT_MS = 600_000
RATERS = ["rater 1", "rater 2", "rater 3", "rater 4"]


# ------------------------------------------------------------------------------ independent computations
def counts(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, *S) number of raters choosing each class."""
    return np.stack([(raters == k).sum(axis=0) for k in range(num_classes)]).astype(np.float64)


def normalised_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy over axis 0 divided by log C, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=0) / math.log(p.shape[0])


def paper_svls(labels: np.ndarray, num_classes: int, sigma: float = 1.0) -> np.ndarray:
    """SVLS as the paper words it: 3x3 Gaussian, centre := sum of the others, normalised; edge padding."""
    weights = np.zeros((3, 3))
    for i, j in itertools.product(range(3), repeat=2):
        weights[i, j] = math.exp(-((i - 1) ** 2 + (j - 1) ** 2) / (2 * sigma**2))
    weights[1, 1] = 0.0
    weights[1, 1] = weights.sum()
    weights /= weights.sum()
    padded = np.pad(labels, 1, mode="edge")
    out = np.zeros((num_classes, *labels.shape))
    for i, j in itertools.product(range(3), repeat=2):
        window = padded[i : i + labels.shape[0], j : j + labels.shape[1]]
        for k in range(num_classes):
            out[k] += weights[i, j] * (window == k)
    return out


def iou_distance(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """1 - mean foreground IoU; a class absent from both counts as IoU 1."""
    ious = []
    for k in range(1, num_classes):
        union = np.logical_or(a == k, b == k).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a == k, b == k).sum() / union)
    return 1.0 - float(np.mean(ious))


def ged2(samples: np.ndarray, raters: np.ndarray, num_classes: int) -> float:
    cross = np.mean([iou_distance(s, y, num_classes) for s in samples for y in raters])
    within_s = np.mean([iou_distance(s, t, num_classes) for s in samples for t in samples])
    within_y = np.mean([iou_distance(y, z, num_classes) for y in raters for z in raters])
    return float(2 * cross - within_s - within_y)


def ece_against_raters(probs: np.ndarray, raters: np.ndarray, n_bins: int = 10) -> float:
    """ECE with right-closed equal-width bins; accuracy = share of raters agreeing with the argmax."""
    confidence = probs.max(axis=0).ravel().astype(np.float64)
    predicted = probs.argmax(axis=0).ravel()
    accuracy = np.mean([predicted == r.ravel() for r in raters], axis=0)
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            total += inside.sum() / confidence.size * abs(accuracy[inside].mean() - confidence[inside].mean())
    return total


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# ------------------------------------------------------------------------------ helpers
@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(_guide_queue, "show_error", messages.append)
    return messages


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def press(qtbot, guide, step: str) -> None:
    """Press the Guide's button of ``step`` and wait until the step has finished."""
    guide._buttons[step].native.click()
    qtbot.waitUntil(lambda: not guide.busy, timeout=STEP_TIMEOUT_MS)
    assert guide._status.value.startswith("Done"), guide._status.value


def data(viewer, name: str) -> np.ndarray:
    return np.asarray(viewer.layers[name].data)


# ------------------------------------------------------------------------------ the test
def test_gui_demo_walks_through_the_whole_workflow(make_napari_viewer, qtbot, errors, tmp_path):
    viewer = make_napari_viewer()
    guide = run_gui_demo("phantom2d", viewer=viewer, training=DemoTraining())
    guide.run_root = tmp_path  # checkpoints of this test go to its own folder
    image, raters = load_demo_data("phantom2d")
    labels, num_classes = raters.labels, raters.num_classes
    docks = set(viewer.window.dock_widgets)
    assert {
        "Guide",
        "Load raters",
        "Soft labels",
        "Train",
        "Training curves",
        "SSN samples",
        "Calibration",
        "Uncertainty maps",
    } <= docks

    # 1. raters: four Labels layers and the rater entropy map
    press(qtbot, guide, "raters")
    assert guide.rater_layers() == RATERS
    for name, expected in zip(RATERS, labels):
        np.testing.assert_array_equal(data(viewer, name), expected)
    np.testing.assert_allclose(
        data(viewer, "rater entropy"), normalised_entropy(counts(labels, num_classes) / 4), atol=1e-5
    )
    loader = guide.widgets["load_raters"]
    dice_table = loader._dice_table.value
    organ = labels == 1
    assert dice_table["data"][0][1] == pytest.approx(dice(organ[0], organ[1]), abs=1e-4)

    # 2. soft labels: mSVLS (A) against the one-hot majority vote (B)
    press(qtbot, guide, "soft_labels")
    soft = guide.widgets["soft_labels"]
    assert soft._method.value == "msvls" and soft._compare.value == "one_hot"
    expected_msvls = np.mean([paper_svls(r, num_classes) for r in labels], axis=0)
    for k, cname in enumerate(raters.class_names):
        np.testing.assert_allclose(data(viewer, f"soft A: {cname}"), expected_msvls[k], atol=1e-5)
    votes = counts(labels, num_classes)
    majority = np.argmax(votes, axis=0)  # ties go to the lower class, as documented
    np.testing.assert_array_equal(data(viewer, "soft B: organ"), (majority == 1).astype(np.float32))
    difference = expected_msvls[1] - (majority == 1)
    np.testing.assert_allclose(data(viewer, "soft A − B"), difference, atol=1e-5)
    shown = re.search(r"organ: mean \|Δ\| = ([0-9.]+)", soft._status.value)
    assert shown and float(shown.group(1)) == pytest.approx(np.abs(difference).mean(), abs=1e-4)
    # driving the widget directly: the raters' mean updates the layers in place
    soft._compare.value = "(none)"
    soft._method.value = "rater_mean"
    qtbot.waitUntil(lambda: soft.result.request.method == "rater_mean" and not soft.busy, timeout=30_000)
    np.testing.assert_allclose(data(viewer, "soft A: lesion"), votes[2] / 4, atol=1e-6)
    assert "soft B: organ" not in viewer.layers

    # 3. + 4. training: the mSVLS U-Net, then the SSN
    train = guide.widgets["train"]
    for step, prefix, head, target in (
        ("train_svls", "mSVLS U-Net", "softmax", "msvls"),
        ("train_ssn", "SSN", "ssn", "random_rater"),
    ):
        press(qtbot, guide, step)
        assert train._target.value == target and train.failure is None
        settings = guide.training
        kinds = [r.kind for r in train.records]
        assert kinds.count("step") == settings.epochs * settings.steps_per_epoch and kinds[-1] == "done"
        state = torch.load(guide.checkpoints[step.split("_")[1]], map_location="cpu", weights_only=True)
        assert state["config"]["head"] == head and state["config"]["target"] == target
        probs = data(viewer, prefix)
        assert probs.shape == (num_classes, *image.shape)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
        np.testing.assert_array_equal(data(viewer, f"{prefix} labels"), probs.argmax(axis=0))
        np.testing.assert_allclose(data(viewer, f"{prefix} entropy"), normalised_entropy(probs), atol=1e-4)
        # the short run has learned the organ: its Dice against the majority vote is high
        assert dice(probs.argmax(axis=0) == 1, majority == 1) > 0.8
        assert viewer.layers[f"{prefix} entropy"].visible and not viewer.layers["soft A: organ"].visible
        xs, ys = train._lines["epoch"].get_data()
        steps_losses = [r.loss for r in train.records if r.kind == "step"]
        np.testing.assert_allclose(ys[0], np.mean(steps_losses[: settings.steps_per_epoch]), rtol=1e-6)

    # 5. SSN samples: mean prediction, samples, GED², temperature slider
    press(qtbot, guide, "ssn_samples")
    ssn = guide.widgets["ssn_samples"]
    from napari_seg_uncertainty.core.training import predict_ssn_distribution

    predicted = predict_ssn_distribution(guide.checkpoints["ssn"], image)
    mean_labels = np.argmax(predicted.mean, axis=0)
    np.testing.assert_array_equal(data(viewer, MEAN_LAYER), mean_labels)
    samples_layer = viewer.layers[SAMPLES_LAYER]
    assert samples_layer.data.shape == (10, *image.shape)
    samples = np.stack([np.asarray(samples_layer.data[i]) for i in range(10)])
    assert ssn.metrics.ged2 == pytest.approx(ged2(samples, labels, num_classes), abs=1e-9)
    assert f"GED² {ged2(samples, labels, num_classes):.4f}" in ssn._metrics_label.value
    assert [s.label for s in ssn._class_sliders] == raters.class_names
    ssn._temperature.value = 0.0  # no noise: every sample is the mean prediction
    qtbot.waitUntil(lambda: not ssn.busy, timeout=30_000)
    for i in (0, 3, 9):
        np.testing.assert_array_equal(np.asarray(samples_layer.data[i]), mean_labels)
    ssn._temperature.value = 1.0
    lesion = ssn._class_sliders[2]
    lesion.value = 3.0
    qtbot.waitUntil(lambda: not ssn.busy, timeout=30_000)
    assert ssn.distribution.class_scales[2] == pytest.approx(3.0)
    assert ssn.distribution.class_scales[1] == pytest.approx(1.0)

    # 6. calibration of the two models against the raters
    press(qtbot, guide, "calibration")
    calibration = guide.widgets["calibration"]
    table = calibration._table.value
    assert list(table["index"]) == ["mSVLS U-Net", "SSN"]
    for row, name in enumerate(table["index"]):
        probs = data(viewer, name)
        assert table["data"][row][0] == pytest.approx(100 * ece_against_raters(probs, labels), abs=2e-3)
        soft_target = counts(labels, num_classes) / 4
        expected_brier = np.mean((probs - soft_target) ** 2 + soft_target * (1 - soft_target))  # over raters
        assert table["data"][row][3] == pytest.approx(expected_brier, abs=1e-5)
    assert calibration.plot.artists  # the reliability diagram is drawn
    calibration._plot_kind.value = ENTROPY_SCATTER
    assert calibration.plot.kind == ENTROPY_SCATTER and calibration.plot.artists

    # 7. uncertainty maps, review table, Dice vs raters
    press(qtbot, guide, "uncertainty")
    uncertainty = guide.widgets["uncertainty"]
    for name in ("mSVLS U-Net", "SSN"):
        layer = viewer.layers[f"{name} entropy"]
        assert layer.metadata["uncertainty_map"]
        np.testing.assert_allclose(layer.data, normalised_entropy(data(viewer, name)), atol=1e-4)
    rows = uncertainty.review_rows
    scores = [r.structure.mean_entropy for r in rows]
    assert scores == sorted(scores, reverse=True) and min(r.structure.voxels for r in rows) >= 10
    top = rows[0].structure
    probs = data(viewer, rows[0].source)
    components, _ = ndi.label(probs.argmax(axis=0) == top.class_index, structure=np.ones((3, 3)))
    box = tuple(slice(a, b) for a, b in zip(top.bbox_start, top.bbox_stop))
    matching = [
        i + 1
        for i, found in enumerate(ndi.find_objects(components))
        if found == box and (components == i + 1).sum() == top.voxels
    ]
    assert len(matching) == 1
    p = np.clip(probs[top.class_index][components == matching[0]].astype(np.float64), 1e-12, 1 - 1e-12)
    assert top.mean_entropy == pytest.approx(np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p)), abs=1e-4)
    uncertainty.jump_to(0)  # the camera moves to the most uncertain structure
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], top.centroid, atol=1e-6)
    first = uncertainty.agreement_rows[0]
    assert first.reference == "rater 1" and first.class_index == 1
    prediction = data(viewer, "mSVLS U-Net").argmax(axis=0)
    assert first.dice == pytest.approx(dice(prediction == 1, labels[0] == 1), abs=1e-5)
    assert errors == []
