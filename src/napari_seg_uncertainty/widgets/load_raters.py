"""Dock widget "Load raters": multi-rater annotations from files or Labels layers, with agreement statistics."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, LineEdit, ProgressBar, PushButton, Table
from qtpy.QtWidgets import QAbstractItemView, QSizePolicy, QStyledItemDelegate

from .._sample_data import case_layer_specs, image_contrast_limits, map_layer_specs
from ..core.geometry import Geometry
from ..core.raters import RaterSet, SummaryTable, load_raters, qubiq_tasks
from ._case import CASE_KEY, KEPT_KEY, begin_case, case_name_for, case_of, current_case
from ._common import (
    notify_errors,
    run_in_thread,
    show_error,
    show_info,
    show_warning,
    tabify_when_docked,
    unwrap_viewer,
    upsert_layer,
)
from ._layer_choices import LayerWatcher, is_labels_layer, labels_problem
from ._layer_queue import LayerQueue
from ._layer_select import LayerSelect
from ._layout import scroll_area_for
from ._tables import fit_table

if TYPE_CHECKING:
    import napari

__all__ = ["LoadRatersWidget", "RaterStatistics", "compute_statistics", "format_number", "volume_unit"]

#: Width of the dock's content (px): the tables fit it without horizontal scrolling for up to 4 raters.
_DOCK_WIDTH = 330


@dataclass
class RaterStatistics:
    """Everything the widget shows for one :class:`RaterSet`, computed off the GUI thread."""

    raters: RaterSet
    agreement: np.ndarray  # (C, *spatial)
    entropy: np.ndarray  # (*spatial)
    dice: np.ndarray  # (C, R, R)
    summary: SummaryTable
    warnings: list[str]
    image_limits: tuple[float, float] | None = None  # contrast limits of raters.image


def compute_statistics(source: Any, *, spacing: tuple[float, ...] | None = None, **kwargs: Any) -> RaterStatistics:
    """Load ``source`` with :func:`load_raters` and compute the agreement statistics."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        raters = load_raters(source, spacing=spacing, **kwargs)
    _prepare_layer_modules()
    return RaterStatistics(
        raters=raters,
        agreement=raters.agreement_map(),
        entropy=raters.entropy_map(),
        dice=raters.pairwise_dice(),
        summary=raters.summary(),
        warnings=[str(w.message) for w in caught if issubclass(w.category, UserWarning)],
        image_limits=image_contrast_limits(raters.image) if raters.image is not None else None,
    )


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


def parse_class_names(text: str) -> list[str] | None:
    """Parse ``"background, organ, lesion"``; blank means "class 1, class 2 …"."""
    names = [n.strip() for n in text.split(",")]
    if not any(names):
        return None
    if not all(names):
        raise ValueError(f"class names {text!r} has an empty name; write one name per class, background first, "
                         "separated by commas, e.g. 'background, organ, lesion'.")
    return names


def format_number(value: float) -> str:
    """A number for a table cell or status line: at most 3 decimals, never an exponent (``1,055,000``)."""
    value = float(value)
    if not math.isfinite(value):
        return "–"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude == 0:
        return "0"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}" if magnitude >= 0.001 else f"{value:.1g}"


def volume_unit(raters: RaterSet) -> tuple[str, float]:
    """Unit of the volume column and the factor from spacing units (mm³ or mm²): ml for 3-D volumes
    of a millilitre and more, mm³ for smaller ones, mm² for 2-D areas, voxels without a spacing."""
    if raters.spacing is None:
        return "voxels", 1.0 / raters.voxel_volume
    if raters.ndim == 2:
        return "mm²", 1.0
    counts = [np.count_nonzero(raters.labels == k) / raters.num_raters for k in range(1, raters.num_classes)]
    largest = max(counts, default=0.0) * raters.voxel_volume
    return ("ml", 1e-3) if largest >= 1000.0 else ("mm³", 1.0)


