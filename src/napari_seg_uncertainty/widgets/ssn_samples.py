"""Dock widget "SSN samples": draw, browse and manipulate plausible segmentations of an SSN live.

The widget holds a :class:`~napari_seg_uncertainty.core.ssn.LowRankLogits` (from a saved ``.npz``,
from an SSN checkpoint applied to an image layer, or a synthetic demo) and shows:

* ``SSN samples``: a Labels stack ``(N, *S)`` backed by a lazy
  :class:`~napari_seg_uncertainty.core.ssn.SampleLabelStack` (browse with the first slider; in 2-D
  display only the plane on screen is computed; in 3-D display the whole sample is computed in a
  worker, its noise kept, so that a slider move only rescales it and takes the argmax again — see
  :class:`LiveSamples`),
* ``SSN mean prediction``: the argmax of the mean logits,
* per-class noise-scale sliders (``-3 ... 3``, Fig. 6 of the SSN paper) and a temperature slider
  that redraw the sample on screen as they move, "New sample", "Keep this sample" (an editable
  copy), the Dice of every sample against the mean prediction, GED² and sample diversity against
  rater layers, and export.

Every output layer is placed on the chosen image layer's grid (scale, translate, direction; a
prediction on a crop at the crop) through ``upsert_layer(geometry=…)`` and tagged with its case.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
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
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication

from ..core.geometry import Geometry
from ..core.ssn import (
    LowRankLogits,
    SampleLabelStack,
    dice_against_reference,
    generalized_energy_distance,
    load_distribution,
    sample_diversity,
    save_distribution,
    synthetic_distribution,
)
from ._case import case_of
from ._common import (
    logger,
    notify_errors,
    run_in_thread,
    show_info,
    show_warning,
    tabify_when_docked,
    unwrap_viewer,
    upsert_layer,
)
from ._layer_choices import LayerWatcher, choices_for, is_image_layer, is_labels_layer

if TYPE_CHECKING:
    import napari

__all__ = [
    "LiveSamples",
    "SSNSamplesWidget",
    "checkpoint_kind",
    "distribution_from_prediction",
    "export_samples",
    "place_distribution",
]

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
_DICE_DELAY_LARGE_MS = 1500  # … this long when every sample is a large volume (each costs ~0.5 s)
_LARGE_SAMPLE_VOXELS = 2_000_000
_TEARDOWN_WAIT_S = 5.0  # closing waits this long at most for a running computation to return
_DISTRIBUTION_FIELDS = ("mean", "cov_factor", "cov_diag", "class_names", "spacing", "independent_planes")


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
        labels = np.stack([stack.sample(i, keep_noise=i == entry) for i in range(len(stack))])
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


def _not_a_checkpoint(path: Path) -> ValueError:
    return ValueError(
        f"{str(path)!r} is not a checkpoint of this plugin: expected a .pt written by Train/"
        "`napari-seg-uncertainty train` or a .npz SSN distribution."
    )


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``"distribution"`` for an ``.npz`` SSN distribution, ``"checkpoint"`` for a torch checkpoint.

    Only the file's header is read. Anything else (a NIfTI, a TIFF, a text file …) raises a
    ``ValueError`` that names the file and says what is expected, instead of torch's unpickling text.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> bad = pathlib.Path(tempfile.mkdtemp()) / "image.nii.gz"
    >>> _ = bad.write_bytes(b"not a checkpoint")
    >>> try:
    ...     checkpoint_kind(bad)
    ... except ValueError as exc:
    ...     print(str(exc).split(": ")[1])
    expected a .pt written by Train/`napari-seg-uncertainty train` or a .npz SSN distribution.
    """
    import zipfile

    source = Path(path)
    if not source.is_file():
        raise ValueError(f"choose an existing SSN checkpoint file (got {str(source)!r}).")
    try:
        if not zipfile.is_zipfile(source):  # torch.save and np.savez both write zip archives
            raise _not_a_checkpoint(source)
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise _not_a_checkpoint(source) from exc
    if any(name.endswith("data.pkl") for name in names):
        return "checkpoint"
    if names and all(name.endswith(".npy") for name in names):
        return "distribution"
    raise _not_a_checkpoint(source)


def _load_prediction(predict: Any, path: Path, image: np.ndarray) -> dict[str, Any]:
    """``predict(path, image)`` with the checkpoint checked first and its loading errors made readable."""
    checkpoint_kind(path)
    try:
        return predict(str(path), image)
    except ValueError as exc:
        text = str(exc)
        if "not a napari-seg-uncertainty checkpoint" in text or "could not be read" in text:
            raise _not_a_checkpoint(path) from None
        raise


def _spatial_scale(layer: Any, ndim: int) -> tuple[float, ...] | None:
    scale = tuple(float(s) for s in layer.scale[-ndim:])
    return None if all(s == 1.0 for s in scale) else scale


