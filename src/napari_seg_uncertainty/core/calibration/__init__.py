"""Calibration metrics for voxel-wise class probabilities, and post-hoc temperature scaling.

All metrics take probabilities ``probs`` shaped ``(C, *spatial)`` (float, summing to 1 over ``C``)
and a ``target`` of one of four kinds (``target_kind``):

* ``"labels"``: hard labels, integer ``(*spatial)``;
* ``"raters"``: an integer rater stack ``(R, *spatial)``; every score is the expected one against a
  rater drawn at random for each voxel. For the reliability bins, ECE, TACE and the NLL, linear in the
  target, this is the score against the rater mean (the fraction of raters choosing each class); the
  Brier score adds the raters' variance, and ``rater_average="target"`` scores against the rater mean
  instead;
* ``"one_hot"``: a 0/1 map ``(C, *spatial)`` with one 1 per voxel, read as hard labels;
* ``"soft"``: soft labels, float ``(C, *spatial)`` summing to 1 over ``C`` (e.g. STAPLE posteriors),
  scored as the target itself.

Without ``target_kind`` the kind is told apart by shape and dtype; an integer ``(C, *spatial)`` array
that is a valid one-hot map is also a stack of ``C`` raters, and then ``target_kind`` is required.
An optional boolean ``mask`` (``(*spatial)``) restricts every metric to the selected voxels;
:func:`foreground_box_mask` builds the dilated bounding box of the foreground that Mehrtash et al.
(Sec. VI-D) use to keep the many easy background voxels from dominating.

Conventions (where the papers differ, the default is stated first)
------------------------------------------------------------------
Confidence and accuracy
    Confidence is the maximum probability over classes, the predicted class is its arg-max (ties go
    to the lower class index, as :func:`numpy.argmax`). Accuracy of a voxel is 1 if the predicted class
    equals the hard label; with a soft target it is the target probability of the predicted class
    (expected accuracy against the raters). Confidences are clipped to [0, 1] before binning.
Reliability bins (``closed``)
    ``"right"`` (default): bin *m* holds confidences in ``((m-1)/M, m/M]``, as in Mehrtash et al.
    eq. (5); a confidence of exactly 1.0 falls in the last bin and 0 in the first.
    ``"left"``: bins ``[(m-1)/M, m/M)`` with the last bin closed, the convention of Guo et al. and the
    google-research code used by the SoftSeg label-fusion paper. The edges are ``k/M`` computed in the
    dtype of ``probs`` (:func:`bin_edges`), so a confidence equal to ``dtype(0.3)`` is *on* the edge 0.3.
ECE, ACE, MCE, L2
    ``sum_m |D_m|/N * |acc(D_m) - conf(D_m)|`` with equal-width bins (``num_bins=10``, as all
    papers); ACE the unweighted mean over the non-empty bins, MCE their maximum, the L2 error
    ``sqrt(sum_m |D_m|/N (acc - conf)^2)`` (torchmetrics ``norm="l2"``). Class-wise errors
    (:func:`classwise_calibration_error`) bin each class probability instead, as MONAI does.
    :class:`ReliabilityAccumulator` adds cases of a cohort with exact integer counts.
TACE
    Thresholded adaptive calibration error (Nixon et al. 2019, threshold 1e-3 as the SVLS paper),
    equal-count bins per class; see :mod:`.adaptive`.
NLL
    ``-1/N sum_i sum_k y_ik ln max(p_ik, eps)`` (Mehrtash eq. 3, natural log, ``eps=1e-7``).
Brier
    ``reduction="mean"`` (default): ``1/N sum_i 1/C sum_k (p_ik - y_ik)^2``, Mehrtash eq. (4);
    ``reduction="sum"``: the original Brier (1950) score; :func:`brier_score_per_class`: one score per
    class, as the SoftSeg label-fusion paper reports it (eq. 2).

Temperature scaling (:func:`fit_temperature`, :func:`apply_temperature`) is not in the segmentation
papers: it fits one scalar ``T`` minimizing the NLL of ``softmax(logits / T)`` on held-out voxels
(Guo et al. 2017) and is applied at inference.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020.
.. [2] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks",
   ICML 2017.
.. [3] J. Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019.
.. [4] A. Lemay et al., "Label Fusion and Training Methods for Reliable Representation of Inter-Rater
   Uncertainty", MELBA 2023.
"""

from __future__ import annotations

from .accumulator import ReliabilityAccumulator
from .adaptive import thresholded_adaptive_ce, thresholded_adaptive_ce_per_class
from .binning import (
    ReliabilityBins,
    average_calibration_error,
    bin_edges,
    expected_calibration_error,
    l2_calibration_error,
    reliability_bins,
)
from .classwise import ClasswiseCalibration, classwise_calibration_error
from .masks import foreground_box_mask
from .scores import brier_score, brier_score_per_class, negative_log_likelihood
from .summary import CalibrationSummary, calibration_summary
from .temperature import apply_temperature, fit_temperature

__all__ = [
    "CalibrationSummary",
    "ClasswiseCalibration",
    "ReliabilityAccumulator",
    "ReliabilityBins",
    "apply_temperature",
    "average_calibration_error",
    "bin_edges",
    "brier_score",
    "brier_score_per_class",
    "calibration_summary",
    "classwise_calibration_error",
    "expected_calibration_error",
    "fit_temperature",
    "foreground_box_mask",
    "l2_calibration_error",
    "negative_log_likelihood",
    "reliability_bins",
    "thresholded_adaptive_ce",
    "thresholded_adaptive_ce_per_class",
]
