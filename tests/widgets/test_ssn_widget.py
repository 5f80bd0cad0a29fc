"""The "SSN samples" dock widget, driven in a real viewer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.ssn import SampleLabelStack, save_distribution, synthetic_distribution
from napari_seg_uncertainty.widgets import _common, _ssn_live
from napari_seg_uncertainty.widgets.ssn_samples import (
    MEAN_LAYER,
    SAMPLES_LAYER,
    SOURCE_CHECKPOINT,
    SOURCE_SAVED,
    SOURCE_SYNTHETIC,
    LiveSamples,
    SSNSamplesWidget,
)
from napari_seg_uncertainty.workflow import ssn as ssn_workflow
from napari_seg_uncertainty.workflow.ssn import EXPORT_ALL, EXPORT_CURRENT, EXPORT_DISTRIBUTION

TIMEOUT_MS = 30000


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    return messages


def _displayed(layer) -> np.ndarray:
    """The 2-D plane the viewer currently shows for ``layer``."""
    return np.asarray(layer._slice.image.raw)


def _assert_argmax_of(labels, logits, *, margin=1e-4):
    """``labels`` is the argmax of ``logits (C, ...)`` except where the two best logits nearly tie."""
    expected = np.argmax(logits, axis=0)
    differ = labels != expected
    if differ.any():
        chosen = np.take_along_axis(logits, labels[None].astype(np.intp), axis=0)[0]
        assert np.all(np.abs(logits.max(axis=0) - chosen)[differ] < margin)
    assert differ.mean() < 1e-3


def _distance(a, b, num_classes):
    ious = []
    for c in range(1, num_classes):
        union = np.logical_or(a == c, b == c).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a == c, b == c).sum() / union)
    return 1.0 - float(np.mean(ious))


def _mean_distance(first, second, num_classes):
    return float(np.mean([_distance(a, b, num_classes) for a, b in itertools.product(first, second)]))


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


@pytest.fixture
def saved_distribution(tmp_path):
    dist = synthetic_distribution((40, 48), num_classes=4, rank=6, seed=5, class_names=["bg", "a", "b", "c"])
    path = save_distribution(tmp_path / "dist.npz", dist)
    return path, dist


def _load_saved(qtbot, viewer, path, *, num_samples=6, seed=2):
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._num_samples.value = num_samples
    widget._seed.value = seed
    widget._source.value = SOURCE_SAVED
    widget._distribution_file.value = path
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    return widget


def test_saved_distribution_draws_samples_mean_and_class_sliders(
    make_napari_viewer, qtbot, saved_distribution, errors
):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path)
    assert errors == []
    samples = viewer.layers[SAMPLES_LAYER]
    assert samples._type_string == "labels" and samples.data.shape == (6, 40, 48)
    # every sample is the argmax of the logits drawn with the widget's seed
    logits = dist.sample(6, seed=2)
    for i in range(6):
        _assert_argmax_of(np.asarray(samples.data[i]), logits[i])
    np.testing.assert_array_equal(viewer.layers[MEAN_LAYER].data, np.argmax(dist.mean, axis=0))
    assert [s.label for s in widget._class_sliders] == ["bg", "a", "b", "c"]
    # browsing: the viewer's slider picks the sample on screen
    viewer.dims.set_current_step(0, 4)
    assert widget.current_entry() == 4
    np.testing.assert_array_equal(_displayed(samples), np.asarray(samples.data[4]))
    _wait_idle(qtbot, widget)


def test_class_and_temperature_sliders_redraw_the_sample_on_screen(
    make_napari_viewer, qtbot, saved_distribution, errors
):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path)
    layer = viewer.layers[SAMPLES_LAYER]
    viewer.dims.set_current_step(0, 3)
    before = _displayed(layer).copy()
    base_logits = dist.sample_at(3, seed=2).astype(np.float64)
    mean = dist.mean.astype(np.float64)

    widget._class_sliders[2].value = -2.5  # the slider's changed signal redraws live
    widget._temperature.value = 1.5
    weights = np.array([1.0, 1.0, -2.5, 1.0])[:, None, None]
    expected_logits = mean + 1.5 * weights * (base_logits - mean)
    after = _displayed(layer)
    _assert_argmax_of(after, expected_logits)
    assert not np.array_equal(after, before)
    assert widget.distribution.class_scales == (1.0, 1.0, -2.5, 1.0)

    widget._class_sliders[2].value = 0.0  # no noise left in class 2: its logits are the mean
    _assert_argmax_of(
        _displayed(layer),
        np.concatenate(
            [
                mean[:2] + 1.5 * (base_logits[:2] - mean[:2]),
                mean[2:3],
                mean[3:] + 1.5 * (base_logits[3:] - mean[3:]),
            ]
        ),
    )
    widget._temperature.value = 0.0  # no noise at all: the mean prediction
    np.testing.assert_array_equal(_displayed(layer), np.argmax(mean, axis=0))
    widget._reset_button.changed.emit(True)
    np.testing.assert_array_equal(_displayed(layer), before)
    _wait_idle(qtbot, widget)
    assert errors == []


def test_dice_table_shows_each_sample_against_the_mean(make_napari_viewer, qtbot, saved_distribution, errors):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=4)
    qtbot.waitUntil(lambda: widget.dice is not None, timeout=TIMEOUT_MS)
    samples = np.asarray(viewer.layers[SAMPLES_LAYER].data)
    mean_labels = np.argmax(dist.mean, axis=0)
    for i in range(4):
        for c in range(1, 4):
            a, b = samples[i] == c, mean_labels == c
            expected = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
            assert widget.dice[i, c - 1] == pytest.approx(expected)
            assert widget._dice_table.data[i][c - 1] == f"{expected:.3f}"
    viewer.dims.set_current_step(0, 2)
    assert widget._dice_label.value == f"Sample 2: mean Dice {np.mean(widget.dice[2]):.3f}"
    assert widget._dice_label.tooltip.startswith(f"a {widget.dice[2, 0]:.3f}, b ")
    assert widget._dice_table.native.currentRow() == 2  # the sample on screen is the highlighted row
    # after a slider move the table follows the manipulated samples
    widget._class_sliders[1].value = 3.0
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    samples = np.asarray(viewer.layers[SAMPLES_LAYER].data)
    a, b = samples[0] == 1, mean_labels == 1
    assert widget.dice[0, 0] == pytest.approx(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    _wait_idle(qtbot, widget)
    assert errors == []


def test_new_sample_and_keep_this_sample(make_napari_viewer, qtbot, saved_distribution, errors):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=5)
    layer = viewer.layers[SAMPLES_LAYER]
    viewer.dims.set_current_step(0, 1)
    before = _displayed(layer).copy()
    widget._new_sample_button.changed.emit(True)
    assert widget.stack.sample_indices == (0, 5, 2, 3, 4)
    _assert_argmax_of(_displayed(layer), dist.sample_at(5, seed=2))
    assert not np.array_equal(_displayed(layer), before)

    widget._class_sliders[3].value = 2.0
    widget._keep_button.changed.emit(True)
    qtbot.waitUntil(lambda: len(widget.kept_layers) == 1, timeout=TIMEOUT_MS)
    kept = widget.kept_layers[0]
    assert kept.name == "SSN kept sample 1" and kept._type_string == "labels"
    np.testing.assert_array_equal(kept.data, _displayed(layer))
    assert kept.metadata["sample_index"] == 5 and kept.metadata["class_scales"][3] == 2.0
    # the copy is an editable array, independent of the samples
    sample_before_edit = np.asarray(layer.data[1]).copy()
    assert isinstance(kept.data, np.ndarray) and kept.data.flags.writeable
    kept.paint((1, 1), 3)
    assert kept.data[1, 1] == 3
    np.testing.assert_array_equal(np.asarray(layer.data[1]), sample_before_edit)
    widget._keep_button.changed.emit(True)
    qtbot.waitUntil(lambda: len(widget.kept_layers) == 2, timeout=TIMEOUT_MS)
    assert widget.kept_layers[1].name == "SSN kept sample 2"
    _wait_idle(qtbot, widget)
    assert errors == []


def test_ged_and_diversity_against_rater_layers(make_napari_viewer, qtbot, saved_distribution, errors):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=5)
    mean_labels = np.argmax(dist.mean, axis=0).astype(np.uint8)
    shifted = np.roll(mean_labels, 2, axis=1)
    viewer.add_labels(mean_labels, name="rater1")
    viewer.add_labels(np.stack([shifted, np.zeros_like(mean_labels)]), name="raters 2-3")
    choices = {layer.name for layer in widget._raters.choices}  # the choices are the layers themselves
    assert choices >= {"rater1", "raters 2-3", MEAN_LAYER}
    assert SAMPLES_LAYER not in choices
    widget._raters.value = ["rater1", "raters 2-3"]
    widget._metrics_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.metrics is not None, timeout=TIMEOUT_MS)
    samples = np.asarray(viewer.layers[SAMPLES_LAYER].data)
    raters = np.stack([mean_labels, shifted, np.zeros_like(mean_labels)])
    expected_ged = (
        2 * _mean_distance(samples, raters, 4)
        - _mean_distance(samples, samples, 4)
        - _mean_distance(raters, raters, 4)
    )
    assert widget.metrics.ged2 == pytest.approx(expected_ged, abs=1e-9)
    assert widget.metrics.sample_diversity == pytest.approx(_mean_distance(samples, samples, 4), abs=1e-9)
    assert widget.metrics.rater_diversity == pytest.approx(_mean_distance(raters, raters, 4), abs=1e-9)
    assert f"GED² {expected_ged:.4f}" in widget._metrics_label.value
    assert "(5 samples, 3 raters)" in widget._metrics_label.value
    _wait_idle(qtbot, widget)
    assert errors == []


def test_export_current_sample_all_samples_and_distribution(
    make_napari_viewer, qtbot, saved_distribution, tmp_path, errors
):
    path, dist = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=3)
    widget._class_sliders[1].value = -1.0
    viewer.dims.set_current_step(0, 2)
    shown = _displayed(viewer.layers[SAMPLES_LAYER]).copy()

    widget._export_what.value = EXPORT_CURRENT
    widget._export_file.value = tmp_path / "current.npy"
    widget._export_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(np.load(tmp_path / "current.npy"), shown)

    widget._export_what.value = EXPORT_ALL
    widget._export_file.value = tmp_path / "all.npz"
    widget._export_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    with np.load(tmp_path / "all.npz") as saved:
        np.testing.assert_array_equal(saved["samples"], np.asarray(viewer.layers[SAMPLES_LAYER].data))
        assert saved["class_scales"].tolist() == [1.0, -1.0, 1.0, 1.0] and int(saved["seed"]) == 2

    widget._export_what.value = EXPORT_DISTRIBUTION
    widget._export_file.value = tmp_path / "manipulated.npz"
    widget._export_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    from napari_seg_uncertainty.core.ssn import load_distribution

    reloaded = load_distribution(tmp_path / "manipulated.npz")
    assert reloaded.class_scales == (1.0, -1.0, 1.0, 1.0)
    np.testing.assert_array_equal(reloaded.sample_labels_at(2, seed=2), shown)
    _wait_idle(qtbot, widget)
    assert errors == []


def test_synthetic_3d_demo_shows_lazy_slices(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((6, 20, 24), np.float32), name="volume", scale=(3.0, 1.0, 1.0))
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._source.value = SOURCE_SYNTHETIC
    widget._image_layer.value = "volume"
    widget._num_samples.value = 4
    widget._seed.value = 1
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    layer = viewer.layers[SAMPLES_LAYER]
    assert isinstance(layer.data, LiveSamples) and isinstance(layer.data.stack, SampleLabelStack)
    assert layer.data.shape == (4, 6, 20, 24)
    np.testing.assert_allclose(layer.scale, (1.0, 3.0, 1.0, 1.0))
    dist = synthetic_distribution((6, 20, 24), num_classes=4, rank=10, seed=1, spacing=(3.0, 1.0, 1.0))
    viewer.dims.set_point(0, 3)
    viewer.dims.set_point(1, 4 * 3.0)  # world coordinate of plane 4 (spacing 3)
    assert widget.current_entry() == 3
    _assert_argmax_of(_displayed(layer), dist.slice(4, seed=1, sample_index=3))
    widget._class_sliders[1].value = 0.0
    manipulated = dist.scale_class(1, 0.0)
    _assert_argmax_of(_displayed(layer), manipulated.slice(4, seed=1, sample_index=3))
    _wait_idle(qtbot, widget)
    assert errors == []


def test_checkpoint_source_uses_the_prediction_function(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((16, 18), np.float32), name="image", scale=(0.5, 0.5))
    reference = synthetic_distribution((16, 18), num_classes=3, rank=2, seed=9)
    calls = []

    def fake_predict(checkpoint, image):
        calls.append((checkpoint, image.shape))
        params = {key: getattr(reference, key) for key in ("mean", "cov_factor", "cov_diag")}
        return {
            "mean": params["mean"],
            "cov_factor": params["cov_factor"],
            "cov_diag": params["cov_diag"],
            "class_names": ["bg", "x", "y"],
            "spacing": None,
        }

    monkeypatch.setattr(ssn_workflow, "prediction_function", lambda: fake_predict)
    checkpoint = tmp_path / "model.pt"
    torch.save({"stub": 1}, checkpoint)  # a torch file (the widget checks the header before predicting)
    widget = SSNSamplesWidget(viewer)
    widget._source.value = SOURCE_CHECKPOINT
    widget._checkpoint_file.value = checkpoint
    widget._image_layer.value = "image"
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    assert calls == [(str(checkpoint), (16, 18))]
    assert widget.distribution.class_names == ("bg", "x", "y")
    assert widget.distribution.spacing == (0.5, 0.5)  # from the image layer, as the prediction had none
    np.testing.assert_array_equal(viewer.layers[MEAN_LAYER].data, np.argmax(reference.mean, axis=0))
    _wait_idle(qtbot, widget)
    assert errors == []


def test_problems_become_notifications(
    make_napari_viewer, qtbot, monkeypatch, saved_distribution, tmp_path, errors
):
    viewer = make_napari_viewer()
    widget = SSNSamplesWidget(viewer)
    widget._source.value = SOURCE_SAVED
    widget._distribution_file.value = tmp_path / "missing.npz"
    widget._load_button.changed.emit(True)
    assert errors and errors[-1].startswith("Loading the SSN distribution failed: choose an existing .npz")

    broken = tmp_path / "broken.npz"
    np.savez(broken, mean=np.zeros((2, 4, 4)))
    widget._distribution_file.value = broken
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=TIMEOUT_MS)
    assert "lacks ['cov_factor', 'cov_diag']" in errors[-1]

    monkeypatch.setattr(ssn_workflow, "prediction_function", lambda: None)
    widget._source.value = SOURCE_CHECKPOINT
    widget._load_button.changed.emit(True)
    assert "predict_ssn_distribution" in errors[-1]

    path, _ = saved_distribution
    widget._source.value = SOURCE_SAVED
    widget._distribution_file.value = path
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    widget._raters.value = []
    widget._metrics_button.changed.emit(True)
    assert "select one or more Labels layers" in errors[-1]
    viewer.add_labels(np.zeros((5, 5), np.uint8), name="wrong grid")
    widget._raters.value = ["wrong grid"]
    widget._metrics_button.changed.emit(True)
    assert "layer 'wrong grid' has shape (5, 5)" in errors[-1]
    widget._export_file.value = tmp_path / "samples.unknown"
    widget._export_what.value = EXPORT_ALL
    count = len(errors)
    widget._export_button.changed.emit(True)
    qtbot.waitUntil(lambda: len(errors) > count, timeout=TIMEOUT_MS)
    assert errors[-1].startswith("Exporting SSN samples failed")
    _wait_idle(qtbot, widget)


def test_closing_the_viewer_with_work_pending_is_quiet(make_napari_viewer, qtbot, saved_distribution, errors):
    path, _ = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=3)
    widget._class_sliders[1].value = 2.0  # starts the Dice timer; the viewer closes before it fires
    assert widget.busy
    viewer.close()
    qtbot.wait(2 * _ssn_live._DICE_DELAY_MS)
    assert widget._closed and errors == []


def test_real_ssn_checkpoint_and_image_layer(make_napari_viewer, qtbot, tmp_path, errors):
    training = pytest.importorskip("napari_seg_uncertainty.core.training")
    if not hasattr(training, "predict_ssn_distribution"):
        pytest.skip("core.training has no predict_ssn_distribution")
    raters = np.zeros((2, 16, 16), dtype=int)
    raters[:, 4:12, 4:12] = 1
    raters[1, 4:12, 10:12] = 0
    image = np.ones((16, 16), np.float32)
    config = training.TrainConfig(
        head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater", channels=(4, 8),
        strides=(2,), epochs=1, steps_per_epoch=1, batch_size=1, val_fraction=0.0, device="cpu",
        output_dir=str(tmp_path),
    )  # fmt: skip
    *_, last = training.train(config, (image, raters))
    prediction = training.predict_ssn_distribution(last.checkpoint, image)

    viewer = make_napari_viewer()
    viewer.add_image(image, name="image")
    widget = SSNSamplesWidget(viewer)
    widget._source.value = SOURCE_CHECKPOINT
    widget._checkpoint_file.value = last.checkpoint
    widget._image_layer.value = "image"
    widget._num_samples.value = 3
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    assert errors == []
    assert widget.distribution.rank == 3
    assert widget.distribution.class_names == tuple(prediction.class_names)
    np.testing.assert_array_equal(viewer.layers[MEAN_LAYER].data, np.argmax(prediction.mean, axis=0))
    assert viewer.layers[SAMPLES_LAYER].data.shape == (3, 16, 16)


def test_loading_another_distribution_replaces_samples_and_sliders(
    make_napari_viewer, qtbot, saved_distribution, tmp_path, errors
):
    path, _ = saved_distribution
    viewer = make_napari_viewer()
    widget = _load_saved(qtbot, viewer, path, num_samples=3)
    widget._class_sliders[1].value = 2.0
    other = synthetic_distribution((20, 22), num_classes=3, rank=2, seed=1)
    widget._distribution_file.value = save_distribution(tmp_path / "other.npz", other)
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(
        lambda: widget.stack is not None and widget.stack.shape == (3, 20, 22), timeout=TIMEOUT_MS
    )
    _wait_idle(qtbot, widget)
    assert len(widget._class_sliders) == 3 and widget.class_scale_values() == [1.0, 1.0, 1.0]
    assert viewer.layers[SAMPLES_LAYER].data.shape == (3, 20, 22)
    np.testing.assert_array_equal(viewer.layers[MEAN_LAYER].data, np.argmax(other.mean, axis=0))
    assert errors == []
