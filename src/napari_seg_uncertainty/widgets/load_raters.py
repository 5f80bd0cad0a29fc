"""Dock widget "Load raters": multi-rater annotations from files or Labels layers, with agreement statistics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, Select, Table

from ..core.raters import RaterSet, SummaryTable, load_raters
from ._common import (
    connect_layer_list_changes,
    layer_names,
    notify_errors,
    run_in_thread,
    show_error,
    show_info,
    show_warning,
    upsert_layer,
)

if TYPE_CHECKING:
    import napari

__all__ = ["LoadRatersWidget", "RaterStatistics", "compute_statistics"]

_AGREEMENT_COLORMAPS = ("green", "magenta", "cyan", "yellow", "red", "blue", "bop orange", "bop purple")


@dataclass
class RaterStatistics:
    """Everything the widget shows for one :class:`RaterSet`, computed off the GUI thread."""

    raters: RaterSet
    agreement: np.ndarray  # (C, *spatial)
    entropy: np.ndarray  # (*spatial)
    dice: np.ndarray  # (C, R, R)
    summary: SummaryTable
    warnings: list[str]


def compute_statistics(source: Any, *, spacing: tuple[float, ...] | None = None, **kwargs: Any) -> RaterStatistics:
    """Load ``source`` with :func:`load_raters` and compute the agreement statistics."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raters = load_raters(source, spacing=spacing, **kwargs)
    return RaterStatistics(
        raters=raters,
        agreement=raters.agreement_map(),
        entropy=raters.entropy_map(),
        dice=raters.pairwise_dice(),
        summary=raters.summary(),
        warnings=[str(w.message) for w in caught if issubclass(w.category, UserWarning)],
    )


