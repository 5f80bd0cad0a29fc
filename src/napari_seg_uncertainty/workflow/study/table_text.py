"""The study table as text: its cells (mean and interval, percent where asked) and its footnote (what the
numbers are, the test, and a note when the cases are too few for the test to reach alpha).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...core._validation import check_int, describe
from .rows import split_key

if TYPE_CHECKING:
    from .table import StudyTable

__all__ = ["footnote", "percent_keys", "smallest_wilcoxon_p", "table_cells", "wilcoxon_cases_needed"]

#: The arrow after a metric's label: which way is better.
_ARROWS = {"higher": "↑", "lower": "↓"}


def percent_keys(table: StudyTable, percent: Sequence[str]) -> set[str]:
    """The metric keys shown in percent: those named in ``percent`` or starting with one of its prefixes."""
    if isinstance(percent, str) or not isinstance(percent, Sequence):
        raise TypeError(f"percent must be a list of metric keys or prefixes, got {describe(percent)}.")
    chosen = set()
    for item in percent:
        keys = [k for k in table.metrics if k == item or split_key(k)[1].startswith(str(item))]
        if not keys:
            raise ValueError(f"percent entry {item!r} matches none of the metrics {table.metrics}.")
        chosen.update(keys)
    return chosen


def table_cells(table: StudyTable, *, percent: Sequence[str], digits: int) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Header, cell texts, the bold mask and the star mask of the displayed table (row names as column 0).

    The star marks a candidate significantly different from the one it was compared with: the reference,
    or without one the best of that column (Mehrtash's "p < 0.01 against the best").
    """
    digits = check_int(digits, name="digits", minimum=0)
    scaled = percent_keys(table, percent)
    header = ["Candidate"]
    for key, label, direction in zip(table.metrics, table.labels, table.directions):
        header.append(f"{label}{' %' if key in scaled else ''} {_ARROWS[direction]}")
    cells = []
    for i, candidate in enumerate(table.candidates):
        row = [candidate]
        for j, key in enumerate(table.metrics):
            factor = 100.0 if key in scaled else 1.0
            m, lo, hi = (factor * float(a[i, j]) for a in (table.mean, table.low, table.high))
            row.append("–" if math.isnan(m) else f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
        cells.append(row)
    bold = np.zeros((len(cells), len(header)), dtype=bool)
    bold[:, 1:] = table.marked
    star = np.zeros_like(bold)
    star[:, 1:] = table.comparison.significant
    return header, cells, bold, star


def footnote(table: StudyTable, *, percent: Sequence[str] = ()) -> str:
    """What the numbers are: cases, CI, seeds, the test, α, the correction and how missing values count."""
    cmp = table.comparison
    num_cases = len(table.case_ids)
    level = f"{100 * table.confidence:g} %"
    test = {"wilcoxon": "two-sided Wilcoxon signed-rank test", "bootstrap": "two-sided paired bootstrap test"}[cmp.test]
    if cmp.test == "bootstrap":
        test += f" ({table.num_resamples:,} resamples)"
    against = f"the reference {cmp.reference}" if cmp.reference else "every other candidate"
    parts = [
        f"Mean over the n = {num_cases} test cases [{level} percentile-bootstrap CI, {table.num_resamples:,} "
        f"resamples of the cases, seed {table.seed}]; ↑/↓: higher/lower is better.",
        f"Bold: the best candidate where it is significantly better than {against} ({test}, Holm-corrected "
        f"across the candidates of each metric, α = {cmp.alpha:g}).",
    ]
    if cmp.reference:
        parts.append(f"*: significantly different from {cmp.reference}.")
    elif len(table.candidates) > 1:
        parts.append("*: significantly different from the best of its column.")
    too_few = _too_few_cases(table)
    if too_few:
        parts.append(too_few)
    seeds = [len(r) for r in table.runs]
    if max(seeds, default=1) > 1:
        parts.append("Each candidate's per-case value is the mean over its seeds (" + ", ".join(
            f"{c}: {k}" for c, k in zip(table.candidates, seeds)) + ").")
    missing = int((table.n < num_cases).sum())
    if missing:
        parts.append(
            f"{missing} of the cells lack{'' if missing > 1 else 's'} a value for some cases (n per cell in "
            "study.csv); each mean and CI uses the "
            "cases with a finite value, each paired test the cases where both candidates have one."
        )
    chosen = percent_keys(table, percent)
    scaled = [k for k in table.metrics if k in chosen]  # in column order
    if scaled:
        parts.append("%: × 100 (" + ", ".join(table.labels[table.metrics.index(k)] for k in scaled) + ").")
    return " ".join(parts)


def smallest_wilcoxon_p(num_cases: int, num_tests: int = 1) -> float:
    """The smallest Holm-adjusted p-value a two-sided exact Wilcoxon signed-rank test can give.

    With ``n`` paired cases and no ties, the most extreme signed-rank sum has probability ``2 / 2**n``
    (every sign the same); Holm multiplies the smallest of ``num_tests`` p-values by ``num_tests``.
    When this is not below α, no difference can be significant whatever the data.

    Parameters
    ----------
    num_cases : int
        Paired cases.
    num_tests : int
        p-values corrected together (the other candidates of one metric).

    Returns
    -------
    float
        ``min(1, num_tests * 2 / 2**num_cases)``.

    Examples
    --------
    >>> smallest_wilcoxon_p(5), smallest_wilcoxon_p(6), smallest_wilcoxon_p(6, 2)
    (0.0625, 0.03125, 0.0625)
    """
    return min(1.0, num_tests * 2.0 / 2.0**num_cases)


def wilcoxon_cases_needed(num_tests: int, *, alpha: float) -> int:
    """The fewest paired cases with which ``num_tests`` Holm-corrected Wilcoxon tests can reach ``alpha``.

    Examples
    --------
    >>> wilcoxon_cases_needed(1, alpha=0.05), wilcoxon_cases_needed(2, alpha=0.05), wilcoxon_cases_needed(3, alpha=0.01)
    (6, 7, 10)
    """
    return next(m for m in range(1, 10_000) if smallest_wilcoxon_p(m, num_tests) < alpha)


def _too_few_cases(table: StudyTable) -> str:
    """A warning sentence when the Wilcoxon test cannot reach α with the table's cases ("" otherwise)."""
    cmp = table.comparison
    k = len(table.candidates)
    if cmp.test != "wilcoxon" or k < 2:
        return ""
    n = len(table.case_ids)
    if smallest_wilcoxon_p(n, k - 1) < cmp.alpha:
        return ""
    needed = wilcoxon_cases_needed(k - 1, alpha=cmp.alpha)
    return (
        f"Note: with n = {n} paired cases and {k - 1} Holm-corrected test(s) the smallest possible Wilcoxon "
        f"p-value is {smallest_wilcoxon_p(n, k - 1):.3g} ≥ α = {cmp.alpha:g}, so no difference can be significant; "
        f"evaluate at least {needed} test cases."
    )
