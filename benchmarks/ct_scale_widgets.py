"""CT-scale part "widgets": Load raters, Soft labels and Uncertainty maps on a 300x512x512 case in a real viewer.

``python benchmarks/bench_ct_scale.py --part widgets [--shape Z Y X] [--cap GB] [--screenshots DIR]``

The parent process generates the case (``ct_case.make_ct_case``: 4 raters, 3 classes, spacing
(2.5, 0.7, 0.7) mm, non-zero origin) and writes it as NIfTI (image + one file per rater) to a temporary
folder; a child process (under ``memcap.py`` when ``--cap`` is given) opens a shown napari viewer of
1280x800 on a virtual display, docks the three widgets from the Plugins menu and drives them through
their public methods, as a user's clicks would:

1. Load raters from the folder; 2. Load raters from the rater Labels layers;
3. Soft labels: one-hot, LS, SVLS, mSVLS, rater mean, STAPLE, majority vote (method A alone), then
   mSVLS compared with one-hot (A, B and the difference layer);
4. Uncertainty maps: the entropy map of a (C, Z, Y, X) probability layer (the raters' mean one-hot,
   added as setup).

Each step reports the longest event-loop stall (a 20 ms probe timer, see ``bench_gui_stalls.Bench``;
target <= 100 ms), its wall time, and the child's resident memory after it and its peak so far
(``VmHWM``); the child's peak RSS is reported at the end. With ``--trace`` a watchdog thread prints
the GUI thread's Python stack whenever the event loop has not ticked for 80 ms (to find a stall's
cause). ``--screenshots DIR`` saves a 1280x800 window screenshot after each widget's steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
METHODS = ("one_hot", "label_smoothing", "svls", "msvls", "rater_mean", "staple", "majority_vote")
CLASS_NAMES = "background, organ, lesion"
PLUGIN = "napari-seg-uncertainty"


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    """Peak resident memory of this process: ``VmHWM``, which (unlike ``ru_maxrss``) starts afresh at ``exec``, so
    the parent's memory at the fork (the generated case) is not counted."""
    return _status_mb("VmHWM")


def write_case(folder: Path, shape: tuple[int, int, int]) -> dict[str, Any]:
    """The generated CT case as uncompressed NIfTI files (image.nii, rater1.nii …) in ``folder``."""
    sys.path.insert(0, str(HERE))
    from ct_case import make_ct_case

    from napari_seg_uncertainty.core.io import write_image

    start = time.perf_counter()
    case = make_ct_case(tuple(shape))
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "image.nii", case.image, spacing=case.spacing, origin=case.origin)
    for r, labels in enumerate(case.raters):
        write_image(folder / f"rater{r + 1}.nii", labels, spacing=case.spacing, origin=case.origin)
    print(f"wrote the case {shape}, {case.raters.shape[0]} raters, spacing {case.spacing}, origin {case.origin} "
          f"in {time.perf_counter() - start:.1f} s", flush=True)
    return {"folder": str(folder), "shape": list(shape), "spacing": list(case.spacing), "origin": list(case.origin)}


