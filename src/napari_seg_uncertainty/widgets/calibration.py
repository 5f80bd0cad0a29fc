"""Dock widget "Calibration": reliability diagrams, ECE/TACE/NLL/Brier and prediction-vs-rater entropy.

Pick one or more probability layers (Image layers ``(C, *spatial)``, one per model or method, e.g.
one-hot vs SVLS vs mSVLS) and a target: one Labels layer (hard reference) or several Labels layers
(raters; the target becomes their mean, and the entropy scatter plot becomes available). The metrics
run in a worker thread; the themed plot and the table update when the layers' data change.
"""

from __future__ import annotations

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
    Select,
    SpinBox,
    Table,
)
from napari_matplotlib.base import NapariMPLWidget
from napari_matplotlib.util import Interval

from ..core.calibration import apply_temperature, calibration_summary, fit_temperature, foreground_box_mask
from ..core.uncertainty import entropy_agreement
from ._calibration_plots import (
    ModelResult,
    bin_rows,
    draw_entropy_scatter,
    draw_reliability,
    metric_rows,
    refuse_existing,
    write_csv,
)
from ._common import (
    connect_layer_list_changes,
    layer_names,
    notify_errors,
    run_in_thread,
    show_error,
    show_info,
    upsert_layer,
)

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
        One per model, in the order given.
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
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        results.append(ModelResult(name=name, summary=summary, entropy=agreement))
    return results


class CalibrationPlot(NapariMPLWidget):
    """Themed matplotlib canvas that draws the current results (redrawn on theme and slice changes)."""

    n_layers_input = Interval(None, None)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: Any = None) -> None:
        super().__init__(napari_viewer, parent=parent)
        self.results: list[ModelResult] = []
        self.kind = RELIABILITY
        self.min_count = 1
        self.artists: dict[str, Any] = {}
        self.setMinimumHeight(360)
        self._draw()

    def _setup_callbacks(self) -> None:
        """Redraw on theme changes only (connected by the base class), not on slice or layer selection.

        The plots summarise whole volumes and the selected layers of the dock, so napari-matplotlib's
        default redraws on every slider step and layer selection would only cost time.
        """

    def show_results(self, results: list[ModelResult], *, kind: str | None = None) -> None:
        """Replace the results (and optionally the plot kind) and redraw."""
        self.results = list(results)
        if kind is not None:
            self.kind = kind
        self._draw()

    def clear(self) -> None:
        """Remove all axes."""
        self.figure.clear()

    def draw(self) -> None:
        """Draw the reliability diagram or the entropy scatter plot of ``self.results``."""
        if not self.results:
            self.artists = {}
            self.figure.text(
                0.5,
                0.5,
                "Select probability and target layers,\nthen press Compute.",
                ha="center",
                va="center",
            )
            return
        if self.kind == ENTROPY_SCATTER:
            if all(r.entropy is None for r in self.results):
                self.artists = {}
                self.figure.text(
                    0.5,
                    0.5,
                    "Select two or more rater Labels layers as the target\n"
                    "to compare prediction and rater entropy.",
                    ha="center",
                    va="center",
                )
                return
            self.artists = draw_entropy_scatter(self.figure, self.results)
        else:
            self.artists = draw_reliability(self.figure, self.results, min_count=self.min_count)


