"""Quality control: segment-level entropy against Dice (Spearman, review queue), against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from napari_seg_uncertainty.core.evaluation import EntropyDiceCorrelation, entropy_dice_correlation


def test_spearman_equals_scipy_and_the_queue_starts_with_the_most_uncertain():
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.3, 0.95, 40)
    entropy = 1.0 - dice + rng.normal(0, 0.05, 40)  # poor segmentations are the uncertain ones
    ids = [f"case_{i:02d}" for i in range(40)]
    qc = entropy_dice_correlation(ids, entropy, dice, review_fraction=0.25)
    expected = spearmanr(entropy, dice)
    assert isinstance(qc, EntropyDiceCorrelation) and qc.n == 40
    assert qc.rho == pytest.approx(expected.statistic, abs=1e-12)
    assert qc.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert qc.rho < -0.8
    assert list(qc.review_order) == [ids[i] for i in np.argsort(-entropy, kind="stable")]
    assert qc.flagged == qc.review_order[:10]
    flagged = [ids.index(c) for c in qc.flagged]
    rest = [i for i in range(40) if i not in flagged]
    assert qc.flagged_dice == pytest.approx(dice[flagged].mean()) and qc.flagged_dice < qc.other_dice
    assert qc.other_dice == pytest.approx(dice[rest].mean())


def test_undefined_cases_are_left_out():
    qc = entropy_dice_correlation(["a", "b", "c", "d", "e"], [0.1, np.nan, 0.3, 0.2, 0.5],
                                  [0.9, 0.8, np.nan, 0.7, 0.4], review_fraction=0.5)  # fmt: skip
    expected = spearmanr([0.1, 0.2, 0.5], [0.9, 0.7, 0.4])
    assert qc.n == 3 and qc.review_order == ("e", "d", "a") and qc.flagged == ("e", "d")
    assert qc.rho == pytest.approx(expected.statistic)


def test_too_few_or_constant_cases_give_nan_not_an_error():
    qc = entropy_dice_correlation(["a", "b"], [0.1, 0.2], [0.9, 0.8])
    assert math.isnan(qc.rho) and math.isnan(qc.p_value) and qc.flagged == ("b",)
    qc = entropy_dice_correlation(["a", "b", "c"], [0.2, 0.2, 0.2], [0.9, 0.8, 0.7])
    assert math.isnan(qc.rho)
    qc = entropy_dice_correlation([], [], [])
    assert qc.n == 0 and qc.flagged == () and math.isnan(qc.flagged_dice)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="one entry per case"):
        entropy_dice_correlation(["a", "b"], [0.1, 0.2, 0.3], [0.9, 0.8])
    with pytest.raises(ValueError, match="review_fraction"):
        entropy_dice_correlation(["a"], [0.1], [0.9], review_fraction=0.0)
    with pytest.raises(TypeError, match="case_ids"):
        entropy_dice_correlation("abc", [0.1, 0.2, 0.3], [0.9, 0.8, 0.7])
    with pytest.raises(TypeError, match="entropy"):
        entropy_dice_correlation(["a"], "x", [0.9])
