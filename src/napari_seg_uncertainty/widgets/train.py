"""Dock widget "Train": train a segmentation model on the loaded raters without freezing napari.

The widget is thin: it reads the image and rater layers, builds a
:class:`~napari_seg_uncertainty.core.training.TrainConfig`, and runs the core training generator
:func:`~napari_seg_uncertainty.core.training.train` in a napari thread worker. Every progress record
updates a napari progress bar, a status line and (at most once a second) a themed matplotlib plot
of the training loss and validation metrics docked next to it. Pause/Resume pauses the worker at
the next step; Cancel sends ``"cancel"`` into the generator, which writes a checkpoint first. When
the run ends (or is cancelled) the checkpoint is run on the image in a second worker and the
prediction is added as layers: class probabilities, argmax labels and normalised entropy.

Failures inside the worker (bad settings, CUDA out of memory, a diverging loss) come back as
records, never as exceptions, and become one napari notification with advice.
"""

from __future__ import annotations

import datetime as _dt
import tempfile
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
    Select,
    SpinBox,
)
from qtpy.QtCore import QEvent, QObject

from ..core.training import TARGETS, TrainConfig, TrainingData, TrainProgress, TrainResult, predict, train
from ._common import (
    connect_layer_list_changes,
    layer_names,
    notify_errors,
    run_in_thread,
    show_error,
    show_info,
    upsert_layer,
)

if TYPE_CHECKING:
    import napari

__all__ = ["TrainWidget", "TrainingFailure", "advice_for", "training_job"]

#: (label, (head, loss)) choices of the "Model / loss" box.
METHODS = (
    ("Softmax + soft-target cross-entropy", ("softmax", "ce")),
    ("Softmax + soft Dice", ("softmax", "dice")),
    ("Softmax + cross-entropy + Dice", ("softmax", "ce_dice")),
    ("SoftSeg: normalised ReLU + Adaptive Wing", ("softseg", "adaptive_wing")),
    ("SSN: low-rank logits + Monte-Carlo loss", ("ssn", "ssn")),
)
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


