"""Figures and their tables: reliability diagrams, entropy scatter plots and the demo's plots.

Pure matplotlib on an Agg canvas (no Qt): the *Calibration* dock draws the reliability diagram and the
entropy scatter plot onto its own figure inside napari-matplotlib's theme style, the headless demo
onto figures from :func:`new_figure` that :func:`save_figure` writes atomically. matplotlib is
imported only when a figure is made, so importing this module stays fast.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence calibration and
   predictive uncertainty estimation for deep medical image segmentation", IEEE TMI 39(12), 2020
   (reliability diagrams).
.. [2] C. Gros, A. Lemay, J. Cohen-Adad, "SoftSeg: advantages of soft versus binary training for
   image segmentation", Medical Image Analysis 71, 2021 (prediction vs rater entropy, Fig. 1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._atomic import atomic_write
from ..core.calibration import CalibrationSummary
from ..core.raters import RaterSet
from ..core.uncertainty import EntropyAgreement

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ModelResult",
    "bin_rows",
    "curves_figure",
    "draw_entropy_scatter",
    "draw_reliability",
    "maps_figure",
    "metric_label",
    "metric_rows",
    "middle_slice",
    "new_figure",
    "overview_figure",
    "samples_figure",
    "save_figure",
    "soft_labels_figure",
]

#: Colour-blind-safe model colors (Okabe-Ito), readable on dark and light themes.
MODEL_COLORS = ("#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#F0E442", "#0072B2", "#D55E00", "#999999")
GAP_COLOR = "#D55E00"


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
    from matplotlib.ticker import LogLocator, NullFormatter

    figure.clear()
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1))
    ax = figure.add_subplot(grid[0])
    hist = figure.add_subplot(grid[1], sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
    accuracy_bars = {}
    n_models = max(len(results), 1)
    for i, result in enumerate(results):
        bins = result.summary.bins
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
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
            color=color,
            alpha=0.85,
            edgecolor=color,
            label=metric_label(result),
        )
        ax.bar(
            left,
            confidence - accuracy,
            bottom=accuracy,
            width=width,
            align="edge",
            facecolor="none",
            edgecolor=GAP_COLOR,
            hatch="//",
            linewidth=0.8,
            label="gap" if i == 0 else None,
        )
        hist.bar(left, bins.fraction, width=width, align="edge", color=color, alpha=0.85)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    figure.suptitle("Reliability diagram", fontsize="medium")
    handles, labels = ax.get_legend_handles_labels()
    last = [i for i, label in enumerate(labels) if label == "gap"]  # after the candidates, not between them
    order = [i for i in range(len(labels)) if i not in last] + last
    _legend_above(ax, [handles[i] for i in order], [labels[i] for i in order])
    hist.set_yscale("log")
    # a few decades labelled (the fractions span many): no crowded minor labels in a short panel
    hist.yaxis.set_major_locator(LogLocator(base=10, numticks=4))
    hist.yaxis.set_minor_formatter(NullFormatter())
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("fraction")
    return {"reliability": ax, "histogram": hist, "accuracy_bars": accuracy_bars}


def _legend_above(ax: Any, handles: Sequence[Any] | None = None, labels: Sequence[str] | None = None) -> Any:
    """One legend entry per line, above the axes (outside the plot, so it never hides a bar or a point).

    ``handles`` and ``labels`` give the entries in their order (default: every labelled artist, as drawn).
    """
    if handles is None or labels is None:
        handles, labels = ax.get_legend_handles_labels()
    return ax.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.02),
        borderaxespad=0.0,
        fontsize="x-small",
        frameon=False,
        ncol=1,
    )


def draw_entropy_scatter(figure: Figure, results: Sequence[ModelResult]) -> dict[str, Any]:
    """Entropy of the prediction against entropy of the raters, one color per model (SoftSeg Fig. 1).

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
        color = MODEL_COLORS[i % len(MODEL_COLORS)]
        agreement = result.entropy
        points[result.name] = ax.scatter(
            agreement.raters,
            agreement.predicted,
            s=6 if agreement.unit == "voxel" else 24,
            color=color,
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


# ---------------------------------------------------------------------------------------------------
# figures of the headless demo
# ---------------------------------------------------------------------------------------------------
def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure of ``width`` × ``height`` inches on an Agg canvas (no window, no Qt)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike, *, overwrite: bool, dpi: int = 100) -> str:
    """Save ``figure`` to ``path`` (format from its suffix) atomically; return the path as str.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, dpi=dpi, format=path.suffix[1:])
    return str(path)


def middle_slice(raters: RaterSet, entropy: np.ndarray) -> tuple[int | None, str]:
    """The plane a figure shows: None for 2-D, else the slice with the most rater entropy; and its title."""
    if raters.ndim == 2:
        return None, "2-D"
    z = int(np.argmax(entropy.sum(axis=(1, 2))))
    return z, f"slice z={z}"


def _plane(array: np.ndarray, z: int | None) -> np.ndarray:
    return array if z is None else array[z]


def _aspect(raters: RaterSet) -> float:
    return raters.scale[-2] / raters.scale[-1]


def overview_figure(image: np.ndarray, raters: RaterSet, entropy: np.ndarray) -> Figure:
    """Image, the raters' outlines over it and the normalized rater entropy (on :func:`middle_slice`)."""
    from matplotlib import colormaps

    z, title = middle_slice(raters, entropy)
    labels = raters.labels if z is None else raters.labels[:, z]
    aspect = _aspect(raters)
    figure = new_figure(12, 4.2)
    axes = figure.subplots(1, 3)
    axes[0].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    axes[0].set_title(f"image ({title})")
    axes[1].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    colors = colormaps["tab10"]
    for r in range(raters.num_raters):
        for k in range(1, raters.num_classes):
            mask = labels[r] == k
            if mask.any() and not mask.all():
                axes[1].contour(mask, levels=[0.5], colors=[colors(r)], linewidths=0.8)
    axes[1].set_title(f"{raters.num_raters} raters' outlines")
    shown = axes[2].imshow(_plane(entropy, z), cmap="magma", vmin=0, vmax=1, aspect=aspect)
    axes[2].set_title("rater entropy (normalised)")
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    return figure


