"""Dock widget "Calibration": reliability diagrams, ECE/TACE/NLL/Brier and prediction-vs-rater entropy.

Pick one or more probability layers (Image layers ``(C, *spatial)``, one per model or method, e.g.
one-hot vs SVLS vs mSVLS) and a target: one Labels layer (hard reference) or several Labels layers
(raters; the target becomes their mean, and the entropy scatter plot becomes available). The metrics
run in a worker thread; the themed plot and the table update when the layers' data change.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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
from napari_matplotlib.base import NapariMPLWidget
from napari_matplotlib.util import Interval

from ..core.calibration import (
    apply_temperature,
    brier_score,
    calibration_summary,
    fit_temperature,
    foreground_box_mask,
    thresholded_adaptive_ce,
)
from ..core.geometry import Geometry
from ..core.uncertainty import entropy_agreement
from ..workflow.figures import ModelResult, bin_rows, draw_entropy_scatter, draw_reliability, metric_rows
from ..workflow.tables import refuse_existing, write_csv
from ._case import case_of
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
from ._layer_choices import LayerWatcher, is_labels_layer, is_probability_layer, labels_problem, probability_problem
from ._layer_select import LayerSelect
from ._layout import full_width_after, scroll_area_for
from ._tables import fit_table

if TYPE_CHECKING:
    import napari

__all__ = [
    "CalibrationPlot",
    "CalibrationWidget",
    "TemperatureResult",
    "compute_calibration",
    "temperature_scale",
]

RELIABILITY = "Reliability diagram"
METRIC_COLUMNS = ["ECE %", "TACE", "NLL", "Brier", "ent. MAE"]
CLASS_COLUMNS = ["model", "class", "TACE", "Brier"]
ENTROPY_SCATTER = "Entropy: prediction vs raters"
SCALED_SUFFIX = " temperature-scaled"
#: Probabilities are clipped below at this value before taking logs to recover logits.
LOG_FLOOR = 1e-12


def _box_mask(
    target: np.ndarray,
    *,
    target_is_raters: bool,
    spacing: tuple[float, ...] | None,
    in_plane_margin: float,
    slice_margin: int,
) -> np.ndarray:
    foreground = target.max(axis=0) if target_is_raters else target
    return foreground_box_mask(
        foreground, spacing=spacing, in_plane_margin=in_plane_margin, slice_margin=slice_margin
    )


@dataclass(frozen=True)
class TemperatureResult:
    """A fitted temperature and the probabilities rescaled with it."""

    source: str
    temperature: float
    probs: np.ndarray


def temperature_scale(
    models: Mapping[str, Any],
    target: Any,
    *,
    target_is_raters: bool,
    restrict_to_box: bool = False,
    spacing: tuple[float, ...] | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
) -> list[TemperatureResult]:
    """Fit one temperature per model on the target and rescale its probabilities; runs off the GUI thread.

    The logits are recovered as ``ln p`` (exact up to a per-voxel constant, which the softmax ignores;
    probabilities are clipped at 1e-12 first), then
    :func:`~napari_seg_uncertainty.core.calibration.fit_temperature` and
    :func:`~napari_seg_uncertainty.core.calibration.apply_temperature` are applied.
    """
    target = np.asarray(target)
    mask = None
    if restrict_to_box:
        mask = _box_mask(
            target,
            target_is_raters=target_is_raters,
            spacing=spacing,
            in_plane_margin=in_plane_margin,
            slice_margin=slice_margin,
        )
    results = []
    for name, probs in models.items():
        try:
            p = np.asarray(probs)
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"probabilities must be floating point, got dtype {p.dtype}.")
            logits = np.log(np.maximum(p.astype(np.float64), LOG_FLOOR))
            t = fit_temperature(logits, target, mask=mask)
            results.append(TemperatureResult(name, t, apply_temperature(logits, temperature=t)))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
    return results


def compute_calibration(
    models: Mapping[str, Any],
    target: Any,
    *,
    target_is_raters: bool,
    n_bins: int = 10,
    closed: str = "right",
    tace_bins: int = 10,
    tace_threshold: float = 1e-3,
    restrict_to_box: bool = False,
    spacing: tuple[float, ...] | None = None,
    in_plane_margin: float = 8.0,
    slice_margin: int = 2,
    entropy_unit: str = "voxel",
) -> list[ModelResult]:
    """Calibration summary (and entropy agreement for raters) of every model; runs off the GUI thread.

    Parameters
    ----------
    models : mapping of str to array_like
        Layer name -> probabilities ``(C, *spatial)``.
    target : array_like
        Labels ``(*spatial)`` or, with ``target_is_raters``, a rater stack ``(R, *spatial)``.
    target_is_raters : bool
        Whether ``target`` is a rater stack (soft target = rater mean; entropy agreement computed).
    n_bins, closed, tace_bins, tace_threshold
        See :func:`~napari_seg_uncertainty.core.calibration.calibration_summary`.
    restrict_to_box : bool
        Evaluate inside the dilated bounding box of the foreground (of any rater).
    spacing, in_plane_margin, slice_margin
        See :func:`~napari_seg_uncertainty.core.calibration.foreground_box_mask`.
    entropy_unit : {"voxel", "slice", "image"}
        Points of the entropy scatter plot.

    Returns
    -------
    list of ModelResult
        One per model, in the order given, with the per-class TACE and Brier score.
    """
    target = np.asarray(target)
    mask = None
    if restrict_to_box:
        mask = _box_mask(
            target,
            target_is_raters=target_is_raters,
            spacing=spacing,
            in_plane_margin=in_plane_margin,
            slice_margin=slice_margin,
        )
    results = []
    for name, probs in models.items():
        try:
            summary = calibration_summary(
                probs,
                target,
                n_bins=n_bins,
                tace_bins=tace_bins,
                tace_threshold=tace_threshold,
                mask=mask,
                closed=closed,  # type: ignore[arg-type]
            )
            agreement = (
                entropy_agreement(probs, target, unit=entropy_unit, mask=mask)  # type: ignore[arg-type]
                if target_is_raters
                else None
            )
            class_tace = thresholded_adaptive_ce(
                probs, target, n_bins=tace_bins, threshold=tace_threshold, mask=mask, per_class=True
            )
            class_brier = brier_score(probs, target, mask=mask, reduction="none")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        results.append(
            ModelResult(
                name=name,
                summary=summary,
                entropy=agreement,
                class_tace=np.asarray(class_tace, dtype=np.float64),
                class_brier=np.asarray(class_brier, dtype=np.float64),
            )
        )
    return results


def draw_results(figure: Any, results: list[ModelResult], *, kind: str, min_count: int) -> dict[str, Any]:
    """Draw ``kind`` (reliability diagram or entropy scatter plot) of ``results`` onto ``figure``; the artists."""
    figure.clear()
    message = None
    if not results:
        message = "Select probability and target layers,\nthen press Compute."
    elif kind == ENTROPY_SCATTER and all(r.entropy is None for r in results):
        message = "Select two or more rater Labels layers as the target\nto compare prediction and rater entropy."
    if message is not None:
        figure.text(0.5, 0.5, message, ha="center", va="center")
        return {}
    if kind == ENTROPY_SCATTER:
        return draw_entropy_scatter(figure, results)
    return draw_reliability(figure, results, min_count=min_count)


def render_figure(
    results: list[ModelResult],
    *,
    kind: str,
    min_count: int,
    size: tuple[float, float],
    dpi: float,
    style: Any,
) -> tuple[Any, Any, dict[str, Any]]:
    """Draw and rasterise the plot on a new Agg figure (runs in a worker: no Qt object is touched).

    Returns the figure, its Agg canvas (holding the rendered pixels) and the artists.
    """
    from matplotlib import style as mplstyle
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with mplstyle.context(style):
        figure = Figure(figsize=size, dpi=dpi, layout="constrained")
        canvas = FigureCanvasAgg(figure)
        artists = draw_results(figure, results, kind=kind, min_count=min_count)
        canvas.draw()
    return figure, canvas, artists


class CalibrationPlot(NapariMPLWidget):
    """Themed matplotlib canvas that draws the current results (redrawn on theme changes).

    New results are drawn and rasterised in a worker thread on a fresh figure, which then replaces the
    canvas's figure with its pixels: a reliability diagram costs a few hundred milliseconds of
    matplotlib, which would otherwise freeze the window.
    """

    n_layers_input = Interval(None, None)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: Any = None) -> None:
        from qtpy.QtCore import QTimer

        super().__init__(napari_viewer, parent=parent)
        self.results: list[ModelResult] = []
        self.kind = RELIABILITY
        self.min_count = 1
        self.artists: dict[str, Any] = {}
        self.rendering = False
        self._generation = 0
        self._when_rendered: list[Any] = []
        self.setMinimumHeight(360)
        QTimer.singleShot(0, self._first_draw)  # not while the dock opens

    def _first_draw(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed before the first turn
            if not self.rendering:
                self._draw()

    def _setup_callbacks(self) -> None:
        """Redraw on theme changes only (connected by the base class), not on slice or layer selection.

        The plots summarise whole volumes and the selected layers of the dock, so napari-matplotlib's
        default redraws on every slider step and layer selection would only cost time.
        """

    def show_results(self, results: list[ModelResult], *, kind: str | None = None, done: Any = None) -> None:
        """Replace the results (and optionally the plot kind) and redraw in a worker; ``done()`` when shown."""
        self.results = list(results)
        if kind is not None:
            self.kind = kind
        if done is not None:
            self._when_rendered.append(done)
        self._generation += 1
        generation = self._generation
        figure = self.canvas.figure
        self.rendering = True
        run_in_thread(
            render_figure,
            list(self.results),
            kind=self.kind,
            min_count=self.min_count,
            size=tuple(figure.get_size_inches()),
            dpi=float(figure.dpi),
            style=self.napari_theme_style_sheet,
            action="Calibration plot",
            returned=lambda out: self._adopt(out, generation, getattr(figure, "_original_dpi", figure.dpi)),
            errored=lambda _exc: self._rendered(generation),
        )

    def _adopt(self, out: tuple[Any, Any, dict[str, Any]], generation: int, original_dpi: float) -> None:
        """Put a figure rendered in the worker on the canvas (GUI thread; cheap: no drawing)."""
        if generation != self._generation:
            return  # a newer plot is on its way
        figure, agg, artists = out
        try:
            canvas = self.canvas
            old = canvas.figure
            figure._original_dpi = original_dpi
            figure._canvas_callbacks = old._canvas_callbacks  # the toolbar's and the widget's connections
            canvas.figure = figure
            figure.set_canvas(canvas)
            if canvas.get_width_height(physical=True) == agg.get_width_height(physical=True):
                canvas.renderer = agg.renderer
                canvas._lastKey = agg._lastKey
                canvas.update()
            else:  # resized meanwhile: draw once at the new size
                canvas.draw_idle()
        except RuntimeError:  # the dock was closed
            return
        self.artists = artists
        self._rendered(generation)

    def _rendered(self, generation: int) -> None:
        if generation != self._generation:
            return
        self.rendering = False
        callbacks, self._when_rendered = self._when_rendered, []
        for callback in callbacks:
            callback()

    def clear(self) -> None:
        """Remove all axes."""
        self.figure.clear()

    def draw(self) -> None:
        """Draw the reliability diagram or the entropy scatter plot of ``self.results`` (on the GUI thread)."""
        self.artists = draw_results(self.figure, self.results, kind=self.kind, min_count=self.min_count)


class CalibrationWidget(Container):
    """Reliability diagram, calibration metrics and rater-entropy comparison for probability layers.

    Select one probability layer per model (``(C, *spatial)`` Image layers) and one Labels layer as
    the reference, or several Labels layers (one per rater) for a soft target. ``Compute`` fills the
    table (ECE in %, TACE, NLL, Brier, entropy MAE) and draws the plot; with "Update when layers
    change" ticked, edits of the selected layers or of the settings recompute it.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=False)
        from qtpy.QtCore import QTimer

        self._content = Container(labels=True)
        viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self._viewer = viewer
        self.results: list[ModelResult] = []
        self.temperatures: dict[str, float] = {}
        self._compute_after_fit = False
        self.worker: Any = None
        self._pending = False
        self._watched: list[Any] = []
        self._class_names: list[str] = []

        self._probabilities = LayerSelect(
            viewer,
            is_probability_layer,
            explain=probability_problem,
            label="Probabilities",
            tooltip=(
                "Image layers with class probabilities (C, *spatial) summing to 1 over C, one per model or "
                "method; select several (Ctrl/Shift-click) to overlay them."
            ),
        )
        self._target = LayerSelect(
            viewer,
            is_labels_layer,
            explain=labels_problem,
            label="Target",
            tooltip=(
                "One Labels layer: the reference labels. Several Labels layers: raters; the target is their "
                "mean (soft target) and the entropy plot compares prediction and rater entropy."
            ),
        )
        self._n_bins = SpinBox(label="Bins", value=10, min=2, max=100, tooltip="Equal-width confidence bins.")
        self._closed = ComboBox(
            label="Bin intervals",
            value="right",
            choices=[("(lo, hi]  (Mehrtash et al.)", "right"), ("[lo, hi)  (Guo et al.)", "left")],
        )
        self._tace_bins = SpinBox(label="TACE bins", value=10, min=1, max=100)
        self._tace_threshold = FloatSpinBox(
            label="TACE threshold", value=0.001, min=0.0, max=0.5, step=0.0001
        )
        self._restrict = CheckBox(
            text="Foreground box only",
            value=False,
            tooltip=(
                "Evaluate inside the bounding box of the foreground dilated by the margins (calibration "
                "paper), so easy background far from the structures does not dominate."
            ),
        )
        self._margin = FloatSpinBox(label="In-plane margin (mm)", value=8.0, min=0.0, max=500.0, step=0.5)
        self._slice_margin = SpinBox(label="Slice margin", value=2, min=0, max=100)
        self._min_count = SpinBox(
            label="Min. voxels per bin",
            value=1,
            min=1,
            max=10**9,
            tooltip=("Bins with fewer voxels are not drawn (they still count in the metrics)."),
        )
        self._plot_kind = ComboBox(label="Plot", value=RELIABILITY, choices=[RELIABILITY, ENTROPY_SCATTER])
        self._entropy_unit = ComboBox(
            label="Entropy points",
            value="voxel",
            choices=[("voxels (sample)", "voxel"), ("slices", "slice"), ("whole image", "image")],
        )
        self._live = CheckBox(text="Update live", value=True, tooltip="Recompute when the layers or settings change.")
        self._compute = PushButton(text="Compute")
        self._status = Label(value="Select probability and target layers, then press Compute.")
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(120)  # wraps instead of widening the dock
        self._table = Table(value=[[]], tooltip="Calibration metrics per probability layer; ECE in %.")
        self._class_table = Table(value=[[]], tooltip="TACE and Brier score of each class.")
        self._save_figure = PushButton(text="Save figure (PNG/SVG)…")
        self._save_csv = PushButton(text="Save CSV…")
        self._fit_temperature = PushButton(
            text="Fit temperature scaling",
            tooltip=(
                "Fit one temperature per selected probability layer on the target (post-hoc calibration), "
                "add the rescaled probabilities as '<name> temperature-scaled' and compare them."
            ),
        )

        self._compute.changed.connect(self._on_compute_clicked)
        self._fit_temperature.changed.connect(self._on_fit_temperature)
        self._plot_kind.changed.connect(self._redraw)
        self._min_count.changed.connect(self._redraw)
        for control in (
            self._n_bins,
            self._closed,
            self._tace_bins,
            self._tace_threshold,
            self._restrict,
            self._margin,
            self._slice_margin,
            self._entropy_unit,
        ):
            control.changed.connect(self._schedule_update)
        self._save_figure.changed.connect(self._on_save_figure)
        self._save_csv.changed.connect(self._on_save_csv)
        self._content.extend(
            [
                self._probabilities,
                self._target,
                self._n_bins,
                self._closed,
                self._tace_bins,
                self._tace_threshold,
                self._restrict,
                self._margin,
                self._slice_margin,
                self._plot_kind,
                self._entropy_unit,
                self._min_count,
                self._live,
                self._compute,
                self._fit_temperature,
                self._save_figure,
                self._save_csv,
            ]
        )
        full_width_after(self._content, self._fit_temperature, self._status, self._table, self._class_table)
        fit_table(self._table, min_height=90)
        fit_table(self._class_table, min_height=120, show_index=False)
        for select in (self._probabilities, self._target):
            select.native.setMinimumHeight(64)
            select.native.setMaximumHeight(110)
        self.plot = CalibrationPlot(viewer)
        self._content.native.layout().addWidget(self.plot)
        self.scroll_area = scroll_area_for(self, self._content, min_width=300, min_height=150)

        self._timer = QTimer(self.native)  # dies with the dock: no timeout reaches a deleted widget
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.compute)
        self._watcher = LayerWatcher(viewer, self._refresh_layer_choices, owner=self.native)
        tabify_when_docked(self.native)

    # choices ----------------------------------------------------------------------------------------
    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer lists (napari calls this on layer changes; the controls sit in a scroll area)."""
        self._refresh_layer_choices()

    def _refresh_layer_choices(self, _event: Any = None) -> None:
        self._probabilities.reset_choices()
        self._target.reset_choices()

    # compute ----------------------------------------------------------------------------------------
    def _on_compute_clicked(self, _value: Any = None) -> None:
        self.compute()

    def compute(self) -> Any:
        """Start computing the metrics of the selected layers in a worker; returns the worker (or None)."""
        if self.worker is not None and self.worker.is_running:
            self._pending = True
            return self.worker
        with notify_errors("Calibration"):
            models, target, is_raters, spacing = self._collect_inputs()
            self._watch([*self._probabilities.value, *self._target.value])
            self._status.value = f"Computing the calibration of {len(models)} layer(s)…"
            self._compute.enabled = False
            self.worker = run_in_thread(
                compute_calibration,
                models,
                target,
                target_is_raters=is_raters,
                n_bins=int(self._n_bins.value),
                closed=str(self._closed.value),
                tace_bins=int(self._tace_bins.value),
                tace_threshold=float(self._tace_threshold.value),
                restrict_to_box=bool(self._restrict.value),
                spacing=spacing,
                in_plane_margin=float(self._margin.value),
                slice_margin=int(self._slice_margin.value),
                entropy_unit=str(self._entropy_unit.value),
                action="Calibration",
                returned=self._show,
                errored=self._on_error,
                finished=self._on_finished,
            )
            return self.worker
        return None

    def _on_fit_temperature(self, _value: Any = None) -> None:
        self.fit_temperatures()

    def fit_temperatures(self) -> Any:
        """Fit temperature scaling for the selected layers in a worker; returns the worker (or None)."""
        with notify_errors("Temperature scaling"):
            models, target, is_raters, spacing = self._collect_inputs()
            models = {n: p for n, p in models.items() if not n.endswith(SCALED_SUFFIX)}
            if not models:
                raise ValueError("select the original probability layers, not temperature-scaled ones.")
            self._status.value = "Fitting temperatures…"
            self._fit_temperature.enabled = False
            self.worker = run_in_thread(
                temperature_scale,
                models,
                target,
                target_is_raters=is_raters,
                restrict_to_box=bool(self._restrict.value),
                spacing=spacing,
                in_plane_margin=float(self._margin.value),
                slice_margin=int(self._slice_margin.value),
                action="Temperature scaling",
                returned=self._show_temperatures,
                errored=self._on_error,
                finished=self._on_fit_finished,
            )
            return self.worker
        return None

    def _show_temperatures(self, results: list[TemperatureResult]) -> None:
        self.temperatures = {r.source: r.temperature for r in results}
        sources = {layer.name: layer for layer in self._probabilities.value}
        added = []
        for r in results:
            source = sources.get(r.source)
            if source is None:  # renamed or removed while fitting
                continue
            added.append(
                upsert_layer(
                    self._viewer,
                    r.probs.astype(np.float32, copy=False),
                    name=f"{r.source}{SCALED_SUFFIX}",
                    layer_type="image",
                    geometry=Geometry.of(source, ndim=r.probs.ndim - 1),
                    leading_axes=1,
                    case=case_of(source),
                    metadata={**dict(source.metadata), "temperature": r.temperature, "source": r.source},
                    visible=False,
                )
            )
        self._status.value = "Temperatures: " + ", ".join(
            f"{n} T = {t:.3f}" for n, t in self.temperatures.items()
        )
        self._probabilities.reset_choices()
        self._probabilities.value = [*(sources[n] for n in self.temperatures if n in sources), *added]
        self._compute_after_fit = True

    def _on_fit_finished(self) -> None:
        self._fit_temperature.enabled = True
        if self._compute_after_fit:
            self._compute_after_fit = False
            self.compute()  # compare the original and the rescaled layers

    def _collect_inputs(self) -> tuple[dict[str, np.ndarray], np.ndarray, bool, tuple[float, ...]]:
        self._probabilities.check()
        self._target.check()
        prob_layers = list(self._probabilities.value)
        target_layers = list(self._target.value)
        if not prob_layers:
            raise ValueError("no probability layer selected; select one Image layer (C, *spatial) per model.")
        if not target_layers:
            raise ValueError("no target selected; select one Labels layer (reference) or several (raters).")
        for layer in prob_layers:
            problem = probability_problem(layer)
            if problem:
                raise ValueError(problem)
        for layer in target_layers:
            problem = labels_problem(layer)
            if problem:
                raise ValueError(problem)
        target_names = [layer.name for layer in target_layers]
        targets = [np.asarray(layer.data) for layer in target_layers]
        shapes = {t.shape for t in targets}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {t.shape}" for n, t in zip(target_names, targets))
            raise ValueError(
                f"the target layers have different shapes ({detail}); raters must share one grid."
            )
        is_raters = len(targets) > 1
        target = np.stack(targets) if is_raters else targets[0]
        grid = Geometry.of(target_layers[0], ndim=targets[0].ndim)
        models = {}
        for layer in prob_layers:
            data = np.asarray(layer.data)
            if data.shape[1:] != targets[0].shape:
                raise ValueError(
                    f"layer {layer.name!r} has shape {data.shape}; expected class probabilities (C, *spatial) "
                    f"with the spatial shape {targets[0].shape} of the target {target_names[0]!r}."
                )
            if not Geometry.of(layer, ndim=targets[0].ndim).same_grid(grid):
                show_warning(
                    f"Calibration: layer {layer.name!r} is placed differently from the target "
                    f"{target_names[0]!r} (scale {tuple(layer.scale)[1:]} vs {tuple(target_layers[0].scale)}, "
                    f"translate {tuple(layer.translate)[1:]} vs {tuple(target_layers[0].translate)}); "
                    "voxels are compared by index."
                )
            models[layer.name] = data
        self._class_names = _class_names(prob_layers, target_layers, int(np.shape(models[prob_layers[0].name])[0]))
        return models, target, is_raters, grid.spacing

    def _show(self, results: list[ModelResult]) -> None:
        self.results = results
        self._table.value = {
            "data": [
                [
                    _number(100 * r.summary.ece, 3),
                    _number(r.summary.tace, 5),
                    _number(r.summary.nll, 4),
                    _number(r.summary.brier, 5),
                    _number(r.entropy.mae, 4) if r.entropy is not None else "–",
                ]
                for r in results
            ],
            "index": [r.name for r in results],
            "columns": METRIC_COLUMNS,
        }
        names = self._class_names
        class_rows = [
            [r.name, names[k] if k < len(names) else f"class {k}", _number(tace, 5), _number(brier, 5)]
            for r in results
            if r.class_tace is not None and r.class_brier is not None
            for k, (tace, brier) in enumerate(zip(r.class_tace, r.class_brier))
        ]
        self._class_table.value = {
            "data": class_rows,
            "index": [str(i + 1) for i in range(len(class_rows))],
            "columns": CLASS_COLUMNS,
        }
        self._status.value = (
            f"{len(results)} model(s) on {results[0].summary.voxels:,} voxels. ECE in %; TACE and Brier per "
            "class below." if results else ""
        )
        self._redraw()

    def _on_error(self, _exc: BaseException) -> None:
        self._status.value = "Failed; see the notification."

    def _on_finished(self) -> None:
        if self.plot.rendering:  # the plot is still being drawn: Compute comes back when it is shown
            self.plot._when_rendered.append(self._on_finished)
            return
        self._compute.enabled = True
        if self._pending:
            self._pending = False
            self._timer.start()

    def _redraw(self, _value: Any = None) -> None:
        self.plot.min_count = int(self._min_count.value)
        self.plot.show_results(self.results, kind=str(self._plot_kind.value))

    # live updates -----------------------------------------------------------------------------------
    def _watch(self, layers: list[Any]) -> None:
        for layer in self._watched:
            layer.events.data.disconnect(self._schedule_update)
        self._watched = list(layers)
        for layer in self._watched:
            layer.events.data.connect(self._schedule_update)

    def _schedule_update(self, _event: Any = None) -> None:
        """Recompute shortly after a change (debounced), if live updates are on and results exist."""
        if self._live.value and self.results:
            with contextlib.suppress(RuntimeError):  # the dock is being deleted
                self._timer.start()

    # export -----------------------------------------------------------------------------------------
    def export_figure(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save the current plot; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).

        An existing file is replaced only with ``overwrite``; the figure is written to a temporary file
        and renamed into place, so an interrupted save never leaves a half-written file.
        """
        from napari.utils.theme import get_theme

        path = Path(path)
        if path.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise ValueError(f"figure path must end in .png, .svg or .pdf, got {path.name!r}.")
        refuse_existing(path, overwrite=overwrite)
        background = get_theme(self._viewer.theme).background.as_hex()
        handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as stream:
                figure_format = path.suffix[1:].lower()
                self.plot.figure.savefig(stream, dpi=150, facecolor=background, format=figure_format)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return path

    def export_csv(self, path: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
        """Save the per-bin table to ``path`` and the metrics to ``<stem>_metrics.csv`` next to it.

        Nothing is written when either file exists, unless ``overwrite``.
        """
        path = Path(path)
        if path.suffix.lower() != ".csv":
            path = path.with_suffix(".csv")
        metrics_path = path.with_name(f"{path.stem}_metrics.csv")
        refuse_existing(path, metrics_path, overwrite=overwrite)
        bins_path = write_csv(path, bin_rows(self.results), overwrite=overwrite)
        return bins_path, write_csv(metrics_path, metric_rows(self.results), overwrite=overwrite)

    def _on_save_figure(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(
            self.native,
            "Save figure",
            "calibration.png",
            "PNG image (*.png);;SVG vector (*.svg);;PDF (*.pdf)",
        )
        if path:
            with notify_errors("Save figure"):
                # the save dialog has asked the user before choosing an existing file
                show_info(f"Saved {self.export_figure(path, overwrite=True)}")

    def _on_save_csv(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog

        if not self.results:
            show_error("Save CSV failed: nothing computed yet; press Compute first.")
            return
        path, _ = QFileDialog.getSaveFileName(self.native, "Save CSV", "calibration.csv", "CSV (*.csv)")
        if path:
            with notify_errors("Save CSV"):
                # the save dialog has asked before replacing the table; its _metrics.csv goes with it
                bins_path, metrics_path = self.export_csv(path, overwrite=True)
                show_info(f"Saved {bins_path} and {metrics_path}")


def _class_names(prob_layers: list[Any], target_layers: list[Any], num_classes: int) -> list[str]:
    """Class names from the first layer whose metadata names all ``num_classes`` classes, else "class k"."""
    for layer in [*prob_layers, *target_layers]:
        names = (layer.metadata or {}).get("class_names")
        if names is not None and len(names) >= num_classes:
            return [str(n) for n in list(names)[:num_classes]]
    return [f"class {k}" for k in range(num_classes)]


def _number(value: Any, digits: int) -> Any:
    """A rounded float for a table cell ("n/a" for NaN)."""
    value = float(value)
    return "n/a" if not np.isfinite(value) else round(value, digits)
