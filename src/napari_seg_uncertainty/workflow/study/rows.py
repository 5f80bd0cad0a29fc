"""Per-case rows of an evaluation: metric keys, their direction and heading, and values per candidate.

An evaluation writes one row per case, class and metric (``candidate, case_id, class, metric, value``,
``cases.csv``); a study names a column by its key ``"<class>:<metric>"`` (``"tumour:dice"``,
``"all:ece_reference_volume"``) and a table candidate gathers the runs of its seeds (``"svls/seed0"``,
``"svls/seed1"`` → ``"svls"``). The study table (:mod:`.table`) and the quality control (:mod:`.quality`)
read the rows through :func:`case_values`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ...core._validation import check_choice, describe

__all__ = ["METRIC_DIRECTIONS", "case_values", "default_candidate", "metric_direction", "metric_label", "split_key"]

#: Which way is better, by the metric name's prefix (``"ece"`` covers ``ece_reference_volume``).
METRIC_DIRECTIONS: dict[str, str] = {
    "dice": "higher",
    "surface_dice": "higher",
    "recall": "higher",
    "precision": "higher",
    "sample_diversity": "higher",
    "hd95": "lower",
    "ece": "lower",
    "mce": "lower",
    "tace": "lower",
    "nll": "lower",
    "brier": "lower",
    "entropy_mae": "lower",
    "ged2": "lower",
}

#: Metric names as the papers print them.
_NAMES = {
    "dice": "Dice",
    "surface_dice": "Surface Dice",
    "recall": "Recall",
    "precision": "Precision",
    "sample_diversity": "Sample diversity",
    "hd95": "HD95",
    "ece": "ECE",
    "mce": "MCE",
    "tace": "TACE",
    "nll": "NLL",
    "brier": "Brier",
    "entropy_mae": "Entropy MAE",
    "ged2": "GED²",
    "segment_entropy": "Segment entropy",
    "mutual_information": "Mutual information",
    "uncertainty_error_dice": "Uncertainty–error Dice",
}
_SEED_RUN = re.compile(r"^(?P<name>.+)/seed\d+$")
_DIRECTIONS = ("higher", "lower")


def split_key(key: Any) -> tuple[str, str]:
    """``"<class>:<metric>"`` → ``(class, metric)`` (split at the last colon: metric names have none)."""
    if not isinstance(key, str) or ":" not in key:
        raise ValueError(f"a metric key must be '<class>:<metric>' (e.g. 'tumour:dice'), got {key!r}.")
    structure, _, metric = key.rpartition(":")
    return structure, metric


def _prefix(metric: str) -> str | None:
    """The longest prefix of :data:`METRIC_DIRECTIONS` that ``metric`` is or starts (followed by ``_`` or ``/``)."""
    matches = [p for p in METRIC_DIRECTIONS if metric == p or metric.startswith((p + "_", p + "/"))]
    return max(matches, key=len) if matches else None


def metric_direction(key: str, *, directions: Mapping[str, str] | None = None) -> str:
    """``"higher"`` or ``"lower"`` (is better) for a metric key ``"<class>:<metric>"``.

    ``directions`` (metric key or metric name → direction) takes precedence over :data:`METRIC_DIRECTIONS`,
    which is matched by the metric name's prefix.

    Raises
    ------
    ValueError
        If the key is malformed or no direction is known for it.

    Examples
    --------
    >>> metric_direction("all:ece_reference_volume"), metric_direction("tumour:dice/rater_1")
    ('lower', 'higher')
    """
    _, metric = split_key(key)
    given = dict(directions or {})
    for name in (key, metric):
        if name in given:
            return check_choice(given[name], name=f"directions[{name!r}]", choices=_DIRECTIONS)
    prefix = _prefix(metric)
    if prefix is None:
        raise ValueError(
            f"no known direction for metric {key!r} (known prefixes: {', '.join(METRIC_DIRECTIONS)}); "
            f"pass directions={{{key!r}: 'higher' or 'lower'}}."
        )
    return METRIC_DIRECTIONS[prefix]


def metric_label(key: str) -> str:
    """A column heading for a metric key: ``"tumour:dice"`` → ``"Dice (tumour)"``.

    Examples
    --------
    >>> metric_label("all:ece_reference_box"), metric_label("tumour:dice/rater_2"), metric_label("all:ged2")
    ('ECE (reference, box)', 'Dice (tumour, rater 2)', 'GED²')
    """
    structure, metric = split_key(key)
    base, _, rater = metric.partition("/")
    prefix = next((p for p in sorted(_NAMES, key=len, reverse=True) if base == p or base.startswith(p + "_")), None)
    name = _NAMES[prefix] if prefix else base.replace("_", " ")
    rest = base[len(prefix) + 1 :] if prefix and base != prefix else ""
    qualifiers = [] if structure == "all" else [structure]
    qualifiers += [q for q in rest.split("_") if q] if rest != "rater_mean" else ["rater mean"]
    if rater:
        qualifiers.append(rater.replace("_", " "))
    return f"{name} ({', '.join(qualifiers)})" if qualifiers else name


def default_candidate(run_id: str) -> str:
    """The table candidate of a run id: ``"svls/seed1"`` → ``"svls"``; any other id is its own candidate."""
    match = _SEED_RUN.match(run_id)
    return match.group("name") if match else run_id


def _run_map(runs: Mapping[str, str] | None) -> Mapping[str, str] | None:
    if runs is None:
        return None
    if not isinstance(runs, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in runs.items()):
        raise TypeError(f"runs must map run ids (str) to candidate names (str), got {describe(runs)}.")
    return runs


def case_values(
    rows: Iterable[Mapping[str, Any]], *, keys: Sequence[str] | None, runs: Mapping[str, str] | None = None
) -> tuple[dict[str, list[str]], tuple[str, ...], dict[str, dict[str, dict[str, float]]], set[str]]:
    """Per-case values of the rows, grouped by table candidate and averaged over each candidate's runs.

    Parameters
    ----------
    rows : iterable of mapping
        ``candidate`` (a run id), ``case_id``, ``class``, ``metric``, ``value`` (a number or its text).
    keys : sequence of str or None, keyword-only
        Metric keys ``"<class>:<metric>"`` to keep (``None``: all).
    runs : mapping of str to str, optional, keyword-only
        Run id → table candidate (default :func:`default_candidate`); every run of ``rows`` must be in it.

    Returns
    -------
    tuple
        ``(candidate runs, case ids, values, available keys)``: candidate → its run ids, the cases in order
        of first appearance, ``values[candidate][key][case_id]`` the mean over the runs where finite (NaN
        when none is), and every key present in ``rows``.

    Raises
    ------
    ValueError
        A row lacks a field, a value is not a number or infinite, a run has no candidate in ``runs``, or
        a run has two rows for the same case and key.
    """
    runs = _run_map(runs)
    wanted = None if keys is None else set(keys)
    members: dict[str, list[str]] = {}
    cases: dict[str, None] = {}
    seen: dict[tuple[str, str, str], float] = {}
    available: set[str] = set()
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{index}] must be a mapping, got {describe(row)}.")
        try:
            run, case, key = str(row["candidate"]), str(row["case_id"]), f"{row['class']}:{row['metric']}"
            raw = row["value"]
        except KeyError as exc:
            raise ValueError(
                f"rows[{index}] lacks the field {exc.args[0]!r} (expected candidate, case_id, class, metric, value)."
            ) from None
        available.add(key)
        if wanted is not None and key not in wanted:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"rows[{index}] value must be a number, got {describe(raw)}.") from None
        if math.isinf(value):
            raise ValueError(f"rows[{index}] ({run}, {case}, {key}) is infinite; use NaN for a missing value.")
        if runs is not None and run not in runs:
            raise ValueError(f"run {run!r} of the rows has no candidate in runs (runs maps {sorted(runs)}).")
        candidate = runs[run] if runs is not None else default_candidate(run)
        if (run, case, key) in seen:
            raise ValueError(f"run {run!r} has two rows for case {case!r} and metric {key!r}.")
        seen[(run, case, key)] = value
        if run not in members.setdefault(candidate, []):
            members[candidate].append(run)
        cases.setdefault(case, None)
    candidate_of = {run: c for c, rs in members.items() for run in rs}
    sums: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (run, case, key), value in seen.items():
        cell = sums.setdefault(candidate_of[run], {}).setdefault(key, {}).setdefault(case, [0.0, 0])
        if math.isfinite(value):
            cell[0] += value
            cell[1] += 1
    values = {
        c: {k: {case: (s / m if m else float("nan")) for case, (s, m) in per_case.items()} for k, per_case in d.items()}
        for c, d in sums.items()
    }
    return members, tuple(cases), values, available
