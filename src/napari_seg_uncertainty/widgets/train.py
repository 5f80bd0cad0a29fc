"""Dock widget "Train": train a segmentation model on the loaded raters without freezing napari.

The widget is thin: it reads the image and rater layers, builds a
:class:`~napari_seg_uncertainty.core.training.TrainConfig`, and runs the core training generator
:func:`~napari_seg_uncertainty.core.training.train` in a napari thread worker. Every progress record
updates a napari progress bar, a status line and (at most once a second) a themed matplotlib plot
of the training loss and validation metrics docked next to it. Pause/Resume pauses the worker at
the next step; Cancel sends ``"cancel"`` into the generator, which writes a checkpoint first. When
the run ends (or is cancelled) the checkpoint is run on the image in a second worker and the
prediction is added as layers: class probabilities, argmax labels and normalised entropy, placed
on the image's grid (scale, translate, direction; a crop or a resampled grid is placed where it lies)
and tagged with the image's case.

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
import tempfile
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject

from ..core.geometry import Geometry
from ._case import case_of
from ._common import (
    guarded,
    keep_alive,
    logger,
    notify_errors,
    run_in_thread,
    show_error,
    show_info,
    show_warning,
    tabify_when_docked,
    unwrap_viewer,
    upsert_layer,
)
from ._layer_choices import LayerWatcher, choices_for, is_image_layer, is_labels_layer
from ._staged import LayerSelect, labels_problem

if TYPE_CHECKING:
    import napari

    from ..core.training import Prediction, TrainConfig, TrainingData, TrainProgress, TrainResult

__all__ = ["TrainWidget", "TrainingFailure", "advice_for", "grid_mismatch", "prediction_geometry", "training_job"]

#: (label, (head, loss)) choices of the "Model / loss" box.
METHODS = (
    ("Softmax + soft-target cross-entropy", ("softmax", "ce")),
    ("Softmax + soft Dice", ("softmax", "dice")),
    ("Softmax + cross-entropy + Dice", ("softmax", "ce_dice")),
    ("SoftSeg: normalised ReLU + Adaptive Wing", ("softseg", "adaptive_wing")),
    ("SSN: low-rank logits + Monte-Carlo loss", ("ssn", "ssn")),
)
#: Training targets offered, in this order (``core.training.TARGETS``; PyTorch is not imported to list them).
TARGET_LABELS = {
    "mean": "Raters' mean (mOH)",
    "msvls": "mSVLS (SVLS per rater, averaged)",
    "svls": "SVLS of the majority vote",
    "label_smoothing": "Label smoothing of the majority vote",
    "onehot": "One-hot majority vote",
    "staple": "STAPLE",
    "random_rater": "Random rater per iteration",
}
#: U-Net sizes offered in the widget: (channels, strides).
MODEL_SIZES = {
    "tiny (8-16-32)": ((8, 16, 32), (2, 2)),
    "small (16-32-64)": ((16, 32, 64), (2, 2)),
    "medium (16-32-64-128)": ((16, 32, 64, 128), (2, 2, 2)),
    "large (32-64-128-256)": ((32, 64, 128, 256), (2, 2, 2)),
}
PLOT_INTERVAL_S = 1.0
#: Least time between two updates of the status line and progress bars for step records.
UI_INTERVAL_S = 0.2
#: Initial y range of the (log-scale) loss plot; it grows only if a loss leaves it.
LOSS_RANGE = (1e-3, 30.0)
#: "Predict on" choices: the whole image, or the raters' region (foreground bounding box + margin).
PREDICT_REGIONS = (("whole image", "image"), ("raters' region (+8 voxels)", "raters"))
REGION_MARGIN = 8
#: Least height of the scrolling settings area and of the Training curves plot (pixels).
MIN_SETTINGS_HEIGHT = 60
MIN_PLOT_HEIGHT = 120
CURVES_DOCK = "Training curves"


def prediction_geometry(
    image_geometry: Geometry,
    image_shape: tuple[int, ...],
    prediction_shape: tuple[int, ...],
    crop_start: tuple[int, ...] | None = None,
) -> Geometry:
    """Where a prediction lies: the image's grid, moved to a crop's first voxel, rescaled if resampled.

    ``image_shape`` is the spatial shape of the region the model saw (the crop, when there is one);
    a ``prediction_shape`` that differs from it means the prediction was made on a resampled grid
    covering the same field of view, whose spacing follows from the ratio of the shapes.

    Examples
    --------
    >>> g = Geometry(spacing=(3.0, 0.8, 0.8), origin=(10.0, -40.0, -50.0))
    >>> prediction_geometry(g, (20, 64, 64), (20, 64, 64), crop_start=(2, 10, 0)).origin
    (16.0, -32.0, -50.0)
    >>> prediction_geometry(g, (20, 64, 64), (20, 32, 32)).spacing
    (3.0, 1.6, 1.6)
    """
    placed = image_geometry if crop_start is None else image_geometry.cropped(crop_start)
    spatial = tuple(int(s) for s in image_shape)[-placed.ndim:]
    predicted = tuple(int(s) for s in prediction_shape)[-placed.ndim:]
    if predicted != spatial:
        spacing = tuple(sp * n / m for sp, n, m in zip(placed.spacing, spatial, predicted))
        placed = placed.resampled(spacing)
    return placed


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def grid_mismatch(image_layer: Any, rater_layers: list[Any]) -> str | None:
    """Why the raters do not label the image's voxels (shape, spacing, origin, direction), or ``None``.

    A single rater layer with one more axis than the image is an ``(R, *spatial)`` stack.
    """
    if image_layer is None or not rater_layers:
        return None
    image_shape = tuple(np.shape(image_layer.data))
    for layer in rater_layers:
        shape = tuple(np.shape(layer.data))
        n = len(image_shape)
        if len(rater_layers) == 1 and len(shape) == n + 1:
            shape = shape[1:]
        if len(shape) != n:
            return (f"rater {layer.name!r} has {len(shape)} axes {shape} but image {image_layer.name!r} has "
                    f"{n} {image_shape}; every rater must label the image's grid.")
        if shape != image_shape:
            return (f"rater {layer.name!r} has shape {shape} but image {image_layer.name!r} has {image_shape}; "
                    "every rater must label the image's grid.")
        try:
            mine, theirs = Geometry.of(image_layer, ndim=n), Geometry.of(layer, ndim=n)
        except (TypeError, ValueError):
            continue
        if not mine.same_grid(theirs):
            differences = []
            if not np.allclose(mine.spacing, theirs.spacing, rtol=1e-5, atol=1e-4):
                differences.append(f"spacing {_fmt(theirs.spacing)} vs {_fmt(mine.spacing)}")
            if not np.allclose(mine.origin, theirs.origin, rtol=1e-5, atol=1e-4):
                differences.append(f"origin {_fmt(theirs.origin)} vs {_fmt(mine.origin)}")
            if not differences:
                differences.append("direction")
            return (f"rater {layer.name!r} lies on another grid than image {image_layer.name!r}: "
                    f"{', '.join(differences)}. Training pairs voxels by index, so the model would learn "
                    "misplaced labels; load the raters with the image's geometry.")
    return None


def _is_train_image(layer: Any) -> bool:
    """A grey-level image to train on: not RGB, not a map or probability stack this plugin added."""
    meta = layer.metadata or {}
    return is_image_layer(layer, skip_uncertainty_maps=True) and "class_names" not in meta and "rater" not in meta


@dataclass
class TrainingFailure:
    """Yielded by :func:`training_job` instead of raising: what failed and what to do about it."""

    message: str
    advice: str
    exception: BaseException


def advice_for(exc: BaseException) -> str:
    """A sentence telling the user how to get past ``exc``.

    Examples
    --------
    >>> advice_for(MemoryError())[:20]
    'Out of memory: lower'
    """
    import torch

    oom = (MemoryError, torch.OutOfMemoryError)
    if isinstance(exc, oom) or "out of memory" in str(exc).lower():
        return (
            "Out of memory: lower the batch size or patch size, use a smaller model, fewer ensemble "
            "members or a smaller SSN rank, or train on the CPU."
        )
    if isinstance(exc, FloatingPointError):
        return "The loss diverged: lower the learning rate (or, for SSN, enable background masking)."
    if isinstance(exc, (ValueError, TypeError)):
        return "Check the settings and the selected layers."
    if isinstance(exc, (OSError, PermissionError)):
        return "Check that the output folder exists and is writable."
    return "See the log for details; the viewer is still usable."


def train(config: TrainConfig, data: TrainingData, resume: str | None = None) -> Generator[Any, Any, Any]:
    """:func:`napari_seg_uncertainty.core.training.train`, imported on first use (it imports PyTorch)."""
    from ..core.training import train as core_train

    return core_train(config, data, resume=resume)


def predict(checkpoint: str, image: Any, **kwargs: Any) -> Prediction:
    """:func:`napari_seg_uncertainty.core.training.predict`, imported on first use (it imports PyTorch)."""
    from ..core.training import predict as core_predict

    return core_predict(checkpoint, image, **kwargs)


def training_job(
    config: TrainConfig, data: TrainingData, resume: str | None = None
) -> Generator[TrainProgress | TrainingFailure, str | None, TrainResult | None]:
    """Run :func:`train` for a worker, turning any exception into a yielded :class:`TrainingFailure`.

    Thread workers swallow ``RuntimeError`` (CUDA out-of-memory is one), so the job never raises;
    values sent in (``"cancel"``) are passed on to the training generator.
    """
    gen = train(config, data, resume=resume)
    try:
        command: str | None = None
        while True:
            try:
                record = gen.send(command)
            except StopIteration as stop:
                return stop.value
            command = yield record
    except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
        yield TrainingFailure(message=f"{type(exc).__name__}: {exc}", advice=advice_for(exc), exception=exc)
        return None
    finally:
        gen.close()  # a worker aborted from outside still saves its checkpoint


_PRELOADED = False
_PRELOAD_LOCK = threading.Lock()


def _preload_training_modules() -> None:
    """Do the one-off imports (PyTorch, MONAI) and kernel set-up of a training run, once per process.

    Thread-safe; the widget runs it in a worker thread when it opens (Start is enabled once it is
    done), the Guide in its loading worker. Importing ``torch._dynamo`` (pulled in by the first
    optimiser) and the first convolution forward/backward pass would otherwise happen at the start
    of the first run, inside the training worker.
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
    import monai.inferers  # noqa: F401
    import monai.losses  # noqa: F401
    import napari_matplotlib.base  # noqa: F401 - matplotlib and its Qt backend (no widget is made here)
    import torch
    import torch._dynamo  # noqa: F401

    from ..core import labels  # noqa: F401
    from ..core.models import build_model

    for dims in (2, 3):
        net = build_model(
            spatial_dims=dims,
            in_channels=1,
            num_classes=2,
            channels=(2, 4),
            strides=(2,),
            num_res_units=1,
            seed=None,
        )
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(torch.zeros((1, 1, 1) + (4,) * dims)).sum().backward()
        optimiser.step()