def _preload_training_modules() -> None:
    """Do the one-off imports and kernel set-up of a training run now, on the GUI thread, once.

    Importing ``torch._dynamo`` (pulled in by the first optimiser) and the first convolution
    forward/backward pass each hold the interpreter for long stretches; done inside the worker
    they would freeze the event loop for a few hundred milliseconds at the start of every run.
    """
    global _PRELOADED
    if _PRELOADED:
        return
    import monai.inferers  # noqa: F401
    import monai.losses  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401

    from ..core import soft_labels  # noqa: F401
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
    _PRELOADED = True


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
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.worker: Any = None
        self.predict_worker: Any = None
        self.records: list[TrainProgress] = []
        self.result: TrainResult | None = None
        self.checkpoint_path: str | None = None
        self.prediction: dict[str, Any] | None = None
        self.failure: TrainingFailure | None = None
        self.state = "idle"  # idle, training, paused, cancelling, predicting
        self.plot_widget: Any = None
        self._pbar: Any = None
        self._last_draw = 0.0
        self._last_ui = 0.0
        self._geometry: dict[str, Any] = {}
        self._image_name = ""

        self._image = ComboBox(
            label="Image", choices=self._image_layer_names, tooltip="The image the raters annotated."
        )
        self._raters = Select(
            label="Raters",
            choices=self._labels_layer_names,
            tooltip="One Labels layer per rater (or one (R, *spatial) stack).",
        )
        self._target = ComboBox(
            label="Target", choices=[(TARGET_LABELS[t], t) for t in TARGETS], value="mean"
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
            tooltip="Leave voxels whose image is 0 (e.g. air around a skull-stripped brain) out of the loss.",
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
        self._device = ComboBox(label="Device", choices=self._device_choices(), value="auto")
        self._seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._output = FileEdit(
            label="Output folder", mode="d", value=str(Path(tempfile.gettempdir()) / "napari-seg-uncertainty")
        )
        self._start = PushButton(text="Start")
        self._pause = PushButton(text="Pause", enabled=False)
        self._cancel = PushButton(text="Cancel", enabled=False)
        self._progress = ProgressBar(label="Progress", value=0, min=0, max=1)
        self._status = Label(value="Ready.")
        self._checkpoint = LineEdit(label="Checkpoint", value="", tooltip="The checkpoint of the last run.")
        self._checkpoint.native.setReadOnly(True)

        self._start.changed.connect(self.start)
        self._pause.changed.connect(self.toggle_pause)
        self._cancel.changed.connect(self.cancel)
        self._method.changed.connect(self._on_method_changed)
        self._epochs.changed.connect(self._on_epochs_changed)
        self.extend(
            [
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
                self._start,
                self._pause,
                self._cancel,
                self._progress,
                self._status,
                self._checkpoint,
            ]
        )
        self.max_width = 480
        self._on_method_changed()
        self._create_plot()
        _preload_training_modules()
        connect_layer_list_changes(viewer, self._refresh_choices)
        self._refresh_choices()
        self._closed = False
        self.native.destroyed.connect(self._on_closed)
        self._undock_watcher = _UndockWatcher(self._on_closed, self.native)
        self.native.installEventFilter(self._undock_watcher)

    def _on_closed(self, _obj: Any = None) -> None:
        """The dock was closed (or the viewer): stop training, which saves a checkpoint; skip the prediction."""
        self._closed = True
        if self.worker is not None and self.state in ("training", "paused"):
            if self.state == "paused":
                self.worker.resume()
            self.worker.send("cancel")
            self.state = "cancelling"
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    # choices ---------------------------------------------------------------------------------------
    def _image_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "image")

    def _labels_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "labels")

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
        from napari.layers import Labels

        self._image.reset_choices()
        previous = list(self._raters.value)
        self._raters.reset_choices()
        kept = [n for n in previous if n in self._raters.choices]
        if not kept:  # default: every rater layer (metadata from the Load raters widget / sample data)
            kept = [
                layer.name
                for layer in self._viewer.layers
                if isinstance(layer, Labels) and "rater" in (layer.metadata or {})
            ]
        self._raters.value = kept

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
            mask_background=bool(self._mask_background.value),
            output_dir=output_dir,
        )

    def collect_data(self) -> TrainingData:
        """Image and raters from the selected layers, with class names (metadata) and spacing (scale)."""
        if not self._image.value:
            raise ValueError("no Image layer selected; open an image (e.g. File > Open Sample > phantom).")
        names = list(self._raters.value)
        if not names:
            raise ValueError("no rater Labels layer selected; select one Labels layer per rater.")
        image_layer = self._viewer.layers[self._image.value]
        if image_layer.rgb:
            raise ValueError(
                f"image layer {image_layer.name!r} is RGB; convert it to a grey-level image first."
            )
        image = np.asarray(image_layer.data)
        layers = [self._viewer.layers[n] for n in names]
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
        scale = tuple(float(s) for s in image_layer.scale[-spatial:])
        translate = tuple(float(t) for t in image_layer.translate[-spatial:])
        self._geometry = {"scale": scale, "translate": translate}
        self._image_name = image_layer.name
        largest = int(raters.max()) if raters.size else 0
        if class_names is not None and len(class_names) <= largest:
            class_names = None
        return TrainingData.from_arrays(image, raters, class_names=class_names, spacing=scale)

    # actions ---------------------------------------------------------------------------------------
    def start(self) -> Any:
        """Start training in a worker; returns it (``None`` when the settings are invalid)."""
        if self.state != "idle":
            show_info("Training is already running; cancel it first.")
            return None
        with notify_errors("Start training"):
            data = self.collect_data()
            run_dir = Path(str(self._output.value)).expanduser() / _dt.datetime.now().strftime(
                "run-%Y%m%d-%H%M%S-%f"
            )
            config = self.build_config(str(run_dir))
            self._begin(config)
            from superqt.utils import create_worker

            self.worker = create_worker(training_job, config, data, _start_thread=False, _ignore_errors=True)
            self.worker.yielded.connect(self._on_record)
            self.worker.finished.connect(self._on_worker_finished)
            self.worker.returned.connect(self._on_returned)
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
        now = time.monotonic()
        if record.kind == "step" and now - self._last_ui < UI_INTERVAL_S:
            return  # keep the GUI thread (and the GIL) free for training: a few updates a second suffice
        self._last_ui = now
        if self._pbar is not None and record.global_step > self._pbar.n:
            self._pbar.update(record.global_step - self._pbar.n)
        self._progress.value = record.global_step
        if record.checkpoint and record.kind in ("epoch", "done", "cancelled"):
            self.checkpoint_path = record.checkpoint
            self._checkpoint.value = record.checkpoint
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

    def _on_returned(self, result: Any) -> None:
        self.result = result

    def _on_worker_finished(self) -> None:
        if self._closed:
            self.state = "idle"
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._update_plot(force=True)
        if self.failure is None and self.checkpoint_path:
            self._run_prediction(self.checkpoint_path)
        else:
            self._set_state("idle")

    def _run_prediction(self, checkpoint: str) -> None:
        self._set_state("predicting")
        self._status.value = "Predicting on the image…"
        image = (
            np.asarray(self._viewer.layers[self._image_name].data)
            if self._image_name in self._viewer.layers
            else None
        )
        if image is None:
            self._set_state("idle")
            return
        self.predict_worker = run_in_thread(
            predict,
            checkpoint,
            image,
            action="Prediction",
            returned=self._show_prediction,
            errored=lambda _exc: self._set_state("idle"),
        )

    def _show_prediction(self, result: dict[str, Any]) -> None:
        """Add the prediction layers one per event-loop turn (each napari layer costs ~0.1 s to add)."""
        from qtpy.QtCore import QTimer

        self.prediction = result
        scale, translate = self._geometry.get("scale"), self._geometry.get("translate")
        geometry = {} if scale is None else {"scale": scale, "translate": translate}
        class_geometry = {} if scale is None else {"scale": (1.0, *scale), "translate": (0.0, *translate)}
        meta = {"class_names": result["class_names"], "checkpoint": self.checkpoint_path}
        pending = [
            dict(
                data=result["labels"],
                name="prediction labels",
                layer_type="labels",
                opacity=0.6,
                metadata=meta,
                **geometry,
            ),
            dict(
                data=result["entropy"],
                name="prediction entropy",
                layer_type="image",
                colormap="magma",
                contrast_limits=(0.0, 1.0),
                blending="additive",
                metadata=meta,
                **geometry,
            ),
            dict(
                data=result["probabilities"],
                name="prediction probabilities",
                layer_type="image",
                colormap="viridis",
                contrast_limits=(0.0, 1.0),
                metadata=meta,
                visible=False,
                **class_geometry,
            ),
        ]

        def add_next() -> None:
            if not pending:
                self._status.value = f"Done. Prediction added; checkpoint {self.checkpoint_path}"
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
        self._start.enabled = state == "idle"
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
        self.plot_widget.setMinimumHeight(220)
        window = getattr(self._viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(self.plot_widget, name="Training curves", area="right")

    def _on_full_draw(self, _event: Any = None) -> None:
        canvas = self.plot_widget.canvas
        self._background = canvas.copy_from_bbox(canvas.figure.bbox)
        self._blit_lines()

    def _blit_lines(self) -> None:
        canvas = self.plot_widget.canvas
        if self._background is None:
            return
        canvas.restore_region(self._background)
        for line in self._lines.values():
            line.axes.draw_artist(line)
        canvas.blit(canvas.figure.bbox)

    def _reset_plot(self, epochs: int) -> None:
        for line in self._lines.values():
            line.set_data([], [])
        self._last_draw = 0.0
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
