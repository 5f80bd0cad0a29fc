"""Dock widget "Guide": walks a new user through the whole workflow on demo data, step by step.

The Guide docks the plugin's six widgets (tabbed, each in a scroll area), loads a demo data set, and
offers one button per step. Loading never freezes the window: the heavy imports (PyTorch, MONAI) and the
demo data are prepared in a worker thread while the Guide says "Loading …", then the docks and the layers
arrive one per event-loop turn. Steps run as a queue of small actions; the Guide checks a step's public
result attributes (a few attribute reads) at most every 100 ms while the widget's worker runs.

A step button fills the step's widget with the demo settings, brings its
tab to the front, presses the widget's own button(s) and explains in the text box what to look at.
*Run all steps* chains the steps. Nothing here computes anything itself: every number comes from
the widgets, which call :mod:`napari_seg_uncertainty.core`.

Steps: raters → soft labels (mSVLS vs one-hot) → train a U-Net on mSVLS → train an SSN → SSN samples
with the class-noise and temperature sliders → calibration (reliability diagram) → uncertainty maps
(entropy, review table, Dice vs raters).
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, PushButton
from psygnal import Signal

from ..workflow.demo import DATASETS, MODELS, REVIEW_MIN_VOXELS, WORKFLOW_DATASET, DemoTraining, load_demo_data
from ._common import (
    fit_to_screen,
    notify_errors,
    run_in_thread,
    show_error,
    unwrap_viewer,
    when_docked,
    whole_tab_titles,
)

if TYPE_CHECKING:
    import napari

__all__ = ["STEPS", "WorkflowGuide"]

#: Dock names of the widgets the Guide drives, in workflow order: key -> dock name.
DOCKS = {
    "load_raters": "Load raters",
    "soft_labels": "Soft labels",
    "train": "Train",
    "ssn_samples": "SSN samples",
    "calibration": "Calibration",
    "uncertainty": "Uncertainty maps",
}
#: Layer names of the two trained models' predictions: model key -> prefix.
PREDICTION_PREFIX = {key: label for key, (label, *_rest) in MODELS.items()}
#: What the Train widget's ``prediction …`` layers are renamed to (after the model's prefix).
RENAMED = {"prediction probabilities": "", "prediction labels": " labels", "prediction entropy": " entropy"}
#: Longest a step may take before the Guide gives up waiting (seconds).
STEP_TIMEOUT_S = 1800.0
#: How often a running step's result is checked while the widget works (an action that is done at once
#: goes straight on to the next, one event-loop turn later).
POLL_MS = 100
#: Width of the tabbed widget docks (pixels).
DOCK_WIDTH = 560


@dataclass(frozen=True)
class Step:
    """One step of the workflow: its button text, the widget it uses, the explanation shown and what
    the status line says when it is done."""

    key: str
    title: str
    widget: str
    text: str
    done: str = ""


STEPS = (
    Step(
        "raters",
        "1. Raters and agreement",
        "load_raters",
        """
<b>1. Raters and agreement.</b> Four raters outlined the same image (outlines over the image; hide or
show a rater with its eye icon). <i>rater entropy</i> is 0 (black) where all raters agree and bright
where they disagree: the borders, and the small nodule that some raters missed. The <b>Load raters</b>
tab lists the pairwise Dice per class and the per-class volumes; the <i>agreement: …</i> layers
(hidden) give the fraction of raters who chose each class.""",
        "raters loaded, their agreement measured",
    ),
    Step(
        "soft_labels",
        "2. Soft labels: mSVLS vs one-hot",
        "soft_labels",
        """
<b>2. Soft labels.</b> Training targets made from the raters. <i>soft A: organ</i> is the mSVLS
probability of the organ (SVLS of each rater, averaged): 1 inside, 0 outside, and in between along
the borders where raters disagree. <i>soft B</i> is the one-hot majority vote; <i>soft A − B</i>
shows where they differ (green: mSVLS higher, pink: lower). Try another <b>Method</b> or σ: the
layers update in place.""",
        "soft labels compared (mSVLS against the one-hot majority vote)",
    ),
    Step(
        "train_svls",
        "3. Train a U-Net on mSVLS",
        "train",
        """
<b>3. Training on soft labels.</b> A tiny U-Net learns from the mSVLS targets for 8 short epochs (under a
minute on a laptop CPU). The <b>Training curves</b> tab shows the training loss falling. The validation
NLL and Dice are measured on the bottom fifth of the image, held out from training; in this one small
image that strip holds little but the organ's lower edge, so they stay low: judge the model by its
prediction. When it ends, <i>mSVLS U-Net</i> (class probabilities), <i>mSVLS U-Net labels</i> and
<i>mSVLS U-Net entropy</i> are added: the entropy is bright where the model is unsure, along the borders
where the raters disagreed.""",
        "U-Net trained on mSVLS, its prediction added",
    ),
    Step(
        "train_ssn",
        "4. Train an SSN",
        "train",
        """