class CalibrationWidget(Container):
    """Reliability diagram, calibration metrics and rater-entropy comparison for probability layers.

    Select one probability layer per model (``(C, *spatial)`` Image layers) and one Labels layer as
    the reference, or several Labels layers (one per rater) for a soft target. ``Compute`` fills the
    table (ECE in %, TACE, NLL, Brier, entropy MAE) and draws the plot; with "Update when layers
    change" ticked, edits of the selected layers or of the settings recompute it.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from qtpy.QtCore import QTimer

        self._viewer = viewer
        self.results: list[ModelResult] = []
        self.temperatures: dict[str, float] = {}
        self._compute_after_fit = False
        self.worker: Any = None
        self._pending = False
        self._watched: list[Any] = []

        self._probabilities = Select(
            label="Probabilities",
            choices=self._image_layer_names,
            tooltip=(
                "Image layers with class probabilities (C, *spatial), one per model or method; select "
                "several (Ctrl/Shift-click) to overlay them."
            ),
        )
        self._target = Select(
            label="Target",
            choices=self._labels_layer_names,
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
            text="Only the dilated foreground box",
            value=False,
            tooltip=(
                "Evaluate inside the bounding box of the foreground dilated by the margins (calibration "
                "paper), so easy background far from the structures does not dominate."
            ),
        )
        self._margin = FloatSpinBox(label="In-plane margin (mm)", value=8.0, min=0.0, max=500.0, step=0.5)
        self._slice_margin = SpinBox(label="Slice margin", value=2, min=0, max=100)
        self._min_count = SpinBox(
            label="Hide bins below (voxels)",
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
        self._live = CheckBox(text="Update when layers change", value=True)
        self._compute = PushButton(text="Compute")
        self._status = Label(value="")
        self._table = Table(value=[[]])
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
        self.extend(
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
                self._status,
                self._table,
                self._save_figure,
                self._save_csv,
            ]
        )
        self._table.native.setMinimumHeight(120)
        self.plot = CalibrationPlot(viewer)
        self.native.layout().addWidget(self.plot)

        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(300)
        self._timer.timeout.connect(self.compute)
        connect_layer_list_changes(viewer, self._refresh_layer_choices)

    # choices ----------------------------------------------------------------------------------------
    def _image_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "image", skip_uncertainty_maps=True)

    def _labels_layer_names(self, _widget: Any = None) -> list[str]:
        return layer_names(self._viewer, "labels")

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
            self._watch(list(models) + list(self._target.value))
            self._status.value = "Computing…"
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
        names = []
        for r in results:
            source = self._viewer.layers[r.source]
            name = f"{r.source}{SCALED_SUFFIX}"
            upsert_layer(
                self._viewer,
                r.probs,
                name=name,
                layer_type="image",
                scale=tuple(source.scale),
                translate=tuple(source.translate),
                metadata={**dict(source.metadata), "temperature": r.temperature, "source": r.source},
                visible=False,
            )
            names.append(name)
        self._status.value = "Temperatures: " + ", ".join(
            f"{n} T={t:.3f}" for n, t in self.temperatures.items()
        )
        self._probabilities.reset_choices()
        self._probabilities.value = [*self.temperatures, *names]
        self._compute_after_fit = True

    def _on_fit_finished(self) -> None:
        self._fit_temperature.enabled = True
        if self._compute_after_fit:
            self._compute_after_fit = False
            self.compute()  # compare the original and the rescaled layers

    def _collect_inputs(self) -> tuple[dict[str, np.ndarray], np.ndarray, bool, tuple[float, ...]]:
        prob_names = list(self._probabilities.value)
        target_names = list(self._target.value)
        if not prob_names:
            raise ValueError("no probability layer selected; select one Image layer (C, *spatial) per model.")
        if not target_names:
            raise ValueError("no target selected; select one Labels layer (reference) or several (raters).")
        layers = self._viewer.layers
        targets = [np.asarray(layers[n].data) for n in target_names]
        shapes = {t.shape for t in targets}
        if len(shapes) > 1:
            detail = ", ".join(f"{n}: {t.shape}" for n, t in zip(target_names, targets))
            raise ValueError(
                f"the target layers have different shapes ({detail}); raters must share one grid."
            )
        is_raters = len(targets) > 1
        target = np.stack(targets) if is_raters else targets[0]
        spacing = tuple(float(s) for s in layers[target_names[0]].scale)
        models = {n: np.asarray(layers[n].data) for n in prob_names}
        return models, target, is_raters, spacing

    def _show(self, results: list[ModelResult]) -> None:
        self.results = results
        self._table.value = {
            "data": [
                [
                    round(100 * r.summary.ece, 3),
                    round(r.summary.tace, 5),
                    round(r.summary.nll, 4),
                    round(r.summary.brier, 5),
                    r.summary.voxels,
                    round(r.entropy.mae, 4) if r.entropy is not None else "",
                ]
                for r in results
            ],
            "index": [r.name for r in results],
            "columns": ["ECE (%)", "TACE", "NLL", "Brier", "voxels", "entropy MAE"],
        }
        self._status.value = (
            f"{len(results)} model(s) on {results[0].summary.voxels} voxels." if results else ""
        )
        self._redraw()

    def _on_error(self, _exc: BaseException) -> None:
        self._status.value = "Failed; see the notification."

    def _on_finished(self) -> None:
        self._compute.enabled = True
        if self._pending:
            self._pending = False
            self._timer.start()

    def _redraw(self, _value: Any = None) -> None:
        self.plot.min_count = int(self._min_count.value)
        self.plot.show_results(self.results, kind=str(self._plot_kind.value))

    # live updates -----------------------------------------------------------------------------------
    def _watch(self, names: list[str]) -> None:
        for layer in self._watched:
            layer.events.data.disconnect(self._schedule_update)
        self._watched = [self._viewer.layers[n] for n in names]
        for layer in self._watched:
            layer.events.data.connect(self._schedule_update)

    def _schedule_update(self, _event: Any = None) -> None:
        """Recompute shortly after a change (debounced), if live updates are on and results exist."""
        if self._live.value and self.results:
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
