"""The Guide's last step in a real viewer: a small study on the demo cohort, opened in *Cohort review*."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from napari_seg_uncertainty.core.cohort import load_cohort
from napari_seg_uncertainty.widgets import _guide_queue
from napari_seg_uncertainty.widgets.guide import STEPS, WorkflowGuide
from napari_seg_uncertainty.workflow.demo import DEMO_COHORT_CASES, SHOWN_CASE, STUDY_CANDIDATES
from napari_seg_uncertainty.workflow.demo.study import DemoStudyTraining

WAIT_MS = 600_000
#: Four runs of two steps each: the step's machinery, in seconds.
TINY = DemoStudyTraining(epochs=1, steps_per_epoch=2, batch_size=4, channels=(4, 8), ssn_samples=2,
                         predict_samples=2, num_resamples=200)


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_guide_queue, "show_error", messages.append)
    return messages


def test_the_last_step_runs_a_study_and_opens_its_first_case_in_cohort_review(
    make_napari_viewer, qtbot, errors, tmp_path
):
    viewer = make_napari_viewer()
    guide = WorkflowGuide(viewer, study_training=TINY)
    guide.load_demo_data("phantom2d")
    guide.run_root = tmp_path
    assert [step.key for step in STEPS][-1] == "cohort" and "Cohort review" in viewer.window.dock_widgets
    guide._buttons["cohort"].native.click()
    qtbot.waitUntil(lambda: not guide.busy, timeout=WAIT_MS)
    assert guide._status.value == (
        f"Done: step {len(STEPS)} of {len(STEPS)}, four candidates trained and compared on the cohort's test "
        "cases, opened in Cohort review."
    ), guide._status.value
    assert errors == []
    # the study's progress came from its worker, line by line (each shown on the status line)
    log = guide.study_log
    assert log[0].startswith("[cohort] writing a cohort") and log[-1].startswith("[table] wrote the study table")
    assert any(line.startswith("[train] ssn/seed0: epoch 1/1") for line in log)
    assert sum(line.startswith("[evaluate]") for line in log) == len(STUDY_CANDIDATES) * 3

    study = guide.study
    folder = tmp_path / "cohort-study" / "study"
    assert study.out_dir == str(folder) and study.trained == tuple(f"{c}/seed0" for c in STUDY_CANDIDATES)
    assert study.table.candidates == tuple(STUDY_CANDIDATES)
    # the cohort: the generated cases and the open demo case, compared on the manifest's test cases
    cohort = load_cohort(tmp_path / "cohort-study" / "cohort" / "cohort.yaml")
    assert len(cohort) == DEMO_COHORT_CASES + 1
    assert sorted(study.table.case_ids) == sorted(cohort.manifest_split()["test"])
    assert SHOWN_CASE in study.table.case_ids

    # the table's means are the means of the per-case rows the evaluation wrote
    with open(folder / "evaluation" / "cases.csv") as handle:
        cases = list(csv.DictReader(handle))
    for i, candidate in enumerate(study.table.candidates):
        for j, key in enumerate(study.table.metrics):
            class_name, metric = key.split(":")
            values = [float(r["value"]) for r in cases if r["candidate"] == f"{candidate}/seed0"
                      and r["class"] == class_name and r["metric"] == metric]
            values = [v for v in values if not math.isnan(v)]
            if values:
                assert study.table.mean[i, j] == pytest.approx(np.mean(values), abs=1e-9)

    # Cohort review opened the study and the first case of its review queue, in place of the demo layers
    review = guide.widgets["cohort_review"]
    assert review.session is not None and review.case is not None
    assert review.case_id == review.table.case_order()[0]
    shown = {layer.name for layer in viewer.layers if layer.visible}
    assert shown == {layer.name for layer in review.layers}
    assert "image" in viewer.layers and not viewer.layers["image"].visible