def _dock_of(widget: Any) -> Any:
    """The ``QDockWidget`` holding the Qt widget ``widget``, or ``None``."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


def _foreground_box(raters: np.ndarray, margin: int) -> tuple[tuple[int, ...], tuple[slice, ...]] | tuple[None, None]:
    """Start and slices of the box around every rater's foreground, grown by ``margin`` voxels."""
    foreground = np.any(raters > 0, axis=0)
    if not foreground.any():
        return None, None
    starts, slices = [], []
    for axis in range(foreground.ndim):
        other = tuple(a for a in range(foreground.ndim) if a != axis)
        hit = np.flatnonzero(foreground.any(axis=other))
        lo, hi = max(0, int(hit[0]) - margin), min(foreground.shape[axis], int(hit[-1]) + 1 + margin)
        starts.append(lo)
        slices.append(slice(lo, hi))
    return tuple(starts), tuple(slices)


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


class TrainWidget(Container):
    """Train a softmax, SoftSeg, SSN, ensemble or MC-dropout model on the loaded raters.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Injected by napari.

    Notes
    -----
    The settings sit in a scroll area (:attr:`settings`, a ``Container(scrollable=True)``) whose
    scrolling part is embedded here directly: napari docks a magicgui widget's ``native``, which for a
    scrollable container is the widget *inside* the scroll area, so the scroll area would be lost.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self._viewer = viewer
        self.worker: Any = None
        self.predict_worker: Any = None
        self.records: list[TrainProgress] = []
        self.result: TrainResult | None = None
        self.checkpoint_path: str | None = None
        self.prediction: Prediction | None = None
        self.failure: TrainingFailure | None = None
        self.grid_warning: str | None = None
        self.state = "idle"  # idle, training, paused, cancelling, predicting
        self.plot_widget: Any = None
        self._pbar: Any = None
        self._pbar_busy = False
        self._last_draw = 0.0
        self._last_ui = 0.0
        self._geometry: Geometry | None = None
        self._image_shape: tuple[int, ...] = ()
        self._crop_start: tuple[int, ...] | None = None
        self._crop: tuple[slice, ...] | None = None
        self._image_layer: Any = None
        self._case: str | None = None
        self._closed = False

        self._image = ComboBox(
            label="Image", choices=choices_for(viewer, _is_train_image), tooltip="The image the raters annotated."
        )
        self._raters = LayerSelect(  # layer objects in layer-list order (rater 1 first); takes names too
            viewer,
            is_labels_layer,
            explain=labels_problem,
            label="Raters",
            tooltip="One Labels layer per rater (or one (R, *spatial) stack).",
        )
        self._raters.native.setMaximumHeight(110)
        self._target = ComboBox(
            label="Target", choices=[(label, t) for t, label in TARGET_LABELS.items()], value="mean"
        )
        self._method = ComboBox(
            label="Model / loss", choices=[(label, i) for i, (label, _) in enumerate(METHODS)], value=0
        )
        self._model_size = ComboBox(label="U-Net size", choices=list(MODEL_SIZES), value="small (16-32-64)")
        self._dims = ComboBox(
            label="Dimensions", choices=[("as the data", 0), ("2-D slices", 2), ("3-D patches", 3)], value=0
        )
        self._ensemble = SpinBox(label="Ensemble members", value=1, min=1, max=20)
        self._dropout = FloatSpinBox(label="MC dropout", value=0.0, min=0.0, max=0.9, step=0.05)
        self._ssn_rank = SpinBox(label="SSN rank", value=10, min=1, max=100)
        self._ssn_samples = SpinBox(label="SSN MC samples", value=20, min=2, max=200, step=2)
        self._mask_background = CheckBox(
            text="Mask background (image = 0)",
            value=False,
            tooltip="Image = 0 (air around a brain): SSN zeroes the covariance, others leave it out of the loss.",
        )
        self._epochs = SpinBox(label="Epochs", value=10, min=1, max=10000)
        self._steps = SpinBox(label="Steps per epoch", value=20, min=1, max=100000)
        self._batch = SpinBox(label="Batch size", value=4, min=1, max=512)
        self._patch = LineEdit(
            label="Patch size",
            value="",
            tooltip="e.g. '64, 64' or '32, 64, 64'; blank picks one that fits the data.",
        )
        self._lr = FloatSpinBox(label="Learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self._lr.native.setDecimals(6)
        self._device = ComboBox(label="Device", choices=["auto", "cpu"], value="auto")  # GPUs once torch is in
        self._seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._output = FileEdit(
            label="Output folder", mode="d", value=str(Path(tempfile.gettempdir()) / "napari-seg-uncertainty")
        )
        self._resume = FileEdit(
            label="Resume from",
            mode="r",
            filter="*.pt",
            value="",
            tooltip="Optional: a last.pt written by an earlier run, to continue it (same settings).",
        )
        self._predict_on = ComboBox(
            label="Predict on",
            choices=list(PREDICT_REGIONS),
            value="image",
            tooltip="The whole image, or only the region the raters labelled (faster on a large volume).",
        )
        self._start = PushButton(text="Start")
        self._pause = PushButton(text="Pause", enabled=False)
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self._status = Label(value="Ready.")
        self._status.native.setWordWrap(True)
        lines = self._status.native.fontMetrics().lineSpacing()
        self._status.native.setMinimumHeight(2 * lines + 4)  # two wrapped lines always fit
        self._grid_label = Label(value="")
        self._grid_label.native.setWordWrap(True)
        self._grid_label.native.setStyleSheet("color: #f0a030;")
        self._grid_label.visible = False
        self._checkpoint = LineEdit(label="Checkpoint", value="", tooltip="The checkpoint of the last run.")
        self._checkpoint.native.setReadOnly(True)
        self._checkpoint.native.setPlaceholderText("checkpoint of the last run")

        self._start.changed.connect(self.start)
        self._pause.changed.connect(self.toggle_pause)
        self._cancel.changed.connect(self.cancel)
        self._method.changed.connect(self._on_method_changed)
        self._epochs.changed.connect(self._on_epochs_changed)
        self._image.changed.connect(self._check_grid)
        self._raters.changed.connect(self._check_grid)

        #: The settings, in a scroll area (scrolls when the dock is short).
        self.settings = Container(
            labels=True,
            scrollable=True,
            widgets=[
                self._image,
                self._raters,
                self._target,
                self._method,
                self._model_size,
                self._dims,
                self._ensemble,
                self._dropout,
                self._ssn_rank,
                self._ssn_samples,
                self._mask_background,
                self._epochs,
                self._steps,
                self._batch,
                self._patch,
                self._lr,
                self._device,
                self._seed,
                self._output,
                self._resume,
                self._predict_on,
            ],
        )
        buttons = Container(layout="horizontal", labels=False, widgets=[self._start, self._pause, self._cancel])
        buttons.margins = (0, 0, 0, 0)
        #: Always in view below the settings: the grid warning, the buttons, progress, status, checkpoint.
        self.actions = Container(
            labels=False, widgets=[self._grid_label, buttons, self._progress, self._status, self._checkpoint]
        )
        self.actions.margins = (0, 4, 0, 0)
        self.append(self.actions)
        scroll = self.settings.root_native_widget
        scroll.setFrameShape(scroll.Shape.NoFrame)
        scroll.setMinimumHeight(MIN_SETTINGS_HEIGHT)
        self.native.layout().insertWidget(0, scroll, 1)  # the scroll area itself, not its inner widget
        self.margins = (4, 4, 4, 4)
        self.max_width = 480
        self._on_method_changed()
        self._background = None
        self._lines: dict[str, Any] = {}
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
                _preload_training_modules,
                action="Preparing PyTorch",
                returned=lambda _result: self._on_preloaded(),
            )
        tabify_when_docked(self.native)

    @property
    def ready(self) -> bool:
        """Whether PyTorch and MONAI are loaded (Start is enabled only then)."""
        return _PRELOADED

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

    def _close_curves(self) -> None:
        """Remove the *Training curves* dock this widget added (it would be left orphaned)."""
        plot, self.plot_widget = self.plot_widget, None
        if plot is None:
            return
        window = getattr(self._viewer, "window", None)
        try:
            if window is not None and _dock_of(plot) is not None:
                window.remove_dock_widget(plot)
            plot.deleteLater()
        except (RuntimeError, LookupError, AttributeError):  # the viewer is closing: Qt deletes it anyway
            pass

    # choices ---------------------------------------------------------------------------------------
    @staticmethod
    def _device_choices() -> list[str]:
        import torch

        choices = ["auto", "cpu"]
        if torch.cuda.is_available():
            choices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            choices.append("mps")
        return choices

    def _refresh_choices(self, _event: Any = None) -> None:
        """Follow additions, removals and renames; keep the selected layers (they are layer objects)."""
        with self._image.changed.blocked(), self._raters.changed.blocked():
            self._image.reset_choices()
            self._raters.reset_choices()  # keeps the selected layers still present
            present = list(self._raters.choices)
            kept = list(self._raters.value)
            if not kept:  # default: every rater layer (metadata from the Load raters widget / sample data)
                kept = [layer for layer in present if "rater" in (layer.metadata or {})]
            self._raters.value = kept
        self._check_grid()

    def select_layers(self, image: Any, raters: Any) -> None:
        """Select the image and the rater layers (layer objects or names)."""
        self._image.value = self._viewer.layers[image] if isinstance(image, str) else image
        self._raters.value = list(raters)

    def _check_grid(self, _value: Any = None) -> None:
        """Warn (napari notification once, and a line in the dock) when raters and image differ in grid."""
        try:
            message = grid_mismatch(self._image.value, list(self._raters.value))
        except RuntimeError:  # a layer went away mid-update
            message = None
        if message != self.grid_warning and message is not None:
            show_warning(f"Train: {message}")
        self.grid_warning = message
        self._grid_label.value = f"⚠ {message}" if message else ""
        self._grid_label.visible = message is not None

    def _on_method_changed(self, _value: Any = None) -> None:
        is_ssn = METHODS[self._method.value][1][0] == "ssn"
        self._ssn_rank.visible = is_ssn
        self._ssn_samples.visible = is_ssn

    # settings --------------------------------------------------------------------------------------
    def set_method(self, head: str, loss: str) -> None:
        """Select the Model / loss entry for ``(head, loss)``."""
        for i, (_, pair) in enumerate(METHODS):
            if pair == (head, loss):
                self._method.value = i
                return
        raise ValueError(
            f"(head, loss) must be one of {[pair for _, pair in METHODS]}, got {(head, loss)!r}."
        )

    def build_config(self, output_dir: str | None = None) -> TrainConfig:
        """The :class:`TrainConfig` the current settings describe."""
        from ..core.training import TrainConfig

        head, loss = METHODS[self._method.value][1]
        channels, strides = MODEL_SIZES[self._model_size.value]
        patch_text = self._patch.value.strip()
        patch = None
        if patch_text:
            try:
                patch = tuple(int(v) for v in patch_text.replace(";", ",").replace(" ", ",").split(",") if v)
            except ValueError as exc:
                raise ValueError(
                    f"patch size {patch_text!r} is not a list of integers, e.g. '64, 64'."
                ) from exc
        return TrainConfig(
            head=head,
            loss=loss,
            target=self._target.value,
            spatial_dims=self._dims.value or None,
            channels=channels,
            strides=strides,
            dropout=float(self._dropout.value),
            ensemble_size=int(self._ensemble.value),
            ssn_rank=int(self._ssn_rank.value),
            ssn_samples=int(self._ssn_samples.value),
            epochs=int(self._epochs.value),
            steps_per_epoch=int(self._steps.value),
            batch_size=int(self._batch.value),
            patch_size=patch,
            learning_rate=float(self._lr.value),
            device=self._device.value,
            seed=int(self._seed.value),
            background_mask=({"ssn": "covariance"}.get(head, "likelihood") if self._mask_background.value else "none"),
            output_dir=output_dir,
        )

    def collect_data(self) -> TrainingData:
        """Image and raters from the selected layers, with class names (metadata) and spacing (scale).

        Also records where a prediction goes: the image's geometry and case, and the crop that
        *Predict on* asks for.
        """
        from ..core.training import TrainingData

        image_layer = self._image.value
        if image_layer is None:
            raise ValueError("no Image layer selected; open an image (e.g. File > Open Sample > phantom).")
        layers = list(self._raters.value)
        if not layers:
            raise ValueError("no rater Labels layer selected; select one Labels layer per rater.")
        if image_layer.rgb:
            raise ValueError(
                f"image layer {image_layer.name!r} is RGB; convert it to a grey-level image first."
            )
        image = np.asarray(image_layer.data)
        arrays = [np.asarray(layer.data) for layer in layers]
        if len(arrays) == 1 and arrays[0].ndim == image.ndim + 1:
            raters = arrays[0]  # one (R, *S) stack
        else:
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                raise ValueError(
                    f"the rater layers have different shapes {sorted(shapes)}; every rater must "
                    "label the image's grid."
                )
            raters = np.stack(arrays)
        meta = layers[0].metadata or {}
        class_names = meta.get("class_names")
        spatial = raters.ndim - 1
        geometry = Geometry.of(image_layer, ndim=spatial)
        self._geometry = geometry
        self._image_layer = image_layer
        self._image_shape = tuple(image.shape[-spatial:])
        self._case = case_of(image_layer)
        self._crop_start, self._crop = None, None
        if self._predict_on.value == "raters":
            self._crop_start, self._crop = _foreground_box(raters, REGION_MARGIN)
        largest = int(raters.max()) if raters.size else 0
        if class_names is not None and len(class_names) <= largest:
            class_names = None
        return TrainingData.from_arrays(image, raters, class_names=class_names, spacing=geometry.spacing)

    def _resume_checkpoint(self) -> str | None:
        """The *Resume from* file, checked; ``None`` when empty. A file that is not a checkpoint is refused."""
        value = str(self._resume.value or "").strip()
        if value in ("", "."):
            return None
        path = Path(value).expanduser()
        if path.is_dir():
            return None  # FileEdit's empty value
        from ..core.checkpoint import load_checkpoint

        try:
            load_checkpoint(path)
        except FileNotFoundError:
            raise ValueError(f"resume file {str(path)!r} does not exist; choose a last.pt written by Train.") from None
        except ValueError:
            raise ValueError(
                f"{path.name!r} is not a training checkpoint of this plugin; choose the last.pt (or best.pt) that "
                "Train wrote into its output folder, or clear 'Resume from' to start afresh."
            ) from None
        return str(path)

    # actions ---------------------------------------------------------------------------------------
    def start(self) -> Any:
        """Start training in a worker; returns it (``None`` when the settings are invalid)."""
        if self.state != "idle":
            show_info("Training is already running; cancel it first.")
            return None
        _preload_training_modules()  # at once if done; a script calling start() early waits for it here
        with notify_errors("Start training"):
            data = self.collect_data()
            resume = self._resume_checkpoint()
            run_dir = Path(str(self._output.value)).expanduser() / _dt.datetime.now().strftime(
                "run-%Y%m%d-%H%M%S-%f"
            )
            config = self.build_config(str(run_dir))
            self._begin(config)
            from superqt.utils import create_worker

            self.worker = create_worker(
                training_job, config, data, resume, _start_thread=False, _ignore_errors=True
            )
            keep_alive(self.worker)
            self.worker.yielded.connect(guarded(self._on_record))
            self.worker.finished.connect(guarded(self._on_worker_finished))
            self.worker.returned.connect(guarded(self._on_returned))
            self.worker.start()
            return self.worker
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
        self.checkpoint_path = None
        self._checkpoint.value = ""
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
        now = time.monotonic()
        if record.kind == "step" and now - self._last_ui < UI_INTERVAL_S:
            return  # keep the GUI thread (and the GIL) free for training: a few updates a second suffice
        self._last_ui = now
        if record.checkpoint and record.kind in ("epoch", "done", "cancelled"):
            self._checkpoint.value = record.checkpoint
        self._progress.value = record.global_step
        self._sync_progress(record.global_step)
        if record.kind == "step":
            self._status.value = (
                f"Epoch {record.epoch}/{record.epochs}, step {record.step}/{record.steps_per_epoch}: "
                f"loss {record.loss:.4f} ({record.throughput:.1f} patches/s)"
            )
        elif record.kind == "epoch":
            text = f"Epoch {record.epoch}/{record.epochs}: loss {record.loss:.4f}"
            if record.val_dice is not None:
                text += f", val NLL {record.val_nll:.4f}, val Dice {record.val_dice:.3f}"
            self._status.value = text
        elif record.kind in ("done", "cancelled", "start"):
            self._status.value = record.message
        self._update_plot(force=record.kind != "step")

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
        else:
            self._set_state("idle")

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

    def _run_prediction(self, checkpoint: str) -> None:
        self._set_state("predicting")
        self._status.value = "Predicting on the image…"
        layer = self._image_layer
        if layer is None or not any(layer is other for other in self._viewer.layers):
            self._status.value = "The image layer was removed; no prediction added."
            self._set_state("idle")
            return
        image = np.asarray(layer.data)
        if self._crop is not None:
            image = image[(Ellipsis, *self._crop)]
        self.predict_worker = run_in_thread(
            predict,
            checkpoint,
            image,
            action="Prediction",
            returned=self._show_prediction,
            errored=lambda _exc: self._set_state("idle"),
        )

    def _prediction_geometry(self, result: Prediction) -> Geometry | None:
        """The prediction's grid: the image's, moved to the crop, rescaled if predicted on another grid."""
        if self._geometry is None:
            return None
        region = (
            tuple(s.stop - s.start for s in self._crop) if self._crop is not None else self._image_shape
        )
        return prediction_geometry(self._geometry, region, result.labels.shape, self._crop_start)

    def _show_prediction(self, result: Prediction) -> None:
        """Add the prediction layers one per event-loop turn (each napari layer costs ~0.1 s to add)."""
        from qtpy.QtCore import QTimer

        self.prediction = result
        geometry = self._prediction_geometry(result)
        meta = {"class_names": result.class_names, "checkpoint": self.checkpoint_path}
        if self._crop_start is not None:
            meta["crop_start"] = list(self._crop_start)
        placed = {"geometry": geometry, "case": self._case}
        pending = [
            dict(
                data=result.labels,
                name="prediction labels",
                layer_type="labels",
                opacity=0.6,
                metadata=meta,
                **placed,
            ),
            dict(
                data=result.entropy,
                name="prediction entropy",
                layer_type="image",
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                metadata=meta,
                **placed,
            ),
            dict(
                data=result.probabilities,
                name="prediction probabilities",
                layer_type="image",
                colormap="viridis",
                contrast_limits=(0.0, 1.0),
                metadata=meta,
                visible=False,
                leading_axes=1,
                **placed,
            ),
        ]

        def add_next() -> None:
            if self._closed:  # the dock went away meanwhile
                self.state = "idle"
                return
            if not pending:
                self._status.value = "Done: prediction added (probabilities, labels, entropy); checkpoint below."
                self._set_state("idle")
                return
            kwargs = pending.pop(0)
            with notify_errors("Show the prediction"):
                upsert_layer(self._viewer, kwargs.pop("data"), **kwargs)
            QTimer.singleShot(0, add_next)

        add_next()

    def _set_state(self, state: str) -> None:
        self.state = state
        running = state in ("training", "paused")
        self._start.enabled = state == "idle" and _PRELOADED
        self._pause.enabled = running
        self._cancel.enabled = running
        self._pause.text = "Resume" if state == "paused" else "Pause"

    # plot ------------------------------------------------------------------------------------------
    def _create_plot(self) -> None:
        """Themed matplotlib canvas (napari-matplotlib), docked next to this widget.

        Lines are animated and blitted onto a cached background, so a live update costs a few
        milliseconds; the full (slow) redraw happens only when an axis range has to grow.
        """
        from napari_matplotlib.base import BaseNapariMPLWidget

        self.plot_widget = BaseNapariMPLWidget(self._viewer)
        self.plot_widget.add_single_axes()
        axes = self.plot_widget.axes
        self._dice_axes = axes.twinx()
        self._lines = {
            "step": axes.plot([], [], lw=0.8, alpha=0.5, label="train loss (step)", animated=True)[0],
            "epoch": axes.plot([], [], "o-", label="train loss (epoch)", animated=True)[0],
            "val_nll": axes.plot([], [], "s-", label="validation NLL", animated=True)[0],
            "val_dice": self._dice_axes.plot(
                [], [], "^--", color="tab:green", label="validation Dice", animated=True
            )[0],
        }
        self._dice_axes.set_ylim(0, 1.05)
        self._dice_axes.set_ylabel("Dice")
        axes.set_xlabel("epoch")
        axes.set_ylabel("loss (log scale)")
        axes.set_yscale("log")
        # Fixed ranges: a live update is then a cheap blit, never a full redraw (which takes
        # ~100 ms and would stall the event loop); the x range follows the Epochs box.
        axes.set_xlim(0, max(1, int(self._epochs.value)))
        axes.set_ylim(*LOSS_RANGE)
        handles = list(self._lines.values())
        axes.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
        self._background = None
        self.plot_widget.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.plot_widget.setMinimumHeight(MIN_PLOT_HEIGHT)
        window = getattr(self._viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(self.plot_widget, name=CURVES_DOCK, area="right")

    def _on_full_draw(self, _event: Any = None) -> None:
        if self.plot_widget is None:
            return
        canvas = self.plot_widget.canvas
        self._background = canvas.copy_from_bbox(canvas.figure.bbox)
        self._blit_lines()

    def _blit_lines(self) -> None:
        if self.plot_widget is None or self._background is None:
            return
        canvas = self.plot_widget.canvas
        canvas.restore_region(self._background)
        for line in self._lines.values():
            line.axes.draw_artist(line)
        canvas.blit(canvas.figure.bbox)

    def _reset_plot(self, epochs: int) -> None:
        for line in self._lines.values():
            line.set_data([], [])
        self._last_draw = 0.0
        if self.plot_widget is None:
            return
        axes = self.plot_widget.axes
        if tuple(axes.get_xlim()) != (0, epochs) or tuple(axes.get_ylim()) != LOSS_RANGE:
            axes.set_xlim(0, epochs)
            axes.set_ylim(*LOSS_RANGE)
            self.plot_widget.canvas.draw_idle()
        else:
            self._blit_lines()

    def _on_epochs_changed(self, value: int) -> None:
        if self.state == "idle" and self.plot_widget is not None:
            self.plot_widget.axes.set_xlim(0, max(1, int(value)))
            self.plot_widget.canvas.draw_idle()

    def _update_plot(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.plot_widget is None or (not force and now - self._last_draw < PLOT_INTERVAL_S):
            return
        self._last_draw = now
        steps = [r for r in self.records if r.kind == "step"]
        epochs = [r for r in self.records if r.kind == "epoch"]
        if steps:
            per_epoch = steps[0].steps_per_epoch
            self._lines["step"].set_data([r.global_step / per_epoch for r in steps], [r.loss for r in steps])
        self._lines["epoch"].set_data(
            [r.global_step / r.steps_per_epoch for r in epochs], [r.loss for r in epochs]
        )
        validated = [r for r in epochs if r.val_nll is not None]
        x_val = [r.global_step / r.steps_per_epoch for r in validated]
        self._lines["val_nll"].set_data(x_val, [r.val_nll for r in validated])
        self._lines["val_dice"].set_data(x_val, [r.val_dice for r in validated])
        values = [v for v in [r.loss for r in steps] + [r.val_nll for r in validated] if v > 0]
        axes = self.plot_widget.axes
        low, high = axes.get_ylim()
        if values and (max(values) > high or min(values) < low):
            axes.set_ylim(min(low, min(values) / 2), max(high, max(values) * 2))  # one full redraw
            self.plot_widget.canvas.draw_idle()
        else:
            self._blit_lines()
