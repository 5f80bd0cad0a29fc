"""ReviewSession on a real evaluation of two tiny 3-D checkpoints (a U-Net and an SSN) on an anisotropic
phantom cohort with non-zero origins: every number against cases.csv or a direct call, review marks and
annotations on disk, and the cohort growing by the saved annotations."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
from napari_seg_uncertainty.core.cohort.phantom import phantom_class_names
from napari_seg_uncertainty.core.geometry import Geometry
from napari_seg_uncertainty.core.io import read_image, write_image
from napari_seg_uncertainty.core.training import TrainConfig, predict, predict_ssn_distribution, train
from napari_seg_uncertainty.workflow.evaluation import evaluate_checkpoints
from napari_seg_uncertainty.workflow.review import CaseReviewRow, ReviewCase, ReviewSession

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (8, 16, 16)
SAMPLES = 3


def run(gen):
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def _config(root, name, **extra):
    return TrainConfig(channels=(4, 8), strides=(2,), num_res_units=0, epochs=1, steps_per_epoch=2, batch_size=1,
                       patch_size=SHAPE, num_workers=0, device="cpu", predict_samples=SAMPLES,
                       output_dir=str(root / "runs" / name), **extra)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """7 generated 3-D cases (two raters, two foreground classes), 3 train / 1 val / 3 test; a study folder."""
    import torch

    root = tmp_path_factory.mktemp("review")
    source = make_phantom_cohort(7, root / "cohort", ndim=3, num_raters=2, num_classes=3, shape=SHAPE, seed=3)
    cohort = load_cohort(source, class_names=phantom_class_names(3))
    ids = cohort.case_ids
    split = {"train": ids[:3], "val": ids[3:4], "test": ids[4:]}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        checkpoints = {}
        for name, extra in (("unet", {"target": "onehot"}),
                            ("ssn", {"target": "random_rater", "head": "ssn", "loss": "ssn", "ssn_rank": 2,
                                     "ssn_samples": 2})):
            *_, last = train(_config(root, name, **extra), cohort, split=split)
            checkpoints[name] = last.checkpoint
    finally:
        torch.set_num_threads(previous)
    out = root / "study"
    result = run(evaluate_checkpoints(checkpoints, cohort, out_dir=out / "evaluation", num_resamples=200,
                                      device="cpu"))
    (out / "study.yaml").write_text("name: review test\n")
    return {"root": root, "source": source, "cohort": cohort, "split": split, "checkpoints": checkpoints,
            "out": out, "result": result}


def _cases_csv(folder):
    with open(folder / "cases.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def _copy(study, dest):
    """A private copy of the cohort and its evaluation (for tests that add files to the cohort)."""
    cohort_copy = dest / "cohort"
    shutil.copytree(study["source"], cohort_copy)
    evaluation = dest / "evaluation"
    shutil.copytree(study["out"] / "evaluation", evaluation)
    record = json.loads((evaluation / "evaluation.json").read_text())
    record["cohort"] = str(cohort_copy)
    (evaluation / "evaluation.json").write_text(json.dumps(record))
    return cohort_copy, evaluation


# ---------------------------------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------------------------------
def test_open_refuses_a_folder_without_an_evaluation(tmp_path):
    (tmp_path / "cases.csv").write_text("candidate\n")
    with pytest.raises(ValueError, match=r"evaluation/evaluation\.json.*evaluation\.json"):
        ReviewSession.open(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReviewSession.open(tmp_path / "missing")
    with pytest.raises(TypeError, match="folder must be"):
        ReviewSession.open(3)


def test_open_a_study_folder_its_evaluation_folder_or_a_plain_evaluation(study, tmp_path):
    out = study["out"]
    session = ReviewSession.open(out)
    assert session.study_folder == out.resolve() and session.folder == out.resolve()
    assert session.evaluation_folder == (out / "evaluation").resolve()
    assert session.state_path == out.resolve() / "review.json"
    assert session.candidates == ("unet", "ssn")
    assert session.case_ids("unet") == tuple(study["split"]["test"])
    assert ReviewSession.open(out / "evaluation").study_folder == out.resolve()  # the study's own evaluation
    plain = tmp_path / "evaluation"
    shutil.copytree(out / "evaluation", plain)
    alone = ReviewSession.open(plain)
    assert alone.study_folder is None and alone.state_path == plain.resolve() / "review.json"
    assert alone.study_table() is None
    with pytest.raises(ValueError, match="candidate 'nope' was not evaluated here"):
        session.case_rows("nope")


def test_open_reports_a_broken_review_file(study, tmp_path):
    _, evaluation = _copy(study, tmp_path)
    (evaluation / "review.json").write_text("{not json")
    with pytest.raises(ValueError, match="review.json.*move it aside"):
        ReviewSession.open(evaluation)


# ---------------------------------------------------------------------------------------------------
# the case table
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("candidate", ["unet", "ssn"])
def test_case_rows_against_the_rows_of_cases_csv(study, candidate):
    session = ReviewSession.open(study["out"])
    rows = [r for r in _cases_csv(study["out"] / "evaluation") if r["candidate"] == candidate]
    ids = study["split"]["test"]

    def values(case_id, metric, cls=None):
        return [float(r["value"]) for r in rows if r["case_id"] == case_id and r["metric"] == metric
                and (r["class"] != "all" if cls is None else r["class"] == cls)]

    table = session.case_rows(candidate)
    assert all(isinstance(r, CaseReviewRow) for r in table) and [r.case_id for r in table] == ids
    entropy = []
    for row in table:
        dice = values(row.case_id, "dice")
        assert len(dice) == 2  # organ and lesion
        np.testing.assert_allclose(row.dice, np.nanmean(dice), rtol=1e-12)
        (ece,), (nll,) = values(row.case_id, "ece_reference_volume", "all"), values(row.case_id,
                                                                                    "nll_reference_volume", "all")
        assert row.ece == pytest.approx(ece, rel=1e-12) and row.nll == pytest.approx(nll, rel=1e-12)
        h = values(row.case_id, "segment_entropy")
        np.testing.assert_allclose(row.segment_entropy, np.nanmean(h), rtol=1e-12)
        entropy.append(np.nanmean(h))
        assert row.reviewed is False
    entropy = np.array(entropy)
    # uncertainty: the share of the other cases with a lower entropy (the entropies are distinct here)
    assert len(set(entropy.tolist())) == len(entropy)
    expected = [(entropy < e).sum() / (len(entropy) - 1) for e in entropy]
    np.testing.assert_allclose([r.uncertainty for r in table], expected)
    # rank: most uncertain first
    order = [ids[i] for i in np.argsort(-entropy, kind="stable")]
    assert [r.case_id for r in sorted(table, key=lambda r: r.rank)] == order
    assert sorted(r.rank for r in table) == [1, 2, 3]
    assert session.review_order(candidate) == tuple(order)


def test_reliability_rows_and_figure_input_match_the_evaluation(study):
    session = ReviewSession.open(study["out"])
    with open(study["out"] / "evaluation" / "reliability.csv", newline="") as stream:
        expected = list(csv.DictReader(stream))
    got = session.reliability_rows()
    assert len(got) == len(expected)
    assert [(r["candidate"], int(r["count"])) for r in got] == [(r["candidate"], int(r["count"])) for r in expected]
    results = session.reliability_results()
    assert [r.name for r in results] == ["unet", "ssn"]
    for model in results:
        pooled = study["result"][model.name].reliability
        np.testing.assert_array_equal(model.summary.bins.count, pooled.count)
        assert model.summary.ece == pytest.approx(pooled.expected_calibration_error, rel=1e-9)
        assert model.summary.voxels == pooled.total == 3 * int(np.prod(SHAPE))


def test_quality_is_quality_control_of_the_rows(study):
    quality = pytest.importorskip("napari_seg_uncertainty.workflow.study.quality")
    from scipy.stats import spearmanr

    session = ReviewSession.open(study["out"])
    items = session.quality()
    expected = quality.quality_control(list(session.saved.rows))
    assert [(q.candidate, q.structure) for q in items] == [(q.candidate, q.structure) for q in expected]
    rows = _cases_csv(study["out"] / "evaluation")
    for item in items:
        def column(metric, item=item):
            return [float(next(r["value"] for r in rows if r["candidate"] == item.candidate and r["case_id"] == c
                               and r["class"] == item.structure and r["metric"] == metric)) for c in item.case_ids]
        h, d = np.array(column("segment_entropy")), np.array(column("dice"))
        ok = np.isfinite(h) & np.isfinite(d)
        if ok.sum() >= 3 and np.ptp(h[ok]) > 0 and np.ptp(d[ok]) > 0:
            assert item.correlation.rho == pytest.approx(spearmanr(h[ok], d[ok]).statistic)


def test_study_table_is_read_from_the_study_folder(study, tmp_path):
    table_module = pytest.importorskip("napari_seg_uncertainty.workflow.study.table")
    if not hasattr(table_module, "read_study_table"):
        pytest.skip("the study table is not written yet")
    out = tmp_path / "study"
    shutil.copytree(study["out"], out)
    session = ReviewSession.open(out)
    assert session.study_table() is None  # no study.csv yet
    table = table_module.study_table(list(session.saved.rows), metrics=["organ:dice", "all:ece_reference_volume"],
                                     runs={"unet": "unet", "ssn": "ssn"}, num_resamples=200)
    table_module.write_study_table(table, out, overwrite=False)
    read = session.study_table()
    assert read.candidates == table.candidates and read.metrics == table.metrics
    np.testing.assert_allclose(read.mean, table.mean, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# loading a case
# ---------------------------------------------------------------------------------------------------
def test_load_case_reads_predicts_and_places_the_case(study):
    session = ReviewSession.open(study["out"], device="cpu")
    case_id = study["split"]["test"][0]
    case = session.load_case(case_id, "unet")
    assert isinstance(case, ReviewCase) and case.case_id == case_id and case.candidate == "unet"
    data = study["cohort"].load_case(case_id)
    np.testing.assert_array_equal(case.image, data.image[0])
    np.testing.assert_array_equal(case.raters, data.raters)
    direct = predict(study["checkpoints"]["unet"], data.image[0], seed=0)
    np.testing.assert_allclose(case.prediction.probabilities, direct.probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(case.prediction.labels, direct.labels)
    assert case.ssn_samples is None
    assert case.class_names == ("background", "organ", "lesion")
    # geometry: SimpleITK's header, reversed to numpy (napari) axis order
    header = sitk.ReadImage(str(study["cohort"][case_id].image_files[0]))
    spacing, origin = header.GetSpacing()[::-1], header.GetOrigin()[::-1]
    assert case.scale == pytest.approx(spacing) and case.translate == pytest.approx(origin)
    assert spacing[0] > 2 * spacing[1] and any(o != 0 for o in origin)  # anisotropic, off the origin
    kwargs = case.layer_kwargs(leading_axes=1)
    assert kwargs["scale"] == pytest.approx((1.0, *spacing)) and kwargs["translate"] == pytest.approx((0.0, *origin))
    assert "affine" not in kwargs  # identity direction
    assert isinstance(case.geometry, Geometry) and case.geometry.spacing == case.spacing == case.scale
    assert case.origin == case.translate and np.array_equal(case.direction, np.eye(3))
    assert session._grid(case_id) == (SHAPE, case.geometry)  # the grid a save writes on, kept once
    with pytest.raises(ValueError, match="case 'nope' was not evaluated here"):
        session.load_case("nope", "unet")


def test_load_case_samples_an_ssn_checkpoint(study):
    session = ReviewSession.open(study["out"], device="cpu")
    case_id = study["split"]["test"][1]
    case = session.load_case(case_id, "ssn", seed=5)
    image = study["cohort"].load_case(case_id).image[0]
    expected = predict_ssn_distribution(study["checkpoints"]["ssn"], image).sample_labels(SAMPLES, seed=5)
    assert case.ssn_samples.shape == (SAMPLES, *SHAPE)
    np.testing.assert_array_equal(case.ssn_samples, expected)
    two = session.load_case(case_id, "ssn", num_samples=2, seed=5)
    assert two.ssn_samples.shape == (2, *SHAPE)
    direct = predict(study["checkpoints"]["ssn"], image, num_samples=2, seed=5)
    np.testing.assert_allclose(two.prediction.probabilities, direct.probabilities, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# reviewer actions
# ---------------------------------------------------------------------------------------------------
def test_marks_survive_reopening(study, tmp_path):
    _, evaluation = _copy(study, tmp_path)
    ids = study["split"]["test"]
    session = ReviewSession.open(evaluation)
    assert session.reviewed_cases() == () and not session.is_reviewed(ids[0])
    session.mark_reviewed(ids[2], note="lesion boundary too wide")
    session.mark_reviewed(ids[0])
    again = ReviewSession.open(evaluation)
    assert again.reviewed_cases() == (ids[0], ids[2]) and again.is_reviewed(ids[2])
    assert again.note(ids[2]) == "lesion boundary too wide"
    assert {r.case_id: r.reviewed for r in again.case_rows("unet")} == {ids[0]: True, ids[1]: False, ids[2]: True}
    again.mark_reviewed(ids[2], False)
    assert ReviewSession.open(evaluation).reviewed_cases() == (ids[0],)
    state = json.loads((evaluation / "review.json").read_text())
    assert state["cases"][ids[2]]["reviewed"] is False and state["version"] == 1
    assert [p.name for p in evaluation.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    with pytest.raises(ValueError, match="was not evaluated here"):
        session.mark_reviewed(study["split"]["train"][0])
    with pytest.raises(TypeError, match="reviewed"):
        session.mark_reviewed(ids[0], "yes")


def test_save_annotation_grows_a_folder_cohort(study, tmp_path):
    cohort_copy, evaluation = _copy(study, tmp_path)
    session = ReviewSession.open(evaluation, device="cpu")
    case_id = study["split"]["test"][0]
    before = load_cohort(cohort_copy)
    raters = before.load_case(case_id).raters
    labels = (raters[0] + 1) % 3
    first = session.save_annotation(case_id, labels, kind="edited", reviewer="dr. a")
    assert first == cohort_copy / case_id / "rater_3.nii.gz"
    with pytest.raises(ValueError, match="equal the annotation already kept"):
        session.save_annotation(case_id, labels, kind="edited")  # the same labels twice: refused
    with pytest.raises(ValueError, match="equal rater 2 of case"):
        session.save_annotation(case_id, raters[1], kind="ssn_sample")  # a copy of a rater: refused
    other = (raters[1] + 2) % 3
    second = session.save_annotation(case_id, other, kind="ssn_sample")
    assert second.name == "rater_4.nii.gz"  # never overwrites: the next free name
    grown = load_cohort(cohort_copy)
    assert grown[case_id].num_raters == 4
    case = grown.load_case(case_id)
    np.testing.assert_array_equal(case.raters[2], labels)
    np.testing.assert_array_equal(case.raters[3], other)
    saved, meta = read_image(first)
    info = before[case_id]
    assert meta.spacing == pytest.approx(info.spacing) and meta.origin == pytest.approx(info.origin)
    assert session.load_case(case_id, "unet").raters.shape[0] == 4  # the session reads the grown case
    recorded = session.annotations(case_id)
    assert [(a.path, a.kind, a.reviewer, a.in_cohort) for a in recorded] == [
        (str(first), "edited", "dr. a", True), (str(second), "ssn_sample", None, True)]
    assert ReviewSession.open(evaluation).annotations() == recorded
    assert not [p for p in (cohort_copy / case_id).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("suffix", [".nii", ".nrrd", ".mhd"])
def test_save_annotation_takes_the_format_of_the_case_raters(study, tmp_path, suffix):
    cohort_copy, evaluation = _copy(study, tmp_path)
    case_id = study["split"]["test"][0]
    folder = cohort_copy / case_id
    for r in (1, 2):  # the case's raters rewritten in another format
        data, meta = read_image(folder / f"rater_{r}.nii.gz")
        write_image(folder / f"rater_{r}{suffix}", data, spacing=meta.spacing, origin=meta.origin,
                    direction=meta.direction)
        (folder / f"rater_{r}.nii.gz").unlink()
    assert load_cohort(cohort_copy)[case_id].num_raters == 2
    session = ReviewSession.open(evaluation)
    labels = (load_cohort(cohort_copy).load_case(case_id).raters[0] + 1) % 3
    path = session.save_annotation(case_id, labels, kind="edited")
    assert path == folder / f"rater_3{suffix}"
    data, _ = read_image(path)  # the format its name says
    np.testing.assert_array_equal(data, labels)
    grown = load_cohort(cohort_copy)
    assert grown[case_id].num_raters == 3
    np.testing.assert_array_equal(grown.load_case(case_id).raters[2], labels)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_save_annotation_compares_with_the_raters_in_memory(study, tmp_path, monkeypatch):
    _, evaluation = _copy(study, tmp_path)
    session = ReviewSession.open(evaluation, device="cpu")
    case_id = study["split"]["test"][1]
    case = session.load_case(case_id, "unet")

    def no_reading(case_id):
        raise AssertionError(f"case {case_id} read again")

    monkeypatch.setattr(session.cohort(), "load_case", no_reading)
    with pytest.raises(ValueError, match="equal rater 2 of case"):
        session.check_annotation(case_id, case.raters[1], raters=case.raters)
    labels = (case.raters[0] + 1) % 3
    np.testing.assert_array_equal(session.check_annotation(case_id, labels, raters=case.raters), labels)
    path = session.save_annotation(case_id, labels, kind="edited", raters=case.raters)
    assert session.annotations(case_id)[-1].path == str(path) and session.annotations(case_id)[-1].in_cohort
    np.testing.assert_array_equal(read_image(path)[0], labels)
    with pytest.raises(ValueError, match="equal the annotation already kept"):
        session.check_annotation(case_id, labels, raters=case.raters)


def test_table_percent_is_the_study_files(study, tmp_path):
    from napari_seg_uncertainty.workflow.study import example_studies
    from napari_seg_uncertainty.workflow.study.spec import load_study

    assert ReviewSession.open(study["out"]).table_percent() == ()  # a study.yaml that is no study
    folder = tmp_path / "study"
    shutil.copytree(study["out"] / "evaluation", folder / "evaluation")
    shutil.copy(example_studies()["svls"], folder / "study.yaml")
    expected = tuple(load_study(example_studies()["svls"]).table.percent)
    assert expected and ReviewSession.open(folder).table_percent() == expected
    assert ReviewSession.open(folder / "evaluation").table_percent() == expected
    _, evaluation = _copy(study, tmp_path / "plain")
    assert ReviewSession.open(evaluation).table_percent() == ()


def test_save_annotation_refuses_bad_labels(study, tmp_path):
    cohort_copy, evaluation = _copy(study, tmp_path)
    session = ReviewSession.open(evaluation)
    case_id = study["split"]["test"][1]
    good = np.zeros(SHAPE, np.uint8)
    with pytest.raises(ValueError, match=r"shape \(16, 16\) but case .* has shape \(8, 16, 16\)"):
        session.save_annotation(case_id, good[0], kind="edited")
    with pytest.raises(ValueError, match="class 3 but the cohort has 3 classes"):
        session.save_annotation(case_id, good + 3, kind="edited")
    with pytest.raises(ValueError, match="negative label"):
        session.save_annotation(case_id, good.astype(int) - 1, kind="edited")
    with pytest.raises(TypeError, match="integer label map"):
        session.save_annotation(case_id, good.astype(float), kind="edited")
    with pytest.raises(ValueError, match="kind must be one of"):
        session.save_annotation(case_id, good, kind="kept")
    assert load_cohort(cohort_copy)[case_id].num_raters == 2 and session.annotations() == ()


@pytest.mark.parametrize(
    ("layout", "expected", "joins"),
    [("qubiq", "{case}/task01_seg03.nii.gz", True),
     ("msseg", "{case}/Masks/ManualSegmentation_3.nii.gz", True),
     ("npz", "_annotations/{case}/edited_1.nii.gz", False),
     ("manifest", "_annotations/{case}/edited_1.nii.gz", False)],
)
def test_save_annotation_in_every_layout(study, tmp_path, layout, expected, joins):
    source = make_phantom_cohort(7, tmp_path / "cohort", ndim=3, layout=layout, num_raters=2, num_classes=3,
                                 shape=SHAPE, seed=3)
    out = tmp_path / "evaluation"
    run(evaluate_checkpoints({"unet": study["checkpoints"]["unet"]}, source, out_dir=out, num_resamples=50,
                             device="cpu"))
    session = ReviewSession.open(out)
    case_id = study["split"]["test"][2]
    labels = load_cohort(source).load_case(case_id).raters[0]
    labels = np.where(labels > 0, 3 - labels, 0).astype(np.uint8)  # organ and lesion swapped
    path = session.save_annotation(case_id, labels, kind="edited")
    assert path == tmp_path / "cohort" / expected.format(case=case_id)
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, labels)
    grid = session.load_case(case_id, "unet")
    assert meta.spacing == pytest.approx(grid.spacing) and meta.origin == pytest.approx(grid.origin)
    reloaded = load_cohort(source)
    assert reloaded[case_id].num_raters == (3 if joins else 2)
    if joins:
        np.testing.assert_array_equal(reloaded.load_case(case_id).raters[-1], labels)
    edited = labels.copy()
    edited[SHAPE[0] // 2] = 0  # another edit of the same case
    again = session.save_annotation(case_id, edited, kind="edited")
    assert again != path and again.exists() and not math.isnan(float(read_image(again)[0].sum()))


def test_save_annotation_of_a_resampled_case_goes_to_annotations(study, tmp_path):
    source = make_phantom_cohort(7, tmp_path / "cohort", ndim=3, num_raters=2, num_classes=3, shape=SHAPE, seed=3)
    cohort = load_cohort(source, class_names=phantom_class_names(3), target_spacing=(2.0, 1.0, 1.0))
    out = tmp_path / "evaluation"
    run(evaluate_checkpoints({"unet": study["checkpoints"]["unet"]}, cohort, out_dir=out, num_resamples=50,
                             device="cpu"))
    session = ReviewSession.open(out)
    case_id = study["split"]["test"][0]
    case = session.load_case(case_id, "unet")
    assert case.spacing == pytest.approx((2.0, 1.0, 1.0)) and case.raters.shape[1:] != SHAPE
    path = session.save_annotation(case_id, case.prediction.labels, kind="edited")
    assert path == tmp_path / "cohort" / "_annotations" / case_id / "edited_1.nii.gz"
    data, meta = read_image(path)
    np.testing.assert_array_equal(data, case.prediction.labels)
    assert meta.spacing == pytest.approx(case.spacing) and meta.origin == pytest.approx(case.origin)
    assert load_cohort(source)[case_id].num_raters == 2  # the case's own files are untouched
    assert session.annotations(case_id)[0].in_cohort is False


def test_review_rows_rank_ties_and_undefined_cases():
    from napari_seg_uncertainty.workflow.review.table import review_rows

    def rows(case_id, dice, entropy):
        return [{"case_id": case_id, "class": "organ", "metric": "dice", "value": dice},
                {"case_id": case_id, "class": "organ", "metric": "segment_entropy", "value": entropy},
                {"case_id": case_id, "class": "all", "metric": "ece_reference_volume", "value": 0.1}]

    table = review_rows(rows("a", 0.9, 0.2) + rows("b", 0.5, 0.8) + rows("c", 0.7, 0.2) + rows("d", 0.8, math.nan),
                        ["a", "b", "c", "d"], reviewed=["c"])
    by_id = {r.case_id: r for r in table}
    # b most uncertain; a and c tie on entropy, the lower Dice (c) first; d has no entropy: no rank
    assert [by_id[c].rank for c in "abcd"] == [3, 1, 2, None]
    # average ranks 1.5, 3, 1.5 of three finite entropies, scaled by (n - 1) = 2
    np.testing.assert_allclose([by_id[c].uncertainty for c in "abc"], [0.25, 1.0, 0.25])
    assert math.isnan(by_id["d"].uncertainty) and math.isnan(by_id["d"].nll) and by_id["a"].ece == 0.1
    assert [r.reviewed for r in table] == [False, False, True, False]
    (alone,) = review_rows(rows("a", 0.9, 0.2), ["a"])
    assert alone.uncertainty == 0.5 and alone.rank == 1


def test_marks_are_listed_in_evaluation_order(study, tmp_path):
    _, evaluation = _copy(study, tmp_path)
    session = ReviewSession.open(evaluation)
    later, first = study["split"]["test"][1], study["split"]["test"][0]
    session.mark_reviewed(later, note="checked")
    session.mark_reviewed(first)
    listed = session.marks()
    assert [m.case_id for m in listed] == [c for c in session.case_ids("unet") if c in {first, later}]
    assert {m.case_id: (m.reviewed, m.note) for m in listed} == {later: (True, "checked"), first: (True, "")}


def test_marking_again_keeps_the_note_unless_one_is_given(study, tmp_path):
    _, evaluation = _copy(study, tmp_path)
    session = ReviewSession.open(evaluation)
    case_id = study["split"]["test"][0]
    session.mark_reviewed(case_id, note="boundary too wide")
    session.mark_reviewed(case_id, False)  # the dock's "Reviewed" tick passes no note
    session.mark_reviewed(case_id)
    assert session.is_reviewed(case_id) and session.note(case_id) == "boundary too wide"
    session.mark_reviewed(case_id, note="")
    assert session.note(case_id) == "" and session.is_reviewed(case_id)
    with pytest.raises(TypeError, match="note must be a str or None"):
        session.mark_reviewed(case_id, note=3)
