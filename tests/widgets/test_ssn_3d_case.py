"""SSN samples on a 3-D case with anisotropic spacing and a non-zero origin, driven in a real viewer.

Layers line up with the image (scale, translate and world positions of voxels), a prediction on a
crop lands on the crop, the 3-D slider path (cached noise, argmax in a worker) gives exactly the
sample LowRankLogits draws itself, and a file that is not a checkpoint gets a message naming it.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.geometry import Geometry
from napari_seg_uncertainty.core.ssn import save_distribution, synthetic_distribution
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets.ssn_samples import (
    KEPT_LAYER_PREFIX,
    MEAN_LAYER,
    SAMPLES_LAYER,
    SOURCE_CHECKPOINT,
    SOURCE_SAVED,
    SSNSamplesWidget,
)
from napari_seg_uncertainty.workflow import ssn as ssn_workflow

TIMEOUT_MS = 60000
SPACING = (3.0, 0.8, 0.8)
ORIGIN = (10.0, -40.0, -50.0)
SHAPE = (6, 20, 24)
CASE = "case07"


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    return messages


@pytest.fixture
def case_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(
        np.random.default_rng(0).random(SHAPE, dtype=np.float32), name="CT", scale=SPACING,
        translate=ORIGIN, metadata={"nsu_case": CASE},
    )
    return viewer, image


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.stack is not None and not widget.busy, timeout=TIMEOUT_MS)


def _widget(viewer, qtbot, *, source, **values):
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget._source.value = source
    for name, value in values.items():
        getattr(widget, name).value = value
    widget._load_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    return widget


def _world_of_voxels(layer, voxels, leading=()):
    return np.array([np.asarray(layer.data_to_world((*leading, *v)))[-3:] for v in voxels])


CORNERS = [(0, 0, 0), (SHAPE[0] - 1, 0, 0), (0, SHAPE[1] - 1, 0), (0, 0, SHAPE[2] - 1), tuple(s - 1 for s in SHAPE)]


def _assert_on_image(layer, image, *, leading=()):
    np.testing.assert_allclose(layer.scale[-3:], SPACING)
    np.testing.assert_allclose(layer.translate[-3:], ORIGIN)
    np.testing.assert_allclose(layer.extent.world[:, -3:], image.extent.world, atol=1e-9)
    np.testing.assert_allclose(
        _world_of_voxels(layer, CORNERS, leading), _world_of_voxels(image, CORNERS), atol=1e-9
    )
    assert layer.metadata.get("nsu_case") == CASE


def test_samples_mean_and_kept_samples_line_up_with_the_image(case_viewer, qtbot, tmp_path, errors):
    viewer, image = case_viewer
    dist = synthetic_distribution(SHAPE, num_classes=3, rank=3, seed=2, class_names=["background", "organ", "lesion"])
    path = save_distribution(tmp_path / "dist.npz", dist)
    widget = _widget(viewer, qtbot, source=SOURCE_SAVED, _distribution_file=path, _image_layer="CT",
                     _num_samples=4)
    assert widget._image_layer.value is image  # the choice holds the layer itself
    samples, mean = viewer.layers[SAMPLES_LAYER], viewer.layers[MEAN_LAYER]
    assert samples.data.shape == (4, *SHAPE)
    _assert_on_image(samples, image, leading=(0,))
    _assert_on_image(mean, image)
    np.testing.assert_array_equal(mean.data, np.argmax(dist.mean, axis=0))
    viewer.dims.set_point(0, 2)
    widget._keep_button.changed.emit(True)
    qtbot.waitUntil(lambda: len(widget.kept_layers) == 1, timeout=TIMEOUT_MS)
    kept = widget.kept_layers[0]
    assert kept.name == f"{KEPT_LAYER_PREFIX} 1"
    _assert_on_image(kept, image)
    np.testing.assert_array_equal(kept.data, dist.sample_labels_at(2, seed=0))
    # class names, not numbers
    assert [s.label for s in widget._class_sliders] == ["background", "organ", "lesion"]
    qtbot.waitUntil(lambda: widget.dice is not None, timeout=TIMEOUT_MS)
    assert list(widget._dice_table.value["columns"]) == ["organ", "lesion", "mean"]
    _wait_idle(qtbot, widget)
    assert errors == []


def test_a_distribution_without_names_takes_the_raters_class_names(case_viewer, qtbot, tmp_path, errors):
    viewer, _ = case_viewer
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="rater 1", scale=SPACING, translate=ORIGIN,
                      metadata={"class_names": ["background", "liver", "tumour"]})
    path = save_distribution(tmp_path / "dist.npz", synthetic_distribution(SHAPE, num_classes=3, rank=2, seed=1))
    widget = _widget(viewer, qtbot, source=SOURCE_SAVED, _distribution_file=path, _image_layer="CT",
                     _num_samples=2)
    assert widget.distribution.class_names == ("background", "liver", "tumour")
    assert [s.label for s in widget._class_sliders] == ["background", "liver", "tumour"]
    assert "liver" in widget._source_info.value
    assert errors == []


def test_choices_hold_layers_and_follow_renames(case_viewer, qtbot, errors):
    viewer, image = case_viewer
    rater = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="rater A")
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._image_layer.value = image
    widget._raters.value = ["rater A"]  # names are accepted too (scripts, the Guide)
    assert widget._raters.value == [rater]
    image.name = "CT renamed"
    rater.name = "rater A (edited)"
    assert widget._image_layer.value is image
    assert widget._raters.value == [rater]
    names = [widget._image_layer.native.itemText(i) for i in range(widget._image_layer.native.count())]
    assert "CT renamed" in names and "CT" not in names
    viewer.layers.remove(rater)
    assert rater not in widget._raters.choices
    assert errors == []


def test_a_prediction_on_a_crop_is_placed_on_the_crop(case_viewer, qtbot, monkeypatch, tmp_path, errors):
    viewer, image = case_viewer
    crop_start, crop_shape = (1, 4, 6), (4, 12, 14)
    reference = synthetic_distribution(crop_shape, num_classes=3, rank=2, seed=3)

    def fake_predict(checkpoint, data):
        params = {key: getattr(reference, key) for key in ("mean", "cov_factor", "cov_diag")}
        return {"mean": params["mean"], "cov_factor": params["cov_factor"], "cov_diag": params["cov_diag"],
                "class_names": ["bg", "x", "y"], "spacing": (9.0, 9.0, 9.0), "crop_start": crop_start}

    monkeypatch.setattr(ssn_workflow, "prediction_function", lambda: fake_predict)
    checkpoint = tmp_path / "model.pt"
    torch.save({"stub": 1}, checkpoint)
    widget = _widget(viewer, qtbot, source=SOURCE_CHECKPOINT, _checkpoint_file=checkpoint, _image_layer="CT",
                     _num_samples=2)
    samples, mean = viewer.layers[SAMPLES_LAYER], viewer.layers[MEAN_LAYER]
    expected_origin = Geometry.of(image).index_to_world(crop_start)
    for layer, leading in ((samples, (0,)), (mean, ())):
        np.testing.assert_allclose(layer.scale[-3:], SPACING)  # the image's spacing, not the checkpoint's
        np.testing.assert_allclose(layer.translate[-3:], expected_origin)
        inside = [(0, 0, 0), tuple(s - 1 for s in crop_shape)]
        in_image = [tuple(a + b for a, b in zip(v, crop_start)) for v in inside]
        np.testing.assert_allclose(_world_of_voxels(layer, inside, leading), _world_of_voxels(image, in_image))
    _wait_idle(qtbot, widget)
    assert errors == []


def test_samples_follow_an_image_with_a_direction(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    angle = np.deg2rad(20)
    direction = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    geometry = Geometry(spacing=SPACING, origin=ORIGIN, direction=direction)
    image = viewer.add_image(np.zeros(SHAPE, np.float32), name="MR", **geometry.layer_kwargs())
    path = save_distribution(tmp_path / "dist.npz", synthetic_distribution(SHAPE, num_classes=2, rank=2, seed=4))
    _widget(viewer, qtbot, source=SOURCE_SAVED, _distribution_file=path, _image_layer="MR", _num_samples=2)
    samples = viewer.layers[SAMPLES_LAYER]
    np.testing.assert_allclose(
        _world_of_voxels(samples, CORNERS, (1,)), _world_of_voxels(image, CORNERS), atol=1e-9
    )
    np.testing.assert_allclose(_world_of_voxels(image, CORNERS), [geometry.index_to_world(v) for v in CORNERS])
    assert errors == []


def test_3d_slider_path_equals_a_direct_sample(case_viewer, qtbot, tmp_path, errors):
    viewer, _ = case_viewer
    dist = synthetic_distribution(SHAPE, num_classes=4, rank=5, seed=6)
    path = save_distribution(tmp_path / "dist.npz", dist)
    widget = _widget(viewer, qtbot, source=SOURCE_SAVED, _distribution_file=path, _image_layer="CT",
                     _num_samples=3, _seed=11)
    layer = viewer.layers[SAMPLES_LAYER]
    viewer.dims.set_point(0, 1)
    viewer.dims.ndisplay = 3
    qtbot.waitUntil(lambda: widget.stack.cached_sample(1) is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert widget.stack.has_noise(1)  # the whole sample's noise is kept for the sliders

    widget._class_sliders[1].value = -2.0
    widget._temperature.value = 1.4
    widget._class_sliders[3].value = 0.5
    qtbot.waitUntil(lambda: widget.stack.cached_sample(1) is not None and not widget.busy, timeout=TIMEOUT_MS)
    manipulated = dist.with_class_scales([1.0, -2.0, 1.0, 0.5]).with_temperature(1.4)
    # independent computations: plane by plane from fresh random numbers, and numpy's argmax of the logits
    expected = manipulated.sample_labels_at(1, seed=11)
    np.testing.assert_array_equal(expected, np.argmax(manipulated.sample_at(1, seed=11), axis=0))
    np.testing.assert_array_equal(widget.stack.cached_sample(1), expected)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), expected)  # the volume on screen

    # "New sample" in 3-D: the new sample arrives in a worker, the screen follows
    widget._new_sample_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack.cached_sample(1) is not None and not widget.busy, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(np.asarray(layer._slice.image.raw), manipulated.sample_labels_at(3, seed=11))

    # back in 2-D: the plane on screen is the plane of the same sample
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(1, ORIGIN[0] + 4 * SPACING[0])
    np.testing.assert_array_equal(
        np.asarray(layer._slice.image.raw), manipulated.sample_labels_at(3, seed=11)[4]
    )
    _wait_idle(qtbot, widget)
    assert errors == []


def test_a_file_that_is_not_a_checkpoint_gets_a_clear_message(case_viewer, qtbot, tmp_path, errors):
    from napari_seg_uncertainty.core.io import write_image

    viewer, _ = case_viewer
    nifti = write_image(tmp_path / "image.nii.gz", np.zeros(SHAPE, np.float32), spacing=SPACING)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": argparse.Namespace(weights=1)}, foreign)  # not loadable with weights_only
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, other)  # a torch file of another program
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._source.value = SOURCE_CHECKPOINT
    widget._image_layer.value = "CT"
    for count, path in enumerate((nifti, foreign, other), start=1):
        widget._checkpoint_file.value = path
        widget._load_button.changed.emit(True)
        qtbot.waitUntil(lambda count=count: len(errors) == count, timeout=TIMEOUT_MS)
        message = errors[-1]
        assert str(path) in message, message
        assert "is not a checkpoint of this plugin: expected a .pt written by Train/" in message, message
        assert "`napari-seg-uncertainty train` or a .npz SSN distribution" in message, message
        assert "Weights only" not in message and "file an issue" not in message, message
    # an .npz distribution chosen as the checkpoint is simply loaded
    dist = synthetic_distribution(SHAPE, num_classes=2, rank=2, seed=8)
    widget._checkpoint_file.value = save_distribution(tmp_path / "dist.npz", dist)
    widget._load_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers[MEAN_LAYER].data, np.argmax(dist.mean, axis=0))
    assert len(errors) == 3
