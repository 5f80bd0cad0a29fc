"""The Train dock's prediction at the end of a run: float32, float16 when only that fits, else a notification."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core._memory import OutputTooLargeError
from napari_seg_uncertainty.core.training import TrainConfig, load_trained_model, predict, streamed, train
from napari_seg_uncertainty.core.training.streamed import estimate_prediction_bytes
from napari_seg_uncertainty.workflow.training import predict_within_memory, predict_within_memory_steps

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py

SHAPE = (6, 24, 24)


def make_case(shape, seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    labels = (radius < shape[-1] * 0.3).astype(np.uint8)
    return (labels + 0.1 * rng.normal(size=shape)).astype(np.float32), np.stack([labels, labels])


@pytest.fixture(scope="module")
def checkpoint():
    image, raters = make_case(SHAPE[1:])
    config = TrainConfig(channels=(4, 8), strides=(2,), num_res_units=0, device="cpu", batch_size=1, epochs=1,
                         steps_per_epoch=1, val_fraction=0.0, output_dir=tempfile.mkdtemp(), patch_size=(16, 16))
    generator = train(config, (image, raters))
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return stop.value.checkpoint


def between_float16_and_float32(checkpoint, shape):
    """An 'available memory' in which the float16 prediction fits and the float32 one does not."""
    trained = load_trained_model(checkpoint)
    f32 = estimate_prediction_bytes(trained, shape, dtype="float32").total
    f16 = estimate_prediction_bytes(trained, shape, dtype="float16").total
    assert f16 < f32
    return int((f16 + f32) / 2 / _memory.MEMORY_FRACTION)


def test_float32_when_it_fits(checkpoint):
    image = make_case(SHAPE, seed=1)[0]
    fitted = predict_within_memory(checkpoint, image)
    assert fitted.note is None and fitted.prediction.probabilities.dtype == np.float32
    np.testing.assert_array_equal(fitted.prediction.probabilities, predict(checkpoint, image).probabilities)


def test_steps_yield_progress_then_the_prediction(checkpoint):
    image = make_case(SHAPE, seed=1)[0]
    steps = predict_within_memory_steps(checkpoint, image, slab_planes=2)  # a 2-D net: 2 slices at a time
    records = []
    while True:
        try:
            records.append(next(steps))
        except StopIteration as stop:
            fitted = stop.value
            break
    assert [r.planes_done for r in records] == [2, 4, 6]
    assert records[-1].fraction == 1.0 and records[-1].planes == SHAPE[0]
    np.testing.assert_array_equal(fitted.prediction.probabilities, predict(checkpoint, image).probabilities)


def test_float16_when_only_that_fits(checkpoint, monkeypatch):
    image = make_case(SHAPE, seed=1)[0]
    reference = predict(checkpoint, image)
    available = between_float16_and_float32(checkpoint, SHAPE)
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: available)
    with pytest.raises(OutputTooLargeError):
        predict(checkpoint, image)
    fitted = predict_within_memory(checkpoint, image)
    assert fitted.prediction.probabilities.dtype == np.float16 and fitted.prediction.entropy.dtype == np.float16
    assert fitted.note.startswith("Probabilities and entropy shown in float16: image shape (6, 24, 24)")
    np.testing.assert_allclose(fitted.prediction.probabilities, reference.probabilities, atol=2.0**-11, rtol=0)


def test_refused_when_neither_fits(checkpoint, monkeypatch):
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 1000)
    with pytest.raises(OutputTooLargeError, match="even in float16") as info:
        predict_within_memory(checkpoint, make_case(SHAPE)[0])
    assert "Predict on" in str(info.value) and "out='probabilities.npy'" in str(info.value)


# --------------------------------------------------------------------------- the Train dock in a viewer


@pytest.fixture
def dock(make_napari_viewer, tmp_path, monkeypatch):
    from napari_seg_uncertainty._sample_data import rater_layer_data
    from napari_seg_uncertainty.core.phantom import make_phantom_raters
    from napari_seg_uncertainty.widgets import _common, _train_prediction
    from napari_seg_uncertainty.widgets import train as train_module
    from napari_seg_uncertainty.widgets.train import TrainWidget

    viewer = make_napari_viewer()
    image, raters = make_phantom_raters(2, shape=(40, 40), seed=0)
    for data, kwargs, layer_type in rater_layer_data(image, raters, prefix="phantom "):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    messages = {"error": [], "warning": []}
    monkeypatch.setattr(_common, "show_error", messages["error"].append)
    monkeypatch.setattr(train_module, "show_error", messages["error"].append)
    monkeypatch.setattr(_train_prediction, "show_warning", messages["warning"].append)
    train_module.preload_training_modules()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model_size.value = "tiny (8-16-32)"
    widget._epochs.value, widget._steps.value, widget._batch.value = 1, 1, 2
    widget._patch.value = "16, 16"
    widget._device.value = "cpu"
    widget._output.value = str(tmp_path)
    return viewer, widget, messages


def limit_prediction_memory(monkeypatch, limit):
    """Only the prediction's memory check sees ``limit`` bytes (training checks its own batches)."""
    real = _memory.check_allocation

    def check(nbytes, **kwargs):
        if nbytes > limit:
            raise OutputTooLargeError(f"{kwargs['cause']}: {kwargs['what']} would need {nbytes} bytes; use less")
        real(nbytes, **kwargs)

    monkeypatch.setattr(streamed, "check_allocation", check)


