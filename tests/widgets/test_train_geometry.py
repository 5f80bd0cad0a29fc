"""The Train widget on a 3-D case with anisotropic spacing and a non-zero origin, in a real viewer.

Prediction layers line up with the image (scale, translate, world extents), a crop is placed where it
lies, layers carry the image's case, choices follow renames, a grid mismatch is warned about, and
closing the dock during a run says where last.pt is and takes the Training curves dock with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.geometry import Geometry
from napari_seg_uncertainty.core.phantom import make_phantom_raters
from napari_seg_uncertainty.widgets import _common, _train_form
from napari_seg_uncertainty.widgets import train as train_module
from napari_seg_uncertainty.widgets._case import CASE_KEY
from napari_seg_uncertainty.widgets.train import TrainWidget
from napari_seg_uncertainty.workflow.training import prediction_geometry

WAIT_MS = 120_000
SPACING = (3.0, 0.8, 0.8)
ORIGIN = (10.0, -40.0, -50.0)
PREDICTIONS = ("prediction labels", "prediction entropy", "prediction probabilities")


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture
def messages(monkeypatch):
    found: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    monkeypatch.setattr(_common, "show_error", found["error"].append)
    monkeypatch.setattr(train_module, "show_error", found["error"].append)
    monkeypatch.setattr(_train_form, "show_warning", found["warning"].append)
    monkeypatch.setattr(train_module, "show_info", found["info"].append)
    return found


@pytest.fixture
def case3d(make_napari_viewer):
    """A 12×32×32 phantom at spacing (3, 0.8, 0.8) mm and origin (10, −40, −50), tagged as case 'case01'."""
    viewer = make_napari_viewer()
    image, raters = make_phantom_raters(3, shape=(12, 32, 32), seed=0)
    place = {"scale": SPACING, "translate": ORIGIN}
    viewer.add_image(image, name="image", metadata={CASE_KEY: "case01"}, **place)
    for name, labels in zip(raters.rater_names, raters.labels):
        meta = {"class_names": list(raters.class_names), "rater": name, CASE_KEY: "case01"}
        viewer.add_labels(labels, name=name, metadata=meta, **place)
    return viewer, image, raters


def make_widget(viewer, tmp_path, *, epochs=1, steps=2):
    train_module.preload_training_modules()  # PyTorch in (a fresh widget loads it in a worker first)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget._model_size.value = "tiny (8-16-32)"
    widget._dims.value = 2  # 2-D slices of the volume: quick, and the prediction is still 3-D
    widget._epochs.value = epochs
    widget._steps.value = steps
    widget._batch.value = 2
    widget._patch.value = "16, 16"
    widget._device.value = "cpu"
    widget._output.value = str(tmp_path)
    return widget


def spatial_world_extent(layer, ndim=3) -> np.ndarray:
    return np.asarray(layer.extent.world)[:, -ndim:]


def test_prediction_layers_line_up_with_a_3d_image_with_origin_and_spacing(case3d, qtbot, tmp_path, messages):
    viewer, image, raters = case3d
    widget = make_widget(viewer, tmp_path)
    assert widget.grid_warning is None and not not widget._grid_label.native.isHidden()
    widget.start()
    qtbot.waitUntil(lambda: widget.state == "idle" and "prediction probabilities" in viewer.layers, timeout=WAIT_MS)
    assert messages["error"] == [] and messages["warning"] == []
    image_layer = viewer.layers["image"]
    for name in PREDICTIONS:
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale[-3:], SPACING)
        np.testing.assert_allclose(layer.translate[-3:], ORIGIN)
        np.testing.assert_allclose(spatial_world_extent(layer), spatial_world_extent(image_layer))
        assert layer.metadata[CASE_KEY] == "case01"  # loading another case replaces it
    probabilities = viewer.layers["prediction probabilities"]
    assert probabilities.data.shape == (4, *image.shape)
    np.testing.assert_allclose(probabilities.scale[0], 1.0)  # the class axis is a slider, not space
    np.testing.assert_allclose(probabilities.translate[0], 0.0)


def test_a_prediction_on_the_raters_region_is_placed_where_the_crop_lies(
    case3d, qtbot, tmp_path, messages, monkeypatch
):
    viewer, image, raters = case3d
    monkeypatch.setattr(_train_form, "REGION_MARGIN", 2)
    for i in range(1, 5):  # raters who outlined one small box: the crop is well inside the image
        labels = np.zeros(image.shape, dtype=np.uint8)
        labels[4:8, 10 + i : 20, 12:22] = 1
        viewer.layers[f"rater {i}"].data = labels
    widget = make_widget(viewer, tmp_path)
    widget._predict_on.value = "raters"
    widget.start()
    qtbot.waitUntil(lambda: widget.state == "idle" and "prediction labels" in viewer.layers, timeout=WAIT_MS)
    assert messages["error"] == []
    labels = viewer.layers["prediction labels"]
    start = tuple(labels.metadata["crop_start"])
    assert start == (2, 9, 10) and labels.data.shape == (8, 13, 14)
    image_layer = viewer.layers["image"]
    for index in ((0, 0, 0), tuple(s - 1 for s in labels.data.shape)):
        np.testing.assert_allclose(
            labels.data_to_world(index), image_layer.data_to_world(np.add(index, start)), atol=1e-9
        )
    expected = np.asarray(ORIGIN) + np.asarray(start) * np.asarray(SPACING)
    np.testing.assert_allclose(labels.translate, expected)


def test_prediction_geometry_of_a_crop_and_of_a_resampled_grid():
    image = Geometry(spacing=SPACING, origin=ORIGIN)
    assert prediction_geometry(image, (12, 32, 32), (12, 32, 32)) == image
    crop = prediction_geometry(image, (6, 16, 16), (6, 16, 16), crop_start=(2, 4, 8))
    np.testing.assert_allclose(crop.origin, (16.0, -36.8, -43.6))
    coarse = prediction_geometry(image, (12, 32, 32), (12, 16, 16))
    np.testing.assert_allclose(coarse.spacing, (3.0, 1.6, 1.6))
    # same field of view: the first and last voxel corners coincide
    for geometry, shape in ((image, (12, 32, 32)), (coarse, (12, 16, 16))):
        low = geometry.index_to_world([-0.5] * 3)
        high = geometry.index_to_world([s - 0.5 for s in shape])
        np.testing.assert_allclose(low, image.index_to_world([-0.5] * 3))
        np.testing.assert_allclose(high, image.index_to_world([s - 0.5 for s in (12, 32, 32)]))


def test_grid_mismatch_is_warned_in_a_notification_and_in_the_dock(case3d, tmp_path, messages):
    viewer, image, raters = case3d
    shifted = viewer.add_labels(raters.labels[0], name="shifted rater", scale=SPACING, translate=(10.0, -40.0, -45.0))
    widget = make_widget(viewer, tmp_path)
    widget.select_layers("image", ["rater 1", "shifted rater"])
    assert len(messages["warning"]) == 1
    assert "'shifted rater'" in messages["warning"][0] and "origin" in messages["warning"][0]
    assert not widget._grid_label.native.isHidden() and "another grid" in widget._grid_label.value
    shifted.translate = ORIGIN  # fixed: the warning goes away
    widget.select_layers("image", ["rater 1"])
    widget.select_layers("image", ["rater 1", "shifted rater"])
    assert widget.grid_warning is None and not not widget._grid_label.native.isHidden()
    viewer.add_labels(np.zeros((12, 30, 32), dtype=np.uint8), name="small rater", scale=SPACING, translate=ORIGIN)
    widget.select_layers("image", ["rater 1", "small rater"])
    assert "shape (12, 30, 32)" in messages["warning"][-1] and not widget._grid_label.native.isHidden()
    assert len(messages["warning"]) == 2


def test_choices_hold_layers_and_survive_a_rename(case3d, tmp_path, messages):
    viewer, image, raters = case3d
    widget = make_widget(viewer, tmp_path)
    image_layer, first = viewer.layers["image"], viewer.layers["rater 1"]
    assert widget._image.value is image_layer and widget._raters.value[0] is first
    image_layer.name = "CT (renamed)"
    first.name = "R1"
    assert widget._image.value is image_layer
    assert widget._image.native.currentText() == "CT (renamed)"
    assert [layer.name for layer in widget._raters.value] == ["R1", "rater 2", "rater 3", "rater 4"]
    assert "R1" in [widget._raters.native.item(i).text() for i in range(widget._raters.native.count())]
    viewer.add_image(np.zeros((4, 4)), name="another image")  # an addition keeps the selection
    assert widget._image.value is image_layer and len(widget._raters.value) == 4
    viewer.layers.remove("rater 4")
    assert [layer.name for layer in widget._raters.value] == ["R1", "rater 2", "rater 3"]


def test_closing_the_dock_mid_run_says_cancelled_and_closes_the_curves(case3d, qtbot, tmp_path, messages):
    viewer, _, _ = case3d
    widget = make_widget(viewer, tmp_path, epochs=4, steps=500)
    assert "Training curves" in viewer.window.dock_widgets
    widget.start()
    worker = widget.worker
    qtbot.waitUntil(lambda: sum(r.kind == "step" for r in widget.records) >= 2, timeout=WAIT_MS)
    dock = widget.native.parent()
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        dock.destroyOnClose()  # what the dock's × button does
    qtbot.wait(50)
    assert messages["error"] == []
    assert "Training curves" not in viewer.window.dock_widgets and "Train" not in viewer.window.dock_widgets
    assert len(messages["info"]) == 1
    info = messages["info"][0]
    assert "cancelled" in info and widget.checkpoint_path in info and info.count("last.pt") >= 1
    assert widget.checkpoint_path.endswith("last.pt")
    assert "prediction labels" not in viewer.layers


def test_a_file_that_is_not_a_checkpoint_is_refused_with_a_clear_message(case3d, tmp_path, messages):
    viewer, _, _ = case3d
    widget = make_widget(viewer, tmp_path)
    fake = tmp_path / "image.nii.gz"
    fake.write_bytes(b"\x1f\x8b not a checkpoint")
    widget._resume.value = str(fake)
    assert widget.start() is None and widget.state == "idle"
    assert len(messages["error"]) == 1
    text = messages["error"][0]
    assert "'image.nii.gz' is not a training checkpoint" in text and "last.pt" in text
    assert "Weights only load failed" not in text


def test_opening_train_does_not_wait_for_pytorch(case3d, qtbot, tmp_path, monkeypatch, messages):
    """Train opens at once; PyTorch and MONAI load in a worker; Start is enabled when they are in."""
    import threading

    release = threading.Event()
    monkeypatch.setattr(train_module, "_PRELOADED", False)
    monkeypatch.setattr(train_module, "_preload_unlocked", lambda: release.wait(30))
    viewer, _, _ = case3d
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    assert not widget.ready and not widget._start.enabled
    assert widget._status.value.startswith("Preparing PyTorch")
    assert "Training curves" not in viewer.window.dock_widgets  # the plot comes with matplotlib, in the worker
    release.set()
    qtbot.waitUntil(lambda: widget.ready and widget._start.enabled, timeout=WAIT_MS)
    assert widget._status.value == "Ready." and "cpu" in widget._device.choices
    assert "Training curves" in viewer.window.dock_widgets