def _spatial_shape(layer: Any, ndim: int) -> tuple[int, ...]:
    return tuple(int(s) for s in np.shape(layer.data)[-ndim:])


def place_distribution(
    distribution: LowRankLogits,
    image_layer: Any = None,
    *,
    crop_start: Any = None,
    origin: Any = None,
    direction: Any = None,
) -> tuple[Geometry, str | None]:
    """Where a distribution's grid lies in the world, and a warning when that is a guess.

    Parameters
    ----------
    distribution : LowRankLogits
        The distribution (its ``spacing``, if any, is used when no image layer gives one).
    image_layer : napari layer, optional
        The image the distribution was predicted on.
    crop_start : sequence of int, optional
        Voxel of the image where the distribution's grid starts (a prediction on a crop).
    origin, direction : optional
        World position of the first voxel and direction cosines, when the file says so.

    Returns
    -------
    (Geometry, str or None)
        The placement and, when the grid does not match the image and nothing says where it lies,
        a warning for the user.

    Examples
    --------
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> dist = synthetic_distribution((4, 8, 8), 2, rank=1, spacing=(3.0, 0.8, 0.8))
    >>> place_distribution(dist, origin=(10.0, -40.0, -50.0))[0].origin
    (10.0, -40.0, -50.0)
    """
    ndim = distribution.spatial_ndim
    own_spacing = distribution.spacing or (1.0,) * ndim
    if image_layer is None:
        return Geometry.from_meta(ndim, spacing=own_spacing, origin=origin, direction=direction), None
    image = Geometry.of(image_layer, ndim=ndim)
    if crop_start is not None:
        return image.cropped([int(v) for v in np.ravel(crop_start)]), None
    if origin is not None:
        return Geometry.from_meta(ndim, spacing=image.spacing, origin=origin, direction=direction), None
    if _spatial_shape(image_layer, ndim) == distribution.spatial_shape:
        return image, None
    warning = (
        f"the distribution's grid {distribution.spatial_shape} differs from image layer "
        f"{image_layer.name!r} {_spatial_shape(image_layer, ndim)} and says nothing of where it lies; "
        "it is drawn from the image's first voxel."
    )
    return Geometry(spacing=distribution.spacing or image.spacing, origin=image.origin,
                    direction=image.direction), warning


def _qt_alive(obj: Any) -> bool:
    """False once the C++ side of a Qt object is gone (a closed dock, a quitting application)."""
    if obj is None:
        return False
    try:
        from qtpy import API_NAME

        if API_NAME.startswith("PyQt"):
            from qtpy import sip

            return not sip.isdeleted(obj)
        import shiboken6  # pragma: no cover - PySide

        return bool(shiboken6.isValid(obj))  # pragma: no cover
    except Exception:  # noqa: BLE001 - an object we cannot inspect is treated as gone
        return False


def _whole_entry(key: Any, shape: tuple[int, ...]) -> int | None:
    """The entry when ``key`` asks for one whole sample (all spatial axes in full), else None."""
    if not isinstance(key, tuple):
        key = (key,)
    if Ellipsis in key:
        position = key.index(Ellipsis)
        key = key[:position] + (slice(None),) * (len(shape) - len(key) + 1) + key[position + 1:]
    if not key or len(key) > len(shape):
        return None
    first = key[0]
    if isinstance(first, np.ndarray) and first.ndim == 0:
        first = first.item()
    if not isinstance(first, (int, np.integer)) or isinstance(first, (bool, np.bool_)):
        return None
    for k, size in zip(key[1:], shape[1:]):
        if not isinstance(k, slice) or k.indices(size) != (0, size, 1):
            return None
    return int(first) % shape[0]


