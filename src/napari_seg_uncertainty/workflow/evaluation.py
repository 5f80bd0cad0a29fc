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
``cases.csv``, ``summary.csv``, ``reliability.csv`` and ``reliability.png`` atomically.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020
   (held-out evaluation, pooled reliability diagrams, bootstrap confidence intervals).
.. [2] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall, 1993.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core._validation import check_choice, check_flag, check_int, check_real_in, check_seed, describe
from ..core.cohort.splits import SPLIT_KEYS
from ..core.evaluation.case_metrics import REFERENCES
from .tables import refuse_existing

if TYPE_CHECKING:
    from ..core.calibration import ReliabilityBins
    from ..core.cohort import Cohort

__all__ = [
    "EVALUATION_FILES",
    "CandidateEvaluation",
    "EvaluationProgress",
    "EvaluationResult",
    "MetricSummary",
    "evaluate_checkpoints",
    "fused_reference",
    "ssn_samples",
    "summarize_rows",
    "write_evaluation",
]

#: The files :func:`evaluate_checkpoints` writes into ``out_dir``.
EVALUATION_FILES = ("cases.csv", "summary.csv", "reliability.csv", "reliability.png")


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
    """

    candidates: tuple[CandidateEvaluation, ...]
    split: str
    reference: str
    files: tuple[str, ...] = ()

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


# ---------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------
def _candidate_names(checkpoints: Any) -> dict[str, str]:
    """``{name: path}`` from one path, a sequence of paths or a mapping of names to paths."""
    if isinstance(checkpoints, (str, os.PathLike)):
        checkpoints = [checkpoints]
    if isinstance(checkpoints, Mapping):
        pairs = list(checkpoints.items())
        for name, path in pairs:
            if not isinstance(name, str) or not name:
                raise TypeError(f"checkpoints must map names (non-empty str) to paths, got the key {describe(name)}.")
            if not isinstance(path, (str, os.PathLike)):
                raise TypeError(f"checkpoints[{name!r}] must be a path, got {describe(path)}.")
        if not pairs:
            raise ValueError("checkpoints is empty; give at least one checkpoint file.")
        return {name: os.fspath(path) for name, path in pairs}
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, bytes):
        raise TypeError(
            f"checkpoints must be a path, a list of paths or a dict of names to paths, got {describe(checkpoints)}."
        )
    paths = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else p for p in checkpoints]
    for i, p in enumerate(paths):
        if not isinstance(p, str):
            raise TypeError(f"checkpoints[{i}] must be a path, got {describe(p)}.")
    if not paths:
        raise ValueError("checkpoints is empty; give at least one checkpoint file.")
    if len(set(os.path.abspath(p) for p in paths)) < len(paths):
        raise ValueError(f"checkpoints names a file twice: {paths}.")
    return dict(zip(_unique_names(paths), paths, strict=True))


def _unique_names(paths: list[str]) -> list[str]:
    """Short names: the file stem, or its folder for ``last.pt`` (``folder/best`` for ``best.pt``);
    more of the path where two would coincide."""
    def name(p: str, depth: int) -> str:
        parts = Path(os.path.abspath(p)).with_suffix("").parts
        stem = parts[-1]
        if stem == "last":
            parts = parts[:-1]
        return "/".join(parts[-depth:]) if parts else stem

    depth = 1
    names = [name(p, depth) for p in paths]
    while len(set(names)) < len(names) and depth < 12:
        depth += 1
        names = [name(p, depth) for p in paths]
    return names


def _as_cohort(cohort: Any) -> Cohort:
    from ..core.cohort import Cohort, load_cohort

    if isinstance(cohort, Cohort):
        return cohort
    if isinstance(cohort, (str, os.PathLike)):
        return load_cohort(cohort)
    raise TypeError(f"cohort must be a Cohort or the path of one (folder, .npz, manifest), got {describe(cohort)}.")


def _stored_split(state: dict[str, Any]) -> dict[str, list[str]] | None:
    cohort = state.get("cohort")
    split = cohort.get("split") if isinstance(cohort, dict) else None
    return {k: list(split.get(k, [])) for k in SPLIT_KEYS} if isinstance(split, dict) else None


def _evaluated_cases(
    name: str, path: str, cohort: Cohort, split: str, split_spec: Any, seed: int
) -> list[str]:
    """The case ids of ``split`` for one checkpoint; refuses a case the checkpoint trained on."""
    from ..core.checkpoint import load_checkpoint

    stored = _stored_split(load_checkpoint(path))
    if split_spec is None:
        if stored is None:
            raise ValueError(
                f"checkpoint {path!r} ({name}) was not trained on a cohort, so it stores no split; pass "
                "split_spec (e.g. {'train': [...], 'test': [...]}) to say which cases to evaluate."
            )
        chosen = stored
    else:
        chosen = cohort.resolve_split(split_spec, seed=seed)
    cases = list(chosen.get(split, []))
    unknown = [c for c in cases if c not in set(cohort.case_ids)]
    if unknown:
        raise ValueError(
            f"the {split} split of checkpoint {path!r} ({name}) names case(s) {unknown[:5]} that are not in the "
            f"cohort from {cohort.source!r}; evaluate on the cohort it was trained on or pass split_spec."
        )
    if not cases:
        raise ValueError(f"the {split} split of {name} ({path!r}) holds no case; nothing to evaluate.")
    if stored is not None:
        leaked = [c for c in cases if c in set(stored["train"])]
        if leaked:
            raise ValueError(
                f"case(s) {leaked[:5]}{' …' if len(leaked) > 5 else ''} of the evaluated {split} split were "
                f"training cases of checkpoint {path!r} ({name}); evaluating on them would overstate its quality. "
                "Evaluate on held-out cases (the checkpoint's own split by default)."
            )
    order = {c: i for i, c in enumerate(cohort.case_ids)}
    return sorted(cases, key=order.__getitem__)


def fused_reference(raters: np.ndarray, reference: str, *, num_classes: int) -> np.ndarray:
    """The fused reference labels ``(*spatial)`` of a case, as ``evaluate_case`` fuses them.

    Parameters
    ----------
    raters : numpy.ndarray
        Integer rater labels ``(R, *spatial)``.
    reference : {"majority", "staple", "mean"}
        Majority vote (ties to the lower class), STAPLE's labels, or the arg-max of the rater mean.
    num_classes : int
        Number of classes.

    Returns
    -------
    numpy.ndarray
        Integer labels ``(*spatial)``.

    References
    ----------
    .. [1] S. K. Warfield, K. H. Zou, W. M. Wells, "Simultaneous truth and performance level estimation
       (STAPLE)", IEEE TMI 23(7), 2004.
    """
    from ..core.labels import majority_vote, rater_mean, staple

    reference = check_choice(reference, name="reference", choices=REFERENCES)
    num_classes = check_int(num_classes, name="num_classes", minimum=2)
    if reference == "majority":
        return majority_vote(raters, num_classes=num_classes)
    if reference == "mean":
        return np.argmax(rater_mean(raters, num_classes=num_classes), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(staple(raters, num_classes=num_classes).labels)


# ---------------------------------------------------------------------------------------------------
# the evaluation
# ---------------------------------------------------------------------------------------------------
def evaluate_checkpoints(
    checkpoints: str | os.PathLike | Sequence[str | os.PathLike] | Mapping[str, str | os.PathLike],
    cohort: Cohort | str | os.PathLike,
    *,
    split: str = "test",
    split_spec: Mapping[str, Any] | str | None = None,
    out_dir: str | os.PathLike | None = None,
    reference: str = "majority",
    tolerance_mm: float = 1.0,
    num_bins: int = 15,
    num_samples: int | None = None,
    num_resamples: int = 10000,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> Generator[EvaluationProgress, None, EvaluationResult]:
    """Evaluate checkpoints on the held-out cases of a cohort, streaming one case at a time.

    Parameters
    ----------
    checkpoints : path, sequence of paths or dict
        ``last.pt`` / ``best.pt`` files written by training; a dict gives each a name. Without names a
        checkpoint is named by its file stem (its folder for ``last.pt``).
    cohort : Cohort or path
        The cohort (or the folder, ``.npz`` or manifest to load it from).
    split : {"test", "val", "train"}
        Which part of the split to evaluate.
    split_spec : dict or str, optional
        A split for :meth:`Cohort.resolve_split` (e.g. ``"manifest"`` or ``{"train": [...], "test": [...]}``);
        default: each checkpoint's own stored split.
    out_dir : path, optional
        Folder for ``cases.csv``, ``summary.csv``, ``reliability.csv`` and ``reliability.png``.
    reference : {"majority", "staple", "mean"}
        Fused reference of the overlap and calibration metrics (see ``evaluate_case``) and of the pooled
        reliability diagram.
    tolerance_mm : float
        Surface Dice tolerance in mm (>= 0).
    num_bins : int
        Equal-width bins of the pooled reliability diagram, and the bins of every case's ECE, MCE and
        TACE.
    num_samples : int, optional
        SSN samples / MC-dropout passes of the prediction (default: the checkpoint's config). An SSN
        checkpoint also draws that many label maps from its logit distribution for GED², sample
        diversity and mutual information (:func:`ssn_samples`).
    num_resamples : int
        Bootstrap resamples of the confidence intervals.
    seed : int
        Seed of the prediction's sampling and of the bootstrap (the same for every candidate and metric).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    overwrite : bool
        Replace files of an earlier evaluation in ``out_dir`` (otherwise refused before any work).

    Yields
    ------
    EvaluationProgress
        One record per case and candidate.

    Returns
    -------
    EvaluationResult
        The generator's return value (``StopIteration.value``).

    Raises
    ------
    TypeError, ValueError
        A wrong argument (named), a checkpoint without a stored split and no ``split_spec``, an empty
        split, or a case of the evaluated split that was a training case of the checkpoint.
    FileNotFoundError
        A checkpoint does not exist.
    FileExistsError
        An output file exists and ``overwrite`` is False.

    All of these are raised by the call itself, before the first case is predicted (the checkpoints
    are read once there for their stored splits); the generator then only reads, predicts and scores.

    References
    ----------
    .. [1] A. Mehrtash et al., "Confidence Calibration and Predictive Uncertainty Estimation for Deep
       Medical Image Segmentation", IEEE TMI 39(12), 2020.

    Examples
    --------
    >>> gen = evaluate_checkpoints("runs/unet/last.pt", "cohort/cohort.csv")  # doctest: +SKIP
    >>> for record in gen:  # doctest: +SKIP
    ...     print(record.text())
    """
    names = _candidate_names(checkpoints)
    split = check_choice(split, name="split", choices=SPLIT_KEYS)
    reference = check_choice(reference, name="reference", choices=REFERENCES)
    tolerance_mm = check_real_in(tolerance_mm, name="tolerance_mm", low=0.0, high=math.inf, high_open=True)
    num_bins = check_int(num_bins, name="num_bins", minimum=1)
    if num_samples is not None:
        num_samples = check_int(num_samples, name="num_samples", minimum=0)
    num_resamples = check_int(num_resamples, name="num_resamples", minimum=1)
    seed = check_seed(seed)
    if not isinstance(device, str):
        raise TypeError(f"device must be a str such as 'auto' or 'cpu', got {describe(device)}.")
    overwrite = check_flag(overwrite, name="overwrite")
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path or None, got {describe(out_dir)}.")
    if split_spec is not None and not isinstance(split_spec, (str, Mapping)):
        raise TypeError(
            f"split_spec must be None, 'manifest' or a dict (fractions, folds or case ids), got {describe(split_spec)}."
        )
    if out_dir is not None:  # all files or none, refused before any work
        refuse_existing(*(Path(out_dir) / f for f in EVALUATION_FILES), overwrite=overwrite)
    cohort = _as_cohort(cohort)
    # every checkpoint's cases, and the refusal of a training case, before the first inference
    plans = {name: _evaluated_cases(name, path, cohort, split, split_spec, seed) for name, path in names.items()}
    return _run(names, plans, cohort, out_dir=out_dir, split=split, reference=reference,
                tolerance_mm=tolerance_mm, num_bins=num_bins, num_samples=num_samples,
                num_resamples=num_resamples, seed=seed, device=device, overwrite=overwrite)


def _run(
    names: dict[str, str], plans: dict[str, list[str]], cohort: Cohort, *, split: str, out_dir: Any, reference: str,
    tolerance_mm: float, num_bins: int, num_samples: int | None, num_resamples: int, seed: int, device: str,
    overwrite: bool,
) -> Generator[EvaluationProgress, None, EvaluationResult]:
    """The generator behind :func:`evaluate_checkpoints` (arguments and splits checked, nothing predicted yet)."""
    from ..core.calibration import ReliabilityAccumulator
    from ..core.evaluation.case_metrics import evaluate_case
    from ..core.training import load_trained_model, predict

    folder = None if out_dir is None else Path(out_dir)
    candidates = []
    for index, (name, path) in enumerate(names.items()):
        trained = load_trained_model(path, device=device)
        num_classes = int(trained.info["num_classes"])
        accumulator = ReliabilityAccumulator(num_bins=num_bins)
        rows: list[dict[str, Any]] = []
        cases = plans[name]
        for position, case_id in enumerate(cases, start=1):
            started = time.perf_counter()
            case = cohort.load_case(case_id)
            if case.image is None:
                raise ValueError(f"case {case_id!r} of the cohort has no image; the model needs one to predict.")
            # one channel as (*S): a (1, Y, X) image would read as a one-slice volume
            image = case.image[0] if case.image.shape[0] == 1 else case.image
            prediction = predict(trained, image, num_samples=num_samples, seed=seed)
            evaluation = evaluate_case(
                prediction.probabilities, case.raters, spacing=case.spacing, num_classes=num_classes,
                class_names=list(trained.class_names), reference=reference, tolerance_mm=tolerance_mm,
                num_bins=num_bins, case_id=case_id,
                samples=ssn_samples(trained, image, num_samples=num_samples, seed=seed),
            )
            rows += [{"candidate": name, **row} for row in evaluation.rows()]
            target = fused_reference(case.raters, reference, num_classes=num_classes)
            accumulator.update(prediction.probabilities, target, target_kind="labels")
            del case, image, prediction, evaluation, target
            yield EvaluationProgress(name, index, len(names), case_id, position, len(cases),
                                     time.perf_counter() - started)
        del trained  # one model in memory at a time
        candidates.append(CandidateEvaluation(
            name=name, checkpoint=path, case_ids=tuple(cases), rows=tuple(rows),
            reliability=accumulator.aggregate(),
            summary=summarize_rows(rows, num_resamples=num_resamples, seed=seed),
        ))  # fmt: skip
    result = EvaluationResult(tuple(candidates), split, reference)
    if folder is not None:
        result = EvaluationResult(result.candidates, split, reference,
                                  write_evaluation(result, folder, overwrite=overwrite))
    return result


def ssn_samples(trained: Any, image: Any, *, num_samples: int | None = None, seed: int = 0) -> np.ndarray | None:
    """Label maps sampled from an SSN model's logit distribution for one image, else None.

    Parameters
    ----------
    trained : TrainedModel
        A loaded model (``load_trained_model``); None is returned unless ``config.head == "ssn"``.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``, as for ``predict``.
    num_samples : int, optional
        Samples drawn (default ``config.predict_samples``; 0 gives None).
    seed : int
        Sampling seed.

    Returns
    -------
    numpy.ndarray or None
        ``(num_samples, *S)`` labels (ensemble member 0 of an SSN ensemble), for the GED², sample diversity
        and mutual information of ``evaluate_case``.

    References
    ----------
    .. [1] M. Monteiro et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
       Uncertainty", NeurIPS 2020.
    """
    from ..core.training import TrainedModel, predict_ssn_distribution

    if not isinstance(trained, TrainedModel):
        raise TypeError(f"trained must be a TrainedModel (load_trained_model), got {describe(trained)}.")
    if trained.config.head != "ssn":
        return None
    count = trained.config.predict_samples if num_samples is None else num_samples
    count = check_int(count, name="num_samples", minimum=0)
    if count == 0:
        return None
    return predict_ssn_distribution(trained, image).sample_labels(count, seed=check_seed(seed))


def summarize_rows(
    rows: Sequence[Mapping[str, Any]], *, num_resamples: int = 10000, seed: int = 0
) -> tuple[MetricSummary, ...]:
    """Mean and 95 % bootstrap interval over cases of every (class, metric) of per-case rows.

    Parameters
    ----------
    rows : sequence of dict
        Rows with ``"case_id"``, ``"class"``, ``"metric"`` and ``"value"`` (one per case and pair).
    num_resamples : int
        Bootstrap resamples; all pairs share the resampled cases (one call of ``bootstrap_ci``).
    seed : int
        Bootstrap seed.

    Returns
    -------
    tuple of MetricSummary
        In the order the pairs first appear. Non-finite values (NaN, an infinite distance) are left out
        and ``n`` counts the rest; with fewer than two cases the interval is NaN.

    References
    ----------
    .. [1] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", 1993, Sec. 13.3.

    Examples
    --------
    >>> rows = [{"case_id": f"c{i}", "class": "organ", "metric": "dice", "value": v}
    ...         for i, v in enumerate([0.8, 0.9, 0.85, float("nan")])]
    >>> (s,) = summarize_rows(rows, num_resamples=1000)
    >>> s.metric, s.n, round(s.mean, 3), s.low <= s.mean <= s.high
    ('dice', 3, 0.85, True)
    """
    from ..core.evaluation.statistics import bootstrap_ci

    num_resamples = check_int(num_resamples, name="num_resamples", minimum=1)
    seed = check_seed(seed)
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise TypeError(f"rows must be a list of dicts, got {describe(rows)}.")
    cases: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not {"case_id", "class", "metric", "value"} <= set(row):
            raise ValueError(f"rows[{i}] must be a dict with case_id, class, metric and value, got {describe(row)}.")
        cases.setdefault(str(row["case_id"]), len(cases))
        pairs.setdefault((str(row["class"]), str(row["metric"])), len(pairs))
    table = np.full((len(cases), len(pairs)), np.nan)
    for row in rows:
        value = row["value"]
        value = math.nan if value is None else float(value)
        table[cases[str(row["case_id"])], pairs[(str(row["class"]), str(row["metric"]))]] = (
            value if math.isfinite(value) else math.nan
        )
    n = np.isfinite(table).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(table, axis=0) / np.maximum(n, 1), np.nan)
    low = high = np.full(len(pairs), np.nan)
    if len(cases) >= 2 and pairs:
        ci = bootstrap_ci(table, num_resamples=num_resamples, seed=seed)
        mean, low, high = np.asarray(ci.mean), np.asarray(ci.low), np.asarray(ci.high)
    return tuple(
        MetricSummary(class_name, metric, float(mean[j]), float(low[j]), float(high[j]), int(n[j]))
        for (class_name, metric), j in pairs.items()
    )


def write_evaluation(result: EvaluationResult, folder: str | os.PathLike, *, overwrite: bool) -> tuple[str, ...]:
    """Write ``cases.csv``, ``summary.csv``, ``reliability.csv`` and ``reliability.png`` into ``folder``.

    Parameters
    ----------
    result : EvaluationResult
        What :func:`evaluate_checkpoints` returned.
    folder : str or os.PathLike
        The output folder (created if missing).
    overwrite : bool
        Replace existing files; otherwise :class:`FileExistsError` naming them, raised before the first
        file is written.

    Returns
    -------
    tuple of str
        The four paths. Each file is written atomically (temporary file renamed into place).

    Notes
    -----
    The figure's legend gives each candidate's pooled ECE (all voxels of all cases) and the case means
    of TACE, NLL and Brier against the reference in the whole volume.
    """
    from ..core.calibration import CalibrationSummary
    from .figures import ModelResult, draw_reliability, new_figure, save_figure
    from .tables import write_rows

    if not isinstance(result, EvaluationResult):
        raise TypeError(f"result must be an EvaluationResult, got {describe(result)}.")
    folder = Path(folder)
    overwrite = check_flag(overwrite, name="overwrite")
    refuse_existing(*(folder / f for f in EVALUATION_FILES), overwrite=overwrite)
    written = [
        str(write_rows(folder / "cases.csv", result.case_rows(), overwrite=overwrite)),
        str(write_rows(folder / "summary.csv", result.summary_rows(), overwrite=overwrite)),
        str(write_rows(folder / "reliability.csv", result.reliability_rows(), overwrite=overwrite)),
    ]
    models = []
    for candidate in result.candidates:
        bins = candidate.reliability
        means = {(s.class_name, s.metric): s.mean for s in candidate.summary}
        models.append(ModelResult(candidate.name, CalibrationSummary(
            bins=bins, ece=bins.expected_calibration_error, tace=_overall(means, "tace"),
            nll=_overall(means, "nll"), brier=_overall(means, "brier"), voxels=bins.total,
        )))  # fmt: skip
    figure = new_figure(6.0, 5.5)
    draw_reliability(figure, models)
    figure.suptitle(f"Pooled reliability, {result.split} cases (reference: {result.reference})", fontsize="medium")
    written.append(save_figure(figure, folder / "reliability.png", overwrite=overwrite))
    return tuple(written)


def _overall(means: dict[tuple[str, str], float], metric: str) -> float:
    """The case mean of a whole-volume metric against the reference, for the legend (NaN if absent)."""
    return means.get(("all", f"{metric}_reference_volume"), math.nan)
