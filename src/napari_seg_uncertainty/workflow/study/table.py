"""The study table in the papers' form: rows candidates, columns metrics, "mean [95 % CI]", best in bold.

:func:`study_table` turns the per-case rows of an evaluation (``candidate, case_id, class, metric,
value``, as in ``cases.csv``) into a :class:`StudyTable`: per candidate and metric the mean over the test
cases with a percentile-bootstrap CI (:func:`~napari_seg_uncertainty.core.evaluation.bootstrap_ci`, the
cases resampled) and, per metric, the best candidate marked where it is significantly better
(:func:`~napari_seg_uncertainty.core.evaluation.compare_candidates`: against every other candidate as in
Mehrtash et al. [1]_, or against a reference candidate as in Lemay et al. [2]_). A candidate trained with
several seeds (runs ``"name/seed0"``, ``"name/seed1"``) enters with the mean over its seeds per case.

:func:`write_study_table` writes ``study.csv`` (long, one row per candidate and metric, every number at
full precision), ``study.md`` (the Markdown table with its footnote), ``study.png`` (the table drawn) and
``study_cases.csv`` (one row per candidate and case); :func:`read_study_table` reads the two CSV files
back into an equal :class:`StudyTable`.

References
----------
.. [1] A. Mehrtash et al., "Confidence Calibration and Predictive Uncertainty Estimation for Deep Medical
   Image Segmentation", IEEE TMI 39(12), 2020 (Table II: mean [95 % bootstrap CI], bold where p < 0.01).
.. [2] A. Lemay et al., "Label Fusion and Training Methods for Reliable Representation of Inter-Rater
   Uncertainty", MELBA 2023 (Tables 2–4: Wilcoxon signed-rank against a reference candidate, p < 0.05).
.. [3] M. M. A. Islam, B. Glocker, "Spatially Varying Label Smoothing", IPMI 2021 (Tables 1–2).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._atomic import atomic_write
from ...core._validation import check_choice, check_int, check_real_in, check_seed, describe
from ...core.evaluation import CandidateComparison, bootstrap_ci, compare_candidates
from ..figures import draw_table, new_figure, save_figure, table_size
from ..tables import read_rows, refuse_existing, write_rows
from .rows import METRIC_DIRECTIONS, case_values, metric_direction, metric_label, split_key
from .table_text import footnote, smallest_wilcoxon_p, table_cells, wilcoxon_cases_needed

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "METRIC_DIRECTIONS",
    "smallest_wilcoxon_p",
    "StudyTable",
    "draw_study_table",
    "metric_direction",
    "metric_label",
    "read_study_table",
    "study_table",
    "write_study_table",
]

_TESTS = ("wilcoxon", "bootstrap")
FILES = ("study.csv", "study.md", "study.png", "study_cases.csv")


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StudyTable:
    """The study table: per candidate and metric the mean over cases, its bootstrap CI and the marks.

    Arrays are ``(candidates, metrics)`` in the order of ``candidates`` and ``metrics``. Two tables are
    equal (``==``) when every field is (arrays elementwise, NaN equal to NaN).

    Attributes
    ----------
    candidates : tuple of str
        The table's rows.
    metrics : tuple of str
        Metric keys ``"<class>:<metric>"``, the columns.
    labels, directions : tuple of str
        Per metric, its heading (:func:`metric_label`) and ``"higher"``/``"lower"`` is better.
    mean, low, high : numpy.ndarray
        Mean over the candidate's finite cases and the percentile-bootstrap CI.
    n : numpy.ndarray
        Cases with a finite value (int).
    comparison : CandidateComparison
        The paired tests and the bold (:func:`~napari_seg_uncertainty.core.evaluation.compare_candidates`).
    case_ids : tuple of str
        The evaluated cases.
    values : numpy.ndarray
        ``(candidates, cases, metrics)``, each candidate's per-case value (mean over its seeds; NaN missing).
    runs : tuple of tuple of str
        Per candidate, the evaluated runs averaged into it (``("svls/seed0", "svls/seed1")``).
    num_resamples, seed : int
    confidence : float
    """

    candidates: tuple[str, ...]
    metrics: tuple[str, ...]
    labels: tuple[str, ...]
    directions: tuple[str, ...]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray
    comparison: CandidateComparison
    case_ids: tuple[str, ...]
    values: np.ndarray
    runs: tuple[tuple[str, ...], ...]
    num_resamples: int
    confidence: float
    seed: int

    @property
    def marked(self) -> np.ndarray:
        """``(candidates, metrics)`` bool: the best candidate of a metric where it is significantly better (bold)."""
        best = np.array([[c == b for b in self.comparison.best] for c in self.candidates], dtype=bool)
        return best & np.asarray(self.comparison.best_is_significant, dtype=bool)[None, :]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StudyTable):
            return NotImplemented
        return all(_equal(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)

    __hash__ = None  # type: ignore[assignment]

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows of ``study.csv``: one per candidate and metric, numbers at full precision."""
        cmp = self.comparison
        rows = []
        for i, candidate in enumerate(self.candidates):
            for j, key in enumerate(self.metrics):
                rows.append({
                    "candidate": candidate,
                    "metric": key,
                    "label": self.labels[j],
                    "direction": self.directions[j],
                    "mean": float(self.mean[i, j]),
                    "low": float(self.low[i, j]),
                    "high": float(self.high[i, j]),
                    "n": int(self.n[i, j]),
                    "p_value": float(cmp.p_value[i, j]),
                    "adjusted_p_value": float(cmp.adjusted_p_value[i, j]),
                    "significant": bool(cmp.significant[i, j]),
                    "best": cmp.best[j] == candidate,
                    "marked": bool(self.marked[i, j]),
                    "compared_to": cmp.compared_to[j],
                    "reference": cmp.reference or "",
                    "test": cmp.test,
                    "alpha": cmp.alpha,
                    "num_resamples": self.num_resamples,
                    "confidence": self.confidence,
                    "seed": self.seed,
                    "runs": ";".join(self.runs[i]),
                })
        return rows

    def case_rows(self) -> list[dict[str, Any]]:
        """The rows of ``study_cases.csv``: one per candidate and case, one column per metric key."""
        return [
            {"candidate": c, "case_id": case, **{k: float(self.values[i, n, j]) for j, k in enumerate(self.metrics)}}
            for i, c in enumerate(self.candidates)
            for n, case in enumerate(self.case_ids)
        ]

    def to_markdown(self, *, percent: Sequence[str] = (), digits: int = 3) -> str:
        """The table in Markdown, as in the papers: "mean [low, high]", the best in bold where significant.

        Parameters
        ----------
        percent : sequence of str, keyword-only
            Metric keys or metric-name prefixes (``"ece"``) shown × 100 with "%" in the heading (Mehrtash
            et al. report ECE in %); a display choice only, ``study.csv`` keeps the fractions.
        digits : int, keyword-only
            Decimals of every number.
        """
        header, cells, bold, star = table_cells(self, percent=percent, digits=digits)
        header = [h.replace("|", "\\|") for h in header]  # a "|" inside a cell would split it
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + [":---:"] * (len(header) - 1)) + "|"]
        for r, row in enumerate(cells):
            row = [t.replace("|", "\\|") for t in row]
            shown = [(f"**{t}**" if bold[r, c] else t) + (" *" if star[r, c] else "") for c, t in enumerate(row)]
            lines.append("| " + " | ".join(shown) + " |")
        return "\n".join(lines) + "\n\n" + footnote(self, percent=percent) + "\n"


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, CandidateComparison):
        return isinstance(b, CandidateComparison) and all(
            _equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))
        return a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# ----------------------------------------------------------------------------------------------
