"""Writing the files of an evaluation: ``cases.csv``, ``summary.csv``, ``reliability.csv``,
``reliability.png`` and ``evaluation.json`` (what was evaluated, to read it back with :func:`read_evaluation`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core._atomic import atomic_write
from ...core._validation import check_flag, describe
from ..tables import refuse_existing
from .results import EvaluationResult

if TYPE_CHECKING:
    from ...core.calibration import ReliabilityBins
    from ..figures import ModelResult

__all__ = ["EVALUATION_FILES", "EVALUATION_VERSION", "pooled_reliability_result", "write_evaluation"]

#: The files :func:`evaluate_checkpoints` writes into ``out_dir``.
EVALUATION_FILES = ("cases.csv", "summary.csv", "reliability.csv", "reliability.png", "evaluation.json")

#: Format version of ``evaluation.json``.
EVALUATION_VERSION = 1


def write_evaluation(result: EvaluationResult, folder: str | os.PathLike, *, overwrite: bool) -> tuple[str, ...]:
    """Write ``cases.csv``, ``summary.csv``, ``reliability.csv``, ``reliability.png`` and ``evaluation.json``.

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
        The five paths, in the order of :data:`EVALUATION_FILES`. Each file is written atomically
        (temporary file renamed into place); ``evaluation.json`` comes last, so a folder holding it holds
        the whole evaluation.

    Notes
    -----
    The figure's legend gives each candidate's pooled ECE (all voxels of all cases) and the case means
    of TACE, NLL and Brier against the reference in the whole volume. ``evaluation.json`` holds
    ``version``, ``split``, ``reference``, ``cohort`` (absolute source), ``cohort_options``,
    ``candidates`` (name to absolute checkpoint path), ``case_ids`` (name to the evaluated cases),
    ``tolerance_mm``, ``num_bins`` and ``seed``.
    """
    from ..tables import write_rows

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
    written.append(_write_figure(result, folder / "reliability.png", overwrite=overwrite))
    with atomic_write(folder / "evaluation.json", overwrite=overwrite) as temporary:
        temporary.write_text(json.dumps(evaluation_record(result), indent=2, allow_nan=False) + "\n")
    written.append(str(folder / "evaluation.json"))
    return tuple(written)


def evaluation_record(result: EvaluationResult) -> dict[str, Any]:
    """The content of ``evaluation.json`` for ``result`` (see :func:`write_evaluation`)."""
    return {
        "version": EVALUATION_VERSION,
        "split": result.split,
        "reference": result.reference,
        "cohort": result.cohort,
        "cohort_options": dict(result.cohort_options),
        "candidates": {c.name: os.path.abspath(c.checkpoint) for c in result.candidates},
        "case_ids": {c.name: list(c.case_ids) for c in result.candidates},
        "tolerance_mm": float(result.tolerance_mm),
        "num_bins": int(result.num_bins),
        "seed": int(result.seed),
    }


def _write_figure(result: EvaluationResult, path: Path, *, overwrite: bool) -> str:
    """The pooled reliability diagram of every candidate, with its pooled ECE and case-mean scores."""
    from ..figures import draw_reliability, new_figure, save_figure

    models = [
        pooled_reliability_result(c.name, c.reliability, {(s.class_name, s.metric): s.mean for s in c.summary})
        for c in result.candidates
    ]
    figure = new_figure(6.0, 5.5)
    draw_reliability(figure, models)
    figure.suptitle(f"Pooled reliability, {result.split} cases (reference: {result.reference})", fontsize="medium")
    return str(save_figure(figure, path, overwrite=overwrite))


def pooled_reliability_result(name: str, bins: ReliabilityBins, means: Mapping[tuple[str, str], float]) -> ModelResult:
    """A candidate's pooled reliability diagram as a figure input, with the scores of its legend.

    Parameters
    ----------
    name : str
        The candidate.
    bins : ReliabilityBins
        Its reliability bins pooled over every voxel of every case.
    means : mapping
        ``(class, metric)`` to the case mean of that metric (the candidate's ``summary.csv`` rows).

    Returns
    -------
    ModelResult
        The pooled ECE of ``bins``, and the case means of TACE, NLL and Brier against the reference in
        the whole volume (class ``"all"``; NaN where absent), as in ``reliability.png``.
    """
    from ...core.calibration import CalibrationSummary
    from ..figures import ModelResult

    def overall(metric: str) -> float:
        return float(means.get(("all", f"{metric}_reference_volume"), math.nan))

    return ModelResult(name, CalibrationSummary(
        bins=bins, ece=bins.expected_calibration_error, tace=overall("tace"), nll=overall("nll"),
        brier=overall("brier"), voxels=bins.total,
    ))  # fmt: skip