def soft_labels_figure(
    maps: dict[str, np.ndarray], titles: dict[str, str], raters: RaterSet, z: int | None
) -> Figure:
    """One panel per soft-label map ``(C, *S)``: the probability of class 1, titled ``titles[method]``."""
    names = raters.class_names
    figure = new_figure(3 * len(maps), 3.4)
    axes = np.atleast_1d(figure.subplots(1, len(maps)))
    aspect = _aspect(raters)
    for ax, (method, probs) in zip(axes, maps.items()):
        shown = ax.imshow(_plane(probs[1], z), cmap="viridis", vmin=0, vmax=1, aspect=aspect)
        ax.set_title(f"{titles[method]}\np({names[1]})", fontsize="small")
        ax.set_axis_off()
    figure.colorbar(shown, ax=axes[-1], fraction=0.046)
    return figure


def curves_figure(histories: dict[str, list[dict[str, float]]]) -> Figure:
    """Training loss (log scale) and validation Dice per epoch; ``histories`` maps a model's label to
    its history rows (``epoch``, ``loss``, ``val_dice`` where validated)."""
    figure = new_figure(9, 3.6)
    loss_axes, dice_axes = figure.subplots(1, 2)
    for label, history in histories.items():
        loss_axes.plot(
            [h["epoch"] for h in history], [h["loss"] for h in history], "o-", label=f"{label} train loss"
        )
        validated = [h for h in history if "val_dice" in h]
        dice_axes.plot([h["epoch"] for h in validated], [h["val_dice"] for h in validated], "s-", label=label)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.set_yscale("log")
    loss_axes.legend(fontsize="small")
    dice_axes.set_xlabel("epoch")
    dice_axes.set_ylabel("validation Dice (foreground)")
    dice_axes.set_ylim(0, 1)
    dice_axes.legend(fontsize="small")
    return figure