# ---------------------------------------------------------------------------------------------------
# stall tracing
# ---------------------------------------------------------------------------------------------------
class StallTracer:
    """A sampling profiler of stalls: while the probe has not ticked for ``limit_ms``, a watchdog thread samples
    the GUI thread's stack every 10 ms; when the stall ends it prints the stall's length and the frames seen in
    most samples (a frame's share of the stall), skipping the event loop's own frames."""

    def __init__(self, bench: Any, limit_ms: float = 60.0) -> None:
        self.bench = bench
        self.limit = limit_ms / 1e3
        self.main = threading.main_thread().ident
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        samples: list[list[str]] = []
        stall_from = None
        while self.running:
            time.sleep(0.01)
            ticks = self.bench.ticks
            if not ticks:
                continue
            age = time.perf_counter() - ticks[-1]
            if age >= self.limit:
                stall_from = ticks[-1]
                frame = sys._current_frames().get(self.main)
                if frame is not None:
                    samples.append([f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno} {f.name}"
                                    for f in traceback.extract_stack(frame)])
            elif samples:
                self._report(1e3 * (ticks[-1] - stall_from), samples)
                samples = []

    @staticmethod
    def _report(stall_ms: float, samples: list[list[str]]) -> None:
        if stall_ms < 100:
            return
        counts: dict[str, int] = {}
        depth: dict[str, int] = {}
        for stack in samples:
            for i, frame in enumerate(stack):
                depth[frame] = min(depth.get(frame, i), i)
            for frame in set(stack):
                counts[frame] = counts.get(frame, 0) + 1
        skip = ("ct_scale_widgets", "bench_gui_stalls", "qt_event_loop", "qt_main_window.py", "_qt.py:7",
                "<frozen")
        shown = [(n, f) for f, n in counts.items() if not any(s in f for s in skip)]
        shown.sort(key=lambda item: (-item[0], depth[item[1]]))
        lines = "\n".join(f"    {100 * n / len(samples):3.0f}%  {f}" for n, f in shown[:18])
        print(f"--- stall of {stall_ms:.0f} ms ({len(samples)} samples):\n{lines}", flush=True)


