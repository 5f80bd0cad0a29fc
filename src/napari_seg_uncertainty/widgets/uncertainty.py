"""Dock widget "Uncertainty maps": entropy / mutual-information layers, a review table, Dice vs raters.

* Entropy (normalized by ``ln C``) of each selected probability layer, and the mutual information of
  ensembles, MC-dropout passes or SSN samples (a layer holding ``(M, C, *spatial)``, or several
  ``(C, *spatial)`` layers treated as members), as Image layers with perceptual colormaps and 0-1
  contrast, updated in place.
* A review table ranking connected predicted structures (or whole images, i.e. the selected layers) by
  segment-level entropy (Mehrtash et al. eq. 7); selecting a row moves the viewer to that structure
  (slice and camera centre) or shows that image.
* Dice and surface Dice (MONAI) of the arg-max prediction against each rater and their majority vote.

The computations are :mod:`napari_seg_uncertainty.workflow.uncertainty`; this module shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox, Table

from ..core._memory import array_bytes, format_bytes
from ..core.geometry import Geometry
from ..workflow import uncertainty as uncertainty_workflow
from ..workflow.uncertainty import (
    CLASSES,
    MEMBERS,
    MapResult,
    ReviewRow,
    class_name,
    compute_agreement,
    compute_uncertainty_maps,
    rank_for_review,
)
from ._base import DockWidget
from ._case import case_of
from ._common import check_memory, notify_errors, upsert_layer
from ._layer_choices import is_labels_layer, is_probability_layer, labels_problem, member_problem, probability_problem
from ._layer_queue import keep_selection
from ._layout import full_width_after
from ._tables import fit_table, table_cell

if TYPE_CHECKING:
    import napari

__all__ = ["CLASSES", "MEMBERS", "UncertaintyWidget"]

ENTROPY_COLORMAP = "magma"
MI_COLORMAP = "viridis"
#: Most rows the review table shows (all rows stay in ``review_rows``).
MAX_REVIEW_ROWS = 500


class UncertaintyWidget(DockWidget):
    """Entropy and mutual-information maps, a review table ranked by segment entropy, Dice vs raters.

    The maps get the probability layer's placement (scale, origin, direction) and case; selecting a
    review row moves the slider and the camera to the structure's world position. Each of
    :meth:`compute_maps`, :meth:`rank` and :meth:`compute_agreement` returns its worker (``None`` on
    bad input) and emits :attr:`computed` with its result once it is shown. Maps whose estimated memory
    (:func:`uncertainty_maps_bytes`) exceeds the free memory are refused with a notification, before
    anything is computed.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose probability and Labels layers are used (napari passes it in).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, status="Select probability layers.")
        self.maps: list[MapResult] = []
        self.review_rows: list[ReviewRow] = []
        self.agreement_rows: list[dict[str, Any]] = []
        self._review_layers: dict[str, Any] = {}  # layer name at ranking time -> layer
        self._class_names: list[str] = []
        self._problems: dict[tuple[Any, ...], str | None] = {}  # see _layout_problem
        self._build_controls()
        self.content.extend([
            self._layout, self._probabilities, self._as_ensemble, self._compute_maps, self._rank_by,
            self._min_size, self._rank, self._raters, self._tolerance, self._agreement,
        ])
        full_width_after(self.content, self._rank, self._review_table)
        full_width_after(self.content, self._agreement, self._agreement_table, self._status)
        self.disable_while_busy(self._compute_maps, self._rank, self._agreement)
        self.finish_layout()

    def _build_controls(self) -> None:
        self._layout = ComboBox(
            label="Layers hold",
            value=CLASSES,
            choices=[("class probabilities (C, …)", CLASSES), ("samples or members (M, C, …)", MEMBERS)],
        )
        self._probabilities = self.layer_select(
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
            label="Min. structure (voxels)", value=1, min=1, max=10**9,
            tooltip="Connected structures with fewer voxels are left out of the review table.",
        )
        self._rank = PushButton(text="Rank by segment entropy")
        self._review_table = Table(value=[[]], tooltip="Select a row to go to that structure or image.")
        self._raters = self.layer_select(
            is_labels_layer,
            explain=labels_problem,
            label="Raters",
            tooltip="Labels layers, one per rater, to score the arg-max of the first probability layer against.",
        )
        self._tolerance = FloatSpinBox(label="Surface tolerance (mm)", value=2.0, min=0.0, max=100.0, step=0.5)
        self._agreement = PushButton(text="Dice vs raters")
        self._agreement_table = Table(value=[[]], tooltip="Dice and surface Dice of the arg-max against each rater.")
        fit_table(self._review_table, min_height=160, show_index=False)
        fit_table(self._agreement_table, min_height=120, show_index=False)
        self._layout.changed.connect(self._probabilities.reset_choices)
        self._compute_maps.changed.connect(lambda _value=None: self.compute_maps())
        self._rank.changed.connect(lambda _value=None: self.rank())
        self._agreement.changed.connect(lambda _value=None: self.compute_agreement())
        self._review_table.native.itemSelectionChanged.connect(self._on_row_selected)

    # choices ----------------------------------------------------------------------------------------
    def _layout_problem(self, layer: Any, *, cached: bool = False) -> str | None:
        """Why ``layer`` does not fit the chosen layout (class probabilities or member stacks).

        ``cached``: the answer of an earlier check of the same layer, data and layout. napari refreshes the
        layer lists on every layer added or removed, and each check reads a strided sample of every float
        layer (tens of milliseconds for a CT-size probability map): without the cache, adding a few layers to
        a viewer holding CT-size maps stalls the window for several hundred milliseconds.
        """
        layout = str(self._layout.value)
        data = getattr(layer, "data", None)
        key = (id(layer), id(data), tuple(getattr(data, "shape", ())), str(getattr(data, "dtype", "")), layout)
        if cached and key in self._problems:
            return self._problems[key]
        problem = member_problem(layer) if layout == MEMBERS else probability_problem(layer)
        if len(self._problems) > 512:
            self._problems.clear()
        self._problems[key] = problem
        return problem

    def _fits_layout(self, layer: Any) -> bool:
        if not hasattr(self, "_layout"):
            return is_probability_layer(layer)
        return self._layout_problem(layer, cached=True) is None

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

    # maps -------------------------------------------------------------------------------------------
    def compute_maps(
        self, *, probabilities: Sequence[Any] | None = None, layout: str | None = None,
        as_ensemble: bool | None = None,
    ) -> Any:
        """Compute the entropy / MI maps of the selected layers in a worker; returns the worker (or None).

        Keywords given set the inputs first (layers or layer names; ``layout`` "classes" or "members").
        :attr:`computed` is emitted with the list of :class:`MapResult` once every map is shown.
        """
        self.apply([(self._layout, layout), (self._probabilities, probabilities), (self._as_ensemble, as_ensemble)])
        with notify_errors("Uncertainty maps"):
            sources = self._sources()
            return self.run(
                maps_checked, sources, layout=str(self._layout.value),
                as_ensemble=bool(self._as_ensemble.value), action="Uncertainty maps",
                message="Computing the entropy maps…", returned=self._show_maps,
            )
        return None

    def _show_maps(self, maps: list[MapResult]) -> None:
        """Add or update the maps, one layer per event-loop turn; then leave the busy state."""
        layers = dict(self._review_layers)

        def add(result: MapResult) -> None:
            source = layers.get(result.source)
            if source is None:
                raise ValueError(f"the probability layer {result.source!r} was removed.")
            with keep_selection(self._viewer):
                upsert_layer(
                    self._viewer, result.data, name=result.name, layer_type="image", geometry=source,
                    case=case_of(source), colormap=ENTROPY_COLORMAP if result.kind == "entropy" else MI_COLORMAP,
                    contrast_limits=(0.0, 1.0), blending="additive",
                    metadata={"uncertainty_map": True, "kind": result.kind, "source": result.source},
                )
            self.set_status(f"Showing {result.name}…")

        def shown() -> None:
            self.maps = maps
            self.done(maps, f"Updated {len(maps)} map(s): " + ", ".join(m.name for m in maps))

        self._queue.run([lambda r=r: add(r) for r in maps], done=shown)

    # review table -----------------------------------------------------------------------------------
    def rank(
        self, *, probabilities: Sequence[Any] | None = None, by: str | None = None, min_voxels: int | None = None,
        layout: str | None = None,
    ) -> Any:
        """Rank structures or images by segment-level entropy in a worker; returns the worker (or None).

        ``by`` is "structures" or "images"; :attr:`computed` is emitted with the list of
        :class:`ReviewRow` once the table is filled.
        """
        self.apply([(self._layout, layout), (self._probabilities, probabilities), (self._rank_by, by),
                    (self._min_size, min_voxels)])
        with notify_errors("Review ranking"):
            sources = self._sources()
            return self.run(
                rank_for_review, sources, by=str(self._rank_by.value), min_voxels=int(self._min_size.value),
                layout=str(self._layout.value), class_names=list(self._class_names), action="Review ranking",
                message="Ranking…", returned=self._show_review,
            )
        return None

    def _show_review(self, rows: list[ReviewRow]) -> None:
        self.review_rows = rows
        shown = rows[:MAX_REVIEW_ROWS]
        if rows and rows[0].case is not None:
            self._review_table.value = {
                "data": [[r.label, table_cell(r.case.score)] + [table_cell(v) for v in r.case.per_class[1:]]  # type: ignore[union-attr]
                         for r in shown],
                "index": _row_numbers(shown),
                "columns": ["image", "mean H"] + self._class_names[1:len(rows[0].case.per_class)],
            }
        else:
            self._review_table.value = {
                "data": [[r.label, f"{s.voxels:,}", table_cell(s.mean_entropy), r.source]
                         for r in shown for s in [r.structure] if s is not None],
                "index": _row_numbers(shown),
                "columns": ["structure", "voxels", "mean H (nats)", "layer"],
            }
        more = f" (the first {MAX_REVIEW_ROWS} shown)" if len(rows) > MAX_REVIEW_ROWS else ""
        self.done(rows, f"{len(rows)} row(s){more}, most uncertain first. Select a row to go there.")

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
    def compute_agreement(
        self, *, probabilities: Sequence[Any] | None = None, raters: Sequence[Any] | None = None,
        tolerance: float | None = None,
    ) -> Any:
        """Dice / surface Dice of the first selected probability layer against the raters; returns the worker.

        :attr:`computed` is emitted with the rows (one dict per reference and class) once the table is filled.
        """
        self.apply([(self._probabilities, probabilities), (self._raters, raters), (self._tolerance, tolerance)])
        with notify_errors("Dice vs raters"):
            sources = self._sources()
            name, probs = next(iter(sources.items()))
            self._raters.check()
            rater_layers = list(self._raters.value)
            for layer in rater_layers:
                problem = labels_problem(layer)
                if problem:
                    raise ValueError(problem)
            raters_data = {layer.name: np.asarray(layer.data) for layer in rater_layers}
            spacing = Geometry.of(rater_layers[0]).spacing if rater_layers else None
            return self.run(
                compute_agreement, probs, raters_data, layout=str(self._layout.value), spacing=spacing,
                tolerance=float(self._tolerance.value), action="Dice vs raters",
                message=f"Scoring {name} against {len(raters_data)} rater(s)…", returned=self._show_agreement,
            )
        return None

    def _show_agreement(self, rows: list[dict[str, Any]]) -> None:
        self.agreement_rows = rows
        self._agreement_table.value = {
            "data": [[r.reference, class_name(self._class_names, r.class_index), table_cell(r.dice),
                      table_cell(r.surface_dice)] for r in rows],
            "index": _row_numbers(rows),
            "columns": ["reference", "class", "Dice", "surface Dice"],
        }
        self.done(rows, f"Dice and surface Dice (tolerance {float(self._tolerance.value):g} mm) against "
                        f"{len({r.reference for r in rows})} reference(s).")