<b>4. Stochastic segmentation network.</b> The same U-Net with an SSN head: it predicts a whole
distribution of segmentations (a mean and a low-rank covariance of the logits), learning from a random
rater at each step. Its layers are named <i>SSN</i>, <i>SSN labels</i> and <i>SSN entropy</i> (the
probabilities average 20 samples).""",
        "SSN trained, its prediction added",
    ),
    Step(
        "ssn_samples",
        "5. SSN samples and sliders",
        "ssn_samples",
        """
<b>5. Samples of the SSN.</b> <i>SSN samples</i> holds 10 plausible segmentations: move the first
slider under the canvas to browse them. In the <b>SSN samples</b> tab, each <b>class noise scale</b>
slider multiplies that class's noise (0: that class as in the mean prediction; 3: exaggerated
variation; negative: the mirror image), and <b>Temperature</b> scales all noise (0 gives the mean
prediction). The sample on screen is redrawn as you move them. <i>GED²</i> compares the samples with
the raters (lower is better); <i>diversity</i> is how much the samples (or the raters) differ.""",
        "SSN samples drawn, GED² and diversity measured",
    ),
    Step(
        "calibration",
        "6. Calibration: reliability diagram",
        "calibration",
        """
<b>6. Calibration.</b> The reliability diagram sorts the pixels by the model's confidence (x axis) and
shows how often the prediction was right in each bin (bars; against the raters, 'right' counts the
share of raters who agree). A calibrated model's bars follow the diagonal; bars below it mean
overconfidence (orange gaps). ECE summarises the gaps in %. Switch <b>Plot</b> to <i>Entropy:
prediction vs raters</i> to compare the model's uncertainty with the raters' disagreement.""",
        "reliability diagrams drawn",
    ),
    Step(
        "uncertainty",
        "7. Uncertainty maps and review",
        "uncertainty",
        """
