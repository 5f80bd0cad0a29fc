"""The "Train" dock on a cohort, in a real viewer: load a generated cohort, split it, train, predict a test case."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest

from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import train as train_module
from napari_seg_uncertainty.widgets._train_cohort import (
    prediction_case,
    scan_cohort,
    split_cases,
    split_summary,
    table_rows,
)
from napari_seg_uncertainty.widgets.train import CASE_IMAGE_LAYER, TrainWidget

WAIT_MS = 120_000

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(train_module, "show_error", messages.append)
    return messages


@pytest.fixture
def cohort_source(tmp_path):
    """A 2-D manifest cohort of 6 cases with a split column; one training case broken (a rater file gone)."""
    source = make_phantom_cohort(6, tmp_path / "cohort", ndim=2, layout="manifest", num_raters=2,
                                 shape=(32, 32), seed=0)
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    broken = next(row for row in rows if row["split"] == "train")
    missing = Path(source).parent / broken["raters"].split(";")[0]
    missing.unlink()
    good = [row for row in rows if row is not broken]
    return source, broken["case_id"], {row["case_id"]: row["split"] for row in good}


def make_widget(viewer, tmp_path, *, epochs=2, steps=2):
    train_module.preload_training_modules()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._model_size.value = "tiny (8-16-32)"
    widget._epochs.value = epochs
    widget._steps.value = steps
    widget._batch.value = 2
    widget._patch.value = "16, 16"
    widget._device.value = "cpu"
    widget._workers.value = 0
    widget._output.value = str(tmp_path / "runs")
    return widget


def load(widget, qtbot, source):
    """Choose cohort mode, type the source and click Load; wait for the cases (or the failure)."""
    widget._source.value = "cohort"
    widget._cohort_path.value = str(source)
    widget._load.native.click()
    assert widget.state == "loading" and not widget._start.enabled
    assert "Loading" in widget._cohort_message.value
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)


def table(widget):
    return widget.case_rows


def test_modes_show_their_own_settings(make_napari_viewer, tmp_path):
    widget = make_widget(make_napari_viewer(), tmp_path)
    assert widget.data_source == "layers"
    assert not widget._one_case_note.native.isHidden()
    assert "validation on the last strip of the image" in widget._one_case_note.value
    assert "use a cohort for held-out cases" in widget._one_case_note.value
    assert widget._cohort_row.native.isHidden() and not widget._image.native.isHidden()
    widget._source.value = "cohort"
    assert widget._one_case_note.native.isHidden() and widget._image.native.isHidden()
    assert not widget._cohort_row.native.isHidden() and not widget._split_mode.native.isHidden()
    widget._split_mode.value = "kfold"
    assert not widget._folds.native.isHidden() and widget._val.native.isHidden()
    widget._folds.value = 3
    assert widget._fold.max == 2
    # a thousand cases fill the table at once (magicgui's Table took 37 s)
    rows = [[f"case_{i:04d}", "train", "16×40×40", "2.5×0.875×0.875", 1, 3] for i in range(1000)]
    started = time.perf_counter()
    widget._cases_table.set_rows(rows)
    assert time.perf_counter() - started < 0.25
    assert widget._cases_table.model.rowCount() == 1000 and widget._cases_table.native.height() <= 250


def test_cohort_table_lists_cases_splits_and_problems(make_napari_viewer, qtbot, tmp_path, errors,
                                                       cohort_source):
    source, broken, manifest_split = cohort_source
    widget = make_widget(make_napari_viewer(), tmp_path)
    load(widget, qtbot, source)
    assert errors == []
    rows = table(widget)
    assert [row["case"] for row in rows] == sorted(manifest_split)  # the good cases, in order
    assert {row["case"]: row["split"] for row in rows} == manifest_split  # the manifest's split column
    assert widget._split_mode.value == "manifest"
    assert all(row["shape"] == "32×32" and row["raters"] == 2 and row["ch."] == 1 for row in rows)
    cohort = widget.cohort
    assert rows[0]["spacing (mm)"] == "×".join(f"{s:.3g}" for s in cohort[rows[0]["case"]].spacing)
    # the broken case is listed, red, with its file
    assert broken in widget._problems.value and "Skipped 1 case" in widget._problems.value
    assert not widget._problems.native.isHidden() and "color" in widget._problems.native.styleSheet()
    counts = {name: list(manifest_split.values()).count(name) for name in ("train", "val", "test")}
    assert widget._split_sizes.value == "Split: " + split_summary({k: [0] * n for k, n in counts.items()})

    # fractions: rows follow the seed; no case in two splits
    widget._split_mode.value = "fractions"
    widget._val.value, widget._test.value = 0.2, 0.2
    widget._seed.value = 3
    expected = split_cases(load_cohort(source, on_error="skip"), "fractions", val=0.2, test=0.2, seed=3)
    assert widget.split == expected
    assert {row["case"]: row["split"] for row in table(widget)} == {
        case: name for name, cases in expected.items() for case in cases
    }
    # k-fold: the validation fold moves with "Fold"
    widget._split_mode.value = "kfold"
    widget._test.value = 0.0
    widget._folds.value = 2
    folds = []
    for fold in (0, 1):
        widget._fold.value = fold
        folds.append(set(widget.split["val"]))
        assert len({row["case"] for row in table(widget)}) == len(rows)
    assert folds[0].isdisjoint(folds[1]) and folds[0] | folds[1] == set(manifest_split)
    # a split that leaves no training case: said in red in the dock; Start refuses with a notification
    widget._split_mode.value = "fractions"
    widget._val.value, widget._test.value = 0.6, 0.6
    assert widget.split is None and "val + test must be below 1" in widget._split_sizes.value
    assert "color" in widget._split_sizes.native.styleSheet()
    assert widget.start() is None and "val + test must be below 1" in errors[-1] and widget.state == "idle"


def test_training_on_a_cohort_predicts_a_held_out_case(make_napari_viewer, qtbot, tmp_path, errors,
                                                        cohort_source, record_property, monkeypatch):
    from qtpy.QtCore import QTimer

    # every record shown (this short run ends within one UI interval): the statuses say cases seen, and
    # the event loop is measured with the dock's heaviest update rate
    monkeypatch.setattr(train_module, "UI_INTERVAL_S", 0.0)

    source, _, manifest_split = cohort_source
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tmp_path)
    load(widget, qtbot, source)
    test_case = next(case for case, split in sorted(manifest_split.items()) if split == "test")

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    qtbot.wait(50)
    clicked = time.perf_counter()
    statuses: list[str] = []
    widget._start.native.click()
    assert widget.state == "training"
    done_at: list[float] = []
    widget._describe = lambda r: statuses.append(TrainWidget._describe(r)) or statuses[-1]  # the statuses shown
    widget.worker.yielded.connect(lambda r: done_at.append(time.perf_counter()) if r.kind == "done" else None)
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    timer.stop()
    assert errors == []
    gaps = np.diff(np.array([t for t in ticks if t >= clicked]))
    starts = np.array([t for t in ticks if t >= clicked])[:-1]
    training = gaps[starts < done_at[0]]
    stall_training = 1000 * float(training.max())
    stall_overall = 1000 * float(gaps.max())
    record_property("max_event_loop_stall_cohort_training_ms", round(stall_training, 1))
    record_property("max_event_loop_stall_cohort_with_result_layers_ms", round(stall_overall, 1))
    print(f"event loop during cohort training: longest gap {stall_training:.1f} ms; with the prediction "
          f"and its layers: {stall_overall:.1f} ms; top gaps {sorted(1000 * gaps)[-5:]}")
    assert stall_training < 100  # loading, the header scan and torch all run in workers

    kinds = [r.kind for r in widget.records]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 4
    steps = [r for r in widget.records if r.kind == "step"]
    assert all(r.cases_seen is not None and r.cases_seen > 0 for r in steps)
    described = TrainWidget._describe(steps[-1])
    seen = steps[-1].cases_seen
    assert f"{seen:,} case{'' if seen == 1 else 's'} seen" in described and "patches/s" in described
    assert any(" seen" in text for text in statuses), statuses
    # the curves keep working
    np.testing.assert_allclose(widget._lines["epoch"].get_data()[0], [1, 2])

    state = load_checkpoint(widget.checkpoint_path)
    assert state["cohort"]["split"]["test"] == [test_case]
    # the prediction is of the first test case, on that case's grid
    case = widget.cohort[test_case]
    assert widget.case_prediction.case_id == test_case
    for name in ("prediction labels", "prediction entropy", CASE_IMAGE_LAYER):
        layer = viewer.layers[name]
        np.testing.assert_allclose(layer.scale, case.spacing)
        np.testing.assert_allclose(layer.translate, case.origin)
        assert layer.data.shape == case.shape
        assert layer.metadata["nsu_case"] == test_case
    probabilities = viewer.layers["prediction probabilities"]
    np.testing.assert_allclose(probabilities.scale[1:], case.spacing)
    np.testing.assert_allclose(probabilities.translate[1:], case.origin)
    assert not np.allclose(case.origin, 0)  # the phantom's origins are not zero: the translate was checked
    assert f"held-out case {test_case!r}" in widget._status.value


def test_cancelling_a_cohort_run_keeps_a_checkpoint_and_predicts_the_test_case(
    make_napari_viewer, qtbot, tmp_path, errors, cohort_source
):
    source, _, manifest_split = cohort_source
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tmp_path, epochs=3, steps=500)
    load(widget, qtbot, source)
    widget.start()
    qtbot.waitUntil(lambda: sum(r.kind == "step" for r in widget.records) >= 2, timeout=WAIT_MS)
    widget._cancel.native.click()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert errors == [] and widget.records[-1].kind == "cancelled"
    assert load_checkpoint(widget.checkpoint_path)["reason"] == "cancelled"
    test_case = next(case for case, split in sorted(manifest_split.items()) if split == "test")
    assert viewer.layers["prediction labels"].metadata["nsu_case"] == test_case


def test_bad_cohort_source_is_a_notification_not_a_traceback(make_napari_viewer, qtbot, tmp_path, errors):
    widget = make_widget(make_napari_viewer(), tmp_path)
    load(widget, qtbot, tmp_path / "no such folder")
    assert len(errors) == 1 and "does not exist" in errors[0]
    assert "does not exist" in widget._cohort_message.value and widget.cohort is None
    assert widget._start.enabled  # the dock stays usable
    empty = tmp_path / "empty"
    empty.mkdir()
    load(widget, qtbot, empty)
    assert len(errors) == 2 and errors[1].startswith("Load cohort failed")
    assert widget.state == "idle" and widget.cohort is None
    assert widget.start() is None and "no cohort loaded" in errors[-1]
    assert "no cohort loaded" in widget._status.value and widget.state == "idle"


def test_scan_cohort_reads_folders_archives_and_manifests(tmp_path):
    for layout in ("generic", "npz", "manifest"):
        source = make_phantom_cohort(3, tmp_path / layout, ndim=2, layout=layout, num_raters=2, shape=(16, 16))
        scan = scan_cohort(source)
        assert len(scan.cohort) == 3 and scan.problems == () and scan.source.endswith(Path(source).name)
        assert scan.has_manifest_split == (layout == "manifest")
        split = split_cases(scan.cohort, "fractions", val=0.34, test=0.0, seed=0)
        rows = table_rows(scan.cohort, split)
        assert [row[0] for row in rows] == scan.cohort.case_ids
        assert sorted(row[1] for row in rows) == ["train", "train", "val"]
        assert prediction_case(split) == split["val"][0]
    text = tmp_path / "cases.txt"
    text.write_text("case_000\n")
    with pytest.raises(ValueError, match=r"is a \.txt file"):
        scan_cohort(text)
    with pytest.raises(ValueError, match="source is empty"):
        scan_cohort("  ")
    with pytest.raises(TypeError, match="source must be a path"):
        scan_cohort(3)
    with pytest.raises(ValueError, match="fold must be below folds"):
        split_cases(scan.cohort, "kfold", folds=2, fold=2)
    with pytest.raises(ValueError, match="mode must be one of"):
        split_cases(scan.cohort, "random")


# ------------------------------------------------------------------------------- QA findings (cohort mode)
def test_raters_loaded_after_train_opened_are_all_selected(make_napari_viewer, qtbot, tmp_path, errors):
    """Load raters run after Train opened (or while Train was on a cohort): every rater of the case selected."""
    from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget

    root = Path(make_phantom_cohort(2, tmp_path / "cases", ndim=2, layout="generic", num_raters=3,
                                    shape=(32, 32), seed=1))
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tmp_path)
    loader = LoadRatersWidget(viewer)

    def load_case(name):
        loader.statistics = None
        loader.load_from_path(str(root / name))
        qtbot.waitUntil(lambda: loader.statistics is not None and not loader.busy, timeout=WAIT_MS)

    def raters_of(case):
        return [layer for layer in viewer.layers if "rater" in layer.metadata
                and layer.metadata.get("nsu_case") == case]

    load_case("case_000")
    assert len(raters_of("case_000")) == 3
    assert widget._raters.value == raters_of("case_000")
    # Train on a cohort meanwhile: the next case's raters are all selected once back on the open layers
    widget._source.value = "cohort"
    load_case("case_001")
    widget._source.value = "layers"
    assert len(raters_of("case_001")) == 3
    assert widget._raters.value == raters_of("case_001")
    assert widget._image.value.metadata.get("nsu_case") == "case_001"
    # a rater the user left out stays out when an unrelated layer comes or goes
    chosen = raters_of("case_001")[:2]
    widget._raters.value = chosen
    extra = viewer.add_labels(np.zeros((32, 32), np.uint8), name="my drawing")
    assert widget._raters.value == chosen
    viewer.layers.remove(extra)
    assert widget._raters.value == chosen
    assert errors == []


def test_failed_load_forgets_the_previous_cohort(make_napari_viewer, qtbot, tmp_path, errors, cohort_source):
    source, _, _ = cohort_source
    widget = make_widget(make_napari_viewer(), tmp_path)
    load(widget, qtbot, source)
    assert widget.cohort is not None and widget.case_rows and widget.split is not None
    load(widget, qtbot, tmp_path / "no such folder")
    assert widget.cohort is None and widget.cohort_scan is None and widget.split is None
    assert widget.case_rows == [] and widget._split_sizes.value == "" and widget._problems.value == ""
    assert widget._cases_table.native.isHidden() and widget._split_sizes.native.isHidden()
    assert "does not exist" in widget._cohort_message.value  # the error stays in view
    assert not widget._cohort_message.native.isHidden()
    assert widget.start() is None and "no cohort loaded" in errors[-1] and widget.state == "idle"
    assert "does not exist" in widget._cohort_message.value


def test_nothing_held_out_is_said_and_the_end_names_a_training_case(make_napari_viewer, qtbot, tmp_path, errors,
                                                                     cohort_source):
    source, _, _ = cohort_source
    viewer = make_napari_viewer()
    widget = make_widget(viewer, tmp_path, epochs=1, steps=1)
    load(widget, qtbot, source)
    warning = widget.cohort_controls.holdout_warning
    assert warning.native.isHidden()  # the manifest holds val and test cases
    widget._split_mode.value = "fractions"
    widget._val.value, widget._test.value = 0.0, 0.0
    assert widget.split["val"] == [] and widget.split["test"] == []
    assert not warning.native.isHidden() and "nothing is held out" in warning.value.lower()
    assert "#f0a030" in warning.native.styleSheet()  # orange
    widget._val.value = 0.2
    assert warning.native.isHidden()
    widget._val.value = 0.0
    assert not warning.native.isHidden()
    widget.start()
    qtbot.waitUntil(lambda: widget.state == "idle", timeout=WAIT_MS)
    assert errors == []
    shown = widget.case_prediction.case_id
    assert shown in widget.split["train"]
    assert "held-out" not in widget._status.value
    assert f"training case {shown!r}" in widget._status.value and "nothing held out" in widget._status.value


def test_invalid_split_message_wraps_and_table_shows_no_stale_split(make_napari_viewer, qtbot, tmp_path, errors,
                                                                    cohort_source):
    source, _, _ = cohort_source
    viewer = make_napari_viewer()
    viewer.window._qt_window.resize(1280, 800)
    widget = make_widget(viewer, tmp_path)
    viewer.window._qt_window.show()
    load(widget, qtbot, source)
    assert {row["split"] for row in widget.case_rows} <= {"train", "val", "test"}
    widget._split_mode.value = "fractions"
    widget._val.value, widget._test.value = 0.6, 0.6
    label = widget._split_sizes.native
    assert widget.split is None and "val + test must be below 1" in widget._split_sizes.value
    assert label.wordWrap()
    assert {row["split"] for row in widget.case_rows} == {"—"}
    qtbot.wait(50)
    # the whole message shows: the label is as tall as its wrapped text at its width
    assert label.width() > 0 and label.height() >= label.heightForWidth(label.width())
    assert label.width() <= widget.settings.root_native_widget.viewport().width()
    widget._val.value = 0.2
    assert widget.split is not None and "—" not in {row["split"] for row in widget.case_rows}


def test_progress_text_counts_cases_in_the_singular_and_plural():
    from types import SimpleNamespace

    def record(cases):
        return SimpleNamespace(kind="step", epoch=1, epochs=2, step=1, steps_per_epoch=5, loss=0.5,
                               cases_seen=cases, throughput=None, data_wait=None)

    assert "(1 case seen)" in TrainWidget._describe(record(1))
    assert "(2 cases seen)" in TrainWidget._describe(record(2))
    assert "(1,200 cases seen)" in TrainWidget._describe(record(1200))


def test_fast_records_update_the_dock_a_few_times_a_second(make_napari_viewer, qtbot, tmp_path):
    """One-step epochs of a tiny model arrive faster than the eye: the main thread shows at most ~10 a second."""
    from types import SimpleNamespace

    widget = make_widget(make_napari_viewer(), tmp_path, epochs=200, steps=1)
    widget._begin(widget.build_config(str(tmp_path / "runs")))
    updates: list[float] = []
    draw = widget._update_plot
    widget._update_plot = lambda **kw: (updates.append(time.perf_counter()), draw(**kw))

    def record(kind, epoch, **extra):
        fields = dict(kind=kind, epoch=epoch, epochs=200, step=1, steps_per_epoch=1, global_step=epoch,
                      loss=0.5, val_nll=0.4, val_dice=0.7, checkpoint=None, throughput=100.0, cases_seen=epoch,
                      data_wait=0.0)
        return SimpleNamespace(**{**fields, **extra})

    started = time.perf_counter()
    for epoch in range(1, 101):  # 200 records in ~0.5 s
        widget._on_record(record("step", epoch))
        widget._on_record(record("epoch", epoch, checkpoint=str(tmp_path / "last.pt")))
        qtbot.wait(5)
    elapsed = time.perf_counter() - started
    assert len(widget.records) == 200
    assert len(updates) <= 10 * elapsed + 2, (len(updates), elapsed)
    # the latest record held back is shown once the interval has passed
    qtbot.waitUntil(lambda: widget._status.value.startswith("Epoch 100/200: loss"), timeout=2000)
    assert widget._progress.value == 100 and widget._checkpoint.value == str(tmp_path / "last.pt")
    # the run's last record shows at once
    widget._on_record(record("done", 100, message="Done.", checkpoint=str(tmp_path / "last.pt")))
    assert widget._status.value == "Done."
    widget._pbar.close()
    widget._pbar = None
    widget._set_state("idle")
