"""The demo command, headless and in a viewer; the numbers it writes against independent computations."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.cli import main
from napari_seg_uncertainty.core.cohort import load_cohort
from napari_seg_uncertainty.core.io import read_image
from napari_seg_uncertainty.widgets.demo_window import run_gui_demo
from napari_seg_uncertainty.workflow.demo import (
    DATASETS,
    DEMO_COHORT_CASES,
    NUM_SSN_SAMPLES,
    SHOWN_CASE,
    STUDY_CANDIDATES,
    DemoTraining,
    load_demo_data,
    planned_outputs,
    run_headless_demo,
)
from napari_seg_uncertainty.workflow.demo.study import STUDY_METRICS


def independent_msvls(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """mSVLS in 2-D as the paper words it: per rater a 3x3 Gaussian (σ 1) with centre := sum of the others,
    normalised, applied to the one-hot map with replicate padding; then the mean over raters."""
    weights = np.array([[math.exp(-((i - 1) ** 2 + (j - 1) ** 2) / 2) for j in range(3)] for i in range(3)])
    weights[1, 1] = 0.0
    weights[1, 1] = weights.sum()
    weights /= weights.sum()
    out = np.zeros((num_classes, *raters.shape[1:]))
    for labels in raters:
        padded = np.pad(labels, 1, mode="edge")
        for i, j in itertools.product(range(3), repeat=2):
            window = padded[i : i + labels.shape[0], j : j + labels.shape[1]]
            for k in range(num_classes):
                out[k] += weights[i, j] * (window == k)
    return out / len(raters)


def iou_distance(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    ious = []
    for k in range(1, num_classes):
        union = np.logical_or(a == k, b == k).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a == k, b == k).sum() / union)
    return 1.0 - float(np.mean(ious))


def ece_against_raters(probs: np.ndarray, raters: np.ndarray, n_bins: int = 10) -> float:
    confidence = probs.max(axis=0).ravel().astype(np.float64)
    predicted = probs.argmax(axis=0).ravel()
    accuracy = np.mean([predicted == r.ravel() for r in raters], axis=0)
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    return float(
        sum(
            (index == b).sum()
            / confidence.size
            * abs(accuracy[index == b].mean() - confidence[index == b].mean())
            for b in range(n_bins)
            if (index == b).any()
        )
    )


@pytest.fixture(scope="module")
def headless_run(tmp_path_factory):
    """One run of the console script without a display: all four data sets, the whole workflow on phantom2d."""
    out = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_seg_uncertainty.cli",
            "demo",
            "--headless",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    return out, result


def test_headless_demo_console_script_writes_every_output(headless_run):
    out, result = headless_run
    assert result.returncode == 0, result.stderr
    for name in DATASETS:
        folder = out / name
        metrics = json.loads((folder / "metrics.json").read_text())
        _, raters = load_demo_data(name)
        expected = planned_outputs(raters, workflow=name == "phantom2d")
        assert sorted(metrics["files"]) == sorted(f"{name}/{rel}" for rel in expected)
        for rel in metrics["files"]:
            assert (out / rel).exists(), rel
        arr, meta = read_image(folder / "input" / "rater_1.nii.gz")
        np.testing.assert_array_equal(arr, raters.labels[0])
        assert meta.spacing == pytest.approx(raters.scale)
        # the CSV's Dice equals an independent overlap count
        with open(folder / "pairwise_dice.csv") as fh:
            rows = list(csv.DictReader(fh))
        row = next(
            r
            for r in rows
            if r["class"] == raters.class_names[1]
            and r["rater_a"] == raters.rater_names[0]
            and r["rater_b"] == raters.rater_names[1]
        )
        a, b = raters.labels[0] == 1, raters.labels[1] == 1
        assert float(row["dice"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-6)
    assert "mean pairwise Dice" in result.stdout
    assert "mSVLS U-Net" in result.stdout and "ECE" in result.stdout and "GED²" in result.stdout
    assert f"trained on a cohort of {DEMO_COHORT_CASES + 1} cases" in result.stdout
    assert "cases seen" in result.stdout  # the epoch lines of cohort training
    # the study's table, printed as written
    table = (out / "phantom2d" / "study" / "study.md").read_text().rstrip()
    assert all(f"      {line}".rstrip() in result.stdout.splitlines() for line in table.splitlines())
    assert "study: 4 candidates (one-hot, ls, msvls, ssn), one seed each" in result.stdout


def test_headless_study_compares_four_candidates_on_the_cohort_test_cases(headless_run):
    """The demo's study: four runs trained on the cohort's train cases, the table's means against the
    per-case rows of its evaluation, its test cases those of the cohort's split."""
    out, result = headless_run
    assert result.returncode == 0, result.stderr
    folder = out / "phantom2d"
    flow = json.loads((folder / "metrics.json").read_text())["workflow"]
    study, split = flow["study"], flow["cohort"]["split"]
    assert study["candidates"] == list(STUDY_CANDIDATES) and study["seconds"] > 0
    assert sorted(study["test_cases"]) == sorted(split["test"])
    for name, (head, loss, target) in STUDY_CANDIDATES.items():
        state = torch.load(folder / "study" / "runs" / name / "seed0" / "last.pt", map_location="cpu",
                           weights_only=True)
        assert (state["config"]["head"], state["config"]["loss"], state["config"]["target"]) == (head, loss, target)
        assert state["cohort"]["split"] == split
    with open(folder / "study" / "evaluation" / "cases.csv") as fh:
        cases = list(csv.DictReader(fh))
    with open(folder / "study" / "study.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["candidate"] for r in rows} == set(STUDY_CANDIDATES)
    for row in rows:
        class_name, metric = row["metric"].split(":")
        values = [float(c["value"]) for c in cases if c["candidate"] == f"{row['candidate']}/seed0"
                  and c["class"] == class_name and c["metric"] == metric]
        values = [v for v in values if not math.isnan(v)]
        assert int(row["n"]) == len(values) == len(split["test"])
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        assert float(row["low"]) <= float(row["mean"]) <= float(row["high"])
    assert {r["metric"] for r in rows} == set(STUDY_METRICS)
    assert {(r["candidate"], r["metric"]) for r in study["table"]} == {(r["candidate"], r["metric"]) for r in rows}


def test_headless_workflow_trains_on_a_cohort_and_holds_the_shown_case_out(headless_run):
    out, result = headless_run
    assert result.returncode == 0, result.stderr
    folder = out / "phantom2d"
    image, raters = load_demo_data("phantom2d")
    flow = json.loads((folder / "metrics.json").read_text())["workflow"]
    split = flow["cohort"]["split"]
    assert flow["cohort"]["cases"] == DEMO_COHORT_CASES + 1 and flow["cohort"]["shown_case"] == SHOWN_CASE
    assert json.loads((folder / "training" / "split.json").read_text()) == split
    ids = [i for name in ("train", "val", "test") for i in split[name]]
    assert len(ids) == len(set(ids)) == DEMO_COHORT_CASES + 1  # no case in two splits
    assert SHOWN_CASE in split["test"] and split["train"] and split["val"]
    # the manifest: the generated cases with their split column, the shown case's files as written
    cohort = load_cohort(folder / "cohort" / "cohort.yaml")
    assert cohort.manifest_split() == split and cohort.class_names == raters.class_names
    shown = cohort.load_case(SHOWN_CASE)
    np.testing.assert_array_equal(shown.raters, raters.labels)
    np.testing.assert_allclose(shown.image[0], image, atol=1e-6)
    for key in ("svls", "ssn"):
        state = torch.load(folder / "training" / key / "last.pt", map_location="cpu", weights_only=True)
        assert state["cohort"]["split"] == split  # trained on the train cases, validated on the val cases
        with open(folder / "training" / key / "history.csv") as fh:
            history = list(csv.DictReader(fh))
        assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in history)  # validated on held-out cases


