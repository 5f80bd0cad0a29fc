"""The study table: every cell against numpy and bootstrap_ci, the marks against scipy.stats.wilcoxon and a
direct Holm computation, seeds averaged, the files written and read back."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy import stats

from napari_seg_uncertainty.core.evaluation import bootstrap_ci, compare_candidates
from napari_seg_uncertainty.workflow.figures import table_size, wrap_footnote
from napari_seg_uncertainty.workflow.study.rows import default_candidate, metric_direction, metric_label
from napari_seg_uncertainty.workflow.study.table import (
    StudyTable,
    draw_study_table,
    read_study_table,
    study_table,
    write_study_table,
)

CANDIDATES = ("onehot", "ls", "svls")
SHIFTS = {"onehot": 0.0, "ls": 0.01, "svls": 0.06}
METRICS = ("tumour:dice", "all:ece_reference_volume", "tumour:hd95")
NUM_CASES, NUM_SEEDS = 12, 2


def _synthetic(seed: int = 3) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Rows of 3 candidates × 2 seeds × 12 cases, and the per-run values ``(seeds, cases, metrics)``."""
    rng = np.random.default_rng(seed)
    truth = {}
    rows = []
    for name in CANDIDATES:
        shift = SHIFTS[name]
        dice = 0.7 + shift + 0.04 * rng.standard_normal((NUM_SEEDS, NUM_CASES))
        ece = 0.05 - shift / 3 + 0.01 * rng.standard_normal((NUM_SEEDS, NUM_CASES))
        hd95 = 5.0 + rng.random((NUM_SEEDS, NUM_CASES))
        if name == "ls":
            hd95[:, 4] = np.nan  # undefined in both seeds: a missing case
            hd95[1, 7] = np.nan  # undefined in one seed: the other seed's value
        values = np.stack([dice, ece, hd95], axis=-1)
        truth[name] = values
        for s in range(NUM_SEEDS):
            for c in range(NUM_CASES):
                for j, key in enumerate(METRICS):
                    structure, metric = key.split(":")
                    rows.append({"candidate": f"{name}/seed{s}", "case_id": f"case{c:02d}", "class": structure,
                                 "metric": metric, "value": float(values[s, c, j])})
                rows.append({"candidate": f"{name}/seed{s}", "case_id": f"case{c:02d}", "class": "tumour",
                             "metric": "segment_entropy", "value": float(rng.random())})
    return rows, truth


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic()


