"""SSN samples dock on a distribution computed plane by plane: whole samples and what cannot be computed.

* "Keep this sample" / "Export current sample" compute every plane in a worker that reports its progress in
  the dock's status line, stops when another distribution is loaded or the dock closes, and leaves the planes
  on screen in the distribution's cache; the result equals the in-memory distribution's whole sample.
* The samples layer reads a plane's parameters in one lookup: a plane dropped from the cache reads as empty
  (and is requested) instead of running the source on napari's slicing thread.
* A 3-D SSN too large for memory whose on-disk fallback needs zarr >= 3 that is missing (or zarr 2) becomes
  one notification saying what to do.
"""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core.ssn import ArrayPlaneSource, LazyLowRankLogits, synthetic_distribution
from napari_seg_uncertainty.widgets import _common, _ssn_controls
from napari_seg_uncertainty.widgets.ssn_samples import SAMPLES_LAYER, SSNSamplesWidget

TIMEOUT_MS = 30000


class CountingSource(ArrayPlaneSource):
    """An in-memory distribution's planes, counting the calls (and optionally taking ``delay`` s per plane)."""

    def __init__(self, distribution, delay=0.0):
        super().__init__(distribution)
        self.delay, self.calls, self.threads = delay, 0, set()
        self._lock = threading.Lock()

    def plane_parameters(self, z):
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread())
        time.sleep(self.delay)
        return super().plane_parameters(z)


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(_common, "show_info", lambda _message: None)
    monkeypatch.setattr(_ssn_controls, "show_info", lambda _message: None)
    return messages


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def _shown(layer) -> np.ndarray:
    return np.asarray(layer._slice.image.raw)


def _lazy_widget(viewer, qtbot, full, *, delay=0.0, cache_planes=4):
    source = CountingSource(full, delay)
    lazy = LazyLowRankLogits(source, cache_planes=cache_planes)
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._num_samples.value = 3
    widget.set_distribution(lazy)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    return widget, source


def _go_to_plane(viewer, qtbot, widget, z):
    viewer.dims.set_current_step(1, z)
    qtbot.waitUntil(lambda: z in widget.distribution.cached_planes and not widget.busy, timeout=TIMEOUT_MS)


