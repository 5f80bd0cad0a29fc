"""The dock-widget base class: busy state, work in a worker, the ``computed``/``failed`` signals."""

from __future__ import annotations

import numpy as np
import pytest
from magicgui.widgets import PushButton

from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets._base import DockWidget
from napari_seg_uncertainty.widgets._layer_choices import is_labels_layer


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    return messages


class _Doubler(DockWidget):
    def __init__(self, viewer) -> None:
        super().__init__(viewer, status="idle")
        self.layers = self.layer_select(is_labels_layer, label="Layers")
        self.button = PushButton(text="Go")
        self.content.extend([self.layers, self.button])
        self.disable_while_busy(self.button)
        self.finish_layout()

    def compute(self, value: float):
        if value < 0:
            return None
        return self.run(_double, value, action="Doubling")


def _double(value: float) -> float:
    if value == 0:
        raise ValueError("zero")
    return 2 * value


def test_run_emits_computed_and_leaves_busy(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="a")
    widget = _Doubler(viewer)
    assert [layer.name for layer in widget.layers.choices] == ["a"]
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="b")
    assert [layer.name for layer in widget.layers.choices] == ["a", "b"]  # follows the viewer
    assert widget.compute(-1.0) is None and not widget.busy
    with qtbot.waitSignal(widget.computed, timeout=10000) as blocker:
        worker = widget.compute(3.0)
        assert worker is widget.worker and widget.busy and not widget.button.enabled
        assert widget.status == "Doubling…"
    assert blocker.args == [6.0]
    assert not widget.busy and widget.button.enabled and errors == []


def test_failure_notifies_once_and_emits_failed(make_napari_viewer, qtbot, errors):
    widget = _Doubler(make_napari_viewer())
    with qtbot.waitSignal(widget.failed, timeout=10000) as blocker:
        widget.compute(0.0)
    assert blocker.args == ["zero"]
    assert errors == ["Doubling failed: zero"]
    assert not widget.busy and widget.button.enabled and widget.status == "Failed: zero"


def test_a_result_that_cannot_be_shown_fails_the_work_instead_of_leaving_the_dock_busy(
    make_napari_viewer, qtbot, errors
):
    widget = _Doubler(make_napari_viewer())

    def broken_show(result):
        raise TypeError(f"cannot show {result}")

    with qtbot.waitSignal(widget.failed, timeout=10000) as blocker:
        widget.run(_double, 2.0, action="Doubling", returned=broken_show)
    assert blocker.args == ["cannot show 4.0"]
    assert not widget.busy and widget.button.enabled
    assert errors == ["Doubling failed: cannot show 4.0"]
