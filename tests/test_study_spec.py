"""The study file: load_study checks everything before a run starts; the example studies load and plan."""

from __future__ import annotations

import os

import pytest
import yaml

from napari_seg_uncertainty.workflow.study import example_studies, load_study, plan_study, run_study
from napari_seg_uncertainty.workflow.study.spec import PhantomCohort, StudySpec

TINY = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "channels": [4, 8], "strides": [2], "num_workers": 0}


def _study(**changes):
    study = {
        "name": "tiny",
        "cohort": {"phantom": {"n_cases": 6, "ndim": 2, "shape": [16, 16]}},
        "base": dict(TINY),
        "candidates": [{"name": "a", "config": {"target": "onehot"}}, {"name": "b", "config": {"target": "svls"}}],
    }
    study.update(changes)
    return study


def test_a_study_mapping_gives_every_candidate_its_full_config():
    spec = load_study(_study(seeds=[0, 3]))
    assert isinstance(spec, StudySpec)
    assert isinstance(spec.cohort, PhantomCohort) and spec.cohort.shape == (16, 16)
    assert spec.run_ids == ("a/seed0", "a/seed3", "b/seed0", "b/seed3")
    a = spec.candidate("a").config
    assert (a.target, a.epochs, a.channels, a.strides) == ("onehot", 1, (4, 8), (2,))
    run = spec.candidate("b").run_config(seed=3, output_dir="out/runs/b/seed3")
    assert (run.target, run.seed, run.output_dir) == ("svls", 3, "out/runs/b/seed3")