class LiveSamples:
    """What the "SSN samples" layer holds: a :class:`SampleLabelStack` read without stalling the viewer.

    Every read is the stack's (exact) value, except one case: in 3-D display, when the viewer asks on
    the GUI thread for a whole 3-D sample that is not computed yet (just switched to 3-D, browsed to
    another sample, moved a slider), it gets the last volume shown for that sample (or the mean
    prediction) at once, and ``request(entry)`` starts the computation in a worker; the widget
    refreshes the layer when it is done. Read exact samples from :attr:`stack`.
    """

    def __init__(self, stack: SampleLabelStack, *, placeholder: Any, request: Any, nonblocking: Any) -> None:
        self.stack = stack
        self._placeholder = placeholder
        self._request = request
        self._nonblocking = nonblocking
        self._main_thread = threading.main_thread()
        self._shown: tuple[int, int, np.ndarray] | None = None  # (entry, sample index, volume)

    shape = property(lambda self: self.stack.shape)
    dtype = property(lambda self: self.stack.dtype)
    ndim = property(lambda self: self.stack.ndim)
    size = property(lambda self: self.stack.size)

    def __len__(self) -> int:
        return len(self.stack)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.stack.__array__(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        stack = self.stack
        if stack.distribution.spatial_ndim == 3 and threading.current_thread() is self._main_thread:
            entry = _whole_entry(key, stack.shape)
            if entry is not None and self._nonblocking():
                sample_index = stack.sample_indices[entry]
                volume = stack.cached_sample(entry)
                if volume is None:
                    self._request(entry)
                    shown = self._shown
                    if shown is not None and shown[:2] == (entry, sample_index):
                        return shown[2]
                    volume = self._placeholder()
                    return volume if volume is not None else np.zeros(stack.shape[1:], stack.dtype)
                self._shown = (entry, sample_index, volume)
                return volume
        return stack[key]

    def __repr__(self) -> str:
        return f"LiveSamples({self.stack!r})"


class _OnLayoutChange(QObject):
    """Event filter calling ``callback()`` when the watched widget is shown or its layout changes."""

    def __init__(self, callback: Any, parent: Any) -> None:
        super().__init__(parent)
        self._callback = callback

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show, QEvent.Type.Polish):
            with contextlib.suppress(Exception):
                self._callback()
        return False


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


