"""napari-seg-uncertainty: segmentation uncertainty from multi-rater annotations.

The scripting API for the napari console and notebooks::

    import napari_seg_uncertainty as nsu
    raters = nsu.load_raters("case01/")          # folder, glob, files, .npz or an (R, *spatial) array
    print(raters.summary())
    entropy = nsu.rater_entropy(raters.labels)
    cohort = nsu.load_cohort("cases/")           # many cases: case folders, a multi-case .npz or a manifest
    split = cohort.split(val=0.2, test=0.2, seed=0)

Names are imported lazily on first use, so ``import napari_seg_uncertainty`` stays fast
(napari imports it when it discovers the plugin).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    # raters and I/O
    "RaterSet": "core.raters",
    "SummaryTable": "core.raters",
    "load_raters": "core.raters",
    "pairwise_dice": "core.raters",
    "agreement_map": "core.raters",
    "rater_entropy": "core.raters",
    "qubiq_tasks": "core.raters",
    "read_image": "core.io",
    "ImageMeta": "core.io",
    "write_image": "core.io",
    "make_phantom_raters": "core.phantom",
    "make_real_raters": "core.phantom",
    "simulate_raters": "core.phantom",
    "OutputTooLargeError": "core._memory",
    # soft labels
    "one_hot": "core.labels",
    "label_smoothing": "core.labels",
    "svls": "core.labels",
    "svls_kernel": "core.labels",
    "msvls": "core.labels",
    "rater_mean": "core.labels",
    "majority_vote": "core.labels",
    "staple": "core.labels",
    "StapleResult": "core.labels",
    "RandomRaterSampler": "core.labels",
    "compute_soft_labels": "core.labels",
    "compare_soft_labels": "core.labels",
    "SoftLabelComparison": "core.labels",
    "SOFT_LABEL_METHODS": "core.labels",
    # cohorts: many cases on disk, split by case
    "Cohort": "core.cohort",
    "CaseInfo": "core.cohort",
    "CaseData": "core.cohort",
    "CohortProblem": "core.cohort",
    "load_cohort": "core.cohort",
    "make_phantom_cohort": "core.cohort",
    "real_image_cases": "core.cohort.real_cases",
    # training
    "TrainConfig": "core.training",
    "TrainingData": "core.training",
    "train": "core.training",
    "predict": "core.training",
    "predict_ssn_distribution": "core.training",
    "predict_ssn_distribution_lazy": "core.training",
    "load_trained_model": "core.training",
    "Prediction": "core.training",
    "TrainedModel": "core.training",
    "TrainResult": "core.training",
    "TrainProgress": "core.training",
    "mask_covariance": "core.losses",
    "build_model": "core.models",
    "SegmentationNet": "core.models",
    "SegmentationEnsemble": "core.models",
    "SSNParameters": "core.models",
    "normalized_relu": "core.models",
    "enable_mc_dropout": "core.models",
    "mc_dropout": "core.models",
    "soft_cross_entropy": "core.losses",
    "dice_loss": "core.losses",
    "adaptive_wing_loss": "core.losses",
    "ssn_loss": "core.losses",
    "sample_low_rank_logits": "core.losses",
    "save_checkpoint": "core.checkpoint",
    "load_checkpoint": "core.checkpoint",
    # stochastic segmentation networks
    "LowRankLogits": "core.ssn",
    "LazyLowRankLogits": "core.ssn",
    "SampleLabelStack": "core.ssn",
    "synthetic_distribution": "core.ssn",
    "save_distribution": "core.ssn",
    "load_distribution": "core.ssn",
    "generalized_energy_distance": "core.ssn",
    "sample_diversity": "core.ssn",
    "pairwise_iou_distance": "core.ssn",
    "dice_against_reference": "core.ssn",
    # calibration and uncertainty
    "reliability_bins": "core.calibration",
    "ReliabilityBins": "core.calibration",
    "ReliabilityAccumulator": "core.calibration",
    "bin_edges": "core.calibration",
    "expected_calibration_error": "core.calibration",
    "average_calibration_error": "core.calibration",
    "l2_calibration_error": "core.calibration",
    "classwise_calibration_error": "core.calibration",
    "ClasswiseCalibration": "core.calibration",
    "thresholded_adaptive_ce": "core.calibration",
    "thresholded_adaptive_ce_per_class": "core.calibration",
    "negative_log_likelihood": "core.calibration",
    "brier_score": "core.calibration",
    "brier_score_per_class": "core.calibration",
    "calibration_summary": "core.calibration",
    "CalibrationSummary": "core.calibration",
    "foreground_box_mask": "core.calibration",
    "fit_temperature": "core.calibration",
    "apply_temperature": "core.calibration",
    "entropy": "core.uncertainty",
    "mutual_information": "core.uncertainty",
    "predictive_uncertainty": "core.uncertainty",
    "segment_entropy": "core.uncertainty",
    "structure_entropy": "core.uncertainty",
    "rank_cases_for_review": "core.uncertainty",
    "entropy_agreement": "core.uncertainty",
    "dice_per_class": "core.uncertainty",
    "surface_dice_per_class": "core.uncertainty",
    "agreement_with_raters": "core.uncertainty",
    "expected_entropy": "core.uncertainty",
    "PredictiveUncertainty": "core.uncertainty",
    "StructureUncertainty": "core.uncertainty",
    "CaseUncertainty": "core.uncertainty",
    "EntropyAgreement": "core.uncertainty",
    "RaterAgreement": "core.uncertainty",
    # the demo (Qt-free workflow layer)
    "DemoResult": "workflow.demo",
    "DemoTraining": "workflow.demo",
    "WorkflowResult": "workflow.demo",
    "load_demo_data": "workflow.demo",
    "run_headless_demo": "workflow.demo",
    "run_workflow": "workflow.demo",
    # training and SSN samples outside the viewer (Qt-free workflow layer)
    "training_job": "workflow.training",
    "TrainingFailure": "workflow.training",
    "TrainOutcome": "workflow.training",
    "sample_metrics": "workflow.ssn",
    "SampleMetrics": "workflow.ssn",
    "export_samples": "workflow.ssn",
    "distribution_from_checkpoint": "workflow.ssn",
    "place_distribution": "workflow.ssn",
    # rater statistics, soft labels, calibration and uncertainty outside the viewer (Qt-free workflow layer)
    "Geometry": "core.geometry",
    "ModelResult": "workflow.figures",
    "RaterStatistics": "workflow.rater_statistics",
    "compute_statistics": "workflow.rater_statistics",
    "SoftLabelsRequest": "workflow.soft_labels",
    "SoftLabelsResult": "workflow.soft_labels",
    "run_request": "workflow.soft_labels",
    "TemperatureResult": "workflow.calibration",
    "temperature_scale": "workflow.calibration",
    "compute_calibration": "workflow.calibration",
    "MapResult": "workflow.uncertainty",
    "ReviewRow": "workflow.uncertainty",
    "compute_uncertainty_maps": "workflow.uncertainty",
    "rank_for_review": "workflow.uncertainty",
    "compute_agreement": "workflow.uncertainty",
    # evaluation
    "BootstrapCI": "core.evaluation",
    "CandidateComparison": "core.evaluation",
    "PairedComparison": "core.evaluation",
    "bootstrap_ci": "core.evaluation",
    "compare_candidates": "core.evaluation",
    "holm_correction": "core.evaluation",
    "paired_comparison": "core.evaluation",
    "evaluate_case": "core.evaluation",
    "CaseEvaluation": "core.evaluation",
    "entropy_dice_correlation": "core.evaluation",
    "EntropyDiceCorrelation": "core.evaluation",
    "evaluate_checkpoints": "workflow.evaluation",
    "EvaluationResult": "workflow.evaluation",
    "EvaluationProgress": "workflow.evaluation",
    "CandidateEvaluation": "workflow.evaluation",
    "MetricSummary": "workflow.evaluation",
    "read_evaluation": "workflow.evaluation",
    "SavedEvaluation": "workflow.evaluation",
    # studies: candidates trained, evaluated and compared on one cohort
    "load_study": "workflow.study",
    "StudySpec": "workflow.study",
    "StudyCandidate": "workflow.study",
    "StudyRun": "workflow.study",
    "StudyProgress": "workflow.study",
    "StudyResult": "workflow.study",
    "plan_study": "workflow.study",
    "run_study": "workflow.study",
    "example_studies": "workflow.study",
    "study_table": "workflow.study.table",
    "StudyTable": "workflow.study.table",
    "write_study_table": "workflow.study.table",
    "read_study_table": "workflow.study.table",
    "quality_control": "workflow.study.quality",
    "QualityControl": "workflow.study.quality",
    "write_quality_control": "workflow.study.quality",
    # reviewing a cohort case by case
    "ReviewSession": "workflow.review",
    "ReviewCase": "workflow.review",
    "CaseReviewRow": "workflow.review",
    "KeptAnnotation": "workflow.review",
    "ReviewMark": "workflow.review",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_seg_uncertainty' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
