"""Command line: ``napari-seg-uncertainty demo|train|predict|evaluate|study``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["main"]

# The shared libraries that Qt's X11 platform plugin ("xcb") loads (``ldd`` of PyQt6's libqxcb.so) with the
# Debian/Ubuntu package of each. Stock Ubuntu desktops miss libxcb-cursor0, which Qt needs since 6.5.
QT_XCB_LIBRARIES = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}
# what the install hint names besides the missing ones: the Qt/napari libraries .ci/run installs
QT_XCB_PACKAGES = (
    "libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 "
    "libxcb-xkb1 libxkbcommon-x11-0 libxcb-randr0 libxcb-shape0 libgl1 libegl1 libfontconfig1 libdbus-1-3"
).split()
# Qt platforms that need no window system (QT_QPA_PLATFORM=offscreen, vnc …): no display check for them
_WINDOW_SYSTEM_PLATFORMS = {"xcb", "wayland", "wayland-egl", "wayland-brcm"}
_HEADLESS_HINT = "napari-seg-uncertainty demo --headless --out DIR"

# Run in a subprocess before the window opens: Qt aborts the whole process (no exception) when its platform
# plugin cannot load or the display does not answer. Prints the X11 libraries that do not load, then tries
# to start Qt as the demo will (napari's import may pick the platform, its Wayland workaround).
_QT_PROBE = """
import ctypes, json, sys
missing = []
for soname in json.loads(sys.argv[1]):
    try:
        ctypes.CDLL(soname)
    except OSError:
        missing.append(soname)
print(json.dumps(missing), flush=True)
import napari
from qtpy.QtGui import QGuiApplication
app = QGuiApplication(sys.argv[:1])
print(app.platformName(), flush=True)
"""


@dataclass(frozen=True)
class _QtProbe:
    """What :func:`_probe_qt` found: the exit status, the X11 libraries that did not load, Qt's stderr."""

    returncode: int
    missing: tuple[str, ...] = ()
    stderr: str = ""


def _needs_window_system(env: Mapping[str, str]) -> bool:
    """False when QT_QPA_PLATFORM names a platform that draws without X11/Wayland (offscreen, vnc …)."""
    chosen = [p.split(":")[0].strip() for p in env.get("QT_QPA_PLATFORM", "").split(";") if p.strip()]
    return all(p in _WINDOW_SYSTEM_PLATFORMS for p in chosen)


def _display_problem(env: Mapping[str, str], platform: str | None = None) -> str | None:
    """The one-line error when there is no display to open a window on (Linux without DISPLAY and
    WAYLAND_DISPLAY, Qt not told to draw elsewhere), else None. Needs no Qt."""
    if not (sys.platform if platform is None else platform).startswith("linux"):
        return None  # macOS and Windows always have their window system
    if not _needs_window_system(env) or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "error: no display to open napari's window on (DISPLAY and WAYLAND_DISPLAY are not set). "
        f"Run the demo without a window: {_HEADLESS_HINT}, or under a virtual display: "
        "xvfb-run -a napari-seg-uncertainty demo (Debian/Ubuntu: sudo apt-get install xvfb)."
    )


def _probe_qt(env: Mapping[str, str], timeout: float = 60.0) -> _QtProbe | None:
    """Start Qt in a subprocess as the demo will; None when the probe did not finish in ``timeout`` s."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _QT_PROBE, json.dumps(list(QT_XCB_LIBRARIES))],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env),
        )
    except (subprocess.TimeoutExpired, OSError):
        return None
    first = proc.stdout.splitlines()[0] if proc.stdout.strip() else "[]"
    try:
        missing = tuple(json.loads(first))
    except ValueError:
        missing = ()
    return _QtProbe(proc.returncode, missing, proc.stderr)


def _qt_problem(probe: _QtProbe | None, env: Mapping[str, str]) -> str | None:
    """The one-line error for a Qt start that failed in :func:`_probe_qt`, else None."""
    if probe is None or probe.returncode == 0:
        return None
    packages = [QT_XCB_LIBRARIES[s] for s in probe.missing if s in QT_XCB_LIBRARIES]
    install = "sudo apt-get install " + " ".join(dict.fromkeys([*packages, *QT_XCB_PACKAGES]))
    if probe.missing:
        return (
            f"error: Qt cannot load its X11 platform plugin (xcb): {', '.join(probe.missing)} "
            f"{'is' if len(probe.missing) == 1 else 'are'} missing. On Debian/Ubuntu install "
            f"{', '.join(packages)} and the other libraries napari's window needs: {install} "
            f"(or run the demo without a window: {_HEADLESS_HINT})."
        )
    lines = [line.strip() for line in probe.stderr.splitlines() if line.strip()]
    if any("No module named" in line or "No Qt bindings" in line for line in lines):
        return (
            "error: the demo window needs napari and a Qt binding, which this installation lacks: "
            'pip install "napari-seg-uncertainty[all]" (from a clone: pip install -e ".[all]"), '
            f"or run the demo without a window: {_HEADLESS_HINT}."
        )
    connect = [line for line in lines if "could not connect to display" in line]
    reason = (connect or [line for line in lines if "qt.qpa" in line] or lines or ["Qt aborted"])[0]
    where = ", ".join(f"{k}={env[k]}" for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM") if env.get(k))
    hint = f"; if the xcb plugin does not load, on Debian/Ubuntu: {install}" if "xcb" in reason and not connect else ""
    return (
        f"error: Qt cannot open a window ({where or 'no display set'}): {reason.removeprefix('qt.qpa.')}. "
        f"Check the display{hint}; or run the demo without a window: {_HEADLESS_HINT}."
    )


def _gui_preflight(env: Mapping[str, str] | None = None) -> str | None:
    """Why the demo window cannot open here, as one line to print, or None when it can.

    Without a display this answers before anything imports Qt; otherwise Qt is started once in a
    subprocess (about 0.3 s), so that a missing library or a dead display gives our message instead
    of Qt's abort."""
    env = os.environ if env is None else env
    problem = _display_problem(env)
    if problem or not sys.platform.startswith("linux"):
        return problem
    if importlib.util.find_spec("napari") is None:
        return _qt_problem(_QtProbe(1, (), "No module named 'napari'"), env)
    return _qt_problem(_probe_qt(env), env)


