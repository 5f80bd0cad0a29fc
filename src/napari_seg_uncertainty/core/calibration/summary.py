"""All calibration numbers of one probability map against one target, in one pass of validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, check_flag
from ._targets import RATER_AVERAGES, BinClosure, RaterAverage, check_closed, check_num_bins, prepare
from .adaptive import check_threshold, mean_over_classes, tace_per_class
from .binning import ReliabilityBins, bins_of
from .scores import brier_per_class_of, nll_of

__all__ = ["CalibrationSummary", "calibration_summary"]


@dataclass(frozen=True)
class CalibrationSummary:
    """All calibration numbers of one probability map against one target (what the dock shows).

    Attributes
    ----------
    bins : ReliabilityBins
        The reliability diagram (ACE, MCE and the L2 error are its properties).
    ece, tace, nll, brier : float
        Expected calibration error, thresholded adaptive calibration error, negative log-likelihood
        and Brier score (mean over classes).
    voxels : int
        Number of voxels evaluated.
    brier_per_class : numpy.ndarray or None
        ``(C,)`` Brier score of every class (``brier`` is their mean); None where not computed.
    """

    bins: ReliabilityBins
    ece: float
    tace: float
    nll: float
    brier: float
    voxels: int
    brier_per_class: np.ndarray | None = None

    def to_dict(self) -> dict[str, float]:
        """The scalar metrics as a dict (ECE, TACE, NLL, Brier, voxels)."""
        return {
            "ece": self.ece,
            "tace": self.tace,
            "nll": self.nll,
            "brier": self.brier,
            "voxels": self.voxels,
        }


def calibration_summary(
    probs: Any,
    target: Any,
    *,
    num_bins: int = 10,
    tace_num_bins: int = 10,
    tace_threshold: float = 1e-3,
    mask: Any = None,
    closed: BinClosure = "right",
    target_kind: str | None = None,
    rater_average: RaterAverage = "score",
    check_values: bool = True,
) -> CalibrationSummary:
    """Reliability bins, ECE, TACE, NLL and Brier (mean over classes) in one call.

    Parameters
    ----------
    probs : array_like
        Class probabilities ``(C, *spatial)``.
    target : array_like
        Hard labels ``(*spatial)``, rater stack ``(R, *spatial)``, one-hot map or soft labels
        ``(C, *spatial)``.
    num_bins : int
        Equal-width bins of the reliability diagram and ECE.
    tace_num_bins : int
        Equal-count bins per class for TACE.
    tace_threshold : float
        TACE threshold.
    mask : array_like of bool, optional
        Restrict every metric to these voxels.
    closed : {"right", "left"}
        Bin closure of the reliability bins.
    target_kind : {"labels", "raters", "one_hot", "soft"}, optional
        How to read ``target`` when an integer ``(C, *spatial)`` target is ambiguous.
    rater_average : {"score", "target"}
        Brier score against a rater stack: expected over raters (default) or against the rater mean.
    check_values : bool
        Check the probability values (finite, in [0, 1], summing to 1). False only for probabilities
        their caller has checked already (``evaluate_case`` checks a case's once for its four
        summaries).

    Returns
    -------
    CalibrationSummary
        ``bins``, ``ece``, ``tace``, ``nll``, ``brier`` (and ``brier_per_class``) and the number of
        voxels used. The probabilities are checked once, not once per metric.

    References
    ----------
    Mehrtash et al., IEEE TMI 2020, eqs. (3)-(5); Nixon et al., CVPR Workshops 2019.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[[0.9, 0.3]], [[0.1, 0.7]]], dtype=np.float32)
    >>> summary = calibration_summary(probs, np.array([[0, 1]]))
    >>> round(summary.ece, 3), summary.voxels
    (0.2, 2)
    """
    num_bins = check_num_bins(num_bins)
    tace_num_bins = check_num_bins(tace_num_bins, name="tace_num_bins")
    tace_threshold = check_threshold(tace_threshold)
    closed = check_closed(closed)
    rater_average = check_choice(rater_average, name="rater_average", choices=RATER_AVERAGES)
    check_values = check_flag(check_values, name="check_values")
    prep = prepare(probs, target, mask, target_kind=target_kind, check_values=check_values)
    bins = bins_of(prep, num_bins=num_bins, closed=closed)
    tace = mean_over_classes(tace_per_class(prep, num_bins=tace_num_bins, threshold=tace_threshold))
    brier = brier_per_class_of(prep, rater_average=rater_average)
    return CalibrationSummary(
        bins=bins,
        ece=bins.expected_calibration_error,
        tace=tace,
        nll=nll_of(prep, eps=1e-7),
        brier=float(brier.mean()),
        voxels=bins.total,
        brier_per_class=brier,
    )