#: Slab temporaries of :func:`compute_uncertainty_maps` counted per slab (measured with tracemalloc on
#: (3|6, 64, 256, 256) layers and (4|8, C, …) member stacks, 4 and 32 MiB slabs: at most 2.3 slabs for a class
#: layer, 1.6 for a member stack, 2.5 per member + 1.5 for an ensemble; kept with a margin).
_SLAB_TEMPORARIES = 4
_SLAB_TEMPORARIES_PER_MEMBER = 3


def _slab_bytes(shape: Sequence[int], axis: int) -> int:
    """Bytes of float32 input in one slab of ``workflow.uncertainty._by_slabs`` (at least one plane, at most
    the whole layer)."""
    whole = array_bytes(shape, np.float32)
    per_plane = whole // max(int(shape[axis]), 1) if len(shape) > axis else whole
    return min(whole, max(uncertainty_workflow.SLAB_BYTES, per_plane))


def uncertainty_maps_bytes(shapes: Sequence[Sequence[int]], *, layout: str, as_ensemble: bool) -> int:
    """Estimated peak memory (bytes) of :func:`compute_uncertainty_maps` on layers of ``shapes``.

    The maps are computed slab by slab along the first spatial axis, so the peak is the float32 output map(s)
    (one entropy map per class layer; entropy and mutual information per member stack or ensemble) plus a
    few slabs of temporaries (``workflow.uncertainty.SLAB_BYTES`` of input each): 4 for the layer being
    computed (the layers are computed one after another), or for an ensemble 3 per member (their slabs are
    stacked) and 4 more."""
    outputs, temporaries = 0, 0
    if layout == CLASSES and as_ensemble and shapes:
        per_map = array_bytes(tuple(shapes[0][1:]), np.float32)
        slab = _slab_bytes(shapes[0], 1)
        return 2 * per_map + (_SLAB_TEMPORARIES_PER_MEMBER * len(shapes) + _SLAB_TEMPORARIES) * slab
    for shape in shapes:
        axis = 2 if layout == MEMBERS else 1
        maps = 2 if layout == MEMBERS else 1
        outputs += maps * array_bytes(tuple(shape[axis:]), np.float32)
        temporaries = max(temporaries, _SLAB_TEMPORARIES * _slab_bytes(shape, axis))
    return outputs + temporaries