def _seed_means(truth: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {name: np.nanmean(values, axis=0) for name, values in truth.items()}


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down written out: sort, multiply by m - i, running maximum, cap at 1, back in order."""
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_cells_against_numpy_and_bootstrap(synthetic):
    rows, truth = synthetic
    table = study_table(rows, metrics=METRICS, num_resamples=2000, seed=5)
    assert table.candidates == CANDIDATES and table.metrics == METRICS
    assert table.directions == ("higher", "lower", "lower")
    assert table.case_ids == tuple(f"case{c:02d}" for c in range(NUM_CASES))
    assert table.runs == tuple((f"{n}/seed0", f"{n}/seed1") for n in CANDIDATES)
    means = _seed_means(truth)
    for i, name in enumerate(CANDIDATES):
        np.testing.assert_allclose(table.values[i], means[name], rtol=0, atol=1e-15)
        finite = np.isfinite(means[name])
        np.testing.assert_array_equal(table.n[i], finite.sum(axis=0))
        np.testing.assert_allclose(table.mean[i], [means[name][finite[:, j], j].mean() for j in range(3)], rtol=1e-12)
        ci = bootstrap_ci(means[name], num_resamples=2000, seed=5)
        np.testing.assert_array_equal(table.low[i], ci.low)
        np.testing.assert_array_equal(table.high[i], ci.high)
    # an independent percentile bootstrap of a complete column (numpy: draw cases, average, percentiles)
    idx = np.random.default_rng(5).integers(0, NUM_CASES, (2000, NUM_CASES))
    resampled = means["svls"][idx, 0].mean(axis=1)
    np.testing.assert_allclose([table.low[2, 0], table.high[2, 0]], np.percentile(resampled, [2.5, 97.5]), rtol=1e-12)
    assert table.n[1, 2] == NUM_CASES - 1  # case 4 has no HD95 in either seed of "ls"
    assert table.values[1, 7, 2] == truth["ls"][0, 7, 2]  # one seed undefined: the other seed's value


def test_marks_against_wilcoxon_and_holm_with_reference(synthetic):
    rows, truth = synthetic
    table = study_table(rows, metrics=METRICS, reference="onehot", test="wilcoxon", alpha=0.05, num_resamples=500)
    means = _seed_means(truth)
    cmp = table.comparison
    for j in range(len(METRICS)):
        p = []
        for name in ("ls", "svls"):
            a, b = means[name][:, j], means["onehot"][:, j]
            keep = np.isfinite(a) & np.isfinite(b)
            p.append(stats.wilcoxon(a[keep], b[keep]).pvalue)
        p = np.array(p)
        np.testing.assert_allclose(cmp.p_value[1:, j], p, rtol=1e-12)
        assert np.isnan(cmp.p_value[0, j])
        np.testing.assert_allclose(cmp.adjusted_p_value[1:, j], _holm(p), rtol=1e-12)
        np.testing.assert_array_equal(cmp.significant[1:, j], _holm(p) < 0.05)
        sign = 1 if table.directions[j] == "higher" else -1
        best = int(np.argmax([sign * table.mean[i, j] for i in range(3)]))
        expected_bold = bool(_holm(p)[best - 1] < 0.05) if best > 0 else bool((_holm(p) < 0.05).all())
        assert table.marked[best, j] == expected_bold
        assert table.marked[:, j].sum() == expected_bold
    assert table.marked[2, 0] and table.marked[2, 1]  # SVLS: clearly better Dice and ECE in the synthetic data


def test_marks_against_the_best_bootstrap(synthetic):
    rows, truth = synthetic
    table = study_table(rows, metrics=METRICS, test="bootstrap", alpha=0.01, num_resamples=3000, seed=1)
    means = _seed_means(truth)
    expected = compare_candidates(
        {name: means[name] for name in CANDIDATES}, metric_directions=["higher", "lower", "lower"], alpha=0.01,
        test="bootstrap", num_resamples=3000, seed=1, metric_names=METRICS,
    )
    np.testing.assert_array_equal(table.comparison.p_value, expected.p_value)
    np.testing.assert_array_equal(table.comparison.best_is_significant, expected.best_is_significant)
    assert table.comparison.best == expected.best == ("svls", "svls", table.comparison.best[2])
    assert table.comparison.reference is None and table.comparison.alpha == 0.01


def test_runs_mapping_and_candidate_order(synthetic):
    rows, truth = synthetic
    runs = {f"{n}/seed{s}": ("soft" if n == "svls" else "hard") for n in CANDIDATES for s in range(NUM_SEEDS)}
    table = study_table(rows, metrics=["tumour:dice"], runs=runs, candidates=["soft", "hard"], num_resamples=200)
    assert table.candidates == ("soft", "hard")
    hard = (truth["onehot"][..., 0] + truth["ls"][..., 0]).sum(axis=0) / 4  # four runs, no NaN
    np.testing.assert_allclose(table.values[1, :, 0], hard, rtol=1e-12)
    assert len(table.runs[1]) == 4
    assert default_candidate("svls/seed12") == "svls" and default_candidate("svls") == "svls"
    assert default_candidate("a/b/seed0") == "a/b" and default_candidate("svls/seedX") == "svls/seedX"


def test_errors(synthetic):
    rows, _ = synthetic
    with pytest.raises(ValueError, match=r"not in the rows; the available keys are .*tumour:segment_entropy"):
        study_table(rows, metrics=["tumour:dcie"])
    with pytest.raises(ValueError, match="no known direction for metric 'tumour:segment_entropy'"):
        study_table(rows, metrics=["tumour:segment_entropy"])
    table = study_table(rows, metrics=["tumour:segment_entropy"], directions={"segment_entropy": "lower"},
                        num_resamples=100)
    assert table.directions == ("lower",)
    with pytest.raises(ValueError, match="'<class>:<metric>'"):
        study_table(rows, metrics=["dice"])
    with pytest.raises(ValueError, match="reference must be one of"):
        study_table(rows, metrics=["tumour:dice"], reference="mc_dropout")
    with pytest.raises(ValueError, match=r"candidates \['x'\] are not in the rows"):
        study_table(rows, metrics=["tumour:dice"], candidates=["x"])
    with pytest.raises(ValueError, match="two rows for case"):
        study_table(rows + rows[:1], metrics=["tumour:dice"])
    with pytest.raises(ValueError, match="has no candidate in runs"):
        study_table(rows, metrics=["tumour:dice"], runs={"onehot/seed0": "a"})
    with pytest.raises(ValueError, match="infinite"):
        study_table([{**rows[0], "value": float("inf")}] + rows[1:], metrics=["tumour:dice"])
    with pytest.raises(ValueError, match="lacks the field 'class'"):
        study_table([{"candidate": "a", "case_id": "1", "metric": "dice", "value": 1.0}], metrics=["tumour:dice"])
    with pytest.raises(ValueError, match="test must be one of"):
        study_table(rows, metrics=["tumour:dice"], test="t-test")


def test_markdown_escapes_a_bar_in_a_name(synthetic):
    rows, _ = synthetic
    runs = {f"{n}/seed{s}": ("a|b" if n == "svls" else n) for n in CANDIDATES for s in range(NUM_SEEDS)}
    markdown = study_table(rows, metrics=["tumour:dice"], runs=runs, num_resamples=100).to_markdown()
    assert "| a\\|b | **" in markdown
    assert all(line.count(" | ") == 1 for line in markdown.split("\n")[:5] if line.startswith("| "))


def test_one_candidate_has_no_marks(synthetic):
    rows, _ = synthetic
    only = [r for r in rows if r["candidate"].startswith("svls")]
    table = study_table(only, metrics=METRICS, num_resamples=200)
    assert table.candidates == ("svls",) and not table.marked.any()
    assert np.isnan(table.comparison.p_value).all()


def test_labels_and_directions():
    assert metric_label("tumour:dice") == "Dice (tumour)"
    assert metric_label("all:tace_raters_box") == "TACE (raters, box)"
    assert metric_label("edema:hd95_rater_mean") == "HD95 (edema, rater mean)"
    assert metric_label("all:uncertainty_error_dice") == "Uncertainty–error Dice"
    assert metric_label("all:ged2") == "GED²"
    assert metric_direction("tumour:surface_dice") == "higher"
    assert metric_direction("all:entropy_mae_box") == "lower"
    assert metric_direction("all:sample_diversity") == "higher"
    assert metric_direction("tumour:dice", directions={"tumour:dice": "lower"}) == "lower"
    with pytest.raises(ValueError, match="directions"):
        metric_direction("all:mutual_information")


def test_files_round_trip(synthetic, tmp_path):
    rows, _ = synthetic
    table = study_table(rows, metrics=METRICS, reference="onehot", num_resamples=500)
    paths = write_study_table(table, tmp_path, percent=["ece"])
    assert [p.split("/")[-1] for p in paths] == ["study.csv", "study.md", "study.png", "study_cases.csv"]
    back = read_study_table(tmp_path)
    assert isinstance(back, StudyTable) and back == table
    assert back.comparison.best == table.comparison.best
    with open(tmp_path / "study.csv", newline="") as stream:
        records = list(csv.DictReader(stream))
    assert len(records) == len(CANDIDATES) * len(METRICS)
    ece = next(r for r in records if r["candidate"] == "svls" and r["metric"] == "all:ece_reference_volume")
    assert float(ece["mean"]) == table.mean[2, 1] < 0.1  # a fraction in the CSV, never a percentage
    assert {"candidate", "metric", "label", "direction", "mean", "low", "high", "n", "p_value", "adjusted_p_value",
            "significant", "best"} <= set(records[0])
    with open(tmp_path / "study_cases.csv", newline="") as stream:
        wide = list(csv.DictReader(stream))
    assert len(wide) == len(CANDIDATES) * NUM_CASES and list(wide[0]) == ["candidate", "case_id", *METRICS]
    markdown = (tmp_path / "study.md").read_text()
    assert markdown == table.to_markdown(percent=["ece"])
    m = table.mean[2, 1] * 100
    assert f"**{m:.3f} [{100 * table.low[2, 1]:.3f}, {100 * table.high[2, 1]:.3f}]**" in markdown
    assert "Wilcoxon signed-rank" in markdown and "Holm" in markdown and "α = 0.05" in markdown
    assert f"n = {NUM_CASES}" in markdown and "500 resamples" in markdown and "mean over its seeds" in markdown
    assert "where both candidates have one" in markdown  # the NaN footnote
    with pytest.raises(FileExistsError):
        write_study_table(table, tmp_path)
    assert write_study_table(table, tmp_path, overwrite=True) == paths


def test_csv_tables_read_back_as_written_and_name_the_file_and_line_of_a_bad_cell(synthetic, tmp_path):
    from napari_seg_uncertainty.workflow.tables import read_rows, write_rows

    path = write_rows(tmp_path / "t.csv", [{"case_id": "c1", "value": 0.25}, {"case_id": "c2", "value": "x"}],
                      overwrite=False)  # fmt: skip
    assert read_rows(path) == ({"case_id": "c1", "value": "0.25"}, {"case_id": "c2", "value": "x"})
    assert read_rows(path, columns=["case_id"]) == read_rows(path)
    with pytest.raises(ValueError, match=r"t\.csv.*line 3"):
        read_rows(path, columns={"value": float})
    with pytest.raises(ValueError, match=r"t\.csv.*lacks the column\(s\) \['metric'\]"):
        read_rows(path, columns=["case_id", "metric"])
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_rows(tmp_path / "nowhere.csv")
    with pytest.raises(TypeError, match="columns"):
        read_rows(path, columns="value")
    rows, _ = synthetic
    write_study_table(study_table(rows, metrics=METRICS, num_resamples=200), tmp_path)
    (tmp_path / "study.csv").write_text("candidate,mean\nsvls,0.5\n")
    with pytest.raises(ValueError, match=r"study\.csv.*lacks the column\(s\) \['metric'\]"):
        read_study_table(tmp_path)


def test_refuses_before_writing_anything(synthetic, tmp_path):
    rows, _ = synthetic
    table = study_table(rows, metrics=["tumour:dice"], num_resamples=100)
    (tmp_path / "study_cases.csv").write_text("mine")
    with pytest.raises(FileExistsError, match="study_cases.csv"):
        write_study_table(table, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study_cases.csv"]


def test_png_size_and_drawing(synthetic, tmp_path):
    from matplotlib.image import imread

    from napari_seg_uncertainty.workflow.figures import new_figure

    rows, _ = synthetic
    table = study_table(rows, metrics=METRICS, num_resamples=100)
    write_study_table(table, tmp_path)
    image = imread(tmp_path / "study.png")
    header_widths = [len(label) for label in table.labels]
    assert image.shape[1] >= 100 * 0.085 * (sum(header_widths) + 8)  # every heading fits at 100 dpi
    markdown_lines = table.to_markdown().split("\n")
    cells = [line.strip("| ").split(" | ") for line in markdown_lines[2:5]]
    cells = [[c.replace("**", "") for c in row] for row in cells]  # bold markers; a star stays, as drawn
    header = markdown_lines[0].strip("| ").split(" | ")
    footnote = table.to_markdown().strip().split("\n")[-1]
    width, height = table_size(header, cells, footnote=footnote)
    assert image.shape[:2] == (round(100 * height), round(100 * width))
    assert len(wrap_footnote(footnote, width)) >= 3
    figure = new_figure(6, 3)
    drawn = draw_study_table(figure, table)
    texts = {c.get_text().get_text(): c.get_text().get_fontweight() for c in drawn["table"].get_celld().values()}
    best = f"{table.mean[2, 0]:.3f} [{table.low[2, 0]:.3f}, {table.high[2, 0]:.3f}]"
    assert texts[best] == ("bold" if table.marked[2, 0] else "normal")


def test_smallest_wilcoxon_p_is_what_scipy_gives_for_all_differences_of_one_sign():
    from scipy.stats import wilcoxon

    from napari_seg_uncertainty.workflow.study.table import smallest_wilcoxon_p

    for n in range(3, 12):
        diffs = np.arange(1, n + 1, dtype=float)
        assert wilcoxon(diffs).pvalue == pytest.approx(smallest_wilcoxon_p(n), rel=1e-12)


def test_too_few_cases_for_alpha_are_said_in_the_footnote_and_warned():
    rows = [
        {"candidate": c, "case_id": f"c{i}", "class": "organ", "metric": "dice", "value": v + 0.01 * i}
        for c, v in (("a", 0.8), ("b", 0.6)) for i in range(5)
    ]
    with pytest.warns(UserWarning, match="no Wilcoxon difference can reach"):
        table = study_table(rows, metrics=["organ:dice"])
    assert not table.marked.any()
    assert "smallest possible Wilcoxon p-value is 0.0625" in table.to_markdown()
    assert "at least 6 test cases" in table.to_markdown()
    six = rows + [{"candidate": c, "case_id": "c5", "class": "organ", "metric": "dice", "value": v}
                  for c, v in (("a", 0.9), ("b", 0.7))]
    table = study_table(six, metrics=["organ:dice"])
    assert "Note:" not in table.to_markdown()
    assert table.marked.any()


def test_without_a_reference_a_candidate_worse_than_the_best_is_starred():
    rows = [
        {"candidate": c, "case_id": f"c{i}", "class": "organ", "metric": "dice", "value": v + 0.01 * i}
        for c, v in (("a", 0.9), ("b", 0.6), ("c", 0.9)) for i in range(12)
    ]
    table = study_table(rows, metrics=["organ:dice"])
    sig = table.comparison.significant[:, 0]
    assert sig.tolist() == [False, True, False]  # b differs from the best a; c ties with it
    lines = table.to_markdown().split("\n")
    assert lines[3].endswith("] * |") and not lines[2].endswith("* |") and not lines[4].endswith("* |")
    assert "*: significantly different from the best of its column." in lines[-2]
