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

from collections.abc import Mapping
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
    Select,
    SpinBox,
    Table,
)

from ..core.uncertainty import (
    CaseUncertainty,
    StructureUncertainty,
    agreement_with_raters,
    entropy,
    predictive_uncertainty,
    rank_cases_for_review,
    structure_entropy,
)
from ._common import connect_layer_list_changes, layer_names, notify_errors, run_in_thread, upsert_layer

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
    sources: Mapping[str, Any], *, by: str = "structures", layout: str = CLASSES, min_voxels: int = 1
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

    Returns
    -------
    list of ReviewRow
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
        return [ReviewRow(source=row.name, case=row) for row in rank_cases_for_review(probs)]
    rows: list[ReviewRow] = []
    for name, p in probs.items():
        try:
            rows.extend(
                ReviewRow(source=name, structure=s) for s in structure_entropy(p, min_voxels=min_voxels)
            )
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    rows.sort(key=lambda r: (-r.structure.mean_entropy, -r.structure.voxels))  # type: ignore[union-attr]
    return rows


def compute_agreement(
    probs: Any,
    raters: Mapping[str, Any],
    *,
    layout: str = CLASSES,
    spacing: tuple[float, ...] | None = None,
    tolerance: float = 2.0,
) -> list[dict[str, Any]]:
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
    """Entropy and mutual-information maps, a review table ranked by segment entropy, Dice vs raters."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.maps: list[MapResult] = []
        self.review_rows: list[ReviewRow] = []
        self.agreement_rows: list[dict[str, Any]] = []
        self.worker: Any = None

        self._probabilities = Select(
            label="Probabilities",
            choices=self._image_layer_names,
            tooltip=(
                "Image layers with class probabilities (C, *spatial), or stacks of samples / ensemble "
                "members (M, C, *spatial)."
            ),
        )
        self._layout = ComboBox(
            label="Layers hold",
            value=CLASSES,
            choices=[("class probabilities (C, …)", CLASSES), ("samples or members (M, C, …)", MEMBERS)],
        )
        self._as_ensemble = CheckBox(text="Selected layers are members of one ensemble", value=False)
        self._compute_maps = PushButton(text="Compute entropy / MI maps")
        self._rank_by = ComboBox(
            label="Review",
            value="structures",
            choices=[("connected structures", "structures"), ("images (selected layers)", "images")],
        )
        self._min_size = SpinBox(
            label="Smallest structure (voxels)",
            value=1,
            min=1,
            max=10**9,
            tooltip="Connected structures with fewer voxels are left out of the review table.",
        )
        self._rank = PushButton(text="Rank by segment entropy")
        self._review_table = Table(value=[[]])
        self._raters = Select(
            label="Raters",
            choices=self._labels_layer_names,
            tooltip=(
                "Labels layers, one per rater, to score the arg-max of the first probability layer against."
            ),
        )
        self._tolerance = FloatSpinBox(
            label="Surface tolerance (mm)", value=2.0, min=0.0, max=100.0, step=0.5
        )
        self._agreement = PushButton(text="Dice vs raters")
        self._agreement_table = Table(value=[[]])
        self._status = Label(value="")

        self._review_table.native.setMinimumHeight(160)
        self._agreement_table.native.setMinimumHeight(120)
        self._compute_maps.changed.connect(self._on_compute_maps)
        self._rank.changed.connect(self._on_rank)
        self._agreement.changed.connect(self._on_agreement)
        self._review_table.native.itemSelectionChanged.connect(self._on_row_selected)
        self.extend(
            [
                self._probabilities,
                self._layout,
                self._as_ensemble,
                self._compute_maps,
                self._rank_by,
                self._min_size,
                self._rank,
                self._review_table,
                self._raters,
                self._tolerance,
                self._agreement,
                self._agreement_table,
                self._status,
            ]
        )
        connect_layer_list_changes(viewer, self._refresh_layer_choices)

    # choices ----------------------------------------------------------------------------------------
    def _image_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "image", skip_uncertainty_maps=True)

    def _labels_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "labels")

    def _refresh_layer_choices(self, _event: Any = None) -> None:
        self._probabilities.reset_choices()
        self._raters.reset_choices()

    def _sources(self) -> dict[str, np.ndarray]:
        names = list(self._probabilities.value)
        if not names:
            raise ValueError("no probability layer selected; select one or more Image layers.")
        return {n: np.asarray(self._viewer.layers[n].data) for n in names}

    def _spatial_geometry(self, source: str, spatial_ndim: int) -> dict[str, tuple[float, ...]]:
        layer = self._viewer.layers[source]
        return {
            "scale": tuple(float(s) for s in layer.scale[-spatial_ndim:]),
            "translate": tuple(float(t) for t in layer.translate[-spatial_ndim:]),
        }

    def _set_busy(self, busy: bool, message: str = "") -> None:
        for button in (self._compute_maps, self._rank, self._agreement):
            button.enabled = not busy
        if message:
            self._status.value = message

    # maps -------------------------------------------------------------------------------------------
    def _on_compute_maps(self, _value: Any = None) -> Any:
        return self.compute_maps()

    def compute_maps(self) -> Any:
        """Compute the entropy / MI maps of the selected layers in a worker; returns the worker."""
        with notify_errors("Uncertainty maps"):
            sources = self._sources()
            self._set_busy(True, "Computing maps…")
            self.worker = run_in_thread(
                compute_uncertainty_maps,
                sources,
                layout=str(self._layout.value),
                as_ensemble=bool(self._as_ensemble.value),
                action="Uncertainty maps",
                returned=self._show_maps,
                finished=lambda: self._set_busy(False),
            )
            return self.worker
        return None

    def _show_maps(self, maps: list[MapResult]) -> None:
        for result in maps:
            colormap = ENTROPY_COLORMAP if result.kind == "entropy" else MI_COLORMAP
            upsert_layer(
                self._viewer,
                result.data,
                name=result.name,
                layer_type="image",
                colormap=colormap,
                contrast_limits=(0.0, 1.0),
                blending="additive",
                metadata={"uncertainty_map": True, "kind": result.kind, "source": result.source},
                **self._spatial_geometry(result.source, result.data.ndim),
            )
        self.maps = maps
        self._status.value = f"Updated {len(maps)} map(s): " + ", ".join(m.name for m in maps)

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
                action="Review ranking",
                returned=self._show_review,
                finished=lambda: self._set_busy(False),
            )
            return self.worker
        return None

    def _show_review(self, rows: list[ReviewRow]) -> None:
        self.review_rows = rows
        if rows and rows[0].case is not None:
            num_classes = len(rows[0].case.per_class)
            self._review_table.value = {
                "data": [
                    [_cell(r.case.score)] + [_cell(v) for v in r.case.per_class[1:]]  # type: ignore[union-attr]
                    for r in rows
                ],
                "index": [r.source for r in rows],
                "columns": ["mean segment entropy"] + [f"class {k}" for k in range(1, num_classes)],
            }
        else:
            self._review_table.value = {
                "data": [
                    [
                        r.source,
                        s.class_index,
                        s.component,
                        s.voxels,
                        _cell(s.mean_entropy),
                        ", ".join(f"{c:.1f}" for c in s.centroid),
                    ]
                    for r in rows
                    for s in [r.structure]
                    if s is not None
                ],
                "index": [str(i + 1) for i in range(len(rows))],
                "columns": ["layer", "class", "structure", "voxels", "mean entropy", "centroid (voxels)"],
            }
        self._status.value = f"{len(rows)} row(s), most uncertain first. Select a row to go there."

    def _on_row_selected(self) -> None:
        rows = sorted({index.row() for index in self._review_table.native.selectedIndexes()})
        if rows:
            with notify_errors("Go to review row"):
                self.jump_to(rows[0])

    def jump_to(self, row: int) -> None:
        """Show review row ``row``: move slice and camera to the structure, or show only that image."""
        if not 0 <= row < len(self.review_rows):
            raise ValueError(f"row must be between 0 and {len(self.review_rows) - 1}, got {row}.")
        entry = self.review_rows[row]
        viewer = self._viewer
        if entry.case is not None:
            ranked = {r.source for r in self.review_rows}
            for name in ranked:
                if name in viewer.layers:
                    viewer.layers[name].visible = name == entry.source
            viewer.layers.selection.active = viewer.layers[entry.source]
            return
        structure = entry.structure
        assert structure is not None
        spatial_ndim = len(structure.centroid)
        geometry = self._spatial_geometry(entry.source, spatial_ndim)
        world = np.asarray(structure.centroid) * geometry["scale"] + geometry["translate"]
        offset = viewer.dims.ndim - spatial_ndim
        displayed = list(viewer.dims.displayed)
        for i, value in enumerate(world):
            if offset + i not in displayed:
                viewer.dims.set_point(offset + i, float(value))
        centre = [float(world[axis - offset]) for axis in displayed if axis >= offset]
        _camera(viewer).center = tuple(centre)

    # Dice vs raters ---------------------------------------------------------------------------------
    def _on_agreement(self, _value: Any = None) -> Any:
        return self.compute_agreement()

    def compute_agreement(self) -> Any:
        """Dice / surface Dice of the first selected probability layer against the raters (worker)."""
        with notify_errors("Dice vs raters"):
            sources = self._sources()
            name, probs = next(iter(sources.items()))
            rater_names = list(self._raters.value)
            raters = {n: np.asarray(self._viewer.layers[n].data) for n in rater_names}
            spacing = (
                tuple(float(s) for s in self._viewer.layers[rater_names[0]].scale) if rater_names else None
            )
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

    def _show_agreement(self, rows: list[dict[str, Any]]) -> None:
        self.agreement_rows = rows
        self._agreement_table.value = {
            "data": [
                [r["reference"], r["class_index"], _cell(r["dice"]), _cell(r["surface_dice"])] for r in rows
            ],
            "index": [str(i + 1) for i in range(len(rows))],
            "columns": ["reference", "class", "Dice", "surface Dice"],
        }
        self._status.value = (
            f"Dice and surface Dice against {len({r['reference'] for r in rows})} reference(s)."
        )


def _camera(viewer: napari.viewer.Viewer) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else round(float(value), 4)
    return value