def test_keep_and_export_a_lazy_sample_report_progress_and_keep_the_planes_on_screen(
    make_napari_viewer, qtbot, tmp_path, errors
):
    full = synthetic_distribution((12, 24, 20), num_classes=3, rank=3, seed=4)
    viewer = make_napari_viewer()
    widget, source = _lazy_widget(viewer, qtbot, full)
    _go_to_plane(viewer, qtbot, widget, 5)
    widget._class_sliders[1].value = -1.5
    _wait_idle(qtbot, widget)
    stack, entry = widget.stack, widget.current_entry()
    index = stack.sample_indices[entry]
    # the in-memory distribution, independently: its whole sample under the same scales
    expected = full.with_class_scales(widget.class_scale_values()).sample_labels_at(index, seed=stack.seed)
    lazy = widget.distribution
    cached, calls = lazy.cached_planes, source.calls
    statuses: list[str] = []
    set_status = widget.set_status
    widget.set_status = lambda message: (statuses.append(message), set_status(message))  # what the dock shows

    kept: list = []
    widget.computed.connect(kept.append)
    widget.keep_sample()
    qtbot.waitUntil(lambda: bool(kept), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(kept[0].data, expected)
    # progress in the status line, plane by plane, cleared at the end
    progress = [s for s in statuses if s.startswith(f"Keeping sample {entry}: plane ")]
    assert progress[0] == f"Keeping sample {entry}: plane 1 of 12 …" and len(progress) == 11
    assert widget.status == ""
    # the planes on screen are still cached (in the same order); each other plane was computed once
    assert set(lazy.cached_planes) == set(cached) and 5 in cached
    assert source.calls == calls + 12 - len(cached)
    np.testing.assert_array_equal(_shown(viewer.layers[SAMPLES_LAYER]), expected[5])

    written: list = []
    widget.computed.connect(written.append)
    widget.export(tmp_path / "current.npy", what="Current sample")
    qtbot.waitUntil(lambda: bool(written), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    np.testing.assert_array_equal(np.load(tmp_path / "current.npy"), expected)
    assert set(lazy.cached_planes) == set(cached) and errors == []


def test_a_whole_lazy_sample_stops_when_another_distribution_loads_or_the_dock_closes(
    make_napari_viewer, qtbot, errors
):
    full = synthetic_distribution((40, 16, 16), num_classes=2, rank=2, seed=1)
    viewer = make_napari_viewer()
    widget, source = _lazy_widget(viewer, qtbot, full, delay=0.05)
    calls = source.calls
    widget.keep_sample()
    qtbot.waitUntil(lambda: "plane 3 of 40" in widget.status, timeout=TIMEOUT_MS)
    widget.set_distribution(synthetic_distribution((16, 16), num_classes=2, rank=2))  # a new case
    _wait_idle(qtbot, widget)
    assert source.calls - calls < 20 and "SSN kept sample 1" not in viewer.layers and widget.status == ""

    widget2, source2 = _lazy_widget(viewer, qtbot, full, delay=0.05)
    calls = source2.calls
    widget2.keep_sample()
    qtbot.waitUntil(lambda: "plane 3 of 40" in widget2.status, timeout=TIMEOUT_MS)
    viewer.close()  # the dock closes: the worker stops before its next plane
    assert widget2._closed and source2.calls - calls < 20 and errors == []


def test_a_plane_dropped_from_the_cache_reads_as_empty_without_running_the_source(
    make_napari_viewer, qtbot, errors
):
    full = synthetic_distribution((6, 16, 16), num_classes=3, rank=2, seed=2)
    viewer = make_napari_viewer()
    widget, source = _lazy_widget(viewer, qtbot, full, cache_planes=1)
    _go_to_plane(viewer, qtbot, widget, 2)
    planes, lazy = widget.planes, widget.distribution
    np.testing.assert_array_equal(planes.sample_plane(0, 2), lazy.slice_labels(2, seed=0, sample_index=0))
    lazy.slice_labels(4)  # a worker's plane evicts plane 2 from the one-plane cache
    requested: list[int] = []
    planes._request = requested.append
    planes.ready = lambda z: True  # as if plane 2 were evicted right after a check that it is cached
    calls = source.calls
    assert not planes.sample_plane(0, 2).any() and not planes.mean_plane(1).any()
    assert source.calls == calls and requested == [2, 1]
    np.testing.assert_array_equal(planes.mean_plane(4), full.mean_prediction()[4])


@pytest.fixture(scope="module")
def checkpoint_3d(tmp_path_factory):
    training = pytest.importorskip("napari_seg_uncertainty.core.training")
    raters = np.zeros((2, 8, 16, 16), dtype=int)
    raters[:, 2:6, 4:12, 4:12] = 1
    config = training.TrainConfig(
        head="ssn", loss="ssn", ssn_rank=2, ssn_samples=2, target="random_rater", spatial_dims=3,
        channels=(2, 4), strides=(2,), patch_size=(8, 16, 16), epochs=1, steps_per_epoch=1, batch_size=1,
        val_fraction=0.0, device="cpu", output_dir=str(tmp_path_factory.mktemp("ssn3d")),
    )  # fmt: skip
    *_, last = training.train(config, (np.linspace(0, 1, 8 * 256, dtype=np.float32).reshape(8, 16, 16), raters))
    return last.checkpoint


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("zarr_state", ["missing", "zarr 2"])
def test_a_3d_ssn_fallback_without_zarr_3_is_a_notification(
    make_napari_viewer, qtbot, monkeypatch, checkpoint_3d, errors, zarr_state
):
    if zarr_state == "missing":
        monkeypatch.setitem(sys.modules, "zarr", None)  # `import zarr` raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "zarr", types.ModuleType("zarr"))
        monkeypatch.setattr(sys.modules["zarr"], "__version__", "2.18.3", raising=False)
    viewer = make_napari_viewer()
    image = viewer.add_image(np.linspace(-1000, 200, 24 * 512 * 512, dtype=np.float32).reshape(24, 512, 512))
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 192 << 20)  # too little for the whole result
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.load(source="checkpoint", path=checkpoint_3d, image=image, num_samples=2)
    qtbot.waitUntil(lambda: bool(errors) or widget.stack is not None, timeout=60000)
    _wait_idle(qtbot, widget)
    assert widget.stack is None and len(errors) == 1
    message = errors[0]
    assert message.startswith("Predicting the SSN distribution failed: ")
    assert "(24, 512, 512)" in message and "192.0 MiB" in message  # what did not fit, and the memory
    assert "zarr >= 3" in message and "2-D SSN" in message  # what is needed, and what works without it
    assert ("not installed" in message) if zarr_state == "missing" else ("zarr 2.18.3 is installed" in message)
    assert "Traceback" not in message and "AttributeError" not in message
