"""Dock widget "SSN samples": draw, browse and manipulate plausible segmentations of an SSN live.

The widget holds a :class:`~napari_seg_uncertainty.core.ssn.LowRankLogits` (from a saved ``.npz``,
from an SSN checkpoint applied to an image layer, or a synthetic demo) and shows:

* ``SSN samples``: a Labels stack ``(N, *S)`` backed by a lazy
  :class:`~napari_seg_uncertainty.core.ssn.SampleLabelStack` (browse with the first slider; only
  the plane on screen is computed),
* ``SSN mean prediction``: the argmax of the mean logits,
* per-class noise-scale sliders (``-3 ... 3``, Fig. 6 of the SSN paper) and a temperature slider
  that redraw the sample on screen as they move, "New sample", "Keep this sample" (an editable
  copy), the Dice of every sample against the mean prediction, GED² and sample diversity against
  rater layers, and export.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    PushButton,
    Select,
    SpinBox,
    Table,
)
from qtpy.QtCore import QTimer

from ..core.ssn import (
    LowRankLogits,
    SampleLabelStack,
    load_distribution,
    save_distribution,
    synthetic_distribution,
)
from ..core.ssn_metrics import dice_against_reference, generalised_energy_distance, sample_diversity
from ._common import notify_errors, run_in_thread, show_info, upsert_layer

if TYPE_CHECKING:
    import napari

__all__ = ["SSNSamplesWidget", "distribution_from_prediction", "export_samples"]

SAMPLES_LAYER = "SSN samples"
MEAN_LAYER = "SSN mean prediction"
KEPT_LAYER_PREFIX = "SSN kept sample"

SOURCE_SAVED = "Saved distribution (.npz)"
SOURCE_CHECKPOINT = "SSN checkpoint + image"
SOURCE_SYNTHETIC = "Synthetic demo"

EXPORT_CURRENT = "Current sample"
EXPORT_ALL = "All samples"
EXPORT_DISTRIBUTION = "Distribution with current scales (.npz)"

_SCALE_RANGE = (-3.0, 3.0)
_TEMPERATURE_RANGE = (0.0, 3.0)
_SYNTHETIC_SHAPE = (256, 256)
_SYNTHETIC_CLASSES = 4
_DICE_DELAY_MS = 250  # Dice table waits for the sliders to rest this long


def distribution_from_prediction(
    prediction: dict[str, Any], *, spacing: tuple[float, ...] | None = None
) -> LowRankLogits:
    """Build a :class:`LowRankLogits` from the dict of ``core.training.predict_ssn_distribution``.

    Parameters
    ----------
    prediction : dict
        ``mean``, ``cov_factor`` and ``cov_diag``; optional ``class_names``, ``spacing`` and
        ``independent_planes`` (True for a volume predicted plane by plane by a 2-D model).
    spacing : tuple of float, optional
        Used when the prediction carries no spacing (e.g. the image layer's scale).

    Returns
    -------
    LowRankLogits
        The predicted distribution.

    Examples
    --------
    >>> import numpy as np
    >>> pred = {"mean": np.zeros((2, 4, 4)), "cov_factor": np.ones((1, 2, 4, 4)),
    ...         "cov_diag": np.ones((2, 4, 4))}
    >>> distribution_from_prediction(pred).rank
    1
    """
    if not isinstance(prediction, dict):
        raise TypeError(
            f"prediction must be a dict with mean, cov_factor and cov_diag, got {type(prediction)}."
        )
    missing = [key for key in ("mean", "cov_factor", "cov_diag") if key not in prediction]
    if missing:
        raise ValueError(f"prediction lacks {missing}; expected mean, cov_factor and cov_diag.")
    names = prediction.get("class_names")
    own_spacing = prediction.get("spacing")
    return LowRankLogits(
        prediction["mean"],
        prediction["cov_factor"],
        prediction["cov_diag"],
        class_names=None if names is None else [str(n) for n in names],
        spacing=own_spacing if own_spacing is not None else spacing,
        independent_planes=bool(prediction.get("independent_planes", False)),
    )


def export_samples(
    path: str | Path,
    stack: SampleLabelStack,
    *,
    what: str,
    entry: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the current sample, all samples or the manipulated distribution of ``stack`` to ``path``.

    Parameters
    ----------
    path : str or Path
        Destination. ``.npy`` / ``.npz`` are written with numpy (``.npz`` keeps the seed, sample
        indices, scales, temperature, class names and spacing with the samples); other suffixes go
        to :func:`napari_seg_uncertainty.core.io.write_image` with the spacing (all samples as a
        channel axis).
    stack : SampleLabelStack
        The samples shown in the viewer.
    what : str
        ``"Current sample"``, ``"All samples"`` or ``"Distribution with current scales (.npz)"``.
    entry : int
        Which sample is current.
    overwrite : bool
        Replace an existing file. Without it an existing file raises ``FileExistsError`` and is left
        untouched. Files are written to a temporary name and renamed into place, so an interrupted export
        never leaves a half-written file.

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> stack = SampleLabelStack(synthetic_distribution((16, 16), 3, rank=2), range(3), seed=0)
    >>> out = export_samples(pathlib.Path(tempfile.mkdtemp()) / "s.npy", stack, what="All samples")
    >>> np.load(out).shape
    (3, 16, 16)
    """
    target = Path(path)
    if str(path).strip() in ("", "."):
        raise ValueError("path is empty; choose a file to export to.")
    distribution = stack.distribution
    suffix = (
        "".join(target.suffixes[-2:]).lower() if target.suffix.lower() == ".gz" else target.suffix.lower()
    )
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}.")
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"{str(target)!r} already exists; choose another name or tick 'Overwrite existing file'."
        )
    if what == EXPORT_DISTRIBUTION:
        return save_distribution(target, distribution, overwrite=overwrite)
    if what == EXPORT_CURRENT:
        labels = stack.sample(entry)
    elif what == EXPORT_ALL:
        labels = np.stack([stack.sample(i) for i in range(len(stack))])
    else:
        raise ValueError(
            f"what must be one of {[EXPORT_CURRENT, EXPORT_ALL, EXPORT_DISTRIBUTION]}, got {what!r}."
        )
    if suffix == ".npy":
        with _atomic_output(target) as stream:
            np.save(stream, labels)
        return target
    if suffix == ".npz":
        extra: dict[str, Any] = {}
        if distribution.spacing is not None:
            extra["spacing"] = np.asarray(distribution.spacing)
        indices = stack.sample_indices if what == EXPORT_ALL else (stack.sample_indices[entry],)
        with _atomic_output(target) as stream:
            np.savez(
                stream,
                samples=labels if what == EXPORT_ALL else labels[None],
                seed=np.asarray(stack.seed),
                sample_indices=np.asarray(indices),
                class_scales=np.asarray(distribution.class_scales),
                temperature=np.asarray(distribution.temperature),
                class_names=np.asarray(distribution.class_names, dtype=np.str_),
                **extra,
            )
        return target
    from ..core.io import write_image

    written = write_image(
        target,
        labels,
        spacing=distribution.spacing,
        channel_axis=0 if what == EXPORT_ALL else None,
        overwrite=overwrite,
    )
    return Path(written)


