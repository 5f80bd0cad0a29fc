"""Matplotlib drawing and CSV export for the calibration dock (no Qt: usable headless and in scripts).

The functions draw onto a given :class:`matplotlib.figure.Figure`; the dock widget calls them inside
napari-matplotlib's theme style context so text, ticks and edges follow napari's theme.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..core.calibration import CalibrationSummary
from ..core.uncertainty import EntropyAgreement

__all__ = [
    "ModelResult",
    "bin_rows",
    "draw_entropy_scatter",
    "draw_reliability",
    "metric_rows",
    "write_csv",
]

#: Colour-blind-safe model colours (Okabe-Ito), readable on dark and light themes.
MODEL_COLOURS = ("#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#F0E442", "#0072B2", "#D55E00", "#999999")
GAP_COLOUR = "#D55E00"


@dataclass(frozen=True)
class ModelResult:
    """Everything the dock shows for one probability layer (model or method)."""

    name: str
    summary: CalibrationSummary
    entropy: EntropyAgreement | None = None
    #: Per-class TACE ``(C,)`` (NaN for a class with no probability above the threshold), if computed.
    class_tace: np.ndarray | None = None
    #: Per-class Brier score ``(C,)`` (mean over voxels of the squared difference), if computed.
    class_brier: np.ndarray | None = None


def metric_label(result: ModelResult) -> str:
    """Legend text with the model's metrics (ECE in %, as the papers report it)."""
    s = result.summary
    return (
        f"{result.name}: ECE {100 * s.ece:.2f}%\nTACE {s.tace:.4f} · NLL {s.nll:.3f} · Brier {s.brier:.4f}"
    )


def draw_reliability(figure: Figure, results: Sequence[ModelResult], *, min_count: int = 1) -> dict[str, Any]:
    """Reliability diagram (accuracy and gap bars, identity line) over a confidence histogram.

    Several models are drawn side by side in each bin. Bins with fewer than ``min_count`` voxels are
    left out of the diagram (Mehrtash et al. show only bins with > 1000 voxels) but still counted in
    the histogram and the metrics.

    Returns
    -------
    dict
        ``{"reliability": Axes, "histogram": Axes, "accuracy_bars": {name: BarContainer}}``.
    """
    figure.clear()
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = figure.add_subplot(grid[0])
    hist = figure.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
    accuracy_bars = {}
    n_models = max(len(results), 1)
    for i, result in enumerate(results):
        bins = result.summary.bins
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        width = np.diff(bins.edges) / n_models
        left = bins.edges[:-1] + i * width
        shown = bins.count >= max(min_count, 1)
        accuracy = np.where(shown, bins.accuracy, 0.0)
        confidence = np.where(shown, bins.confidence, 0.0)
        accuracy_bars[result.name] = ax.bar(
            left,
            accuracy,
            width=width,
            align="edge",
            color=colour,
            alpha=0.85,
            edgecolor=colour,
            label=metric_label(result),
        )
        ax.bar(
            left,
            confidence - accuracy,
            bottom=accuracy,
            width=width,
            align="edge",
            facecolor="none",
            edgecolor=GAP_COLOUR,
            hatch="//",
            linewidth=0.8,
            label="gap" if i == 0 else None,
        )
        hist.bar(left, bins.fraction, width=width, align="edge", color=colour, alpha=0.85)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    figure.suptitle("Reliability diagram", fontsize="medium")
    _legend_above(ax)
    hist.set_yscale("log")
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("fraction")
    return {"reliability": ax, "histogram": hist, "accuracy_bars": accuracy_bars}


def _legend_above(ax: Any) -> Any:
    """One legend entry per line, above the axes (outside the plot, so it never hides a bar or a point)."""
    return ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.02),
        borderaxespad=0.0,
        fontsize="x-small",
        frameon=False,
        ncol=1,
    )


def draw_entropy_scatter(figure: Figure, results: Sequence[ModelResult]) -> dict[str, Any]:
    """Entropy of the prediction against entropy of the raters, one colour per model (SoftSeg Fig. 1).

    Returns
    -------
    dict
        ``{"scatter": Axes, "points": {name: PathCollection}}``.
    """
    figure.clear()
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="identity")
    points = {}
    for i, result in enumerate(results):
        if result.entropy is None:
            continue
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        agreement = result.entropy
        points[result.name] = ax.scatter(
            agreement.raters,
            agreement.predicted,
            s=6 if agreement.unit == "voxel" else 24,
            color=colour,
            alpha=0.5 if agreement.unit == "voxel" else 0.9,
            label=f"{result.name}: MAE {agreement.mae:.4f}",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("entropy of the raters (normalised)")
    ax.set_ylabel("entropy of the prediction (normalised)")
    figure.suptitle("Prediction vs rater entropy", fontsize="medium")
    _legend_above(ax)
    return {"scatter": ax, "points": points}


def bin_rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """One row per model and bin (edges, count, fraction, confidence, accuracy, gap)."""
    return [{"model": r.name, **row} for r in results for row in r.summary.bins.to_records()]


def metric_rows(results: Sequence[ModelResult]) -> list[dict[str, Any]]:
    """One row per model: ECE, TACE, NLL, Brier, voxels and the entropy MAE (if raters were given)."""
    rows = []
    for r in results:
        row: dict[str, Any] = {"model": r.name, **r.summary.to_dict()}
        row["entropy_mae"] = r.entropy.mae if r.entropy is not None else float("nan")
        rows.append(row)
    return rows


def refuse_existing(*paths: Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` naming the files of ``paths`` that exist, unless ``overwrite``."""
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(repr(p) for p in existing)} already exist(s); choose another name or pass "
            "overwrite=True."
        )


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], *, overwrite: bool = False) -> Path:
    """Write dict rows (same keys) to a CSV file and return its path.

    The table goes to a temporary file that is renamed into place, so an interrupted export leaves no
    half-written file; an existing file is replaced only with ``overwrite``.
    """
    path = Path(path)
    if not rows:
        raise ValueError("nothing to export: compute the calibration first.")
    refuse_existing(path, overwrite=overwrite)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path
