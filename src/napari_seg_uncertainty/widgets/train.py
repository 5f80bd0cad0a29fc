"""Dock widget "Train": train a segmentation model on the loaded raters or on a cohort, without freezing napari.

The widget is thin: it reads the image and rater layers (*Train on: open layers*, one case, validated
on its last strip) or loads a cohort of cases on disk (*Train on: cohort*: a folder of case folders,
a ``.csv``/``.yaml`` manifest or an ``.npz``; the header scan runs in a worker, the cases are listed
with their split, skipped cases with their problems), builds a
:class:`~napari_seg_uncertainty.core.training.TrainConfig`, and runs
:func:`~napari_seg_uncertainty.workflow.training.training_job` (the core training generator; a
cohort streams from disk with its case-level split) in a napari thread worker. Progress records
update a napari progress bar, a status line (at most five times a second, the latest record held back
shown once the interval has passed) and a themed matplotlib plot of the training loss and validation
metrics docked next to it (its step curve at most once a second). Pause/Resume pauses the worker at
the next step; Cancel sends ``"cancel"`` into the generator, which writes a checkpoint first. When
the run ends (or is cancelled) the checkpoint is run on the image in a second worker and the
prediction is added as layers: class probabilities, argmax labels and normalised entropy, placed
on the image's grid (scale, translate, direction; a crop or a resampled grid is placed where it lies)
and tagged with the image's case. After a cohort run the first test case (else the first validation
case) is read and predicted in the worker, and added with its image on that case's grid.

The settings scroll; Start, Pause, Cancel, the progress bar and the status line sit below them and
stay in view however small the dock. Layer choices hold the layer objects (they follow renames), and
a warning (napari notification and a line in the dock) says when the image and the raters differ in
grid. Closing the dock during a run cancels it, says where ``last.pt`` was written and closes the
*Training curves* dock too.

Failures inside the worker (bad settings, CUDA out of memory, a diverging loss) come back as
records, never as exceptions, and become one napari notification with advice.
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, LineEdit, ProgressBar, PushButton
from qtpy.QtCore import QEvent, QObject

from ..core.geometry import Geometry
from ..workflow.training import (
    TrainingFailure,
    TrainOutcome,
    training_job,
    warm_up_training,
)
from ._base import DockWidget
from ._common import (
    guarded,
    keep_alive,
    logger,
    run_in_thread,
    show_error,
    show_info,
    tabify_when_docked,
    when_docked,
)
from ._layer_choices import LayerWatcher
from ._train_curves import TrainingCurves
from ._train_form import TrainForm
from ._train_prediction import CASE_IMAGE_LAYER, PREDICTION_LAYERS, TrainPrediction

if TYPE_CHECKING:
    import napari

    from ..core.training import TrainConfig, TrainProgress, TrainResult

__all__ = ["CASE_IMAGE_LAYER", "PREDICTION_LAYERS", "TrainWidget", "preload_training_modules"]

#: Least time between two updates of the status line, progress bars and curves for progress records
#: (at most 5 a second however fast records arrive: steps of a tiny model, one-step epochs); the
#: latest record held back is shown when the interval has passed, and the run's last record at once.
UI_INTERVAL_S = 0.2
#: Least height of the scrolling settings area (pixels).
MIN_SETTINGS_HEIGHT = 60

_PRELOADED = False
_PRELOAD_LOCK = threading.Lock()


def preload_training_modules() -> None:
    """Do the one-off imports (PyTorch, MONAI, matplotlib's Qt canvas) and kernel set-up, once per process.

    Thread-safe; the widget runs it in a worker thread when it opens (Start is enabled once it is
    done), the Guide in its loading worker.
    """
    global _PRELOADED
    if _PRELOADED:
        return
    with _PRELOAD_LOCK:
        if not _PRELOADED:
            try:
                _preload_unlocked()
            except Exception:  # noqa: BLE001 - only a warm-up: the run itself imports what it needs
                # e.g. torch's modules half-initialised when another thread imports them at the same time
                logger.debug("warming up the training modules failed", exc_info=True)
            _PRELOADED = True


def _preload_unlocked() -> None:
    import napari_matplotlib.base  # noqa: F401 - matplotlib and its Qt backend (no widget is made here)
    import pint

    # napari's first layer builds pint's unit registry (~0.8 s): here, not on the event loop when a run's
    # prediction is added to an empty viewer (a cohort run)
    pint.get_application_registry().pixel  # noqa: B018 - the attribute access builds the registry
    warm_up_training()


class _UndockWatcher(QObject):
    """Calls ``on_undock`` when the watched widget loses its parent after having been docked.

    napari's "close" button on a dock widget (and ``remove_dock_widget``) un-parents the inner
    widget without deleting it, so ``destroyed`` alone does not say that the dock was closed.
    """

    def __init__(self, on_undock: Any, parent: Any) -> None:
        super().__init__(parent)
        self._on_undock = on_undock
        self._docked = False

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange:
            if obj.parent() is not None:
                self._docked = True
            elif self._docked:
                self._docked = False
                self._on_undock()
        return False


class TrainWidget(TrainForm, TrainPrediction, TrainingCurves, DockWidget):
    """Train a softmax, SoftSeg, SSN, ensemble or MC-dropout model on the loaded raters or a cohort.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari.

    Notes
    -----
    :meth:`start` (the Start button) trains in a worker and returns it; :attr:`computed` is emitted
    with a :class:`~napari_seg_uncertainty.workflow.training.TrainOutcome` once the prediction layers
    are added, :attr:`failed` when the run failed. For a cohort, :meth:`load_cohort` loads one in a
    worker (returns it; :attr:`cohort`, :attr:`split` and :attr:`case_rows` once done), and
    ``start(data_source="cohort", split_mode=…)`` trains on it. The settings sit in a scroll area
    (:attr:`settings`, a ``Container(scrollable=True)``) whose scrolling part is embedded here
    directly: napari docks a magicgui widget's ``native``, which for a scrollable container is the
    widget *inside* the scroll area, so the scroll area would be lost.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, status="Ready.")
        viewer = self._viewer
        self.records: list[TrainProgress] = []
        self.result: TrainResult | None = None
        self.checkpoint_path: str | None = None
        self.failure: TrainingFailure | None = None
        self.grid_warning: str | None = None
        self.state = "idle"  # idle, training, paused, cancelling, predicting
        self._pbar: Any = None
        self._pbar_busy = False
        self._last_ui = 0.0
        self._held_record: Any = None  # the latest record not shown yet (UI_INTERVAL_S), with ...
        self._held_force = False  # ... whether a record held back since the last update redraws the curves
        self._ui_timer: Any = None  # shows the held record once UI_INTERVAL_S has passed
        self._geometry: Geometry | None = None
        self._image_shape: tuple[int, ...] = ()
        self._crop_start: tuple[int, ...] | None = None
        self._crop: tuple[slice, ...] | None = None
        self._image_layer: Any = None
        self._case: str | None = None
        self._closed = False
        self._init_curves()
        self._init_prediction()
        #: The settings, in a scroll area (scrolls when the dock is short).
        self.settings = Container(
            labels=True, scrollable=True,
            widgets=[*self._build_source_settings(), *self._build_layer_settings(viewer),
                     *self._build_run_settings()],
        )
        self._place_source_widgets(self.settings)
        self._build_actions()
        self._method.changed.connect(self._on_method_changed)
        self._epochs.changed.connect(self._on_epochs_changed)
        self._image.changed.connect(self._check_grid)
        self._raters.changed.connect(self._check_grid)
        self._seed.changed.connect(self.cohort_controls.refresh_split)
        from qtpy.QtWidgets import QComboBox, QSizePolicy

        for combo in self.settings.native.findChildren(QComboBox):  # long entries elide instead of widening
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self._status.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        scroll = self.settings.root_native_widget
        scroll.setFrameShape(scroll.Shape.NoFrame)
        scroll.setMinimumHeight(MIN_SETTINGS_HEIGHT)
        self.native.layout().insertWidget(0, scroll, 1)  # the scroll area itself, not its inner widget
        self.margins = (4, 4, 4, 4)
        self.max_width = 480
        self._on_method_changed()
        self._on_source_changed()
        self._watcher = LayerWatcher(viewer, self._refresh_choices, owner=self.native)
        self._refresh_choices()
        self.native.destroyed.connect(self._on_destroyed)
        self._undock_watcher = _UndockWatcher(self._on_undocked, self.native)
        self.native.installEventFilter(self._undock_watcher)
        if _PRELOADED:
            self._on_preloaded()
        else:  # PyTorch and MONAI load in a worker thread: the window stays responsive meanwhile
            self._set_state("idle")
            self._status.value = "Preparing PyTorch and MONAI (first use; a few seconds)…"
            self._preload_worker = run_in_thread(
                preload_training_modules,
                action="Preparing PyTorch",
                returned=lambda _result: self._on_preloaded(),
            )
        tabify_when_docked(self.native)
        when_docked(self.native, self._balance_docks)  # once docked, if the curves are docked already

    def _build_actions(self) -> None:
        """Below the settings, always in view: the grid warning, the buttons, progress, status, checkpoint."""
        self._start = PushButton(text="Start")
        self._pause = PushButton(text="Pause", enabled=False)
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        lines = self._status.native.fontMetrics().lineSpacing()
        self._status.native.setMinimumHeight(2 * lines + 4)  # two wrapped lines always fit
        self._grid_label = Label(value="")
        self._grid_label.native.setWordWrap(True)
        self._grid_label.native.setStyleSheet("color: #f0a030;")
        self._grid_label.visible = False
        self._checkpoint = LineEdit(label="Checkpoint", value="", tooltip="The checkpoint of the last run.")
        self._checkpoint.native.setReadOnly(True)
        self._checkpoint.native.setPlaceholderText("checkpoint of the last run")
        self._start.changed.connect(lambda _value=None: self.start())
        self._pause.changed.connect(self.toggle_pause)
        self._cancel.changed.connect(self.cancel)
        buttons = Container(layout="horizontal", labels=False, widgets=[self._start, self._pause, self._cancel])
        buttons.margins = (0, 0, 0, 0)
        self.actions = Container(
            labels=False, widgets=[self._grid_label, buttons, self._progress, self._status, self._checkpoint]
        )
        self.actions.margins = (0, 4, 0, 0)
        self.append(self.actions)

    @property
    def ready(self) -> bool:
        """Whether PyTorch and MONAI are loaded (Start is enabled only then)."""
        return _PRELOADED

    @property
    def busy(self) -> bool:
        """Whether a run (training or its prediction) is going."""
        return self.state != "idle" or super().busy

    def _on_preloaded(self) -> None:
        if self._closed:
            return
        if self.plot_widget is None:
            self._create_plot()  # matplotlib was imported with PyTorch, in the worker
        with self._device.changed.blocked():
            device = self._device.value
            self._device.choices = self._device_choices()
            if device in self._device.choices:
                self._device.value = device
        if self.state == "idle":
            self._set_state("idle")
            if self._status.value.startswith("Preparing"):
                self._status.value = "Ready."

    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer choices (napari calls this on layer events)."""
        self._refresh_choices()

    def _on_destroyed(self, _obj: Any = None) -> None:
        """The widget was deleted (its dock or the viewer closed): stop training, skip the prediction."""
        self._stop_on_close()

    def _on_undocked(self) -> None:
        """The dock was closed with its ×: stop training and close the Training curves dock with it."""
        self._stop_on_close()
        self._close_curves()

    def _stop_on_close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.worker is not None and self.state in ("training", "paused"):
            if self.state == "paused":
                self.worker.resume()
            self.worker.send("cancel")
            self.state = "cancelling"
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    # actions ---------------------------------------------------------------------------------------
    def start(self, **settings: Any) -> Any:
        """Set ``settings`` (see :meth:`configure`), then train in a worker; returns it.

        ``None`` when nothing ran: a run is going already, or the settings or layers are invalid
        (one notification says why). :attr:`computed` is emitted with a ``TrainOutcome`` once the
        prediction layers are added; :attr:`failed` when training or the prediction fails.
        """
        if self.state == "loading":
            show_info("The cohort is still loading; start once its cases are listed.")
            return None
        if self.state != "idle":
            show_info("Training is already running; cancel it first.")
            return None
        preload_training_modules()  # at once if done; a script calling start() early waits for it here
        try:
            self.configure(**settings)
            data, split = self._run_data()  # ValueError: no layers, no cohort, a bad split
            resume = self._resume_checkpoint()
            run_dir = Path(str(self._output.value)).expanduser() / _dt.datetime.now().strftime(
                "run-%Y%m%d-%H%M%S-%f"
            )
            config = self.build_config(str(run_dir))
            self._begin(config)
            from superqt.utils import create_worker

            self.worker = create_worker(
                training_job, config, data, resume, split=split, _start_thread=False, _ignore_errors=True
            )
            keep_alive(self.worker)
            self.worker.yielded.connect(guarded(self._on_record))
            self.worker.finished.connect(guarded(self._on_worker_finished))
            self.worker.returned.connect(guarded(self._on_returned))
            self.worker.start()
            return self.worker
        except Exception as exc:  # noqa: BLE001 - bad settings, layers or cohort: a notification, never a traceback
            logger.debug("Start training failed", exc_info=True)
            show_error(f"Start training failed: {exc}")
            self._status.value = f"Not started: {exc}"
        self._set_state("idle")
        return None

    def toggle_pause(self) -> None:
        """Pause the worker at its next step, or resume it."""
        if self.worker is None or self.state not in ("training", "paused"):
            return
        if self.state == "training":
            self.worker.pause()
            self._set_state("paused")
            self._status.value = "Paused (the worker stops after the current step)."
        else:
            self.worker.resume()
            self._set_state("training")

    def cancel(self) -> None:
        """Stop training: the generator saves a checkpoint, then the prediction runs on it."""
        if self.worker is None or self.state not in ("training", "paused"):
            return
        if self.state == "paused":
            self.worker.resume()
        self.worker.send("cancel")
        self._set_state("cancelling")
        self._status.value = "Cancelling: saving a checkpoint…"

    # worker callbacks ------------------------------------------------------------------------------
    def _begin(self, config: TrainConfig) -> None:
        from napari.utils import progress

        self.records, self.result, self.failure, self.prediction = [], None, None, None
        self.case_prediction = None
        self.checkpoint_path = None
        self._checkpoint.value = ""
        self._held_record, self._held_force, self._last_ui = None, False, 0.0
        total = config.epochs * config.steps_per_epoch
        self._progress.max = total
        self._progress.value = 0
        if self._pbar is not None:
            self._pbar.close()
        self._pbar = progress(total=total, desc="Training")
        self._reset_plot(config.epochs)
        self._set_state("training")
        self._status.value = "Starting…"

    def _on_record(self, record: Any) -> None:
        if self._closed:
            if isinstance(record, TrainingFailure):
                self.failure = record
                return
            self.records.append(record)
            if getattr(record, "checkpoint", None):
                self.checkpoint_path = record.checkpoint
            return
        if isinstance(record, TrainingFailure):
            self.failure = record
            show_error(f"Training failed: {record.message}. {record.advice}")
            self._status.value = f"Failed: {record.message}"
            return
        self.records.append(record)
        if record.checkpoint and record.kind in ("epoch", "done", "cancelled"):
            # bookkeeping first: napari's progress bar below may process events, and with them
            # the worker's ``finished``, which needs the checkpoint
            self.checkpoint_path = record.checkpoint
        self._held_force = self._held_force or record.kind != "step"
        wait = UI_INTERVAL_S - (time.monotonic() - self._last_ui)
        if record.kind not in ("done", "cancelled") and wait > 0:
            # keep the GUI thread (and the GIL) free for training: a few updates a second suffice;
            # the latest record held back is shown once the interval has passed
            self._held_record = record
            self._show_held_later(wait)
            return
        self._show_record(record)

    def _show_held_later(self, wait: float) -> None:
        from qtpy.QtCore import QTimer

        if self._ui_timer is None:
            self._ui_timer = QTimer(self.native)
            self._ui_timer.setSingleShot(True)
            self._ui_timer.timeout.connect(guarded(self._show_held))
        if not self._ui_timer.isActive():
            self._ui_timer.start(max(1, int(1000 * wait) + 1))

    def _show_held(self) -> None:
        record, self._held_record = self._held_record, None
        if record is not None and not self._closed and self.state == "training":  # not over "Paused …"
            self._show_record(record)

    def _show_record(self, record: Any) -> None:
        """Update the status line, the progress bars, the checkpoint field and the curves for ``record``."""
        self._held_record = None
        if self._ui_timer is not None:
            self._ui_timer.stop()
        force, self._held_force = self._held_force, False
        self._last_ui = time.monotonic()
        if self.checkpoint_path:
            self._checkpoint.value = self.checkpoint_path
        self._progress.value = record.global_step
        self._sync_progress(record.global_step)
        self._status.value = self._describe(record)
        self._update_plot(force=force)

    @staticmethod
    def _describe(record: Any) -> str:
        """The status line for a progress record (a cohort run's also says cases seen and data wait)."""
        if record.kind == "step":
            text = (
                f"Epoch {record.epoch}/{record.epochs}, step {record.step}/{record.steps_per_epoch}: "
                f"loss {record.loss:.4f}"
            )
        elif record.kind == "epoch":
            text = f"Epoch {record.epoch}/{record.epochs}: loss {record.loss:.4f}"
            if record.val_dice is not None:
                text += f", val NLL {record.val_nll:.4f}, val Dice {record.val_dice:.3f}"
        else:
            return str(record.message)
        details = []
        cases_seen = getattr(record, "cases_seen", None)
        if cases_seen is not None:
            details.append(f"{cases_seen:,} case seen" if cases_seen == 1 else f"{cases_seen:,} cases seen")
        if record.throughput is not None:
            details.append(f"{record.throughput:.1f} patches/s")
        data_wait = getattr(record, "data_wait", None)
        if data_wait is not None:
            details.append(f"data wait {100 * data_wait:.0f} %")
        return text + (f" ({', '.join(details)})" if details else "")

    def _sync_progress(self, step: int) -> None:
        """Move napari's progress bar to ``step``, never re-entrantly.

        napari's progress bar calls ``QApplication.processEvents()`` when its value changes, which
        delivers the next records (and timers) inside this call; without the guard the calls nest
        ever deeper while training runs (a RecursionError was seen in a busy demo window).
        """
        if self._pbar is None or self._pbar_busy or step <= self._pbar.n:
            return
        self._pbar_busy = True
        try:
            self._pbar.update(step - self._pbar.n)
        finally:
            self._pbar_busy = False

    def _on_returned(self, result: Any) -> None:
        self.result = result

    def _outcome(self, layers: tuple[str, ...] = ()) -> TrainOutcome:
        kinds = [getattr(r, "kind", "") for r in self.records]
        return TrainOutcome(checkpoint=self.checkpoint_path, result=self.result, failure=self.failure,
                            cancelled="cancelled" in kinds, layers=layers)

    def _on_worker_finished(self) -> None:
        if self._closed:
            self.state = "idle"
            self._say_cancelled_by_close()
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._update_plot(force=True)
        if not self.checkpoint_path and self.result is not None:
            self.checkpoint_path = self.result.checkpoint
        if self.failure is None and self.checkpoint_path:
            self._run_prediction(self.checkpoint_path)
            return
        self._set_state("idle")
        if self.failure is not None:
            self.fail(f"{self.failure.message}. {self.failure.advice}", notify=False)
            self._status.value = f"Failed: {self.failure.message}"
        else:
            self.done(self._outcome())

    def _say_cancelled_by_close(self) -> None:
        """One notification after the dock was closed during a run: cancelled, and where last.pt is."""
        kinds = [getattr(r, "kind", "") for r in self.records]
        if "cancelled" not in kinds:
            return  # the run had ended before the dock closed
        if self.checkpoint_path:
            show_info(
                "Training cancelled: the Train dock was closed during the run. The last checkpoint is "
                f"{self.checkpoint_path} (open Train again and choose it in 'Resume from' to continue)."
            )
        else:
            show_info("Training cancelled: the Train dock was closed before a checkpoint was written.")

    def _set_state(self, state: str) -> None:
        self.state = state
        running = state in ("training", "paused")
        self._start.enabled = state == "idle" and _PRELOADED
        self._source.enabled = state in ("idle", "loading")
        self.cohort_controls.set_enabled(state in ("idle", "loading"))
        self._pause.enabled = running
        self._cancel.enabled = running
        self._pause.text = "Resume" if state == "paused" else "Pause"