class SSNSamplesWidget(Container):
    """Draw, browse and manipulate samples of a Stochastic Segmentation Network live.

    Load a distribution (saved ``.npz``, SSN checkpoint + image layer, or synthetic demo), then
    browse ``N`` samples with the viewer's slider.  The class sliders scale one class's noise
    (``-3 ... 3``), the temperature slider all noise; the sample on screen is redrawn as they move.
    Output layers are placed on the image layer's grid (scale, translate, direction) and tagged
    with its case.  In 3-D display a whole sample's noise is kept, so a slider move only rescales
    and re-takes the argmax, in a worker (the latest value wins); the viewer never waits for it.

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
        super().__init__(labels=True, scrollable=True)
        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self._viewer = viewer
        self._closed = False
        self.base_distribution: LowRankLogits | None = None
        self.distribution: LowRankLogits | None = None
        self.stack: SampleLabelStack | None = None
        self.live: LiveSamples | None = None
        self.geometry: Geometry | None = None
        self.case: str | None = None
        self.mean_labels: np.ndarray | None = None
        self.dice: np.ndarray | None = None  # (N, C - 1) Dice of each sample vs the mean prediction
        self.metrics: dict[str, float] | None = None
        self.kept_layers: list[Any] = []
        self._workers: set[Any] = set()
        self._running: set[threading.Event] = set()  # one per computation in a worker thread
        self._next_sample_index = 0
        self._dice_generation = 0
        self._dice_running = False
        self._dice_pending = False
        self._volume_running = False
        self._volume_pending = False
        self._dice_timer = QTimer(self.native)  # parented: deleted with the dock, never after it
        self._dice_timer.setSingleShot(True)
        self._dice_timer.setInterval(_DICE_DELAY_MS)
        self._dice_timer.timeout.connect(self._start_dice)

        # --- source
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

        # --- sampling and manipulation
        self._num_samples = SpinBox(label="Samples", value=10, min=1, max=500)
        self._seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self._draw_button = PushButton(text="Draw samples")
        self._new_sample_button = PushButton(
            text="New sample", tooltip="Replace the sample on screen by a sample never shown before."
        )
        self._temperature = FloatSlider(
            label="Temperature",
            value=1.0,
            min=_TEMPERATURE_RANGE[0],
            max=_TEMPERATURE_RANGE[1],
            step=0.05,
            tooltip="Factor on all noise: 0 gives the mean prediction, <1 less diverse, >1 more diverse.",
        )
        self._class_scales_heading = Label(value="Class noise scales (−3 … 3):")
        self._class_sliders: list[FloatSlider] = []
        self._reset_button = PushButton(text="Reset scales and temperature")
        self._keep_button = PushButton(
            text="Keep this sample", tooltip="Copy the sample on screen into an editable Labels layer."
        )
        self._status = Label(value="")
        self._dice_label = Label(value="Dice vs mean: –")
        self._dice_table = Table(label="Dice vs mean")  # rows: sample number; columns: classes
        self._dice_table.read_only = True

        # --- GED² and diversity
        self._raters = _LayerSelect(
            label="Raters",
            choices=choices_for(viewer, self._is_rater_layer),
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
                self._class_scales_heading,
                self._reset_button,
                self._keep_button,
                self._status,
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
        self._fit_narrow_docks()

        self._source.changed.connect(self._on_source_changed)
        self._load_button.changed.connect(self._on_load)
        self._draw_button.changed.connect(self._on_draw)
        self._new_sample_button.changed.connect(self._on_new_sample)
        self._temperature.changed.connect(self._on_manipulation_changed)
        self._reset_button.changed.connect(self._on_reset)
        self._keep_button.changed.connect(self._on_keep)
        self._metrics_button.changed.connect(self._on_metrics)
        self._export_button.changed.connect(self._on_export)
        self._watcher = LayerWatcher(viewer, self.reset_choices, owner=self.native)
        viewer.dims.events.current_step.connect(self._on_step)
        viewer.dims.events.ndisplay.connect(self._on_ndisplay)
        self.native.destroyed.connect(self._on_destroyed)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._on_quit)
        self._on_source_changed()
        self._update_enabled()
        tabify_when_docked(self.native)

    @property
    def native(self) -> Any:
        """The scroll area around the controls: what napari puts in the dock, so that the dock scrolls.

        magicgui's ``native`` of a ``scrollable`` container is the widget *inside* its scroll area, and
        napari docks ``native``: without this the dock would hold the bare controls, as tall as they
        are, and grow the main window instead of scrolling.
        """
        return self.root_native_widget

    def _fit_narrow_docks(self) -> None:
        """No horizontal scrolling at napari's default dock width: long texts wrap, combo boxes and the
        table shrink to the dock instead of widening it; the dock scrolls vertically (``scrollable``)."""
        from qtpy.QtWidgets import QAbstractItemView, QComboBox, QHeaderView, QSizePolicy

        texts = (self._source_info, self._status, self._dice_label, self._metrics_label, self._class_scales_heading)
        for label in texts:  # magicgui's labels have a fixed size: let them follow the dock (and wrap)
            label.native.setWordWrap(label is not self._dice_label)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)
        for combo in (self._source, self._image_layer, self._export_what):
            combo.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(10)
        table = self._dice_table.native
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        table.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        table.setMinimumHeight(120)
        table.setMaximumHeight(260)
        self._raters.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._raters.native.setMinimumHeight(60)
        self._raters.native.setMaximumHeight(140)
        self.native.setMinimumHeight(160)  # the dock can be short: its controls scroll
        self._fit_width()

    def _fit_width(self) -> None:
        """The dock at least as wide as the controls plus the vertical scroll bar (nothing clipped).

        Done again whenever the controls' layout changes (fonts and styles arrive when the dock shows).
        """
        area = self.native
        inner = area.widget()
        if inner is None or not _qt_alive(inner):
            return
        if getattr(self, "_width_filter", None) is None:
            self._width_filter = _OnLayoutChange(self._fit_width, parent=inner)
            inner.installEventFilter(self._width_filter)
        width = inner.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 2 * area.frameWidth()
        if area.minimumWidth() != width:
            area.setMinimumWidth(width)

    # ------------------------------------------------------------------ lifetime
    def _on_destroyed(self, *_args: Any) -> None:
        """The dock widget is gone: stop timers, ignore late worker results, let go of the viewer's events.

        Runs while Qt tears the dock (or the whole application) down, so nothing here may raise:
        an exception in this slot would abort the process.
        """
        try:
            self._shut_down()
            if _qt_alive(self._dice_timer):
                self._dice_timer.stop()
            self._watcher.disconnect()
            app = QApplication.instance()
            if app is not None:
                with contextlib.suppress(Exception):
                    app.aboutToQuit.disconnect(self._on_quit)
            for emitter, callback in (
                (self._viewer.dims.events.current_step, self._on_step),
                (self._viewer.dims.events.ndisplay, self._on_ndisplay),
            ):
                with contextlib.suppress(Exception):
                    emitter.disconnect(callback)
        except Exception:  # noqa: BLE001 - never let teardown abort the application
            logger.debug("SSN samples teardown", exc_info=True)

    def _on_quit(self) -> None:
        try:
            self._shut_down()
            app = QApplication.instance()
            if app is not None:
                app.aboutToQuit.disconnect(self._on_quit)
        except Exception:  # noqa: BLE001 - never let teardown abort the application
            logger.debug("SSN samples teardown", exc_info=True)

    def _shut_down(self) -> None:
        """Drop late results, stop the Dice loop early and wait (a few seconds at most) for running workers.

        A worker still inside numpy when Python exits would die emitting into deleted Qt objects, which
        aborts the process; waiting here (dock closed, application quitting) prevents that.
        """
        self._closed = True
        self._dice_generation += 1  # the Dice loop stops before its next sample
        deadline = time.monotonic() + _TEARDOWN_WAIT_S
        for done in list(self._running):
            done.wait(max(0.0, deadline - time.monotonic()))

    def _alive(self) -> bool:
        return not self._closed and _qt_alive(self.native)

    @property
    def busy(self) -> bool:
        """True while a worker thread of this widget runs (loading, sampling, metrics, export)."""
        timer_active = _qt_alive(self._dice_timer) and self._dice_timer.isActive()
        return bool(self._workers) or self._dice_running or self._volume_running or timer_active

    # ------------------------------------------------------------------ helpers
    def _is_rater_layer(self, layer: Any) -> bool:
        return (
            is_labels_layer(layer)
            and layer.name != SAMPLES_LAYER
            and not isinstance(layer.data, (LiveSamples, SampleLabelStack))
        )

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer choices, keeping the chosen layers chosen (also when one was renamed).

        napari calls this on every layer addition, removal, move and rename (so does the widget's
        own :class:`LayerWatcher`). magicgui matches combo-box items by their text, so a renamed
        layer would drop out of the selection; the values are the layers themselves, so they are
        put back.
        """
        if not self._alive():
            return
        image, raters = self._image_layer.value, list(self._raters.value or [])
        super().reset_choices(*args)
        if image is not None and image in self._image_layer.choices and self._image_layer.value is not image:
            self._image_layer.value = image
        kept = [layer for layer in raters if layer in self._raters.choices]
        if kept != list(self._raters.value or []):
            self._raters.value = kept

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

    def _run(self, func: Any, *args: Any, action: str, returned: Any = None, finished: Any = None) -> Any:
        """``run_in_thread`` that closing the dock (or quitting) waits for, so no worker outlives the widget.

        Results and ``finished`` after closing are dropped.
        """
        done = threading.Event()

        def _call() -> Any:
            try:
                return func(*args)
            finally:
                done.set()

        def _returned(result: Any) -> None:
            if self._alive() and returned is not None:
                returned(result)

        def _finished() -> None:
            self._running.discard(done)
            if finished is not None:
                finished()

        self._running.add(done)
        return run_in_thread(_call, action=action, returned=_returned, finished=_finished)

    def _start(self, func: Any, *args: Any, action: str, returned: Any = None) -> Any:
        """Run ``func`` in a worker thread; errors become notifications; results after closing are dropped."""
        holder: list[Any] = []

        def _done() -> None:
            self._workers.discard(holder[0])

        worker = self._run(func, *args, action=action, returned=returned, finished=_done)
        holder.append(worker)
        self._workers.add(worker)
        return worker

    def _display_3d(self) -> bool:
        return int(self._viewer.dims.ndisplay) == 3

    def _samples_layer(self) -> Any:
        if SAMPLES_LAYER in self._viewer.layers:
            layer = self._viewer.layers[SAMPLES_LAYER]
            if self.live is not None and layer.data is self.live:
                return layer
        return None

    def current_entry(self) -> int:
        """Index of the sample on screen in the ``SSN samples`` layer (0 when there is none)."""
        if self.stack is None or SAMPLES_LAYER not in self._viewer.layers:
            return 0
        layer = self._viewer.layers[SAMPLES_LAYER]
        point = layer.world_to_data(self._viewer.dims.point)
        return int(np.clip(np.round(point[0]), 0, len(self.stack) - 1))

    def _layer_kwargs(self) -> dict[str, Any]:
        return {"geometry": self.geometry, "case": self.case}

    # ------------------------------------------------------------------ loading
    def _selected_image_layer(self, *, required: bool) -> Any:
        layer = self._image_layer.value
        if layer is None or layer not in self._viewer.layers:
            if required:
                raise ValueError("choose the image layer the checkpoint should predict on.")
            return None
        return layer

    def _on_load(self, _value: Any = None) -> None:
        with notify_errors("Loading the SSN distribution"):
            source = self._source.value
            layer = self._selected_image_layer(required=False)
            if source == SOURCE_SAVED:
                path = self._distribution_file.value
                if path is None or not Path(path).is_file():
                    raise ValueError(f"choose an existing .npz distribution file (got {str(path)!r}).")
                self._start(
                    _load_saved, Path(path), action="Loading the SSN distribution",
                    returned=lambda loaded: self._place_and_show(loaded[0], layer, **loaded[1]),
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
                path = Path(path)
                layer = self._selected_image_layer(required=True)
                image = np.asarray(layer.data)
                layer_scale = tuple(float(s) for s in layer.scale)

                def _predict() -> tuple[LowRankLogits, dict[str, Any]]:
                    if checkpoint_kind(path) == "distribution":
                        return _load_saved(path)
                    prediction = _load_prediction(predict, path, image)
                    if isinstance(prediction, LowRankLogits):  # core.training.predict_ssn_distribution
                        prediction = {k: getattr(prediction, k) for k in _DISTRIBUTION_FIELDS}
                    spatial_ndim = np.ndim(prediction.get("mean")) - 1
                    spacing = layer_scale[-spatial_ndim:] if 0 < spatial_ndim <= len(layer_scale) else None
                    if spacing is not None and all(v == 1.0 for v in spacing):
                        spacing = None
                    placement = {k: prediction.get(k) for k in ("crop_start", "origin", "direction")}
                    return distribution_from_prediction(prediction, spacing=spacing), placement

                self._start(
                    _predict, action="Predicting the SSN distribution",
                    returned=lambda loaded: self._place_and_show(loaded[0], layer, **loaded[1]),
                )
            else:
                shape: tuple[int, ...] = _SYNTHETIC_SHAPE
                spacing = None
                if layer is not None:
                    ndim = 3 if layer.data.ndim >= 3 and not layer.rgb else 2
                    shape = _spatial_shape(layer, ndim)
                    spacing = _spatial_scale(layer, ndim)
                seed = int(self._seed.value)
                self._start(
                    lambda: synthetic_distribution(
                        shape, _SYNTHETIC_CLASSES, rank=10, seed=seed, spacing=spacing
                    ),
                    action="Making the synthetic SSN distribution",
                    returned=lambda dist: self._place_and_show(dist, layer),
                )

    def _place_and_show(self, distribution: LowRankLogits, layer: Any, **placement: Any) -> None:
        with notify_errors("Placing the SSN distribution"):
            if layer is not None and layer not in self._viewer.layers:
                layer = None
            geometry, warning = place_distribution(distribution, layer, **placement)
            if warning is not None:
                show_warning(f"SSN samples: {warning}")
            self.set_distribution(distribution, geometry=geometry, case=case_of(layer))

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

    def set_distribution(
        self,
        distribution: LowRankLogits,
        *,
        geometry: Geometry | None = None,
        case: str | None = None,
    ) -> None:
        """Show ``distribution``: class sliders, mean prediction and a fresh set of samples.

        ``geometry`` places the layers (default: the distribution's spacing at the origin); ``case``
        tags them. The mean prediction is computed in a worker, so this returns at once.
        """
        with notify_errors("Showing the SSN distribution"):
            if not isinstance(distribution, LowRankLogits):
                raise TypeError(f"distribution must be a LowRankLogits, got {type(distribution).__name__}.")
            if geometry is None:
                geometry, _ = place_distribution(distribution)
            if geometry.ndim != distribution.spatial_ndim:
                raise ValueError(
                    f"geometry has {geometry.ndim} axes; the distribution has {distribution.spatial_ndim}."
                )
            distribution = self._named_classes(distribution)
            self.base_distribution = distribution
            self.distribution = distribution
            self.geometry = geometry
            self.case = case
            self.stack = None  # the old samples stay on screen until the new ones are drawn
            self.dice = None
            self.metrics = None
            self._build_class_sliders(distribution)
            with self._temperature.changed.blocked():
                self._temperature.value = float(np.clip(distribution.temperature, *_TEMPERATURE_RANGE))
            names = ", ".join(distribution.class_names)
            self._source_info.value = (
                f"{distribution.num_classes} classes ({names}), grid {distribution.spatial_shape}, "
                f"rank {distribution.rank}"
            )
            self._update_enabled()
            base = distribution

            def _show_mean(mean_labels: np.ndarray) -> None:
                with notify_errors("Showing the SSN mean prediction"):
                    if base is not self.base_distribution:
                        return
                    self.mean_labels = mean_labels
                    upsert_layer(self._viewer, mean_labels, name=MEAN_LAYER, layer_type="labels",
                                 **self._layer_kwargs())
                    self._on_draw()

            self._start(distribution.mean_prediction, action="Computing the SSN mean prediction",
                        returned=_show_mean)

    def _build_class_sliders(self, distribution: LowRankLogits) -> None:
        for old in self._class_sliders:  # one row per class, right under the heading
            self.remove(old)
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
            self.insert(self.index(self._class_scales_heading) + len(self._class_sliders), slider)
        self._fit_width()

    # ------------------------------------------------------------------ sampling
    def _on_draw(self, _value: Any = None) -> None:
        with notify_errors("Drawing SSN samples"):
            if self.distribution is None:
                raise ValueError("load a distribution first.")
            count = int(self._num_samples.value)
            stack = SampleLabelStack(self.distribution, range(count), seed=int(self._seed.value))
            base = self.base_distribution
            entry = min(self.current_entry(), count - 1)

            def _show(_first: np.ndarray) -> None:
                with notify_errors("Drawing SSN samples"):
                    if base is not self.base_distribution or self.distribution is None:
                        return  # another distribution was loaded meanwhile; its own draw follows
                    if stack.distribution is not self.distribution:  # sliders moved meanwhile
                        stack.set_distribution(self.distribution)
                    self.stack = stack
                    self.live = LiveSamples(
                        stack,
                        placeholder=lambda: self.mean_labels,
                        request=lambda _entry: self._request_volume(),
                        nonblocking=self._display_3d,
                    )
                    self._next_sample_index = count
                    upsert_layer(
                        self._viewer,
                        self.live,
                        name=SAMPLES_LAYER,
                        layer_type="labels",
                        leading_axes=1,
                        metadata={"seed": stack.seed},
                        **self._layer_kwargs(),
                    )
                    self._update_enabled()
                    self._schedule_dice()

            # The sample on screen is computed (and, in 3-D, its noise kept for the sliders) off the GUI thread.
            self._start(stack.sample, entry, action="Drawing SSN samples", returned=_show)

    def class_scale_values(self) -> list[float]:
        """The class sliders' values, one per class."""
        return [float(slider.value) for slider in self._class_sliders]

    def _refresh_samples_layer(self, *, thumbnail: bool = True) -> None:
        """Recompute what is on screen (the grid is unchanged, so no extent update)."""
        layer = self._samples_layer()
        if layer is not None:
            layer.refresh(extent=False, thumbnail=thumbnail)

    def _whole_volume_shown(self) -> bool:
        return (
            self.stack is not None
            and self.stack.distribution.spatial_ndim == 3
            and self._display_3d()
            and self._samples_layer() is not None
        )

    def _on_manipulation_changed(self, _value: Any = None) -> None:
        """Apply the sliders: redraw the sample on screen (in 3-D in a worker), the Dice table later."""
        with notify_errors("Updating the SSN samples"):
            if self.base_distribution is None:
                return
            self.distribution = self.base_distribution.with_class_scales(
                self.class_scale_values()
            ).with_temperature(float(self._temperature.value))
            if self.stack is not None:
                self.stack.set_distribution(self.distribution)
                if self._whole_volume_shown():
                    self._request_volume()  # the old volume stays until the new one is ready
                else:
                    # one plane: fast enough to redraw now; the thumbnail waits for the sliders to rest
                    self._refresh_samples_layer(thumbnail=False)
                self._schedule_dice()

    def _request_volume(self) -> None:
        """Compute the whole sample on screen in a worker, then show it; requests made meanwhile coalesce.

        When the sample is computed already but its noise is not kept (it came from the Dice table),
        the noise is prepared in the background, so that the first slider move is fast too.
        """
        if not self._alive() or self.stack is None:
            return
        if self._volume_running:
            self._volume_pending = True
            return
        stack, entry = self.stack, self.current_entry()
        distribution = stack.distribution
        if stack.cached_sample(entry) is not None:
            if not self._volume_on_screen(stack, entry):
                self._refresh_samples_layer()
            if not stack.has_noise(entry):
                self._volume_running = True
                self._volume_pending = False
                self._run(stack.prepare_noise, entry, action="Preparing the SSN sample for the sliders",
                          finished=self._volume_finished)
            return
        self._volume_running = True
        self._volume_pending = False
        if not stack.has_noise(entry):
            self._status.value = f"Computing sample {entry} in 3-D …"

        def _returned(_labels: np.ndarray) -> None:
            if not self._alive():
                return
            self._status.value = ""
            if self.stack is not stack:
                return
            if stack.distribution is not distribution:
                self._volume_pending = True  # the sliders moved meanwhile: once more with their values
            elif not self._volume_on_screen(stack, entry):
                self._refresh_samples_layer()

        self._run(stack.sample, entry, action="Drawing the SSN sample", returned=_returned,
                  finished=self._volume_finished)

    def _volume_on_screen(self, stack: SampleLabelStack, entry: int) -> bool:
        """Whether the layer shows the current (cached) whole sample of ``entry``."""
        shown = None if self.live is None or self.live.stack is not stack else self.live._shown
        cached = stack.cached_sample(entry)
        return cached is not None and shown is not None and shown[0] == entry and shown[2] is cached

    def _volume_finished(self) -> None:
        self._volume_running = False
        if self._alive() and self._volume_pending:
            self._volume_pending = False
            self._request_volume()

    def _on_ndisplay(self, _event: Any = None) -> None:
        if self._alive() and self._whole_volume_shown():
            self._request_volume()

    def _on_step(self, _event: Any = None) -> None:
        if not self._alive():
            return
        self._update_dice_label()
        if self._whole_volume_shown():
            self._request_volume()  # browsing in 3-D: the new sample (or its noise) in the background

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
            if self._whole_volume_shown():
                self._request_volume()
            else:
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
                "class_names": list(stack.distribution.class_names),
            }

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
                        metadata=metadata,
                        **self._layer_kwargs(),
                    )
                    self.kept_layers.append(layer)
                    self._viewer.layers.selection.active = layer

            self._start(lambda: np.array(stack.sample(entry)), action="Keeping the sample", returned=_add)

    # ------------------------------------------------------------------ Dice against the mean prediction
    def _schedule_dice(self) -> None:
        """Recompute the Dice table off the GUI thread once the sliders rest (bursts coalesce)."""
        if not self._alive() or not _qt_alive(self._dice_timer):
            return
        self._dice_generation += 1
        large = self.distribution is not None and np.prod(self.distribution.spatial_shape) > _LARGE_SAMPLE_VOXELS
        self._dice_timer.setInterval(_DICE_DELAY_LARGE_MS if large else _DICE_DELAY_MS)
        self._dice_timer.start()  # restarts while a slider is being dragged

    def _start_dice(self) -> None:
        if not self._alive():
            return
        if not self._whole_volume_shown():
            self._refresh_samples_layer()  # sliders at rest: bring the layer thumbnail up to date
        if self._dice_running:
            self._dice_pending = True
            return
        if self.stack is None or self.mean_labels is None:
            return
        stack, mean_labels, generation = self.stack, self.mean_labels, self._dice_generation
        num_classes = stack.distribution.num_classes
        current = self.current_entry()

        def _compute() -> tuple[int, np.ndarray] | None:
            samples = np.empty((len(stack), *stack.shape[1:]), dtype=stack.dtype)
            for i in [current, *(i for i in range(len(stack)) if i != current)]:
                if generation != self._dice_generation:
                    return None  # outdated: the sliders moved again; a new request follows
                samples[i] = stack.sample(i, keep_noise=i == current)
            return generation, dice_against_reference(samples, mean_labels, num_classes=num_classes)

        def _finished() -> None:
            self._dice_running = False
            if self._dice_pending and self._alive():
                self._dice_pending = False
                self._start_dice()

        self._dice_running = True
        self._dice_pending = False
        self._run(_compute, action="Computing Dice vs the mean", returned=self._show_dice, finished=_finished)

    def _show_dice(self, result: tuple[int, np.ndarray] | None) -> None:
        if result is None or not self._alive():
            return
        generation, dice = result
        if generation != self._dice_generation or self.distribution is None:
            return  # a newer request is on its way
        self.dice = dice
        names = list(self.distribution.class_names[1:])
        with np.errstate(all="ignore"):
            means = np.array([np.nan if np.all(np.isnan(row)) else np.nanmean(row) for row in dice])
        rows = [[_format_score(v) for v in (*row, mean)] for row, mean in zip(dice, means)]
        # wide enough for "0.123" in every column (the dock grows a little rather than eliding numbers)
        self._dice_table.native.setMinimumWidth(34 + 54 * (len(names) + 1))
        with contextlib.suppress(Exception):
            parent = self._dice_table.native.parentWidget()
            while parent is not None and parent is not self.native:
                if parent.layout() is not None:
                    parent.layout().activate()
                parent = parent.parentWidget()
            self._fit_width()
        self._dice_table.value = {
            "data": rows,
            "index": [str(i) for i in range(len(rows))],  # the sample's number, as on the viewer's slider
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
        # one short line (the per-class values are the table's highlighted row, and the tooltip)
        self._dice_label.value = f"Sample {entry}: mean Dice {_format_score(mean)}"
        self._dice_label.tooltip = ", ".join(parts)
        with contextlib.suppress(Exception):
            self._dice_table.native.selectRow(entry)

    # ------------------------------------------------------------------ GED² and diversity
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

    def _on_metrics(self, _value: Any = None) -> None:
        with notify_errors("Computing GED² and diversity"):
            if self.stack is None:
                raise ValueError("draw samples first.")
            raters = self._rater_stack()
            stack = self.stack
            num_classes = stack.distribution.num_classes
            current = self.current_entry()

            def _compute() -> dict[str, float] | None:
                maps = []
                for i in range(len(stack)):
                    if self._closed:
                        return None
                    maps.append(stack.sample(i, keep_noise=i == current))
                samples = np.stack(maps)
                return {
                    "ged2": generalized_energy_distance(samples, raters, num_classes=num_classes),
                    "sample_diversity": sample_diversity(samples, num_classes=num_classes),
                    "rater_diversity": sample_diversity(raters, num_classes=num_classes),
                    "num_samples": float(len(samples)),
                    "num_raters": float(len(raters)),
                }

            self._start(_compute, action="Computing GED² and diversity", returned=self._show_metrics)

    def _show_metrics(self, metrics: dict[str, float] | None) -> None:
        if metrics is None:
            return
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


def _load_saved(path: Path) -> tuple[LowRankLogits, dict[str, Any]]:
    """A saved distribution and, when the file has them, where it lies (``origin``, ``direction``, ``crop_start``)."""
    distribution = load_distribution(path)
    placement: dict[str, Any] = {}
    with contextlib.suppress(Exception), np.load(path, allow_pickle=False) as archive:
        for key in ("origin", "direction", "crop_start"):
            if key in archive.files:
                placement[key] = np.asarray(archive[key], dtype=float)
    return distribution, placement


def _format_score(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
