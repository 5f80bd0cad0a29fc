"""Means over cases with 95 % bootstrap intervals, from per-case rows."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...core._validation import check_int, check_seed, describe
from .results import MetricSummary

__all__ = ["summarize_rows"]


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
    from ...core.evaluation.statistics import bootstrap_ci

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
