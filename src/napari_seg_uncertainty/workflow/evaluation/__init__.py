"""Evaluating trained checkpoints on the held-out cases of a cohort, one case at a time.

:func:`evaluate_checkpoints` is a generator: for every checkpoint (a *candidate*) it loads the model
once, then reads, predicts and scores one case after another of the evaluated split, yielding an
:class:`EvaluationProgress` record per case. Only the per-case rows and the reliability counts are
kept between cases, so memory does not grow with the number of cases. It returns an
:class:`EvaluationResult`: per candidate the per-case rows
(:func:`~napari_seg_uncertainty.core.evaluation.case_metrics.evaluate_case`), the reliability diagram
pooled over every voxel of every case (exact integer counts,
:class:`~napari_seg_uncertainty.core.calibration.ReliabilityAccumulator`) and the mean of every
metric with its 95 % bootstrap confidence interval over cases
(:func:`~napari_seg_uncertainty.core.evaluation.statistics.bootstrap_ci`). With ``out_dir`` it writes
``cases.csv``, ``summary.csv``, ``reliability.csv``, ``reliability.png`` and ``evaluation.json``
atomically; :func:`read_evaluation` reads such a folder back (:class:`SavedEvaluation`).

* :mod:`.arguments` — candidate names, the cohort, each checkpoint's evaluated cases;
* :mod:`.run` — the streaming evaluation (:func:`evaluate_checkpoints`), SSN samples;
* :mod:`.summary` — means with bootstrap intervals from per-case rows (:func:`summarize_rows`);
* :mod:`.results` — the result records;
* :mod:`.files` — the files of an evaluation (:func:`write_evaluation`);
* :mod:`.saved` — reading them back (:func:`read_evaluation`).

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020
   (held-out evaluation, pooled reliability diagrams, bootstrap confidence intervals).
.. [2] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.
"""

from __future__ import annotations

from .files import EVALUATION_FILES, write_evaluation
from .results import CandidateEvaluation, EvaluationProgress, EvaluationResult, MetricSummary
from .run import evaluate_checkpoints, has_members, ssn_samples
from .saved import SavedEvaluation, read_evaluation
from .summary import summarize_rows

__all__ = [
    "EVALUATION_FILES",
    "CandidateEvaluation",
    "EvaluationProgress",
    "EvaluationResult",
    "MetricSummary",
    "SavedEvaluation",
    "evaluate_checkpoints",
    "has_members",
    "read_evaluation",
    "ssn_samples",
    "summarize_rows",
    "write_evaluation",
]
