"""Docks fit any screen: every widget opened from the Plugins menu, alone and all together, on a
1280×800 and a 1700×1000 screen, keeps the main window inside the screen with every button and
plot reachable (scrolled into view if need be)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("dock_layout_probe.py")


def _start_xvfb(width: int, height: int) -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not report a display number")
    return proc, f":{number}"


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (installed by .ci/run)")
@pytest.mark.parametrize("size", [(1280, 800), (1700, 1000)])
def test_docks_fit_the_screen(size, tmp_path):
    xvfb, display = _start_xvfb(*size)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
        env.update(DISPLAY=display, NAPARI_CONFIG=str(tmp_path / "napari.yaml"), XDG_CONFIG_HOME=str(tmp_path))
        result = subprocess.run([sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=300)
    finally:
        xvfb.kill()
        xvfb.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["screen"] == list(size)
    assert "all" in report["cases"] and len(report["cases"]) == 9
    problems = {}
    for case, entry in report["cases"].items():
        width, height = entry["window"]
        if width > size[0] or height > size[1]:
            problems[case] = f"window grew to {width}×{height}"
        unreachable = {dock: items for dock, items in entry["unreachable"].items() if items}
        if unreachable:
            problems.setdefault(case, "")
            problems[case] += f" unreachable: {unreachable}"
    assert not problems, problems
