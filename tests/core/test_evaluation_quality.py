"""Quality control: segment-level entropy against Dice (Spearman, review queue), against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

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


def test_pearson_of_entropy_against_logit_dice_equals_scipy():
    """Mehrtash et al. report Pearson's r of the entropy with logit(Dice); a perfect case (Dice 1) is clipped."""
    from napari_seg_uncertainty.core.evaluation.quality import DICE_CLIP, logit_dice

    entropy = np.array([0.05, 0.4, 0.1, 0.8, 0.3, 0.6])
    dice = np.array([1.0, 0.7, 0.95, 0.2, 0.8, 0.5])
    qc = entropy_dice_correlation([f"c{i}" for i in range(6)], entropy, dice)
    clipped = np.clip(dice, DICE_CLIP, 1 - DICE_CLIP)
    expected = pearsonr(entropy, np.log(clipped / (1 - clipped)))
    assert qc.pearson_r == pytest.approx(expected.statistic, rel=1e-12)
    assert qc.pearson_p == pytest.approx(expected.pvalue, rel=1e-9)
    assert qc.pearson_r < -0.8
    assert np.isfinite(logit_dice([0.0, 1.0])).all()
