"""Comparing candidates of a study: paired tests over cases, Holm correction, the papers' table rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, describe, to_numpy_array
from .statistics import (
    _DIRECTIONS,
    _TESTS,
    _as_values,
    _check_cases,
    _flag,
    _frozen,
    _int,
    _open_unit,
    _percentiles,
    _resampled_means,
    _seed,
)

__all__ = ["CandidateComparison", "PairedComparison", "compare_candidates", "holm_correction", "paired_comparison"]


# ----------------------------------------------------------------------------------------------
# paired comparison
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Two candidates on the same cases (:func:`paired_comparison`).

    Attributes
    ----------
    mean_difference : float
        Mean over the paired cases of ``a - b`` (NaN without a pair).
    low, high : float
        Percentile paired-bootstrap CI of the mean difference (cases resampled as pairs).
    bootstrap_p_value : float
        Two-sided paired-bootstrap p-value, shifted null (Efron & Tibshirani Ch. 16), ``(1 + k) / (B + 1)``.
    wilcoxon_statistic : float
        :func:`scipy.stats.wilcoxon` statistic (two-sided: the smaller of the signed-rank sums),
        ``zero_method="wilcox"``; 0.0 when every difference is zero.
    wilcoxon_p_value : float
        Its two-sided p-value; 1.0 when every difference is zero (nothing tells the candidates apart).
    n : int
        Number of complete pairs (cases with NaN in ``a`` or ``b`` are left out).
    favors : str
        ``"a"`` or ``"b"``, the candidate whose mean is better given ``higher_is_better``, or ``"neither"``
        when the mean difference is 0 (significance is in the p-values, not here).
    higher_is_better : bool
    num_resamples : int
    confidence : float
    seed : int
    """

    mean_difference: float
    low: float
    high: float
    bootstrap_p_value: float
    wilcoxon_statistic: float
    wilcoxon_p_value: float
    n: int
    favors: str
    higher_is_better: bool
    num_resamples: int
    confidence: float
    seed: int


