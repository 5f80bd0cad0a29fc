"""The settings of the *Train* dock: the form, its mapping to a ``TrainConfig``, and the data it selects.

:class:`TrainForm` is mixed into :class:`~napari_seg_uncertainty.widgets.train.TrainWidget`: it builds
the settings controls (layers, model, loss, schedule, output), sets them from keywords
(:meth:`TrainForm.configure`), turns them into a :class:`~napari_seg_uncertainty.core.training.TrainConfig`
and reads the image and rater layers into a ``TrainingData`` (:meth:`TrainForm.collect_data`).
The cohort's controls (path, Browse/Load, split settings, case table, skipped cases) are a
:class:`~napari_seg_uncertainty.widgets._train_cohort_controls.CohortControls` composed into the form
(its controls also under the form's names, ``_split_mode``, ``_cases_table`` …); the open layers'
checks (:func:`grid_mismatch`: the raters do not label the image's voxels) live in ``_train_layers``.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, Label, LineEdit, SpinBox

from ..core.geometry import Geometry
from ..workflow.training import foreground_box, parse_patch_size
from ._case import case_of
from ._common import show_warning
from ._layer_choices import choices_for, is_labels_layer, labels_problem
from ._layer_select import LayerSelect
from ._train_cohort import CohortScan
from ._train_cohort_controls import SPLIT_CHOICES, CohortControls
from ._train_layers import grid_mismatch, is_train_image, layer_arrays

if TYPE_CHECKING:
    from ..core.cohort import Cohort
    from ..core.training import TrainConfig, TrainingData

__all__ = [
    "DATA_SOURCES",
    "METHODS",
    "MODEL_SIZES",
    "PREDICT_REGIONS",
    "SPLIT_CHOICES",
    "TARGET_LABELS",
    "TrainForm",
    "grid_mismatch",
]

#: "Train on" choices: the image and rater layers open in the viewer, or a cohort on disk.
DATA_SOURCES = (("open layers", "layers"), ("cohort (folder or manifest)", "cohort"))
#: Shown under the layers: one image trains on its first 80 % and validates on the rest (``core.training.data``).
ONE_CASE_NOTE = (
    "ℹ one-case training: validation on the last strip of the image (its last {share} % of rows, or of "
    "slices in a volume); use a cohort for held-out cases."
)

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
#: "Predict on" choices: the whole image, or the raters' region (foreground bounding box + margin).
PREDICT_REGIONS = (("whole image", "image"), ("raters' region (+8 voxels)", "raters"))
REGION_MARGIN = 8
#: "Dimensions" choices: 0 trains as the data are (2-D image: 2-D, volume: 3-D).
DIMENSIONS = (("as the data", 0), ("2-D slices", 2), ("3-D patches", 3))
#: configure() keyword -> (form control attribute, converter of the given value).
_PLAIN_SETTINGS = {
    "ensemble_size": ("_ensemble", int),
    "dropout": ("_dropout", float),
    "ssn_rank": ("_ssn_rank", int),
    "ssn_samples": ("_ssn_samples", int),
    "mask_background": ("_mask_background", bool),
    "epochs": ("_epochs", int),
    "steps_per_epoch": ("_steps", int),
    "batch_size": ("_batch", int),
    "learning_rate": ("_lr", float),
    "seed": ("_seed", int),
    "output_dir": ("_output", str),
    "resume": ("_resume", str),
    "val_fraction": ("_val", float),
    "test_fraction": ("_test", float),
    "folds": ("_folds", int),
    "fold": ("_fold", int),
    "num_workers": ("_workers", int),
}


def _choice_value(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError naming ``name``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return value


class TrainForm:
    """The settings controls of the *Train* dock and what they describe (mixed into ``TrainWidget``)."""

    _viewer: Any
    _geometry: Geometry | None
    _image_shape: tuple[int, ...]
    _crop_start: tuple[int, ...] | None
    _crop: tuple[slice, ...] | None
    _image_layer: Any
    _case: str | None
    grid_warning: str | None

    state: str
    _status: Any
    settings: Any

    # data source -----------------------------------------------------------------------------------
    # data source -----------------------------------------------------------------------------------
    def _build_source_settings(self) -> list[Any]:
        """The data source (open layers or a cohort) and the cohort controls (:class:`CohortControls`)."""
        self._source = ComboBox(
            label="Train on", choices=list(DATA_SOURCES), value="layers",
            tooltip="The image and rater layers open in the viewer (one case), or a cohort of cases on disk.",
        )
        #: The cohort's path, Browse/Load, split settings, case table and skipped cases.
        self.cohort_controls = controls = CohortControls(
            seed=lambda: int(self._seed.value), status=self._status, state=lambda: self.state,
            set_state=self._set_state, fit_width=self._fit_settings_width,
        )
        # the cohort controls under the form's names (configure(), scripts and tests set them)
        self._cohort_path, self._browse, self._load, self._cohort_row = (
            controls.path, controls.browse, controls.load_button, controls.row)
        self._split_mode, self._val, self._test = controls.split_mode, controls.val, controls.test
        self._folds, self._fold, self._workers = controls.folds, controls.fold, controls.workers
        self._cohort_message, self._split_sizes = controls.message, controls.split_sizes
        self._cases_table, self._problems = controls.table, controls.problems
        self._one_case_note = Label(value=ONE_CASE_NOTE.format(share=20))
        self._one_case_note.native.setWordWrap(True)
        self._one_case_note.native.setStyleSheet("color: #9aa4b0;")
        self._one_case_note.native.setMinimumWidth(120)  # wraps instead of widening the dock
        self._source.changed.connect(self._on_source_changed)
        self._load.changed.connect(lambda _value=None: self.load_cohort())
        self._cohort_path.native.returnPressed.connect(lambda: self.load_cohort())
        return [self._source, *controls.settings]

    def _place_source_widgets(self, settings: Any) -> None:
        """Put the cohort's table, split sizes and problems, and the one-case note, over the settings' width."""
        from qtpy.QtWidgets import QSizePolicy

        layout = settings.native.layout()

        def insert_after(control: Any, *widgets: Any) -> None:
            index = layout.indexOf(control.native.parentWidget())  # the control's labelled row
            for offset, widget in enumerate(widgets, start=1):
                widget.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                            widget.native.sizePolicy().verticalPolicy())
                layout.insertWidget(index + offset, widget.native)

        insert_after(self._workers, *self.cohort_controls.full_width)
        insert_after(self._raters, self._one_case_note)

    def _fit_settings_width(self) -> None:
        """Widen the settings' scroll area to what its contents need (the case table's columns)."""
        area = self.settings.root_native_widget
        needed = self.settings.native.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4
        if area.minimumWidth() < needed:
            area.setMinimumWidth(needed)

    @property
    def data_source(self) -> str:
        """``"layers"`` (the open image and rater layers) or ``"cohort"``."""
        return str(self._source.value)

    @property
    def cohort(self) -> Cohort | None:
        """The cohort loaded (``None`` before one was)."""
        return self.cohort_controls.cohort

    @property
    def cohort_scan(self) -> CohortScan | None:
        """The cohort loaded with its skipped cases' problems (``None`` before one was)."""
        return self.cohort_controls.scan

    @property
    def cohort_error(self) -> str | None:
        """Why the last :meth:`load_cohort` failed (``None`` when it did not)."""
        return self.cohort_controls.error

    @property
    def split(self) -> dict[str, list[str]] | None:
        """The cohort's case split the split settings describe (``None`` without a cohort or when invalid)."""
        return self.cohort_controls.split

    @property
    def case_rows(self) -> list[dict[str, Any]]:
        """The case table as shown: one dict per row, keyed by :data:`CASE_COLUMNS`."""
        return self.cohort_controls.rows

    def _on_source_changed(self, _value: Any = None) -> None:
        cohort = self.data_source == "cohort"
        for control in (self._image, self._raters, self._predict_on, self._one_case_note):
            control.visible = not cohort
        if hasattr(self, "_grid_label"):
            self._grid_label.visible = not cohort and self.grid_warning is not None
        self.cohort_controls.show(cohort)

    def load_cohort(self, source: Any = None) -> Any:
        """Load the cohort at ``source`` (default: the Cohort field) in a worker; returns the worker.

        The header scan runs in a worker thread; meanwhile the dock says "Loading …" and Start is
        disabled. Bad cases are skipped and listed in red below the case table; a source that cannot
        be loaded gives a notification and a message in the dock. ``None`` when nothing started (a
        run is going).
        """
        if self.state in ("idle", "loading") and self.data_source != "cohort":
            if source is not None:
                self._cohort_path.value = str(source)
            self._source.value = "cohort"
        return self.cohort_controls.load(source)

    def cohort_split(self) -> dict[str, list[str]]:
        """The split the settings describe, checked (ValueError saying what to change)."""
        return self.cohort_controls.checked_split()

    def _build_layer_settings(self, viewer: Any) -> list[Any]:
        """The data and model controls (image, raters, target, model, loss, size, dimensions, SSN)."""
        self._image = ComboBox(
            label="Image", choices=choices_for(viewer, is_train_image), tooltip="The image the raters annotated."
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
        self._dims = ComboBox(label="Dimensions", choices=list(DIMENSIONS), value=0)
        self._ensemble = SpinBox(label="Ensemble members", value=1, min=1, max=20)
        self._dropout = FloatSpinBox(label="MC dropout", value=0.0, min=0.0, max=0.9, step=0.05)
        self._ssn_rank = SpinBox(label="SSN rank", value=10, min=1, max=100)
        self._ssn_samples = SpinBox(label="SSN MC samples", value=20, min=2, max=200, step=2)
        self._mask_background = CheckBox(
            text="Mask background (image = 0)",
            value=False,
            tooltip="Image = 0 (air around a brain): SSN zeroes the covariance, others leave it out of the loss.",
        )
        return [self._image, self._raters, self._target, self._method, self._model_size, self._dims,
                self._ensemble, self._dropout, self._ssn_rank, self._ssn_samples, self._mask_background]

    def _build_run_settings(self) -> list[Any]:
        """The schedule and output controls (epochs … device, seed, output folder, resume, predict on)."""
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
        return [self._epochs, self._steps, self._batch, self._patch, self._lr, self._device, self._seed,
                self._output, self._resume, self._predict_on]

    # settings --------------------------------------------------------------------------------------
    def configure(
        self,
        *,
        image: Any = None,
        raters: Any = None,
        head: str | None = None,
        loss: str | None = None,
        target: str | None = None,
        channels: Sequence[int] | None = None,
        spatial_dims: int | None = None,
        patch_size: Sequence[int] | None = None,
        device: str | None = None,
        predict_on: str | None = None,
        data_source: str | None = None,
        split_mode: str | None = None,
        **settings: Any,
    ) -> None:
        """Set the form; a keyword left ``None`` keeps that setting.

        Parameters
        ----------
        image, raters : layer or str, list of layers or str, optional
            The image and the rater Labels layers (objects or names).
        head, loss : str, optional
            Given together: one of the Model / loss pairs (:data:`METHODS`).
        target : str, optional
            A key of :data:`TARGET_LABELS`.
        channels : sequence of int, optional
            A U-Net size offered (:data:`MODEL_SIZES`), e.g. ``(8, 16, 32)``.
        spatial_dims : int, optional
            0 (as the data), 2 or 3.
        patch_size : sequence of int, optional
            ``()`` for automatic.
        device : str, optional
            One of the Device choices ("auto", "cpu", "cuda:0" …).
        predict_on : str, optional
            "image" or "raters".
        data_source : str, optional
            "layers" (the open layers) or "cohort" (load one with :meth:`load_cohort`).
        split_mode : str, optional
            A cohort's split: "fractions", "manifest" or "kfold".
        **settings
            ``ensemble_size``, ``dropout``, ``ssn_rank``, ``ssn_samples``, ``mask_background``,
            ``epochs``, ``steps_per_epoch``, ``batch_size``, ``learning_rate``, ``seed``,
            ``output_dir``, ``resume``; for a cohort ``val_fraction``, ``test_fraction``, ``folds``,
            ``fold`` and ``num_workers`` (the cohort itself is loaded by :meth:`load_cohort`).

        Raises
        ------
        ValueError
            A value the form cannot take (the message names it).
        """
        unknown = sorted(set(settings) - set(_PLAIN_SETTINGS))
        if unknown:
            raise TypeError(f"configure() got unexpected keywords {unknown}; expected some of "
                            f"{sorted(_PLAIN_SETTINGS)} besides the layer and model settings.")
        if image is not None or raters is not None:
            self.select_layers(image if image is not None else self._image.value,
                               raters if raters is not None else list(self._raters.value))
        if (head is None) != (loss is None):
            raise ValueError(f"head and loss go together; got head={head!r}, loss={loss!r}.")
        if head is not None:
            self.set_method(head, loss)
        if target is not None:
            self._target.value = _choice_value("target", target, list(TARGET_LABELS))
        if channels is not None:
            self._model_size.value = self._size_for(tuple(int(c) for c in channels))
        if spatial_dims is not None:
            self._dims.value = _choice_value("spatial_dims", spatial_dims, [v for _, v in DIMENSIONS])
        if patch_size is not None:
            self._patch.value = ", ".join(str(int(v)) for v in patch_size)
        if device is not None:
            self._device.value = _choice_value("device", device, list(self._device.choices))
        if predict_on is not None:
            self._predict_on.value = _choice_value("predict_on", predict_on, [v for _, v in PREDICT_REGIONS])
        if data_source is not None:
            self._source.value = _choice_value("data_source", data_source, [v for _, v in DATA_SOURCES])
        if split_mode is not None:
            self._split_mode.value = _choice_value("split_mode", split_mode, [v for _, v in SPLIT_CHOICES])
        for key, value in settings.items():
            if value is not None:
                attribute, convert = _PLAIN_SETTINGS[key]
                getattr(self, attribute).value = convert(value)

    @staticmethod
    def _size_for(channels: tuple[int, ...]) -> str:
        for name, (offered, _) in MODEL_SIZES.items():
            if offered == channels:
                return name
        raise ValueError(f"channels must be one of {[c for c, _ in MODEL_SIZES.values()]} "
                         f"(the U-Net sizes offered), got {channels}.")

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
            patch_size=parse_patch_size(self._patch.value),
            learning_rate=float(self._lr.value),
            device=self._device.value,
            seed=int(self._seed.value),
            background_mask=({"ssn": "covariance"}.get(head, "likelihood") if self._mask_background.value else "none"),
            output_dir=output_dir,
            **self._cohort_config(),
        )

    def _cohort_config(self) -> dict[str, Any]:
        """The TrainConfig settings only a cohort run takes (none for the open layers)."""
        return self.cohort_controls.config() if self.data_source == "cohort" else {}

    def _selected_arrays(self) -> tuple[Any, np.ndarray, np.ndarray, list[Any]]:
        """The image layer, its array, the ``(R, *S)`` rater stack and the rater layers; checked."""
        image_layer, layers = self._image.value, list(self._raters.value)
        image, raters = layer_arrays(image_layer, layers)
        return image_layer, image, raters, layers

    def collect_data(self) -> TrainingData:
        """Image and raters from the selected layers, with class names (metadata) and spacing (scale).

        Also records where a prediction goes: the image's geometry and case, and the crop that
        *Predict on* asks for.
        """
        from ..core.training import TrainingData

        image_layer, image, raters, layers = self._selected_arrays()
        class_names = (layers[0].metadata or {}).get("class_names")
        spatial = raters.ndim - 1
        geometry = Geometry.of(image_layer, ndim=spatial)
        self._geometry = geometry
        self._image_layer = image_layer
        self._image_shape = tuple(image.shape[-spatial:])
        self._case = case_of(image_layer)
        self._crop_start, self._crop = None, None
        if self._predict_on.value == "raters":
            self._crop_start, self._crop = foreground_box(raters, REGION_MARGIN)
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
        """Follow additions, removals and renames; keep the selected layers (they are layer objects).

        Rater layers (``metadata["rater"]``, from Load raters or the sample data) that are new since
        the last refresh join the selection when they belong to the chosen image's case: Load raters
        adds a case's raters one at a time, so all of them end up selected, whether Train was opened
        before or after (also while Train was on a cohort); a new rater of the selected raters' case
        joins them too. Without a selection, every rater layer of the image's case is selected
        (every rater layer when none is of that case). A rater the user left out stays out.
        """
        with self._image.changed.blocked(), self._raters.changed.blocked():
            self._image.reset_choices()
            self._raters.reset_choices()  # keeps the selected layers still present
            present = list(self._raters.choices)
            raters = [layer for layer in present if "rater" in (layer.metadata or {})]
            seen = getattr(self, "_seen_layers", None)
            if seen is None:
                seen = self._seen_layers = weakref.WeakSet()
            new = [layer for layer in raters if layer not in seen]
            seen.update(present)
            case = case_of(self._image.value)
            kept = list(self._raters.value)
            if not kept:  # default: the rater layers of the image's case (else every rater layer)
                kept = [layer for layer in raters if case_of(layer) == case] or raters
            else:  # a case's raters arrive one at a time (Load raters): the later ones join the first
                cases = {case} | {case_of(layer) for layer in kept if case_of(layer) is not None}
                kept += [layer for layer in new if case_of(layer) in cases and not any(layer is k for k in kept)]
                kept = [layer for layer in present if any(layer is k for k in kept)]  # layer-list order
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
        self._grid_label.visible = message is not None and self.data_source != "cohort"

    def _on_method_changed(self, _value: Any = None) -> None:
        is_ssn = METHODS[self._method.value][1][0] == "ssn"
        self._ssn_rank.visible = is_ssn
        self._ssn_samples.visible = is_ssn
