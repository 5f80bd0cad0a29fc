"""Dock widget "Uncertainty maps": entropy / mutual-information layers, a review table, Dice vs raters.

* Entropy (normalised by ``ln C``) of each selected probability layer, and the mutual information of
  ensembles, MC-dropout passes or SSN samples (a layer holding ``(M, C, *spatial)``, or several
  ``(C, *spatial)`` layers treated as members), as Image layers with perceptual colormaps and 0-1
  contrast, updated in place.
* A review table ranking connected predicted structures (or whole images, i.e. the selected layers) by
  segment-level entropy (Mehrtash et al. eq. 7); selecting a row moves the viewer to that structure
  (slice and camera centre) or shows that image.
* Dice and surface Dice (MONAI) of the arg-max prediction against each rater and their majority vote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    Table,
)

from ..core.geometry import Geometry
from ..core.uncertainty import (
    CaseUncertainty,
    RaterAgreement,
    StructureUncertainty,
    agreement_with_raters,
    entropy,
    predictive_uncertainty,
    rank_cases_for_review,
    structure_entropy,
)
from ._case import case_of
from ._common import notify_errors, run_in_thread, show_error, tabify_when_docked, unwrap_viewer, upsert_layer
from ._layer_choices import LayerWatcher, _strided_sample, is_labels_layer, is_probability_layer, probability_problem
from ._staged import (
    LayerQueue,
    LayerSelect,
    fit_table,
    full_width_after,
    keep_selection,
    labels_problem,
    scroll_area_for,
)

if TYPE_CHECKING:
    import napari

__all__ = [
    "MapResult",
    "ReviewRow",
    "UncertaintyWidget",
    "compute_agreement",
    "compute_uncertainty_maps",
    "rank_for_review",
]

CLASSES = "classes"
MEMBERS = "members"
ENTROPY_COLORMAP = "magma"
MI_COLORMAP = "viridis"
#: Most rows the review table shows (all rows stay in ``review_rows``).
MAX_REVIEW_ROWS = 500


@dataclass(frozen=True)
class MapResult:
    """One uncertainty map to show: layer name, data ``(*spatial)``, kind and the source layer."""

    name: str
    data: np.ndarray
    kind: str  # "entropy" or "mutual information"
    source: str


@dataclass(frozen=True)
class ReviewRow:
    """One row of the review table: a structure or an image, and the layer it comes from."""

    source: str
    structure: StructureUncertainty | None = None
    case: CaseUncertainty | None = None
    #: What the table calls the row: "lesion 3" (class name and the structure's number within its class,
    #: largest first) or the image's layer name.
    label: str = ""


def _class_probabilities(data: Any, layout: str) -> np.ndarray:
    """``(C, *spatial)`` probabilities of a layer: the data itself, or the mean over its members."""
    if layout == MEMBERS:
        return predictive_uncertainty(data).mean_probs
    return np.asarray(data)


def compute_uncertainty_maps(
    sources: Mapping[str, Any], *, layout: str = CLASSES, as_ensemble: bool = False
) -> list[MapResult]:
    """Entropy and mutual-information maps of probability layers; runs off the GUI thread.

    Parameters
    ----------
    sources : mapping of str to array_like
        Layer name -> ``(C, *spatial)`` probabilities (``layout="classes"``) or ``(M, C, *spatial)``
        member probabilities (``layout="members"``).
    layout : {"classes", "members"}
        What each layer holds.
    as_ensemble : bool
        With ``layout="classes"``: treat the layers as the members of one ensemble and return the
        entropy of their mean and their mutual information (names ``"ensemble ..."``).

    Returns
    -------
    list of MapResult
    """
    if layout not in (CLASSES, MEMBERS):
        raise ValueError(f"layout must be {CLASSES!r} or {MEMBERS!r}, got {layout!r}.")
    if not sources:
        raise ValueError("no probability layer selected.")
    results: list[MapResult] = []
    if layout == CLASSES and as_ensemble:
        if len(sources) < 2:
            raise ValueError(
                "an ensemble needs at least two probability layers (members); select more layers."
            )
        arrays = [np.asarray(v) for v in sources.values()]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {a.shape}" for n, a in zip(sources, arrays))
            raise ValueError(f"ensemble members must have the same shape, got {detail}.")
        u = predictive_uncertainty(np.stack(arrays))
        first = next(iter(sources))
        results.append(MapResult("ensemble entropy", u.predictive_entropy, "entropy", first))
        results.append(
            MapResult("ensemble mutual information", u.mutual_information, "mutual information", first)
        )
        return results
    for name, data in sources.items():
        try:
            if layout == MEMBERS:
                u = predictive_uncertainty(data)
                results.append(MapResult(f"{name} entropy", u.predictive_entropy, "entropy", name))
                results.append(
                    MapResult(f"{name} mutual information", u.mutual_information, "mutual information", name)
                )
            else:
                results.append(MapResult(f"{name} entropy", entropy(data), "entropy", name))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    return results


def rank_for_review(
    sources: Mapping[str, Any],
    *,
    by: str = "structures",
    layout: str = CLASSES,
    min_voxels: int = 1,
    class_names: Sequence[str] | None = None,
) -> list[ReviewRow]:
    """Rows of the review table, most uncertain first; runs off the GUI thread.

    Parameters
    ----------
    sources : mapping of str to array_like
        Layer name -> probabilities (see :func:`compute_uncertainty_maps` for ``layout``).
    by : {"structures", "images"}
        Rank connected predicted structures of all layers together, or the layers (images) themselves.
    layout : {"classes", "members"}
        What each layer holds; member stacks are averaged first.
    min_voxels : int
        Leave out structures smaller than this.
    class_names : sequence of str, optional
        Names of the classes, for the row labels ("lesion 3"); default "class k".

    Returns
    -------
    list of ReviewRow
        Structures are labelled "<class name> <n>", n numbering the structures of one class of one
        layer from the largest (1) down.
    """
    if by not in ("structures", "images"):
        raise ValueError(f"by must be 'structures' or 'images', got {by!r}.")
    if not sources:
        raise ValueError("no probability layer selected.")
    probs: dict[str, np.ndarray] = {}
    for name, data in sources.items():
        try:
            probs[name] = _class_probabilities(data, layout)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    if by == "images":
        return [ReviewRow(source=row.name, case=row, label=row.name) for row in rank_cases_for_review(probs)]
    rows: list[ReviewRow] = []
    for name, p in probs.items():
        try:
            structures = structure_entropy(p, min_voxels=min_voxels)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        by_class: dict[int, list[StructureUncertainty]] = {}
        for s in structures:
            by_class.setdefault(s.class_index, []).append(s)
        for k, members in by_class.items():
            members.sort(key=lambda s: (-s.voxels, s.bbox_start))
            title = _class_name(class_names, k)
            rows.extend(
                ReviewRow(source=name, structure=s, label=f"{title} {i}") for i, s in enumerate(members, 1)
            )
    rows.sort(key=lambda r: (-r.structure.mean_entropy, -r.structure.voxels))  # type: ignore[union-attr]
    return rows


def _class_name(class_names: Sequence[str] | None, k: int) -> str:
    return str(class_names[k]) if class_names is not None and k < len(class_names) else f"class {k}"


def member_problem(layer: Any) -> str | None:
    """Why ``layer`` is not a stack of member probabilities ``(M, C, *spatial)``, or ``None`` if it is."""
    name = getattr(layer, "name", "?")
    expected = ("a float Image layer of shape (M, C, *spatial) — samples or ensemble members, C ≥ 2 — whose "
                "values sum to 1 over C (the second axis)")
    if type(layer).__name__.lower() != "image" or getattr(layer, "rgb", False):
        return f"layer {name!r} is a {type(layer).__name__} layer; expected {expected}."
    data = layer.data
    shape = tuple(getattr(data, "shape", ()))
    if not np.issubdtype(np.dtype(getattr(data, "dtype", float)), np.floating):
        return f"layer {name!r} holds {data.dtype} values; expected {expected}."
    if len(shape) < 4 or shape[1] < 2 or shape[1] > 64:
        return f"layer {name!r} has shape {shape}; expected {expected}."
    sample = _strided_sample(data[0])
    if sample is not None and not (np.all(np.isfinite(sample)) and np.allclose(sample.sum(0), 1.0, atol=1e-3)):
        return f"layer {name!r} does not sum to 1 over its second axis; expected {expected}."
    return None


def compute_agreement(
    probs: Any,
    raters: Mapping[str, Any],
    *,
    layout: str = CLASSES,
    spacing: tuple[float, ...] | None = None,
    tolerance: float = 2.0,
) -> list[RaterAgreement]:
    """Dice and surface Dice of the arg-max prediction against each rater and their majority vote."""
    if not raters:
        raise ValueError("no rater selected; select one or more Labels layers (one per rater).")
    p = _class_probabilities(probs, layout)
    if p.ndim < 3:
        raise ValueError(f"the probabilities must be (C, *spatial), got shape {p.shape}.")
    stack = [np.asarray(r) for r in raters.values()]
    shapes = {r.shape for r in stack}
    if len(shapes) > 1 or stack[0].shape != p.shape[1:]:
        raise ValueError(
            f"raters must all have the probabilities' spatial shape {p.shape[1:]}, got {sorted(shapes)}."
        )
    return agreement_with_raters(
        np.argmax(p, axis=0),
        np.stack(stack),
        num_classes=max(int(p.shape[0]), 2),
        spacing=spacing,
        tolerance=tolerance,
        rater_names=list(raters),
    )


class UncertaintyWidget(Container):
    """Entropy and mutual-information maps, a review table ranked by segment entropy, Dice vs raters.

    The maps get the probability layer's placement (scale, origin, direction) and case; selecting a
    review row moves the slider and the camera to the structure's world position.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        self._content = Container(labels=True)
        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self._viewer = viewer
        self.maps: list[MapResult] = []
        self.review_rows: list[ReviewRow] = []
        self.agreement_rows: list[RaterAgreement] = []
        self.worker: Any = None
        self._review_layers: dict[str, Any] = {}  # layer name at ranking time -> layer
        self._class_names: list[str] = []

        self._layout = ComboBox(
            label="Layers hold",
            value=CLASSES,
            choices=[("class probabilities (C, …)", CLASSES), ("samples or members (M, C, …)", MEMBERS)],
        )
        self._probabilities = LayerSelect(
            viewer,
            self._fits_layout,
            explain=self._layout_problem,
            label="Probabilities",
            tooltip=(
                "Image layers with class probabilities (C, *spatial) summing to 1 over C, or, with 'Layers "
                "hold: samples or members', stacks of samples / ensemble members (M, C, *spatial)."
            ),
        )
        self._as_ensemble = CheckBox(
            text="Layers are one ensemble",
            value=False,
            tooltip="Treat the selected (C, …) layers as the members of one ensemble: entropy of their mean and "
            "mutual information.",
        )
        self._compute_maps = PushButton(text="Compute entropy / MI maps")
        self._rank_by = ComboBox(
            label="Review",
            value="structures",
            choices=[("connected structures", "structures"), ("images (selected layers)", "images")],
        )
        self._min_size = SpinBox(
            label="Min. structure (voxels)",
            value=1,
            min=1,
            max=10**9,
            tooltip="Connected structures with fewer voxels are left out of the review table.",
        )
        self._rank = PushButton(text="Rank by segment entropy")
        self._review_table = Table(value=[[]], tooltip="Select a row to go to that structure or image.")
        self._raters = LayerSelect(
            viewer,
            is_labels_layer,
            explain=labels_problem,
            label="Raters",
            tooltip=(
                "Labels layers, one per rater, to score the arg-max of the first probability layer against."
            ),
        )
        self._tolerance = FloatSpinBox(
            label="Surface tolerance (mm)", value=2.0, min=0.0, max=100.0, step=0.5
        )
        self._agreement = PushButton(text="Dice vs raters")
        self._agreement_table = Table(value=[[]], tooltip="Dice and surface Dice of the arg-max against each rater.")
        self._status = Label(value="Select probability layers.")
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(120)  # wraps instead of widening the dock

        fit_table(self._review_table, min_height=160, show_index=False)
        fit_table(self._agreement_table, min_height=120, show_index=False)
        for select in (self._probabilities, self._raters):
            select.native.setMinimumHeight(64)
            select.native.setMaximumHeight(110)
        self._layout.changed.connect(self._probabilities.reset_choices)
        self._compute_maps.changed.connect(self._on_compute_maps)
        self._rank.changed.connect(self._on_rank)
        self._agreement.changed.connect(self._on_agreement)
        self._review_table.native.itemSelectionChanged.connect(self._on_row_selected)
        self._content.extend(
            [
                self._layout,
                self._probabilities,
                self._as_ensemble,
                self._compute_maps,
                self._rank_by,
                self._min_size,
                self._rank,
                self._raters,
                self._tolerance,
                self._agreement,
            ]
        )
        full_width_after(self._content, self._rank, self._review_table)
        full_width_after(self._content, self._agreement, self._agreement_table, self._status)
        self.scroll_area = scroll_area_for(self, self._content, min_width=300, min_height=150)
        self._queue = LayerQueue(self.native, failed=self._on_show_failed)
        self._watcher = LayerWatcher(viewer, self._refresh_layer_choices, owner=self.native)
        tabify_when_docked(self.native)

    # choices ----------------------------------------------------------------------------------------
    def _layout_problem(self, layer: Any) -> str | None:
        """Why ``layer`` does not fit the chosen layout (class probabilities or member stacks)."""
        if str(self._layout.value) == MEMBERS:
            return member_problem(layer)
        return probability_problem(layer)

    def _fits_layout(self, layer: Any) -> bool:
        if not hasattr(self, "_layout"):
            return is_probability_layer(layer)
        return self._layout_problem(layer) is None

    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer lists (napari calls this on layer changes; the controls sit in a scroll area)."""
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, _event: Any = None) -> None:
        self._probabilities.reset_choices()
        self._raters.reset_choices()

    def _selected(self) -> list[Any]:
        self._probabilities.check()
        layers = list(self._probabilities.value)
        if not layers:
            raise ValueError("no probability layer selected; select one or more Image layers.")
        for layer in layers:
            problem = self._layout_problem(layer)
            if problem:
                raise ValueError(problem)
        return layers

    def _sources(self) -> dict[str, np.ndarray]:
        layers = self._selected()
        self._review_layers = {layer.name: layer for layer in layers}
        self._class_names = self._names_of_classes(layers)
        return {layer.name: np.asarray(layer.data) for layer in layers}

    def _names_of_classes(self, layers: list[Any]) -> list[str]:
        axis = 1 if str(self._layout.value) == MEMBERS else 0
        num_classes = int(layers[0].data.shape[axis])
        for layer in [*layers, *self._raters.value]:
            names = (layer.metadata or {}).get("class_names")
            if names is not None and len(names) >= num_classes:
                return [str(n) for n in list(names)[:num_classes]]
        return [f"class {k}" for k in range(num_classes)]

    def _set_busy(self, busy: bool, message: str = "") -> None:
        for button in (self._compute_maps, self._rank, self._agreement):
            button.enabled = not busy
        if message:
            self._status.value = message

    def _on_failed(self, _exc: BaseException) -> None:
        self._queue.cancel()
        self._set_busy(False, "Failed; see the notification.")

    def _on_show_failed(self, exc: BaseException) -> None:
        show_error(f"Uncertainty maps failed: {exc}")
        self._set_busy(False, f"Failed: {exc}")

    # maps -------------------------------------------------------------------------------------------
    def _on_compute_maps(self, _value: Any = None) -> Any:
        return self.compute_maps()

    def compute_maps(self) -> Any:
        """Compute the entropy / MI maps of the selected layers in a worker; returns the worker."""
        with notify_errors("Uncertainty maps"):
            sources = self._sources()
            self._set_busy(True, "Computing the entropy maps…")
            self.worker = run_in_thread(
                compute_uncertainty_maps,
                sources,
                layout=str(self._layout.value),
                as_ensemble=bool(self._as_ensemble.value),
                action="Uncertainty maps",
                returned=self._show_maps,
                errored=self._on_failed,
            )
            return self.worker
        return None

    def _show_maps(self, maps: list[MapResult]) -> None:
        """Add or update the maps, one layer per event-loop turn; then re-enable the buttons."""
        layers = dict(self._review_layers)

        def add(result: MapResult) -> None:
            source = layers.get(result.source)
            if source is None:
                raise ValueError(f"the probability layer {result.source!r} was removed.")
            with keep_selection(self._viewer):
                upsert_layer(
                    self._viewer,
                    result.data,
                    name=result.name,
                    layer_type="image",
                    geometry=source,
                    case=case_of(source),
                    colormap=ENTROPY_COLORMAP if result.kind == "entropy" else MI_COLORMAP,
                    contrast_limits=(0.0, 1.0),
                    blending="additive",
                    metadata={"uncertainty_map": True, "kind": result.kind, "source": result.source},
                )
            self._status.value = f"Showing {result.name}…"

        def done() -> None:
            self.maps = maps
            self._set_busy(False, f"Updated {len(maps)} map(s): " + ", ".join(m.name for m in maps))

        self._queue.run([lambda r=r: add(r) for r in maps], done=done)

    # review table -----------------------------------------------------------------------------------
    def _on_rank(self, _value: Any = None) -> Any:
        return self.rank()

    def rank(self) -> Any:
        """Rank structures or images by segment-level entropy in a worker; returns the worker."""
        with notify_errors("Review ranking"):
            sources = self._sources()
            self._set_busy(True, "Ranking…")
            self.worker = run_in_thread(
                rank_for_review,
                sources,
                by=str(self._rank_by.value),
                min_voxels=int(self._min_size.value),
                layout=str(self._layout.value),
                class_names=list(self._class_names),
                action="Review ranking",
                returned=self._show_review,
                finished=lambda: self._set_busy(False),
            )
            return self.worker
        return None

    def _show_review(self, rows: list[ReviewRow]) -> None:
        self.review_rows = rows
        shown = rows[:MAX_REVIEW_ROWS]
        if rows and rows[0].case is not None:
            self._review_table.value = {
                "data": [
                    [r.label, _cell(r.case.score)] + [_cell(v) for v in r.case.per_class[1:]]  # type: ignore[union-attr]
                    for r in shown
                ],
                "index": _row_numbers(shown),
                "columns": ["image", "mean H"] + self._class_names[1:len(rows[0].case.per_class)],
            }
        else:
            self._review_table.value = {
                "data": [
                    [r.label, f"{s.voxels:,}", _cell(s.mean_entropy), r.source]
                    for r in shown
                    for s in [r.structure]
                    if s is not None
                ],
                "index": _row_numbers(shown),
                "columns": ["structure", "voxels", "mean H (nats)", "layer"],
            }
        more = f" (the first {MAX_REVIEW_ROWS} shown)" if len(rows) > MAX_REVIEW_ROWS else ""
        self._status.value = f"{len(rows)} row(s){more}, most uncertain first. Select a row to go there."

    def _on_row_selected(self) -> None:
        rows = sorted({index.row() for index in self._review_table.native.selectedIndexes()})
        if rows:
            with notify_errors("Go to review row"):
                self.jump_to(rows[0])

    def world_position(self, row: int) -> np.ndarray:
        """World coordinates of review row ``row``'s structure centroid (with the layer's scale, origin, direction)."""
        entry = self.review_rows[row]
        structure = entry.structure
        if structure is None:
            raise ValueError(f"row {row} is an image, not a structure.")
        layer = self._review_layers.get(entry.source)
        if layer is None or layer not in self._viewer.layers:
            raise ValueError(f"the probability layer {entry.source!r} of this row is no longer in the viewer.")
        return Geometry.of(layer, ndim=len(structure.centroid)).index_to_world(structure.centroid)

    def jump_to(self, row: int) -> None:
        """Show review row ``row``: move slice and camera to the structure, or show only that image."""
        if not 0 <= row < len(self.review_rows):
            raise ValueError(f"row must be between 0 and {len(self.review_rows) - 1}, got {row}.")
        entry = self.review_rows[row]
        viewer = self._viewer
        if entry.case is not None:
            ranked = {r.source: self._review_layers.get(r.source) for r in self.review_rows}
            for layer in ranked.values():
                if layer is not None and layer in viewer.layers:
                    layer.visible = layer is ranked[entry.source]
            if ranked[entry.source] is not None:
                viewer.layers.selection.active = ranked[entry.source]
            return
        world = self.world_position(row)
        spatial_ndim = len(world)
        offset = viewer.dims.ndim - spatial_ndim
        displayed = list(viewer.dims.displayed)
        axes = [offset + i for i in range(spatial_ndim) if offset + i not in displayed]
        if axes:
            viewer.dims.set_point(axes, [float(world[axis - offset]) for axis in axes])
        centre = [float(world[axis - offset]) for axis in displayed if axis >= offset]
        _camera(viewer).center = tuple(centre)
        self._status.value = f"{entry.label}: centre at " + ", ".join(f"{v:.1f}" for v in world) + " mm"

    # Dice vs raters ---------------------------------------------------------------------------------
    def _on_agreement(self, _value: Any = None) -> Any:
        return self.compute_agreement()

    def compute_agreement(self) -> Any:
        """Dice / surface Dice of the first selected probability layer against the raters (worker)."""
        with notify_errors("Dice vs raters"):
            sources = self._sources()
            name, probs = next(iter(sources.items()))
            self._raters.check()
            rater_layers = list(self._raters.value)
            for layer in rater_layers:
                problem = labels_problem(layer)
                if problem:
                    raise ValueError(problem)
            raters = {layer.name: np.asarray(layer.data) for layer in rater_layers}
            spacing = Geometry.of(rater_layers[0]).spacing if rater_layers else None
            self._set_busy(True, f"Scoring {name} against {len(raters)} rater(s)…")
            self.worker = run_in_thread(
                compute_agreement,
                probs,
                raters,
                layout=str(self._layout.value),
                spacing=spacing,
                tolerance=float(self._tolerance.value),
                action="Dice vs raters",
                returned=self._show_agreement,
                finished=lambda: self._set_busy(False),
            )
            return self.worker
        return None

    def _show_agreement(self, rows: list[RaterAgreement]) -> None:
        self.agreement_rows = rows
        self._agreement_table.value = {
            "data": [
                [r.reference, _class_name(self._class_names, r.class_index), _cell(r.dice),
                 _cell(r.surface_dice)]
                for r in rows
            ],
            "index": _row_numbers(rows),
            "columns": ["reference", "class", "Dice", "surface Dice"],
        }
        self._status.value = (
            f"Dice and surface Dice (tolerance {float(self._tolerance.value):g} mm) against "
            f"{len({r.reference for r in rows})} reference(s)."
        )


def _camera(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _row_numbers(rows: Sequence[Any]) -> list[str]:
    return [str(i + 1) for i in range(len(rows))]


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else round(float(value), 4)
    return value