def test_a_typo_in_a_candidate_field_fails_naming_the_candidate_and_the_field(tmp_path):
    study = _study(candidates=[{"name": "a", "config": {"target": "onehot"}},
                               {"name": "b", "config": {"targte": "svls"}}])
    with pytest.raises(ValueError, match=r"candidate 'b'.*'targte'"):
        load_study(study)
    # run_study refuses it in the call itself, before the cohort is generated or anything trained
    with pytest.raises(ValueError, match=r"candidate 'b'"):
        run_study(study, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bad_value_fails_naming_the_candidate_and_the_field():
    with pytest.raises(ValueError, match=r"candidate 'b'.*target"):
        load_study(_study(candidates=[{"name": "b", "config": {"target": "svsl"}}]))
    with pytest.raises(ValueError, match=r"candidate 'b'.*label_smoothing"):
        load_study(_study(candidates=[{"name": "b", "config": {"label_smoothing": 2.0}}]))
    with pytest.raises(ValueError, match=r"candidate 'b'.*head='ssn'"):
        load_study(_study(candidates=[{"name": "b", "config": {"head": "ssn"}}]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"candidates": [{"name": "a"}, {"name": "a"}]}, "two candidates are called 'a'"),
        ({"candidates": []}, "candidates is empty"),
        ({"candidates": None}, "no candidate"),
        ({"candidatse": []}, r"unknown key\(s\) \['candidatse'\]"),
        ({"base": {**TINY, "seed": 1}}, r"base sets \['seed'\]"),
        ({"candidates": [{"name": "a", "config": {"output_dir": "x"}}]}, r"candidate 'a' sets \['output_dir'\]"),
        ({"candidates": [{"name": "a/b"}]}, "cannot name a folder"),
        ({"seeds": [0, 0]}, "seeds lists a seed twice"),
        ({"table": {"reference": "c"}}, "table.reference 'c' is not a candidate"),
        ({"table": {"metrics": ["dice"]}}, "'<class>:<metric>'"),
        ({"table": {"test": "ttest"}}, "table.test"),
        ({"evaluate": {"split": "tset"}}, "evaluate.split"),
        ({"evaluate": {"num_bins": 0}}, "evaluate.num_bins"),
        ({"launcher": {"kind": "cluster"}}, "launcher.kind"),
        ({"launcher": {"slurm": {"partitoin": "gpu"}}}, r"unknown key\(s\) \['partitoin'\] in launcher.slurm"),
        ({"cohort": {"phantom": {"n_cases": 6, "layout": "dicom"}}}, "cohort.phantom.layout"),
        ({"cohort_options": {"on_eror": "skip"}}, "cohort_options"),
        ({"split": {"vla": 0.2}}, r"unknown key\(s\) \['vla'\] in split"),
        ({"cohort": None}, "needs a 'cohort'"),
        ({"cohort": {"phantom": {"ndim": 2}}}, "cohort.phantom needs n_cases"),
        ({"cohort": {}}, "cohort.phantom needs n_cases"),
        ({"cohort": {"phantom": {"n_cases": 1}}}, "cohort.phantom.n_cases"),
    ],
)
def test_bad_studies_are_refused_with_a_message_naming_the_setting(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        load_study(_study(**changes))


def test_a_grid_alone_or_crossed_with_candidates_names_every_combination():
    spec = load_study(_study(candidates=None, grid={"target": ["onehot", "svls"], "loss": ["ce", "dice"]}))
    assert [c.name for c in spec.candidates] == ["onehot-ce", "onehot-dice", "svls-ce", "svls-dice"]
    assert [(c.config.target, c.config.loss) for c in spec.candidates] == [
        ("onehot", "ce"), ("onehot", "dice"), ("svls", "ce"), ("svls", "dice")
    ]
    crossed = load_study(_study(
        candidates=[{"name": "conv", "config": {"loss": "dice"}},
                    {"name": "softseg", "config": {"head": "softseg", "loss": "adaptive_wing"}}],
        grid={"target": ["staple", "mean"], "channels": [[4, 8]]},
    ))  # fmt: skip
    assert [c.name for c in crossed.candidates] == [
        "conv-staple-4x8", "conv-mean-4x8", "softseg-staple-4x8", "softseg-mean-4x8"
    ]
    assert crossed.candidate("softseg-mean-4x8").config.head == "softseg"


def test_the_resolved_study_reads_back_as_the_same_study(tmp_path):
    spec = load_study(_study(table={"metrics": ["organ:dice"], "reference": "a"}, seeds=[1, 2]))
    again = load_study(spec.to_dict())
    assert again.to_dict() == spec.to_dict()
    assert again.candidates == spec.candidates
    # through YAML, as OUT/study.yaml is written
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    assert load_study(path).to_dict() == spec.to_dict()


def test_paths_of_a_study_file_are_relative_to_the_file(tmp_path):
    (tmp_path / "data" / "cohort").mkdir(parents=True)
    (tmp_path / "studies").mkdir()
    study = {**_study(cohort="../data/cohort", out_dir="../results/tiny")}
    path = tmp_path / "studies" / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    spec = load_study(path)
    assert spec.cohort == str((tmp_path / "data" / "cohort").resolve())
    assert spec.out_dir == os.path.join(tmp_path / "studies", "../results/tiny")
    assert spec.source == str(path)
    with pytest.raises(FileNotFoundError, match="relative to the study file"):
        load_study({**study, "cohort": "../data/missing"}, base=tmp_path / "studies")


def test_every_example_study_loads_and_plans(tmp_path):
    examples = example_studies()
    assert sorted(examples) == ["mehrtash", "msvls", "softseg", "svls"]
    expected = {
        "svls": ["one-hot", "ls", "svls"],
        "msvls": ["one-hot", "moh", "msvls"],
        "softseg": [f"{m}-{t}" for m in ("conv", "softseg") for t in ("staple", "mean", "random_rater")],
        "mehrtash": ["ce", "dice", "ce-ensemble", "ce-mc-dropout"],
    }
    for name, path in examples.items():
        spec = load_study(path)
        assert [c.name for c in spec.candidates] == expected[name]
        assert isinstance(spec.cohort, PhantomCohort) and spec.description
        runs = plan_study(spec, tmp_path / name)
        assert [r.status for r in runs] == ["new"] * len(expected[name])
        assert all(r.folder == str(tmp_path / name / "runs" / r.candidate / f"seed{r.seed}") for r in runs)
        if spec.table.reference is not None:
            assert spec.table.reference in expected[name]
    softseg = load_study(examples["softseg"])
    assert (softseg.table.reference, softseg.table.test, softseg.evaluate.reference) == (
        "conv-staple", "wilcoxon", "staple"
    )
    mehrtash = load_study(examples["mehrtash"])
    assert (mehrtash.table.test, mehrtash.table.alpha) == ("bootstrap", 0.01)
    assert mehrtash.candidate("ce-ensemble").config.ensemble_size == 3
    assert mehrtash.candidate("ce-mc-dropout").config.dropout == 0.5


def _metric_keys(num_classes: int, **options) -> set[str]:
    """Every ``"<class>:<metric>"`` key evaluate_case writes for a phantom cohort's classes."""
    import numpy as np

    from napari_seg_uncertainty.core.cohort.phantom import phantom_class_names
    from napari_seg_uncertainty.core.evaluation.case_metrics import evaluate_case

    raters = np.zeros((3, 24, 24), np.uint8)
    for r in range(3):
        raters[r, 4 + r:18, 5:19] = 1
        if num_classes > 2:
            raters[r, 8:12 + r, 8:13] = 2
    probabilities = np.full((num_classes, 24, 24), 0.1 / (num_classes - 1))
    np.put_along_axis(probabilities, raters[:1].astype(np.int64), 0.9, axis=0)
    rows = evaluate_case(probabilities, raters, spacing=(1.0, 1.0), num_classes=num_classes,
                         class_names=phantom_class_names(num_classes), **options).rows()
    return {f"{row['class']}:{row['metric']}" for row in rows}


def test_every_example_table_metric_is_written_by_the_evaluation():
    for name, path in example_studies().items():
        spec = load_study(path)
        keys = _metric_keys(spec.cohort.num_classes, reference=spec.evaluate.reference)
        missing = sorted(set(spec.table.metrics) - keys)
        assert not missing, (name, missing)
        assert set(spec.table.percent) <= set(spec.table.metrics), name


@pytest.mark.parametrize("key, message", [
    ("organ:dcie", "'organ:dcie': no per-class metric 'dcie'; did you mean 'organ:dice'?"),
    ("all:ece_reference_volum", "did you mean 'all:ece_reference_volume'"),
    ("all:dice", "'dice' is per class: '<class>:dice'."),
    ("organ:ece_reference_volume", "case-level metrics have the class 'all': 'all:ece_reference_volume'."),
    ("organ:dice/rater_0", "no per-class metric 'dice/rater_0'"),
    ("organ:zzz", "no per-class metric 'zzz'."),
])
def test_a_misspelt_table_metric_is_refused_on_loading_in_one_short_line(key, message):
    with pytest.raises(ValueError) as error:
        load_study(_study(table={"metrics": ["organ:dice", key]}))
    text = str(error.value)
    assert message in text and "\n" not in text and len(text) < 250
    with pytest.raises(ValueError, match="table.percent entry 'organ:dcie'"):
        load_study(_study(table={"metrics": ["organ:dice"], "percent": ["organ:dcie"]}))


def test_the_metric_constants_are_exactly_what_evaluate_case_writes():
    import numpy as np

    from napari_seg_uncertainty.core.evaluation.case_metrics import CASE_METRICS, CLASS_METRICS, RATER_METRICS

    members = np.stack([np.full((3, 24, 24), 1 / 3), np.full((3, 24, 24), 1 / 3)])
    keys = _metric_keys(3, member_probabilities=members)
    assert {k.split(":")[1] for k in keys if k.startswith("all:")} == set(CASE_METRICS)
    per_class = {k.split(":")[1] for k in keys if k.startswith("organ:")}
    assert per_class == {*CLASS_METRICS, *(f"{m}/rater_{r}" for m in RATER_METRICS for r in (1, 2, 3))}
    for key in keys:  # every key the evaluation writes is accepted
        load_study(_study(cohort={"phantom": {"n_cases": 6, "num_classes": 3}}, table={"metrics": [key]}))


def test_a_table_class_the_cohort_lacks_is_refused_before_anything_trains(tmp_path):
    spec = load_study(_study(table={"metrics": ["organ:dice", "livr:dice"]}))  # classes background, organ
    with pytest.raises(ValueError, match=r"no foreground class 'livr'; its classes are \['organ'\]\.$"):
        plan_study(spec, tmp_path / "a")
    with pytest.raises(ValueError, match=r"no foreground class 'organs'; did you mean 'organ:dice'\?$"):
        run_study(_study(table={"metrics": ["organs:dice"]}), out_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_the_class_of_a_table_metric_is_checked_once_a_cohort_on_disk_is_read(tmp_path):
    from napari_seg_uncertainty.core.cohort import make_phantom_cohort

    source = make_phantom_cohort(6, tmp_path / "cohort", ndim=2, shape=(16, 16))  # no class names: "class 1"
    study = _study(cohort=str(source), table={"metrics": ["organ:dice"]})
    assert plan_study(study, tmp_path / "out")  # the class names are not known before the cohort is read
    gen = run_study(study, out_dir=tmp_path / "out")
    with pytest.raises(ValueError, match=r"'organ:dice': the cohort has no foreground class 'organ'; its classes"):
        for _ in gen:
            pass
    assert not list((tmp_path / "out").rglob("*.pt")) and not (tmp_path / "out" / "study.yaml").exists()


def test_every_example_split_leaves_enough_test_cases_to_reach_significance():
    from napari_seg_uncertainty.core.cohort.splits import fraction_split
    from napari_seg_uncertainty.workflow.study.table import smallest_wilcoxon_p

    for name, path in example_studies().items():
        spec = load_study(path)
        n_cases, fractions = spec.cohort.n_cases, {k: spec.split[k] for k in ("val", "test")}
        n_test = round(n_cases * fractions["test"])  # the rounded share, as the split documents it
        assert len(fraction_split([f"c{i}" for i in range(n_cases)], **fractions, seed=spec.split["seed"])["test"]) \
            == n_test, name
        num_tests = len(spec.candidates) - 1  # Holm over the candidates compared with the reference
        if spec.table.test == "wilcoxon":
            # all signs alike: p = 2 / 2**n, times the Holm factor
            assert num_tests * 2 / 2**n_test < spec.table.alpha, (name, n_test)
            assert smallest_wilcoxon_p(n_test, num_tests) < spec.table.alpha, name
        else:  # a bootstrap p-value is at least one resample in num_resamples + 1
            assert num_tests / (spec.evaluate.num_resamples + 1) < spec.table.alpha, name
            assert n_test >= 8, name
