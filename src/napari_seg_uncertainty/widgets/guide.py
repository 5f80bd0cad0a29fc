"""Dock widget "Guide": walks a new user through the whole workflow on demo data, step by step.

The Guide docks the plugin's seven widgets (tabbed, each in a scroll area), loads a demo data set, and
offers one button per step. Loading never freezes the window: the heavy imports (PyTorch, MONAI) and the
demo data are prepared in a worker thread while the Guide says "Loading …", then the docks and the layers
arrive one per event-loop turn.

A step button brings the step's tab to the front, starts the widget's work through its public method
with the demo settings (``compute(...)``, ``start(...)``, ``load(...)`` …) and explains in the text box
what to look at. Steps run as a queue of small actions: an action that starts work waits for the
widget's ``computed`` (or ``failed``) signal, every other action is followed by the next one on the
next event-loop turn; nothing is polled. *Run all steps* chains the steps. Nothing here computes
anything itself: every number comes from the widgets, which call :mod:`napari_seg_uncertainty.core`.

Steps: raters → soft labels (mSVLS vs one-hot) → train a U-Net on mSVLS → train an SSN → SSN samples
with the class-noise and temperature sliders → calibration (reliability diagram) → uncertainty maps
(entropy, review table, Dice vs raters) → a small study of four candidates on a generated cohort, opened
in the *Cohort review* dock.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, PushButton
from psygnal import Signal

from ..workflow.demo import DATASETS, MODELS, REVIEW_MIN_VOXELS, WORKFLOW_DATASET, DemoTraining, load_demo_data
from ..workflow.demo.study import DemoStudyTraining
from ._common import notify_errors, run_in_thread, unwrap_viewer, when_docked
from ._guide_docking import GuideDocking, alive
from ._guide_queue import STEP_TIMEOUT_S, WAITING, Action, StepQueue
from ._guide_steps import DOCKS, INTRO, LOADING, PREDICTION_PREFIX, RENAMED, STEP_BY_KEY, STEPS
from ._guide_study import GuideStudy

if TYPE_CHECKING:
    import napari

__all__ = ["STEPS", "WorkflowGuide"]



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

        from . import calibration, cohort_review, load_raters, soft_labels, ssn_samples, uncertainty  # noqa: F401
        from . import train as train_module

        train_module.preload_training_modules()
    finally:
        gc.freeze()
        if enabled:
            gc.enable()




class WorkflowGuide(StepQueue, GuideDocking, GuideStudy, Container):
    """The guided workflow: docks the plugin's widgets, loads demo data and runs each step on request.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari.
    training : DemoTraining, optional
        Settings given to the *Train* widget (default: a short run, see
        :class:`~napari_seg_uncertainty.workflow.demo.DemoTraining`).
    seed : int
        Seed given to the widgets.
    study_training : DemoStudyTraining, optional
        Settings of the runs of the last step's study (default: four short runs, see
        :class:`~napari_seg_uncertainty.workflow.demo.study.DemoStudyTraining`).

    Attributes
    ----------
    ready : bool
        Whether demo data are loaded and the widgets docked (the step buttons work).
    loaded : psygnal.Signal
        Emitted with the data set's name when loading has finished.
    study : StudyResult or None
        The last step's study, once it has run (its folder is ``study.out_dir``).
    study_log : list of str
        The progress lines of the last step's study (each also shown on the status line).

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
        self,
        viewer: napari.viewer.Viewer,
        *,
        training: DemoTraining | None = None,
        seed: int = 0,
        study_training: DemoStudyTraining | None = None,
    ) -> None:
        if training is not None and not isinstance(training, DemoTraining):
            raise TypeError(f"training must be a DemoTraining or None, got {type(training).__name__}.")
        if study_training is not None and not isinstance(study_training, DemoStudyTraining):
            raise TypeError(
                f"study_training must be a DemoStudyTraining or None, got {type(study_training).__name__}."
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        super().__init__(labels=False, layout="horizontal")
        from qtpy.QtCore import QTimer

        self.viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self.training = training if training is not None else DemoTraining()
        self.study_training = study_training if study_training is not None else DemoStudyTraining()
        self.study: Any = None
        self.study_log: list[str] = []
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
        self._step_key: str | None = None
        self._docked = False
        self._prepared: tuple[Any, Any, list[Any]] | None = None
        self._waiting_on: Any = None  # the widget whose signal the queue waits for
        self._accept: Callable[[Any], bool] | None = None
        self._stepping = False
        self._wait_loops: list[Any] = []  # event loops of wait() calls, quit when the queue ends
        self._build_controls()
        self._timer = QTimer(self.native)  # parented: stops and goes with the widget
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._next)
        self._deadline = QTimer(self.native)
        self._deadline.setSingleShot(True)
        self._deadline.setInterval(int(STEP_TIMEOUT_S * 1000))
        self._deadline.timeout.connect(self._on_timeout)
        # opened from the Plugins menu, napari docks the Guide on the right, where its width squeezes the
        # canvas: it moves itself to the bottom as soon as it is shown
        when_docked(self.native, self._dock_guide_from_menu)

    def _build_controls(self) -> None:
        """The data row, one button per step, the status line, and the text box beside them."""
        from qtpy.QtWidgets import QTextBrowser

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
        self._text.setHtml(INTRO)
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

    def _connect_widget(self, key: str, widget: Any) -> None:
        """Follow the Train widget's runs: their prediction layers are named after the model."""
        if key == "train":
            widget.computed.connect(self._on_trained)

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
        self._prepared = None
        self._text.setHtml(LOADING)
        self._status.value = f"Loading {DATASETS[dataset]} …"
        with self._dataset.changed.blocked():
            self._dataset.value = dataset
        self._start_queue("load", self._load_actions(dataset))
        if wait:
            self.wait()

    def _load_actions(self, dataset: str) -> list[Action]:
        """The queue that loads ``dataset``: worker-thread preparation, then one dock or layer per turn."""

        def prepare() -> Any:
            def keep(result: Any) -> None:
                self._prepared = result
                self._resume()

            def failed(exc: BaseException) -> None:
                self._stop(RuntimeError(f"the demo data could not be prepared ({exc})"))

            self._deadline.start()
            self._prepare_worker = run_in_thread(
                _prepare_demo, dataset, self.seed, action="Loading the demo data", returned=keep, errored=failed
            )
            return WAITING

        actions: list[Action] = [(f"Loading {DATASETS[dataset]}: PyTorch, MONAI and the data", prepare)]
        for key in DOCKS:
            if key not in self.widgets:
                actions.append((f"Loading: docking {DOCKS[key]}", lambda k=key: self._dock_widget(k)))
        actions.append(("Loading: laying out the docks", self._after_docking))

        def clear() -> None:
            self.viewer.layers.clear()
            self.checkpoints.clear()

        actions.append(("Loading: removing the previous layers", clear))

        def add_layers() -> None:  # one layer per event-loop turn: queued in front of what follows
            count = len(self._prepared[2])
            self._queue[0:0] = [
                (f"Loading: layer {i + 1} of {count}", lambda i=i: self._add_layer(i)) for i in range(count)
            ]

        actions.append(("Loading: the image and the raters", add_layers))
        loader = lambda: self.widgets["load_raters"]  # noqa: E731 - docked by the actions above
        actions.append(("Loading: rater statistics", lambda: self._work(
            loader(), lambda: loader().load_from_layers(list(self._prepared[1].rater_names)), "the rater statistics")))
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
        if alive(self.native):
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
        self._text.setHtml(STEP_BY_KEY[key].text)

    def prepare_step(self, key: str) -> Any:
        """Show the tab and the explanation of step ``key``; returns its widget.

        Nothing is computed (:meth:`run_step` starts the widget's work with the demo settings, which
        :meth:`step_settings` lists); the Train and SSN samples widgets are filled in with them.
        """
        if key not in STEP_BY_KEY:
            raise ValueError(f"key must be one of {[s.key for s in STEPS]}, got {key!r}.")
        settings = self.step_settings(key)
        step = STEP_BY_KEY[key]
        widget = self.widget(step.widget)
        self._show_text(key)
        self.show_tab(step.widget)
        if key in ("train_svls", "train_ssn", "ssn_samples"):
            widget.configure(**settings)
        return widget

    def step_settings(self, key: str) -> dict[str, Any]:
        """The keywords step ``key`` gives its widget's public method (the demo settings)."""
        raters = self.rater_layers()
        if not raters:
            raise ValueError(
                "no rater layers; press 'Load demo data' first (or load raters in 'Load raters')."
            )
        if key == "raters":
            return {"layers": raters}
        if key == "cohort":
            return self.study_settings()
        if key == "soft_labels":
            return {"raters": raters, "method": "msvls", "sigma": 1.0, "sigma_in_mm": False,
                    "compare_method": "one_hot"}
        if key in ("train_svls", "train_ssn"):
            return self._train_settings(raters, key.split("_")[1])
        if key == "ssn_samples":
            checkpoint = self.checkpoints.get("ssn")
            if checkpoint is None:
                raise ValueError("no SSN has been trained yet; run step 4 (Train an SSN) first.")
            return {"source": "checkpoint", "path": checkpoint, "image": self.image_layer(), "num_samples": 10,
                    "seed": self.seed, "raters": raters}
        from .calibration import RELIABILITY
        from .uncertainty import CLASSES

        if key == "calibration":
            return {"probabilities": self._probability_layers(), "target": raters, "plot": RELIABILITY}
        return {"probabilities": self._probability_layers(), "layout": CLASSES, "as_ensemble": False,
                "by": "structures", "min_voxels": REVIEW_MIN_VOXELS, "raters": raters}

    def _train_settings(self, raters: list[str], model: str) -> dict[str, Any]:
        _, head, loss, target = MODELS[model]
        settings = self.training
        return {
            "image": self.image_layer(), "raters": raters, "head": head, "loss": loss, "target": target,
            "channels": settings.channels, "spatial_dims": 2, "ensemble_size": 1, "dropout": 0.0,
            "ssn_rank": settings.ssn_rank, "ssn_samples": settings.ssn_samples, "epochs": settings.epochs,
            "steps_per_epoch": settings.steps_per_epoch, "batch_size": settings.batch_size, "patch_size": (),
            "learning_rate": settings.learning_rate, "seed": self.seed, "output_dir": str(self._run_folder(model)),
        }

    def _probability_layers(self) -> list[str]:
        names = [PREDICTION_PREFIX[key] for key in MODELS]
        present = [n for n in names if n in self.viewer.layers]
        if not present:
            raise ValueError("no trained model's probabilities yet; run steps 3 and 4 (training) first.")
        return present

    def _run_folder(self, model: str) -> Path:
        if self.run_root is None:
            self.run_root = Path(tempfile.mkdtemp(prefix="napari-seg-uncertainty-demo-"))
        # a step run again trains into a new folder: training never replaces an earlier run's checkpoints
        folder, attempt = self.run_root / model, 1
        while (folder / "last.pt").exists() or (folder / "best.pt").exists():
            attempt += 1
            folder = self.run_root / f"{model}-{attempt}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _new_run_folder(self, name: str) -> Path:
        """A folder ``name`` (``name-2`` … when it exists) under the Guide's run folder, not yet created."""
        if self.run_root is None:
            self.run_root = Path(tempfile.mkdtemp(prefix="napari-seg-uncertainty-demo-"))
        folder, attempt = self.run_root / name, 1
        while folder.exists():
            attempt += 1
            folder = self.run_root / f"{name}-{attempt}"
        return folder

    def _actions(self, key: str) -> list[Action]:
        """(description, action) pairs that run step ``key``."""
        settings: dict[str, Any] = {}

        def prepare() -> None:
            self._step_key = key
            self.prepare_step(key)
            settings.update(self.step_settings(key))

        step = STEP_BY_KEY[key]
        widget = self.widget(step.widget)
        work: list[tuple[str, Callable[[], Any], Callable[[Any], bool] | None]] = []
        if key == "raters":
            work.append(("computing the rater statistics", lambda: widget.load_from_layers(settings["layers"]), None))
        elif key == "soft_labels":
            work.append(("computing mSVLS and one-hot", lambda: widget.compute(**settings),
                         lambda result: (result.request.method, result.request.compare_method) == ("msvls", "one_hot")))
        elif key in ("train_svls", "train_ssn"):
            prefix = PREDICTION_PREFIX[key.split("_")[1]]

            def train() -> Any:
                worker = widget.start(**settings)
                self.show_tab("curves")
                return worker

            work.append((f"training the {prefix}", train, None))
        elif key == "ssn_samples":
            work.append(("drawing SSN samples", lambda: widget.load(**settings), None))
            work.append(("GED² and diversity vs the raters",
                         lambda: widget.compute_metrics(raters=settings["raters"]), None))
        elif key == "calibration":
            work.append(("computing calibration", lambda: widget.compute(**settings), None))
        elif key == "uncertainty":
            work += [
                ("computing entropy maps", lambda: widget.compute_maps(
                    **{k: settings[k] for k in ("probabilities", "layout", "as_ensemble")}), None),
                ("ranking structures by segment entropy", lambda: widget.rank(
                    by=settings["by"], min_voxels=settings["min_voxels"]), None),
                ("Dice vs raters", lambda: widget.compute_agreement(raters=settings["raters"]), None),
            ]
        actions: list[Action] = [("filling in the settings", prepare)]
        actions += [(what, lambda what=what, start=start, accept=accept: self._work(widget, start, what, accept))
                    for what, start, accept in work]
        if key == "cohort":
            actions += self._study_actions(widget, settings)
        if key in ("train_svls", "train_ssn"):
            actions.append(("showing the Train tab", lambda: self.show_tab("train")))
        actions.append(("showing the result", lambda: self.focus(key)))
        return actions

    def focus_layers(self, key: str) -> list[str]:
        """The layers that step ``key`` shows over the image (the others are hidden by :meth:`focus`)."""
        names = [layer.name for layer in self.viewer.layers]
        if key == "cohort":  # the case Cohort review opened
            return [layer.name for layer in self.widget("cohort_review").layers if layer.name in names]
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
        """Show the image and the layers of step ``key`` only, and select the first of them (the study
        step shows the case *Cohort review* opened, on its own grid, and not the demo image)."""
        shown = self.focus_layers(key)
        image = None if key == "cohort" else self.image_layer()
        for layer in self.viewer.layers:
            layer.visible = layer.name in shown or layer.name == image
        if shown:
            self.viewer.layers.selection.active = self.viewer.layers[shown[-1]]
        if key in ("calibration", "uncertainty"):  # the plot / the Dice table sit at the end
            self.scroll_to_bottom(key)
        if key == "cohort":
            self.viewer.reset_view()

    def run_step(self, key: str) -> None:
        """Run step ``key`` (see :data:`STEPS`); returns at once, the work runs in workers."""
        self._start_queue(key, self._actions(key))

    def run_all(self) -> None:
        """Run every step in order (each starts when the previous one has finished)."""
        queue: list[Action] = [
            (step.title, lambda k=step.key: self._queue.__setitem__(slice(0, 0), self._actions(k)))
            for step in STEPS
        ]
        self._start_queue("all", queue)

    def _done_message(self) -> str:
        """The status line once the queue has run, in words."""
        if self.running == "load":
            return self._loaded()
        if self.running == "all":
            return (f"Done: all {len(STEPS)} steps — raters, soft labels, two trained models, SSN samples, "
                    "calibration, uncertainty maps and a study of four candidates on a cohort.")
        step = STEP_BY_KEY[self.running]
        return f"Done: {self._step_words(step.key)}, {step.done}."

    def _guarded(self, action: str, func: Callable[[], Any]) -> None:
        with notify_errors(action):
            func()

    # prediction layers of the two models ------------------------------------------------------------
    def _on_trained(self, outcome: Any) -> None:
        """Name a Train run's prediction layers after the model whose run folder holds its checkpoint."""
        if self.run_root is None or not outcome.checkpoint:
            return
        for model in MODELS:
            if str(outcome.checkpoint).startswith(str(self.run_root / model)):
                self.checkpoints[model] = outcome.checkpoint
                for name in outcome.layers:
                    if name in RENAMED and name in self.viewer.layers:
                        self._rename(self.viewer.layers[name], f"{PREDICTION_PREFIX[model]}{RENAMED[name]}")
                return

    def _rename(self, layer: Any, name: str) -> None:
        if name in self.viewer.layers and self.viewer.layers[name] is not layer:
            self.viewer.layers.remove(name)  # an earlier run of the same model
        layer.name = name
        if name.endswith(" labels"):
            layer.visible = False  # keep the image readable; the entropy says more
