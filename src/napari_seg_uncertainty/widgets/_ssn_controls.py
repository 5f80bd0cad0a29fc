"""The controls of the *SSN samples* dock and their layout (mixed into ``SSNSamplesWidget``).

:class:`SSNControls` builds the source, sampling and output controls, the per-class noise sliders
(rebuilt for each distribution), keeps the dock narrow (texts wrap, combo boxes and the Dice table
shrink) and enables the buttons that apply. Layer choices hold the layer objects and take layer
names when set (scripts and the Guide set them that way).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSlider, Label, PushButton, Select, SpinBox, Table

from ..core.ssn import LowRankLogits, SampleLabelStack, synthetic_distribution
from ..workflow.ssn import (
    EXPORT_ALL,
    EXPORT_CURRENT,
    EXPORT_DISTRIBUTION,
    checkpoint_kind,
    distribution_from_checkpoint,
    load_saved,
)
from ._common import show_info
from ._layer_choices import choices_for, is_image_layer, is_labels_layer
from ._ssn_live import SAMPLES_LAYER, LiveSamples, is_lazy, qt_alive

__all__ = [
    "SCALE_RANGE",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_SHAPE",
    "checkpoint_distribution",
    "load_saved_checked",
    "synthetic_on_grid",
    "SOURCES",
    "SOURCE_CHECKPOINT",
    "SOURCE_SAVED",
    "SOURCE_SYNTHETIC",
    "SSNControls",
    "TEMPERATURE_RANGE",
]

SOURCE_SAVED = "Saved distribution (.npz)"
SOURCE_CHECKPOINT = "SSN checkpoint + image"
SOURCE_SYNTHETIC = "Synthetic demo"
#: load(source=…) keys -> the Source box's entries.
SOURCES = {"saved": SOURCE_SAVED, "checkpoint": SOURCE_CHECKPOINT, "synthetic": SOURCE_SYNTHETIC}

SYNTHETIC_SHAPE = (256, 256)
SYNTHETIC_CLASSES = 4
SCALE_RANGE = (-3.0, 3.0)
TEMPERATURE_RANGE = (0.0, 3.0)

def _lazy_prediction_function(predict: Any) -> Any:
    """``predict_ssn_distribution_lazy`` when this installation has it and ``predict`` is the whole prediction
    (another ``predict``, e.g. a script's, is honoured as it is), else None."""
    try:
        from ..core.training import ssn_inference
    except ImportError:  # pragma: no cover - training needs torch/monai, which are dependencies
        return None
    if predict is not ssn_inference.predict_ssn_distribution:
        return None
    return getattr(ssn_inference, "predict_ssn_distribution_lazy", None)


def checkpoint_distribution(path: Path, image: np.ndarray, *, scale: tuple[float, ...], predict: Any) -> Any:
    """The distribution an SSN checkpoint predicts on the image of a layer, and where it lies.

    A 2-D SSN on a volume gives a lazy distribution (each plane runs the network when first shown:
    the same numbers as the whole prediction, and the first plane is on screen in about a second instead
    of after the whole volume); a 3-D SSN gives the whole distribution when it fits in memory, else
    (``OutputTooLargeError``) a lazy one computed slab by slab into a temporary zarr store. A 2-D
    image, a saved ``.npz`` or an installation without the lazy path: :func:`distribution_from_checkpoint`.
    """
    from ..core._memory import OutputTooLargeError

    if checkpoint_kind(path) == "distribution":
        return load_saved_checked(path)
    lazy = _lazy_prediction_function(predict)
    if lazy is None or np.ndim(image) != 3:
        return distribution_from_checkpoint(path, image, scale=scale, predict=predict)
    from ..core.training import load_trained_model

    try:
        trained = load_trained_model(path)
    except ValueError:  # not a checkpoint of this plugin: the whole path's loading says so in the user's terms
        return distribution_from_checkpoint(path, image, scale=scale, predict=predict)
    if int(trained.info["spatial_dims"]) == 3:
        try:
            return distribution_from_checkpoint(path, image, scale=scale, predict=predict)
        except OutputTooLargeError as too_large:
            try:
                distribution = lazy(trained, image)
            except ImportError as missing:  # zarr (>= 3) holds a 3-D SSN's distribution on disk: it says what to do
                raise ValueError(f"{too_large} Keeping it on disk instead: {missing}") from None
            except OutputTooLargeError as slab:  # one slab, or the store on disk, does not fit either
                raise OutputTooLargeError(
                    f"{too_large} Computing it slab by slab on disk does not fit either: {slab} Use a 2-D SSN "
                    "(its planes are computed as they are shown), or predict on a crop of the image."
                ) from None
    else:
        distribution = lazy(trained, image)
    spacing = tuple(float(v) for v in scale[-3:])
    if distribution.spacing is None and len(spacing) == 3 and any(v != 1.0 for v in spacing):
        distribution = dataclasses.replace(distribution, spacing=spacing)
    return distribution, {}


def load_saved_checked(path: Path) -> tuple[LowRankLogits, dict[str, Any]]:
    """:func:`load_saved`, after checking from the file's headers that the distribution fits in memory.

    The estimate is the arrays as loaded (float32) plus the square root of the diagonal the sampler keeps;
    the refusal names the grid, rank and classes, the estimate and what to do in the dock instead.
    """
    from ..core._file_checks import npz_member_headers
    from ..core._memory import array_bytes, check_allocation

    try:
        shapes = {name: shape for name, shape, _ in npz_member_headers(path)}
    except Exception:  # noqa: BLE001 - a damaged archive: load_saved says what is wrong with it
        shapes = {}
    mean, factor = shapes.get("mean"), shapes.get("cov_factor", ())
    if mean is not None and len(mean) >= 3:
        rank = factor[0] if len(factor) == len(mean) + 1 else (factor[-1] if len(factor) == 2 else 0)
        check_allocation(
            array_bytes((int(rank) + 3, *mean), np.float32),
            what=f"the SSN distribution (mean, factor, diagonal and its square root as float32, {mean[0]} classes)",
            cause=f"{path.name}: grid {tuple(mean[1:])}, rank {rank}",
            advice="load the SSN checkpoint with 'SSN checkpoint + image' instead (a volume's planes are then "
            "computed as they are shown), or save the distribution of a crop",
        )
    return load_saved(path)


def synthetic_on_grid(
    shape: tuple[int, ...], *, spacing: Any, seed: int, layer_name: str | None
) -> LowRankLogits:
    """The synthetic demo distribution on ``shape`` (an image layer's grid, or the default 256×256).

    Too large for the free memory (a CT's grid): the core's message (size, estimate, available memory)
    and what to choose in the dock.
    """
    from ..core._memory import OutputTooLargeError

    try:
        return synthetic_distribution(shape, num_classes=SYNTHETIC_CLASSES, rank=10, seed=seed, spacing=spacing)
    except OutputTooLargeError as exc:
        if layer_name is None:
            raise
        raise OutputTooLargeError(
            f"{exc} The synthetic demo is drawn on the grid of image layer {layer_name!r}: choose no image "
            f"layer for a {SYNTHETIC_SHAPE[0]}×{SYNTHETIC_SHAPE[1]} demo, or a smaller image."
        ) from None


class _LayerComboBox(ComboBox):
    """A layer choice whose value is the layer; a layer's name is accepted when setting it (scripts, Guide)."""

    @property
    def value(self) -> Any:
        return ComboBox.value.fget(self)

    @value.setter
    def value(self, value: Any) -> None:
        ComboBox.value.fset(self, _layer_by_name(self, value))


class _LayerSelect(Select):
    """Several layers; names are accepted when setting the value."""

    @property
    def value(self) -> Any:
        return Select.value.fget(self)

    @value.setter
    def value(self, value: Any) -> None:
        if isinstance(value, (str, bytes)) or value is None:
            value = [] if value is None else [value]
        Select.value.fset(self, [_layer_by_name(self, v) for v in value])


def _layer_by_name(widget: Any, value: Any) -> Any:
    if isinstance(value, str):
        for layer in widget.choices:
            if getattr(layer, "name", None) == value:
                return layer
        raise ValueError(f"no layer named {value!r} among {[getattr(c, 'name', c) for c in widget.choices]}.")
    return value



class SSNControls:
    """The controls of the *SSN samples* dock (mixed into ``SSNSamplesWidget``)."""

    content: Any
    scroll_area: Any
    _status: Any
    _class_sliders: list[Any]
    _viewer: Any
    base_distribution: LowRankLogits | None
    distribution: LowRankLogits | None
    stack: SampleLabelStack | None

    def _build_source_controls(self, viewer: Any) -> list[Any]:
        self._source = ComboBox(
            label="Source", choices=[SOURCE_SAVED, SOURCE_CHECKPOINT, SOURCE_SYNTHETIC], value=SOURCE_SAVED
        )
        self._distribution_file = FileEdit(label="Distribution", mode="r", filter="*.npz")
        self._checkpoint_file = FileEdit(label="SSN checkpoint", mode="r", filter="*.pt *.pth *.npz")
        self._image_layer = _LayerComboBox(
            label="Image layer",
            choices=choices_for(viewer, is_image_layer),
            nullable=True,
            tooltip="The image the samples belong to: the checkpoint predicts on it, and the samples "
            "are drawn on its grid (spacing, origin, direction).",
        )
        self._load_button = PushButton(text="Load distribution")
        self._source_info = Label(value="No distribution loaded.")
        return [self._source, self._distribution_file, self._checkpoint_file, self._image_layer,
                self._load_button, self._source_info]

    def _build_sampling_controls(self) -> list[Any]:
        self._num_samples = SpinBox(label="Samples", value=10, min=1, max=500)
        self._seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._draw_button = PushButton(text="Draw samples")
        self._new_sample_button = PushButton(
            text="New sample", tooltip="Replace the sample on screen by a sample never shown before."
        )
        self._temperature = FloatSlider(
            label="Temperature",
            value=1.0,
            min=TEMPERATURE_RANGE[0],
            max=TEMPERATURE_RANGE[1],
            step=0.05,
            tooltip="Factor on all noise: 0 gives the mean prediction, <1 less diverse, >1 more diverse.",
        )
        self._class_scales_heading = Label(value="Class noise scales (−3 … 3):")
        self._class_sliders: list[FloatSlider] = []
        self._reset_button = PushButton(text="Reset scales and temperature")
        self._keep_button = PushButton(
            text="Keep this sample", tooltip="Copy the sample on screen into an editable Labels layer."
        )
        self._status.value = ""
        self._dice_label = Label(value="Dice vs mean: –")
        self._dice_table = Table(label="Dice vs mean")  # rows: sample number; columns: classes
        self._dice_table.read_only = True
        return [self._num_samples, self._seed, self._draw_button, self._new_sample_button, self._temperature,
                self._class_scales_heading, self._reset_button, self._keep_button, self._status,
                self._dice_label, self._dice_table]

    def _build_output_controls(self, viewer: Any) -> list[Any]:
        self._raters = _LayerSelect(
            label="Raters",
            choices=choices_for(viewer, self._is_rater_layer),
            tooltip="Labels layers with the raters' maps (one map each, or an (R, *S) stack).",
        )
        self._metrics_button = PushButton(text="GED² and diversity vs raters")
        self._metrics_label = Label(value="")
        self._export_what = ComboBox(
            label="Export", choices=[EXPORT_CURRENT, EXPORT_ALL, EXPORT_DISTRIBUTION], value=EXPORT_CURRENT
        )
        self._export_file = FileEdit(label="Export to", mode="w")
        self._export_overwrite = CheckBox(
            text="Overwrite existing file", value=False,
            tooltip="Off: exporting to a file that exists is refused and the file is left as it is.",
        )
        self._export_button = PushButton(text="Export")
        return [self._raters, self._metrics_button, self._metrics_label, self._export_what, self._export_file,
                self._export_overwrite, self._export_button]

    def _connect_controls(self) -> None:
        self._source.changed.connect(self._on_source_changed)
        self._load_button.changed.connect(lambda _value=None: self.load())
        self._draw_button.changed.connect(lambda _value=None: self.draw())
        self._new_sample_button.changed.connect(self._on_new_sample)
        self._temperature.changed.connect(self._on_manipulation_changed)
        self._reset_button.changed.connect(self._on_reset)
        self._keep_button.changed.connect(lambda _value=None: self.keep_sample())
        self._metrics_button.changed.connect(lambda _value=None: self.compute_metrics())
        self._export_button.changed.connect(lambda _value=None: self.export())

    def _fit_narrow_docks(self) -> None:
        """No horizontal scrolling at napari's default dock width: long texts wrap, combo boxes and the
        table shrink to the dock instead of widening it; the dock scrolls vertically."""
        from qtpy.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QSizePolicy, QStyledItemDelegate

        texts = (self._source_info, self._status, self._dice_label, self._metrics_label, self._class_scales_heading)
        for label in texts:  # magicgui's labels have a fixed size: let them follow the dock (and wrap)
            label.native.setWordWrap(label is not self._dice_label)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        for combo in (self._source, self._image_layer, self._export_what):
            combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(10)
        table = self._dice_table.native
        # the cells hold format_score's text ("0.025", "n/a"); magicgui's delegate re-formats numbers ("2.500e-02")
        table.setItemDelegate(QStyledItemDelegate(table))
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        table.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        table.setMinimumHeight(120)
        table.setMaximumHeight(260)
        self._raters.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._raters.native.setMinimumHeight(60)
        self._raters.native.setMaximumHeight(140)
        self._fit_width()

    def _fit_width(self) -> None:
        """The dock at least as wide as the controls plus the vertical scroll bar (nothing clipped)."""
        area = getattr(self, "scroll_area", None)
        if area is None or not qt_alive(area):
            return
        inner = self.content.native
        width = inner.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 2 * area.frameWidth()
        if area.minimumWidth() < width:
            area.setMinimumWidth(width)

    # ------------------------------------------------------------------ inputs
    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer choices, keeping the chosen layers chosen (also when one was renamed).

        napari calls this on every layer addition, removal, move and rename (so does the widget's
        own layer watcher). magicgui matches combo-box items by their text, so a renamed
        layer would drop out of the selection; the values are the layers themselves, so they are
        put back.
        """
        if not self._alive():
            return
        image, raters = self._image_layer.value, list(self._raters.value or [])
        self.content.reset_choices(*args)
        if image is not None and image in self._image_layer.choices and self._image_layer.value is not image:
            self._image_layer.value = image
        kept = [layer for layer in raters if layer in self._raters.choices]
        if kept != list(self._raters.value or []):
            self._raters.value = kept

    def _selected_image_layer(self, *, required: bool) -> Any:
        layer = self._image_layer.value
        if layer is None or layer not in self._viewer.layers:
            if required:
                raise ValueError("choose the image layer the checkpoint should predict on.")
            return None
        return layer

    def configure(self, *, source: str | None = None, path: Any = None, image: Any = None,
                   num_samples: int | None = None, seed: int | None = None, raters: Any = None) -> None:
        """Set the controls :meth:`load` reads; ``None`` keeps a setting."""
        if source is not None:
            if source not in SOURCES and source not in SOURCES.values():
                raise ValueError(f"source must be one of {list(SOURCES)}, got {source!r}.")
            self._source.value = SOURCES.get(source, source)
        if path is not None:
            box = self._checkpoint_file if self._source.value == SOURCE_CHECKPOINT else self._distribution_file
            box.value = str(path)
        if image is not None:
            self._image_layer.value = image
        if num_samples is not None:
            self._num_samples.value = int(num_samples)
        if seed is not None:
            self._seed.value = int(seed)
        if raters is not None:
            self._raters.value = raters

    def _named_classes(self, distribution: LowRankLogits) -> LowRankLogits:
        """Give a distribution without class names the raters' names (from the layers' metadata)."""
        defaults = tuple(f"class {c}" for c in range(distribution.num_classes))
        if distribution.class_names != defaults:
            return distribution
        candidates = [*(self._raters.value or []), self._image_layer.value, *self._viewer.layers]
        for layer in candidates:
            names = (getattr(layer, "metadata", None) or {}).get("class_names")
            if names is not None and len(names) == distribution.num_classes:
                with contextlib.suppress(TypeError, ValueError):
                    return distribution.with_class_names([str(n) for n in names])
        return distribution

    def _rater_stack(self) -> np.ndarray:
        assert self.distribution is not None
        layers = [layer for layer in (self._raters.value or []) if layer in self._viewer.layers]
        if not layers:
            raise ValueError("select one or more Labels layers with the raters' annotations.")
        shape = self.distribution.spatial_shape
        maps: list[np.ndarray] = []
        for layer in layers:
            data = np.asarray(layer.data)
            if data.shape == shape:
                maps.append(data)
            elif data.ndim == len(shape) + 1 and data.shape[1:] == shape:
                maps.extend(data)
            else:
                raise ValueError(
                    f"layer {layer.name!r} has shape {data.shape}; expected {shape} (one rater) or "
                    f"(R, *{shape})."
                )
        return np.stack(maps)

    def _refuse_whole_samples(self, what: str) -> None:
        """Refuse work on every whole sample of a distribution computed plane by plane (a CT): it would
        compute each of its planes once per sample (the network on every plane, for a 2-D SSN)."""
        distribution = None if self.stack is None else self.stack.distribution
        if distribution is not None and is_lazy(distribution):
            depth = distribution.spatial_shape[0]
            raise ValueError(
                f"{what} all {len(self.stack)} samples whole, which on this distribution computed plane by "
                f"plane ({depth} planes of {distribution.spatial_shape[1:]}) means {depth * len(self.stack)} "
                "plane computations; keep or export the current sample instead, or predict on a crop of the image."
            )

    @staticmethod
    def _tell_whole_sample(stack: SampleLabelStack, entry: int, purpose: str) -> None:
        """Say that a whole sample of a lazy volume takes a while (each plane not at hand is computed)."""
        distribution = stack.distribution
        if is_lazy(distribution):
            missing = distribution.spatial_shape[0] - len(distribution.cached_planes)
            show_info(f"SSN samples: computing the {distribution.spatial_shape[0]} planes of sample {entry} for "
                      f"{purpose} ({missing} not computed yet); the result follows when they are done.")

    # ------------------------------------------------------------------ lifetime
    def _is_rater_layer(self, layer: Any) -> bool:
        return (
            is_labels_layer(layer)
            and layer.name != SAMPLES_LAYER
            and not isinstance(layer.data, (LiveSamples, SampleLabelStack))
        )

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

    def _build_class_sliders(self, distribution: LowRankLogits) -> None:
        for old in self._class_sliders:  # one row per class, right under the heading
            self.content.remove(old)
        self._class_sliders = []
        for name, weight in zip(distribution.class_names, distribution.class_scales):
            slider = FloatSlider(
                label=name,
                value=float(np.clip(weight, *SCALE_RANGE)),
                min=SCALE_RANGE[0],
                max=SCALE_RANGE[1],
                step=0.1,
                tooltip=f"Factor on the noise of {name}: 0 removes it, negative mirrors it.",
            )
            slider.changed.connect(self._on_manipulation_changed)
            self._class_sliders.append(slider)
            self.content.insert(self.content.index(self._class_scales_heading) + len(self._class_sliders), slider)
        self._fit_width()

    # ------------------------------------------------------------------ sampling
