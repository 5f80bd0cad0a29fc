"""Soft labels and Load raters docks: a rater painted while the worker reads the layers' arrays (review of
issue 15, #20).

On the CT-size path the raters are stacked in the worker from the layers' own arrays (no copy on the GUI
thread). A paint stroke in that time must not leave a result on show that mixes the data before and after
the stroke: the dock computes again from the painted layers. The worker here is held right after stacking
until the stroke is made, so the stack is always the one before it.
"""

from __future__ import annotations

import threading

import numpy as np

from napari_seg_uncertainty.core.labels import compute_soft_labels
from napari_seg_uncertainty.core.raters.statistics import agreement_map, rater_entropy
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import load_raters as load_raters_module
from napari_seg_uncertainty.widgets import soft_labels as soft_labels_module
from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget
from napari_seg_uncertainty.widgets.soft_labels import SoftLabelsWidget

#: Every voxel of the first rater's (4, 20, 24) map, as data_setitem takes them.
EVERY_VOXEL = tuple(index.reshape(-1) for index in np.indices((4, 20, 24)))


def hold_after_first_call(module, name: str, calls: list[bool]):
    """Wrap ``module.name`` so that its first call, once done, signals ``stacked`` and waits for ``painted``."""
    stacked, painted = threading.Event(), threading.Event()
    original = getattr(module, name)

    def held(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(threading.current_thread() is not threading.main_thread())
        if len(calls) == 1:
            stacked.set()
            painted.wait(30)
        return result

    return held, stacked, painted


def test_a_stroke_while_the_stack_is_read_is_computed_again(make_napari_viewer, qtbot, monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr(_common, "show_error", errors.append)
    monkeypatch.setattr(soft_labels_module, "SYNC_VALUES", 0)  # every stack is made in the worker
    calls: list[bool] = []
    held, stacked, painted = hold_after_first_call(soft_labels_module, "prepare_request", calls)
    monkeypatch.setattr(soft_labels_module, "prepare_request", held)
    rng = np.random.default_rng(1)
    raters = rng.integers(0, 3, size=(3, 4, 20, 24)).astype(np.uint8)
    viewer = make_napari_viewer()
    layers = [viewer.add_labels(r.copy(), name=f"rater{i + 1}") for i, r in enumerate(raters)]
    widget = SoftLabelsWidget(viewer)
    widget._live.value = False
    assert widget.compute(raters=layers, method="rater_mean", compare_method="none") is not None
    qtbot.waitUntil(stacked.is_set, timeout=30_000)
    layers[0].data_setitem(EVERY_VOXEL, 2)  # a stroke (emits the layer's paint event) after the stack was read
    painted.set()
    qtbot.waitUntil(lambda: len(calls) >= 2 and widget.result is not None and not widget.busy, timeout=30_000)
    assert not errors
    assert calls == [True, True]  # stacked twice, both times in the worker
    now = np.stack([np.asarray(layer.data) for layer in layers])
    assert np.all(now[0] == 2)
    expected = compute_soft_labels(now, num_classes=3, method="rater_mean")
    np.testing.assert_array_equal(widget.result.first, expected)
    for k in range(3):
        np.testing.assert_array_equal(viewer.layers[f"soft A: class {k}"].data, expected[k])


def test_load_raters_from_layers_painted_while_read_is_loaded_again(make_napari_viewer, qtbot, monkeypatch):
    errors: list[str] = []
    monkeypatch.setattr(_common, "show_error", errors.append)
    monkeypatch.setattr(load_raters_module, "show_error", errors.append)
    calls: list[bool] = []
    held, stacked, painted = hold_after_first_call(load_raters_module, "load_raters", calls)
    monkeypatch.setattr(load_raters_module, "load_raters", held)
    rng = np.random.default_rng(2)
    viewer = make_napari_viewer()
    layers = [viewer.add_labels(rng.integers(0, 3, size=(4, 20, 24)).astype(np.uint8), name=f"rater{i + 1}")
              for i in range(3)]
    widget = LoadRatersWidget(viewer)
    assert widget.load_from_layers(layers) is not None
    qtbot.waitUntil(stacked.is_set, timeout=30_000)
    layers[0].data_setitem(EVERY_VOXEL, 2)
    painted.set()
    qtbot.waitUntil(lambda: len(calls) >= 2 and widget.statistics is not None and not widget.busy, timeout=30_000)
    assert not errors
    assert calls == [True, True]
    now = np.stack([np.asarray(layer.data) for layer in layers])
    assert np.all(now[0] == 2)
    np.testing.assert_array_equal(widget.statistics.agreement, agreement_map(now, num_classes=3))
    np.testing.assert_array_equal(widget.statistics.entropy, rater_entropy(now, num_classes=3))