@contextlib.contextmanager
def _atomic_output(target: Path) -> Iterator[Any]:
    """A binary stream to a temporary file next to ``target``, renamed onto ``target`` only on success."""
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _prediction_function() -> Any:
    """``core.training.predict_ssn_distribution`` when this installation has it, else None."""
    try:
        from ..core import training
    except ImportError:  # pragma: no cover - training needs torch/monai, which are dependencies
        return None
    return getattr(training, "predict_ssn_distribution", None)


def _spatial_scale(layer: Any, ndim: int) -> tuple[float, ...] | None:
    scale = tuple(float(s) for s in layer.scale[-ndim:])
    return None if all(s == 1.0 for s in scale) else scale


class SSNSamplesWidget(Container):
    """Draw, browse and manipulate samples of a Stochastic Segmentation Network live.

    Load a distribution (saved ``.npz``, SSN checkpoint + image layer, or synthetic demo), then
    browse ``N`` samples with the viewer's slider.  The class sliders scale one class's noise
    (``-3 ... 3``), the temperature slider all noise; the sample on screen is redrawn as they move.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari injects it when the widget opens from the Plugins menu).

    Examples
    --------
    >>> import napari  # doctest: +SKIP
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> viewer = napari.Viewer()  # doctest: +SKIP
    >>> widget = SSNSamplesWidget(viewer)  # doctest: +SKIP
    >>> viewer.window.add_dock_widget(widget)  # doctest: +SKIP
    >>> widget.set_distribution(synthetic_distribution((256, 256), 4))  # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.base_distribution: LowRankLogits | None = None
        self.distribution: LowRankLogits | None = None
        self.stack: SampleLabelStack | None = None
        self.mean_labels: np.ndarray | None = None
        self.dice: np.ndarray | None = None  # (N, C - 1) Dice of each sample vs the mean prediction
        self.metrics: dict[str, float] | None = None
        self.kept_layers: list[Any] = []
        self._workers: set[Any] = set()
        self._next_sample_index = 0
        self._dice_generation = 0
        self._dice_running = False
        self._dice_pending = False
        self._dice_timer = QTimer()
        self._dice_timer.setSingleShot(True)
        self._dice_timer.setInterval(_DICE_DELAY_MS)
        self._dice_timer.timeout.connect(self._start_dice)

        # --- source
        self._source = ComboBox(
            label="Source", choices=[SOURCE_SAVED, SOURCE_CHECKPOINT, SOURCE_SYNTHETIC], value=SOURCE_SAVED
        )
        self._distribution_file = FileEdit(label="Distribution", mode="r", filter="*.npz")
        self._checkpoint_file = FileEdit(label="SSN checkpoint", mode="r")
        self._image_layer = ComboBox(
            label="Image layer",
            choices=self._image_layer_choices,
            nullable=True,
            tooltip="Image the checkpoint predicts on; for the demo, gives the grid and spacing.",
        )
        self._load_button = PushButton(text="Load distribution")
        self._source_info = Label(value="No distribution loaded.")

        # --- sampling and manipulation
        self._num_samples = SpinBox(label="Samples", value=10, min=1, max=500)
        self._seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._draw_button = PushButton(text="Draw samples")
        self._new_sample_button = PushButton(text="New sample (replace current)")
        self._temperature = FloatSlider(
            label="Temperature",
            value=1.0,
            min=_TEMPERATURE_RANGE[0],
            max=_TEMPERATURE_RANGE[1],
            step=0.05,
            tooltip="Factor on all noise: 0 gives the mean prediction, <1 less diverse, >1 more diverse.",
        )
        self._class_scales_box = Container(labels=True, label="Class noise scales")
        self._class_sliders: list[FloatSlider] = []
        self._reset_button = PushButton(text="Reset scales and temperature")
        self._keep_button = PushButton(text="Keep this sample (editable copy)")
        self._dice_label = Label(value="Dice vs mean: –")
        self._dice_table = Table(label="Dice vs mean")
        self._dice_table.read_only = True

        # --- GED² and diversity
        self._raters = Select(
            label="Raters",
            choices=self._rater_layer_choices,
            tooltip="Labels layers with the raters' maps (one map each, or an (R, *S) stack).",
        )
        self._metrics_button = PushButton(text="GED² and diversity vs raters")
        self._metrics_label = Label(value="")

        # --- export
        self._export_what = ComboBox(
            label="Export", choices=[EXPORT_CURRENT, EXPORT_ALL, EXPORT_DISTRIBUTION], value=EXPORT_CURRENT
        )
        self._export_file = FileEdit(label="Export to", mode="w")
        self._export_overwrite = CheckBox(
            text="Overwrite existing file", value=False,
            tooltip="Off: exporting to a file that exists is refused and the file is left as it is.",
        )
        self._export_button = PushButton(text="Export")

        self.extend(
            [
                self._source,
                self._distribution_file,
                self._checkpoint_file,
                self._image_layer,
                self._load_button,
                self._source_info,
                self._num_samples,
                self._seed,
                self._draw_button,
                self._new_sample_button,
                self._temperature,
                self._class_scales_box,
                self._reset_button,
                self._keep_button,
                self._dice_label,
                self._dice_table,
                self._raters,
                self._metrics_button,
                self._metrics_label,
                self._export_what,
                self._export_file,
                self._export_overwrite,
                self._export_button,
            ]
        )

        self._source.changed.connect(self._on_source_changed)
        self._load_button.changed.connect(self._on_load)
        self._draw_button.changed.connect(self._on_draw)
        self._new_sample_button.changed.connect(self._on_new_sample)
        self._temperature.changed.connect(self._on_manipulation_changed)
        self._reset_button.changed.connect(self._on_reset)
        self._keep_button.changed.connect(self._on_keep)
        self._metrics_button.changed.connect(self._on_metrics)
        self._export_button.changed.connect(self._on_export)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._update_dice_label)
        self._closed = False
        self.native.destroyed.connect(self._on_destroyed)
        self._on_source_changed()
        self._update_enabled()

    # ------------------------------------------------------------------ helpers
    def _on_destroyed(self, *_args: Any) -> None:
        """The dock widget is gone: stop timers, ignore late worker results, let go of the viewer's events."""
        self._closed = True
        self._dice_timer.stop()
        for emitter, callback in (
            (self._viewer.layers.events.inserted, self._on_layers_changed),
            (self._viewer.layers.events.removed, self._on_layers_changed),
            (self._viewer.dims.events.current_step, self._update_dice_label),
        ):
            emitter.disconnect(callback)

    def _image_layer_choices(self, _widget: Any = None) -> list[str]:
        return [layer.name for layer in self._viewer.layers if layer._type_string == "image"]

    def _rater_layer_choices(self, _widget: Any = None) -> list[str]:
        return [
            layer.name
            for layer in self._viewer.layers
            if layer._type_string == "labels" and layer.name != SAMPLES_LAYER
        ]

    def _on_layers_changed(self, _event: Any = None) -> None:
        self._image_layer.reset_choices()
        self._raters.reset_choices()

    def _on_source_changed(self, _value: Any = None) -> None:
        source = self._source.value
        self._distribution_file.visible = source == SOURCE_SAVED
        self._checkpoint_file.visible = source == SOURCE_CHECKPOINT

    def _update_enabled(self) -> None:
        loaded = self.base_distribution is not None
        drawn = self.stack is not None
        for widget in (self._draw_button, self._temperature, self._reset_button):
            widget.enabled = loaded
        for widget in (self._new_sample_button, self._keep_button, self._metrics_button, self._export_button):
            widget.enabled = drawn

    def _start(self, func: Any, *args: Any, action: str, returned: Any = None) -> Any:
        """Run ``func`` in a worker thread; errors become notifications; results after closing are dropped."""
        holder: list[Any] = []

        def _done() -> None:
            self._workers.discard(holder[0])

        def _returned(result: Any) -> None:
            if not self._closed and returned is not None:
                returned(result)

        worker = run_in_thread(func, *args, action=action, returned=_returned, finished=_done)
        holder.append(worker)
        self._workers.add(worker)
        return worker

    @property
    def busy(self) -> bool:
        """True while a worker thread of this widget runs (loading, sampling, metrics, export)."""
        return bool(self._workers) or self._dice_running or self._dice_timer.isActive()

    def _layer_scale(self, *, with_sample_axis: bool) -> tuple[float, ...]:
        assert self.distribution is not None
        spacing = self.distribution.spacing or (1.0,) * self.distribution.spatial_ndim
        return ((1.0,) if with_sample_axis else ()) + tuple(spacing)

    def current_entry(self) -> int:
        """Index of the sample on screen in the ``SSN samples`` layer (0 when there is none)."""
        if self.stack is None or SAMPLES_LAYER not in self._viewer.layers:
            return 0
        layer = self._viewer.layers[SAMPLES_LAYER]
        point = layer.world_to_data(self._viewer.dims.point)
        return int(np.clip(np.round(point[0]), 0, len(self.stack) - 1))

    # ------------------------------------------------------------------ loading
    def _on_load(self, _value: Any = None) -> None:
        with notify_errors("Loading the SSN distribution"):
            source = self._source.value
            if source == SOURCE_SAVED:
                path = self._distribution_file.value
                if path is None or not Path(path).is_file():
                    raise ValueError(f"choose an existing .npz distribution file (got {str(path)!r}).")
                self._start(
                    load_distribution,
                    path,
                    action="Loading the SSN distribution",
                    returned=self.set_distribution,
                )
            elif source == SOURCE_CHECKPOINT:
                predict = _prediction_function()
                if predict is None:
                    raise RuntimeError(
                        "predicting from a checkpoint needs napari_seg_uncertainty.core.training."
                        "predict_ssn_distribution, which this installation does not provide; "
                        "save the distribution as .npz and load that instead."
                    )
                path = self._checkpoint_file.value
                if path is None or not Path(path).is_file():
                    raise ValueError(f"choose an existing SSN checkpoint file (got {str(path)!r}).")
                layer = self._selected_image_layer(required=True)
                image = np.asarray(layer.data)
                layer_scale = tuple(float(s) for s in layer.scale)

                def _predict() -> LowRankLogits:
                    prediction = predict(str(path), image)
                    spatial_ndim = np.ndim(prediction.get("mean")) - 1
                    spacing = layer_scale[-spatial_ndim:] if 0 < spatial_ndim <= len(layer_scale) else None
                    if spacing is not None and all(v == 1.0 for v in spacing):
                        spacing = None
                    return distribution_from_prediction(prediction, spacing=spacing)

                self._start(
                    _predict, action="Predicting the SSN distribution", returned=self.set_distribution
                )
            else:
                layer = self._selected_image_layer(required=False)
                shape: tuple[int, ...] = _SYNTHETIC_SHAPE
                spacing = None
                if layer is not None:
                    ndim = 3 if layer.data.ndim >= 3 and not layer.rgb else 2
                    shape = tuple(int(s) for s in layer.data.shape[-ndim:])
                    spacing = _spatial_scale(layer, ndim)
                seed = int(self._seed.value)
                self._start(
                    lambda: synthetic_distribution(
                        shape, _SYNTHETIC_CLASSES, rank=10, seed=seed, spacing=spacing
                    ),
                    action="Making the synthetic SSN distribution",
                    returned=self.set_distribution,
                )

    def _selected_image_layer(self, *, required: bool) -> Any:
        name = self._image_layer.value
        if name is None or name not in self._viewer.layers:
            if required:
                raise ValueError("choose the image layer the checkpoint should predict on.")
            return None
        return self._viewer.layers[name]

    def set_distribution(self, distribution: LowRankLogits) -> None:
        """Show ``distribution``: class sliders, mean prediction and a fresh set of samples."""
        with notify_errors("Showing the SSN distribution"):
            if not isinstance(distribution, LowRankLogits):
                raise TypeError(f"distribution must be a LowRankLogits, got {type(distribution).__name__}.")
            self.base_distribution = distribution
            self.distribution = distribution
            self.stack = None  # the old samples stay on screen until the new ones are drawn
            self.dice = None
            self.metrics = None
            self._build_class_sliders(distribution)
            with self._temperature.changed.blocked():
                self._temperature.value = float(np.clip(distribution.temperature, *_TEMPERATURE_RANGE))
            self.mean_labels = distribution.mean_prediction()
            upsert_layer(
                self._viewer,
                self.mean_labels,
                name=MEAN_LAYER,
                layer_type="labels",
                scale=self._layer_scale(with_sample_axis=False),
            )
            self._source_info.value = (
                f"{distribution.num_classes} classes, grid {distribution.spatial_shape}, "
                f"rank {distribution.rank}"
            )
            self._update_enabled()
            self._on_draw()

    def _build_class_sliders(self, distribution: LowRankLogits) -> None:
        self._class_scales_box.clear()
        self._class_sliders = []
        for name, weight in zip(distribution.class_names, distribution.class_scales):
            slider = FloatSlider(
                label=name,
                value=float(np.clip(weight, *_SCALE_RANGE)),
                min=_SCALE_RANGE[0],
                max=_SCALE_RANGE[1],
                step=0.1,
                tooltip=f"Factor on the noise of {name}: 0 removes it, negative mirrors it.",
            )
            slider.changed.connect(self._on_manipulation_changed)
            self._class_sliders.append(slider)
            self._class_scales_box.append(slider)

    # ------------------------------------------------------------------ sampling
    def _on_draw(self, _value: Any = None) -> None:
        with notify_errors("Drawing SSN samples"):
            if self.distribution is None:
                raise ValueError("load a distribution first.")
            count = int(self._num_samples.value)
            stack = SampleLabelStack(self.distribution, range(count), seed=int(self._seed.value))
            scale = self._layer_scale(with_sample_axis=True)
            base = self.base_distribution

            def _show(_first: np.ndarray) -> None:
                with notify_errors("Drawing SSN samples"):
                    if base is not self.base_distribution or self.distribution is None:
                        return  # another distribution was loaded meanwhile; its own draw follows
                    if stack.distribution is not self.distribution:  # sliders moved meanwhile
                        stack.set_distribution(self.distribution)
                    self.stack = stack
                    self._next_sample_index = count
                    upsert_layer(
                        self._viewer,
                        stack,
                        name=SAMPLES_LAYER,
                        layer_type="labels",
                        scale=scale,
                        metadata={"seed": stack.seed},
                    )
                    self._update_enabled()
                    self._schedule_dice()

            # napari reads data[0] for the dtype: compute (and cache) the first sample off the GUI thread.
            self._start(stack.sample, 0, action="Drawing SSN samples", returned=_show)

    def class_scale_values(self) -> list[float]:
        """The class sliders' values, one per class."""
        return [float(slider.value) for slider in self._class_sliders]

    def _refresh_samples_layer(self, *, thumbnail: bool = True) -> None:
        """Recompute the plane on screen (the grid is unchanged, so no extent update)."""
        if SAMPLES_LAYER in self._viewer.layers:
            layer = self._viewer.layers[SAMPLES_LAYER]
            if layer.data is self.stack:
                layer.refresh(extent=False, thumbnail=thumbnail)

    def _on_manipulation_changed(self, _value: Any = None) -> None:
        """Apply the sliders: redraw the sample on screen now, the Dice table in the background."""
        with notify_errors("Updating the SSN samples"):
            if self.base_distribution is None:
                return
            self.distribution = self.base_distribution.with_class_scales(
                self.class_scale_values()
            ).with_temperature(float(self._temperature.value))
            if self.stack is not None:
                self.stack.set_distribution(self.distribution)
                # live: the thumbnail waits until the sliders rest (see _start_dice)
                self._refresh_samples_layer(thumbnail=False)
                self._schedule_dice()

    def _on_reset(self, _value: Any = None) -> None:
        for slider in (*self._class_sliders, self._temperature):
            with slider.changed.blocked():
                slider.value = 1.0
        self._on_manipulation_changed()

    def _on_new_sample(self, _value: Any = None) -> None:
        with notify_errors("Drawing a new sample"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            entry = self.current_entry()
            self.stack.set_sample_index(entry, self._next_sample_index)
            self._next_sample_index += 1
            self._refresh_samples_layer()
            self._schedule_dice()

    def _on_keep(self, _value: Any = None) -> None:
        with notify_errors("Keeping the sample"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            stack, entry = self.stack, self.current_entry()
            metadata = {
                "seed": stack.seed,
                "sample_index": stack.sample_indices[entry],
                "class_scales": stack.distribution.class_scales,
                "temperature": stack.distribution.temperature,
            }
            scale = self._layer_scale(with_sample_axis=False)

            def _add(labels: np.ndarray) -> None:
                with notify_errors("Keeping the sample"):
                    number = 1
                    while f"{KEPT_LAYER_PREFIX} {number}" in self._viewer.layers:
                        number += 1
                    layer = upsert_layer(
                        self._viewer,
                        labels,
                        name=f"{KEPT_LAYER_PREFIX} {number}",
                        layer_type="labels",
                        scale=scale,
                        metadata=metadata,
                    )
                    self.kept_layers.append(layer)
                    self._viewer.layers.selection.active = layer

            self._start(lambda: np.array(stack.sample(entry)), action="Keeping the sample", returned=_add)

    # ------------------------------------------------------------------ Dice against the mean prediction
    def _schedule_dice(self) -> None:
        """Recompute the Dice table off the GUI thread once the sliders rest (bursts coalesce)."""
        self._dice_generation += 1
        self._dice_timer.start()  # restarts while a slider is being dragged

    def _start_dice(self) -> None:
        if self._closed:
            return
        self._refresh_samples_layer()  # sliders at rest: bring the layer thumbnail up to date
        if self._dice_running:
            self._dice_pending = True
            return
        if self.stack is None or self.mean_labels is None:
            return
        stack, mean_labels, generation = self.stack, self.mean_labels, self._dice_generation
        num_classes = stack.distribution.num_classes

        def _compute() -> tuple[int, np.ndarray]:
            samples = np.stack([stack.sample(i) for i in range(len(stack))])
            return generation, dice_against_reference(samples, mean_labels, num_classes=num_classes)

        def _finished() -> None:
            self._dice_running = False
            if self._dice_pending:
                self._dice_pending = False
                self._start_dice()

        self._dice_running = True
        self._dice_pending = False
        run_in_thread(
            _compute, action="Computing Dice vs the mean", returned=self._show_dice, finished=_finished
        )

    def _show_dice(self, result: tuple[int, np.ndarray]) -> None:
        generation, dice = result
        if self._closed or generation != self._dice_generation or self.distribution is None:
            return  # a newer request is on its way
        self.dice = dice
        names = list(self.distribution.class_names[1:])
        with np.errstate(all="ignore"):
            means = np.array([np.nan if np.all(np.isnan(row)) else np.nanmean(row) for row in dice])
        rows = [[_format_score(v) for v in (*row, mean)] for row, mean in zip(dice, means)]
        self._dice_table.value = {
            "data": rows,
            "index": [f"sample {i}" for i in range(len(rows))],
            "columns": [*names, "mean"],
        }
        self._update_dice_label()

    def _update_dice_label(self, _event: Any = None) -> None:
        if self.dice is None or self.distribution is None or self.stack is None:
            self._dice_label.value = "Dice vs mean: –"
            return
        entry = self.current_entry()
        if entry >= len(self.dice):
            return
        row = self.dice[entry]
        parts = [f"{name} {_format_score(v)}" for name, v in zip(self.distribution.class_names[1:], row)]
        mean = np.nan if np.all(np.isnan(row)) else float(np.nanmean(row))
        self._dice_label.value = (
            f"Sample {entry} Dice vs mean: {', '.join(parts)} (mean {_format_score(mean)})"
        )

    # ------------------------------------------------------------------ GED² and diversity
    def _rater_stack(self) -> np.ndarray:
        assert self.distribution is not None
        names = list(self._raters.value or [])
        if not names:
            raise ValueError("select one or more Labels layers with the raters' annotations.")
        shape = self.distribution.spatial_shape
        maps: list[np.ndarray] = []
        for name in names:
            data = np.asarray(self._viewer.layers[name].data)
            if data.shape == shape:
                maps.append(data)
            elif data.ndim == len(shape) + 1 and data.shape[1:] == shape:
                maps.extend(data)
            else:
                raise ValueError(
                    f"layer {name!r} has shape {data.shape}; expected {shape} (one rater) or (R, *{shape})."
                )
        return np.stack(maps)

    def _on_metrics(self, _value: Any = None) -> None:
        with notify_errors("Computing GED² and diversity"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            raters = self._rater_stack()
            stack = self.stack
            num_classes = stack.distribution.num_classes

            def _compute() -> dict[str, float]:
                samples = np.stack([stack.sample(i) for i in range(len(stack))])
                return {
                    "ged2": generalised_energy_distance(samples, raters, num_classes=num_classes),
                    "sample_diversity": sample_diversity(samples, num_classes=num_classes),
                    "rater_diversity": sample_diversity(raters, num_classes=num_classes),
                    "num_samples": float(len(samples)),
                    "num_raters": float(len(raters)),
                }

            self._start(_compute, action="Computing GED² and diversity", returned=self._show_metrics)

    def _show_metrics(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics
        self._metrics_label.value = (
            f"GED² {metrics['ged2']:.4f} | sample diversity {metrics['sample_diversity']:.4f} | "
            f"rater diversity {metrics['rater_diversity']:.4f} "
            f"({int(metrics['num_samples'])} samples, {int(metrics['num_raters'])} raters)"
        )

    # ------------------------------------------------------------------ export
    def _on_export(self, _value: Any = None) -> None:
        with notify_errors("Exporting SSN samples"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            path = self._export_file.value
            if path is None or str(path).strip() in ("", "."):
                raise ValueError("choose a file to export to.")
            stack, entry, what = self.stack, self.current_entry(), self._export_what.value
            overwrite = bool(self._export_overwrite.value)
            self._start(
                lambda: export_samples(path, stack, what=what, entry=entry, overwrite=overwrite),
                action="Exporting SSN samples",
                returned=lambda written: show_info(f"Exported {what.lower()} to {written}"),
            )


def _format_score(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