def _demo(args: argparse.Namespace) -> int:
    if not args.headless:
        problem = _gui_preflight()
        if problem:
            print(problem, file=sys.stderr)
            return 2
    from .workflow.demo import DATASETS, WORKFLOW_DATASET, run_headless_demo

    if args.headless:
        if not args.out:
            print("error: --headless needs --out DIR (the folder to write the outputs to).", file=sys.stderr)
            return 2
        datasets = [args.data] if args.data else list(DATASETS)
        workflow = None if args.no_workflow else (args.data or WORKFLOW_DATASET)
        results = run_headless_demo(
            args.out,
            datasets=datasets,
            workflow=workflow,
            overwrite=args.overwrite,
            seed=args.seed,
            device=args.device,
            log=print,
        )
        for name, result in results.items():
            print(
                f"{name}: {result.num_raters} raters, shape {tuple(result.shape)}, "
                f"{len(result.files)} files written to {args.out}/{name}"
            )
            for row in result.summary[1:]:
                print(
                    f"    {row['name']:<14} mean pairwise Dice {row['mean_pairwise_dice']:.3f}, "
                    f"empty for {row['raters_empty']} rater(s)"
                )
            flow = result.workflow
            if flow is not None and flow.cohort is not None:
                split = flow.cohort["split"]
                print(
                    f"    trained on a cohort of {flow.cohort['cases']} cases (train {len(split['train'])}, "
                    f"val {len(split['val'])}, test {len(split['test'])}); the numbers below are on the "
                    f"held-out test case {flow.cohort['shown_case']!r}"
                )
            if flow is not None:
                for model, numbers in flow.calibration.items():
                    print(
                        f"    {model:<30} ECE {100 * numbers['ece']:.2f}%, NLL {numbers['nll']:.4f}, "
                        f"Brier {numbers['brier']:.5f}"
                    )
                trained = flow.ssn["settings"]["samples"]
                print(
                    f"    SSN samples: GED² {trained['ged2']:.4f}, "
                    f"diversity {trained['sample_diversity']:.4f} "
                    f"(raters {flow.ssn['rater_diversity']:.4f})"
                )
            if flow is not None and flow.study is not None:
                _print_study(flow.study, os.path.join(args.out, name))
        return 0
    import napari

    from .widgets.demo_window import run_gui_demo

    run_gui_demo(args.data or WORKFLOW_DATASET, seed=args.seed)
    napari.run()
    return 0


def _print_study(study: Mapping, folder: str) -> None:
    """The demo study's line and its table (``study.md``), indented under the data set's lines."""
    table = os.path.join(folder, study["folder"], "study.md")
    print(
        f"    study: {len(study['candidates'])} candidates ({', '.join(study['candidates'])}), one seed each, "
        f"compared on {len(study['test_cases'])} test cases in {study['seconds']:.0f} s; {table}:"
    )
    with open(table, encoding="utf-8") as handle:
        for line in handle.read().rstrip().splitlines():
            print(f"      {line}".rstrip())


def _delegate(module: str, func: str, argv: list[str]) -> int:
    try:
        mod = importlib.import_module(f"napari_seg_uncertainty.{module}")
    except ModuleNotFoundError as exc:
        print(f"error: this installation has no {module} module ({exc}).", file=sys.stderr)
        return 2
    return int(getattr(mod, func)(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-seg-uncertainty`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _delegate("cli_train", "train_main", argv[1:])
    if argv and argv[0] == "predict":
        return _delegate("cli_train", "predict_main", argv[1:])
    if argv and argv[0] == "evaluate":
        return _delegate("cli_evaluate", "evaluate_main", argv[1:])
    if argv and argv[0] == "study":
        return _delegate("cli_study", "study_main", argv[1:])
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty",
        description=(
            "Segmentation uncertainty in napari. Subcommands: demo, train CONFIG, predict CHECKPOINT IMAGE, "
            "evaluate CHECKPOINT... --cohort SRC --out DIR, study STUDY.yaml [--out DIR]."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="open napari with the demo data, or run it headless into a folder")
    demo.add_argument("--headless", action="store_true", help="no window: write every output into --out")
    demo.add_argument("--out", help="output folder for --headless")
    demo.add_argument(
        "--data",
        choices=["phantom2d", "phantom3d", "ct2d", "mr3d"],
        help="demo data (GUI default phantom2d; headless default: all four, the workflow on phantom2d)",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the simulated raters, the training and the SSN samples"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace files from an earlier headless run")
    demo.add_argument(
        "--no-workflow",
        action="store_true",
        help="headless: write only the raters' outputs (no soft labels, training, SSN, calibration)",
    )
    demo.add_argument(
        "--device",
        default="auto",
        help="headless: training device, e.g. cpu or cuda:0 (default auto: CUDA, then MPS, then CPU)",
    )
    sub.add_parser("train", help="train a model from a config file (see 'train --help')")
    sub.add_parser("predict", help="run a checkpoint on an image (see 'predict --help')")
    sub.add_parser("evaluate", help="evaluate checkpoints on a cohort's held-out cases (see 'evaluate --help')")
    sub.add_parser("study", help="train, evaluate and compare the candidates of a study file (see 'study --help')")
    args = parser.parse_args(argv)
    try:
        return _demo(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
