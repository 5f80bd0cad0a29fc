"""Study statistics: bootstrap CIs (coverage, scipy), paired tests (scipy), Holm (by hand), candidate tables."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from napari_seg_uncertainty.core.evaluation import (
    BootstrapCI,
    CandidateComparison,
    PairedComparison,
    bootstrap_ci,
    compare_candidates,
    holm_correction,
    paired_comparison,
)

# ----------------------------------------------------------------------------------------------
# bootstrap_ci
# ----------------------------------------------------------------------------------------------


def test_coverage_of_a_known_mean_in_simulated_studies():
    """1,500 seeded studies of 30 cases from N(0.7, 0.1²): the 95 % CI covers 0.7 in 92–98 % of them.

    Vectorized: the studies are the 1,500 columns of one (30, 1500) table, so one call bootstraps all of
    them in well under 0.1 s (the shared index draw does not couple the studies' data, which are
    independent). 1,000 resamples are enough: the Monte-Carlo error of a 2.5 % percentile with B = 1,000
    is about 0.085 bootstrap standard errors, which moves the coverage by a fraction of a percent. The
    percentile bootstrap with n = 30 under-covers slightly — it is about ±1.96 plug-in standard errors,
    P(|t_29| <= 1.96·sqrt(29/30)) ≈ 93.6 % under normal data (92.9–95.0 %, mean 93.7 %, over 12 seeds
    here) — so the study count is what keeps 92 % safe: the binomial error of 1,500 studies is
    sqrt(.936 · .064 / 1500) ≈ 0.63 %, and 92 % is 2.5 of those below the expected coverage (with 400
    studies it would be 1.3). The seed is fixed, so the test is deterministic (94.0 % with this seed).
    """
    rng = np.random.default_rng(2026)
    studies = rng.normal(0.7, 0.1, size=(30, 1500))
    ci = bootstrap_ci(studies, num_resamples=1000, seed=1)
    covered = (ci.low <= 0.7) & (0.7 <= ci.high)
    assert ci.low.shape == (1500,)
    assert 0.92 <= covered.mean() <= 0.98, covered.mean()


def test_agrees_with_scipy_percentile_bootstrap():
    """Same data, different random streams: the bounds agree within Monte-Carlo error.

    With B = 10,000 the standard deviation of an estimated 2.5 % quantile of a (near-normal) bootstrap
    distribution is sqrt(.025 · .975 / B) / φ(1.96) ≈ 0.027 bootstrap standard errors (se = s / √n);
    the difference of two independent estimates ≈ 0.038 se. The tolerance 0.2 se is > 5 of those.
    """
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 0.1, size=(40, 3))  # skewed, where the percentile CI is asymmetric
    ours = bootstrap_ci(x, num_resamples=10000, seed=3)
    for j in range(3):
        ref = stats.bootstrap((x[:, j],), np.mean, method="percentile", n_resamples=10000,
                              confidence_level=0.95, random_state=np.random.default_rng(11))
        se = x[:, j].std(ddof=1) / np.sqrt(40)
        assert abs(ours.low[j] - ref.confidence_interval.low) < 0.2 * se
        assert abs(ours.high[j] - ref.confidence_interval.high) < 0.2 * se
        assert ours.mean[j] == pytest.approx(x[:, j].mean(), rel=1e-12)


def test_resampled_means_equal_a_direct_loop_over_the_same_index_draw():
    """counts @ values is the mean of the drawn cases: compare with indexing by the documented draw."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2))
    ci = bootstrap_ci(x, num_resamples=500, seed=5, confidence=0.9)
    idx = np.random.default_rng(5).integers(0, 12, (500, 12))
    means = x[idx].mean(axis=1)
    low, high = np.percentile(means, [5, 95], axis=0)
    np.testing.assert_allclose(ci.low, low, rtol=1e-12)
    np.testing.assert_allclose(ci.high, high, rtol=1e-12)


