"""The records of an evaluation: progress per case, metric summaries, per-candidate and overall results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...core.calibration import ReliabilityBins

__all__ = ["CandidateEvaluation", "EvaluationProgress", "EvaluationResult", "MetricSummary"]


@dataclass(frozen=True)
class EvaluationProgress:
    """One case of one candidate evaluated.

    Attributes
    ----------
    candidate : str
        The checkpoint's name.
    candidate_index, num_candidates : int
        Which candidate (0-based) of how many.
    case_id : str
        The case just evaluated.
    case_index, num_cases : int
        Cases of this candidate done so far (1-based) of how many.
    seconds : float
        Time spent on this case (reading, inference and metrics).
    """

    candidate: str
    candidate_index: int
    num_candidates: int
    case_id: str
    case_index: int
    num_cases: int
    seconds: float

    @property
    def fraction(self) -> float:
        """Share of the whole evaluation done, in ``(0, 1]``."""
        return (self.candidate_index + self.case_index / self.num_cases) / self.num_candidates

    def text(self) -> str:
        """One line for a log: ``name [1/2] case case_003 (2/4) 0.41 s``."""
        return (
            f"{self.candidate} [{self.candidate_index + 1}/{self.num_candidates}] case {self.case_id} "
            f"({self.case_index}/{self.num_cases}) {self.seconds:.2f} s"
        )


@dataclass(frozen=True)
class MetricSummary:
    """The mean of one metric of one class over the evaluated cases, with its bootstrap interval.

    Attributes
    ----------
    class_name, metric : str
        What was measured (``class_name`` as in the per-case rows).
    mean, low, high : float
        Mean over the cases with a finite value and its 95 % bootstrap percentile interval (NaN without
        such a case).
    n : int
        Number of cases with a finite value.
    """

    class_name: str
    metric: str
    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class CandidateEvaluation:
    """Everything measured for one checkpoint.

    Attributes
    ----------
    name : str
        Candidate name (unique within one evaluation).
    checkpoint : str
        The checkpoint file.
    case_ids : tuple of str
        The evaluated cases, in cohort order.
    rows : tuple of dict
        Per-case rows ``{"candidate", "case_id", "class", "metric", "value"}``.
    reliability : ReliabilityBins
        Reliability bins over all voxels of all evaluated cases, against the fused reference.
    summary : tuple of MetricSummary
        One entry per (class, metric) of the rows, in their order.
    """

    name: str
    checkpoint: str
    case_ids: tuple[str, ...]
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    reliability: ReliabilityBins = field(repr=False)
    summary: tuple[MetricSummary, ...] = field(repr=False)

    def summary_rows(self) -> list[dict[str, Any]]:
        """``summary`` as rows ``{"candidate", "class", "metric", "mean", "low", "high", "n"}``."""
        return [
            {"candidate": self.name, "class": s.class_name, "metric": s.metric, "mean": s.mean, "low": s.low,
             "high": s.high, "n": s.n}
            for s in self.summary
        ]

    def reliability_rows(self) -> list[dict[str, Any]]:
        """The pooled bins as rows ``{"candidate", "bin", "lower", "upper", "count", …}``."""
        return [{"candidate": self.name, **row} for row in self.reliability.to_records()]


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_checkpoints` returns.

    Attributes
    ----------
    candidates : tuple of CandidateEvaluation
        One per checkpoint, in the order given.
    split : str
        The evaluated part of the split (``"test"``, ``"val"`` or ``"train"``).
    reference : str
        The fused reference of the calibration metrics and the pooled reliability.
    files : tuple of str
        The files written (empty without ``out_dir``).
    cohort : str or None
        The cohort's source (absolute path), from which :func:`read_evaluation` reloads it.
    cohort_options : dict
        What :func:`~napari_seg_uncertainty.core.cohort.load_cohort` needs besides the source to load
        the same cohort again: ``class_names``, ``target_spacing``, ``task``, ``on_error``.
    tolerance_mm : float
        Surface Dice tolerance of the per-case rows.
    num_bins : int
        Bins of the pooled reliability diagram and of every case's ECE, MCE and TACE.
    seed : int
        Seed of the prediction's sampling and of the bootstrap.
    """

    candidates: tuple[CandidateEvaluation, ...]
    split: str
    reference: str
    files: tuple[str, ...] = ()
    cohort: str | None = None
    cohort_options: dict[str, Any] = field(default_factory=dict, repr=False)
    tolerance_mm: float = 1.0
    num_bins: int = 15
    seed: int = 0

    def __getitem__(self, name: str) -> CandidateEvaluation:
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise KeyError(f"no candidate {name!r}; the candidates are {[c.name for c in self.candidates]}.")

    def case_rows(self) -> list[dict[str, Any]]:
        """Per-case rows of every candidate (the content of ``cases.csv``)."""
        return [row for c in self.candidates for row in c.rows]

    def summary_rows(self) -> list[dict[str, Any]]:
        """Means and intervals of every candidate (the content of ``summary.csv``)."""
        return [row for c in self.candidates for row in c.summary_rows()]

    def reliability_rows(self) -> list[dict[str, Any]]:
        """Pooled reliability bins of every candidate (the content of ``reliability.csv``)."""
        return [row for c in self.candidates for row in c.reliability_rows()]
