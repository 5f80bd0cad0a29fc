"""Dock widget "Calibration": reliability diagrams, ECE/TACE/NLL/Brier and prediction-vs-rater entropy.

Pick one or more probability layers (Image layers ``(C, *spatial)``, one per model or method, e.g.
one-hot vs SVLS vs mSVLS) and a target: one Labels layer (hard reference) or several Labels layers
(raters; the target becomes their mean, and the entropy scatter plot becomes available). The metrics
(:mod:`napari_seg_uncertainty.workflow.calibration`) run in a worker thread; the themed plot and the
table update when the layers' data change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox, Table

from ..core._atomic import atomic_write
from ..core.geometry import Geometry
from ..workflow.calibration import (
    ENTROPY_SCATTER,
    RELIABILITY,
    TemperatureResult,
    compute_calibration,
    temperature_scale,
)
from ..workflow.figures import ModelResult, bin_rows, metric_rows
from ..workflow.tables import refuse_existing, write_csv
from ._base import DockWidget
from ._calibration_plot import CalibrationPlot
from ._case import case_of
from ._common import notify_errors, show_error, show_info, show_warning, upsert_layer
from ._layer_choices import is_labels_layer, is_probability_layer, labels_problem, probability_problem
from ._layout import full_width_after
from ._tables import fit_table, table_cell

if TYPE_CHECKING:
    import napari

__all__ = ["ENTROPY_SCATTER", "RELIABILITY", "CalibrationWidget"]

METRIC_COLUMNS = ["ECE %", "TACE", "NLL", "Brier", "ent. MAE"]
CLASS_COLUMNS = ["model", "class", "TACE", "Brier"]
SCALED_SUFFIX = " temperature-scaled"
#: Delay of a live recomputation after the last change (ms).
LIVE_DELAY_MS = 300


class CalibrationWidget(DockWidget):
    """Reliability diagram, calibration metrics and rater-entropy comparison for probability layers.

    Select one probability layer per model (``(C, *spatial)`` Image layers) and one Labels layer as
    the reference, or several Labels layers (one per rater) for a soft target. ``Compute`` fills the
    table (ECE in %, TACE, NLL, Brier, entropy MAE) and draws the plot; with "Update live" ticked,
    edits of the selected layers or of the settings recompute it. :meth:`compute` and
    :meth:`fit_temperatures` return their worker (``None`` on bad input) and emit :attr:`computed`
    with their results once shown.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose probability and Labels layers are compared (napari passes it in).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from qtpy.QtCore import QTimer

        super().__init__(viewer, status="Select probability and target layers, then press Compute.")
        self.results: list[ModelResult] = []
        self.temperatures: dict[str, float] = {}
        self._pending = False
        self._watched: list[Any] = []
        self._class_names: list[str] = []
        self._build_inputs()
        self._build_settings()
        self._build_outputs()
        self.content.extend([
            self._probabilities, self._target, self._num_bins, self._closed, self._tace_num_bins,
            self._tace_threshold, self._restrict, self._margin, self._slice_margin, self._plot_kind,
            self._entropy_unit, self._min_count, self._live, self._compute, self._fit_temperature,
            self._save_figure, self._save_csv,
        ])
        full_width_after(self.content, self._fit_temperature, self._status, self._table, self._class_table)
        self.plot = CalibrationPlot(self._viewer)
        self.content.native.layout().addWidget(self.plot)
        self.disable_while_busy(self._compute, self._fit_temperature)
        self.finish_layout()
        self._timer = QTimer(self.native)  # dies with the dock: no timeout reaches a deleted widget
        self._timer.setSingleShot(True)
        self._timer.setInterval(LIVE_DELAY_MS)
        self._timer.timeout.connect(lambda: self.compute())

    def _build_inputs(self) -> None:
        self._probabilities = self.layer_select(
            is_probability_layer,
            explain=probability_problem,
            label="Probabilities",
            tooltip=(
                "Image layers with class probabilities (C, *spatial) summing to 1 over C, one per model or "
                "method; select several (Ctrl/Shift-click) to overlay them."
            ),
        )
        self._target = self.layer_select(
            is_labels_layer,
            explain=labels_problem,
            label="Target",
            tooltip=(
                "One Labels layer: the reference labels. Several Labels layers: raters; the target is their "
                "mean (soft target) and the entropy plot compares prediction and rater entropy."
            ),
        )

    def _build_settings(self) -> None:
        self._num_bins = SpinBox(label="Bins", value=10, min=2, max=100, tooltip="Equal-width confidence bins.")
        self._closed = ComboBox(
            label="Bin intervals",
            value="right",
            choices=[("(lo, hi]  (Mehrtash et al.)", "right"), ("[lo, hi)  (Guo et al.)", "left")],
        )
        self._tace_num_bins = SpinBox(label="TACE bins", value=10, min=1, max=100)
        self._tace_threshold = FloatSpinBox(label="TACE threshold", value=0.001, min=0.0, max=0.5, step=0.0001)
        self._restrict = CheckBox(text="Foreground box only", value=False, tooltip=(
            "Evaluate inside the bounding box of the foreground dilated by the margins (calibration paper), so "
            "easy background far from the structures does not dominate."))
        self._margin = FloatSpinBox(label="In-plane margin (mm)", value=8.0, min=0.0, max=500.0, step=0.5)
        self._slice_margin = SpinBox(label="Slice margin", value=2, min=0, max=100)
        self._min_count = SpinBox(label="Min. voxels per bin", value=1, min=1, max=10**9,
                                  tooltip="Bins with fewer voxels are not drawn (they still count in the metrics).")
        self._plot_kind = ComboBox(label="Plot", value=RELIABILITY, choices=[RELIABILITY, ENTROPY_SCATTER])
        self._entropy_unit = ComboBox(
            label="Entropy points",
            value="voxel",
            choices=[("voxels (sample)", "voxel"), ("slices", "slice"), ("whole image", "image")],
        )
        self._live = CheckBox(text="Update live", value=True, tooltip="Recompute when the layers or settings change.")
        self._plot_kind.changed.connect(self._redraw)
        self._min_count.changed.connect(self._redraw)
        for control in (self._num_bins, self._closed, self._tace_num_bins, self._tace_threshold, self._restrict,
                        self._margin, self._slice_margin, self._entropy_unit):
            control.changed.connect(self._schedule_update)

    def _build_outputs(self) -> None:
        self._compute = PushButton(text="Compute")
        self._fit_temperature = PushButton(text="Fit temperature scaling", tooltip=(
            "Fit one temperature per selected probability layer on the target (post-hoc calibration), add the "
            "rescaled probabilities as '<name> temperature-scaled' and compare them."))
        self._table = Table(value=[[]], tooltip="Calibration metrics per probability layer; ECE in %.")
        self._class_table = Table(value=[[]], tooltip="TACE and Brier score of each class.")
        self._save_figure = PushButton(text="Save figure (PNG/SVG)…")
        self._save_csv = PushButton(text="Save CSV…")
        fit_table(self._table, min_height=90)
        fit_table(self._class_table, min_height=120, show_index=False)
        self._compute.changed.connect(lambda _value=None: self.compute())
        self._fit_temperature.changed.connect(lambda _value=None: self.fit_temperatures())
        self._save_figure.changed.connect(self._on_save_figure)
        self._save_csv.changed.connect(self._on_save_csv)

    # compute ----------------------------------------------------------------------------------------
    def compute(
        self,
        *,
        probabilities: Sequence[Any] | None = None,
        target: Sequence[Any] | None = None,
        num_bins: int | None = None,
        closed: str | None = None,
        tace_num_bins: int | None = None,
        tace_threshold: float | None = None,
        restrict_to_box: bool | None = None,
        in_plane_margin: float | None = None,
        slice_margin: int | None = None,
        entropy_unit: str | None = None,
        plot: str | None = None,
    ) -> Any:
        """Compute the metrics of the selected layers in a worker; returns the worker (or None on bad input).

        Keywords given set the inputs first: ``probabilities`` (one layer or name per model), ``target``
        (one Labels layer, or several raters), the settings of
        :func:`~napari_seg_uncertainty.workflow.calibration.compute_calibration` and ``plot``
        (:data:`RELIABILITY` or :data:`ENTROPY_SCATTER`). :attr:`computed` is emitted with the list of
        :class:`~napari_seg_uncertainty.workflow.figures.ModelResult` once the tables and the plot are
        shown. A request while a computation runs is computed after it.
        """
        self.apply([
            (self._probabilities, probabilities), (self._target, target), (self._num_bins, num_bins),
            (self._closed, closed), (self._tace_num_bins, tace_num_bins), (self._tace_threshold, tace_threshold),
            (self._restrict, restrict_to_box), (self._margin, in_plane_margin), (self._slice_margin, slice_margin),
            (self._entropy_unit, entropy_unit), (self._plot_kind, plot),
        ])
        if self.busy:
            self._pending = True
            return self.worker
        with notify_errors("Calibration"):
            models, target_data, is_raters, spacing = self._collect_inputs()
            self._watch([*self._probabilities.value, *self._target.value])
            return self.run(
                compute_calibration, models, target_data, target_is_raters=is_raters,
                num_bins=int(self._num_bins.value), closed=str(self._closed.value),
                tace_num_bins=int(self._tace_num_bins.value), tace_threshold=float(self._tace_threshold.value),
                restrict_to_box=bool(self._restrict.value), spacing=spacing,
                in_plane_margin=float(self._margin.value), slice_margin=int(self._slice_margin.value),
                entropy_unit=str(self._entropy_unit.value), action="Calibration",
                message=f"Computing the calibration of {len(models)} layer(s)…", returned=self._show,
                errored=lambda _exc: self._recompute_if_pending(),
            )
        return None

    def fit_temperatures(
        self, *, probabilities: Sequence[Any] | None = None, target: Sequence[Any] | None = None
    ) -> Any:
        """Fit temperature scaling for the selected layers in a worker; returns the worker (or None).

        The rescaled probabilities are added as ``"<name> temperature-scaled"``; :attr:`computed` is
        emitted with the list of :class:`~napari_seg_uncertainty.workflow.calibration.TemperatureResult`,
        then the original and rescaled layers are compared (:meth:`compute`, a second :attr:`computed`).
        """
        self.apply([(self._probabilities, probabilities), (self._target, target)])
        with notify_errors("Temperature scaling"):
            models, target_data, is_raters, spacing = self._collect_inputs()
            models = {n: p for n, p in models.items() if not n.endswith(SCALED_SUFFIX)}
            if not models:
                raise ValueError("select the original probability layers, not temperature-scaled ones.")
            return self.run(
                temperature_scale, models, target_data, target_is_raters=is_raters,
                restrict_to_box=bool(self._restrict.value), spacing=spacing,
                in_plane_margin=float(self._margin.value), slice_margin=int(self._slice_margin.value),
                action="Temperature scaling", message="Fitting temperatures…", returned=self._show_temperatures,
            )
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
        self._probabilities.reset_choices()
        self._probabilities.value = [*(sources[n] for n in self.temperatures if n in sources), *added]
        self.done(results, "Temperatures: " + ", ".join(f"{n} T = {t:.3f}" for n, t in self.temperatures.items()))
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
                [table_cell(100 * r.summary.ece), table_cell(r.summary.tace), table_cell(r.summary.nll),
                 table_cell(r.summary.brier), table_cell(r.entropy.mae) if r.entropy is not None else "–"]
                for r in results
            ],
            "index": [r.name for r in results],
            "columns": METRIC_COLUMNS,
        }
        names = self._class_names
        class_rows = [
            [r.name, names[k] if k < len(names) else f"class {k}", table_cell(tace), table_cell(brier)]
            for r in results
            if r.class_tace is not None and r.class_brier is not None
            for k, (tace, brier) in enumerate(zip(r.class_tace, r.class_brier))
        ]
        self._class_table.value = {
            "data": class_rows,
            "index": [str(i + 1) for i in range(len(class_rows))],
            "columns": CLASS_COLUMNS,
        }
        status = (f"{len(results)} model(s) on {results[0].summary.voxels:,} voxels. ECE in %; TACE and Brier per "
                  "class below." if results else "")
        self.set_status(status)
        self.plot.min_count = int(self._min_count.value)
        self.plot.show_results(self.results, kind=str(self._plot_kind.value),
                               done=lambda: self._shown(results, status))

    def _shown(self, results: list[ModelResult], status: str) -> None:
        """Tables and plot are on show: leave the busy state, then run a recomputation asked for meanwhile."""
        self.done(results, status)
        self._recompute_if_pending()

    def _recompute_if_pending(self) -> None:
        if self._pending:
            self._pending = False
            with contextlib.suppress(RuntimeError):  # the dock is being deleted
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
        with atomic_write(path, overwrite=overwrite) as temporary:
            self.plot.figure.savefig(temporary, dpi=150, facecolor=background, format=path.suffix[1:].lower())
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