def maps_checked(sources: dict[str, Any], *, layout: str, as_ensemble: bool) -> list[MapResult]:
    """The worker: refuse maps that would not fit in the free memory (a clear message, nothing computed, no layer
    touched), then :func:`~napari_seg_uncertainty.workflow.uncertainty.compute_uncertainty_maps`."""
    shapes = [tuple(np.shape(data)) for data in sources.values()]
    needed = uncertainty_maps_bytes(shapes, layout=layout, as_ensemble=as_ensemble)
    sizes = ", ".join(f"{name} ({'×'.join(str(v) for v in shape)})" for name, shape in zip(sources, shapes))
    check_memory(
        needed, what=f"the entropy{' and mutual-information' if layout == MEMBERS or as_ensemble else ''} maps "
        f"(each map {format_bytes(array_bytes(shapes[0][2 if layout == MEMBERS else 1:], np.float32))})",
        cause=f"the probability layer(s) {sizes}",
        advice="nothing was computed and your layers are unchanged; select fewer layers at a time, close layers "
        "you no longer need, or crop the probabilities to the region of interest")
    return compute_uncertainty_maps(sources, layout=layout, as_ensemble=as_ensemble)


def _camera(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _row_numbers(rows: Sequence[Any]) -> list[str]:
    return [str(i + 1) for i in range(len(rows))]

