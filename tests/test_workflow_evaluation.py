"""evaluate_checkpoints: held-out cases streamed through two tiny checkpoints, checked against direct calls."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from napari_seg_uncertainty.core.calibration import reliability_bins
from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
from napari_seg_uncertainty.core.evaluation.case_metrics import evaluate_case
from napari_seg_uncertainty.core.evaluation.statistics import bootstrap_ci
from napari_seg_uncertainty.core.labels import majority_vote
from napari_seg_uncertainty.core.training import TrainConfig, load_trained_model, predict, train
from napari_seg_uncertainty.workflow.evaluation import (
    EVALUATION_FILES,
    EvaluationProgress,
    EvaluationResult,
    SavedEvaluation,
    evaluate_checkpoints,
    has_members,
    read_evaluation,
    ssn_samples,
    summarize_rows,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """8 generated 2-D cases (24 x 24, two raters), split 4/2/2; one-hot and rater-mean targets, 2 x 2 steps."""
    import torch

    root = tmp_path_factory.mktemp("evaluation")
    source = make_phantom_cohort(8, root / "cohort", ndim=2, num_raters=2, shape=(24, 24), seed=1)
    cohort = load_cohort(source)
    split = cohort.split(val=0.25, test=0.25, seed=0)
    checkpoints = {}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("onehot", "mean"):
            config = TrainConfig(target=name, channels=(4, 8), strides=(2,), num_res_units=0, epochs=2,
                                 steps_per_epoch=2, batch_size=2, patch_size=(16, 16), num_workers=0,
                                 device="cpu", output_dir=str(root / name))
            *_, last = train(config, cohort, split=split)
            checkpoints[name] = last.checkpoint
    finally:
        torch.set_num_threads(previous)
    return {"root": root, "cohort": cohort, "split": split, "checkpoints": checkpoints}


def run(gen):
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        return records, stop.value


@pytest.fixture(scope="module")
def evaluated(trained):
    out = trained["root"] / "out"
    records, result = run(evaluate_checkpoints(trained["checkpoints"], trained["cohort"], out_dir=out,
                                               num_resamples=500, device="cpu"))
    return records, result, out


def test_progress_one_record_per_case_and_checkpoint(trained, evaluated):
    records, result, _ = evaluated
    test = trained["split"]["test"]
    assert all(isinstance(r, EvaluationProgress) for r in records)
    assert [(r.candidate, r.case_id) for r in records] == [(n, c) for n in ("onehot", "mean") for c in test]
    assert [r.case_index for r in records] == [1, 2, 1, 2] and {r.num_cases for r in records} == {2}
    assert records[-1].fraction == 1.0 and "onehot [1/2] case" in records[0].text()
    assert isinstance(result, EvaluationResult) and [c.name for c in result.candidates] == ["onehot", "mean"]
    assert result["mean"].case_ids == tuple(test) and result.split == "test" and result.reference == "majority"


def test_case_rows_equal_evaluate_case_on_predict(trained, evaluated):
    _, result, _ = evaluated
    cohort = trained["cohort"]
    for name, path in trained["checkpoints"].items():
        model = load_trained_model(path)
        expected = []
        for case_id in trained["split"]["test"]:
            case = cohort.load_case(case_id)
            prediction = predict(model, case.image[0], seed=0)
            direct = evaluate_case(prediction.probabilities, case.raters, spacing=case.spacing, num_classes=2,
                                   class_names=model.class_names, reference="majority", tolerance_mm=1.0,
                                   num_bins=15, case_id=case_id)
            expected += [{"candidate": name, **row} for row in direct.rows()]
        got = list(result[name].rows)
        assert [(r["case_id"], r["class"], r["metric"]) for r in got] == [
            (r["case_id"], r["class"], r["metric"]) for r in expected]
        np.testing.assert_array_equal([r["value"] for r in got], [r["value"] for r in expected])


def test_pooled_reliability_equals_the_concatenated_voxels(trained, evaluated):
    _, result, _ = evaluated
    cohort = trained["cohort"]
    for name, path in trained["checkpoints"].items():
        model = load_trained_model(path)
        probs, labels = [], []
        for case_id in trained["split"]["test"]:
            case = cohort.load_case(case_id)
            probs.append(predict(model, case.image[0], seed=0).probabilities)  # (C, Y, X)
            labels.append(majority_vote(case.raters, num_classes=2))
        # the cases side by side along Y: one image holding every voxel of the split
        direct = reliability_bins(np.concatenate(probs, axis=1), np.concatenate(labels, axis=0), num_bins=15)
        pooled = result[name].reliability
        np.testing.assert_array_equal(pooled.count, direct.count)
        assert pooled.total == 2 * 24 * 24
        np.testing.assert_allclose(pooled.accuracy, direct.accuracy, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(pooled.confidence, direct.confidence, rtol=1e-9, equal_nan=True)


def test_summary_is_the_bootstrap_of_the_case_values(evaluated):
    _, result, _ = evaluated
    candidate = result["onehot"]
    dice = next(s for s in candidate.summary if s.metric == "dice")
    values = [r["value"] for r in candidate.rows if r["metric"] == "dice" and r["class"] == dice.class_name]
    assert dice.n == 2 and dice.mean == pytest.approx(np.mean(values))
    table_ci = summarize_rows(candidate.rows, num_resamples=500, seed=0)
    assert table_ci == candidate.summary
    alone = bootstrap_ci(np.array(values), num_resamples=500, seed=0)
    assert dice.low == pytest.approx(float(alone.low)) and dice.high == pytest.approx(float(alone.high))


def test_files_are_written_and_never_overwritten(trained, evaluated):
    _, result, out = evaluated
    assert sorted(p.name for p in out.iterdir()) == sorted(EVALUATION_FILES)
    assert result.files == tuple(str(out / f) for f in EVALUATION_FILES)
    with open(out / "cases.csv") as handle:
        cases = list(csv.DictReader(handle))
    assert len(cases) == len(result.case_rows()) and set(cases[0]) == {"candidate", "case_id", "class", "metric",
                                                                       "value"}
    with open(out / "summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert {"candidate", "metric", "mean", "low", "high", "n"} <= set(summary[0])
    with open(out / "reliability.csv") as handle:
        bins = list(csv.DictReader(handle))
    assert len(bins) == 2 * 15 and sum(int(b["count"]) for b in bins) == 2 * 2 * 24 * 24
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    before = (out / "cases.csv").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="cases.csv.*already exist"):  # at the call, before any work
        evaluate_checkpoints(trained["checkpoints"]["mean"], trained["cohort"], out_dir=out, device="cpu")
    assert (out / "cases.csv").stat().st_mtime_ns == before


def test_a_training_case_in_the_evaluated_split_is_refused(trained):
    split = trained["split"]
    spec = {"train": split["val"], "val": [], "test": [split["train"][0], *split["test"]]}
    with pytest.raises(ValueError, match=f"{split['train'][0]}.*training cases of checkpoint"):
        evaluate_checkpoints(trained["checkpoints"]["onehot"], trained["cohort"], split_spec=spec, device="cpu")
    with pytest.raises(ValueError, match="training cases"):
        evaluate_checkpoints(trained["checkpoints"]["onehot"], trained["cohort"], split="train", device="cpu")


def test_a_split_spec_of_held_out_cases_is_used(trained):
    split = trained["split"]
    spec = {"train": split["train"], "val": split["test"], "test": split["val"][:1]}
    records, result = run(evaluate_checkpoints({"m": trained["checkpoints"]["mean"]}, trained["cohort"].source,
                                               split_spec=spec, num_resamples=10, device="cpu"))
    assert [r.case_id for r in records] == split["val"][:1] and result["m"].case_ids == tuple(split["val"][:1])
    assert all(np.isnan(s.low) for s in result["m"].summary) and result.files == ()


def test_arguments_are_checked(trained, tmp_path):
    cohort, path = trained["cohort"], trained["checkpoints"]["mean"]
    with pytest.raises(TypeError, match="checkpoints"):
        evaluate_checkpoints(3, cohort)
    with pytest.raises(ValueError, match="checkpoints is empty"):
        evaluate_checkpoints([], cohort)
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_checkpoints(path, cohort, split="holdout")
    with pytest.raises(ValueError, match="reference"):
        evaluate_checkpoints(path, cohort, reference="vote")
    with pytest.raises(ValueError, match="tolerance_mm"):
        evaluate_checkpoints(path, cohort, tolerance_mm=-1)
    with pytest.raises(ValueError, match="num_bins"):
        evaluate_checkpoints(path, cohort, num_bins=0)
    with pytest.raises(TypeError, match="seed"):
        evaluate_checkpoints(path, cohort, seed=1.5)
    with pytest.raises(TypeError, match="split_spec"):
        evaluate_checkpoints(path, cohort, split_spec=["case_000"])
    with pytest.raises(TypeError, match="cohort"):
        evaluate_checkpoints(path, 5)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        evaluate_checkpoints(tmp_path / "missing.pt", cohort)
    with pytest.raises(ValueError, match="majority"):
        evaluate_checkpoints(path, cohort, reference="vote")


def test_unnamed_checkpoints_are_named_by_their_folder(trained):
    from napari_seg_uncertainty.workflow.evaluation.arguments import _candidate_names

    paths = list(trained["checkpoints"].values())
    assert list(_candidate_names(paths)) == ["onehot", "mean"]
    assert list(_candidate_names(["a/run/last.pt", "b/run/last.pt"])) == ["a/run", "b/run"]
    assert list(_candidate_names(["a/run/best.pt"])) == ["best"]


def test_an_ssn_checkpoint_is_scored_with_its_samples(trained):
    cohort, split, root = trained["cohort"], trained["split"], trained["root"]
    config = TrainConfig(head="ssn", loss="ssn", target="random_rater", ssn_rank=2, channels=(4, 8), strides=(2,),
                         num_res_units=0, epochs=1, steps_per_epoch=1, batch_size=2, patch_size=(16, 16),
                         num_workers=0, device="cpu", output_dir=str(root / "ssn"))
    *_, last = train(config, cohort, split=split)
    records, result = run(evaluate_checkpoints({"ssn": last.checkpoint}, cohort, num_samples=3, num_resamples=10,
                                               device="cpu"))
    model = load_trained_model(last.checkpoint)
    case = cohort.load_case(split["test"][0])
    samples = ssn_samples(model, case.image[0], num_samples=3, seed=0)
    assert samples.shape == (3, 24, 24)
    direct = evaluate_case(predict(model, case.image[0], num_samples=3, seed=0).probabilities, case.raters,
                           spacing=case.spacing, num_classes=2, class_names=model.class_names, num_bins=15,
                           samples=samples, case_id=case.case_id).rows()
    got = [r for r in result["ssn"].rows if r["case_id"] == case.case_id]
    assert {"ged2", "sample_diversity", "mutual_information"} <= {r["metric"] for r in got}
    np.testing.assert_array_equal([r["value"] for r in got], [r["value"] for r in direct])
    assert ssn_samples(load_trained_model(trained["checkpoints"]["mean"]), case.image[0]) is None
    with pytest.raises(TypeError, match="trained"):
        ssn_samples("last.pt", case.image[0])


def test_read_evaluation_gives_back_the_rows_and_what_was_evaluated(trained, evaluated):
    _, result, out = evaluated
    saved = read_evaluation(out)
    assert isinstance(saved, SavedEvaluation) and saved.folder == str(out.resolve())
    assert (saved.split, saved.reference, saved.num_bins, saved.seed, saved.tolerance_mm) == ("test", "majority", 15,
                                                                                            0, 1.0)
    assert saved.candidates == {n: str(Path(p).resolve()) for n, p in trained["checkpoints"].items()}
    assert saved.case_ids == {n: tuple(trained["split"]["test"]) for n in trained["checkpoints"]}
    assert saved.cohort == trained["cohort"].source
    expected = result.case_rows()
    assert [{k: v for k, v in r.items() if k != "value"} for r in saved.rows] == [
        {k: v for k, v in r.items() if k != "value"} for r in expected]
    np.testing.assert_array_equal([r["value"] for r in saved.rows], [r["value"] for r in expected])
    assert all(type(r["value"]) is float for r in saved.rows)
    assert [r["count"] for r in saved.reliability_rows] == [r["count"] for r in result.reliability_rows()]
    np.testing.assert_array_equal([r["high"] for r in saved.summary_rows], [r["high"] for r in result.summary_rows()])
    cohort = saved.load_cohort()
    assert cohort.case_ids == trained["cohort"].case_ids and cohort.source == trained["cohort"].source


def test_legend_of_the_pooled_reliability_is_the_same_in_the_evaluation_and_the_review(evaluated):
    from napari_seg_uncertainty.workflow.evaluation.files import pooled_reliability_result
    from napari_seg_uncertainty.workflow.review.reliability import reliability_results

    _, result, out = evaluated
    rebuilt = {r.name: r.summary for r in reliability_results(read_evaluation(out))}
    for candidate in result.candidates:
        means = {(s.class_name, s.metric): s.mean for s in candidate.summary}
        legend = pooled_reliability_result(candidate.name, candidate.reliability, means).summary
        assert legend.ece == candidate.reliability.expected_calibration_error
        assert legend.voxels == candidate.reliability.total
        for metric in ("tace", "nll", "brier"):
            cases = [r["value"] for r in candidate.rows if r["metric"] == f"{metric}_reference_volume"]
            assert getattr(legend, metric) == pytest.approx(np.mean(cases), rel=1e-6)  # the summary mean
            assert getattr(rebuilt[candidate.name], metric) == pytest.approx(getattr(legend, metric), rel=1e-12)
        assert rebuilt[candidate.name].ece == pytest.approx(legend.ece, rel=1e-9)
    empty = pooled_reliability_result("x", result.candidates[0].reliability, {}).summary
    assert all(math.isnan(getattr(empty, m)) for m in ("tace", "nll", "brier"))


def test_read_evaluation_names_a_missing_or_garbled_file(evaluated, tmp_path):
    import shutil

    _, _, out = evaluated
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "evaluation.json").write_text("{not json")
    with pytest.raises(ValueError, match="evaluation.json.*not valid JSON"):
        read_evaluation(copy)
    (copy / "evaluation.json").write_text(json.dumps({"version": 1, "split": "test"}))
    with pytest.raises(ValueError, match="evaluation.json.*lacks the key"):
        read_evaluation(copy)
    (copy / "evaluation.json").unlink()
    with pytest.raises(FileNotFoundError, match="evaluation.json.*missing"):
        read_evaluation(copy)
    shutil.copy(out / "evaluation.json", copy / "evaluation.json")
    (copy / "cases.csv").write_text("candidate,case_id,class,metric,value\nm,c,organ,dice,high\n")
    with pytest.raises(ValueError, match="cases.csv.*line 2"):
        read_evaluation(copy)
    (copy / "summary.csv").unlink()
    shutil.copy(out / "cases.csv", copy / "cases.csv")
    with pytest.raises(FileNotFoundError, match="summary.csv"):
        read_evaluation(copy)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_evaluation(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="folder"):
        read_evaluation(3)


def _entropy(p, axis):
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0), directly in numpy."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=axis)


@pytest.mark.parametrize("options", [{"ensemble_size": 2}, {"dropout": 0.3, "predict_samples": 3}],
                         ids=["ensemble", "mc_dropout"])
def test_ensembles_and_mc_dropout_are_scored_with_their_members(trained, options):
    cohort, split, root = trained["cohort"], trained["split"], trained["root"]
    name = "_".join(options)
    config = TrainConfig(target="onehot", channels=(4, 8), strides=(2,), num_res_units=0, epochs=1, steps_per_epoch=1,
                         batch_size=2, patch_size=(16, 16), num_workers=0, device="cpu",
                         output_dir=str(root / name), **options)
    *_, last = train(config, cohort, split=split)
    _, result = run(evaluate_checkpoints({name: last.checkpoint}, cohort, num_resamples=10, device="cpu"))
    model = load_trained_model(last.checkpoint)
    assert has_members(model)
    for case_id in split["test"]:
        image = cohort.load_case(case_id).image[0]
        plain_prediction = predict(model, image, seed=0)
        prediction = predict(model, image, seed=0, keep_members=True)
        members = prediction.member_probabilities.astype(np.float64)
        count = options.get("ensemble_size", 1) * options.get("predict_samples", 1)
        assert plain_prediction.member_probabilities is None and members.shape == (count, 2, 24, 24)
        np.testing.assert_array_equal(prediction.probabilities, plain_prediction.probabilities)
        np.testing.assert_allclose(members.mean(axis=0), prediction.probabilities, atol=1e-6)
        # MI = H(mean of the members) - mean of the members' H, normalized by ln C, averaged over voxels
        direct = np.mean(_entropy(members.mean(axis=0), 0) - _entropy(members, 1).mean(axis=0)) / np.log(2)
        got = {r["metric"]: r["value"] for r in result[name].rows if r["case_id"] == case_id and r["class"] == "all"}
        assert {"ged2", "sample_diversity", "mutual_information"} <= set(got)
        assert got["mutual_information"] == pytest.approx(direct, rel=1e-4, abs=1e-6)
        assert got["mutual_information"] > 0  # the members disagree somewhere