def samples_figure(rows: list[tuple[str, np.ndarray]], raters: RaterSet) -> Figure:
    """A grid of label samples: one row per ``(title, samples (N, *S))``, up to four samples per row
    (a volume shows its middle slice)."""
    from matplotlib.colors import ListedColormap

    columns = min(4, rows[0][1].shape[0])
    figure = new_figure(2.4 * columns, 2.4 * len(rows))
    axes = np.atleast_2d(figure.subplots(len(rows), columns))
    palette = ["#000000", "#56B4E9", "#E69F00", "#CC79A7", "#009E73", "#F0E442", "#0072B2", "#D55E00"]
    colors = ListedColormap([palette[k % len(palette)] for k in range(max(raters.num_classes, 2))])
    aspect = _aspect(raters)
    for r, (title, samples) in enumerate(rows):
        for c in range(columns):
            plane = samples[c] if samples.ndim == 3 else samples[c, samples.shape[1] // 2]
            axes[r, c].imshow(
                plane,
                cmap=colors,
                vmin=0,
                vmax=max(raters.num_classes - 1, 1),
                aspect=aspect,
                interpolation="nearest",
            )
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if c == 0:
                axes[r, c].set_ylabel(title, fontsize="small")
            if r == 0:
                axes[r, c].set_title(f"sample {c}", fontsize="small")
    return figure


def maps_figure(image: np.ndarray, panels: dict[str, np.ndarray], raters: RaterSet, z: int | None) -> Figure:
    """The image beside maps in [0, 1] (entropy, mutual information …), one panel per ``panels`` entry."""
    figure = new_figure(3 * (len(panels) + 1), 3.4)
    axes = figure.subplots(1, len(panels) + 1)
    aspect = _aspect(raters)
    axes[0].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    axes[0].set_title("image", fontsize="small")
    for ax, (title, data) in zip(axes[1:], panels.items()):
        shown = ax.imshow(_plane(data, z), cmap="magma", vmin=0, vmax=1, aspect=aspect)
        ax.set_title(title, fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    figure.colorbar(shown, ax=axes[-1], fraction=0.046)
    return figure


# ---------------------------------------------------------------------------------------------------
# tables drawn as figures (the study table, for a PNG and a dock)
# ---------------------------------------------------------------------------------------------------
__all__ += ["draw_table", "table_size", "wrap_footnote"]

#: Size of a drawn table: inches per character of a column's widest cell, per row, and around it.
TABLE_INCH_PER_CHAR = 0.095
TABLE_ROW_INCHES = 0.32
TABLE_MARGIN_INCHES = 0.3
#: A footnote line at 8 pt: inches per character (DejaVu Sans, on average) and line height.
FOOTNOTE_INCH_PER_CHAR = 0.065
FOOTNOTE_LINE_INCHES = 0.16


def table_size(header: Sequence[str], cells: Sequence[Sequence[str]], *, footnote: str = "") -> tuple[float, float]:
    """Width and height in inches at which :func:`draw_table` shows every cell at 10 pt (100 % zoom at 100 dpi).

    Each column is as wide as its longest line (header or cell) at :data:`TABLE_INCH_PER_CHAR` inches per
    character plus padding; each row (the header counts its lines) :data:`TABLE_ROW_INCHES` high; the
    footnote is wrapped to the table's width (:func:`wrap_footnote`).
    """
    columns = [list(col) for col in zip(header, *cells)] if cells else [[h] for h in header]
    widths = [max(len(line) for text in col for line in str(text).split("\n")) for col in columns]
    header_lines = max((str(h).count("\n") + 1 for h in header), default=1)
    width = sum(TABLE_INCH_PER_CHAR * w + 0.25 for w in widths) + 2 * TABLE_MARGIN_INCHES
    lines = len(wrap_footnote(footnote, width)) if footnote else 0
    height = TABLE_ROW_INCHES * (len(cells) + header_lines) + FOOTNOTE_LINE_INCHES * lines + 2 * TABLE_MARGIN_INCHES
    return width, height


def wrap_footnote(text: str, width: float, *, scale: float = 1.0) -> list[str]:
    """``text`` in lines that fit ``width`` inches at ``8 * scale`` pt (textwrap; paragraphs kept)."""
    import textwrap

    chars = max(30, int(width / (FOOTNOTE_INCH_PER_CHAR * scale)))
    return [line for paragraph in text.split("\n") for line in textwrap.wrap(paragraph, chars) or [""]]


def draw_table(
    figure: Figure,
    header: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    bold: Any = None,
    footnote: str = "",
) -> dict[str, Any]:
    """Draw a table of text: ``header`` over ``cells`` (rows of strings), a footnote below.

    The cells have no fill (the figure's theme shows through, as in napari-matplotlib's dark style) and
    the first column is left-aligned (row names). ``bold`` is an optional boolean array shaped as
    ``cells``; those cells are drawn in bold. The text is 10 pt (the footnote 8 pt, wrapped to the
    figure's width) when the figure is as wide as :func:`table_size`, smaller in a narrower figure.

    Returns
    -------
    dict
        ``{"axes": Axes, "table": matplotlib.table.Table, "footnote": Text or None}``.
    """
    figure.clear()
    ax = figure.add_subplot()
    ax.set_axis_off()
    rows = [list(header)] + [list(row) for row in cells]
    width, height = figure.get_size_inches()
    scale = max(0.6, min(1.0, width / table_size(header, cells)[0]))
    lines = wrap_footnote(footnote, width, scale=scale) if footnote else []
    foot = (FOOTNOTE_LINE_INCHES * scale * len(lines) + TABLE_MARGIN_INCHES) / height if lines else 0.0
    widths = [3 + max(len(line) for r in rows for line in str(r[j]).split("\n")) for j in range(len(header))]
    table = ax.table(
        cellText=rows,
        cellLoc="center",
        colWidths=[w / sum(widths) for w in widths],
        bbox=[0.005, foot, 0.99, 0.995 - foot],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10.0 * scale)
    bold = np.zeros((len(cells), len(header)), dtype=bool) if bold is None else np.asarray(bold, dtype=bool)
    for (r, c), cell in table.get_celld().items():
        cell.set_facecolor("none")
        cell.set_edgecolor("0.6")
        cell.set_linewidth(0.5)
        if c == 0:
            cell.set_text_props(ha="left")
            cell.PAD = 0.02
        if r == 0 or (r > 0 and bold[r - 1, c]):
            cell.get_text().set_fontweight("bold")
    note = None
    if lines:
        note = ax.annotate(
            "\n".join(lines), xy=(0.005, foot), xycoords="axes fraction", xytext=(0, -8), textcoords="offset points",
            fontsize=8.0 * scale, va="top", ha="left",
        )
    return {"axes": ax, "table": table, "footnote": note}