def _shifted_null_p(means: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Two-sided shifted-null p-values from resampled mean differences ``(B, P)`` and the observed ``(P,)``.

    Resampling ``d - mean(d)`` gives ``means* - mean(d)``; a relative tolerance of 1e-12 absorbs rounding
    when every difference is equal (then every resampled mean equals the observed one). Resamples without
    a finite pair (NaN) are not counted.
    """
    valid = ~np.isnan(means)
    tol = 1e-12 * np.maximum(1.0, np.abs(observed))
    with np.errstate(invalid="ignore"):
        exceed = (np.abs(means - observed) >= np.abs(observed) - tol) & valid
    p = (1.0 + exceed.sum(axis=0)) / (valid.sum(axis=0) + 1.0)
    return np.where(np.isnan(observed), np.nan, np.minimum(1.0, p))


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test on the finite pairs (``zero_method="wilcox"``)."""
    from scipy import stats

    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
        return float("nan"), float("nan")
    if np.all(a[keep] == b[keep]):
        return 0.0, 1.0
    result = stats.wilcoxon(a[keep], b[keep], zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def _paired(
    a: np.ndarray, b: np.ndarray, num_resamples: int, confidence: float, seed: int, higher_is_better: bool
) -> PairedComparison:
    d = a - b  # NaN where either is missing: left out of each resample's mean, as in bootstrap_ci
    keep = np.isfinite(d)
    n = int(keep.sum())
    if n == 0:
        nan = float("nan")
        return PairedComparison(
            nan, nan, nan, nan, nan, nan, 0, "neither", higher_is_better, num_resamples, confidence, seed
        )
    mean = float(d[keep].mean())
    means = _resampled_means(d[:, None], num_resamples, seed)
    low, high = _percentiles(means, confidence)
    p_boot = float(_shifted_null_p(means, np.array([mean]))[0])
    w_stat, w_p = _wilcoxon(a, b)
    if mean == 0:
        favors = "neither"
    else:
        favors = "a" if (mean > 0) == higher_is_better else "b"
    return PairedComparison(
        mean_difference=mean,
        low=float(low[0]),
        high=float(high[0]),
        bootstrap_p_value=p_boot,
        wilcoxon_statistic=w_stat,
        wilcoxon_p_value=w_p,
        n=n,
        favors=favors,
        higher_is_better=higher_is_better,
        num_resamples=num_resamples,
        confidence=confidence,
        seed=seed,
    )


def paired_comparison(
    a: Any,
    b: Any,
    *,
    num_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool = True,
) -> PairedComparison:
    """Compare two candidates on the same cases: mean difference, paired bootstrap and Wilcoxon tests.

    Parameters
    ----------
    a, b : array_like
        One metric per case, ``(cases,)``, the same cases in the same order (paired). A case where
        either value is NaN is left out: the mean and the Wilcoxon test use the complete pairs, the
        bootstrap resamples all cases and averages the complete pairs drawn (as :func:`bootstrap_ci`
        treats NaN); ``±inf`` is refused.
    num_resamples : int, keyword-only
        Bootstrap resamples of the paired differences, default 10,000.
    confidence : float, keyword-only
        Level of the CI of the mean difference, default 0.95.
    seed : int, keyword-only
        Seed of the resampling; the same seed gives the same CI and p-value.
    higher_is_better : bool, keyword-only
        The metric's direction (Dice: ``True``; ECE, NLL, HD95: ``False``); sets ``favors`` only — the
        difference is always ``a - b`` and both tests are two-sided.

    Returns
    -------
    PairedComparison

    Raises
    ------
    TypeError
        If ``a`` or ``b`` is not numeric or an option has the wrong type.
    ValueError
        If ``a`` and ``b`` are not 1-D of the same length, hold fewer than 2 cases or an infinite value,
        or an option is out of range.

    Notes
    -----
    The bootstrap p-value is the shifted-null test (not a CI inversion): the differences are translated
    to mean 0, which makes the null hypothesis "equal means" true while keeping their spread, and
    ``p = (1 + #{|mean*_0| >= |mean(d)|}) / (B + 1)``. It cannot go below ``1 / (B + 1)``. The Wilcoxon
    signed-rank test is :func:`scipy.stats.wilcoxon` with ``zero_method="wilcox"`` (zero differences
    discarded), two-sided, scipy's default exact/normal-approximation choice.

    References
    ----------
    .. [1] B. Efron, R. J. Tibshirani, "An Introduction to the Bootstrap", 1993, Ch. 16.
    .. [2] A. C. Davison, D. V. Hinkley, "Bootstrap Methods and their Application", 1997, Ch. 4.
    .. [3] F. Wilcoxon, "Individual Comparisons by Ranking Methods", Biometrics Bulletin 1(6), 1945.
    .. [4] A. Lemay et al., "Label Fusion and Training Methods for Reliable Representation of Inter-Rater
       Uncertainty", MELBA 2023, Sec. 2.3.1.
    """
    a_arr = _as_values(a, name="a")
    b_arr = _as_values(b, name="b")
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise ValueError(f"a and b must be 1-D (one value per case), got shapes {a_arr.shape} and {b_arr.shape}.")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must hold the same cases (paired), got {a_arr.size} and {b_arr.size} values.")
    _check_cases(a_arr, name="a")
    num_resamples = _int(num_resamples, name="num_resamples", minimum=1)
    confidence = _open_unit(confidence, name="confidence")
    seed = _seed(seed)
    higher_is_better = _flag(higher_is_better, name="higher_is_better")
    return _paired(a_arr, b_arr, num_resamples, confidence, seed, higher_is_better)


# ----------------------------------------------------------------------------------------------
# Holm correction
# ----------------------------------------------------------------------------------------------


def holm_correction(p_values: Any) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Parameters
    ----------
    p_values : array_like
        Raw p-values in [0, 1], any shape (one family). NaN entries (a test that could not be run) are
        left out of the family and stay NaN.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``p_values``: with the ``m`` finite values sorted ascending,
        ``p_adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``, back in the input order. Rejecting where
        ``p_adj < alpha`` controls the family-wise error rate at ``alpha``. Ties keep their input order
        (stable sort), which does not change the values.

    Raises
    ------
    TypeError
        If ``p_values`` is not numeric.
    ValueError
        If a finite value lies outside [0, 1] or one is infinite.

    References
    ----------
    .. [1] S. Holm, "A Simple Sequentially Rejective Multiple Test Procedure", Scand. J. Statist. 6(2),
       65–70, 1979.

    Examples
    --------
    >>> holm_correction([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    arr = to_numpy_array(p_values, name="p_values")
    if np.iscomplexobj(arr):
        raise TypeError(f"p_values must be real, got {describe(arr)}.")
    arr = arr.astype(np.float64)
    finite = ~np.isnan(arr)
    valid = arr[finite]
    if np.isinf(valid).any() or (valid.size and (valid.min() < 0 or valid.max() > 1)):
        bad = valid[(valid < 0) | (valid > 1) | np.isinf(valid)][0]
        raise ValueError(f"p_values must lie in [0, 1] (NaN for a missing test), got {bad}.")
    out = np.full(arr.shape, np.nan)
    m = valid.size
    if m:
        order = np.argsort(valid, kind="stable")
        factors = m - np.arange(m)
        adjusted = np.minimum(1.0, np.maximum.accumulate(factors * valid[order]))
        result = np.empty(m)
        result[order] = adjusted
        out[finite] = result
    return out


# ----------------------------------------------------------------------------------------------
# candidate tables
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateComparison:
    """Per metric, which candidates differ significantly from the best or the reference (:func:`compare_candidates`).

    Arrays are ``(candidates, metrics)`` in the order of ``candidates`` and ``metric_names``, read-only.

    Attributes
    ----------
    candidates : tuple of str
    metric_names : tuple of str
    directions : tuple of str
        ``"higher"`` or ``"lower"`` is better, per metric.
    reference : str or None
        The reference candidate, or ``None`` when every candidate is compared with the best.
    test : str
        ``"wilcoxon"`` or ``"bootstrap"``.
    alpha : float
    mean : numpy.ndarray
        Mean over each candidate's finite cases.
    best : tuple of str
        Per metric, the candidate with the best mean (the first in table order on a tie; ``""`` when no
        candidate has a finite mean).
    compared_to : tuple of str
        Per metric, the candidate every other is tested against (``reference``, else ``best``).
    p_value, adjusted_p_value : numpy.ndarray
        Raw and Holm-adjusted (across the candidates of one metric) p-values of each candidate against
        ``compared_to``; NaN in ``compared_to``'s own row and where no test could be run.
    significant : numpy.ndarray
        ``adjusted_p_value < alpha`` (bool; False in ``compared_to``'s row).
    best_is_significant : numpy.ndarray
        ``(metrics,)`` bool, the table's bold: the best candidate is better than every candidate it is
        compared with, significantly (see :func:`compare_candidates`).
    """

    candidates: tuple[str, ...]
    metric_names: tuple[str, ...]
    directions: tuple[str, ...]
    reference: str | None
    test: str
    alpha: float
    mean: np.ndarray
    best: tuple[str, ...]
    compared_to: tuple[str, ...]
    p_value: np.ndarray
    adjusted_p_value: np.ndarray
    significant: np.ndarray
    best_is_significant: np.ndarray


def _check_table(table: Any) -> tuple[list[str], list[np.ndarray]]:
    if not isinstance(table, Mapping):
        raise TypeError(f"table must be a mapping candidate name -> (cases, metrics) array, got {describe(table)}.")
    if len(table) < 2:
        raise ValueError(f"table must hold at least 2 candidates to compare, got {len(table)}.")
    names, arrays = [], []
    for key, value in table.items():
        if not isinstance(key, str):
            raise TypeError(f"table keys must be candidate names (str), got {describe(key)}.")
        arr = _as_values(value, name=f"table[{key!r}]")
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"table[{key!r}] must be (cases, metrics), got shape {arr.shape}.")
        _check_cases(arr, name=f"table[{key!r}]")
        names.append(key)
        arrays.append(arr)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        detail = ", ".join(f"{k!r}: {a.shape}" for k, a in zip(names, arrays))
        raise ValueError(f"every candidate in table must have the same (cases, metrics) shape (paired), got {detail}.")
    return names, arrays


def compare_candidates(
    table: Mapping[str, Any],
    *,
    metric_directions: Sequence[str],
    reference: str | None = None,
    alpha: float = 0.05,
    test: str = "wilcoxon",
    metric_names: Sequence[str] | None = None,
    num_resamples: int = 10000,
    seed: int = 0,
) -> CandidateComparison:
    """Per metric, which candidates differ significantly from the best (or a reference) after Holm correction.

    Parameters
    ----------
    table : mapping of str to array_like
        Candidate name → per-case values ``(cases, metrics)`` (or ``(cases,)`` for one metric). Every
        candidate holds the same cases in the same order (the comparisons are paired) and the same
        metrics in the same order. NaN marks a missing value (left out pairwise).
    metric_directions : sequence of str, keyword-only
        ``"higher"`` or ``"lower"`` (is better) per metric: Dice ``"higher"``; ECE, NLL, Brier, HD95
        ``"lower"``.
    reference : str, optional, keyword-only
        A candidate of ``table`` to test every other against (Lemay et al.: "Conv-STAPLE"); ``None``
        (default) tests every other candidate against the best one of each metric (Mehrtash et al.).
    alpha : float, keyword-only
        Significance level for the Holm-adjusted p-values, default 0.05 (Lemay et al.); Mehrtash et al.
        use 0.01 with ``test="bootstrap"``.
    test : {"wilcoxon", "bootstrap"}, keyword-only
        The paired test (:func:`paired_comparison`): Wilcoxon signed-rank (default) or the paired bootstrap.
    metric_names : sequence of str, optional, keyword-only
        Names of the metrics (default ``"metric 0"``, ``"metric 1"``, ...).
    num_resamples, seed : int, keyword-only
        Resamples and seed of the paired bootstrap (used by ``test="bootstrap"`` only).

    Returns
    -------
    CandidateComparison

    Raises
    ------
    TypeError
        If ``table`` is not a mapping of names to numeric arrays, or an option has the wrong type.
    ValueError
        If the candidates' shapes differ, fewer than 2 candidates or cases are given, a direction or
        ``test`` is unknown, the number of directions or names is not the number of metrics, or
        ``reference`` is not a candidate.

    Notes
    -----
    The rule, per metric ``j`` (each metric is a separate family; no correction across metrics):

    1. ``best[j]`` is the candidate with the best mean over its finite cases, by ``metric_directions[j]``
       (the first in table order on a tie).
    2. ``compared_to[j]`` is ``reference`` if given, else ``best[j]``. Every other candidate is tested
       against it with the paired ``test`` (two-sided) on the cases where both are finite, and the
       ``K - 1`` p-values are Holm-corrected together. ``significant`` is ``adjusted p < alpha``.
    3. ``best_is_significant[j]`` (the bold of the papers' tables): without a reference, every other
       candidate differs significantly from the best; with a reference, if the best is the reference,
       every other candidate differs significantly from it, else the best differs significantly from the
       reference. The best mean is by construction the better side of each such difference.

    References
    ----------
    .. [1] A. Mehrtash et al., IEEE TMI 39(12), 2020, Sec. VI-E and Table II (p < 0.01, bootstrapping).
    .. [2] A. Lemay et al., MELBA 2023, Sec. 2.3.1 and Tables 2–3 (Wilcoxon against "Conv-STAPLE", p < 0.05).
    .. [3] S. Holm, Scand. J. Statist. 6(2), 1979.
    """
    names, arrays = _check_table(table)
    num_metrics = arrays[0].shape[1]
    directions, metric_labels = _check_metrics(metric_directions, metric_names, num_metrics)
    if reference is not None:
        if not isinstance(reference, str):
            raise TypeError(f"reference must be a candidate name (str) or None, got {describe(reference)}.")
        if reference not in names:
            raise ValueError(f"reference must be one of the candidates {tuple(names)}, got {reference!r}.")
    alpha = _open_unit(alpha, name="alpha")
    test = check_choice(test, name="test", choices=_TESTS)
    num_resamples = _int(num_resamples, name="num_resamples", minimum=1)
    seed = _seed(seed)

    k = len(names)
    stack = np.stack(arrays)  # (K, cases, M)
    finite = np.isfinite(stack)
    count = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(finite, stack, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
    # 1. the best candidate and the one every other is compared with, per metric (-1: no finite mean)
    best_index = _best_indices(mean, directions)
    ref_index = names.index(reference) if reference is not None else -1
    compared_index = np.where(best_index < 0, -1, ref_index) if reference is not None else best_index
    # 2. raw p-values of every tested pair
    p_raw = _raw_p_values(stack, compared_index, test=test, num_resamples=num_resamples, seed=seed)
    # 3. Holm across the candidates of each metric; the bold
    p_adj = np.full((k, num_metrics), np.nan)
    bold = np.zeros(num_metrics, dtype=bool)
    for j in range(num_metrics):
        b, c = int(best_index[j]), int(compared_index[j])
        if c < 0:
            continue
        p_adj[:, j] = holm_correction(p_raw[:, j])
        sig_j = np.nan_to_num(p_adj[:, j], nan=1.0) < alpha
        bold[j] = bool(all(sig_j[i] for i in range(k) if i != c)) if b == c else bool(sig_j[b])
    best = tuple(names[b] if b >= 0 else "" for b in best_index)
    compared = tuple(names[c] if c >= 0 else (reference or "") for c in compared_index)
    significant = np.nan_to_num(p_adj, nan=1.0) < alpha
    return CandidateComparison(
        candidates=tuple(names),
        metric_names=metric_labels,
        directions=directions,
        reference=reference,
        test=test,
        alpha=alpha,
        mean=_frozen(mean),
        best=best,
        compared_to=compared,
        p_value=_frozen(p_raw),
        adjusted_p_value=_frozen(p_adj),
        significant=_frozen(significant),
        best_is_significant=_frozen(bold),
    )


def _check_metrics(
    metric_directions: Any, metric_names: Any, num_metrics: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The checked directions and names of ``num_metrics`` metrics (default names ``"metric j"``)."""
    if isinstance(metric_directions, str) or not isinstance(metric_directions, Sequence):
        raise TypeError(
            f"metric_directions must be a list of 'higher'/'lower', one per metric, got {describe(metric_directions)}."
        )
    if len(metric_directions) != num_metrics:
        raise ValueError(
            f"metric_directions must have one entry per metric ({num_metrics}), got {len(metric_directions)}."
        )
    directions = tuple(
        check_choice(d, name=f"metric_directions[{i}]", choices=_DIRECTIONS) for i, d in enumerate(metric_directions)
    )
    if metric_names is None:
        return directions, tuple(f"metric {j}" for j in range(num_metrics))
    if isinstance(metric_names, str) or not isinstance(metric_names, Sequence):
        raise TypeError(f"metric_names must be a list of str, one per metric, got {describe(metric_names)}.")
    if len(metric_names) != num_metrics or not all(isinstance(s, str) for s in metric_names):
        raise ValueError(f"metric_names must be {num_metrics} strings (one per metric), got {describe(metric_names)}.")
    return directions, tuple(metric_names)


def _best_indices(mean: np.ndarray, directions: tuple[str, ...]) -> np.ndarray:
    """Per metric, the index of the candidate with the best mean (first on a tie; -1 without a finite mean)."""
    best_index = np.full(mean.shape[1], -1)
    for j, direction in enumerate(directions):
        column = mean[:, j]
        if not np.isnan(column).all():
            scores = np.where(np.isnan(column), -np.inf, column if direction == "higher" else -column)
            best_index[j] = int(np.argmax(scores))
    return best_index


def _raw_p_values(
    stack: np.ndarray, compared_index: np.ndarray, *, test: str, num_resamples: int, seed: int
) -> np.ndarray:
    """``(K, M)`` two-sided p-values of each candidate against ``compared_index[j]`` (NaN where untested).

    The paired bootstraps of all pairs share one resampling of the cases (one call for all pairs).
    """
    k, _, num_metrics = stack.shape
    tested = [(i, j) for j in range(num_metrics) if compared_index[j] >= 0 for i in range(k) if i != compared_index[j]]
    p_raw = np.full((k, num_metrics), np.nan)
    if tested and test == "bootstrap":
        diffs = np.column_stack([stack[i, :, j] - stack[compared_index[j], :, j] for i, j in tested])
        keep = np.isfinite(diffs)
        with np.errstate(invalid="ignore", divide="ignore"):
            observed = np.where(keep.any(axis=0), np.where(keep, diffs, 0.0).sum(axis=0) / keep.sum(axis=0), np.nan)
        p = _shifted_null_p(_resampled_means(diffs, num_resamples, seed), observed)
        for (i, j), value in zip(tested, p):
            p_raw[i, j] = value
    else:
        for i, j in tested:
            p_raw[i, j] = _wilcoxon(stack[i, :, j], stack[compared_index[j], :, j])[1]
    return p_raw
