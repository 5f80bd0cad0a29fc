"""Quitting napari never aborts after the SSN samples dock was opened, used and closed with its ×.

Each check runs napari in a subprocess (a crash inside Qt's teardown cannot be caught in-process):
one process opens the dock from the Plugins menu, loads a distribution, moves a slider (the Dice
timer is pending), closes the dock with its title-bar close button, ten times over, then quits;
a few more processes do one such cycle each and quit through ``napari.run()``, as a user does.
Every process must exit with 0 and print no traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import time

    import napari
    import numpy as np
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_seg_uncertainty.core.ssn import save_distribution, synthetic_distribution
    from napari_seg_uncertainty.widgets.ssn_samples import SOURCE_SAVED

    cycles, via_run, folder = int(sys.argv[1]), sys.argv[2] == "run", sys.argv[3]
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    viewer.add_image(np.zeros((6, 24, 28), np.float32), name="image", scale=(3.0, 0.8, 0.8),
                     translate=(10.0, -40.0, -50.0))
    path = save_distribution(f"{folder}/dist.npz", synthetic_distribution((6, 24, 28), num_classes=3, rank=2, seed=1),
                             overwrite=True)


    def wait(condition, timeout=30.0):
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.005)


    def cycle(i):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-seg-uncertainty", "SSN samples")
        widget._source.value = SOURCE_SAVED
        widget._distribution_file.value = path
        widget._num_samples.value = 3
        widget._load_button.changed.emit(True)
        wait(lambda: widget.stack is not None)
        widget._class_sliders[1].value = 2.0  # the Dice timer is now pending
        if i % 3 == 1:
            viewer.dims.ndisplay = 3  # a whole-volume worker may be running
            widget._temperature.value = 1.5
        dock.titleBarWidget().close_button.click()  # the dock's ×
        app.processEvents()
        viewer.dims.ndisplay = 2


    for i in range(cycles):
        cycle(i)
        wait(lambda: False, timeout=0.05)
    if via_run:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-seg-uncertainty", "SSN samples")
        widget._source.value = SOURCE_SAVED
        widget._distribution_file.value = path
        widget._load_button.changed.emit(True)
        QTimer.singleShot(300, lambda: dock.titleBarWidget().close_button.click())
        QTimer.singleShot(700, viewer.close)
        napari.run()
    else:
        viewer.close()
    print("quit cleanly", flush=True)
    """
)


def _run(tmp_path, cycles: int, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "quit_probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    command = [sys.executable, str(script), str(cycles), mode, str(tmp_path)]
    if not env.get("DISPLAY"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=False)


def _assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit code {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr and "RuntimeError" not in result.stderr, result.stderr[-3000:]
    assert "quit cleanly" in result.stdout


def test_ten_dock_open_close_cycles_then_quit(tmp_path):
    _assert_clean(_run(tmp_path, 10, "close"))


@pytest.mark.parametrize("attempt", range(3))
def test_closing_the_dock_then_quitting_through_napari_run(tmp_path, attempt):
    _assert_clean(_run(tmp_path, 1, "run"))
