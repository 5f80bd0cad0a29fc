"""The "Train" dock widget, driven in a real viewer on the demo phantom."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_seg_uncertainty._sample_data import rater_layer_data
from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.core.phantom import make_phantom_raters
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import train as train_module
from napari_seg_uncertainty.widgets.train import TrainWidget
from napari_seg_uncertainty.workflow import training as training_workflow

WAIT_MS = 120_000


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(train_module, "show_error", messages.append)
    return messages


@pytest.fixture
def phantom_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image, raters = make_phantom_raters(2, shape=(40, 40), seed=0)
    for data, kwargs, layer_type in rater_layer_data(image, raters, prefix="phantom "):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    return viewer, image, raters


def make_widget(viewer, tmp_path, *, epochs=2, steps=3):
    train_module.preload_training_modules()  # PyTorch in (a fresh widget loads it in a worker first)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model_size.value = "tiny (8-16-32)"
    widget._epochs.value = epochs
    widget._steps.value = steps
    widget._batch.value = 2
    widget._patch.value = "16, 16"
    widget._device.value = "cpu"
    widget._output.value = str(tmp_path)
    return widget


def test_short_run_adds_prediction_layers_and_checkpoint(
    phantom_viewer, qtbot, tmp_path, errors, record_property
):
    from qtpy.QtCore import QTimer

    viewer, image, raters = phantom_viewer
    widget = make_widget(viewer, tmp_path)
    assert widget._image.value is viewer.layers["phantom image"]  # choices hold the layer objects
    assert [layer.name for layer in widget._raters.value] == [
        f"phantom {n}" for n in raters.rater_names
    ]  # rater layers by default

    # responsiveness: a 10 ms QTimer keeps ticking while the worker trains
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(50)
    clicked = time.perf_counter()
    widget._start.native.click()
    assert widget.state == "training" and not widget._start.enabled
    done_at: list[float] = []
    widget.worker.yielded.connect(lambda r: done_at.append(time.perf_counter()) if r.kind == "done" else None)
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    timer.stop()
    assert errors == []

    records = widget.records
    training = np.array([t for t in ticks if clicked <= t <= done_at[0]])
    assert len(training) >= 2  # the event loop kept running while the worker trained
    stall_training = 1000 * float(np.diff(np.r_[clicked, training, done_at[0]]).max())
    stall_overall = 1000 * float(np.diff(np.array([t for t in ticks if t >= clicked])).max())
    record_property("max_event_loop_stall_training_ms", round(stall_training, 1))
    record_property("max_event_loop_stall_with_result_layers_ms", round(stall_overall, 1))
    print(
        f"event loop while training: {len(training)} ticks of 10 ms, longest gap {stall_training:.1f} ms; "
        f"including adding the result layers: {stall_overall:.1f} ms"
    )

    kinds = [r.kind for r in records]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 6
    steps = [r for r in records if r.kind == "step"]
    epochs = [r for r in records if r.kind == "epoch"]
    assert widget._progress.value == 6 == widget._progress.max
    # the plotted numbers are the records' numbers: epoch loss = mean of that epoch's step losses
    xs, ys = widget._lines["epoch"].get_data()
    np.testing.assert_allclose(xs, [1, 2])
    np.testing.assert_allclose(
        ys, [np.mean([r.loss for r in steps[:3]]), np.mean([r.loss for r in steps[3:]])]
    )
    np.testing.assert_allclose(widget._lines["val_dice"].get_data()[1], [r.val_dice for r in epochs])

    checkpoint = widget._checkpoint.value
    assert checkpoint == widget.checkpoint_path and checkpoint.startswith(str(tmp_path))
    state = load_checkpoint(checkpoint)
    assert state["reason"] == "final" and state["class_names"] == raters.class_names

    probs = viewer.layers["prediction probabilities"].data
    labels = viewer.layers["prediction labels"].data
    entropy = viewer.layers["prediction entropy"].data
    assert probs.shape == (4, 40, 40)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(labels, probs.argmax(0))
    expected_entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(0) / np.log(4)
    np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(viewer.layers["prediction labels"].scale, viewer.layers["phantom image"].scale)
    assert viewer.layers["prediction labels"].metadata["class_names"] == raters.class_names

    # a second run updates the layers in place (no pile-up)
    count = len(viewer.layers)
    widget._start.native.click()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert len(viewer.layers) == count and errors == []


def test_cancel_mid_epoch_keeps_a_checkpoint_and_predicts(phantom_viewer, qtbot, tmp_path, errors):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path, epochs=4, steps=500)
    widget.start()
    qtbot.waitUntil(lambda: sum(r.kind == "step" for r in widget.records) >= 3, timeout=WAIT_MS)
    widget._cancel.native.click()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert errors == []
    assert widget.records[-1].kind == "cancelled"
    state = load_checkpoint(widget.checkpoint_path)
    assert state["reason"] == "cancelled" and 3 <= state["global_step"] < 500  # inside the first epoch
    assert "prediction labels" in viewer.layers
    assert widget.result is not None and widget.result.cancelled


def test_closing_the_dock_cancels_training_and_keeps_a_checkpoint(phantom_viewer, qtbot, tmp_path, errors):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path, epochs=4, steps=500)
    widget.start()
    worker = widget.worker
    qtbot.waitUntil(lambda: sum(r.kind == "step" for r in widget.records) >= 2, timeout=WAIT_MS)
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        viewer.window.remove_dock_widget(widget.native.parent())
    assert errors == []
    assert widget.records[-1].kind == "cancelled"
    state = load_checkpoint(widget.checkpoint_path)
    assert state["reason"] == "cancelled" and state["global_step"] < 500
    assert "prediction labels" not in viewer.layers  # nothing is added once the widget is gone


def test_pause_stops_steps_until_resumed(phantom_viewer, qtbot, tmp_path, errors):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path, epochs=1, steps=40)
    widget.start()
    qtbot.waitUntil(lambda: sum(r.kind == "step" for r in widget.records) >= 2, timeout=WAIT_MS)
    widget._pause.native.click()
    assert widget.state == "paused" and widget._pause.text == "Resume"
    qtbot.waitUntil(lambda: widget.worker.is_paused, timeout=WAIT_MS)
    qtbot.wait(50)  # let records already queued arrive
    seen = len(widget.records)
    qtbot.wait(300)
    assert len(widget.records) == seen  # nothing trains while paused
    widget._pause.native.click()
    assert widget.state == "training"
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert widget.records[-1].kind == "done" and errors == []


def test_ssn_ensemble_run(phantom_viewer, qtbot, tmp_path, errors):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path, epochs=1, steps=2)
    widget.set_method("ssn", "ssn")
    assert not widget._ssn_rank.native.isHidden()  # the SSN settings show for the SSN method
    widget._ssn_rank.value = 3
    widget._ssn_samples.value = 4
    widget._target.value = "random_rater"
    widget.start()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert errors == []
    state = load_checkpoint(widget.checkpoint_path)
    assert state["config"]["head"] == "ssn" and state["config"]["ssn_rank"] == 3
    assert viewer.layers["prediction probabilities"].data.shape == (4, 40, 40)


def test_worker_error_becomes_a_notification_with_advice(
    phantom_viewer, qtbot, tmp_path, errors, monkeypatch
):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path)
    real_train = training_workflow.train

    def out_of_memory(config, data, resume=None, *, split=None):
        gen = real_train(config, data, resume=resume, split=split)
        yield next(gen)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training_workflow, "train", out_of_memory)
    widget.start()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert len(errors) == 1
    assert "out of memory" in errors[0].lower() and "lower the batch size" in errors[0]
    assert widget.failure is not None and "prediction labels" not in viewer.layers
    assert widget._start.enabled  # the viewer and the widget stay usable
    viewer.add_image(np.zeros((4, 4)), name="still usable")


def test_invalid_input_is_reported(phantom_viewer, tmp_path, errors):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path)
    widget._raters.value = []
    assert widget.start() is None
    assert len(errors) == 1 and "no rater Labels layer selected" in errors[0]
    widget.select_layers("phantom image", ["phantom rater 1"])
    widget._patch.value = "15, 16"
    assert widget.start() is None
    assert "divisible by" in errors[-1] and widget.state == "idle"


def test_advice_names_the_remedy():
    assert "lower the batch size" in training_workflow.advice_for(torch.OutOfMemoryError("CUDA out of memory"))
    assert "lower the learning rate" in training_workflow.advice_for(FloatingPointError("loss became nan"))
    assert "settings" in training_workflow.advice_for(ValueError("image contains NaN or infinite values"))
    assert "writable" in training_workflow.advice_for(PermissionError("denied"))


def test_settings_become_the_config(phantom_viewer, tmp_path):
    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path)
    widget.set_method("softseg", "adaptive_wing")
    widget._target.value = "msvls"
    widget._ensemble.value = 3
    widget._dropout.value = 0.25
    widget._mask_background.value = True
    widget._dims.value = 2
    config = widget.build_config(str(tmp_path))
    assert (config.head, config.loss, config.target) == ("softseg", "adaptive_wing", "msvls")
    assert config.ensemble_size == 3 and config.dropout == 0.25 and config.background_mask == "likelihood"
    assert config.spatial_dims == 2 and config.patch_size == (16, 16) and config.channels == (8, 16, 32)
    assert config.epochs == 2 and config.steps_per_epoch == 3 and config.batch_size == 2
    with pytest.raises(ValueError, match="must be one of"):
        widget.set_method("ssn", "ce")


def test_start_with_settings_emits_computed_with_the_outcome(phantom_viewer, qtbot, tmp_path, errors):
    from napari_seg_uncertainty.workflow.training import TrainOutcome

    viewer, _, _ = phantom_viewer
    widget = make_widget(viewer, tmp_path)
    outcomes: list = []
    widget.computed.connect(outcomes.append)
    worker = widget.start(head="softmax", loss="dice", target="msvls", channels=(8, 16, 32), spatial_dims=2,
                          epochs=1, steps_per_epoch=2, patch_size=(16, 16), seed=3)
    assert worker is widget.worker and widget.busy
    qtbot.waitUntil(lambda: bool(outcomes), timeout=WAIT_MS)
    outcome = outcomes[0]
    assert isinstance(outcome, TrainOutcome) and not outcome.cancelled and outcome.failure is None
    assert set(outcome.layers) == {"prediction labels", "prediction entropy", "prediction probabilities"}
    assert outcome.checkpoint == widget.checkpoint_path and not widget.busy and errors == []
    state = load_checkpoint(outcome.checkpoint)
    assert (state["config"]["loss"], state["config"]["target"], state["config"]["seed"]) == ("dice", "msvls", 3)
    with pytest.raises(ValueError, match="channels must be one of"):
        widget.configure(channels=(3, 5))
    assert widget.start(target="nonsense") is None and "target must be one of" in errors[-1]