def test_one_metric_gives_0d_arrays_and_axis_selects_the_cases():
    x = np.array([0.8, 0.9, 0.85, 0.7, 0.95])
    ci = bootstrap_ci(x, num_resamples=1000)
    assert isinstance(ci, BootstrapCI)
    assert ci.mean.shape == () and int(ci.n) == 5
    assert float(ci.low) <= float(ci.mean) <= float(ci.high)
    assert ci.num_resamples == 1000 and ci.confidence == 0.95 and ci.seed == 0
    table = np.random.default_rng(1).random((10, 3))
    a = bootstrap_ci(table, num_resamples=300, seed=2)
    b = bootstrap_ci(table.T, num_resamples=300, seed=2, axis=1)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_allclose(a.half_width, (a.high - a.low) / 2)
    with pytest.raises(ValueError):
        a.mean[0] = 1.0  # read-only


def test_same_seed_same_interval_other_seed_other_interval():
    x = np.random.default_rng(3).random((20, 2))
    assert np.array_equal(bootstrap_ci(x, seed=4).low, bootstrap_ci(x, seed=4).low)
    assert not np.array_equal(bootstrap_ci(x, seed=4).low, bootstrap_ci(x, seed=5).low)


def test_nan_cases_are_left_out_per_metric():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 0.2, size=(25, 3))
    x[[0, 3, 7], 1] = np.nan  # an empty class in three cases, metric 1 only
    x[:, 2] = np.nan  # a metric without any value
    ci = bootstrap_ci(x, num_resamples=3000)
    np.testing.assert_array_equal(ci.n, [25, 22, 0])
    assert ci.mean[1] == pytest.approx(np.nanmean(x[:, 1]))
    assert np.isnan(ci.mean[2]) and np.isnan(ci.low[2]) and np.isnan(ci.high[2])
    # metric 0 is untouched by metric 1's NaNs (same draw, complete column)
    np.testing.assert_allclose(bootstrap_ci(x[:, :1], num_resamples=3000).low, ci.low[:1])
    # metric 1 ≈ the bootstrap of its 22 finite cases alone (the number drawn varies a little per resample)
    alone = bootstrap_ci(x[np.isfinite(x[:, 1]), 1], num_resamples=3000, seed=9)
    se = np.nanstd(x[:, 1], ddof=1) / np.sqrt(22)
    assert abs(ci.low[1] - alone.low) < 0.25 * se and abs(ci.high[1] - alone.high) < 0.25 * se


def test_many_resamples_run_in_blocks_and_stay_fast():
    import time

    x = np.random.default_rng(0).random((100, 20))
    start = time.perf_counter()
    ci = bootstrap_ci(x, num_resamples=10000)
    assert time.perf_counter() - start < 1.5  # the target is 2 s; typically ~0.05 s
    assert np.all(ci.low < ci.mean) and np.all(ci.mean < ci.high)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"values": "abc"}, TypeError, "values"),
        ({"values": 3.0}, ValueError, "values"),
        ({"values": [1.0]}, ValueError, "at least 2 cases"),
        ({"values": [1.0, np.inf]}, ValueError, "infinite"),
        ({"values": [1.0, 2.0], "num_resamples": 0}, ValueError, "num_resamples"),
        ({"values": [1.0, 2.0], "num_resamples": 10.0}, TypeError, "num_resamples"),
        ({"values": [1.0, 2.0], "confidence": 1.0}, ValueError, "confidence"),
        ({"values": [1.0, 2.0], "confidence": "95%"}, TypeError, "confidence"),
        ({"values": [1.0, 2.0], "seed": -1}, ValueError, "seed"),
        ({"values": [1.0, 2.0], "axis": 1}, ValueError, "axis"),
        ({"values": [1.0, 2.0], "axis": True}, TypeError, "axis"),
    ],
)
def test_bootstrap_ci_validates_its_input(kwargs, error, match):
    values = kwargs.pop("values")
    with pytest.raises(error, match=match):
        bootstrap_ci(values, **kwargs)


