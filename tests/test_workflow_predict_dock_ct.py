"""The Train dock shows a CT-size prediction (300x512x512, 3 classes) without stalling the event loop.

The prediction itself (minutes on a CPU for a 3-D U-Net) is benchmarked in benchmarks/ct_scale_predict.py;
here a generated float16 prediction of that size is handed to the dock as its worker would, in a real viewer
holding the CT-size image, and the event loop must keep running while the three layers are added.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_seg_uncertainty.core.training import Prediction

CT = (300, 512, 512)


def ct_prediction(shape, classes=3):
    """A float16 prediction: smooth probabilities (a ball per class), their labels and entropy, plane by plane."""
    z, y, x = (np.arange(s, dtype=np.float32) - s / 2 for s in shape)
    probabilities = np.empty((classes, *shape), np.float16)
    labels = np.empty(shape, np.uint8)
    entropy = np.empty(shape, np.float16)
    radius2 = (y[:, None] / shape[1]) ** 2 + (x[None, :] / shape[2]) ** 2
    for k in range(shape[0]):
        r = np.sqrt(radius2 + (z[k] / shape[0]) ** 2)
        logits = np.stack([r * 8 * (c - 1) for c in range(classes)])
        p = np.exp(logits - logits.max(0))
        p /= p.sum(0)
        probabilities[:, k] = p
        labels[k] = p.argmax(0)
        entropy[k] = -(p * np.log(np.maximum(p, 1e-12))).sum(0) / np.log(classes)
    return Prediction(probabilities=probabilities, labels=labels, entropy=entropy,
                      class_names=["background", "organ", "lesion"], spacing=(2.5, 0.7, 0.7))


@pytest.mark.slow
def test_ct_size_prediction_layers_without_a_stall(make_napari_viewer, qtbot, monkeypatch, record_property):
    from qtpy.QtCore import QTimer

    from napari_seg_uncertainty.core.geometry import Geometry
    from napari_seg_uncertainty.widgets import _common
    from napari_seg_uncertainty.widgets.train import TrainWidget

    errors: list[str] = []
    monkeypatch.setattr(_common, "show_error", errors.append)
    viewer = make_napari_viewer()
    image = np.zeros(CT, np.float32)
    layer = viewer.add_image(image, name="ct", scale=(2.5, 0.7, 0.7), translate=(-370.0, -180.0, -175.5),
                             contrast_limits=(-1000, 400))
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # what collect_data records at the start of a run on this image
    widget._geometry, widget._image_layer, widget._image_shape = Geometry.of(layer, ndim=3), layer, CT
    widget._case, widget._crop_start, widget._crop = None, None, None
    result = ct_prediction(CT)

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(100)
    start = time.perf_counter()
    widget._set_state("predicting")
    widget._show_prediction(result)
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=120_000)
    qtbot.wait(200)
    timer.stop()
    gaps = np.diff(np.array([start, *[t for t in ticks if t >= start]]))
    stall = 1000 * float(gaps.max())
    record_property("max_event_loop_stall_ms", round(stall, 1))
    print(f"adding the CT-size prediction layers: longest event-loop gap {stall:.1f} ms")
    assert errors == []
    for name in ("prediction labels", "prediction entropy", "prediction probabilities"):
        assert name in viewer.layers
    np.testing.assert_allclose(viewer.layers["prediction labels"].scale, (2.5, 0.7, 0.7))
    np.testing.assert_allclose(viewer.layers["prediction labels"].translate, (-370.0, -180.0, -175.5))
    assert viewer.layers["prediction probabilities"].data.shape == (3, *CT)
    assert viewer.layers["prediction probabilities"].data is result.probabilities  # shown as computed, no copy