class LoadRatersWidget(Container):
    """Load several raters' label maps and show how much they disagree.

    Sources: files, a folder (generic, QUBIQ or MSSEG-2016 layout), a glob pattern, a LIDC-style
    ``.npz``, or Labels layers already open. Adds the image, each rater as a Labels layer in its own
    colour and the per-class agreement maps and the rater entropy map, all placed by the files'
    spacing, origin and direction, plus tables of pairwise Dice and per-class volumes.

    One case at a time: loading another case from files removes the previous case's layers (or,
    with *Keep previous case*, hides them under that case's name). Everything is computed in a
    worker thread and the layers are added one per event-loop turn, so the window never freezes.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self._viewer = viewer
        self.raters: RaterSet | None = None
        self.statistics: RaterStatistics | None = None
        self.worker: Any = None
        self.busy = False
        self._shown: RaterStatistics | None = None  # what the tables show (kept while another case loads)
        self._request = 0
        self._tasks: list[int] = []
        self._failing = ""  # the layer being added, for the message if adding it fails

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
        self._layers = LayerSelect(viewer, is_labels_layer, explain=labels_problem, label="Labels layers", tooltip=(
            "Labels layers already open, one per rater (Ctrl/Shift-click to select several)."))
        self._use_layers = PushButton(text="Use selected layers")
        self._progress = ProgressBar(label="", value=0, min=0, max=1, visible=False)
        self._status = Label(value="No raters loaded.")
        self._legend = Label(value="")
        self._dice_class = ComboBox(label="Pairwise Dice of", choices=self._dice_choices)
        self._dice_table = Table(value=[[]])
        self._summary_table = Table(value=[[]])

        self._browse_files.changed.connect(self._on_browse_files)
        self._browse_folder.changed.connect(self._on_browse_folder)
        self._path.changed.connect(self._refresh_tasks)
        self._load_files.changed.connect(self.load_from_path)
        self._use_layers.changed.connect(self.load_from_layers)
        self._dice_class.changed.connect(self._show_dice)
        #: Every control, in a scroll area (:attr:`scroll`) inside what napari docks: the dock scrolls on a
        #: small screen instead of growing the window.
        self.content = Container(labels=True, widgets=[
            self._path, browse, self._task, self._spacing, self._class_names, self._keep_previous,
            self._load_files, self._layers, self._use_layers, self._progress, self._status, self._legend,
            self._dice_class, self._dice_table, self._summary_table,
        ])
        self._style()
        self._refresh_tasks()
        self._watcher = LayerWatcher(viewer, self._layers.reset_choices, owner=self.native)
        self._queue = LayerQueue(self.native, failed=self._on_show_failed)  # one layer per event-loop turn
        tabify_when_docked(self.native)

    def _style(self) -> None:
        self.scroll = scroll_area_for(self, self.content, min_width=_DOCK_WIDTH, min_height=240)
        self.margins = (0, 0, 0, 0)
        for label in (self._status, self._legend):
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._layers.native.setMaximumHeight(90)
        for table in (self._dice_table, self._summary_table):
            fit_table(table, min_height=60)
            table.native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
            # volumes and Dice to 3 significant digits ("129", "14.2", "0.899"), not 4 decimals everywhere
            table.native.setItemDelegate(_NumberDelegate(table.native))

    def reset_choices(self, *_args: Any) -> None:
        """Refresh every dropdown (napari calls this when layers change); the Dice classes stay."""
        self.content.reset_choices()

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
    def load_from_path(self, path: str | None = None, *, task: int | None = None) -> Any:
        """Load raters from the path field (or ``path``) in a background thread; returns the worker.

        The previous case's layers are replaced (or kept hidden, see *Keep previous case*) once the
        new case has loaded; a failed load leaves everything as it was.
        """
        if isinstance(path, str) and path:
            self._path.value = path
        if task is not None:
            self._refresh_tasks()
            self._task.value = task
        text = self._path.value.strip()
        if not text:
            show_error("Load raters failed: no file or folder given. Type a path or use Browse.")
            return None
        with notify_errors("Load raters"):
            spacing = parse_spacing(self._spacing.value)
            class_names = parse_class_names(self._class_names.value)
            source: Any = [p.strip() for p in text.split(";") if p.strip()] if ";" in text else text
            kwargs: dict[str, Any] = {"spacing": spacing, "class_names": class_names}
            case = case_name_for(source)
            if self._tasks and self._task.value is not None:
                kwargs["task"] = int(self._task.value)
                if len(self._tasks) > 1:
                    case = f"{case} task {int(self._task.value):02d}"
            return self._start(compute_statistics, source, action="Load raters",
                               message=f"Loading {case}: reading the files…",
                               present=lambda stats: self._present(stats, case=case, from_files=True), **kwargs)
        return None

    def load_from_layers(self, names: list[Any] | None = None) -> Any:
        """Use the selected Labels layers (or ``names``: layer names or layers) as raters.

        The statistics are computed in a background thread (returns the worker); the selected layers
        are neither changed nor removed — only the agreement and entropy maps are added.
        """
        chosen = list(names) if names else list(self._layers.value)
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
            spacing = parse_spacing(self._spacing.value) or geometry.spacing
            class_names = parse_class_names(self._class_names.value)
            if class_names is None:
                class_names = (layers[0].metadata or {}).get("class_names")
            case = next((case_of(layer) for layer in layers if case_of(layer)), None) \
                or current_case(self._viewer) or "layers"
            names_ = [layer.name for layer in layers]
            arrays = [np.asarray(layer.data) for layer in layers]
            return self._start(_statistics_of_arrays, arrays, spacing=spacing, rater_names=names_,
                               class_names=class_names, action="Load raters from layers",
                               message=f"Computing the statistics of {len(layers)} layers…",
                               present=lambda stats: self._present(stats, case=case, from_files=False,
                                                                   geometry=geometry))
        return None

    def _find_layer(self, choice: Any) -> Any:
        if isinstance(choice, str):
            if choice not in self._viewer.layers:
                raise ValueError(f"there is no layer named {choice!r}; select the raters' Labels layers.")
            return self._viewer.layers[choice]
        if choice not in self._viewer.layers:
            raise ValueError(f"layer {getattr(choice, 'name', choice)!r} is no longer in the viewer.")
        return choice

    def _start(self, func: Callable[..., RaterStatistics], *args: Any, action: str, message: str,
               present: Callable[[RaterStatistics], None], **kwargs: Any) -> Any:
        """Compute ``func(*args, **kwargs)`` in a worker; ``present`` receives the result if still current."""
        self._request += 1
        request = self._request
        previous = self.statistics if self.statistics is not None else self._shown
        self.statistics = None  # "not loaded yet": callers poll it
        self._queue.cancel()
        self._set_busy(True, message)

        def returned(stats: RaterStatistics) -> None:
            if request == self._request and self._alive():
                present(stats)

        def errored(exc: BaseException) -> None:
            if request == self._request and self._alive():
                self.statistics = previous
                self._set_busy(False, f"Failed: {exc}")

        self.worker = run_in_thread(func, *args, action=action, returned=returned, errored=errored, **kwargs)
        return self.worker

    def _alive(self) -> bool:
        try:
            self.native.objectName()
        except RuntimeError:  # the dock was closed: its Qt objects are gone
            return False
        return True

    def _set_busy(self, busy: bool, message: str | None = None) -> None:
        self.busy = busy
        self._load_files.enabled = not busy
        self._use_layers.enabled = not busy
        self._progress.visible = busy
        if busy:
            self._progress.value = 0
        if message is not None:
            self._status.value = message

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
        show_error(f"Load raters failed while adding {self._failing!r}: {exc}")
        self._set_busy(False, f"Failed: {exc}")

    def _add_layer(self, data: Any, kwargs: dict[str, Any], kind: str, *, geometry: Geometry, case: str,
                   outline: bool) -> None:
        kwargs = dict(kwargs)
        name = kwargs.pop("name")
        existing = self._viewer.layers[name] if name in self._viewer.layers else None
        if existing is not None and case_of(existing) is None and not (existing.metadata or {}).get("rater_map"):
            name, existing = f"{case}: {name}", None  # never overwrite a layer the user opened or drew
        colour = (existing.metadata or {}).get("rater_color") if existing is not None else None
        layer = upsert_layer(self._viewer, data, name=name, layer_type=kind, geometry=geometry, case=case, **kwargs)
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
            with self._viewer.layers.batched_update():  # one collection for all removals
                begin_case(self._viewer, case, keep_previous=keep)
        else:
            begin_case(self._viewer, case, keep_previous=keep)  # nothing removed: no batch (its end collects)
        for layer in reused:  # tagged again at once; the next steps replace its data
            layer.metadata = {**(layer.metadata or {}), CASE_KEY: case}

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
        for layer in list(self._viewer.layers):
            meta = layer.metadata or {}
            if meta.get("rater_map") and not meta.get(KEPT_KEY) and layer.name not in keep:
                self._viewer.layers.remove(layer)

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
        self._set_busy(False, describe_raters(raters))
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
            "data": [[round(float(v), 4) for v in row] for row in stats.dice[k]],
            "index": names,
            "columns": [f"R{i + 1}" for i in range(len(names))],
        }
        self._fit_table(self._dice_table)

    def _show_summary(self, stats: RaterStatistics) -> None:
        raters = stats.raters
        unit, factor = volume_unit(raters)
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
        self._fit_table(self._summary_table)

    @staticmethod
    def _fit_table(table: Table) -> None:
        """Height to fit every row, so the dock scrolls and not the table."""
        view = table.native
        view.resizeRowsToContents()
        height = view.horizontalHeader().height() + 2 * view.frameWidth() + 2
        height += sum(view.rowHeight(i) for i in range(view.rowCount()))
        view.setFixedHeight(max(height, 40))


class _NumberDelegate(QStyledItemDelegate):
    """Table cells as written and floats through :func:`format_number` (magicgui's own delegate turns
    numbers of 100,000 and more, and below 0.1, into ``1.055e+06``)."""

    def displayText(self, value: Any, locale: Any) -> str:  # noqa: N802 - Qt's name
        try:
            return f"{int(str(value)):,}"  # counts stay integers ("2", not "2.00")
        except (TypeError, ValueError):
            pass
        try:
            number = float(value)  # cells are shown from their text ("0.8991")
        except (TypeError, ValueError):
            return str(value)  # already formatted ("1,115", "–") or words
        return format_number(number) if math.isfinite(number) else "–"


def _statistics_of_arrays(arrays: list[np.ndarray], *, class_names: Any = None, **kwargs: Any) -> RaterStatistics:
    """:func:`compute_statistics` of layer data; class names from the layers' metadata are dropped if they do
    not fit (a layer drawn with more classes)."""
    try:
        return compute_statistics(arrays, class_names=class_names, **kwargs)
    except ValueError as exc:
        if class_names is None or "class_names" not in str(exc):
            raise
        return compute_statistics(arrays, **kwargs)


def describe_raters(raters: RaterSet) -> str:
    """One line in words, e.g. ``4 raters · 3 classes (background, organ, lesion) · 40×128×128 voxels of
    3 × 0.8 × 0.8 mm``."""
    shape = "×".join(str(s) for s in raters.shape)
    unit = "voxels" if raters.ndim == 3 else "pixels"
    if raters.spacing is not None:
        grid = f"{shape} {unit} of {' × '.join(f'{s:g}' for s in raters.spacing)} mm"
    else:
        grid = f"{shape} {unit} (no spacing in the files)"
    rater_word = "rater" if raters.num_raters == 1 else "raters"
    return (f"{raters.num_raters} {rater_word} · {raters.num_classes} classes ({', '.join(raters.class_names)}) · "
            f"{grid}")


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
