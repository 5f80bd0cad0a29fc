"""The Qt-free cohort helpers the Train dock runs: preview_cohort, training_job on a cohort, progress_text."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.cohort import make_phantom_cohort
from napari_seg_uncertainty.core.io import write_image
from napari_seg_uncertainty.workflow.training import (
    CohortPreview,
    TrainingFailure,
    advice_for,
    preview_cohort,
    progress_text,
    split_counts,
    training_job,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cohort_folder(tmp_path):
    source = make_phantom_cohort(5, tmp_path / "cohort", ndim=2, num_raters=2, shape=(24, 24), seed=2)
    bad = tmp_path / "cohort" / "zz_bad"
    bad.mkdir()
    write_image(bad / "image.nii.gz", np.zeros((24, 24), np.float32))
    write_image(bad / "rater_1.nii.gz", np.zeros((20, 24), np.uint8))  # another grid
    return source


def test_preview_lists_good_and_skipped_cases_with_the_split(cohort_folder):
    preview = preview_cohort(cohort_folder, split={"val": 0.2, "test": 0.2}, seed=0)
    assert isinstance(preview, CohortPreview) and preview.ok and preview.error is None
    assert len(preview.cohort) == 5 and [p.case_id for p in preview.problems] == ["zz_bad"]
    assert preview.split == {k: list(v) for k, v in preview.cohort.split(val=0.2, test=0.2, seed=0).items()}
    good = [r for r in preview.rows if not r["problem"]]
    assert [r["case_id"] for r in good] == preview.cohort.case_ids
    assert all(r["split"] in ("train", "val", "test") for r in good)
    assert {r["case_id"]: r["split"] for r in good}["case_000"] in preview.split
    bad = preview.rows[-1]
    assert bad["case_id"] == "zz_bad" and bad["split"] == "skipped" and "rater_1" in bad["problem"]
    assert "5 cases (train 3, val 1, test 1); 1 skipped" == preview.summary


def test_preview_reports_instead_of_raising(tmp_path, cohort_folder):
    missing = preview_cohort(tmp_path / "nowhere")
    assert not missing.ok and missing.cohort is None and missing.error and missing.rows == []
    assert missing.summary.startswith("No cohort:")
    bad_split = preview_cohort(cohort_folder, split="manifest")  # a folder has no split column
    assert not bad_split.ok and bad_split.cohort is not None and "split" in bad_split.error
    assert all(r["split"] in ("", "skipped") for r in bad_split.rows)
    with pytest.raises(TypeError, match="source must be"):
        preview_cohort(3)
    with pytest.raises((TypeError, ValueError), match="seed"):
        preview_cohort(cohort_folder, seed=-1)


def test_training_job_trains_on_a_cohort_and_turns_failures_into_records(tmp_path, cohort_folder):
    from napari_seg_uncertainty.core.training import TrainConfig

    preview = preview_cohort(cohort_folder, split={"val": 0.2, "test": 0.2})
    config = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), num_res_units=0, epochs=1,
                         steps_per_epoch=2, batch_size=2, patch_size=(16, 16), num_workers=0, device="cpu",
                         output_dir=str(tmp_path / "run"))
    gen = training_job(config, preview.cohort, split=preview.split)
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert not any(isinstance(r, TrainingFailure) for r in records)
    epoch = next(r for r in records if r.kind == "epoch")
    assert epoch.cases_seen is not None and "cases seen" in progress_text(epoch)
    assert result.checkpoint and records[-1].kind == "done"
    # a split naming an unknown case, and an existing run: failure records with advice, never a raise
    unknown = list(training_job(config, preview.cohort, split={"train": ["nope"], "val": [], "test": []}))
    assert isinstance(unknown[-1], TrainingFailure) and "nope" in unknown[-1].message
    again = list(training_job(config, preview.cohort, split=preview.split))
    assert isinstance(again[-1], TrainingFailure) and isinstance(again[-1].exception, FileExistsError)
    assert "earlier run" in again[-1].advice


def test_progress_text_split_counts_and_advice():
    from napari_seg_uncertainty.core.training import TrainProgress

    record = TrainProgress(kind="epoch", epoch=1, epochs=2, step=5, steps_per_epoch=5, global_step=5,
                           total_steps=10, loss=0.5, throughput=12.34, cases_seen=10, data_wait=0.25)
    assert progress_text(record) == "epoch 1/2  step 5/10  loss 0.5000  cases seen 10  12.3 patches/s  data wait 25%"
    single = TrainProgress(kind="epoch", epoch=1, epochs=2, step=5, steps_per_epoch=5, global_step=5,
                           total_steps=10, loss=0.5)
    assert "cases seen" not in progress_text(single)
    assert split_counts(None) == "" and split_counts({"train": ["a"]}) == "train 1, val 0, test 0"
    assert "missing" in advice_for(FileNotFoundError("x")) and "earlier run" in advice_for(FileExistsError("x"))