# building the table from per-case rows
# ----------------------------------------------------------------------------------------------


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or not metrics:
        raise TypeError(f"metrics must be a non-empty list of keys '<class>:<metric>', got {describe(metrics)}.")
    keys = tuple(metrics)
    for key in keys:
        split_key(key)
    if len(set(keys)) != len(keys):
        raise ValueError(f"metrics lists a key twice: {keys}.")
    return keys


def _select(members: dict[str, list[str]], candidates: Sequence[str] | None) -> tuple[str, ...]:
    if candidates is None:
        chosen = tuple(members)
    else:
        if isinstance(candidates, str) or not isinstance(candidates, Sequence):
            raise TypeError(f"candidates must be a list of candidate names, got {describe(candidates)}.")
        chosen = tuple(candidates)
        unknown = [c for c in chosen if c not in members]
        if unknown:
            raise ValueError(f"candidates {unknown} are not in the rows; the rows hold {tuple(members)}.")
    if not chosen:
        raise ValueError("the rows hold no candidate with the requested metrics.")
    return chosen


def study_table(
    rows: Iterable[Mapping[str, Any]],
    *,
    metrics: Sequence[str],
    runs: Mapping[str, str] | None = None,
    candidates: Sequence[str] | None = None,
    reference: str | None = None,
    test: str = "wilcoxon",
    alpha: float = 0.05,
    num_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    directions: Mapping[str, str] | None = None,
) -> StudyTable:
    """The study table from per-case rows: means with bootstrap CIs, the best marked where significant.

    Parameters
    ----------
    rows : iterable of mapping
        Per-case rows ``candidate`` (run id), ``case_id``, ``class``, ``metric``, ``value`` — the rows of
        ``EvaluationResult.case_rows()`` or of ``cases.csv``.
    metrics : sequence of str, keyword-only
        The columns, keys ``"<class>:<metric>"`` (``"tumour:dice"``, ``"all:ece_reference_volume"``).
    runs : mapping of str to str, optional, keyword-only
        Run id → table candidate; default ``"name/seedK"`` → ``"name"`` (other ids are their own candidate).
        A candidate's per-case value is the mean over its runs (seeds) with a finite value.
    candidates : sequence of str, optional, keyword-only
        The rows of the table and their order (default: every candidate, in order of first appearance).
    reference : str, optional, keyword-only
        Test every candidate against this one (Lemay et al.: Wilcoxon, α = 0.05); ``None`` tests every
        candidate against the best (Mehrtash et al.: ``test="bootstrap"``, ``alpha=0.01``).
    test : {"wilcoxon", "bootstrap"}, keyword-only
        The paired test of :func:`~napari_seg_uncertainty.core.evaluation.compare_candidates`.
    alpha : float, keyword-only
        Significance level of the Holm-adjusted p-values.
    num_resamples, seed : int, keyword-only
        Bootstrap resamples and seed of the CIs and of the bootstrap test.
    confidence : float, keyword-only
        Level of the CIs, default 0.95.
    directions : mapping of str to str, optional, keyword-only
        ``"higher"``/``"lower"`` per metric key or metric name, for metrics outside :data:`METRIC_DIRECTIONS`.

    Returns
    -------
    StudyTable

    Raises
    ------
    TypeError
        A wrongly typed argument.
    ValueError
        An unknown metric key (the message lists the available keys), a metric without direction, an
        unknown candidate or reference, a candidate without a value of a metric, fewer than 2 cases.

    Notes
    -----
    The CIs resample the cases (one shared draw for all metrics of a candidate); a case with NaN is left
    out of that metric (``n`` counts the others), and a paired test uses the cases where both candidates
    have a finite value. With one candidate nothing is tested and nothing is bold.

    References
    ----------
    .. [1] A. Mehrtash et al., IEEE TMI 39(12), 2020, Sec. VI-E and Table II.
    .. [2] A. Lemay et al., MELBA 2023, Sec. 2.3.1 and Tables 2–3.
    """
    keys = _check_metrics(metrics)
    test = check_choice(test, name="test", choices=_TESTS)
    alpha = check_real_in(alpha, name="alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    num_resamples = check_int(num_resamples, name="num_resamples", minimum=1)
    confidence = check_real_in(confidence, name="confidence", low=0.0, high=1.0, low_open=True, high_open=True)
    seed = check_seed(seed)
    members, case_ids, values, available = case_values(rows, keys=keys, runs=runs)
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the rows; the available keys are {sorted(available)}.")
    directions_of = tuple(metric_direction(k, directions=directions) for k in keys)
    names = _select(members, candidates)
    for name in names:
        missing = [k for k in keys if k not in values[name]]
        if missing:
            raise ValueError(f"candidate {name!r} has no value of the metrics {missing}.")
    if reference is not None and reference not in names:
        raise ValueError(f"reference must be one of the candidates {names}, got {reference!r}.")
    if len(case_ids) < 2:
        raise ValueError(f"a study table needs at least 2 cases, the rows hold {len(case_ids)}.")
    stack = np.array(
        [[[values[c][k].get(case, np.nan) for k in keys] for case in case_ids] for c in names], dtype=np.float64
    )
    cis = [bootstrap_ci(v, num_resamples=num_resamples, confidence=confidence, seed=seed) for v in stack]
    comparison = _compare(names, stack, keys, directions_of, reference, test, alpha, num_resamples, seed)
    if test == "wilcoxon" and len(names) >= 2 and smallest_wilcoxon_p(len(case_ids), len(names) - 1) >= alpha:
        warnings.warn(
            f"with {len(case_ids)} test cases and {len(names)} candidates no Wilcoxon difference can reach "
            f"alpha = {alpha:g} (smallest possible p {smallest_wilcoxon_p(len(case_ids), len(names) - 1):.3g}); "
            f"evaluate at least {wilcoxon_cases_needed(len(names) - 1, alpha=alpha)} test cases.",
            UserWarning,
            stacklevel=2,
        )
    frozen = [np.array([getattr(ci, f) for ci in cis]) for f in ("mean", "low", "high", "n")]
    for array in (*frozen, stack):
        array.setflags(write=False)
    return StudyTable(
        candidates=names,
        metrics=keys,
        labels=tuple(metric_label(k) for k in keys),
        directions=directions_of,
        mean=frozen[0],
        low=frozen[1],
        high=frozen[2],
        n=frozen[3].astype(np.int64),
        comparison=comparison,
        case_ids=case_ids,
        values=stack,
        runs=tuple(tuple(members[c]) for c in names),
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )


def _compare(
    names: tuple[str, ...],
    stack: np.ndarray,
    keys: tuple[str, ...],
    directions: tuple[str, ...],
    reference: str | None,
    test: str,
    alpha: float,
    num_resamples: int,
    seed: int,
) -> CandidateComparison:
    """:func:`compare_candidates` of the table; with a single candidate, the comparison without a test."""
    if len(names) >= 2:
        return compare_candidates(
            dict(zip(names, stack)),
            metric_directions=directions,
            reference=reference,
            alpha=alpha,
            test=test,
            metric_names=keys,
            num_resamples=num_resamples,
            seed=seed,
        )
    finite = np.isfinite(stack[0])
    mean = np.where(finite.any(axis=0), np.nanmean(np.where(finite, stack[0], np.nan), axis=0), np.nan)[None, :]
    best = tuple(names[0] if np.isfinite(m) else "" for m in mean[0])
    nan = np.full((1, len(keys)), np.nan)
    return CandidateComparison(
        candidates=names, metric_names=keys, directions=directions, reference=reference, test=test, alpha=alpha,
        mean=mean, best=best, compared_to=best, p_value=nan, adjusted_p_value=nan,
        significant=np.zeros((1, len(keys)), dtype=bool), best_is_significant=np.zeros(len(keys), dtype=bool),
    )


# ----------------------------------------------------------------------------------------------
# files and figure
# ----------------------------------------------------------------------------------------------


def draw_study_table(figure: Figure, table: StudyTable, *, percent: Sequence[str] = (), digits: int = 3) -> dict:
    """Draw the study table onto ``figure`` (bold where :attr:`StudyTable.marked`, the footnote below it).

    Returns the dict of :func:`~napari_seg_uncertainty.workflow.figures.draw_table`.
    """
    header, cells, bold = _drawn_cells(table, percent=percent, digits=digits)
    return draw_table(figure, header, cells, bold=bold, footnote=footnote(table, percent=percent))


def _drawn_cells(table: StudyTable, *, percent: Sequence[str], digits: int) -> tuple[list, list, np.ndarray]:
    header, cells, bold, star = table_cells(table, percent=percent, digits=digits)
    cells = [[t + (" *" if star[r, c] else "") for c, t in enumerate(row)] for r, row in enumerate(cells)]
    return header, cells, bold


def study_figure(table: StudyTable, *, percent: Sequence[str] = (), digits: int = 3) -> Figure:
    """A new figure of the study table, sized so that every cell reads at 10 pt (``study.png`` at 100 dpi)."""
    header, cells, _ = _drawn_cells(table, percent=percent, digits=digits)
    figure = new_figure(*table_size(header, cells, footnote=footnote(table, percent=percent)))
    draw_study_table(figure, table, percent=percent, digits=digits)
    return figure


def write_study_table(
    table: StudyTable,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    percent: Sequence[str] = (),
    digits: int = 3,
) -> tuple[str, ...]:
    """Write ``study.csv``, ``study.md``, ``study.png`` and ``study_cases.csv`` into ``folder``.

    Parameters
    ----------
    table : StudyTable
    folder : str or os.PathLike
        Created if missing.
    overwrite : bool, keyword-only
        Replace existing files; otherwise an existing one raises :class:`FileExistsError` before any file
        is written.
    percent, digits : keyword-only
        Display of ``study.md`` and ``study.png`` (:meth:`StudyTable.to_markdown`); the CSV files keep
        every number as computed.

    Returns
    -------
    tuple of str
        The four paths, in that order.
    """
    if not isinstance(table, StudyTable):
        raise TypeError(f"table must be a StudyTable, got {describe(table)}.")
    folder = Path(folder)
    paths = [folder / name for name in FILES]
    refuse_existing(*paths, overwrite=overwrite)
    markdown = table.to_markdown(percent=percent, digits=digits)
    figure = study_figure(table, percent=percent, digits=digits)
    write_rows(paths[0], table.to_rows(), overwrite=overwrite)
    with atomic_write(paths[1], overwrite=overwrite) as temporary:
        temporary.write_text(markdown, encoding="utf-8")
    save_figure(figure, paths[2], overwrite=overwrite, dpi=100)
    write_rows(paths[3], table.case_rows(), overwrite=overwrite)
    return tuple(str(p) for p in paths)


def _read_csv(path: Path, columns: Sequence[str]) -> tuple[dict[str, str], ...]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; write the study table with write_study_table.")
    return read_rows(path, columns=columns)


def read_study_table(folder: str | os.PathLike) -> StudyTable:
    """Read ``study.csv`` and ``study_cases.csv`` of ``folder`` back into the :class:`StudyTable` written there.

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If the files do not hold one row per candidate and metric (and per candidate and case).
    """
    folder = Path(folder)
    rows = _read_csv(folder / FILES[0], ("candidate", "metric"))
    case_rows = _read_csv(folder / FILES[3], ())
    if not rows:
        raise ValueError(f"{str(folder / FILES[0])!r} holds no rows.")
    candidates = tuple(dict.fromkeys(r["candidate"] for r in rows))
    metrics = tuple(dict.fromkeys(r["metric"] for r in rows))
    case_ids = tuple(dict.fromkeys(r["case_id"] for r in case_rows))
    k, m = len(candidates), len(metrics)
    if len(rows) != k * m:
        raise ValueError(f"{str(folder / FILES[0])!r} must hold one row per candidate and metric ({k} × {m}).")
    cell = {(r["candidate"], r["metric"]): r for r in rows}

    def grid(field: str, kind: Any = float) -> np.ndarray:
        return np.array([[kind(cell[c, key][field]) for key in metrics] for c in candidates])

    def flag(text: str) -> bool:
        return text == "True"

    first = rows[0]
    column = [cell[candidates[0], key] for key in metrics]
    best = tuple(next((c for c in candidates if flag(cell[c, key]["best"])), "") for key in metrics)
    marked = grid("marked", flag)
    directions = tuple(r["direction"] for r in column)
    comparison = CandidateComparison(
        candidates=candidates, metric_names=metrics, directions=directions, reference=first["reference"] or None,
        test=first["test"], alpha=float(first["alpha"]), mean=grid("mean"), best=best,
        compared_to=tuple(r["compared_to"] for r in column), p_value=grid("p_value"),
        adjusted_p_value=grid("adjusted_p_value"), significant=grid("significant", flag),
        best_is_significant=marked.any(axis=0),
    )
    per_case = {(r["candidate"], r["case_id"]): r for r in case_rows}
    if len(per_case) != k * len(case_ids):
        raise ValueError(f"{str(folder / FILES[3])!r} must hold one row per candidate and case.")
    values = np.array([[[float(per_case[c, case][key]) for key in metrics] for case in case_ids] for c in candidates])
    arrays = [grid("mean"), grid("low"), grid("high"), grid("n", int).astype(np.int64), values]
    for array in (*arrays, comparison.mean, comparison.p_value, comparison.adjusted_p_value, comparison.significant,
                  comparison.best_is_significant):
        array.setflags(write=False)
    return StudyTable(
        candidates=candidates, metrics=metrics, labels=tuple(r["label"] for r in column), directions=directions,
        mean=arrays[0], low=arrays[1], high=arrays[2], n=arrays[3], comparison=comparison, case_ids=case_ids,
        values=arrays[4], runs=tuple(tuple(cell[c, metrics[0]]["runs"].split(";")) for c in candidates),
        num_resamples=int(first["num_resamples"]), confidence=float(first["confidence"]), seed=int(first["seed"]),
    )
