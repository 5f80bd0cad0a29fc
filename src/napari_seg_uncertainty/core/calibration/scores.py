"""Proper scoring rules per voxel: negative log-likelihood and Brier score.

Against a rater stack each score is the expected score against a rater drawn at random
(``rater_average="score"``, the default): for the NLL, linear in the target, this equals the score
against the rater mean; the Brier score, quadratic in the target, adds the raters' variance
``sum_k s_k (1 - s_k)`` to the score against the rater mean ``s``. ``rater_average="target"`` scores
against the rater mean instead, as the SoftSeg label-fusion paper (eq. 2) does. Soft labels given as a
float map are the target itself.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020,
   eqs. (3) and (4).
.. [2] G. W. Brier, "Verification of Forecasts Expressed in Terms of Probability", Monthly Weather
   Review 78(1), 1950.
.. [3] A. Lemay, C. Gros, E. Karthik, J. Cohen-Adad, "Label Fusion and Training Methods for Reliable
   Representation of Inter-Rater Uncertainty", MELBA 2023, eq. (2).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from .._validation import CHUNK_VOXELS, check_choice, check_positive, iter_chunks
from ._targets import RATER_AVERAGES, Prepared, RaterAverage, prepare

__all__ = ["brier_score", "brier_score_per_class", "negative_log_likelihood"]

BrierReduction = Literal["mean", "sum"]


def nll_of(prep: Prepared, *, eps: float) -> float:
    """Mean NLL of validated inputs (the expected NLL against the raters for a rater stack)."""
    p, m = prep.probs, prep.mask
    total = 0.0
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        if prep.labels is not None:
            lab = prep.labels[sl].astype(np.intp, copy=False)
            picked = np.take_along_axis(block, lab[None], axis=0)[0].astype(np.float64)
            loss = -np.log(np.maximum(picked, eps))
        else:
            assert prep.soft is not None
            logp = np.log(np.maximum(block.astype(np.float64), eps))
            loss = -np.sum(prep.soft[:, sl] * logp, axis=0)
        if m is not None:
            loss = loss[m[sl]]
        total += float(loss.sum())
    return total / prep.num_voxels


def negative_log_likelihood(
    probs: Any,
    target: Any,
    *,
    mask: Any = None,
    eps: float = 1e-7,
    target_kind: str | None = None,
) -> float:
    """Mean negative log-likelihood (cross-entropy) of the target under the probabilities.

    ``NLL = -1/N sum_i sum_k y_ik ln max(p_ik, eps)`` (Mehrtash et al. eq. 3, natural log). With hard
    labels this is ``-mean ln p(true class)``; with soft labels the cross-entropy to them; with a rater
    stack the expected NLL against a rater drawn at random (which equals the cross-entropy to the
    rater mean).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    mask : array_like of bool, optional
        Restrict to these voxels.
    eps : float
        Probabilities are clipped below at ``eps`` so that a zero probability costs ``-ln eps``
        (16.1 for the default) instead of infinity.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.

    Returns
    -------
    float
        The mean NLL in nats.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, eq. (3).

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.5, 0.25]], [[0.5, 0.75]]], dtype=np.float32)
    >>> round(negative_log_likelihood(probs, np.array([[0, 1]])), 4)  # -(ln .5 + ln .75) / 2
    0.4904
    """
    eps = check_positive(eps, name="eps")
    if eps >= 1:
        raise ValueError(f"eps must be below 1, got {eps}.")
    prep = prepare(probs, target, mask, target_kind=target_kind)
    return nll_of(prep, eps=eps)


def brier_per_class_of(prep: Prepared, *, rater_average: str) -> np.ndarray:
    """Per-class Brier score ``(C,)`` of validated inputs (see the module docstring for raters)."""
    p, m = prep.probs, prep.mask
    add_variance = prep.kind == "raters" and rater_average == "score"
    per_class = np.zeros(prep.num_classes, dtype=np.float64)
    for sl in iter_chunks(p.shape[1], CHUNK_VOXELS):
        block = p[:, sl]
        keep = None if m is None else m[sl]
        for c in range(prep.num_classes):
            if prep.labels is not None:
                diff = block[c].astype(np.float64) - (prep.labels[sl] == c)
                sq = diff * diff
            else:
                assert prep.soft is not None
                share = prep.soft[c, sl].astype(np.float64)
                diff = block[c].astype(np.float64) - share
                sq = diff * diff
                if add_variance:  # E_r (p - y_r)^2 = (p - s)^2 + s (1 - s) for 0/1 votes with mean s
                    sq += share * (1.0 - share)
            per_class[c] += float(sq.sum() if keep is None else sq[keep].sum())
    return per_class / prep.num_voxels


def brier_score_per_class(
    probs: Any,
    target: Any,
    *,
    mask: Any = None,
    target_kind: str | None = None,
    rater_average: RaterAverage = "score",
) -> np.ndarray:
    """Brier score of every class: ``1/N sum_i (p_ik - y_ik)^2`` (SoftSeg label-fusion paper, eq. 2).

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    mask : array_like of bool, optional
        Restrict to these voxels.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.
    rater_average : {"score", "target"}
        With a rater stack: ``"score"`` gives the expected score against a rater drawn at random,
        ``"target"`` the score against the rater mean. Ignored for other targets.

    Returns
    -------
    numpy.ndarray
        ``(C,)`` float64 scores (lower is better).

    References
    ----------
    Lemay et al., MELBA 2023, eq. (2); Brier 1950.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    >>> brier_score_per_class(probs, np.array([[0, 1]])).tolist()
    [0.125, 0.125]
    """
    rater_average = check_choice(rater_average, name="rater_average", choices=RATER_AVERAGES)
    prep = prepare(probs, target, mask, target_kind=target_kind)
    return brier_per_class_of(prep, rater_average=rater_average)


def brier_score(
    probs: Any,
    target: Any,
    *,
    mask: Any = None,
    reduction: BrierReduction = "mean",
    target_kind: str | None = None,
    rater_average: RaterAverage = "score",
) -> float:
    """Brier score: squared difference between probabilities and the (one-hot or soft) target.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    mask : array_like of bool, optional
        Restrict to these voxels.
    reduction : {"mean", "sum"}
        ``"mean"``: ``1/N sum_i 1/C sum_k (p_ik - y_ik)^2`` (Mehrtash et al. eq. 4, in [0, 1]);
        ``"sum"``: sum over classes (Brier 1950, in [0, 2]). One score per class:
        :func:`brier_score_per_class`.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.
    rater_average : {"score", "target"}
        With a rater stack: ``"score"`` (default) gives the expected score against a rater drawn at
        random, ``"target"`` the score against the rater mean. Ignored for other targets.

    Returns
    -------
    float
        The score (lower is better).

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, eq. (4); Brier 1950.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[1.0, 0.5]], [[0.0, 0.5]]], dtype=np.float32)
    >>> brier_score(probs, np.array([[0, 1]]))  # voxel 2: (0.25 + 0.25) / 2, averaged with 0
    0.125
    >>> raters = np.array([[[0]], [[1]]])  # two raters who disagree on one voxel (also a one-hot map)
    >>> half = np.full((2, 1, 1), 0.5, np.float32)
    >>> brier_score(half, raters, target_kind="raters")
    0.25
    >>> brier_score(half, raters, target_kind="raters", rater_average="target")
    0.0
    """
    reduction = check_choice(reduction, name="reduction", choices=("mean", "sum"))
    per_class = brier_score_per_class(probs, target, mask=mask, target_kind=target_kind, rater_average=rater_average)
    return float(per_class.sum() if reduction == "sum" else per_class.mean())
