"""Dock widget "Load raters": multi-rater annotations from files or Labels layers, with agreement statistics.

The loading and the statistics are :mod:`napari_seg_uncertainty.workflow.rater_statistics`; this module
shows them: the image, each rater as a Labels layer in its own colour, the agreement and entropy maps,
the pairwise Dice and per-class volume tables.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, Table
from qtpy.QtWidgets import QSizePolicy

from .._sample_data import case_layer_specs, image_contrast_limits, map_layer_specs
from ..core._memory import array_bytes, format_bytes
from ..core.geometry import Geometry
from ..core.raters import RaterSet, load_raters, qubiq_tasks
from ..workflow.rater_statistics import (
    RaterStatistics,
    compute_statistics,
    describe_raters,
    parse_class_names,
    parse_spacing,
    volume_unit,
)
from ._base import DockWidget
from ._case import CASE_KEY, KEPT_KEY, begin_case, case_name_for, case_of, current_case
from ._common import check_memory, notify_errors, show_error, show_info, show_warning, upsert_layer
from ._layer_choices import is_labels_layer, labels_problem
from ._layer_queue import keep_selection, release_data, remove_layers, without_full_collection
from ._tables import fit_rows, fit_table, format_number, table_cell

if TYPE_CHECKING:
    import napari

__all__ = ["LoadRatersWidget"]

#: Width of the dock's content (px): the tables fit it without horizontal scrolling for up to 4 raters.
_DOCK_WIDTH = 330


def load_checked(source: Any, *, from_layers: bool = False, spacing: Any = None, class_names: Any = None,
                 **kwargs: Any) -> tuple[RaterStatistics, tuple[str, float]]:
    """The dock's worker: load ``source`` and compute the statistics, refusing with a clear message (an
    :class:`~napari_seg_uncertainty.core._memory.OutputTooLargeError`) what would not fit in the free memory —
    the files before reading them (from their headers), the maps before computing them. Also does, off the GUI
    thread, what showing the result needs: the image's display range, the volume unit, the napari warm-up.

    Returns the statistics and the summary table's volume unit and factor (:func:`volume_unit`).
    """
    if not from_layers:
        check_files_memory(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raters = load_raters(source, spacing=spacing, class_names=class_names, **kwargs)
        except ValueError as exc:  # layers drawn with more classes than their metadata names: names dropped
            if not from_layers or class_names is None or "class_names" not in str(exc):
                raise
            raters = load_raters(source, spacing=spacing, **kwargs)
    check_statistics_memory(raters)
    stats = compute_statistics(raters)
    stats.warnings[:0] = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    image = stats.raters.image
    stats.image_limits = image_contrast_limits(image) if image is not None else None
    unit = volume_unit(raters)  # scans every rater map: not on the GUI thread
    _prepare_layer_modules()
    return stats, unit


def statistics_bytes(raters: RaterSet) -> int:
    """Estimated peak memory (bytes) of the statistics of ``raters``: the agreement maps ``(C, *spatial)`` and the
    entropy map, float32, and one more map for temporaries (the core counts votes slab by slab)."""
    per_map = array_bytes(tuple(raters.shape), np.float32)
    return (raters.num_classes + 2) * per_map


def check_statistics_memory(raters: RaterSet) -> None:
    """Refuse (OutputTooLargeError, a ValueError) statistics of ``raters`` that would not fit in the free memory."""
    check_memory(
        statistics_bytes(raters),
        what=f"the agreement and entropy maps ({raters.num_classes + 1} float32 maps of "
        f"{format_bytes(array_bytes(raters.shape, np.float32))} each) and their temporaries",
        cause=f"{raters.num_raters} raters of {'×'.join(str(v) for v in raters.shape)} voxels, "
        f"{raters.num_classes} classes",
        advice="nothing was added and your layers are unchanged; close layers you no longer need (or other "
        "programs), or crop the label maps to the region of interest")


#: File suffixes whose headers SimpleITK reads without the voxels.
_HEADER_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def files_bytes(source: Any) -> tuple[int, int] | None:
    """(bytes of voxel data, number of files) of the label and image files ``source`` names (a folder, a glob
    pattern or a list of files), from their headers; ``None`` when ``source`` is something else."""
    import glob

    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
    elif isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        paths = [os.path.join(source, name) for name in sorted(os.listdir(source))]
    elif isinstance(source, str) and any(c in source for c in "*?["):
        paths = sorted(glob.glob(source))
    else:
        return None
    paths = [p for p in paths if p.lower().endswith(_HEADER_SUFFIXES) and os.path.isfile(p)]
    if not paths:
        return None
    import SimpleITK as sitk

    total = 0
    for path in paths:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None  # not readable as an image: the loader says why
        text = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        bits = int(text.split("-bit")[0].split()[-1]) if "-bit" in text else 64
        voxels = int(np.prod(reader.GetSize(), dtype=np.int64)) * max(1, reader.GetNumberOfComponents())
        total += voxels * bits // 8
    return total, len(paths)


def check_files_memory(source: Any) -> None:
    """Refuse (OutputTooLargeError) files whose voxels, read and converted once, would not fit in the free memory."""
    found = files_bytes(source)
    if found is None:
        return
    nbytes, count = found
    check_memory(
        2 * nbytes, what=f"reading them (their voxels take {format_bytes(nbytes)}; read and converted once)",
        cause=f"{count} files",
        advice="nothing was read and your layers are unchanged; close layers you no longer need (or other "
        "programs), or load a cropped region")


def _prepare_layer_modules() -> None:
    """Do in the worker what napari does on the GUI thread when the first layers are created — import
    pandas and scikit-image's colour code, build pint's unit registry (≈1.5 s together) — so that it
    does not stall the event loop later."""
    import importlib

    for module in ("pandas", "skimage.color"):
        try:
            importlib.import_module(module)
        except ImportError:  # pragma: no cover - optional for napari, nothing to warm
            pass
    try:
        import pint

        pint.get_application_registry().Unit("mm")  # the lazy registry is built on first use
    except Exception:  # noqa: BLE001 - warming only; napari builds it when it needs it
        pass


class LoadRatersWidget(DockWidget):
    """Load several raters' label maps and show how much they disagree.

    Sources: files, a folder (generic, QUBIQ or MSSEG-2016 layout), a glob pattern, a LIDC-style
    ``.npz``, or Labels layers already open. Adds the image, each rater as a Labels layer in its own
    colour and the per-class agreement maps and the rater entropy map, all placed by the files'
    spacing, origin and direction, plus tables of pairwise Dice and per-class volumes.

    One case at a time: loading another case from files removes the previous case's layers (or,
    with *Keep previous case*, hides them under that case's name). Everything is computed in a
    worker thread and the layers are added one per event-loop turn, so the window never freezes.
    Files whose voxels (read from their headers) or statistics would not fit in the free memory are
    refused with a notification naming the size, the estimate and what to do; nothing shown changes.
    :meth:`load_from_path` and :meth:`load_from_layers` return their worker (``None`` on bad input)
    and emit :attr:`computed` with the :class:`RaterStatistics` once everything is shown.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer to load into (napari passes it in).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, status="No raters loaded.")
        self.raters: RaterSet | None = None
        self.statistics: RaterStatistics | None = None
        self._shown: RaterStatistics | None = None  # what the tables show (kept while another case loads)
        self._tasks: list[int] = []
        self._failing = ""  # the layer being added, for the message if adding it fails
        self._units: dict[int, tuple[str, float]] = {}  # volume unit of statistics being shown (computed in the worker)
        browse = self._build_controls()
        # built with its widgets: magicgui then leaves each row's label its own width (it evens them out
        # for widgets added later), so the unlabelled tables keep the dock's full width
        self.content = Container(labels=True, widgets=[
            self._path, browse, self._task, self._spacing, self._class_names, self._keep_previous,
            self._load_files, self._layers, self._use_layers, self._progress, self._status, self._legend,
            self._dice_class, self._dice_table, self._summary_table,
        ])
        self.disable_while_busy(self._load_files, self._use_layers)
        self.finish_layout(min_width=_DOCK_WIDTH, min_height=240)
        self._style()
        self._refresh_tasks()

    def _build_controls(self) -> Container:
        self._path = LineEdit(label="Files / folder", tooltip=(
            "A folder, a glob pattern (case1/rater_*.nii.gz), a .npz, or several files separated by ';'."))
        self._browse_files = PushButton(text="Files…", tooltip="Choose the raters' label files.")
        self._browse_folder = PushButton(text="Folder…", tooltip="Choose a folder with one label file per rater.")
        browse = Container(layout="horizontal", labels=False, widgets=[self._browse_files, self._browse_folder],
                           label="Browse")
        browse.margins = (0, 0, 0, 0)
        self._task = ComboBox(label="QUBIQ task", choices=self._task_choices, tooltip=(
            "QUBIQ case folders hold one set of raters per task (task01_seg01 …): choose the task to load."))
        self._spacing = LineEdit(label="Spacing (Z, Y, X)", tooltip=(
            "Voxel size in mm, e.g. '2.5, 1, 1'. Leave blank to use the spacing stored in the files."))
        self._class_names = LineEdit(label="Class names", tooltip=(
            "Optional: one name per class, background first, e.g. 'background, organ, lesion'."))
        self._keep_previous = CheckBox(text="Keep previous case", value=False, tooltip=(
            "Off: loading a case from files removes the previous case's layers (image, raters, soft labels, "
            "predictions, maps). On: they stay, hidden, renamed '<case>: <layer>'."))
        self._load_files = PushButton(text="Load files")
        self._layers = self.layer_select(is_labels_layer, explain=labels_problem, label="Labels layers", tooltip=(
            "Labels layers already open, one per rater (Ctrl/Shift-click to select several)."), max_height=90)
        self._use_layers = PushButton(text="Use selected layers")
        self._progress = ProgressBar(label="", value=0, min=0, max=1, visible=False)
        self._legend = Label(value="")
        self._dice_class = ComboBox(label="Pairwise Dice of", choices=self._dice_choices)
        self._dice_table = Table(value=[[]])
        self._summary_table = Table(value=[[]])
        self._browse_files.changed.connect(self._on_browse_files)
        self._browse_folder.changed.connect(self._on_browse_folder)
        self._path.changed.connect(self._refresh_tasks)
        self._load_files.changed.connect(lambda _value=None: self.load_from_path())
        self._use_layers.changed.connect(lambda _value=None: self.load_from_layers())
        self._dice_class.changed.connect(self._show_dice)
        return browse

    def _style(self) -> None:
        self.margins = (0, 0, 0, 0)
        for label in (self._status, self._legend):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        for table in (self._dice_table, self._summary_table):
            fit_table(table, min_height=60)

    def reset_choices(self, *_args: Any) -> None:
        """Refresh every dropdown (napari calls this when layers change); the Dice classes stay."""
        self.content.reset_choices()

    def set_busy(self, busy: bool, message: str | None = None) -> None:
        """Enter or leave the busy state; the progress bar shows while busy."""
        super().set_busy(busy, message)
        self._progress.visible = busy
        if busy:
            self._progress.value = 0

    # choices ----------------------------------------------------------------------------------------
    def _dice_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        """Class names of the statistics on show: never emptied by napari's reset of the dock's choices."""
        if self._shown is None:
            return []
        return list(zip(self._shown.raters.class_names, range(self._shown.raters.num_classes)))

    def _task_choices(self, _widget: Any = None) -> list[tuple[str, int | None]]:
        if not self._tasks:
            return [("(not a QUBIQ folder)", None)]
        return [(f"task {t:02d}", t) for t in self._tasks]

    def _refresh_tasks(self, _value: Any = None) -> None:
        text = self._path.value.strip()
        tasks = qubiq_tasks(text) if text and ";" not in text else []
        if tasks != self._tasks:
            self._tasks = tasks
            self._task.reset_choices()
        self._task.enabled = bool(tasks)

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
    def load_from_path(
        self,
        path: str | os.PathLike | None = None,
        *,
        task: int | None = None,
        spacing: Sequence[float] | str | None = None,
        class_names: Sequence[str] | str | None = None,
        keep_previous: bool | None = None,
    ) -> Any:
        """Load raters from the path field (or ``path``) in a background thread; returns the worker (or None).

        ``path``: a folder, a glob pattern, a ``.npz`` or several files separated by ``;``. ``task``
        picks the QUBIQ task; ``spacing`` (Z, Y, X in mm) and ``class_names`` (background first)
        override the files'. The previous case's layers are replaced (or kept hidden with
        ``keep_previous``) once the new case has loaded; a failed load leaves everything as it was.
        :attr:`computed` is emitted with the :class:`RaterStatistics` once the case is shown.
        """
        self.apply([(self._path, str(path) if path else None), (self._spacing, _as_text(spacing)),
                    (self._class_names, _as_text(class_names)), (self._keep_previous, keep_previous)])
        if task is not None:
            self._refresh_tasks()
            self._task.value = task
        text = self._path.value.strip()
        if not text:
            show_error("Load raters failed: no file or folder given. Type a path or use Browse.")
            return None
        with notify_errors("Load raters"):
            kwargs: dict[str, Any] = {"spacing": parse_spacing(self._spacing.value),
                                      "class_names": parse_class_names(self._class_names.value)}
            source: Any = [p.strip() for p in text.split(";") if p.strip()] if ";" in text else text
            case = case_name_for(source)
            if self._tasks and self._task.value is not None:
                kwargs["task"] = int(self._task.value)
                if len(self._tasks) > 1:
                    case = f"{case} task {int(self._task.value):02d}"
            return self._start(load_checked, source, action="Load raters",
                               message=f"Loading {case}: reading the files…",
                               present=lambda stats: self._present(stats, case=case, from_files=True), **kwargs)
        return None

    def load_from_layers(
        self,
        layers: Sequence[Any] | None = None,
        *,
        spacing: Sequence[float] | str | None = None,
        class_names: Sequence[str] | str | None = None,
    ) -> Any:
        """Use the selected Labels layers (or ``layers``: layers or layer names) as raters; returns the worker.

        The statistics are computed in a background thread; the layers are neither changed nor removed —
        only the agreement and entropy maps are added. ``spacing`` and ``class_names`` as in
        :meth:`load_from_path`. :attr:`computed` is emitted with the :class:`RaterStatistics` once shown.
        """
        self.apply([(self._spacing, _as_text(spacing)), (self._class_names, _as_text(class_names))])
        chosen = list(layers) if layers else list(self._layers.value)
        if not chosen:
            show_error("Load raters failed: no Labels layer selected. Select one layer per rater.")
            return None
        with notify_errors("Load raters from layers"):
            layers = [self._find_layer(c) for c in chosen]
            order = {id(layer): i for i, layer in enumerate(self._viewer.layers)}
            layers.sort(key=lambda layer: order.get(id(layer), len(order)))  # raters in layer-list order
            scales = {tuple(np.round(layer.scale, 9)) for layer in layers}
            if len(scales) > 1:
                raise ValueError(f"the selected layers have different scales {sorted(scales)}; raters must share "
                                 "one voxel spacing.")
            geometry = Geometry.of(layers[0])
            spacing_ = parse_spacing(self._spacing.value) or geometry.spacing
            names = parse_class_names(self._class_names.value)
            if names is None:
                names = (layers[0].metadata or {}).get("class_names")
            case = next((case_of(layer) for layer in layers if case_of(layer)), None) \
                or current_case(self._viewer) or "layers"
            names_ = [layer.name for layer in layers]
            arrays = [np.asarray(layer.data) for layer in layers]  # read in place by the worker
            strokes = _Strokes(layers)

            def present(stats: RaterStatistics) -> None:
                if strokes.count:  # a rater painted while the worker read it: its statistics may mix both
                    self.set_status("A rater layer was painted while it was read; loading it again…")
                    self.load_from_layers(layers)
                else:
                    self._present(stats, case=case, from_files=False, geometry=geometry)

            return self._start(load_checked, arrays, from_layers=True, spacing=spacing_, rater_names=names_,
                               class_names=names, action="Load raters from layers", finished=strokes.stop,
                               message=f"Computing the statistics of {len(layers)} layers…", present=present)
        return None

    def _find_layer(self, choice: Any) -> Any:
        if isinstance(choice, str):
            if choice not in self._viewer.layers:
                raise ValueError(f"there is no layer named {choice!r}; select the raters' Labels layers.")
            return self._viewer.layers[choice]
        if choice not in self._viewer.layers:
            raise ValueError(f"layer {getattr(choice, 'name', choice)!r} is no longer in the viewer.")
        return choice

    def _start(self, func: Callable[..., tuple[RaterStatistics, tuple[str, float]]], *args: Any, action: str,
               message: str, present: Callable[[RaterStatistics], None], **kwargs: Any) -> Any:
        """Compute ``func(*args, **kwargs)`` in a worker; ``present`` gets the result (an older load's is dropped)."""
        # held only until the worker ends: the worker (kept in self.worker) holds these callbacks, and a CT case's
        # statistics (maps of 1.3 GB) must not outlive their replacement
        previous = [self.statistics if self.statistics is not None else self._shown]
        self.statistics = None  # "not loaded yet"
        self._queue.cancel()

        def restore(_exc: BaseException) -> None:
            self.statistics = previous.pop() if previous else None

        def returned(loaded: tuple[RaterStatistics, tuple[str, float]]) -> None:
            previous.clear()
            stats, self._units[id(stats)] = loaded
            if self.alive():
                present(stats)

        return self.run(func, *args, action=action, message=message, returned=returned, errored=restore, **kwargs)

    # display: one layer per event-loop turn ------------------------------------------------------------
    def _present(self, stats: RaterStatistics, *, case: str, from_files: bool,
                 geometry: Geometry | None = None) -> None:
        raters = stats.raters
        geometry = geometry if geometry is not None else Geometry.of(raters)
        if geometry.spacing != raters.scale:  # the spacing field overrides the layers' scale
            geometry = Geometry(spacing=raters.scale, origin=geometry.origin, direction=geometry.direction)
        steps: list[tuple[str, Callable[[], None]]] = []
        if from_files:
            keep = bool(self._keep_previous.value)
            specs = case_layer_specs(raters, stats.agreement, stats.entropy, outlines=True,
                                     contrast_limits=stats.image_limits)
            new = {kwargs["name"]: (data, kind) for data, kwargs, kind in specs}
            steps.append(("previous case", lambda: self._begin_case(case, keep=keep, new=new)))
        else:
            specs = map_layer_specs(raters, stats.agreement, stats.entropy)
            names = {kwargs["name"] for _, kwargs, _ in specs}
            steps.append(("old maps", lambda: self._remove_stale_maps(names)))
        outline = raters.num_raters > 1
        for data, kwargs, kind in specs:
            steps.append((kwargs["name"], lambda d=data, k=kwargs, t=kind: self._add_layer(
                d, k, t, geometry=geometry, case=case, outline=outline)))
        if not from_files:
            maps = [kwargs["name"] for _, kwargs, _ in specs]
            steps.append(("layer order", lambda: self._maps_below_raters(maps, raters.rater_names)))
        else:  # the layers were added without selecting each (keep_selection): select the top rater once
            steps.append(("selection", lambda: self._select_if_none(raters.rater_names)))
        self._progress.max = len(steps)
        self._queue.run([self._step(i, name, job) for i, (name, job) in enumerate(steps)],
                        done=lambda: self._finish(stats))

    def _step(self, index: int, name: str, job: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            self._progress.value = index + 1
            self._status.value = f"Adding layers… ({name})"
            self._failing = name
            job()

        return run

    def _on_show_failed(self, exc: BaseException) -> None:
        self.fail(f"could not add the layer {self._failing!r}: {exc}")

    def _add_layer(self, data: Any, kwargs: dict[str, Any], kind: str, *, geometry: Geometry, case: str,
                   outline: bool) -> None:
        kwargs = dict(kwargs)
        name = kwargs.pop("name")
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if existing is not None and case_of(existing) is None and not (existing.metadata or {}).get("rater_map"):
            name, existing = f"{case}: {name}", None  # never overwrite a layer the user opened or drew
        colour = (existing.metadata or {}).get("rater_color") if existing is not None else None
        with keep_selection(self._viewer):  # no switch of napari's layer controls per layer added
            layer = upsert_layer(self._viewer, data, name=name, layer_type=kind, geometry=geometry, case=case,
                                 **kwargs)
        if kind == "labels":
            # each setter redraws the slice: only what an updated-in-place layer does not have yet
            if layer is existing and colour != kwargs["metadata"]["rater_color"]:
                layer.colormap = kwargs["colormap"]
            if outline and layer.contour != 1:
                layer.contour = 1  # outlines: every rater and the image stay visible at once

    def _begin_case(self, case: str, *, keep: bool, new: dict[str, tuple[Any, str]]) -> None:
        """:func:`begin_case`, in one batch (napari runs a full garbage collection per removed layer otherwise).

        When the previous case is replaced, its layers that the new case brings again under the same name
        and kind (image, raters, maps) are updated in place by the next steps instead of being removed
        and created again, which is several times faster; every other layer of the previous case goes.
        """
        reused = []
        if not keep:
            for layer in self._viewer.layers:
                meta = layer.metadata or {}
                data, kind = new.get(layer.name, (None, None))
                if (data is not None and case_of(layer) is not None and not meta.get(KEPT_KEY)
                        and type(layer).__name__.lower() == kind and layer.data.ndim == data.ndim):
                    layer.metadata = {k: v for k, v in meta.items() if k != CASE_KEY}  # begin_case leaves it
                    reused.append(layer)
        leaving = [layer for layer in self._viewer.layers if case_of(layer) is not None
                   and not (layer.metadata or {}).get(KEPT_KEY)]
        if leaving and not keep:
            release_data(leaving)  # the previous case's arrays freed now, not at the next garbage collection
            with without_full_collection(), self._viewer.layers.batched_update():
                begin_case(self._viewer, case, keep_previous=keep)
        else:
            begin_case(self._viewer, case, keep_previous=keep)  # nothing removed: no batch (its end collects)
        for layer in reused:  # tagged again at once; the next steps replace its data
            layer.metadata = {**(layer.metadata or {}), CASE_KEY: case}

    def _select_if_none(self, names: list[str]) -> None:
        """Make the last of ``names`` the active layer when nothing is selected (its controls are shown)."""
        layers = self._viewer.layers
        present = [name for name in names if name in layers]
        if present and not layers.selection:
            layers.selection.active = layers[present[-1]]

    def _maps_below_raters(self, maps: list[str], raters: list[str]) -> None:
        """Move the new maps just below the lowest rater layer, so the raters' outlines are drawn over them."""
        layers = self._viewer.layers
        below = [layers.index(name) for name in raters if name in layers]
        if not below:
            return
        for name in maps:
            if name in layers and layers.index(name) > min(below):
                layers.move(layers.index(name), min(below))
                below = [layers.index(n) for n in raters if n in layers]

    def _remove_stale_maps(self, keep: set[str]) -> None:
        """Remove agreement/entropy maps this widget added earlier that the new statistics do not replace."""
        remove_layers(self._viewer, [layer for layer in self._viewer.layers if (layer.metadata or {}).get("rater_map")
                                     and not (layer.metadata or {}).get(KEPT_KEY) and layer.name not in keep])

    def _finish(self, stats: RaterStatistics) -> None:
        raters = stats.raters
        self.raters = raters
        self._shown = stats
        self._dice_class.reset_choices()
        self._dice_class.value = 1 if raters.num_classes > 1 else 0
        self._show_dice()
        self._show_summary(stats)
        self._legend.value = self._legend_html(raters)
        self.statistics = stats
        self.done(stats, describe_raters(raters))
        for message in stats.warnings:
            show_warning(message)
        show_info(f"Loaded {raters.num_raters} raters ({', '.join(raters.rater_names)}).")

    def _legend_html(self, raters: RaterSet) -> str:
        items = []
        for i, name in enumerate(raters.rater_names):
            layer = self._viewer.layers[name] if name in self._viewer.layers else None
            color = (layer.metadata or {}).get("rater_color") if layer is not None else None
            label = f"<b>R{i + 1}</b> {_html(name)}"
            # a rater drawn in its own colour (loaded from files); the user's own layers keep their colours
            items.append(f'<span style="color:{color}">■ {label}</span>' if color else label)
        return "Raters: " + " &nbsp; ".join(items)

    def _show_dice(self, _value: Any = None) -> None:
        stats = self._shown
        if stats is None or self._dice_class.value is None:
            return
        k = int(self._dice_class.value)
        names = stats.raters.rater_names
        self._dice_table.value = {
            "data": [[table_cell(v) for v in row] for row in stats.dice[k]],
            "index": names,
            "columns": [f"R{i + 1}" for i in range(len(names))],
        }
        fit_rows(self._dice_table)

    def _show_summary(self, stats: RaterStatistics) -> None:
        raters = stats.raters
        unit, factor = self._units.pop(id(stats), None) or volume_unit(raters)
        self._units.clear()
        rows = []
        for row in stats.summary.rows:
            rows.append([format_number(row["mean_volume"] * factor), format_number(row["std_volume"] * factor),
                         str(row["raters_empty"]), format_number(row["mean_pairwise_dice"]),
                         format_number(row["min_pairwise_dice"])])
        self._summary_table.value = {
            "data": rows,
            "index": [str(row["name"]) for row in stats.summary.rows],
            "columns": [unit, "± sd", "empty", "Dice", "min"],
        }
        self._summary_table.native.setToolTip(
            f"Per class: mean rater volume ({unit}) and its standard deviation over raters, how many raters "
            "left the class empty, mean and lowest pairwise Dice.")
        fit_rows(self._summary_table)


class _Strokes:
    """Counts the paint strokes in ``layers`` until :meth:`stop` (rater layers a worker reads in place)."""

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers, self.count = tuple(layers), 0
        for layer in self.layers:
            layer.events.paint.connect(self._on_paint)

    def _on_paint(self, _event: Any = None) -> None:
        self.count += 1

    def stop(self) -> None:
        for layer in self.layers:
            with contextlib.suppress(Exception):  # a layer deleted meanwhile
                layer.events.paint.disconnect(self._on_paint)


def _as_text(value: Sequence[Any] | str | None) -> str | None:
    """What a text field holds for ``value``: the text itself, or the items separated by ", "."""
    if value is None or isinstance(value, str):
        return value
    return ", ".join(str(v) for v in value)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