# ---------------------------------------------------------------------------------------------------
# the child: one viewer session
# ---------------------------------------------------------------------------------------------------
def session(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    import napari
    from bench_gui_stalls import Bench, rater_mean_probabilities
    from qtpy.QtWidgets import QApplication

    warnings.filterwarnings("once", message="Private attribute access", category=FutureWarning)
    viewer = napari.Viewer(title="ct_scale_widgets", show=True)
    viewer.window._qt_window.resize(1280, 800)
    bench = Bench("ct")
    bench.viewer = viewer
    tracer = StallTracer(bench) if args.trace else None
    memory: list[dict[str, Any]] = []

    def note_memory(step: str) -> None:
        memory.append({"step": step, "rss_mb": round(_rss_mb()), "peak_mb": round(_peak_mb())})
        print(f"    memory after {step}: RSS {memory[-1]['rss_mb']} MB, peak {memory[-1]['peak_mb']} MB", flush=True)

    def shoot(name: str, widget: Any) -> None:
        if args.screenshots:
            from qtpy.QtWidgets import QDockWidget

            dock = widget.native
            while dock is not None and not isinstance(dock, QDockWidget):
                dock = dock.parentWidget()
            if dock is not None:
                dock.raise_()  # its tab in front
            bench.settle(0.5)
            path = Path(args.screenshots) / f"{name}.png"
            viewer.window._qt_window.grab().save(str(path))
            print(f"    screenshot {path}", flush=True)

    bench.settle(1.5)
    docks = {}
    for name in ("Load raters", "Soft labels", "Uncertainty maps"):
        def open_dock(_i: int, name: str = name) -> None:
            docks[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
        bench.measure(f"open dock: {name}", open_dock, lambda: True, timeout=120)
    lr, soft, unc = docks["Load raters"], docks["Soft labels"], docks["Uncertainty maps"]
    note_memory("docks")
    # what napari alone costs per layer on this machine now (a small array: no cost grows with the data)
    small = np.zeros((8, 512, 512), np.float32)
    bench.measure("(baseline) napari add_image 8×512×512, contrast limits given",
                  lambda i: viewer.add_image(small, name=f"baseline image {i}", contrast_limits=(0, 1)),
                  lambda: True, repeats=3, target=False, note="napari alone")
    bench.measure("(baseline) napari add_labels 8×512×512 uint8",
                  lambda i: viewer.add_labels(small.astype(np.uint8), name=f"baseline labels {i}"),
                  lambda: True, repeats=3, target=False, note="napari alone")
    for layer in [layer for layer in viewer.layers if layer.name.startswith("baseline")]:
        viewer.layers.remove(layer)

    # --- Load raters ----------------------------------------------------------------------------------
    lr._class_names.value = CLASS_NAMES
    loaded = lambda: lr.statistics is not None and not lr.busy  # noqa: E731
    bench.measure("Load raters: from files (folder)", lambda _i: lr.load_from_path(args.folder) is not None,
                  loaded, timeout=600)
    note_memory("load from files")
    raters = [viewer.layers[name] for name in lr.raters.rater_names]
    image = viewer.layers["image"]
    print(f"    image {image.data.shape} {image.data.dtype}, scale {tuple(image.scale)}, translate "
          f"{tuple(image.translate)}; raters {[(r.name, r.data.dtype.name) for r in raters]}", flush=True)
    shoot("load_raters", lr)
    if args.reload:
        bench.measure("Load raters: the folder again (layers updated in place)",
                      lambda _i: lr.load_from_path(args.folder) is not None, loaded, timeout=600)
        note_memory("load again")
        raters = [viewer.layers[name] for name in lr.raters.rater_names]
    lr._layers.value = raters
    bench.measure("Load raters: from the Labels layers", lambda _i: lr.load_from_layers() is not None, loaded,
                  timeout=600)
    note_memory("load from layers")

    # --- Soft labels ----------------------------------------------------------------------------------
    soft._live.value = False
    soft._raters.value = raters
    holder: dict[str, Any] = {}

    def soft_compute(method: str, compare: str) -> Any:
        def action(_i: int) -> Any:
            # a weak reference, not the result: its arrays would stay in memory
            holder["soft"] = weakref.ref(soft.result) if soft.result is not None else (lambda: None)
            return soft.compute(method=method, compare_method=compare) is not None
        return action

    soft_done = lambda: not soft.busy and soft.result is not None and soft.result is not holder["soft"]()  # noqa: E731
    methods = METHODS if args.methods == "all" else tuple(args.methods.split(","))
    for method in methods:
        bench.measure(f"Soft labels: {method}", soft_compute(method, "none"), soft_done, timeout=600)
        note_memory(f"soft {method}")
    shoot("soft_labels", soft)
    if not args.skip_compare:
        bench.measure("Soft labels: msvls compared with one_hot (A, B, A−B)", soft_compute("msvls", "one_hot"),
                      soft_done, timeout=600)
        note_memory("soft compare")
        shoot("soft_labels_compare", soft)
        bench.measure("Soft labels: back to one method (B layers removed)", soft_compute("rater_mean", "none"),
                      soft_done, timeout=600)
        note_memory("soft no compare")

    # --- Uncertainty maps -----------------------------------------------------------------------------
    from napari_seg_uncertainty.core.geometry import Geometry

    labels = np.stack([np.asarray(r.data) for r in raters])
    probs = rater_mean_probabilities(labels, 3)
    del labels
    prob_layer = viewer.add_image(probs, name="rater mean probabilities", visible=False, contrast_limits=(0, 1),
                                  metadata={"class_names": [n.strip() for n in CLASS_NAMES.split(",")]},
                                  **Geometry.of(image).layer_kwargs(leading_axes=1))
    del probs
    note_memory("probability layer (setup)")
    unc._probabilities.value = [prob_layer]
    unc_done = lambda: not unc.busy and bool(unc.maps)  # noqa: E731
    bench.measure("Uncertainty maps: entropy map", lambda _i: unc.compute_maps() is not None, unc_done,
                  timeout=600)
    note_memory("entropy map")
    shoot("uncertainty", unc)

    if tracer is not None:
        tracer.running = False
    bench.timer.stop()
    result = {"rows": bench.rows, "memory": memory, "peak_rss_mb": round(_peak_mb()), "errors": bench.errors,
              "warnings": bench.warnings, "load_average": [round(v, 2) for v in os.getloadavg()]}
    viewer.close()
    QApplication.instance().processEvents()
    return result


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--json", required=True)
    parser.add_argument("--methods", default="all")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--reload", action="store_true")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--screenshots", default="")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_gui_stalls import _ensure_display

    display = _ensure_display((1280, 800))
    try:
        result = session(args)
    finally:
        if display is not None:
            display.stop()
    Path(args.json).write_text(json.dumps(result))
    return 0


# ---------------------------------------------------------------------------------------------------
# the part's entry point
# ---------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, rest: list[str]) -> dict[str, Any]:
    """Write the case, run the viewer session in a child process, print a table of stalls and memory."""
    parser = argparse.ArgumentParser(prog="bench_ct_scale.py --part widgets")
    parser.add_argument("--cap", type=float, default=0.0, help="address-space cap of the child in GB (memcap.py)")
    parser.add_argument("--methods", default="all", help=f"comma list of {','.join(METHODS)} (default all)")
    parser.add_argument("--skip-compare", action="store_true", help="skip the A/B comparison step")
    parser.add_argument("--reload", action="store_true", help="load the folder a second time (the case replaced "
                        "in place; twice the case's memory for a moment)")
    parser.add_argument("--trace", action="store_true", help="print the GUI thread's stack during stalls")
    parser.add_argument("--screenshots", default="", help="folder for 1280x800 window screenshots")
    parser.add_argument("--json", default="", help="write the figures as JSON")
    opts = parser.parse_args(rest)
    with tempfile.TemporaryDirectory(prefix="ct-widgets-") as tmp:
        case = write_case(Path(tmp) / "case", tuple(args.shape))
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--folder", case["folder"], "--json",
               str(out), "--methods", opts.methods]
        cmd += ["--skip-compare"] if opts.skip_compare else []
        cmd += ["--trace"] if opts.trace else []
        cmd += ["--reload"] if opts.reload else []
        if opts.screenshots:
            Path(opts.screenshots).mkdir(parents=True, exist_ok=True)
            cmd += ["--screenshots", str(Path(opts.screenshots).resolve())]
        if opts.cap:
            cmd = [sys.executable, str(HERE / "memcap.py"), str(opts.cap), "--", *cmd]
        start = time.perf_counter()
        code = subprocess.call(cmd)
        if code != 0 or not out.exists():
            print(f"the viewer session failed with exit code {code} after {time.perf_counter() - start:.0f} s")
            return {"failed": code}
        result = json.loads(out.read_text())
    result["case"] = case
    result["child_peak_rss_mb"] = result["peak_rss_mb"]
    report(result, cap=opts.cap)
    if opts.json:
        Path(opts.json).write_text(json.dumps(result, indent=1))
    return result


