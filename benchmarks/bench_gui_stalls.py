"""Longest event-loop stall per widget action, in a real napari window, on the demo and on a 3-D case.

Opens a shown napari viewer (a virtual display is started when there is none), docks every widget
from the Plugins menu (``viewer.window.add_plugin_dock_widget``) and drives each action through the
widgets' public methods and buttons, as a user's click would. While an action runs, a 20 ms
``QTimer`` (as in ``bench_training.py``) records its ticks; the longest gap between consecutive ticks
is the longest time the window could not answer (the *stall*). An action is *done* when its widget is
idle again and its output layers exist (the event loop runs meanwhile, in a ``QEventLoop``); the
stall window goes on for ``TAIL_S`` after that, so the first paint of the new layers counts too.

Data sets:

* ``demo``: the 2-D phantom of the GUI demo (``load_demo_data("phantom2d")``: 128×128, four raters,
  four classes), written to NIfTI files and loaded through *Load raters* from the folder.
* ``big``: a 155×240×240 phantom (``make_phantom_raters(3, shape=…)``, nodule merged into the
  lesion: three classes), four raters, spacing (3, 0.8, 0.8) mm and origin (10, −40, −50),
  written to NIfTI files in a temporary folder and loaded through *Load raters* from the folder.

Calibration and Uncertainty get a ``(C, *S)`` float32 probability layer (the raters' mean one-hot,
mixed with 2 % uniform so that it is never exactly 0/1), added to the viewer before those steps.
Train runs a short 2-D training on the demo only. SSN samples gets ``synthetic_distribution``
(4 classes, rank 10) on the case's grid; on ``big`` it is also switched to 3-D display, where the
other layers except the image are hidden first (napari would otherwise upload every visible volume),
and its sliders are moved several times: the *3-D slider figure* is the time from a move until the
updated whole sample is in the layer (and the worker's compute time), with the stall meanwhile.

Target: no stall over 100 ms; a row passes when its worst repeat is within it.

Run::

    python benchmarks/bench_gui_stalls.py --data both              # ~6-10 min on 2 cores
    python benchmarks/bench_gui_stalls.py --data demo --repeats 5 --json /tmp/stalls.json
    python benchmarks/bench_gui_stalls.py --data big --skip-train

With ``--data both`` each data set runs in its own process (a cold start each, memory freed between).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TARGET_MS = 100.0
PROBE_MS = 20
TAIL_S = 0.3  # the event loop runs this long after "done" inside the stall window (first paint)
QUIET_S = 0.3  # and this long before each action, outside it
BIG_SHAPE = (155, 240, 240)
BIG_SPACING = (3.0, 0.8, 0.8)
BIG_ORIGIN = (10.0, -40.0, -50.0)
DEMO_CLASSES = "background, organ, lesion, nodule"
BIG_CLASSES = "background, organ, lesion"
PLUGIN = "napari-seg-uncertainty"
DOCKS = [
    "Load raters",
    "Soft labels",
    "Calibration",
    "Uncertainty maps",
    "Train",
    "SSN samples",
    "Guided workflow (demo)",
]


SECTIONS = ("load", "soft", "calibration", "uncertainty", "train", "ssn")
WIDGET_CLASSES: dict[str, Any] = {}  # filled by _widget_classes() (imports napari)


def _widget_classes() -> dict[str, Any]:
    from napari_seg_uncertainty.widgets.calibration import CalibrationWidget
    from napari_seg_uncertainty.widgets.guide import WorkflowGuide
    from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget
    from napari_seg_uncertainty.widgets.soft_labels import SoftLabelsWidget
    from napari_seg_uncertainty.widgets.ssn_samples import SSNSamplesWidget
    from napari_seg_uncertainty.widgets.train import TrainWidget
    from napari_seg_uncertainty.widgets.uncertainty import UncertaintyWidget

    return {
        "Load raters": LoadRatersWidget, "Soft labels": SoftLabelsWidget, "Calibration": CalibrationWidget,
        "Uncertainty maps": UncertaintyWidget, "Train": TrainWidget, "SSN samples": SSNSamplesWidget,
        "Guided workflow (demo)": WorkflowGuide,
    }


class ActionFailed(RuntimeError):
    """An action reported an error (a napari error notification) or returned no worker."""


# ---------------------------------------------------------------------------------------------------
# display and process
# ---------------------------------------------------------------------------------------------------
def _ensure_display(size: tuple[int, int]) -> Any:
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    from pyvirtualdisplay import Display

    display = Display(visible=False, size=size)
    display.start()
    return display


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(v, 2) for v in load],
        "python": platform.python_version(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def _write_case(folder: Path, image: np.ndarray, labels: np.ndarray, spacing: Any, origin: Any) -> Path:
    from napari_seg_uncertainty.core.io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / "image.nii.gz", image.astype(np.float32), spacing=spacing, origin=origin)
    for r, lab in enumerate(labels):
        write_image(folder / f"rater{r + 1}.nii.gz", lab.astype(np.uint8), spacing=spacing, origin=origin)
    return folder


def make_cases(data: str, root: Path, *, big_shape: tuple[int, ...] = BIG_SHAPE) -> dict[str, Any]:
    """Write case A, case B (another case of the same size) to NIfTI folders under ``root``."""
    from napari_seg_uncertainty.core.phantom import make_phantom_raters
    from napari_seg_uncertainty.workflow.demo import load_demo_data

    start = time.perf_counter()
    if data == "demo":
        image, raters = load_demo_data("phantom2d")
        labels = raters.labels
        spacing, origin = tuple(float(s) for s in raters.scale), (0.0,) * image.ndim
        image_b, raters_b = load_demo_data("phantom2d", seed=1)
        labels_b = raters_b.labels
        class_names = DEMO_CLASSES
    else:
        image, raters = make_phantom_raters(3, shape=big_shape, num_raters=4, seed=0)
        labels = raters.labels.copy()
        labels[labels == 3] = 2  # the nodule joins the lesion: three classes
        spacing, origin = BIG_SPACING, BIG_ORIGIN
        image_b, labels_b = image[..., ::-1], labels[..., ::-1]  # another case: mirrored left-right
        class_names = BIG_CLASSES
    a = _write_case(root / f"{data}_case_a", image, labels, spacing, origin)
    b = _write_case(root / f"{data}_case_b", image_b, labels_b, spacing, origin)
    print(f"[{data}] wrote cases {image.shape}, {labels.shape[0]} raters, spacing {spacing}, origin {origin} "
          f"in {time.perf_counter() - start:.1f} s", flush=True)
    return {"a": str(a), "b": str(b), "class_names": class_names, "shape": image.shape}


def rater_mean_probabilities(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, *S) float32: the raters' mean one-hot, mixed with 2 % uniform; sums to 1 over C."""
    probs = np.zeros((num_classes, *labels.shape[1:]), np.float32)
    for k in range(num_classes):
        probs[k] = (labels == k).mean(axis=0, dtype=np.float32)
    probs *= 0.98
    probs += 0.02 / num_classes
    return probs


