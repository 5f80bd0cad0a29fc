"""``napari-seg-uncertainty demo`` on a machine that cannot open its window: one line that says why and
how to go on, exit status 2, no Qt abort and no traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from napari_seg_uncertainty import cli

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DISPLAY/xcb are Linux's")
QT_MODULES = ("PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "napari", "vispy")


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_seg_uncertainty.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _assert_one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "Aborted" not in result.stderr
    return lines[0]


@linux_only
def test_demo_without_display_says_how_to_go_on_before_importing_qt():
    line = _assert_one_error_line(_demo(_env()))
    assert "no display" in line and "DISPLAY" in line
    assert "napari-seg-uncertainty demo --headless --out DIR" in line
    assert "xvfb-run -a napari-seg-uncertainty demo" in line
    # the same call in one process: nothing of Qt or napari was imported on the way
    code = (
        "import sys; from napari_seg_uncertainty.cli import main; rc = main(['demo']); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r})); sys.exit(rc)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert result.returncode == 2 and result.stdout.strip() == "[]", result.stdout + result.stderr


@linux_only
def test_demo_with_a_missing_xcb_library_names_the_packages(tmp_path):
    # a broken libxcb-cursor.so.0 first on the loader's path: the library a stock Ubuntu desktop lacks
    (tmp_path / "libxcb-cursor.so.0").write_bytes(b"")
    env = _env(
        DISPLAY=os.environ.get("DISPLAY") or ":59999",
        QT_QPA_PLATFORM="xcb",
        LD_LIBRARY_PATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("LD_LIBRARY_PATH")])),
    )
    line = _assert_one_error_line(_demo(env))
    assert "libxcb-cursor.so.0 is missing" in line
    assert "sudo apt-get install libxcb-cursor0 " in line
    for package in cli.QT_XCB_PACKAGES:
        assert f" {package}" in line
    assert "--headless --out DIR" in line


@linux_only
def test_demo_with_a_display_that_does_not_answer_says_so():
    line = _assert_one_error_line(_demo(_env(DISPLAY=":59999", QT_QPA_PLATFORM="xcb")))
    assert "DISPLAY=:59999" in line and "could not connect to display :59999" in line
    assert "--headless --out DIR" in line


def test_missing_libraries_found_by_the_probe_stop_the_demo_before_napari(monkeypatch, capsys):
    import napari_seg_uncertainty.widgets.demo_window as demo

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(
        cli, "_probe_qt", lambda env: cli._QtProbe(134, ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0"), "")
    )
    monkeypatch.setattr(demo, "run_gui_demo", lambda *a, **k: pytest.fail("the window was started"))
    for key, value in {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0 are missing" in err
    assert "install libxcb-cursor0, libxkbcommon-x11-0 and the other libraries" in err


@pytest.mark.parametrize(
    ("env", "platform", "problem"),
    [
        ({}, "linux", True),
        ({"DISPLAY": ""}, "linux", True),
        ({"QT_QPA_PLATFORM": "xcb"}, "linux", True),
        ({"QT_QPA_PLATFORM": "wayland;xcb"}, "linux", True),
        ({"DISPLAY": ":0"}, "linux", False),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
        ({"QT_QPA_PLATFORM": "offscreen"}, "linux", False),
        ({"QT_QPA_PLATFORM": "vnc:size=1280x800"}, "linux", False),
        ({}, "darwin", False),
        ({}, "win32", False),
    ],
)
def test_display_check(env, platform, problem):
    assert (cli._display_problem(env, platform) is not None) == problem


def test_qt_problem_messages():
    env = {"DISPLAY": ":3"}
    assert cli._qt_problem(None, env) is None  # the probe timed out: let the window try
    assert cli._qt_problem(cli._QtProbe(0, ("libxcb-cursor.so.0",)), env) is None  # Wayland worked
    line = cli._qt_problem(cli._QtProbe(1, (), "ModuleNotFoundError: No module named 'napari'"), env)
    assert 'pip install "napari-seg-uncertainty[all]"' in line and "--headless" in line
    stderr = 'qt.qpa.plugin: Could not load the Qt platform plugin "xcb" in "" even though it was found.\n'
    line = cli._qt_problem(cli._QtProbe(-6, (), stderr), env)
    assert "DISPLAY=:3" in line and 'platform plugin "xcb"' in line and "sudo apt-get install" in line
    assert "\n" not in line and "\n" not in cli._display_problem({}, "linux")


@linux_only
def test_probe_passes_on_a_working_display():
    if not os.environ.get("DISPLAY"):
        pytest.skip("no X display in this test run (pytest-xvfb gives one)")
    probe = cli._probe_qt(os.environ)
    assert probe is not None and probe.returncode == 0, probe
    assert probe.missing == ()
    assert cli._gui_preflight(os.environ) is None


def test_the_packages_named_are_the_ones_ci_installs():
    script = (ROOT / ".ci" / "run").read_text()
    ci_packages = set(re.search(r'APT_PACKAGES="(.*?)"', script, flags=re.S).group(1).replace("\\\n", " ").split())
    assert set(cli.QT_XCB_PACKAGES) <= ci_packages
    assert set(cli.QT_XCB_PACKAGES) <= set(cli.QT_XCB_LIBRARIES.values()) | {"libxcb-xinerama0"}


def test_readme_commands_use_a_virtual_environment_and_match_ci():
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / ".ci" / "run").read_text()
    demo, tests = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)[:2]
    venv = "python3 -m venv .venv && . .venv/bin/activate && "
    assert demo.startswith(venv) and demo.endswith("&& napari-seg-uncertainty demo")
    assert tests == venv + "bash .ci/run"
    torch_pin = re.search(r'"torch==[^"]+"', script).group(0)
    assert f'pip install {torch_pin} -e ".[all]"' in demo
    assert f'pip install {torch_pin} -e ".[test]"' in readme and f'pip install -q {torch_pin} -e ".[test]"' in script
    assert "sudo apt-get install " + " ".join(cli.QT_XCB_PACKAGES) in (ROOT / "docs" / "cli.md").read_text()
