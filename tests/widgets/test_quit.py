"""Quitting never aborts: open every dock, close each with its ×, quit — ten times, nothing on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).with_name("quit_probe.py")
RUNS = 10
ERROR_WORDS = ("Traceback", "RuntimeError", "Error:", "Aborted", "Fatal", "core dumped")


def _crash_report(err: str) -> str:
    """The useful part of stderr: faulthandler's thread stacks (without its module list), or the tail."""
    start = err.find("Fatal Python error")
    if start >= 0:
        return err[start:].split("Extension modules")[0][-6000:]
    return err[-3000:]


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (pytest-xvfb starts one)")
def test_open_close_docks_and_quit_ten_times(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(NAPARI_CONFIG=str(tmp_path / "napari.yaml"), XDG_CONFIG_HOME=str(tmp_path), PYTHONFAULTHANDLER="1")
    failures = []
    for run in range(0, RUNS, 2):  # two at a time: the machine has two cores
        procs = [subprocess.Popen([sys.executable, str(PROBE)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for offset, proc in enumerate(procs):
            out, err = proc.communicate(timeout=240)
            bad = [line for line in err.splitlines() if any(word in line for word in ERROR_WORDS)]
            if proc.returncode != 0 or bad:
                stage = "after the viewer closed" if "viewer closed" in out else "before the viewer closed"
                failures.append(f"run {run + offset}: exit {proc.returncode} {stage}; {_crash_report(err)}")
    assert not failures, "\n".join(failures)