# ---------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------
class Bench:
    """The probe timer, an event-loop wait, and the rows of results."""

    def __init__(self, data: str) -> None:
        from napari.utils.notifications import NotificationSeverity, notification_manager
        from qtpy.QtCore import QTimer

        self.data = data
        self.viewer: Any = None
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(PROBE_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))
        self.timer.start()
        self.rows: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []

        def on_notification(notification: Any) -> None:
            severity = getattr(notification, "severity", None)
            text = str(getattr(notification, "message", notification)).splitlines()[0][:300]
            if severity is not None and severity >= NotificationSeverity.ERROR:
                self.errors.append(text)
            elif severity is not None and severity >= NotificationSeverity.WARNING:
                self.warnings.append(text)

        notification_manager.notification_ready.connect(on_notification)

    def stall_ms(self, start: float, end: float) -> float:
        inside = [t for t in self.ticks if start < t <= end]
        return 1e3 * float(max(np.diff([start, *inside, end])))

    def wait(self, condition: Callable[[], bool], timeout: float, *, errors_from: int | None = None) -> float:
        """Run the Qt event loop until ``condition()``; the time it became true.

        Stops early (ActionFailed) when an error notification arrives after ``errors_from``.
        """
        from qtpy.QtCore import QEventLoop, QTimer

        found: list[float] = []
        failed: list[str] = []

        def check() -> bool:
            if errors_from is not None and len(self.errors) > errors_from:
                failed.append(self.errors[-1])
                return True
            if condition():
                found.append(time.perf_counter())
                return True
            return False

        if check():
            if failed:
                raise ActionFailed(failed[0])
            return found[0]
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(5)
        poll.timeout.connect(lambda: check() and loop.quit())
        poll.start()
        QTimer.singleShot(int(timeout * 1e3), loop.quit)
        loop.exec()
        poll.stop()
        if failed:
            raise ActionFailed(failed[0])
        if not found:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        return found[0]

    def settle(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        self.wait(lambda: time.perf_counter() >= end, seconds + 60)

    def run_once(self, action: Callable[[], Any], done: Callable[[], bool], timeout: float,
                 tail: float = TAIL_S) -> tuple[float, float, float, float]:
        """(stall ms, wall s, start, stop) of one action: from the call until done, plus ``tail``."""
        self.settle(QUIET_S)
        before = len(self.errors)
        start = time.perf_counter()
        try:
            result = action()
            if result is False:
                raise ActionFailed(self.errors[-1] if len(self.errors) > before else "the widget refused the action")
            end = self.wait(done, timeout, errors_from=before)
        except (ActionFailed, TimeoutError) as exc:  # keep what was measured until the failure
            self.settle(TAIL_S)
            stop = time.perf_counter()
            exc.partial = (self.stall_ms(start, stop), stop - start)  # type: ignore[union-attr]
            raise
        if tail:
            self.settle(tail)
        stop = time.perf_counter()
        return self.stall_ms(start, stop), end - start, start, stop

    def measure(self, label: str, action: Callable[[int], Any], done: Callable[[], bool], *, repeats: int = 1,
                timeout: float = 300.0, note: str = "", target: bool = True,
                failure: str | None = None) -> dict[str, Any]:
        """Measure ``action(i)`` ``repeats`` times; a row with the median and max stall and wall time.

        ``failure``: a known defect of the action (figures kept, the row does not pass).
        """
        stalls, walls = [], []
        for i in range(repeats):
            try:
                stall, wall, _, _ = self.run_once(lambda i=i: action(i), done, timeout)
            except (ActionFailed, TimeoutError) as exc:
                failure = f"{type(exc).__name__}: {exc}" + (f"; {failure}" if failure else "")
                partial = getattr(exc, "partial", None)
                if partial is not None:  # the failed attempt's figures, until the error arrived
                    stalls.append(partial[0])
                    walls.append(partial[1])
                break
            stalls.append(stall)
            walls.append(wall)
        return self.add_row(label, stalls, walls, note=note, failure=failure, target=target)

    def add_row(self, label: str, stalls: list[float], walls: list[float], *, note: str = "",
                failure: str | None = None, target: bool = True) -> dict[str, Any]:
        row = {
            "data": self.data,
            "action": label,
            "n": len(stalls),
            "stall_ms_median": round(statistics.median(stalls), 1) if stalls else None,
            "stall_ms_max": round(max(stalls), 1) if stalls else None,
            "stall_ms_all": [round(s, 1) for s in stalls],
            "wall_s_median": round(statistics.median(walls), 3) if walls else None,
            "wall_s_max": round(max(walls), 3) if walls else None,
            "target_ms": TARGET_MS if target else None,
            "passed": (bool(stalls) and max(stalls) <= TARGET_MS and failure is None) if target else None,
            "note": note,
            "failure": failure,
        }
        self.rows.append(row)
        status = "FAILED " + failure if failure else (
            "" if not target else ("ok" if row["passed"] else "OVER TARGET"))
        print(f"[{self.data}] {label:52s} stall med {row['stall_ms_median']} / max {row['stall_ms_max']} ms, "
              f"wall med {row['wall_s_median']} s (n={row['n']}) {status}", flush=True)
        return row


# ---------------------------------------------------------------------------------------------------
# the session
# ---------------------------------------------------------------------------------------------------
def run_session(args: argparse.Namespace) -> dict[str, Any]:
    import warnings

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_seg_uncertainty.core.geometry import Geometry
    from napari_seg_uncertainty.widgets._case import case_of

    # napari warns on every private attribute a plugin widget reads through its viewer proxy: once each
    warnings.filterwarnings("once", message="Private attribute access", category=FutureWarning)
    data = args.data
    repeats = max(1, args.repeats)
    big = data == "big"
    heavy = min(repeats, 2) if big else repeats  # actions of several seconds each on the big case
    sections = set(args.sections.split(",")) if args.sections != "all" else set(SECTIONS)
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-gui-stalls-{data}-"))
    cases = make_cases(data, tmp, big_shape=args.big_shape)

    viewer = napari.Viewer(title=f"bench_gui_stalls {data}", show=True)
    app = QApplication.instance()
    window = viewer.window._qt_window
    window.resize(*args.window)
    bench = Bench(data if args.widgets == "plugin" else f"{data} (direct)")
    bench.viewer = viewer
    bench.settle(1.5)  # the window's first paint, outside every measurement
    start = time.perf_counter()
    bench.settle(3.0)
    bench.add_row("idle window, 3 s (machine noise floor)", [bench.stall_ms(start, time.perf_counter())], [3.0],
                  note="nothing running", target=False)

    # --- docks -------------------------------------------------------------------------------------
    widgets: dict[str, Any] = {}
    if args.widgets == "direct":
        WIDGET_CLASSES.update(_widget_classes())

    def open_dock(name: str) -> Callable[[int], Any]:
        def action(_i: int) -> Any:
            if args.widgets == "plugin":  # as the Plugins menu does: the widget gets napari's viewer proxy
                _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
            else:  # as the demo's Guide does: the widget class gets the viewer itself
                widget = WIDGET_CLASSES[name](viewer)
                viewer.window.add_dock_widget(widget, name=name)
            widgets[name] = widget
        return action

    for name in DOCKS:
        if name == "Train":
            done = lambda: widgets.get("Train") is not None and widgets["Train"].ready  # noqa: E731
            note = "until PyTorch is loaded (Start enabled)"
        else:
            done, note = (lambda: True), ""
        bench.measure(f"open dock: {name}", open_dock(name), done, note=note, timeout=120)
    lr, soft = widgets["Load raters"], widgets["Soft labels"]
    cal, unc = widgets["Calibration"], widgets["Uncertainty maps"]
    train, ssn = widgets["Train"], widgets["SSN samples"]

    # --- Load raters --------------------------------------------------------------------------------
    lr._class_names.value = cases["class_names"]  # typed by the user once
    loaded = lambda: lr.statistics is not None and not lr.busy  # noqa: E731

    def load(path: str) -> Callable[[int], Any]:
        return lambda _i: lr.load_from_path(path) is not None

    bench.measure("Load raters: first load (folder)", load(cases["a"]), loaded)
    if "load" in sections:
        load_actions(bench, lr, cases, load, loaded, heavy)
    raters = [viewer.layers[name] for name in lr.raters.rater_names]
    image = next(layer for layer in viewer.layers if layer.name == "image" and case_of(layer) == case_of(raters[0]))
    print(f"[{data}] current case {case_of(image)!r}: image {image.data.shape}, scale {tuple(image.scale)}, "
          f"translate {tuple(image.translate)}; raters {[r.name for r in raters]}", flush=True)
    geometry = Geometry.of(image)
    num_classes = len(cases["class_names"].split(","))
    if "soft" in sections:
        soft_actions(bench, soft, raters, num_classes, heavy)
    if "calibration" in sections or "uncertainty" in sections:
        prob_layer = add_probabilities(bench, viewer, raters, num_classes, geometry, cases)
        if "calibration" in sections:
            calibration_actions(bench, viewer, cal, prob_layer, raters, heavy, big)
        if "uncertainty" in sections:
            uncertainty_actions(bench, unc, prob_layer, raters, heavy, repeats)

    # --- Train (demo only) ----------------------------------------------------------------------------
    if not big and "train" in sections and not args.skip_train:
        run_train(bench, viewer, train, image, raters, tmp, args)

    # --- SSN samples ----------------------------------------------------------------------------------
    slider_3d: dict[str, Any] = {}
    if "ssn" in sections:
        slider_3d = ssn_actions(bench, viewer, ssn, image, geometry, heavy, repeats, big)

    machine = _machine()
    print(f"[{data}] load average now {machine['load_average_1_5_15']}", flush=True)
    viewer.dims.ndisplay = 2
    bench.timer.stop()
    try:
        bench.wait(lambda: not ssn.busy and train.state == "idle", 60)
    except (TimeoutError, ActionFailed):
        pass
    viewer.close()
    app.processEvents()
    return {"rows": bench.rows, "slider_3d": slider_3d, "errors": bench.errors, "warnings": bench.warnings,
            "machine_after": machine, "widgets": args.widgets, "sections": sorted(sections)}


def load_actions(bench: Bench, lr: Any, cases: dict[str, Any], load: Any, loaded: Any, heavy: int) -> None:
    order = [cases["b"], cases["a"]]
    bench.measure("Load raters: load another case (replaces)", lambda i: load(order[i % 2])(i), loaded,
                  repeats=heavy)
    current = order[(heavy - 1) % 2]
    other = cases["a"] if current == cases["b"] else cases["b"]
    lr._keep_previous.value = True
    bench.measure("Load raters: load another case, keep previous", load(other), loaded)
    lr._keep_previous.value = False
    raters = [bench.viewer.layers[name] for name in lr.raters.rater_names]
    lr._layers.value = raters
    bench.measure("Load raters: use selected layers", lambda _i: lr.load_from_layers() is not None, loaded,
                  repeats=heavy)


def soft_actions(bench: Bench, soft: Any, raters: list[Any], num_classes: int, heavy: int) -> None:
    # --- Soft labels --------------------------------------------------------------------------------
    soft._live.value = False
    soft._raters.value = raters
    soft._method.value = "msvls"
    soft._compare.value = "one_hot"
    holder: dict[str, Any] = {}

    def soft_compute(_i: int) -> Any:
        holder["soft"] = soft.result
        return soft.compute() is not None

    soft_done = lambda: not soft.busy and soft.result is not holder.get("soft")  # noqa: E731
    bench.measure("Soft labels: compute, first show (A, B, A−B)", soft_compute, soft_done,
                  note=f"mSVLS vs one-hot: {2 * num_classes + 1} layers")
    soft._live.value = True

    def move_sigma(i: int) -> Any:
        holder["soft"] = soft.result
        soft._sigma.value = 1.5 + 0.5 * i  # "Update live" recomputes
        return None

    bench.measure("Soft labels: σ changed, live update in place", move_sigma, soft_done, repeats=heavy)
    soft._live.value = False



def add_probabilities(bench: Bench, viewer: Any, raters: list[Any], num_classes: int, geometry: Any,
                      cases: dict[str, Any]) -> Any:
    holder: dict[str, Any] = {}
    # --- probability layer (setup, measured as napari's cost) ------------------------------------
    labels = np.stack([np.asarray(r.data) for r in raters])
    probs = rater_mean_probabilities(labels, num_classes)
    names = [n.strip() for n in cases["class_names"].split(",")]
    bench.measure(
        "(setup) viewer.add_image of the (C,*S) probability layer",
        lambda _i: holder.__setitem__("probs", viewer.add_image(
            probs, name="rater mean probabilities", visible=False, metadata={"class_names": names},
            **geometry.layer_kwargs(leading_axes=1))),
        lambda: "probs" in holder, note="napari add_image, not a widget action", target=False)
    return holder["probs"]


def calibration_actions(bench: Bench, viewer: Any, cal: Any, prob_layer: Any, raters: list[Any], heavy: int,
                        big: bool) -> None:

    # --- Calibration --------------------------------------------------------------------------------
    cal._probabilities.value = [prob_layer]
    cal._target.value = raters

    def cal_idle() -> bool:
        worker = cal.worker
        running = worker is not None and getattr(worker, "is_running", False)
        return bool(cal._compute.enabled and cal._fit_temperature.enabled and not running and cal.results)

    bench.measure("Calibration: compute (4 raters as soft target)", lambda _i: cal.compute() is not None,
                  cal_idle, repeats=heavy)
    scaled = f"{prob_layer.name} temperature-scaled"
    bench.measure("Calibration: fit temperature (+ compute both)",
                  lambda _i: cal.fit_temperatures() is not None,
                  lambda: cal_idle() and scaled in viewer.layers, repeats=1 if big else heavy)
    if scaled in viewer.layers:
        viewer.layers[scaled].visible = False



def uncertainty_actions(bench: Bench, unc: Any, prob_layer: Any, raters: list[Any], heavy: int,
                        repeats: int) -> None:
    # --- Uncertainty --------------------------------------------------------------------------------
    unc._probabilities.value = [prob_layer]
    unc._raters.value = raters
    unc_idle = lambda: bool(unc._compute_maps.enabled and unc._rank.enabled and unc._agreement.enabled)  # noqa: E731
    bench.measure("Uncertainty: entropy map", lambda _i: unc.compute_maps() is not None,
                  lambda: unc_idle() and bool(unc.maps), repeats=heavy)
    bench.measure("Uncertainty: rank structures (review table)", lambda _i: unc.rank() is not None,
                  lambda: unc_idle() and bool(unc.review_rows), repeats=heavy)
    rows = min(len(unc.review_rows), 50)
    if rows:
        bench.measure("Uncertainty: review row selected (jump there)",
                      lambda i: unc._review_table.native.selectRow((i + 1) % rows), lambda: True,
                      repeats=max(repeats, 3), note="a click on a row: slider and camera move")
    bench.measure("Uncertainty: Dice vs raters", lambda _i: unc.compute_agreement() is not None,
                  lambda: unc_idle() and bool(unc.agreement_rows), repeats=heavy)



def ssn_actions(bench: Bench, viewer: Any, ssn: Any, image: Any, geometry: Any, heavy: int, repeats: int,
                big: bool) -> dict[str, Any]:
    from napari_seg_uncertainty.core.ssn import synthetic_distribution
    from napari_seg_uncertainty.widgets._case import case_of
    from napari_seg_uncertainty.widgets.ssn_samples import MEAN_LAYER, SAMPLES_LAYER

    data = bench.data
    holder: dict[str, Any] = {}
    t0 = time.perf_counter()
    shape = tuple(image.data.shape)
    dist = synthetic_distribution(shape, num_classes=4, rank=10, seed=0, spacing=geometry.spacing)
    print(f"[{data}] synthetic_distribution{shape}, 4 classes, rank 10: {time.perf_counter() - t0:.1f} s "
          "(setup, not measured)", flush=True)
    if big:
        for layer in viewer.layers:  # 3-D display later: only the image and the SSN layers are drawn
            layer.visible = layer is image
    ssn_idle = lambda: not ssn.busy  # noqa: E731

    def set_distribution(_i: int) -> Any:
        ssn.set_distribution(dist, geometry=geometry, case=case_of(image))

    bench.measure("SSN: set distribution (mean + 10 samples + Dice)", set_distribution,
                  lambda: ssn.stack is not None and SAMPLES_LAYER in viewer.layers and MEAN_LAYER in viewer.layers
                  and ssn_idle(), note="until idle, Dice table included")

    # The widget redraws only a samples layer whose data it recognises (layer.data is its LiveSamples);
    # through napari's viewer proxy (dock from the Plugins menu) that check fails and nothing is redrawn.
    broken = SAMPLES_LAYER in viewer.layers and ssn._samples_layer() is None
    redraw = None
    if broken:
        redraw = ("widget bug: SSNSamplesWidget._samples_layer() is None (layer.data is not self.live through "
                  "the viewer proxy), so slider moves / new sample do not redraw the layer")
        print(f"[{data}] {redraw}", flush=True)

    def draw(_i: int) -> Any:
        holder["stack"] = ssn.stack
        ssn._draw_button.native.click()

    bench.measure("SSN: draw samples", draw, lambda: ssn.stack is not holder["stack"] and ssn_idle(),
                  repeats=heavy, note="until idle, Dice table included")
    bench.measure("SSN: new sample", lambda _i: ssn._new_sample_button.native.click(), ssn_idle,
                  repeats=heavy, note="until idle, Dice table included", failure=redraw)
    scale_values = [1.5, 0.5, 2.0, -1.0, 2.5, 0.0, 1.0]
    slider = ssn._class_sliders[1]
    bench.measure("SSN: class-scale slider move (2-D display)",
                  lambda i: setattr(slider, "value", scale_values[i % len(scale_values)]), ssn_idle,
                  repeats=heavy, note="until idle, Dice table included", failure=redraw)
    bench.measure("SSN: temperature move (2-D display)",
                  lambda i: setattr(ssn._temperature, "value", [0.5, 1.5, 1.0, 2.0][i % 4]), ssn_idle,
                  repeats=heavy, note="until idle, Dice table included", failure=redraw)
    slider_3d: dict[str, Any] = {}
    if big:
        slider_3d = run_ssn_3d(bench, viewer, ssn, repeats, SAMPLES_LAYER, timeout=30 if broken else 120)
    return slider_3d



def run_train(bench: Bench, viewer: Any, train: Any, image: Any, raters: list[Any], tmp: Path,
              args: argparse.Namespace) -> None:
    """A short 2-D training: the stall while it trains, and while the prediction layers arrive."""
    import torch

    train.select_layers(image, raters)
    train._model_size.value = "small (16-32-64)"
    train._epochs.value = 1
    train._steps.value = args.train_steps
    train._batch.value = 4
    train._patch.value = "64, 64"
    train._device.value = "cpu"
    train._output.value = str(tmp / "train")
    layers = ("prediction labels", "prediction entropy", "prediction probabilities")
    training, arriving, walls_t, walls_p = [], [], [], []
    failure = None
    for _ in range(args.train_repeats):
        bench.settle(QUIET_S)
        before = len(bench.errors)
        start = time.perf_counter()
        try:
            if train.start() is None:
                raise ActionFailed(bench.errors[-1] if len(bench.errors) > before else "Start refused")
            trained = bench.wait(lambda: train.state != "training", 600, errors_from=before)
            done = bench.wait(lambda: train.state == "idle" and all(n in viewer.layers for n in layers), 300,
                              errors_from=before)
        except (ActionFailed, TimeoutError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
            break
        bench.settle(TAIL_S)
        stop = time.perf_counter()
        training.append(bench.stall_ms(start, trained))
        arriving.append(bench.stall_ms(trained, stop))
        walls_t.append(trained - start)
        walls_p.append(done - trained)
        for name in layers:
            viewer.layers[name].visible = False
    note = (f"{args.train_steps} steps, batch 4, 64×64, U-Net 16-32-64, CPU, "
            f"{torch.get_num_threads()} torch threads")
    bench.add_row("Train: while training", training, walls_t, note=note, failure=failure)
    bench.add_row("Train: prediction → layers arrive", arriving, walls_p,
                  note="predict in a worker, 3 layers added", failure=failure)


def run_ssn_3d(bench: Bench, viewer: Any, ssn: Any, repeats: int, samples_name: str, *,
               timeout: float = 120) -> dict[str, Any]:
    """Switch to 3-D display, then move sliders: the 3-D slider figure."""
    layer = viewer.layers[samples_name]
    shown: list[float] = []
    layer.events.set_data.connect(lambda _e=None: shown.append(time.perf_counter()))

    def on_screen() -> bool:
        stack = ssn.stack
        if stack is None or ssn._volume_running:
            return False
        entry = ssn.current_entry()
        cached = stack.cached_sample(entry)
        if cached is None:
            return False
        raw = getattr(getattr(layer, "_slice", None), "image", None)
        raw = getattr(raw, "raw", None)
        return raw is not None and np.shares_memory(np.asarray(raw), cached)

    bench.measure("SSN: switch to 3-D display", lambda _i: setattr(viewer.dims, "ndisplay", 3),
                  lambda: on_screen(), note="until the whole sample is in the layer; target ≤ 1 s wall too",
                  timeout=300)
    bench.wait(lambda: not ssn._volume_running, 300)
    # the worker's compute time per move: time SampleLabelStack.sample on the stack in use
    computes: list[float] = []
    stack = ssn.stack
    original = stack.sample

    others: list[float] = []  # calls of the Dice / metrics workers (they pass keep_noise)

    def timed_sample(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            (others if "keep_noise" in k else computes).append(1e3 * (time.perf_counter() - t))

    stack.sample = timed_sample
    moves = max(5, 2 * repeats)
    sliders = [ssn._class_sliders[1], ssn._temperature, ssn._class_sliders[2]]
    latencies, stalls, compute_per_move, overlap = [], [], [], []
    failure = None
    for i in range(moves):
        slider = sliders[i % len(sliders)]
        value = float(np.round(0.5 + (i % 9) * 0.25, 2))
        if abs(float(slider.value) - value) < 1e-6:
            value += 0.1
        n_before, o_before = len(computes), len(others)
        try:
            stall, latency, start, _stop = bench.run_once(lambda s=slider, v=value: setattr(s, "value", v),
                                                          on_screen, timeout)
        except (ActionFailed, TimeoutError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
            break
        arrived = [t for t in shown if t >= start]
        if arrived:
            latency = max(latency, arrived[-1] - start)
        latencies.append(latency)
        stalls.append(stall)
        compute_per_move.append(sum(computes[n_before:]))
        overlap.append(len(others) > o_before)
    stack.sample = original
    bench.add_row("SSN: slider move in 3-D display (to sample on screen)", stalls, latencies,
                  note="class scale / temperature; wall = move → updated sample in the layer", failure=failure)
    # the Dice table recomputes once the sliders rest: measured from the last move until idle
    bench.measure("SSN: sliders at rest → Dice table (3-D)", lambda _i: None, lambda: not ssn.busy,
                  note="timer 1.5 s, then 10 whole samples in a worker")
    figure = {
        "grid": list(ssn.stack.distribution.spatial_shape) if ssn.stack is not None else None,
        "moves": len(latencies),
        "latency_ms_median": round(1e3 * statistics.median(latencies), 1) if latencies else None,
        "latency_ms_max": round(1e3 * max(latencies), 1) if latencies else None,
        "latency_ms_all": [round(1e3 * v, 1) for v in latencies],
        "compute_ms_median": round(statistics.median(compute_per_move), 1) if compute_per_move else None,
        "compute_ms_all": [round(v, 1) for v in compute_per_move],
        "moves_with_dice_worker_running": int(sum(overlap)),
        "stall_ms_median": round(statistics.median(stalls), 1) if stalls else None,
        "stall_ms_max": round(max(stalls), 1) if stalls else None,
        "target_ms": TARGET_MS,
        "failure": failure,
    }
    return figure


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | action | n | stall median (ms) | stall max (ms) | wall median (s) | target ≤ 100 ms | note |",
        "|---|---|---:|---:|---:|---:|:---:|---|",
    ]
    for r in rows:
        if r["failure"]:
            mark = f"FAILED ({r['failure'][:90]})"
        elif r["target_ms"] is None:
            mark = "(info)"
        else:
            mark = "pass" if r["passed"] else "**FAIL**"
        wall = _fmt(r["wall_s_median"], 2) if r["wall_s_median"] is not None else "–"
        lines.append(
            f"| {r['data']} | {r['action']} | {r['n']} | {_fmt(r['stall_ms_median'])} | "
            f"{_fmt(r['stall_ms_max'])} | {wall} | {mark} | {r['note']} |"
        )
    return "\n".join(lines)


def slider_figure_text(figure: dict[str, Any]) -> str:
    if not figure:
        return ""
    if figure.get("latency_ms_median") is None:
        return f"3-D slider figure: no move measured ({figure.get('failure')})"
    ok = figure["latency_ms_max"] <= TARGET_MS and figure["stall_ms_max"] <= TARGET_MS
    grid = "×".join(str(v) for v in figure.get("grid") or BIG_SHAPE)
    return (
        f"3-D slider figure ({grid}, 4 classes, rank 10, "
        f"{figure['moves']} moves): move → updated sample in the layer median {figure['latency_ms_median']:.0f} ms "
        f"(max {figure['latency_ms_max']:.0f}); worker compute median {figure['compute_ms_median']:.0f} ms; "
        f"longest stall median {figure['stall_ms_median']:.0f} ms (max {figure['stall_ms_max']:.0f}); "
        f"Dice worker busy during {figure.get('moves_with_dice_worker_running', 0)} of the moves; "
        f"target ≤ {TARGET_MS:.0f} ms: {'pass' if ok else 'FAIL'}"
    )


def report(results: dict[str, Any], json_path: str | None) -> None:
    rows = [r for data in results["data"].values() for r in data.get("rows", [])]
    print()
    print(f"Machine: {results['machine']['cpus']} CPUs, load average at start "
          f"{results['machine']['load_average_1_5_15']} (shared machine), probe {PROBE_MS} ms, "
          f"tail {TAIL_S} s after done")
    print()
    print(markdown_table(rows))
    for name, data in results["data"].items():
        text = slider_figure_text(data.get("slider_3d") or {})
        if text:
            print()
            print(text)
        if data.get("errors"):
            print(f"\n[{name}] error notifications: {data['errors'][:5]}")
        if data.get("machine_after"):
            print(f"[{name}] load average at the end: {data['machine_after']['load_average_1_5_15']}")
    over = [r for r in rows if r["target_ms"] is not None and not r["passed"]]
    print(f"\n{len(over)} of {sum(r['target_ms'] is not None for r in rows)} actions over the "
          f"{TARGET_MS:.0f} ms target or failed.")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
        print(f"wrote {json_path}")


# ---------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["demo", "big", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the cheap actions (default 3; "
                        "actions of several seconds on the big case run at most 2 times)")
    parser.add_argument("--skip-train", action="store_true", help="skip the short training on the demo")
    parser.add_argument("--train-steps", type=int, default=20, help="training steps (default 20)")
    parser.add_argument("--train-repeats", type=int, default=1, help="training runs (default 1)")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--screen", default="1600x1000", help="virtual display size (default 1600x1000)")
    parser.add_argument("--window", default="1280x800", help="viewer window size (default 1280x800)")
    parser.add_argument("--big-shape", default="155x240x240", help="grid of the big case (default 155x240x240; "
                        "smaller for a quick smoke test)")
    parser.add_argument("--widgets", choices=["plugin", "direct"], default="plugin",
                        help="plugin (default): docks from the Plugins menu (viewer.window.add_plugin_dock_widget; "
                        "widgets get napari's viewer proxy); direct: Widget(viewer) docked with add_dock_widget, "
                        "as the demo's Guide does")
    parser.add_argument("--sections", default="all", help=f"comma list of {','.join(SECTIONS)} (default all; "
                        "the docks and the first load always run)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one data set of --data both
    args = parser.parse_args(argv)
    args.screen = tuple(int(v) for v in args.screen.lower().split("x"))
    args.window = tuple(int(v) for v in args.window.lower().split("x"))
    args.big_shape = tuple(int(v) for v in args.big_shape.lower().split("x"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raw = list(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {"machine": _machine(), "data": {}}
    display = _ensure_display(args.screen)
    try:
        if args.data == "both":
            runs = [("demo", []), ("big", [])]
            if args.widgets == "plugin":  # the SSN figures again with the widget as the Guide docks it
                runs.append(("big", ["--widgets", "direct", "--sections", "ssn"]))
            for data, extra in runs:
                key = data if not extra else f"{data} (direct)"
                with tempfile.TemporaryDirectory() as folder:
                    out = Path(folder) / f"{data}.json"
                    child = list(_without(raw, "--json", "--data", *(["--widgets", "--sections"] if extra else [])))
                    cmd = [sys.executable, __file__, "--data", data, "--json", str(out), "--child", *child, *extra]
                    code = subprocess.call(cmd)
                    if code == 0 and out.exists():
                        results["data"][key] = json.loads(out.read_text())["data"][data]
                    else:
                        print(f"[{key}] run failed with exit code {code}", flush=True)
                        results["data"][key] = {"rows": [], "failed": code}
        else:
            results["data"][args.data] = run_session(args)
    finally:
        if display is not None:
            display.stop()
    if args.child:
        Path(args.json).write_text(json.dumps(results))
        return 0
    report(results, args.json)
    return 0 if all("failed" not in d for d in results["data"].values()) else 1


def _without(argv: list[str], *options: str) -> list[str]:
    """``argv`` without ``options`` and their values (``--opt value`` or ``--opt=value``)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in options:
            skip = True
            continue
        if any(item.startswith(f"{o}=") for o in options):
            continue
        out.append(item)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
