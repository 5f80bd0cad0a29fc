"""The files of an evaluation: ``cases.csv``, ``summary.csv``, ``reliability.csv`` and ``reliability.png``."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ...core._validation import check_flag, describe
from ..tables import refuse_existing
from .results import EvaluationResult

__all__ = ["EVALUATION_FILES", "write_evaluation"]

#: The files :func:`evaluate_checkpoints` writes into ``out_dir``.
EVALUATION_FILES = ("cases.csv", "summary.csv", "reliability.csv", "reliability.png")


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
    from ...core.calibration import CalibrationSummary
    from ..figures import ModelResult, draw_reliability, new_figure, save_figure
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
