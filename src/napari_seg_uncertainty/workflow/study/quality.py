"""Quality control of a study as in Mehrtash et al.: does segment-level entropy flag the failed segmentations?

For every candidate and foreground structure, :func:`quality_control` sets each test case's segment-level
entropy (``segment_entropy``, Mehrtash eq. 7) against its Dice, computes Spearman's ρ and ranks the cases
by entropy into a review queue (:func:`~napari_seg_uncertainty.core.evaluation.entropy_dice_correlation`).
:func:`write_quality_control` writes ``qc.csv`` and ``qc.png`` (one scatter panel per structure, the
flagged cases highlighted, ρ in the title), drawn by :func:`draw_quality_control`, which the Cohort
review dock calls on its own figure.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020
   (Sec. VI-F, Fig. 3 and Supplementary Figs. 7–8: Dice against the segment's average entropy).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._validation import check_real_in, describe
from ...core.evaluation import EntropyDiceCorrelation, entropy_dice_correlation
from ...core.evaluation.quality import DICE_CLIP
from ..figures import MODEL_COLORS, new_figure, save_figure
from ..tables import refuse_existing, write_rows
from .rows import case_values

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["QualityControl", "draw_quality_control", "quality_control", "write_quality_control"]

#: Class names that are not a structure: the background and the case-level rows.
NOT_STRUCTURES = ("background", "all")
#: The two metrics quality control reads from the rows.
ENTROPY, DICE = "segment_entropy", "dice"
FILES = ("qc.csv", "qc.png")
FLAG_COLOR = "#D55E00"


@dataclass(frozen=True, eq=False)
class QualityControl:
    """Segment-level entropy against Dice for one candidate and structure over the evaluated cases.

    Attributes
    ----------
    candidate : str
        The table candidate (its runs' values averaged per case, as in the study table).
    structure : str
        The foreground class.
    case_ids : tuple of str
        The cases, in the order of ``entropy`` and ``dice``.
    entropy, dice : numpy.ndarray
        Per case, the segment-level entropy (nats) and the Dice against the reference; NaN where undefined
        (a structure not predicted: no entropy), left out of the correlation.
    correlation : EntropyDiceCorrelation
        Spearman's ρ, its p-value, the review order and the flagged cases.
    """

    candidate: str
    structure: str
    case_ids: tuple[str, ...]
    entropy: np.ndarray
    dice: np.ndarray
    correlation: EntropyDiceCorrelation

    @property
    def flagged(self) -> np.ndarray:
        """Boolean mask over ``case_ids``: the cases flagged for review."""
        chosen = set(self.correlation.flagged)
        return np.array([c in chosen for c in self.case_ids], dtype=bool)


def quality_control(
    rows: Iterable[Mapping[str, Any]],
    *,
    runs: Mapping[str, str] | None = None,
    review_fraction: float = 0.2,
) -> tuple[QualityControl, ...]:
    """Segment-level entropy against Dice per candidate and foreground structure, with the review queue.

    Parameters
    ----------
    rows : iterable of mapping
        Per-case rows ``candidate`` (run id), ``case_id``, ``class``, ``metric``, ``value`` (``cases.csv``);
        the rows of metrics ``segment_entropy`` and ``dice`` are read, the others ignored.
    runs : mapping of str to str, optional, keyword-only
        Run id → candidate (default ``"name/seedK"`` → ``"name"``); a candidate's per-case entropy and Dice
        are the means over its runs, as in :func:`~napari_seg_uncertainty.workflow.study.table.study_table`.
    review_fraction : float, keyword-only
        Share of each structure's usable cases flagged for review, in ``(0, 1]``.

    Returns
    -------
    tuple of QualityControl
        One per candidate and structure having both metrics (classes ``"background"`` and ``"all"``
        excluded), candidates and structures in order of first appearance.

    Raises
    ------
    ValueError
        If no row holds both metrics for a structure, or a row is malformed (see
        :func:`~napari_seg_uncertainty.workflow.study.rows.case_values`).

    References
    ----------
    .. [1] A. Mehrtash et al., IEEE TMI 39(12), 2020, Sec. VI-F and Fig. 3.
    """
    fraction = check_real_in(review_fraction, name="review_fraction", low=0.0, high=1.0, low_open=True)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise TypeError(f"rows must be an iterable of per-case rows, got {describe(rows)}.")
    kept = [r for r in rows if not isinstance(r, Mapping) or r.get("metric") in (ENTROPY, DICE)]
    _, case_ids, values, _ = case_values(kept, keys=None, runs=runs)
    items = []
    for candidate, per_key in values.items():
        structures = dict.fromkeys(k.rpartition(":")[0] for k in per_key)
        for structure in structures:
            entropy_key, dice_key = f"{structure}:{ENTROPY}", f"{structure}:{DICE}"
            if structure.lower() in NOT_STRUCTURES or entropy_key not in per_key or dice_key not in per_key:
                continue
            ids = tuple(c for c in case_ids if c in per_key[entropy_key] or c in per_key[dice_key])
            entropy = np.array([per_key[entropy_key].get(c, math.nan) for c in ids])
            dice = np.array([per_key[dice_key].get(c, math.nan) for c in ids])
            for array in (entropy, dice):
                array.setflags(write=False)
            correlation = entropy_dice_correlation(ids, entropy, dice, review_fraction=fraction)
            items.append(QualityControl(candidate, structure, ids, entropy, dice, correlation))
    if not items:
        raise ValueError(
            f"no foreground structure has both {ENTROPY!r} and {DICE!r} rows; evaluate the candidates first "
            "(the rows of cases.csv hold them per class)."
        )
    return tuple(items)


def _check_items(items: Any) -> tuple[QualityControl, ...]:
    if isinstance(items, QualityControl):
        items = (items,)
    if not isinstance(items, Sequence) or not all(isinstance(i, QualityControl) for i in items):
        raise TypeError(f"items must be a sequence of QualityControl, got {describe(items)}.")
    return tuple(items)


def quality_rows(items: Sequence[QualityControl]) -> list[dict[str, Any]]:
    """The rows of ``qc.csv``: one per candidate and structure (flagged case ids joined by ``;``)."""
    rows = []
    for item in _check_items(items):
        c = item.correlation
        rows.append({
            "candidate": item.candidate,
            "structure": item.structure,
            "rho": c.rho,
            "p_value": c.p_value,
            "pearson_r_logit_dice": c.pearson_r,
            "pearson_p": c.pearson_p,
            "n": c.n,
            "flagged": ";".join(c.flagged),
            "flagged_dice": c.flagged_dice,
            "other_dice": c.other_dice,
            "review_order": ";".join(c.review_order),
        })
    return rows


def draw_quality_control(figure: Figure, items: Sequence[QualityControl]) -> dict[str, Any]:
    """Dice against segment-level entropy, one panel per structure, the flagged cases ringed (Mehrtash Fig. 7).

    Each candidate has its colour; a flagged case is drawn with a thick ring in :data:`FLAG_COLOR`. The Dice
    axis has a logit scale, as the paper transforms Dice before its regression (Dice clipped to
    ``[DICE_CLIP, 1 - DICE_CLIP]``). The panel's title names the structure and every candidate's Pearson r
    (entropy against logit Dice, the paper's statistic), Spearman ρ and ``n``.

    Returns
    -------
    dict
        ``{"axes": {structure: Axes}, "points": {(candidate, structure): PathCollection},
        "flagged": {(candidate, structure): PathCollection}}``.
    """
    items = _check_items(items)
    figure.clear()
    structures = list(dict.fromkeys(i.structure for i in items))
    candidates = list(dict.fromkeys(i.candidate for i in items))
    columns = min(len(structures), 3) or 1
    rows = max(1, math.ceil(len(structures) / columns))
    axes_of, points, flagged = {}, {}, {}
    ringed = False  # one legend entry for the rings
    for index, structure in enumerate(structures):
        ax = figure.add_subplot(rows, columns, index + 1)
        axes_of[structure] = ax
        title = [structure]
        for item in (i for i in items if i.structure == structure):
            color = MODEL_COLORS[candidates.index(item.candidate) % len(MODEL_COLORS)]
            c = item.correlation
            dice = np.clip(item.dice, DICE_CLIP, 1.0 - DICE_CLIP)
            points[item.candidate, structure] = ax.scatter(
                item.entropy, dice, s=22, color=color, alpha=0.85, label=item.candidate
            )
            mask = item.flagged
            flagged[item.candidate, structure] = ax.scatter(
                item.entropy[mask], dice[mask], s=70, facecolors="none", edgecolors=FLAG_COLOR, linewidths=1.5,
                label="flagged for review" if not ringed else None,
            )
            ringed = True
            rho = "n/a" if math.isnan(c.rho) else f"{c.rho:.2f}"
            r = "n/a" if math.isnan(c.pearson_r) else f"{c.pearson_r:.2f}"
            title.append(f"{item.candidate}: r = {r}, ρ = {rho} (n = {c.n})")
        ax.set_title("\n".join(title), fontsize="small")
        ax.set_xlabel("segment-level entropy (nats)")
        ax.set_ylabel("Dice (logit scale)")
        ax.set_yscale("logit")
        _dice_ticks(ax)
    if axes_of:
        first = axes_of[structures[0]]
        handles, labels = first.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda k: labels[k] == "flagged for review")  # the rings last
        figure.legend([handles[k] for k in order], [labels[k] for k in order], fontsize="x-small",
                      loc="outside lower center", ncols=min(len(labels), 4))  # below the panels, over no point
    figure.suptitle("Quality control: segment entropy vs Dice", fontsize="medium")
    return {"axes": axes_of, "points": points, "flagged": flagged}


def write_quality_control(
    items: Sequence[QualityControl], folder: str | os.PathLike, *, overwrite: bool = False
) -> tuple[str, ...]:
    """Write ``qc.csv`` (one row per candidate and structure) and ``qc.png`` (:func:`draw_quality_control`).

    Raises
    ------
    FileExistsError
        If either file exists and ``overwrite`` is False (checked before anything is written).

    Returns
    -------
    tuple of str
        The paths of ``qc.csv`` and ``qc.png``.
    """
    items = _check_items(items)
    folder = Path(folder)
    paths = [folder / name for name in FILES]
    refuse_existing(*paths, overwrite=overwrite)
    structures = len(dict.fromkeys(i.structure for i in items))
    candidates = len(dict.fromkeys(i.candidate for i in items))
    columns = min(structures, 3)
    figure = new_figure(4.2 * columns, (3.2 + 0.2 * candidates) * math.ceil(structures / columns))
    draw_quality_control(figure, items)
    write_rows(paths[0], quality_rows(items), overwrite=overwrite)
    save_figure(figure, paths[1], overwrite=overwrite, dpi=100)
    return tuple(str(p) for p in paths)


#: Dice values that may be marked on the logit axis of the quality-control plot (those in view, thinned).
DICE_TICKS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def _dice_ticks(ax: Any, *, most: int = 5) -> None:
    """Plain Dice values (0.5, 0.9, 0.99) as the logit axis's ticks, not matplotlib's ``1−10⁻²`` forms."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    low, high = ax.get_ylim()  # autoscaled to the points
    shown = [t for t in DICE_TICKS if low <= t <= high]
    if len(shown) > most:
        shown = [shown[round(k * (len(shown) - 1) / (most - 1))] for k in range(most)]
    ax.yaxis.set_major_locator(FixedLocator(shown))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_formatter(NullFormatter())
