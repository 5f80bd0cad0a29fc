"""Widgets opened from the Plugins menu get napari's viewer proxy: they must work through it as well.

napari hands such widgets a ``PublicOnlyProxy`` of the viewer that wraps every object it returns; identity
checks against objects the widget holds (its samples array, a layer it just added) used to fail through it.
"""

from __future__ import annotations

import numpy as np

from napari_seg_uncertainty.core.ssn import synthetic_distribution

PLUGIN = "napari-seg-uncertainty"
TIMEOUT_MS = 60_000


def _labels(shape, seed):
    rng = np.random.default_rng(seed)
    base = np.zeros(shape, np.uint8)
    base[8:24, 8:24] = 1
    base[12:18, 12:18] = 2
    noise = rng.random(shape) < 0.05
    return np.where(noise, (base + 1) % 3, base).astype(np.uint8)


def test_ssn_samples_from_the_plugins_menu_redraw_on_a_slider_move(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((32, 32)).astype(np.float32), name="image",
                             scale=(0.8, 0.7), translate=(-40.0, -50.0))
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "SSN samples")
    assert type(widget.__dict__.get("_viewer", viewer)).__name__ != "PublicOnlyProxy"
    dist = synthetic_distribution((32, 32), num_classes=3, rank=4, seed=3)
    widget.set_distribution(dist, geometry=image)
    qtbot.waitUntil(lambda: "SSN samples" in viewer.layers and widget._samples_layer() is not None
                    and not widget.busy, timeout=TIMEOUT_MS)
    layer = viewer.layers["SSN samples"]
    np.testing.assert_allclose(layer.scale[-2:], (0.8, 0.7))
    np.testing.assert_allclose(layer.translate[-2:], (-40.0, -50.0))
    before = np.array(layer.data[0])
    widget._class_sliders[1].value = 3.0
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    qtbot.wait(200)
    after = np.array(viewer.layers["SSN samples"].data[0])
    scales = np.ones(3)
    scales[1] = 3.0
    expected = np.asarray(widget.stack.distribution.with_class_scale(scales).sample(1, seed=widget.stack.seed)[0]) \
        if hasattr(widget.stack.distribution, "with_class_scale") else None
    assert not np.array_equal(before, after), "the samples layer was not redrawn after the slider moved"
    if expected is not None:
        np.testing.assert_array_equal(after, expected)


def test_calibration_temperature_fit_from_the_plugins_menu(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    raters = [viewer.add_labels(_labels((32, 32), seed), name=f"rater{seed}") for seed in range(3)]
    stack = np.stack([np.asarray(r.data) for r in raters])
    probs = np.stack([(stack == k).mean(axis=0) for k in range(3)]).astype(np.float32)
    probs = 0.8 * probs + 0.2 / 3
    model = viewer.add_image(probs, name="model")
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Calibration")
    widget._probabilities.value = [model]
    widget._target.value = raters
    errors = []
    from napari.utils.notifications import notification_manager

    notification_manager.notification_ready.connect(lambda n: errors.append(str(n.message)))
    widget.fit_temperatures()
    scaled = "model temperature-scaled"
    qtbot.waitUntil(lambda: scaled in viewer.layers and len(widget.results or []) == 2,
                    timeout=TIMEOUT_MS)
    assert not [e for e in errors if "failed" in e], errors
    assert [r.name for r in widget.results] == ["model", scaled]