# ----------------------------------------------------------------------------------------------
# paired_comparison
# ----------------------------------------------------------------------------------------------


def test_paired_comparison_matches_scipy_wilcoxon_exactly():
    rng = np.random.default_rng(5)
    a = rng.normal(0.80, 0.05, 30)
    b = a - rng.normal(0.02, 0.03, 30)
    b[:4] = a[:4]  # zero differences: discarded ("wilcox")
    result = paired_comparison(a, b, num_resamples=2000)
    ref = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    assert isinstance(result, PairedComparison)
    assert result.wilcoxon_statistic == float(ref.statistic)
    assert result.wilcoxon_p_value == float(ref.pvalue)
    assert result.n == 30 and result.favors == "a"
    assert result.mean_difference == pytest.approx(np.mean(a - b))
    assert result.low < result.mean_difference < result.high and result.low > 0
    assert 1 / 2001 <= result.bootstrap_p_value < 0.05


def test_paired_bootstrap_p_value_is_the_shifted_null_count_and_ci_matches_scipy():
    rng = np.random.default_rng(6)
    d = rng.normal(0.01, 0.05, 25)
    b = rng.random(25)
    a = b + d
    result = paired_comparison(a, b, num_resamples=4000, seed=8, higher_is_better=False)
    # the documented draw, done by hand
    means = (a - b)[np.random.default_rng(8).integers(0, 25, (4000, 25))].mean(axis=1)
    observed = np.mean(a - b)
    k = np.count_nonzero(np.abs(means - observed) >= abs(observed) - 1e-12 * max(1.0, abs(observed)))
    assert result.bootstrap_p_value == pytest.approx((1 + k) / 4001)
    assert result.favors == ("b" if observed > 0 else "a")
    ref = stats.bootstrap((a - b,), np.mean, method="percentile", n_resamples=4000,
                          random_state=np.random.default_rng(1))
    se = np.std(a - b, ddof=1) / 5
    # B = 4,000: quantile MC error ≈ 0.042 se each, ≈ 0.06 se for the difference; 0.3 se is 5 of those
    assert abs(result.low - ref.confidence_interval.low) < 0.3 * se
    assert abs(result.high - ref.confidence_interval.high) < 0.3 * se


def test_paired_comparison_under_the_null_is_not_significant_and_drops_nan_pairs():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=40), rng.normal(size=40)
    a[3], b[10] = np.nan, np.nan
    result = paired_comparison(a, b, num_resamples=2000)
    keep = np.isfinite(a) & np.isfinite(b)
    assert result.n == 38
    assert result.wilcoxon_p_value == float(stats.wilcoxon(a[keep], b[keep]).pvalue)
    assert result.bootstrap_p_value > 0.05