def parse_spacing(text: str) -> tuple[float, ...] | None:
    """Parse ``"2.5, 1, 1"`` into a tuple; blank means "from the files"."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(float(v) for v in text.replace(";", ",").replace(" ", ",").split(",") if v)
    except ValueError as exc:
        raise ValueError(f"spacing {text!r} is not a list of numbers; write e.g. '2.5, 1, 1' (Z, Y, X) "
                         "or leave it blank to use the files' spacing.") from exc


class LoadRatersWidget(Container):
    """Load several raters' label maps and show how much they disagree.

    Sources: files, a folder (generic, QUBIQ or MSSEG-2016 layout), a glob pattern, a LIDC-style
    ``.npz``, or Labels layers already open. Adds each rater as a Labels layer (spacing → scale),
    a per-class agreement map and the rater entropy map as Image layers, and tables of pairwise
    Dice and per-class statistics.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.raters: RaterSet | None = None
        self.statistics: RaterStatistics | None = None
        self.worker: Any = None

        self._path = LineEdit(label="Files / folder", tooltip=(
            "A folder, a glob pattern (case1/rater_*.nii.gz), a .npz, or several files separated by ';'."))
        self._browse_files = PushButton(text="Browse files…")
        self._browse_folder = PushButton(text="Browse folder…")
        self._spacing = LineEdit(label="Spacing (Z, Y, X)", tooltip=(
            "Voxel size in mm, e.g. '2.5, 1, 1'. Leave blank to use the spacing stored in the files."))
        self._load_files = PushButton(text="Load files")
        self._layers = Select(label="Labels layers", choices=self._labels_layer_names, tooltip=(
            "Labels layers already open, one per rater (Ctrl/Shift-click to select several)."))
        self._use_layers = PushButton(text="Use selected layers")
        self._status = Label(value="No raters loaded.")
        self._dice_class = ComboBox(label="Pairwise Dice of", choices=[])
        self._dice_table = Table(value=[[]])
        self._summary_table = Table(value=[[]])

        self._browse_files.changed.connect(self._on_browse_files)
        self._browse_folder.changed.connect(self._on_browse_folder)
        self._load_files.changed.connect(self.load_from_path)
        self._use_layers.changed.connect(self.load_from_layers)
        self._dice_class.changed.connect(self._show_dice)
        self.max_width = 460
        self.extend([
            self._path, self._browse_files, self._browse_folder, self._spacing, self._load_files,
            self._layers, self._use_layers, self._status, self._dice_class, self._dice_table, self._summary_table,
        ])
        connect_layer_list_changes(viewer, self._refresh_layer_choices)

    # choices ----------------------------------------------------------------------------------------
    def _labels_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "labels")

    def _refresh_layer_choices(self, _event: Any = None) -> None:
        self._layers.reset_choices()

    # file dialogs -----------------------------------------------------------------------------------
    def _on_browse_files(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        files, _ = QFileDialog.getOpenFileNames(
            self.native, "Rater label files", "",
            "Label maps (*.nii *.nii.gz *.nrrd *.mha *.mhd *.tif *.tiff *.png *.npz);;All files (*)")
        if files:
            self._path.value = ";".join(files)

    def _on_browse_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "Folder of rater label files")
        if folder:
            self._path.value = folder

    # loading ----------------------------------------------------------------------------------------
    def load_from_path(self, path: str | None = None) -> Any:
        """Load raters from the path field (or ``path``) in a background thread; returns the worker."""
        if isinstance(path, str) and path:
            self._path.value = path
        text = self._path.value.strip()
        if not text:
            show_error("Load raters failed: no file or folder given. Type a path or use Browse.")
            return None
        with notify_errors("Load raters"):
            spacing = parse_spacing(self._spacing.value)
            source: Any = [p.strip() for p in text.split(";") if p.strip()] if ";" in text else text
            self._set_busy(True, f"Loading {text}…")
            self.worker = run_in_thread(
                compute_statistics, source, spacing=spacing, action="Load raters",
                returned=lambda stats: self._show(stats, add_rater_layers=True),
                errored=lambda exc: setattr(self._status, "value", f"Failed: {exc}"),
                finished=lambda: self._set_busy(False),
            )
            return self.worker
        self._set_busy(False)
        return None

    def load_from_layers(self, names: list[str] | None = None) -> RaterStatistics | None:
        """Use the selected Labels layers (or ``names``) as raters; computes in place and returns the statistics."""
        names = list(names) if names else list(self._layers.value)
        if not names:
            show_error("Load raters failed: no Labels layer selected. Select one layer per rater.")
            return None
        with notify_errors("Load raters from layers"):
            layers = [self._viewer.layers[n] for n in names]
            scales = {tuple(np.round(layer.scale, 9)) for layer in layers}
            if len(scales) > 1:
                raise ValueError(f"the selected layers have different scales {sorted(scales)}; raters must share "
                                 "one voxel spacing.")
            spacing = parse_spacing(self._spacing.value) or tuple(float(s) for s in layers[0].scale)
            meta = layers[0].metadata or {}
            class_names = meta.get("class_names")
            arrays = [np.asarray(layer.data) for layer in layers]
            try:
                stats = compute_statistics(arrays, spacing=spacing, rater_names=names, class_names=class_names)
            except ValueError as exc:
                if class_names is None or "class_names" not in str(exc):
                    raise
                stats = compute_statistics(arrays, spacing=spacing, rater_names=names)
            self._show(stats, add_rater_layers=False, translate=tuple(layers[0].translate))
            return stats
        return None

    def _set_busy(self, busy: bool, message: str | None = None) -> None:
        self._load_files.enabled = not busy
        self._use_layers.enabled = not busy
        if message is not None:
            self._status.value = message

    # display ----------------------------------------------------------------------------------------
    def _show(
        self, stats: RaterStatistics, *, add_rater_layers: bool, translate: tuple[float, ...] | None = None
    ) -> None:
        raters = stats.raters
        self.raters, self.statistics = raters, stats
        scale = raters.scale
        if translate is None:
            translate = raters.origin if raters.origin is not None else (0.0,) * raters.ndim
        geometry = {"scale": scale, "translate": translate}
        meta = {"class_names": raters.class_names, "spacing": list(scale)}
        if add_rater_layers:
            if raters.image is not None:
                upsert_layer(self._viewer, raters.image, name="image", layer_type="image", colormap="gray",
                             **geometry)
            for name, labels in zip(raters.rater_names, raters.labels):
                layer = upsert_layer(self._viewer, labels, name=name, layer_type="labels", opacity=0.8,
                                     metadata={**meta, "rater": name}, **geometry)
                if raters.num_raters > 1:
                    layer.contour = 1  # outlines: every rater and the image stay visible at once
        for k in range(1, raters.num_classes):
            upsert_layer(self._viewer, stats.agreement[k], name=f"agreement: {raters.class_names[k]}",
                         layer_type="image", colormap=_AGREEMENT_COLORMAPS[(k - 1) % len(_AGREEMENT_COLORMAPS)],
                         contrast_limits=(0.0, 1.0), blending="additive", visible=False,
                         metadata={**meta, "class": k}, **geometry)
        upsert_layer(self._viewer, stats.entropy, name="rater entropy", layer_type="image", colormap="magma",
                     contrast_limits=(0.0, 1.0), blending="additive", metadata=meta, **geometry)
        self._dice_class.choices = [(f"{k}: {n}", k) for k, n in enumerate(raters.class_names)]
        self._dice_class.value = 1 if raters.num_classes > 1 else 0
        self._show_dice()
        self._summary_table.value = {
            "data": [[_cell(row[c]) for c in stats.summary.columns[1:]] for row in stats.summary.rows],
            "index": [str(row["class"]) for row in stats.summary.rows],
            "columns": stats.summary.columns[1:],
        }
        self._status.value = (f"{raters.num_raters} raters, {raters.num_classes} classes, shape {raters.shape}, "
                              f"spacing {tuple(round(s, 4) for s in scale)}")
        for message in stats.warnings:
            show_warning(message)
        show_info(f"Loaded {raters.num_raters} raters ({', '.join(raters.rater_names)}).")

    def _show_dice(self, _value: Any = None) -> None:
        if self.statistics is None or self._dice_class.value is None:
            return
        k = int(self._dice_class.value)
        names = self.statistics.raters.rater_names
        self._dice_table.value = {
            "data": [[round(float(v), 4) for v in row] for row in self.statistics.dice[k]],
            "index": names,
            "columns": names,
        }


def _cell(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value