def test_headless_workflow_numbers_match_independent_computations(headless_run):
    out, result = headless_run
    assert result.returncode == 0, result.stderr
    folder = out / "phantom2d"
    image, raters = load_demo_data("phantom2d")
    labels, num_classes = raters.labels, raters.num_classes
    flow = json.loads((folder / "metrics.json").read_text())["workflow"]

    # soft labels: mSVLS as the paper defines it, with the raters' spacing kept
    msvls, meta = read_image(folder / "soft_labels" / "msvls.nii.gz")
    np.testing.assert_allclose(msvls, independent_msvls(labels, num_classes), atol=1e-5)
    assert meta.spacing == pytest.approx(raters.scale)
    mean_map, _ = read_image(folder / "soft_labels" / "rater_mean.nii.gz")
    np.testing.assert_allclose(mean_map[2], (labels == 2).mean(axis=0), atol=1e-6)

    # training: two checkpoints that load with weights_only and carry their settings
    settings = DemoTraining()
    for key, head, target in (("svls", "softmax", "msvls"), ("ssn", "ssn", "random_rater")):
        state = torch.load(folder / "training" / key / "last.pt", map_location="cpu", weights_only=True)
        assert state["config"]["head"] == head and state["config"]["target"] == target
        assert state["class_names"] == raters.class_names
        with open(folder / "training" / key / "history.csv") as fh:
            assert [int(float(r["epoch"])) for r in csv.DictReader(fh)] == list(range(1, settings.epochs + 1))
        probs, _ = read_image(folder / "predictions" / f"{key}_probabilities.nii.gz")
        predicted, _ = read_image(folder / "predictions" / f"{key}_labels.nii.gz")
        entropy, _ = read_image(folder / "predictions" / f"{key}_entropy.nii.gz")
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-4)
        np.testing.assert_array_equal(predicted, probs.argmax(axis=0))
        p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
        np.testing.assert_allclose(
            entropy, -(probs * np.log(p)).sum(axis=0) / math.log(num_classes), atol=1e-4
        )

    # calibration: ECE against the raters, from the written probabilities
    with open(folder / "calibration" / "metrics.csv") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"mSVLS U-Net", "SSN", "mSVLS U-Net temperature-scaled", "SSN temperature-scaled"}
    for key, name in (("svls", "mSVLS U-Net"), ("ssn", "SSN")):
        probs, _ = read_image(folder / "predictions" / f"{key}_probabilities.nii.gz")
        assert float(rows[name]["ece"]) == pytest.approx(ece_against_raters(probs, labels), abs=1e-6)
        assert flow["calibration"][name]["ece"] == pytest.approx(float(rows[name]["ece"]))
        assert flow["calibration"][name]["temperature"] > 0

    # SSN: GED² of the written samples; temperature 0 gives the mean prediction in every sample
    samples, _ = read_image(folder / "ssn" / "samples.tif")
    assert samples.shape == (NUM_SSN_SAMPLES, *image.shape)
    cross = np.mean([iou_distance(s, y, num_classes) for s in samples for y in labels])
    within_s = np.mean([iou_distance(s, t, num_classes) for s in samples for t in samples])
    within_y = np.mean([iou_distance(y, z, num_classes) for y in labels for z in labels])
    assert flow["ssn"]["settings"]["samples"]["ged2"] == pytest.approx(
        2 * cross - within_s - within_y, abs=1e-9
    )
    distribution = np.load(folder / "ssn" / "distribution.npz")
    mean_only, _ = read_image(folder / "ssn" / "samples_T0.tif")
    for sample in mean_only:
        np.testing.assert_array_equal(sample, np.argmax(distribution["mean"], axis=0))
    assert flow["ssn"]["settings"]["samples_T0"]["sample_diversity"] == 0.0

    # uncertainty: Dice of the mSVLS U-Net against rater 1, counted here
    svls_labels, _ = read_image(folder / "predictions" / "svls_labels.nii.gz")
    with open(folder / "uncertainty" / "dice_vs_raters.csv") as fh:
        dice_rows = list(csv.DictReader(fh))
    row = next(
        r
        for r in dice_rows
        if r["model"] == "mSVLS U-Net" and r["reference"] == "rater 1" and r["class_index"] == "1"
    )
    a, b = svls_labels == 1, labels[0] == 1
    assert float(row["dice"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-5)
    with open(folder / "uncertainty" / "review.csv") as fh:
        entropies = [float(r["mean_entropy"]) for r in csv.DictReader(fh)]
    assert entropies == sorted(entropies, reverse=True) and entropies


def test_headless_workflow_refuses_to_overwrite_before_computing(headless_run, capsys):
    out, result = headless_run
    assert result.returncode == 0, result.stderr
    checkpoint = out / "phantom2d" / "training" / "ssn" / "last.pt"
    before = checkpoint.read_bytes()
    assert main(["demo", "--headless", "--out", str(out), "--data", "phantom2d"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


def test_headless_demo_never_overwrites(tmp_path, capsys):
    args = ["demo", "--headless", "--out", str(tmp_path), "--data", "phantom2d", "--no-workflow"]
    assert main(args) == 0
    assert not (tmp_path / "phantom2d" / "training").exists()
    before = (tmp_path / "phantom2d" / "input" / "rater_1.nii.gz").read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "phantom2d" / "input" / "rater_1.nii.gz").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_headless_needs_out(capsys):
    assert main(["demo", "--headless"]) == 2
    assert "--out" in capsys.readouterr().err


def test_headless_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown demo data"):
        run_headless_demo(tmp_path, datasets=["phantom9d"])
    with pytest.raises(TypeError, match="datasets must be a list"):
        run_headless_demo(tmp_path, datasets="phantom2d")
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        run_headless_demo(tmp_path, overwrite="yes")
    with pytest.raises(TypeError, match="training must be a DemoTraining"):
        run_headless_demo(tmp_path, datasets=["mr3d"], training={"epochs": 1})
    with pytest.raises(ValueError, match="model must be one of"):
        DemoTraining().config("unet", output_dir=None)
    with pytest.raises(ValueError, match="demo data 'x' is unknown"):
        load_demo_data("x")


def test_gui_demo_rejects_bad_arguments_before_opening_a_window(make_napari_viewer):
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match="demo data 'phantom9d' is unknown"):
        run_gui_demo("phantom9d", viewer=viewer)
    with pytest.raises(TypeError, match="wait must be True, False or None"):
        run_gui_demo("phantom2d", viewer=viewer, wait="yes")
    assert len(viewer.layers) == 0 and not viewer.window.dock_widgets


def test_gui_demo_docks_widgets_with_raters_loaded(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    guide = run_gui_demo("phantom2d", viewer=viewer)
    assert guide.viewer is viewer
    load = guide.widgets["load_raters"]
    # Load raters adds its layers one per event-loop turn (the window stays responsive)
    qtbot.waitUntil(lambda: not load.busy and "rater entropy" in viewer.layers, timeout=30_000)
    for name in (
        "Guide",
        "Load raters",
        "Soft labels",
        "Train",
        "SSN samples",
        "Calibration",
        "Uncertainty maps",
        "Cohort review",
    ):
        assert name in viewer.window.dock_widgets
    assert "rater entropy" in viewer.layers
    assert sum(layer._type_string == "labels" for layer in viewer.layers) == 4
    _, raters = load_demo_data("phantom2d")
    np.testing.assert_allclose(load.statistics.entropy, raters.entropy_map())


def test_guide_runs_a_step_from_its_button_and_reports_missing_prerequisites(
    make_napari_viewer, qtbot, monkeypatch
):
    from napari_seg_uncertainty.widgets import _guide_queue

    errors: list[str] = []
    monkeypatch.setattr(_guide_queue, "show_error", errors.append)
    viewer = make_napari_viewer()
    guide = run_gui_demo("ct2d", viewer=viewer)
    assert guide._dataset.value == "ct2d"
    guide._buttons["ssn_samples"].native.click()  # no SSN trained yet
    qtbot.waitUntil(lambda: not guide.busy, timeout=10_000)
    assert errors and "Train an SSN" in errors[0]
    assert guide._status.value.startswith("Stopped")
    guide._buttons["soft_labels"].native.click()
    qtbot.waitUntil(lambda: not guide.busy, timeout=60_000)
    assert guide._status.value.startswith("Done")
    _, raters = load_demo_data("ct2d")
    expected = independent_msvls(raters.labels, raters.num_classes)
    np.testing.assert_allclose(np.asarray(viewer.layers["soft A: body"].data), expected[1], atol=1e-5)
    assert viewer.layers["soft A: body"].visible and not viewer.layers["rater entropy"].visible


def test_guide_opens_from_the_plugins_menu_and_widgets_sit_in_the_layers_menu(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    _, guide = viewer.window.add_plugin_dock_widget("napari-seg-uncertainty", "Guided workflow (demo)")
    guide._load.native.click()  # as a user would: the demo data and the seven widgets arrive
    for name in ("Load raters", "Soft labels", "Train", "SSN samples", "Calibration", "Uncertainty maps",
                 "Cohort review"):
        assert name in viewer.window.dock_widgets
    assert guide.rater_layers() == ["rater 1", "rater 2", "rater 3", "rater 4"]

    def titles(menu_id: str) -> list[str]:
        return [
            getattr(item, "command", item).title
            for item in get_app_model().menus.get_menu(menu_id)
            if hasattr(item, "command") or hasattr(item, "title")
        ]

    assert "Segmentation uncertainty" in titles("napari/layers/segment")
    workflow = titles("napari-seg-uncertainty.workflow")
    for widget in (
        "Guided workflow (demo)",
        "Load raters",
        "Soft labels",
        "Train",
        "SSN samples",
        "Calibration",
        "Uncertainty maps",
    ):
        assert any(t.startswith(widget) for t in workflow), (widget, workflow)
    assert any(t.startswith("Calibration") for t in titles("napari/layers/measure"))


def test_guide_rejects_bad_settings(make_napari_viewer):
    from napari_seg_uncertainty.widgets.guide import WorkflowGuide

    viewer = make_napari_viewer()
    with pytest.raises(TypeError, match="training must be a DemoTraining"):
        WorkflowGuide(viewer, training={"epochs": 2})
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        WorkflowGuide(viewer, seed=-1)
    guide = WorkflowGuide(viewer)
    with pytest.raises(ValueError, match="key must be one of"):
        guide.prepare_step("train_unet")
    with pytest.raises(ValueError, match="dataset must be one of"):
        guide.load_demo_data("phantom9d")