def test_identical_candidates_give_p_one():
    a = np.linspace(0, 1, 10)
    result = paired_comparison(a, a.copy(), num_resamples=200)
    assert result.mean_difference == 0 and result.favors == "neither"
    assert result.wilcoxon_p_value == 1.0 and result.wilcoxon_statistic == 0.0
    assert result.bootstrap_p_value == 1.0


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "error", "match"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], {}, ValueError, "same cases"),
        ([[1.0, 2.0]], [[1.0, 2.0]], {}, ValueError, "1-D"),
        ([1.0], [2.0], {}, ValueError, "at least 2"),
        ("x", [1.0, 2.0], {}, TypeError, "a must"),
        ([1.0, 2.0], [1.0, np.inf], {}, ValueError, "b contains infinite"),
        ([1.0, 2.0], [1.0, 3.0], {"higher_is_better": "yes"}, TypeError, "higher_is_better"),
        ([1.0, 2.0], [1.0, 3.0], {"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_paired_comparison_validates_its_input(a, b, kwargs, error, match):
    with pytest.raises(error, match=match):
        paired_comparison(a, b, **kwargs)


# ----------------------------------------------------------------------------------------------
# holm_correction
# ----------------------------------------------------------------------------------------------


def _holm_slow(p):
    """Reference: Holm's sequentially rejective rule, written as the definition (max over j <= i)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    for rank, i in enumerate(order):
        adjusted[i] = min(1.0, max((m - r) * p[order[r]] for r in range(rank + 1)))
    return adjusted


def test_holm_against_hand_values():
    # sorted 0.01, 0.03, 0.04 → 3·0.01 = 0.03, 2·0.03 = 0.06, max(0.06, 1·0.04) = 0.06
    np.testing.assert_allclose(holm_correction([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    # 4 tests: 0.001·4 = 0.004, 0.02·3 = 0.06, 0.015·... sorted 0.001, 0.015, 0.02, 0.5
    #   → 0.004, 0.045, max(0.045, 0.04) = 0.045, max(0.045, 0.5) = 0.5
    np.testing.assert_allclose(holm_correction([0.02, 0.5, 0.001, 0.015]), [0.045, 0.5, 0.004, 0.045])
    # capped at 1; a single test is unchanged; NaN stays NaN and is not counted
    np.testing.assert_allclose(holm_correction([0.6, 0.7]), [1.0, 1.0])
    np.testing.assert_allclose(holm_correction([0.02]), [0.02])
    np.testing.assert_allclose(holm_correction([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])


def test_holm_against_a_slow_reference_on_random_inputs():
    rng = np.random.default_rng(10)
    for size in itertools.chain(range(1, 8), [20, 50]):
        p = rng.random(size) ** 3
        p[rng.random(size) < 0.2] = p[0]  # ties
        np.testing.assert_allclose(holm_correction(p), _holm_slow(list(p)), rtol=1e-14)
        assert np.all(holm_correction(p) >= p)


def test_holm_keeps_the_shape_and_validates():
    p = np.array([[0.01, 0.2], [0.03, 0.04]])
    assert holm_correction(p).shape == (2, 2)
    np.testing.assert_allclose(holm_correction(p).ravel(), holm_correction(p.ravel()))
    assert holm_correction([]).shape == (0,)
    with pytest.raises(ValueError, match="p_values"):
        holm_correction([0.1, 1.2])
    with pytest.raises(ValueError, match="p_values"):
        holm_correction([-0.1])
    with pytest.raises(TypeError, match="p_values"):
        holm_correction("0.1")


# ----------------------------------------------------------------------------------------------
# compare_candidates
# ----------------------------------------------------------------------------------------------


def _study(seed=0, cases=30):
    """Three candidates, metrics (Dice ↑, ECE ↓): "ensemble" clearly best on both, "ce" ≈ "dice"."""
    rng = np.random.default_rng(seed)
    base_dice = rng.uniform(0.6, 0.9, cases)
    base_ece = rng.uniform(0.05, 0.15, cases)
    noise = lambda: rng.normal(0, 0.005, cases)  # noqa: E731
    return {
        "ce": np.column_stack([base_dice + noise(), base_ece + noise()]),
        "dice": np.column_stack([base_dice + noise(), base_ece + noise()]),
        "ensemble": np.column_stack([base_dice + 0.05 + noise(), base_ece - 0.03 + noise()]),
    }


def test_compare_candidates_marks_the_clear_best():
    table = _study()
    result = compare_candidates(table, metric_directions=["higher", "lower"], metric_names=["Dice", "ECE"])
    assert isinstance(result, CandidateComparison)
    assert result.best == ("ensemble", "ensemble") and result.compared_to == result.best
    assert result.best_is_significant.tolist() == [True, True]
    assert result.significant.tolist() == [[True, True], [True, True], [False, False]]
    assert np.isnan(result.p_value[2]).all()
    # the raw p-values are scipy's Wilcoxon against the best; Holm over the two other candidates
    for j in range(2):
        raw = [stats.wilcoxon(table[c][:, j], table["ensemble"][:, j]).pvalue for c in ("ce", "dice")]
        np.testing.assert_allclose(result.p_value[:2, j], raw)
        np.testing.assert_allclose(result.adjusted_p_value[:2, j], holm_correction(raw))
    np.testing.assert_allclose(result.mean, np.stack([table[c].mean(axis=0) for c in table]))


def test_compare_candidates_without_a_clear_winner_marks_nothing():
    table = _study()
    del table["ensemble"]
    result = compare_candidates(table, metric_directions=["higher", "lower"], test="bootstrap",
                                alpha=0.01, num_resamples=2000)
    assert result.best_is_significant.tolist() == [False, False]
    assert not result.significant.any()


def test_compare_candidates_against_a_reference():
    table = _study()
    result = compare_candidates(table, reference="ce", metric_directions=["higher", "lower"])
    assert result.compared_to == ("ce", "ce") and result.reference == "ce"
    assert result.significant[:, 0].tolist() == [False, False, True]  # only the ensemble differs from ce
    assert result.best_is_significant.tolist() == [True, True]  # the best (ensemble) differs from ce
    # the reference best but not significantly better than "dice": not bold
    table["ce"] = table["ensemble"].copy()
    table["dice"] = table["ensemble"] + np.random.default_rng(3).normal(0, 0.005, table["ce"].shape)
    result = compare_candidates(table, reference="ensemble", metric_directions=["higher", "lower"])
    assert not result.best_is_significant.any()


def test_compare_candidates_validates_its_input():
    table = _study()
    with pytest.raises(TypeError, match="table"):
        compare_candidates([table["ce"]], metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="at least 2 candidates"):
        compare_candidates({"ce": table["ce"]}, metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="same"):
        compare_candidates({"ce": table["ce"], "x": table["dice"][:10]}, metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="metric_directions"):
        compare_candidates(table, metric_directions=["higher"])
    with pytest.raises(ValueError, match=r"metric_directions\[1\]"):
        compare_candidates(table, metric_directions=["higher", "smaller"])
    with pytest.raises(TypeError, match="metric_directions"):
        compare_candidates(table, metric_directions="higher")
    with pytest.raises(ValueError, match="reference"):
        compare_candidates(table, reference="svls", metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="test"):
        compare_candidates(table, test="t-test", metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="alpha"):
        compare_candidates(table, alpha=0, metric_directions=["higher", "lower"])
    with pytest.raises(ValueError, match="metric_names"):
        compare_candidates(table, metric_names=["Dice"], metric_directions=["higher", "lower"])
    with pytest.raises(TypeError, match="table keys"):
        compare_candidates({1: table["ce"], 2: table["dice"]}, metric_directions=["higher", "lower"])


def test_compare_candidates_bootstrap_p_values_are_paired_comparison_ones():
    """The pairs share one resampling, the same draw paired_comparison makes with the same seed."""
    table = _study(seed=1, cases=20)
    table["dice"][2, 0] = np.nan  # a missing value: left out pairwise the same way
    result = compare_candidates(table, metric_directions=["higher", "lower"], test="bootstrap",
                                num_resamples=1500, seed=4)
    for i, name in enumerate(("ce", "dice")):
        for j, higher in enumerate((True, False)):
            pair = paired_comparison(table[name][:, j], table["ensemble"][:, j], num_resamples=1500, seed=4,
                                     higher_is_better=higher)
            assert result.p_value[i, j] == pair.bootstrap_p_value


def test_compare_candidates_with_a_metric_without_values():
    table = _study(cases=12)
    for name in table:
        table[name][:, 1] = np.nan  # e.g. HD95 of a class absent from every case
    result = compare_candidates(table, metric_directions=["higher", "lower"])
    assert result.best[1] == "" and np.isnan(result.p_value[:, 1]).all()
    assert not result.significant[:, 1].any() and not result.best_is_significant[1]
    assert result.best[0] == "ensemble"