<b>7. Uncertainty maps.</b> <i>… entropy</i> layers show each model's uncertainty per pixel (0 to 1).
The review table ranks the predicted structures by their mean entropy, most uncertain first: click a
row to jump to that structure. The last table gives the Dice of the mSVLS U-Net against each rater
and their majority vote.""",
        "uncertainty maps, review table and Dice against the raters ready",
    ),
)
_STEP_BY_KEY = {step.key: step for step in STEPS}

_INTRO = """
<b>Guided workflow.</b> Press the numbered buttons in order (or <b>Run all steps</b>): each fills in the
widget of that step with the demo settings, presses its button and explains here what to look at. The
widgets stay editable: change any setting and press their own buttons to explore."""

_LOADING = """
<b>Loading …</b> The window is ready to use while the demo starts: PyTorch and MONAI are imported and the
demo data are built in the background, then the plugin's widgets are docked on the right and the image
and the four raters appear. The numbered buttons wake up when everything is in place."""

#: A queued action: (status text, action, done check).
Action = tuple[str, Callable[[], Any], Callable[[], bool]]


def _prepare_demo(dataset: str, seed: int) -> tuple[Any, Any, list[Any]]:
    """Worker-thread part of loading: heavy imports, the demo data and the napari layer objects.

    Imports PyTorch, MONAI, pandas (napari's first Labels layer pulls it in) and the widget modules,
    warms up the training kernels and builds the layers (napari layer models hold no Qt objects), so
    that the GUI thread only docks widgets and appends ready layers, one per event-loop turn.

    The imports create millions of long-lived objects; the garbage collector's full passes over them
    hold the interpreter for 0.3–0.7 s each, stalling the GUI thread too. The collector is paused while
    they are made and then frozen (``gc.freeze``: they leave its view), so later passes take milliseconds.
    Only the imports are frozen, before any data exists: a frozen object is never collected, so a
    layer frozen with them would keep its array in memory after it was removed.
    """
    _import_frozen()
    from napari.layers import Layer

    from .._sample_data import rater_layer_data

    image, raters = load_demo_data(dataset, seed=seed)
    layers = []
    for data, kwargs, kind in rater_layer_data(image, raters, case=f"demo {dataset}"):
        if kind == "labels":
            kwargs = {**kwargs, "visible": True, "opacity": 0.9}
        layer = Layer.create(data, kwargs, kind)
        if kind == "labels":
            layer.contour = 1  # outlines of every rater
        layers.append(layer)
    return image, raters, layers


def _import_frozen() -> None:
    """The heavy imports and the training warm-up with the collector paused, then frozen (see _prepare_demo)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        import pandas  # noqa: F401

        from . import calibration, load_raters, soft_labels, ssn_samples, uncertainty  # noqa: F401
        from . import train as train_module

        train_module._preload_training_modules()
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class WorkflowGuide(Container):
    """The guided workflow: docks the plugin's widgets, loads demo data and runs each step on request.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari.
    training : DemoTraining, optional
        Settings filled into the *Train* widget (default: a short run, see
        :class:`~napari_seg_uncertainty.workflow.demo.DemoTraining`).
    seed : int
        Seed filled into the widgets.

    Attributes
    ----------
    ready : bool
        Whether demo data are loaded and the widgets docked (the step buttons work).
    loaded : psygnal.Signal
        Emitted with the data set's name when loading has finished.

    Examples
    --------
    >>> import napari  # doctest: +SKIP
    >>> viewer = napari.Viewer()  # doctest: +SKIP
    >>> guide = WorkflowGuide(viewer)  # doctest: +SKIP
    >>> guide.dock(); guide.load_demo_data("phantom2d")  # doctest: +SKIP
    >>> guide.run_all()  # doctest: +SKIP
    """

    loaded = Signal(str)

    def __init__(
        self, viewer: napari.viewer.Viewer, *, training: DemoTraining | None = None, seed: int = 0
    ) -> None:
        if training is not None and not isinstance(training, DemoTraining):
            raise TypeError(f"training must be a DemoTraining or None, got {type(training).__name__}.")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        super().__init__(labels=False, layout="horizontal")
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QTextBrowser

        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self.viewer = viewer
        self.training = training if training is not None else DemoTraining()
        self.seed = int(seed)
        self.widgets: dict[str, Any] = {}
        self._scroll_areas: dict[str, Any] = {}
        self._tabs: list[Any] = []  # the tabbed docks, in workflow order
        self.checkpoints: dict[str, str] = {}
        self.run_root: Path | None = None
        self.current_step: str | None = None
        self.running: str | None = None  # the step (or "all", "load") being run
        self.ready = False
        self._queue: list[Action] = []
        self._deadline = 0.0
        self._docked = False
        self._prepared: tuple[Any, Any, list[Any]] | None = None
        self._load_error: BaseException | None = None
        self._done: Callable[[], bool] = lambda: True
        self._polling = False

        self._dataset = ComboBox(
            label="Demo data", choices=[(f"{k}: {v}", k) for k, v in DATASETS.items()], value=WORKFLOW_DATASET
        )
        self._load = PushButton(text="Load demo data")
        self._buttons = {step.key: PushButton(text=step.title) for step in STEPS}
        self._run_all = PushButton(text="Run all steps")
        self._status = Label(value="")
        self._status.native.setWordWrap(True)
        buttons = [*self._buttons.values(), self._run_all]
        per_row = 3
        rows = [
            Container(layout="horizontal", labels=False, widgets=buttons[i : i + per_row])
            for i in range(0, len(buttons), per_row)
        ]
        data_row = Container(layout="horizontal", labels=False, widgets=[self._dataset, self._load])
        #: The controls, in a scroll area (the Guide dock is short; nothing is ever out of reach).
        self.controls = Container(labels=False, scrollable=True, widgets=[data_row, *rows, self._status])
        for container in (self.controls, data_row, *rows):
            container.margins = (0, 0, 0, 0)
        scroll = self.controls.root_native_widget
        scroll.setFrameShape(scroll.Shape.NoFrame)
        scroll.setMaximumWidth(740)
        scroll.setMinimumHeight(60)
        # napari docks a magicgui widget's ``native``, the widget inside a scroll area: embed the area itself
        self.native.layout().addWidget(scroll, 0)
        self._text = QTextBrowser()
        self._text.setOpenExternalLinks(False)
        self._text.setMinimumWidth(320)
        self._text.setMaximumHeight(170)
        self._text.setHtml(_INTRO)
        self.native.layout().addWidget(self._text, 1)
        self.native.setMaximumHeight(180)
        self.native.setMinimumHeight(90)

        self._load.changed.connect(
            lambda: self._guarded("Loading the demo data", lambda: self.load_demo_data(self._dataset.value))
        )
        for key, button in self._buttons.items():
            button.changed.connect(
                lambda _v=None, k=key: self._guarded(f"Step {k}", lambda: self.run_step(k))
            )
        self._run_all.changed.connect(lambda: self._guarded("Run all steps", self.run_all))
        self._timer = QTimer(self.native)  # parented: stops and goes with the widget
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        # opened from the Plugins menu, napari docks the Guide on the right, where its width squeezes the
        # canvas: it moves itself to the bottom as soon as it is shown
        when_docked(self.native, self._dock_guide_from_menu)

    def _dock_guide_from_menu(self) -> None:
        if self.native.parent() is not None:
            self.dock_guide()
            from qtpy.QtWidgets import QMainWindow

            window = self._main_window()
            if isinstance(window, QMainWindow):
                fit_to_screen(window)

    # docking ----------------------------------------------------------------------------------------
    def dock_guide(self) -> None:
        """Dock the Guide itself at the bottom (idempotent); the widgets come with :meth:`dock`."""
        from qtpy.QtCore import Qt

        if self._docked:
            return
        self._docked = True
        if self.native.parent() is None:
            self.viewer.window.add_dock_widget(self, name="Guide", area="bottom")
        else:  # opened from the Plugins menu (napari docked us on the right): move to the bottom
            dock = self._own_dock()
            if dock is not None:
                self._main_window().addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)

    def dock(self) -> None:
        """Dock the Guide at the bottom and the six widgets tabbed on the right (idempotent)."""
        self.dock_guide()
        missing = [key for key in DOCKS if key not in self.widgets]
        for key in missing:
            self._dock_widget(key)
        if missing:
            self._after_docking()

    def _own_dock(self) -> Any:
        return _dock_of(self.native)

    def _make_widget(self, key: str) -> Any:
        from .calibration import CalibrationWidget
        from .load_raters import LoadRatersWidget
        from .soft_labels import SoftLabelsWidget
        from .ssn_samples import SSNSamplesWidget
        from .train import TrainWidget
        from .uncertainty import UncertaintyWidget

        classes = {
            "load_raters": LoadRatersWidget,
            "soft_labels": SoftLabelsWidget,
            "train": TrainWidget,
            "ssn_samples": SSNSamplesWidget,
            "calibration": CalibrationWidget,
            "uncertainty": UncertaintyWidget,
        }
        return classes[key](self.viewer)

    def widget(self, key: str) -> Any:
        """The docked widget ``key`` (a key of ``DOCKS``); all six are created and docked on first use."""
        if key not in DOCKS:
            raise ValueError(f"key must be one of {list(DOCKS)}, got {key!r}.")
        if key not in self.widgets:
            self.dock()
        return self.widgets[key]

    def _dock_widget(self, key: str) -> None:
        """Create widget ``key`` and dock it as a tab of the group on the right, in workflow order.

        Every dock scrolls, so the window fits a laptop screen however long the widget: a widget that
        scrolls itself (Train) is docked as it is, a magicgui ``scrollable`` container with its scroll
        area (napari alone would dock the inner widget), any other inside a new scroll area. The Train
        widget docks its own *Training curves*; that dock joins the group after *Train*.
        """
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget, QFrame, QLabel, QScrollArea

        window = self.viewer.window
        qt_window = self._main_window()
        events = self.viewer.layers.events
        previous = self._last_tab()
        widget = self._make_widget(key)
        for label in widget.native.findChildren(QLabel):  # long status lines wrap in the narrow dock
            label.setWordWrap(True)
        root = widget.root_native_widget
        own_scroll = [child for child in widget.native.children() if isinstance(child, QScrollArea)]
        if isinstance(root, QScrollArea) or own_scroll:
            area = root if isinstance(root, QScrollArea) else own_scroll[0]
            docked = root
            if isinstance(root, QScrollArea):
                root._magic_widget = widget  # napari's dock_widgets[name] then gives the magicgui widget
        else:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(widget.native)
            docked = area
        docked.setMinimumWidth(min(int(widget.native.sizeHint().width()) + 24, DOCK_WIDTH - 60))
        # the magicgui widget itself when napari would dock the right Qt widget (then napari refreshes its
        # choices on layer events and dock_widgets[name] gives it back); else the Qt widget that scrolls
        target = widget if docked is widget.native else docked
        window.add_dock_widget(target, name=DOCKS[key], area="right", add_vertical_stretch=False)
        dock = _dock_of(docked)
        if target is not widget:  # napari refreshes the choices of magicgui docks only; so do we
            for event in (events.inserted, events.removed, events.reordered, events.renamed):
                event.connect(widget.reset_choices)
        self.widgets[key] = widget
        self._scroll_areas[key] = area
        docks = [dock]
        if key == "train":  # the curves dock the Train widget added: move it behind the Train tab
            curves = [d for d in qt_window.findChildren(QDockWidget) if d.windowTitle() == "Training curves"]
            for extra in curves:
                qt_window.removeDockWidget(extra)
                qt_window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, extra)
                extra.show()
            docks += curves
        for item in docks:
            if previous is not None:
                qt_window.tabifyDockWidget(previous, item)
            previous = item
        self._tabs += docks

    def _last_tab(self) -> Any:
        tabs = [d for d in self._tabs if _alive(d)]
        return tabs[-1] if tabs else None

    def _after_docking(self) -> None:
        """Width of the tab group, whole tab titles, the first tab in front."""
        from qtpy.QtCore import Qt, QTimer

        tabs = [d for d in self._tabs if _alive(d)]
        if tabs:
            self._main_window().resizeDocks([tabs[0]], [DOCK_WIDTH], Qt.Orientation.Horizontal)
        self._whole_tab_titles()
        QTimer.singleShot(0, self._whole_tab_titles)  # Qt makes the tab bars while laying out
        self.show_tab("load_raters")

    def _whole_tab_titles(self) -> None:
        """Tab titles in full ("Training curves", not "Tr…"); the tab bar scrolls when they do not fit."""
        window = self._main_window()
        if _alive(window):
            whole_tab_titles(window)

    def show_tab(self, key: str) -> None:
        """Bring the tab of widget ``key`` (or ``"curves"``, the training curves) to the front."""
        from qtpy.QtWidgets import QDockWidget

        name = "Training curves" if key == "curves" else DOCKS[key]
        for dock in self._main_window().findChildren(QDockWidget):
            if dock.windowTitle() == name:
                dock.show()
                dock.raise_()

    def _main_window(self) -> Any:
        """napari's main window (``QMainWindow``), which holds the docks: the window the Guide is docked in.

        Found through Qt's parents of our own widget, not ``viewer.window``: napari hands plugin widgets a
        proxy that refuses private attributes and that Qt does not accept as an argument.
        """
        return self.native.window()

    # data -------------------------------------------------------------------------------------------
    def load_demo_data(self, dataset: str = WORKFLOW_DATASET, *, wait: bool = True) -> None:
        """Replace the viewer's layers with demo data set ``dataset`` and compute the rater statistics.

        The window stays responsive throughout: the imports and the data are prepared in a worker
        thread, the docks and layers added one per event-loop turn, while the Guide shows "Loading …".
        With ``wait`` (default) this returns when all is loaded (Qt events run meanwhile); without,
        it returns at once and :attr:`ready` / :attr:`loaded` tell when it is done.
        """
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {list(DATASETS)}, got {dataset!r}.")
        if self.running is not None:
            raise RuntimeError(f"the Guide is still running {self._running_words()}; wait until it finishes.")
        self.dock_guide()
        self.ready = False
        self._prepared, self._load_error = None, None
        self._text.setHtml(_LOADING)
        self._status.value = f"Loading {DATASETS[dataset]} …"
        with self._dataset.changed.blocked():
            self._dataset.value = dataset
        self._start_queue("load", self._load_actions(dataset))
        if wait:
            self.wait()

    def wait(self, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Return when the Guide has finished what it is running (Qt events run meanwhile)."""
        from qtpy.QtCore import QEventLoop, QTimer

        deadline = time.monotonic() + timeout_s
        while self.running is not None and time.monotonic() < deadline:
            loop = QEventLoop()
            QTimer.singleShot(20, loop.quit)
            loop.exec()

    def _load_actions(self, dataset: str) -> list[Action]:
        """The queue that loads ``dataset``: worker-thread preparation, then one dock or layer per turn."""

        def prepare() -> None:
            def keep(result: Any) -> None:
                self._prepared = result

            def failed(exc: BaseException) -> None:
                self._load_error = exc

            self._prepare_worker = run_in_thread(
                _prepare_demo, dataset, self.seed, action="Loading the demo data", returned=keep, errored=failed
            )

        def prepared() -> bool:
            if self._load_error is not None:
                raise RuntimeError(f"the demo data could not be prepared ({self._load_error})")
            return self._prepared is not None

        actions: list[Action] = [(f"Loading {DATASETS[dataset]}: PyTorch, MONAI and the data", prepare, prepared)]
        for key in DOCKS:
            if key not in self.widgets:
                actions.append((f"Loading: docking {DOCKS[key]}", lambda k=key: self._dock_widget(k), lambda: True))
        actions.append(("Loading: laying out the docks", self._after_docking, lambda: True))

        def clear() -> None:
            self.viewer.layers.clear()
            self.checkpoints.clear()

        actions.append(("Loading: removing the previous layers", clear, lambda: True))

        def add_layers() -> None:  # one layer per event-loop turn: queued in front of what follows
            count = len(self._prepared[2])
            self._queue[0:0] = [
                (f"Loading: layer {i + 1} of {count}", lambda i=i: self._add_layer(i), lambda: True)
                for i in range(count)
            ]

        actions.append(("Loading: the image and the raters", add_layers, lambda: True))

        def statistics() -> None:
            _, raters, _ = self._prepared
            self.widget("load_raters").load_from_layers(list(raters.rater_names))

        loader_done = lambda: self.widgets["load_raters"].statistics is not None  # noqa: E731
        actions.append(("Loading: rater statistics", statistics, loader_done))
        return actions

    def _add_layer(self, index: int) -> None:
        self.viewer.layers.append(self._prepared[2][index])

    def _loaded(self) -> str:
        """Loading has finished: fit the image to the canvas once the layout has settled."""
        from qtpy.QtCore import QTimer

        dataset = self._dataset.value
        self.ready = True
        self._show_text("raters")
        self.viewer.reset_view()
        QTimer.singleShot(100, self._fit_view)  # after the docks and the maximised window are laid out
        self.loaded.emit(dataset)
        return f"Loaded {DATASETS[dataset]}. Press 1 to start."

    def _fit_view(self) -> None:
        if _alive(self.native):
            self.viewer.reset_view()

    def rater_layers(self) -> list[str]:
        """Names of the Labels layers that hold raters (``"rater"`` in their metadata)."""
        from napari.layers import Labels

        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and "rater" in (layer.metadata or {})
        ]

    def image_layer(self) -> str:
        """Name of the image the raters annotated."""
        from napari.layers import Image

        if "image" in self.viewer.layers:
            return "image"
        for layer in self.viewer.layers:
            if isinstance(layer, Image) and not layer.rgb and not (layer.metadata or {}).get("class_names"):
                return layer.name
        raise ValueError("no image layer; load the demo data first (Load demo data).")

    # steps ------------------------------------------------------------------------------------------
    def _show_text(self, key: str) -> None:
        self.current_step = key
        self._text.setHtml(_STEP_BY_KEY[key].text)

    def prepare_step(self, key: str) -> Any:
        """Fill the widget of step ``key`` with the demo settings and show its tab; returns the widget.

        Nothing is computed: press the widget's own button (or use :meth:`run_step`).
        """
        if key not in _STEP_BY_KEY:
            raise ValueError(f"key must be one of {[s.key for s in STEPS]}, got {key!r}.")
        raters = self.rater_layers()
        if not raters:
            raise ValueError(
                "no rater layers; press 'Load demo data' first (or load raters in 'Load raters')."
            )
        step = _STEP_BY_KEY[key]
        widget = self.widget(step.widget)
        self._show_text(key)
        self.show_tab(step.widget)
        getattr(self, f"_prepare_{key}")(widget, raters)
        return widget

    def _prepare_raters(self, widget: Any, raters: list[str]) -> None:
        widget._layers.value = raters

    def _prepare_soft_labels(self, widget: Any, raters: list[str]) -> None:
        live = widget._live.value
        widget._live.value = False  # fill in every setting first, then compute once
        try:
            widget._raters.value = raters
            widget._method.value = "msvls"
            widget._sigma.value = 1.0
            widget._physical.value = False
            widget._compare.value = "one_hot"
        finally:
            widget._live.value = live

    def _prepare_train(self, widget: Any, raters: list[str], model: str) -> None:
        from .train import MODEL_SIZES

        _, head, loss, target = MODELS[model]
        settings = self.training
        widget.select_layers(self.image_layer(), raters)
        widget.set_method(head, loss)
        widget._target.value = target
        size = next(
            (name for name, (channels, _) in MODEL_SIZES.items() if channels == settings.channels), None
        )
        if size is None:
            raise ValueError(
                f"the Train widget offers no U-Net with channels {settings.channels}; "
                f"choose one of {[c for c, _ in MODEL_SIZES.values()]}."
            )
        widget._model_size.value = size
        widget._dims.value = 2
        widget._ensemble.value = 1
        widget._dropout.value = 0.0
        widget._ssn_rank.value = settings.ssn_rank
        widget._ssn_samples.value = settings.ssn_samples
        widget._epochs.value = settings.epochs
        widget._steps.value = settings.steps_per_epoch
        widget._batch.value = settings.batch_size
        widget._patch.value = ""
        widget._lr.value = settings.learning_rate
        widget._seed.value = self.seed
        widget._output.value = str(self._run_folder(model))

    def _prepare_train_svls(self, widget: Any, raters: list[str]) -> None:
        self._prepare_train(widget, raters, "svls")

    def _prepare_train_ssn(self, widget: Any, raters: list[str]) -> None:
        self._prepare_train(widget, raters, "ssn")

    def _prepare_ssn_samples(self, widget: Any, raters: list[str]) -> None:
        from .ssn_samples import SOURCE_CHECKPOINT

        checkpoint = self.checkpoints.get("ssn")
        if checkpoint is None:
            raise ValueError("no SSN has been trained yet; run step 4 (Train an SSN) first.")
        widget._source.value = SOURCE_CHECKPOINT
        widget._checkpoint_file.value = checkpoint
        widget._image_layer.value = self.image_layer()
        widget._num_samples.value = 10
        widget._seed.value = self.seed
        widget._raters.value = raters

    def _probability_layers(self) -> list[str]:
        names = [PREDICTION_PREFIX[key] for key in MODELS]
        present = [n for n in names if n in self.viewer.layers]
        if not present:
            raise ValueError("no trained model's probabilities yet; run steps 3 and 4 (training) first.")
        return present

    def _prepare_calibration(self, widget: Any, raters: list[str]) -> None:
        from .calibration import RELIABILITY

        live = widget._live.value
        widget._live.value = False
        try:
            widget._probabilities.value = self._probability_layers()
            widget._target.value = raters
            widget._plot_kind.value = RELIABILITY
        finally:
            widget._live.value = live

    def _prepare_uncertainty(self, widget: Any, raters: list[str]) -> None:
        from .uncertainty import CLASSES

        widget._probabilities.value = self._probability_layers()
        widget._layout.value = CLASSES
        widget._as_ensemble.value = False
        widget._rank_by.value = "structures"
        widget._min_size.value = REVIEW_MIN_VOXELS
        widget._raters.value = raters

    def _run_folder(self, model: str) -> Path:
        if self.run_root is None:
            self.run_root = Path(tempfile.mkdtemp(prefix="napari-seg-uncertainty-demo-"))
        folder = self.run_root / model
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _actions(self, key: str) -> list[tuple[str, Callable[[], Any], Callable[[], bool]]]:
        """(description, action, done) triples that run step ``key``; ``done`` is polled after ``action``."""
        step = _STEP_BY_KEY[key]

        def prepare() -> None:
            self._step_key = key
            self.prepare_step(key)

        actions: list[tuple[str, Callable[[], Any], Callable[[], bool]]] = [
            ("filling in the settings", prepare, lambda: True)
        ]
        widget = self.widget(step.widget)
        if key == "raters":
            actions.append(
                (
                    "computing the rater statistics",
                    lambda: widget.load_from_layers(self.rater_layers()),
                    lambda: widget.statistics is not None and not widget.busy,
                )
            )
        elif key == "soft_labels":
            actions.append(
                (
                    "computing mSVLS and one-hot",
                    widget.compute,
                    lambda: (
                        widget.result is not None
                        and not widget.busy
                        and widget.result.request.compare_method == "one_hot"
                    ),
                )
            )
        elif key in ("train_svls", "train_ssn"):
            model = key.split("_")[1]
            prefix = PREDICTION_PREFIX[model]

            def start() -> None:
                widget.start()
                self.show_tab("curves")

            def trained() -> bool:
                if widget.failure is not None:
                    raise RuntimeError(f"training failed: {widget.failure.message}")
                return (
                    widget.state == "idle"
                    and f"{prefix} entropy" in self.viewer.layers
                    and prefix in self.viewer.layers
                    and model in self.checkpoints
                )

            actions.append((f"training the {prefix}", start, trained))
            actions.append(("showing the Train tab", lambda: self.show_tab("train"), lambda: True))
        elif key == "ssn_samples":
            actions.append(
                (
                    "drawing SSN samples",
                    widget._load_button.native.click,
                    lambda: widget.stack is not None and not widget.busy,
                )
            )
            actions.append(
                (
                    "GED² and diversity vs the raters",
                    widget._metrics_button.native.click,
                    lambda: widget.metrics is not None and not widget.busy,
                )
            )
        elif key == "calibration":

            def compute() -> None:
                widget.results = []
                widget.compute()

            actions.append(
                (
                    "computing calibration",
                    compute,
                    lambda: bool(widget.results) and _idle(widget) and not widget.plot.rendering,
                )
            )
        elif key == "uncertainty":
            for description, attribute, method in (
                ("computing entropy maps", "maps", widget.compute_maps),
                ("ranking structures by segment entropy", "review_rows", widget.rank),
                ("Dice vs raters", "agreement_rows", widget.compute_agreement),
            ):

                def run(attribute: str = attribute, method: Callable[[], Any] = method) -> None:
                    setattr(widget, attribute, [])  # filled when this run's result is shown
                    method()

                actions.append(
                    (description, run, lambda a=attribute: bool(getattr(widget, a)) and _idle(widget))
                )
        actions.append(("showing the result", lambda: self.focus(key), lambda: True))
        return actions

    def focus_layers(self, key: str) -> list[str]:
        """The layers that step ``key`` shows over the image (the others are hidden by :meth:`focus`)."""
        names = [layer.name for layer in self.viewer.layers]
        svls, ssn = PREDICTION_PREFIX["svls"], PREDICTION_PREFIX["ssn"]
        wanted = {
            "raters": [*self.rater_layers(), "rater entropy"],
            "soft_labels": [n for n in names if n.startswith("soft A: ") and n != "soft A: background"],
            "train_svls": [f"{svls} entropy"],
            "train_ssn": [f"{ssn} entropy"],
            "ssn_samples": ["SSN samples"],
            "calibration": [f"{svls} entropy"],
            "uncertainty": [f"{ssn} entropy"],
        }[key]
        return [n for n in wanted if n in names]

    def focus(self, key: str) -> None:
        """Show the image and the layers of step ``key`` only, and select the first of them."""
        shown = self.focus_layers(key)
        image = self.image_layer()
        for layer in self.viewer.layers:
            layer.visible = layer.name in shown or layer.name == image
        if shown:
            self.viewer.layers.selection.active = self.viewer.layers[shown[-1]]
        if key in ("calibration", "uncertainty"):  # the plot / the Dice table sit at the end
            self.scroll_to_bottom(key)

    def scroll_to_bottom(self, key: str) -> None:
        """Scroll the dock of widget ``key`` to its end (e.g. the calibration plot)."""
        area = self._scroll_areas.get(key)
        if area is not None:
            area.widget().adjustSize()
            bar = area.verticalScrollBar()
            bar.setValue(bar.maximum())

    def run_step(self, key: str) -> None:
        """Fill in and run step ``key`` (see :data:`STEPS`); returns at once, the work runs in workers."""
        self._start_queue(key, self._actions(key))

    def run_all(self) -> None:
        """Run every step in order (each starts when the previous one has finished)."""
        queue: list[Action] = []
        for step in STEPS:
            queue.append(
                (
                    step.title,
                    lambda k=step.key: self._queue.__setitem__(slice(0, 0), self._actions(k)),
                    lambda: True,
                )
            )
        self._start_queue("all", queue)

    @property
    def busy(self) -> bool:
        """Whether a step (or *Run all steps*, or loading) is running."""
        return self.running is not None

    def _step_words(self, key: str | None) -> str:
        """"step 3 of 7" for step ``key``."""
        keys = [step.key for step in STEPS]
        return f"step {keys.index(key) + 1} of {len(keys)}" if key in keys else "a step"

    def _running_words(self) -> str:
        if self.running == "load":
            return "the loading of the demo data"
        if self.running == "all":
            return "all steps"
        return self._step_words(self.running)

    def _start_queue(self, name: str, queue: list[Action]) -> None:
        if self.running is not None:
            raise RuntimeError(f"the Guide is still running {self._running_words()}; wait until it finishes.")
        self.running = name
        self._step_key: str | None = name if name in _STEP_BY_KEY else None
        self._queue = list(queue)
        self._set_buttons(False)
        if self._step_key is not None:
            self._status.value = f"{self._step_words(name).capitalize()}: starting…"
        elif name == "all":
            self._status.value = "Running all steps…"
        self._done = lambda: True
        self._timer.setInterval(0)
        self._timer.start()

    def _poll(self) -> None:
        """Run the next queued action when the current one is done (a timer tick; never blocks).

        An action that is done at once is followed by the next one on the next event-loop turn; while
        a widget works in its worker thread, its result is checked every ``POLL_MS``.
        """
        if self._polling:  # an action processed events (napari's progress bars do): no nested step
            return
        self._polling = True
        try:
            self._poll_once()
        finally:
            self._polling = False

    def _poll_once(self) -> None:
        try:
            if not self._done():
                if time.monotonic() > self._deadline:
                    raise TimeoutError(
                        f"'{self._status.value}' did not finish within {STEP_TIMEOUT_S:.0f} s."
                    )
                self._timer.setInterval(POLL_MS)
                return
            if not self._queue:
                self._finish(self._done_message())
                return
            description, action, done = self._queue.pop(0)
            step = self._step_key
            self._status.value = (
                f"{self._step_words(step).capitalize()}: {description}…" if step else f"{description}…"
            )
            self._deadline = time.monotonic() + STEP_TIMEOUT_S
            self._done = done
            self._timer.setInterval(0)
            action()
        except Exception as exc:  # noqa: BLE001 - a failing step becomes a notification, the Guide stays usable
            if self.running == "load":
                where = "loading the demo data"
            else:
                step = _STEP_BY_KEY.get(self._step_key or "")
                where = f"{self._step_words(self._step_key)} ({step.title.split('. ', 1)[-1]})" if step else "a step"
            self._finish(f"Stopped at {where}: {exc}")
            show_error(f"Guide: stopped at {where}: {exc}")

    def _done_message(self) -> str:
        """The status line once the queue has run, in words."""
        if self.running == "load":
            return self._loaded()
        if self.running == "all":
            return (f"Done: all {len(STEPS)} steps — raters, soft labels, two trained models, SSN samples, "
                    "calibration and uncertainty maps.")
        step = _STEP_BY_KEY[self.running]
        return f"Done: {self._step_words(step.key)}, {step.done}."

    def _finish(self, message: str) -> None:
        self._timer.stop()
        self._queue = []
        self.running = None
        self._status.value = message
        self._set_buttons(True)

    def _set_buttons(self, enabled: bool) -> None:
        for button in (self._load, self._run_all, *self._buttons.values()):
            button.enabled = enabled

    def _guarded(self, action: str, func: Callable[[], Any]) -> None:
        with notify_errors(action):
            func()

    # prediction layers of the two models ------------------------------------------------------------
    def _on_layer_inserted(self, event: Any) -> None:
        """Rename the Train widget's ``prediction …`` layers after the model that made them."""
        from qtpy.QtCore import QTimer

        layer = event.value
        if layer.name not in RENAMED or self.run_root is None:
            return
        checkpoint = str((layer.metadata or {}).get("checkpoint") or "")
        for model in MODELS:
            folder = str(self.run_root / model)
            if checkpoint.startswith(folder):
                self.checkpoints[model] = checkpoint
                new_name = f"{PREDICTION_PREFIX[model]}{RENAMED[layer.name]}"
                QTimer.singleShot(0, lambda lay=layer, name=new_name: self._rename(lay, name))
                return

    def _rename(self, layer: Any, name: str) -> None:
        if layer not in self.viewer.layers:
            return
        if name in self.viewer.layers and self.viewer.layers[name] is not layer:
            self.viewer.layers.remove(name)  # an earlier run of the same model
        layer.name = name
        if name.endswith(" labels"):
            layer.visible = False  # keep the image readable; the entropy says more


def _idle(widget: Any) -> bool:
    """Whether a widget's worker (its public ``worker``) has finished."""
    worker = getattr(widget, "worker", None)
    return worker is None or not worker.is_running


def _alive(qt_object: Any) -> bool:
    """Whether a Qt object still exists (its C++ side has not been deleted)."""
    if qt_object is None:
        return False
    try:
        qt_object.objectName()
    except RuntimeError:
        return False
    return True


def _dock_of(widget: Any) -> Any:
    """The ``QDockWidget`` that holds the Qt widget ``widget`` (None when it is not docked)."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent
