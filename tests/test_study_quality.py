"""Quality control of a study: Spearman ρ of segment entropy against Dice per candidate and structure
(against scipy.stats.spearmanr), the review queue, seeds averaged, qc.csv and qc.png."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from napari_seg_uncertainty.workflow.figures import new_figure
from napari_seg_uncertainty.workflow.study.quality import (
    QualityControl,
    draw_quality_control,
    quality_control,
    write_quality_control,
)

STRUCTURES = ("tumour", "edema")
NUM_CASES = 10


def _rows(seed: int = 0) -> tuple[list[dict], dict]:
    """Two candidates (two seeds of "ens", one run of "ce") × two structures × 10 cases; entropy falls as
    Dice rises, plus noise; one case of "ce" has no predicted edema (NaN entropy)."""
    rng = np.random.default_rng(seed)
    truth = {}
    rows = []
    for run in ("ens/seed0", "ens/seed1", "ce"):
        for structure in STRUCTURES:
            dice = rng.uniform(0.3, 0.95, NUM_CASES)
            entropy = 0.5 * (1 - dice) + 0.05 * rng.random(NUM_CASES)
            if run == "ce" and structure == "edema":
                entropy[2] = np.nan
            truth[run, structure] = (entropy, dice)
            for c in range(NUM_CASES):
                for metric, value in (("segment_entropy", entropy[c]), ("dice", dice[c]), ("hd95", 3.0)):
                    rows.append({"candidate": run, "case_id": f"c{c}", "class": structure, "metric": metric,
                                 "value": float(value)})
        rows.append({"candidate": run, "case_id": "c0", "class": "all", "metric": "ece_reference_volume",
                     "value": 0.1})
    return rows, truth


def test_rho_against_spearmanr():
    rows, truth = _rows()
    items = quality_control(rows, review_fraction=0.3)
    assert [(i.candidate, i.structure) for i in items] == [
        ("ens", "tumour"), ("ens", "edema"), ("ce", "tumour"), ("ce", "edema")
    ]
    for item in items:
        if item.candidate == "ens":
            entropy = (truth["ens/seed0", item.structure][0] + truth["ens/seed1", item.structure][0]) / 2
            dice = (truth["ens/seed0", item.structure][1] + truth["ens/seed1", item.structure][1]) / 2
        else:
            entropy, dice = truth["ce", item.structure]
        np.testing.assert_allclose(item.entropy, entropy, rtol=1e-15)
        np.testing.assert_allclose(item.dice, dice, rtol=1e-15)
        keep = np.isfinite(entropy)
        expected = stats.spearmanr(entropy[keep], dice[keep])
        assert item.correlation.rho == pytest.approx(expected.statistic, rel=1e-12)
        assert item.correlation.p_value == pytest.approx(expected.pvalue, rel=1e-12)
        assert item.correlation.n == keep.sum()
        order = [f"c{i}" for i in np.flatnonzero(keep)[np.argsort(-entropy[keep], kind="stable")]]
        assert list(item.correlation.review_order) == order
        count = round(0.3 * keep.sum())
        assert item.correlation.flagged == tuple(order[:count])
        assert item.flagged.sum() == count
        flagged = np.isin(item.case_ids, order[:count])
        assert item.correlation.flagged_dice == pytest.approx(dice[flagged].mean())
        assert item.correlation.rho < 0  # entropy falls as Dice rises


def test_runs_and_errors():
    rows, truth = _rows()
    items = quality_control(rows, runs={"ens/seed0": "a", "ens/seed1": "b", "ce": "a"})
    a_tumour = next(i for i in items if i.candidate == "a" and i.structure == "tumour")
    np.testing.assert_allclose(a_tumour.dice, (truth["ens/seed0", "tumour"][1] + truth["ce", "tumour"][1]) / 2)
    with pytest.raises(ValueError, match="no foreground structure"):
        quality_control([r for r in rows if r["metric"] != "segment_entropy"])
    with pytest.raises(ValueError, match="review_fraction"):
        quality_control(rows, review_fraction=0.0)
    background = [{**r, "class": "background"} for r in rows if r["class"] == "tumour"]
    with pytest.raises(ValueError, match="no foreground structure"):
        quality_control(background)


def test_files(tmp_path):
    rows, _ = _rows()
    items = quality_control(rows)
    paths = write_quality_control(items, tmp_path)
    assert [p.split("/")[-1] for p in paths] == ["qc.csv", "qc.png"]
    with open(paths[0], newline="") as stream:
        records = list(csv.DictReader(stream))
    assert len(records) == 4
    for record, item in zip(records, items):
        assert (record["candidate"], record["structure"]) == (item.candidate, item.structure)
        assert float(record["rho"]) == item.correlation.rho and int(record["n"]) == item.correlation.n
        assert tuple(record["flagged"].split(";")) == item.correlation.flagged
        assert float(record["flagged_dice"]) == item.correlation.flagged_dice
        assert float(record["other_dice"]) == item.correlation.other_dice
    from matplotlib.image import imread

    image = imread(paths[1])
    assert image.shape[:2] == (round(100 * (3.2 + 0.2 * 2)), round(100 * 4.2 * 2))  # two panels side by side
    with pytest.raises(FileExistsError):
        write_quality_control(items, tmp_path)
    assert write_quality_control(items, tmp_path, overwrite=True) == paths


def test_draw():
    rows, _ = _rows()
    items = quality_control(rows)
    figure = new_figure(8, 4)
    drawn = draw_quality_control(figure, items)
    assert list(drawn["axes"]) == list(STRUCTURES)
    title = drawn["axes"]["tumour"].get_title()
    item = items[0]
    c = item.correlation
    assert title.startswith("tumour") and f"ens: r = {c.pearson_r:.2f}, ρ = {c.rho:.2f}" in title
    rings = drawn["flagged"]["ens", "tumour"].get_offsets()
    flagged = item.flagged
    np.testing.assert_allclose(np.asarray(rings), np.column_stack([item.entropy[flagged], item.dice[flagged]]))
    with pytest.raises(TypeError, match="QualityControl"):
        draw_quality_control(figure, ["x"])
    assert isinstance(items[0], QualityControl)