def report(result: dict[str, Any], *, cap: float) -> None:
    shape = "×".join(str(v) for v in result["case"]["shape"])
    print(f"\nCase {shape}, 4 raters, 3 classes; window 1280×800; load average at the end "
          f"{result['load_average']} (shared machine: figures under load)"
          + (f"; address space capped at {cap:g} GB" if cap else ""))
    print("\n| step | stall (ms) | wall (s) | ≤ 100 ms |\n|---|---:|---:|:---:|")
    for row in result["rows"]:
        if row["failure"]:
            mark = f"FAILED ({row['failure'][:80]})"
        else:
            mark = "(info)" if row["target_ms"] is None else ("pass" if row["passed"] else "**FAIL**")
        print(f"| {row['action']} | {row['stall_ms_max']} | {row['wall_s_max']} | {mark} |")
    print("\n| after | RSS (MB) | peak so far (MB) |\n|---|---:|---:|")
    for entry in result["memory"]:
        print(f"| {entry['step']} | {entry['rss_mb']} | {entry['peak_mb']} |")
    print(f"\npeak RSS of the viewer process: {result['child_peak_rss_mb']} MB")
    if result["errors"]:
        print(f"error notifications: {result['errors'][:5]}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        raise SystemExit(child_main(sys.argv[2:]))
    sys.path.insert(0, str(HERE))
    from bench_ct_scale import main

    sys.argv = [sys.argv[0], "--part", "widgets", *sys.argv[1:]]
    main()