def test_dock_shows_a_float16_prediction_with_a_warning(dock, qtbot, monkeypatch):
    viewer, widget, messages = dock
    trained_shape = (40, 40)
    limit_prediction_memory(monkeypatch, 0)  # replaced below once the checkpoint exists
    widget.start()
    qtbot.waitUntil(lambda: widget.state in ("predicting", "idle"), timeout=120_000)
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=120_000)
    # the first run was refused: a notification, the dock idle and usable, no layer, the viewer alive
    assert any("Prediction failed" in m and "would need" in m for m in messages["error"])
    assert "prediction labels" not in viewer.layers and widget._start.enabled
    limit = between_float16_and_float32(widget.checkpoint_path, trained_shape)
    limit_prediction_memory(monkeypatch, int(limit * _memory.MEMORY_FRACTION))
    messages["error"].clear()
    widget._run_prediction(widget.checkpoint_path)
    qtbot.waitUntil(lambda: "prediction probabilities" in viewer.layers and widget.state == "idle", timeout=60_000)
    assert messages["error"] == []
    assert len(messages["warning"]) == 1 and "float16" in messages["warning"][0]
    probabilities = viewer.layers["prediction probabilities"].data
    assert probabilities.dtype == np.float16 and probabilities.shape[1:] == (40, 40)
    monkeypatch.undo()
    reference = predict(widget.checkpoint_path, np.asarray(viewer.layers["phantom image"].data))
    np.testing.assert_allclose(probabilities, reference.probabilities, atol=2.0**-11, rtol=0)
    assert viewer.layers["prediction entropy"].data.dtype == np.float16


# --------------------------------------------------------------------------- a cohort case (the Train dock's end)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort

    source = make_phantom_cohort(2, tmp_path_factory.mktemp("cohort"), ndim=2, num_raters=2, shape=(32, 32))
    return load_cohort(source)


def test_case_prediction_falls_back_to_float16_with_a_note(checkpoint, cohort, monkeypatch):
    from napari_seg_uncertainty.widgets._train_cohort import predict_case, predict_case_steps

    case_id = cohort.case_ids[0]
    image = np.asarray(cohort.load_case(case_id).image)
    image = image[0] if image.ndim == 3 else image
    reference = predict(checkpoint, image)
    assert predict_case(checkpoint, cohort, case_id).note is None
    available = between_float16_and_float32(checkpoint, (32, 32))
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: available)
    steps = predict_case_steps(checkpoint, cohort, case_id)
    records = []
    while True:
        try:
            records.append(next(steps))
        except StopIteration as stop:
            result = stop.value
            break
    assert records and records[-1].fraction == 1.0
    assert result.prediction.probabilities.dtype == np.float16
    assert result.note.startswith("Probabilities and entropy shown in float16: image shape (32, 32)")
    np.testing.assert_allclose(result.prediction.probabilities, reference.probabilities, atol=2.0**-11, rtol=0)
    monkeypatch.undo()
    limit_prediction_memory(monkeypatch, 0)  # the case reads; only the prediction is refused
    with pytest.raises(OutputTooLargeError, match="even in float16"):
        predict_case(checkpoint, cohort, case_id)


def test_dock_case_prediction_warns_for_float16_and_notifies_a_refusal(dock, qtbot, monkeypatch, checkpoint, cohort):
    from napari_seg_uncertainty.widgets._train_prediction import CASE_IMAGE_LAYER

    viewer, widget, messages = dock
    case_id = cohort.case_ids[0]
    limit = between_float16_and_float32(checkpoint, (32, 32))
    limit_prediction_memory(monkeypatch, int(limit * _memory.MEMORY_FRACTION))
    widget.checkpoint_path = checkpoint
    widget._run_case_prediction(checkpoint, cohort, case_id)
    qtbot.waitUntil(lambda: "prediction probabilities" in viewer.layers and widget.state == "idle", timeout=60_000)
    assert messages["error"] == [] and CASE_IMAGE_LAYER in viewer.layers
    assert len(messages["warning"]) == 1 and "float16" in messages["warning"][0]
    assert viewer.layers["prediction probabilities"].data.dtype == np.float16
    assert widget.case_prediction.case_id == case_id
    limit_prediction_memory(monkeypatch, 0)
    widget._run_case_prediction(checkpoint, cohort, case_id)
    qtbot.waitUntil(lambda: widget.state == "idle" and bool(messages["error"]), timeout=60_000)
    assert any("Prediction failed" in m and "even in float16" in m for m in messages["error"])
    assert widget._start.enabled
