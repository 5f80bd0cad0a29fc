"""The case table of a review: one row per evaluated case, ranked for review by segment-level entropy.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020,
   Sec. V-D (segment-level entropy flags the poor segmentations for review).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ECE_METRIC", "NLL_METRIC", "CaseReviewRow", "review_rows"]

#: The per-case calibration numbers of the table: against the fused reference, over the whole volume.
ECE_METRIC = "ece_reference_volume"
NLL_METRIC = "nll_reference_volume"


@dataclass(frozen=True)
class CaseReviewRow:
    """One evaluated case of one candidate, as the review table shows it.

    Attributes
    ----------
    case_id : str
        The case.
    rank : int or None
        Position in the review order, 1 = review first (most uncertain); None for a case whose entropy
        or Dice is undefined (it comes last in :meth:`ReviewSession.review_order`).
    dice : float
        Mean Dice over the foreground classes against the fused reference (classes with an undefined
        Dice left out; NaN when none is defined).
    ece, nll : float
        Expected calibration error and negative log-likelihood against the fused reference over the
        whole volume (``all:ece_reference_volume``, ``all:nll_reference_volume``).
    segment_entropy : float
        Segment-level entropy (nats, Mehrtash eq. 7), mean over the foreground structures.
    uncertainty : float
        ``segment_entropy`` as a rank among the candidate's cases, in ``[0, 1]`` (0: least uncertain,
        1: most; ties share their mean rank; a lone case 0.5; NaN without an entropy), for colouring.
    reviewed : bool
        Whether a reviewer marked the case reviewed.
    """

    case_id: str
    rank: int | None
    dice: float
    ece: float
    nll: float
    segment_entropy: float
    uncertainty: float
    reviewed: bool


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _rank_fraction(values: np.ndarray) -> np.ndarray:
    """Average rank of each finite value scaled to ``[0, 1]`` (scipy's ``rankdata``); NaN stays NaN."""
    from scipy.stats import rankdata

    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    n = int(finite.sum())
    if n == 1:
        out[finite] = 0.5
    elif n > 1:
        out[finite] = (rankdata(values[finite], method="average") - 1.0) / (n - 1)
    return out


def review_rows(
    rows: Iterable[Mapping[str, Any]],
    case_ids: Sequence[str],
    *,
    reviewed: Iterable[str] = (),
    review_fraction: float = 0.2,
) -> list[CaseReviewRow]:
    """The review table of one candidate from its per-case rows.

    Parameters
    ----------
    rows : iterable of dict
        The candidate's rows ``{"case_id", "class", "metric", "value"}`` (``cases.csv``).
    case_ids : sequence of str
        The candidate's evaluated cases, in cohort order (the table's order).
    reviewed : iterable of str
        The cases marked reviewed.
    review_fraction : float
        Passed to :func:`~napari_seg_uncertainty.core.evaluation.entropy_dice_correlation` (it does not
        change the order).

    Returns
    -------
    list of CaseReviewRow
        In the order of ``case_ids``; ``rank`` follows
        ``entropy_dice_correlation(case_ids, segment_entropy, dice).review_order``.
    """
    from ...core.evaluation import entropy_dice_correlation

    ids = [str(c) for c in case_ids]
    dice: dict[str, list[float]] = {c: [] for c in ids}
    entropy: dict[str, list[float]] = {c: [] for c in ids}
    scalars: dict[tuple[str, str], float] = {}
    for row in rows:
        case_id = str(row["case_id"])
        if case_id not in dice:
            continue
        value = float(row["value"]) if row["value"] not in (None, "") else math.nan
        if row["class"] == "all":
            scalars[(case_id, str(row["metric"]))] = value
        elif row["metric"] == "dice":
            dice[case_id].append(value)
        elif row["metric"] == "segment_entropy":
            entropy[case_id].append(value)
    mean_dice = np.array([_mean(dice[c]) for c in ids])
    mean_entropy = np.array([_mean(entropy[c]) for c in ids])
    order = entropy_dice_correlation(ids, mean_entropy, mean_dice, review_fraction=review_fraction).review_order
    rank = {case_id: position for position, case_id in enumerate(order, start=1)}
    uncertainty = _rank_fraction(mean_entropy)
    done = set(reviewed)
    return [
        CaseReviewRow(
            case_id=c,
            rank=rank.get(c),
            dice=float(mean_dice[i]),
            ece=scalars.get((c, ECE_METRIC), math.nan),
            nll=scalars.get((c, NLL_METRIC), math.nan),
            segment_entropy=float(mean_entropy[i]),
            uncertainty=float(uncertainty[i]),
            reviewed=c in done,
        )
        for i, c in enumerate(ids)
    ]
