"""Reading an evaluation folder back: :func:`read_evaluation` → :class:`SavedEvaluation`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core._validation import describe
from ..tables import read_rows
from .files import EVALUATION_VERSION

if TYPE_CHECKING:
    from ...core.cohort import Cohort

__all__ = ["SavedEvaluation", "read_evaluation"]

#: Keys ``evaluation.json`` must hold.
_RECORD_KEYS = ("version", "split", "reference", "cohort", "cohort_options", "candidates", "case_ids")

#: Column types of the three tables (columns not listed stay str).
_CASE_COLUMNS: dict[str, Callable[[str], Any]] = {"candidate": str, "case_id": str, "class": str, "metric": str,
                                                  "value": float}
_SUMMARY_COLUMNS: dict[str, Callable[[str], Any]] = {"candidate": str, "class": str, "metric": str, "mean": float,
                                                     "low": float, "high": float, "n": int}
_RELIABILITY_COLUMNS: dict[str, Callable[[str], Any]] = {
    "candidate": str, "bin": int, "lower": float, "upper": float, "count": int, "fraction": float,
    "confidence": float, "accuracy": float, "gap": float,
}


@dataclass(frozen=True)
class SavedEvaluation:
    """An evaluation read back from its folder (written by ``evaluate_checkpoints(out_dir=...)``).

    Attributes
    ----------
    folder : str
        The evaluation folder (absolute).
    split, reference : str
        The evaluated part of the split and the fused reference.
    cohort : str
        The cohort's source (absolute path).
    cohort_options : dict
        The options that load the same cohort again (``class_names``, ``target_spacing``, ``task``,
        ``on_error``).
    candidates : dict of str to str
        Candidate name to its checkpoint (absolute path).
    case_ids : dict of str to tuple of str
        Candidate name to its evaluated cases, in cohort order.
    rows : tuple of dict
        ``cases.csv``: ``{"candidate", "case_id", "class", "metric", "value"}``, ``value`` a float.
    reliability_rows : tuple of dict
        ``reliability.csv``: ``{"candidate", "bin", "lower", "upper", "count", ...}`` (``bin``, ``count`` int).
    summary_rows : tuple of dict
        ``summary.csv``: ``{"candidate", "class", "metric", "mean", "low", "high", "n"}``.
    tolerance_mm : float or None
        Surface Dice tolerance of the rows.
    num_bins : int or None
        Bins of the reliability diagrams.
    seed : int or None
        Seed of the prediction's sampling and of the bootstrap.
    """

    folder: str
    split: str
    reference: str
    cohort: str
    cohort_options: dict[str, Any]
    candidates: dict[str, str]
    case_ids: dict[str, tuple[str, ...]]
    rows: tuple[dict[str, Any], ...] = field(repr=False)
    reliability_rows: tuple[dict[str, Any], ...] = field(repr=False)
    summary_rows: tuple[dict[str, Any], ...] = field(repr=False)
    tolerance_mm: float | None = None
    num_bins: int | None = None
    seed: int | None = None

    def load_cohort(self) -> Cohort:
        """Load the evaluated cohort again, with the options it was loaded with.

        Returns
        -------
        Cohort

        Raises
        ------
        FileNotFoundError
            The cohort's source no longer exists.
        """
        from ...core.cohort import load_cohort

        options = {k: v for k, v in self.cohort_options.items() if v is not None}
        return load_cohort(self.cohort, **options)


def read_evaluation(folder: str | os.PathLike) -> SavedEvaluation:
    """Read an evaluation folder: ``evaluation.json``, ``cases.csv``, ``summary.csv`` and ``reliability.csv``.

    Parameters
    ----------
    folder : str or os.PathLike
        A folder written by ``evaluate_checkpoints(..., out_dir=folder)``.

    Returns
    -------
    SavedEvaluation

    Raises
    ------
    TypeError
        ``folder`` is not a path.
    FileNotFoundError
        The folder or one of its files is missing (named).
    ValueError
        A file cannot be read: not JSON, a missing key or column, a value of the wrong type, an unknown
        version (the file is named).

    Examples
    --------
    >>> saved = read_evaluation("study/evaluation")  # doctest: +SKIP
    >>> saved.candidates, saved.rows[0]["value"]  # doctest: +SKIP
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be the path of an evaluation folder, got {describe(folder)}.")
    root = Path(folder).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"evaluation folder {os.fspath(folder)!r} does not exist.")
    record = _read_record(root / "evaluation.json")
    return SavedEvaluation(
        folder=str(root),
        split=record["split"],
        reference=record["reference"],
        cohort=record["cohort"],
        cohort_options=dict(record["cohort_options"]),
        candidates={str(k): str(v) for k, v in record["candidates"].items()},
        case_ids={str(k): tuple(str(c) for c in v) for k, v in record["case_ids"].items()},
        rows=_read_table(root / "cases.csv", _CASE_COLUMNS),
        reliability_rows=_read_table(root / "reliability.csv", _RELIABILITY_COLUMNS),
        summary_rows=_read_table(root / "summary.csv", _SUMMARY_COLUMNS),
        tolerance_mm=record.get("tolerance_mm"),
        num_bins=record.get("num_bins"),
        seed=record.get("seed"),
    )


def _read_record(path: Path) -> dict[str, Any]:
    """``evaluation.json``, checked: a dict with every key, version 1, mappings where mappings belong."""
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; the folder holds no finished evaluation "
                                "(evaluate_checkpoints writes it last).")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {describe(record)}.")
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the key(s) {missing}.")
    if record["version"] != EVALUATION_VERSION:
        raise ValueError(f"{str(path)!r} has version {record['version']!r}; this version of the plugin reads "
                         f"version {EVALUATION_VERSION}.")
    for key in ("cohort_options", "candidates", "case_ids"):
        if not isinstance(record[key], dict):
            raise ValueError(f"{str(path)!r}: {key!r} must be a JSON object, got {describe(record[key])}.")
    if set(record["candidates"]) != set(record["case_ids"]):
        raise ValueError(f"{str(path)!r}: 'candidates' and 'case_ids' name different candidates.")
    return record


def _read_table(path: Path, columns: dict[str, Callable[[str], Any]]) -> tuple[dict[str, Any], ...]:
    """A CSV table with every one of ``columns``, converted to their types."""
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing from the evaluation folder.")
    return read_rows(path, columns=columns)
