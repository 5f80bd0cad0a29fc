"""Quality control as in Mehrtash et al.: does segment-level entropy flag the poor segmentations?

Per structure, the segment-level entropy of each evaluated case is set against its Dice: a useful
uncertainty correlates strongly and negatively with it. The paper reports Pearson's r of the entropy with
the logit-transformed Dice (Fig. 7); both that and Spearman's rank correlation (which needs no transform)
are given. Ranking the cases by entropy puts the failed segmentations at the top of a radiologist's review
queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_real_in, describe, to_numpy_array

__all__ = ["DICE_CLIP", "EntropyDiceCorrelation", "entropy_dice_correlation", "logit_dice"]

#: Dice is clipped to ``[DICE_CLIP, 1 - DICE_CLIP]`` before the logit transform (a perfect case stays finite).
DICE_CLIP = 1e-3


@dataclass(frozen=True)
class EntropyDiceCorrelation:
    """Segment-level entropy against Dice for one structure over the evaluated cases.

    Attributes
    ----------
    rho, p_value : float
        Spearman's rank correlation and its two-sided p-value (``scipy.stats.spearmanr``); NaN with fewer
        than three usable cases or a constant column.
    pearson_r, pearson_p : float
        Pearson's correlation of the entropy with the logit-transformed Dice and its two-sided p-value
        (``scipy.stats.pearsonr``), as Mehrtash et al. report it (Fig. 7); Dice is clipped to
        ``[DICE_CLIP, 1 - DICE_CLIP]`` first so that a perfect or empty segmentation has a finite logit.
    n : int
        Cases with a finite entropy and Dice (the others are left out).
    review_order : tuple of str
        Usable case ids by entropy, most uncertain first (ties: lower Dice first, then the given order).
    flagged : tuple of str
        The first ``review_fraction`` of ``review_order`` (at least one case when any is usable).
    flagged_dice, other_dice : float
        Mean Dice of the flagged cases and of the rest (NaN when empty): how much worse the queue's top is.
    """

    rho: float
    p_value: float
    pearson_r: float
    pearson_p: float
    n: int
    review_order: tuple[str, ...]
    flagged: tuple[str, ...]
    flagged_dice: float
    other_dice: float


def entropy_dice_correlation(
    case_ids: Sequence[str],
    entropy: Any,
    dice: Any,
    *,
    review_fraction: float = 0.2,
) -> EntropyDiceCorrelation:
    """Spearman correlation of segment-level entropy with Dice, and the cases flagged for review.

    Parameters
    ----------
    case_ids : sequence of str
        One id per case.
    entropy, dice : array_like
        Per case, the structure's segment-level entropy (:func:`~napari_seg_uncertainty.core.uncertainty.
        segment_entropy`, e.g. ``CaseEvaluation.per_class["segment_entropy"][k]``) and its Dice against the
        reference; NaN marks a case where either is undefined (left out).
    review_fraction : float
        Share of the usable cases flagged for review, in ``(0, 1]``.

    Returns
    -------
    EntropyDiceCorrelation

    References
    ----------
    .. [1] Mehrtash A. et al., "Confidence Calibration and Predictive Uncertainty Estimation for Deep
       Medical Image Segmentation", IEEE TMI 2020, Sec. V-D and Fig. 7 (segment-level entropy against Dice).

    Examples
    --------
    >>> qc = entropy_dice_correlation(["a", "b", "c", "d"], [0.1, 0.5, 0.2, 0.9], [0.9, 0.6, 0.85, 0.3],
    ...                               review_fraction=0.25)
    >>> round(qc.rho, 3), qc.flagged
    (-1.0, ('d',))
    """
    from scipy.stats import pearsonr, spearmanr

    if isinstance(case_ids, (str, bytes)) or not isinstance(case_ids, Sequence):
        raise TypeError(f"case_ids must be a sequence of case ids, got {describe(case_ids)}.")
    ids = [str(c) for c in case_ids]
    h = to_numpy_array(entropy, name="entropy").astype(np.float64).reshape(-1)
    d = to_numpy_array(dice, name="dice").astype(np.float64).reshape(-1)
    if not len(ids) == h.size == d.size:
        raise ValueError(
            f"case_ids, entropy and dice must have one entry per case, got {len(ids)}, {h.size} and {d.size}."
        )
    fraction = check_real_in(review_fraction, name="review_fraction", low=0.0, high=1.0, low_open=True)
    usable = np.isfinite(h) & np.isfinite(d)
    index = np.flatnonzero(usable)
    n = int(index.size)
    rho = p_value = float("nan")
    if n >= 3 and np.ptp(h[index]) > 0 and np.ptp(d[index]) > 0:
        result = spearmanr(h[index], d[index])
        rho, p_value = float(result.statistic), float(result.pvalue)
    pearson_r = pearson_p = float("nan")
    logit = logit_dice(d[index])
    if n >= 3 and np.ptp(h[index]) > 0 and np.ptp(logit) > 0:
        result = pearsonr(h[index], logit)
        pearson_r, pearson_p = float(result.statistic), float(result.pvalue)
    order = sorted(index, key=lambda i: (-h[i], d[i], i))
    count = max(1, int(round(fraction * n))) if n else 0
    flagged, rest = order[:count], order[count:]
    return EntropyDiceCorrelation(
        rho=rho,
        p_value=p_value,
        pearson_r=pearson_r,
        pearson_p=pearson_p,
        n=n,
        review_order=tuple(ids[i] for i in order),
        flagged=tuple(ids[i] for i in flagged),
        flagged_dice=float(np.mean(d[flagged])) if flagged else float("nan"),
        other_dice=float(np.mean(d[rest])) if rest else float("nan"),
    )


def logit_dice(dice: Any) -> np.ndarray:
    """``log(d / (1 - d))`` of Dice values clipped to ``[DICE_CLIP, 1 - DICE_CLIP]`` (Mehrtash et al., Fig. 7).

    Parameters
    ----------
    dice : array_like
        Dice values in ``[0, 1]``.

    Returns
    -------
    numpy.ndarray
        float64, finite for every finite input.

    References
    ----------
    .. [1] Mehrtash A. et al., IEEE TMI 2020, Fig. 7 ("Dice coefficients are logit transformed before plotting
       and regression analysis").

    Examples
    --------
    >>> logit_dice([0.5, 1.0]).round(2).tolist()
    [0.0, 6.91]
    """
    d = np.clip(to_numpy_array(dice, name="dice").astype(np.float64), DICE_CLIP, 1.0 - DICE_CLIP)
    return np.log(d / (1.0 - d))
