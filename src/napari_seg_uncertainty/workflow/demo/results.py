"""What the headless demo returns: one :class:`DemoResult` per data set, with its
:class:`WorkflowResult` where the whole workflow ran. ``to_dict`` gives the data set's ``metrics.json``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["DemoResult", "WorkflowResult"]


@dataclass(frozen=True)
class WorkflowResult:
    """The numbers of each step of :func:`~napari_seg_uncertainty.workflow.demo.run_workflow` and its files.

    Attributes
    ----------
    soft_labels : dict
        ``mean_abs_difference_vs_one_hot``: method -> class name -> mean |Δ| against the one-hot map.
    training : dict
        Model label -> checkpoint, target, steps, final loss, final validation Dice, weights digest.
    ssn : dict
        The SSN's rank, samples per setting, per setting (``samples``, ``samples_T0`` …) its class
        scales, temperature, GED² and sample diversity, and the raters' own diversity.
    calibration : dict
        Model label (also ``"<label> temperature-scaled"``) -> ECE, TACE, NLL, Brier, voxels, entropy
        MAE and the fitted temperature.
    uncertainty : dict
        Mean entropy per model, mean SSN mutual information, the most uncertain structure.
    files : list of str
        The paths written.
    cohort : dict or None
        The training cohort: ``cases``, ``generated_cases``, ``shown_case`` and the case-level
        ``split`` (the shown case is a test case).
    study : dict or None
        The study of four candidates on the cohort: its ``folder``, ``candidates``, ``test_cases``,
        the ``table`` rows (mean and 95 % interval per candidate and metric) and the ``seconds`` it took.
    """

    soft_labels: dict[str, Any]
    training: dict[str, Any]
    ssn: dict[str, Any]
    calibration: dict[str, Any]
    uncertainty: dict[str, Any]
    files: list[str]
    cohort: dict[str, Any] | None = None
    study: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The numbers as written to ``metrics.json`` under ``"workflow"`` (without the files)."""
        return {
            "soft_labels": self.soft_labels,
            **({"cohort": self.cohort} if self.cohort is not None else {}),
            "training": self.training,
            "ssn": self.ssn,
            "calibration": self.calibration,
            "uncertainty": self.uncertainty,
            **({"study": self.study} if self.study is not None else {}),
        }


@dataclass(frozen=True)
class DemoResult:
    """One data set of :func:`~napari_seg_uncertainty.workflow.demo.run_headless_demo`.

    Attributes
    ----------
    dataset, description : str
        Key of :data:`~napari_seg_uncertainty.workflow.demo.DATASETS` and its description.
    shape : list of int
        The spatial shape.
    spacing : list of float
        Voxel spacing per spatial axis.
    num_raters : int
        ``R``, the number of raters.
    class_names : list of str
        One name per class, background first.
    summary : list of dict
        The per-class rater summary (:meth:`RaterSet.summary` rows).
    mean_rater_entropy : float
        Mean of the normalized rater entropy map.
    workflow : WorkflowResult or None
        The workflow's numbers, for the workflow data set only.
    files : list of str
        Every file written for the data set, relative to the output folder, ``metrics.json`` last.
    """

    dataset: str
    description: str
    shape: list[int]
    spacing: list[float]
    num_raters: int
    class_names: list[str]
    summary: list[dict[str, Any]]
    mean_rater_entropy: float
    workflow: WorkflowResult | None
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The content of the data set's ``metrics.json`` (``workflow`` only where it ran)."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "description": self.description,
            "shape": self.shape,
            "spacing": self.spacing,
            "num_raters": self.num_raters,
            "class_names": self.class_names,
            "summary": self.summary,
            "mean_rater_entropy": self.mean_rater_entropy,
        }
        if self.workflow is not None:
            out["workflow"] = self.workflow.to_dict()
        out["files"] = self.files
        return out
