"""The Cohort review dock in a real viewer: an evaluation folder of two tiny models (a softmax U-Net and an
SSN) on a generated 2-D cohort whose cases have their own spacing and non-zero origins."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
from napari_seg_uncertainty.core.io import read_image
from napari_seg_uncertainty.core.training import TrainConfig, predict, train
from napari_seg_uncertainty.widgets._review_table import COLUMNS, uncertainty_color
from napari_seg_uncertainty.widgets.cohort_review import LAYER_NAMES, CohortReviewWidget
from napari_seg_uncertainty.workflow.evaluation import evaluate_checkpoints
from napari_seg_uncertainty.workflow.review import ReviewSession

pytestmark = pytest.mark.usefixtures("one_thread")
TIMEOUT_MS = 120_000
PLUGIN = "napari-seg-uncertainty"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """10 generated 2-D cases (32 x 32, two raters), 3 held out; a softmax U-Net and an SSN, 2 x 2 steps each,
    evaluated into ``evaluation/``."""
    import torch

    root = tmp_path_factory.mktemp("review")
    source = make_phantom_cohort(10, root / "cohort", ndim=2, num_raters=2, shape=(32, 32), seed=2)
    cohort = load_cohort(source)
    split = cohort.split(val=0.2, test=0.3, seed=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    checkpoints = {}
    try:
        for name, extra in (("unet", {}), ("ssn", {"head": "ssn", "loss": "ssn", "ssn_rank": 2, "ssn_samples": 4,
                                                  "target": "random_rater"})):
            config = TrainConfig(channels=(4, 8), strides=(2,), num_res_units=0, epochs=2, steps_per_epoch=2,
                                 batch_size=2, patch_size=(16, 16), num_workers=0, device="cpu",
                                 output_dir=str(root / "runs" / name), **extra)
            *_, last = train(config, cohort, split=split)
            checkpoints[name] = last.checkpoint
        gen = evaluate_checkpoints(checkpoints, cohort, out_dir=root / "evaluation", num_resamples=200,
                                   device="cpu")
        for _record in gen:
            pass
    finally:
        torch.set_num_threads(previous)
    return {"root": root, "evaluation": root / "evaluation", "source": source, "test": split["test"],
            "checkpoints": checkpoints}


def _opened(make_napari_viewer, qtbot, folder):
    """A viewer with the dock opened from the Plugins menu (napari hands it a viewer proxy), the folder read."""
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort review")
    assert isinstance(widget, CohortReviewWidget)
    assert widget.open_folder(folder["evaluation"]) is not None
    qtbot.waitUntil(lambda: widget.session is not None and not widget.busy, timeout=TIMEOUT_MS)
    return viewer, widget


def _open(qtbot, widget, case_id=None, step=None):
    worker = widget.open_case(case_id) if step is None else step()
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy and widget.case is not None
                    and (case_id is None or widget.case_id == case_id), timeout=TIMEOUT_MS)
    return widget.case


def _kept(qtbot, widget, keep):
    """The path of the annotation ``keep()`` saves in a worker, or None when nothing started."""
    saved = []
    widget.computed.connect(saved.append)
    try:
        if keep() is None:
            return None
        qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)
    finally:
        widget.computed.disconnect(saved.append)
    return saved[-1] if saved else None


def _notifications():
    from napari.utils.notifications import notification_manager

    messages: list[str] = []
    notification_manager.notification_ready.connect(lambda n: messages.append(str(n.message)))
    return messages


def test_table_lists_the_cases_ranked_sorted_filtered_and_coloured(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    session = ReviewSession.open(folder["evaluation"])
    assert list(widget._candidate.choices) == ["unet", "ssn"] == list(session.candidates)
    rows = {row.case_id: row for row in session.case_rows("unet")}
    assert sorted(rows) == sorted(folder["test"])
    # ranked for review by default: the session's queue, top to bottom
    assert widget.table.case_order() == list(session.review_order("unet"))
    from qtpy.QtCore import Qt

    view = widget.table.native
    fields = [field for _, field in COLUMNS]
    for i in range(view.rowCount()):
        row = rows[widget.table.case_at(i)]
        for j, field in enumerate(fields):
            assert view.item(i, j).data(Qt.ItemDataRole.UserRole) == getattr(row, field)  # the value itself
        assert view.item(i, 2).background().color().name() == uncertainty_color(row.uncertainty)
    # a click on the Dice header sorts by value (not by text), twice: descending
    view.sortItems(fields.index("dice"))
    dice = [rows[c].dice for c in widget.table.case_order()]
    assert dice == sorted(dice)
    view.sortItems(fields.index("dice"), Qt.SortOrder.DescendingOrder)
    assert [rows[c].dice for c in widget.table.case_order()] == sorted(dice, reverse=True)
    # filter by case id text, and only the cases not reviewed
    first = folder["test"][0]
    widget._filter.value = first[-2:]
    assert widget.table.case_order() == [c for c in widget.table.case_order() if first[-2:] in c] \
        and first in widget.table.case_order()
    widget._filter.value = ""
    _open(qtbot, widget, first)
    widget._reviewed.value = True
    widget._only_open.value = True
    assert first not in widget.table.case_order() and len(widget.table.case_order()) == len(rows) - 1
    widget._reviewed.value = False
    widget._only_open.value = False
    assert len(widget.table.case_order()) == len(rows)
    # the plots dock: the pooled reliability of both candidates; no study table for an evaluation folder
    assert "Cohort plots" in viewer.window.dock_widgets
    qtbot.waitUntil(lambda: not widget.plots.rendering, timeout=TIMEOUT_MS)
    figure = widget.plots.panels["Reliability"].canvas.figure
    legend = " ".join(t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts())
    assert "unet: ECE" in legend and "ssn: ECE" in legend
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels[0] == "perfect calibration" and labels[-1] == "gap"  # gap after the candidates
    assert [label.split(":")[0] for label in labels[1:-1]] == ["unet", "ssn"]
    histogram = figure.axes[1]
    low, high = histogram.get_ylim()
    majors = [t for t in histogram.yaxis.get_majorticklocs() if low <= t <= high]
    assert 1 <= len(majors) <= 4
    assert all(not t.get_text() for t in histogram.yaxis.get_minorticklabels())
    assert not widget.plots.study.table.isVisibleTo(widget.plots.native)
    assert "No study table" in widget.plots.study.footnote.text()


def test_selecting_a_case_shows_its_layers_on_its_grid(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    case_id = widget.table.case_order()[0]
    cohort = load_cohort(folder["source"])
    data = cohort.load_case(case_id)
    assert any(abs(v) > 0 for v in data.origin)  # the phantom cases lie away from the origin
    widget.table.native.selectRow(0)  # a click on the first row
    _open(qtbot, widget, case_id)
    names = [layer.name for layer in widget.layers]
    assert names == [LAYER_NAMES["image"], LAYER_NAMES["entropy"], f"{LAYER_NAMES['rater']} 1",
                     f"{LAYER_NAMES['rater']} 2", LAYER_NAMES["prediction"]]  # no SSN samples for the U-Net
    for layer in widget.layers:
        np.testing.assert_allclose(layer.scale, data.spacing)
        np.testing.assert_allclose(layer.translate, data.origin)
        assert layer.metadata["nsu_case"] == case_id
    np.testing.assert_array_equal(viewer.layers[LAYER_NAMES["image"]].data, data.image[0])
    for r in range(2):
        np.testing.assert_array_equal(viewer.layers[f"{LAYER_NAMES['rater']} {r + 1}"].data, data.raters[r])
    direct = predict(folder["checkpoints"]["unet"], data.image[0], seed=0)  # the model run directly
    np.testing.assert_array_equal(viewer.layers[LAYER_NAMES["prediction"]].data, direct.labels)
    np.testing.assert_allclose(viewer.layers[LAYER_NAMES["entropy"]].data, direct.entropy, rtol=1e-6)
    assert not widget._keep_sample.enabled and widget._keep_prediction.enabled


def test_next_previous_replace_the_case_and_keep_the_users_layers(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    messages = _notifications()
    order = widget.table.case_order()
    first = _open(qtbot, widget, step=widget.next_case)  # nothing open: Next opens the top case
    assert first.case_id == order[0]
    mine = viewer.add_points(np.array([[1.0, 2.0]]), name="my notes")
    before = list(widget.layers)
    prediction = viewer.layers[LAYER_NAMES["prediction"]]
    prediction.data[0, 0] = 1 - prediction.data[0, 0]  # an edit, not kept
    second = _open(qtbot, widget, order[1], step=widget.next_case)
    assert second.case_id == order[1]
    assert all(layer not in viewer.layers for layer in before)  # the first case's layers are gone
    assert "my notes" in viewer.layers and viewer.layers["my notes"] is mine
    assert sum(layer.name == LAYER_NAMES["prediction"] for layer in viewer.layers) == 1
    assert [m for m in messages if "were dropped" in m and order[0] in m]
    assert widget.table.selected_case() == order[1]
    back = _open(qtbot, widget, order[0], step=widget.previous_case)
    assert back.case_id == order[0]
    assert not [m for m in messages if "were dropped" in m and order[1] in m]  # no edit: no warning
    assert widget.previous_case() is None  # the top of the table


def test_mark_reviewed_persists_in_review_json(make_napari_viewer, qtbot, folder):
    _viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    case_id = widget.table.case_order()[1]
    _open(qtbot, widget, case_id)
    ReviewSession.open(folder["evaluation"]).mark_reviewed(case_id, False, note="check the rim")  # a script's note
    widget._reviewed.value = True  # the checkbox, as a click
    state = json.loads((folder["evaluation"] / "review.json").read_text())
    assert state["cases"][case_id]["reviewed"] is True
    assert state["cases"][case_id]["note"] == "check the rim"  # ticking keeps the note
    assert ReviewSession.open(folder["evaluation"]).is_reviewed(case_id)
    row = widget.table.case_order().index(case_id)
    reviewed = [field for _, field in COLUMNS].index("reviewed")
    assert widget.table.native.item(row, reviewed).text() == "✓"
    widget.set_reviewed(False)
    assert not ReviewSession.open(folder["evaluation"]).is_reviewed(case_id)
    assert widget._reviewed.value is False


def test_keep_edited_prediction_twice_writes_two_new_raters(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    case_id = widget.table.case_order()[-1]
    case = _open(qtbot, widget, case_id)
    raters = case.raters.shape[0]
    layer = viewer.layers[LAYER_NAMES["prediction"]]
    edited = np.array(layer.data)
    edited[2:6, 2:6] = 1
    messages = _notifications()
    layer.data = np.array(case.prediction.labels)  # not edited: refused, nothing written
    before = len(ReviewSession.open(folder["evaluation"]).annotations(case_id))
    assert _kept(qtbot, widget, widget.keep_prediction) is None
    assert [m for m in messages if "has not been edited" in m and "keep an SSN sample" in m]
    assert len(ReviewSession.open(folder["evaluation"]).annotations(case_id)) == before
    layer.data = edited
    first = _kept(qtbot, widget, widget.keep_prediction)
    assert widget.keep_prediction() is None  # the same labels again: refused, with a notification
    assert [m for m in messages if "equal the annotation already kept" in m]
    edited2 = edited.copy()
    edited2[0, 0] = 1 - edited2[0, 0]  # one more voxel edited (two classes)
    layer.data = edited2
    second = _kept(qtbot, widget, widget.keep_prediction)
    assert first is not None and second is not None and first != second
    assert first.exists() and second.exists()
    saved, meta = read_image(first)
    np.testing.assert_array_equal(saved, edited)
    np.testing.assert_allclose(meta.spacing, case.spacing)
    np.testing.assert_allclose(meta.origin, case.origin)
    np.testing.assert_array_equal(read_image(second)[0], edited2)
    assert f"{LAYER_NAMES['rater']} {raters + 2}" in viewer.layers
    # the cohort, loaded again, has the two annotations as raters of the case
    reloaded = load_cohort(folder["source"]).load_case(case_id)
    assert reloaded.raters.shape[0] == raters + 2
    np.testing.assert_array_equal(reloaded.raters[raters], edited)
    assert [a.kind for a in ReviewSession.open(folder["evaluation"]).annotations(case_id)][-2:] == ["edited"] * 2
    _open(qtbot, widget, widget.table.case_order()[0])  # the kept edits: nothing dropped on moving on
    assert not [m for m in messages if "were dropped" in m]


def test_ssn_samples_slider_and_keep_sample(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    case_id = widget.table.case_order()[0]
    case = _open(qtbot, widget, case_id, step=lambda: widget.open_case(case_id, candidate="ssn"))
    assert widget.candidate == "ssn" and case.ssn_samples is not None
    samples = viewer.layers[LAYER_NAMES["samples"]]
    assert samples.data.shape[0] == case.ssn_samples.shape[0] >= 2
    np.testing.assert_allclose(samples.scale, (1.0, *case.spacing))
    np.testing.assert_allclose(samples.translate, (0.0, *case.origin))
    viewer.dims.set_point(0, 1)  # the samples slider on sample 1
    assert widget.sample_index() == 1
    path = _kept(qtbot, widget, widget.keep_sample)
    assert path is not None
    np.testing.assert_array_equal(read_image(path)[0], case.ssn_samples[1])
    assert ReviewSession.open(folder["evaluation"]).annotations(case_id)[-1].kind == "ssn_sample"


def test_bad_folder_is_a_notification_not_a_traceback(make_napari_viewer, qtbot, tmp_path, folder):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort review")
    messages = _notifications()
    failed = []
    widget.failed.connect(failed.append)
    widget.open_folder(tmp_path)
    qtbot.waitUntil(lambda: bool(failed), timeout=TIMEOUT_MS)
    assert not widget.busy and widget.session is None
    assert [m for m in messages if "neither a study folder nor an evaluation folder" in m]
    assert widget.open_folder("") is None
    assert widget.open_case("case_000") is None
    # a good folder after a bad one; closing the dock closes its plots dock too
    widget.open_folder(folder["evaluation"])
    qtbot.waitUntil(lambda: widget.session is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert "Cohort plots" in viewer.window.dock_widgets
    viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: "Cohort plots" not in viewer.window.dock_widgets, timeout=TIMEOUT_MS)


def test_closing_the_dock_removes_its_layers_but_an_unsaved_edit(make_napari_viewer, qtbot, folder):
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    messages = _notifications()
    mine = viewer.add_points(np.array([[1.0, 2.0]]), name="my notes")
    case_id = widget.table.case_order()[0]
    _open(qtbot, widget, case_id)
    added = list(widget.layers)
    prediction = viewer.layers[LAYER_NAMES["prediction"]]
    edited = np.array(prediction.data)
    edited[0, 0] = 1 - edited[0, 0]
    prediction.data = edited
    from napari._qt.widgets.qt_viewer_dock_widget import QtViewerDockWidget

    dock = next(d for d in viewer.window._qt_window.findChildren(QtViewerDockWidget) if d.widget() is widget.native)
    dock.titleBarWidget().close_button.click()  # the dock's ×
    qtbot.waitUntil(lambda: not widget.layers, timeout=TIMEOUT_MS)
    left = [layer for layer in added if layer in viewer.layers]
    assert left == [prediction] and prediction.name == f"{LAYER_NAMES['prediction']} {case_id} (unsaved edit)"
    np.testing.assert_array_equal(prediction.data, edited)
    assert list(viewer.layers) == [mine, prediction] and widget.layers == []
    assert [m for m in messages if "unsaved edit" in m]
    assert "Cohort plots" not in viewer.window.dock_widgets


def test_study_table_tab_is_a_qt_table_of_the_study_table(make_napari_viewer, qtbot, folder):
    from napari_seg_uncertainty.workflow.study.table import study_table

    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    rows = ReviewSession.open(folder["evaluation"]).saved.rows
    structure = next(r["class"] for r in rows if r["metric"] == "dice" and r["class"] != "all")
    metrics = [f"{structure}:dice", "all:ece_reference_volume"]
    table = study_table(rows, metrics=metrics, num_resamples=200, seed=0)
    panel = widget.plots.study
    panel.show_table(table, percent=["all:ece_reference_volume"])
    view = panel.table
    assert view.rowCount() == len(table.candidates) == 2 and view.columnCount() == 2
    assert [view.verticalHeaderItem(i).text() for i in range(2)] == list(table.candidates)
    assert view.horizontalHeaderItem(0).text().endswith("↑") and view.horizontalHeaderItem(1).text().endswith("↓")
    assert "%" in view.horizontalHeaderItem(1).text() and "%" not in view.horizontalHeaderItem(0).text()
    for i in range(2):
        for j, factor in enumerate((1.0, 100.0)):
            m, lo, hi = (factor * float(a[i, j]) for a in (table.mean, table.low, table.high))
            item = view.item(i, j)
            star = " *" if table.comparison.significant[i, j] else ""  # against the column's best
            assert item.text().replace("\u00a0", " ") == f"{m:.3f} [{lo:.3f}, {hi:.3f}]{star}"
            assert item.font().bold() == bool(table.marked[i, j])
            tip = item.toolTip()
            assert f"n = {int(table.n[i, j])} cases" in tip
            assert f"p = {float(table.comparison.p_value[i, j]):.3g}" in tip
            assert f"Holm-adjusted p = {float(table.comparison.adjusted_p_value[i, j]):.3g}" in tip
    assert panel.footnote.wordWrap() and panel.footnote.text().startswith("Mean over the n = ")
    # every column reads whole: as wide as its widest line
    metrics_font = view.fontMetrics()
    for j in range(2):
        assert view.columnWidth(j) >= metrics_font.horizontalAdvance(view.item(0, j).text().split(" [")[0])


def test_a_tiny_plots_dock_draws_without_layout_warnings(make_napari_viewer, qtbot, folder):
    import warnings

    from napari_seg_uncertainty.widgets._review_plots import draw_message, render_drawing

    _viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    qtbot.waitUntil(lambda: not widget.plots.rendering, timeout=TIMEOUT_MS)
    panel = widget.plots.panels["Reliability"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        panel.canvas.figure.set_size_inches(0.3, 0.2)  # a dock squeezed to a few pixels
        panel.canvas.draw()
        render_drawing(panel.drawing, size=(0.3, 0.2), dpi=100.0, style=panel.napari_theme_style_sheet)
        render_drawing(lambda f: draw_message(f, "x"), size=(0.3, 0.2), dpi=100.0, style={})
    assert not [w for w in caught if "collapsed" in str(w.message)]


@pytest.fixture(scope="module")
def folder3d(tmp_path_factory):
    """6 generated 3-D cases with non-zero origins, a softmax U-Net (1 step) evaluated on the 2 held out."""
    import torch

    root = tmp_path_factory.mktemp("review3d")
    source = make_phantom_cohort(6, root / "cohort", ndim=3, num_raters=2, shape=(8, 16, 16), seed=3)
    cohort = load_cohort(source)
    split = cohort.split(val=0.2, test=0.3, seed=0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = TrainConfig(channels=(4, 8), strides=(2,), num_res_units=0, epochs=1, steps_per_epoch=1,
                             batch_size=1, patch_size=(8, 16, 16), num_workers=0, device="cpu",
                             output_dir=str(root / "runs" / "unet"))
        *_, last = train(config, cohort, split=split)
        for _record in evaluate_checkpoints({"unet": last.checkpoint}, cohort, out_dir=root / "evaluation",
                                            num_resamples=50, device="cpu"):
            pass
    finally:
        torch.set_num_threads(previous)
    return {"evaluation": root / "evaluation", "source": source}


def _assert_on_case(viewer, layer, data):
    """The sliders at the case's centre slice and the camera on the case's in-plane extent."""
    shape = np.asarray(data.raters.shape[1:])
    index = layer.world_to_data(viewer.dims.point)
    assert abs(index[0] - (shape[0] - 1) / 2) <= 0.5 + 1e-6  # the centre slice (to the sliders' grid)
    low = np.asarray(data.origin) - np.asarray(data.spacing) / 2  # the voxels' edges, world coordinates
    high = low + shape * np.asarray(data.spacing)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], ((low + high) / 2)[-2:], atol=1e-3)
    size = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float)
    shown = size / viewer.scene.camera.zoom  # world extent on screen
    assert np.all(shown >= (high - low)[-2:] - 1e-6) and np.any(shown <= 1.2 * (high - low)[-2:])


def test_opening_a_case_moves_the_view_to_it_not_to_all_layers(make_napari_viewer, qtbot, folder3d):
    viewer = make_napari_viewer()
    viewer.add_points(np.array([[500.0, 0.0, 0.0]]), name="far away")  # the user's own layer
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort review")
    widget.open_folder(folder3d["evaluation"])
    qtbot.waitUntil(lambda: widget.session is not None and not widget.busy, timeout=TIMEOUT_MS)
    cohort = load_cohort(folder3d["source"])
    order = widget.table.case_order()
    assert len(order) == 2
    for case_id, step in ((order[0], widget.next_case), (order[1], widget.next_case)):
        viewer.dims.set_point(0, 500.0)  # looking at the user's layer
        _open(qtbot, widget, case_id, step=step)
        data = cohort.load_case(case_id)
        assert abs(data.origin[0]) > 0
        _assert_on_case(viewer, viewer.layers[LAYER_NAMES["prediction"]], data)


def test_a_2d_case_beside_a_3d_layer_of_the_users_is_in_view(make_napari_viewer, qtbot, folder):
    viewer = make_napari_viewer()
    viewer.add_points(np.array([[500.0, 900.0, 900.0]]), name="far away")  # more axes than the case
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort review")
    widget.open_folder(folder["evaluation"])
    qtbot.waitUntil(lambda: widget.session is not None and not widget.busy, timeout=TIMEOUT_MS)
    case_id = widget.table.case_order()[0]
    _open(qtbot, widget, case_id, step=lambda: widget.open_case(case_id, candidate="ssn"))  # samples: a slider
    data = load_cohort(folder["source"]).load_case(case_id)
    low = np.asarray(data.origin) - np.asarray(data.spacing) / 2
    high = low + np.asarray(data.raters.shape[1:]) * np.asarray(data.spacing)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (low + high) / 2, atol=1e-3)
    shown = np.asarray(viewer.canvas.viewbox_size(viewer.layers), dtype=float) / viewer.scene.camera.zoom
    assert np.all(shown >= high - low - 1e-6) and np.any(shown <= 1.2 * (high - low))
    assert widget.sample_index() == 0


def test_folder_plots_and_saves_are_read_and_written_off_the_gui_thread(make_napari_viewer, qtbot, folder,
                                                                        monkeypatch):
    import threading

    threads: dict[str, list] = {}

    def spy(name, original):
        def method(self, *args, **kwargs):
            threads.setdefault(name, []).append(threading.current_thread())
            return original(self, *args, **kwargs)
        return method

    for name in ("reliability_results", "study_table", "table_percent", "quality", "save_annotation"):
        monkeypatch.setattr(ReviewSession, name, spy(name, getattr(ReviewSession, name)))
    viewer, widget = _opened(make_napari_viewer, qtbot, folder)
    assert sorted(threads) == ["quality", "reliability_results", "study_table", "table_percent"]
    case = _open(qtbot, widget, widget.table.case_order()[0])
    layer = viewer.layers[LAYER_NAMES["prediction"]]
    edited = np.array(case.prediction.labels)
    edited[1:3, 1:3] = 1 - edited[1:3, 1:3]
    layer.data = edited
    path = _kept(qtbot, widget, widget.keep_prediction)
    assert path is not None and np.array_equal(read_image(path)[0], edited)
    assert len(threads["save_annotation"]) == 1
    assert threading.main_thread() not in [t for found in threads.values() for t in found]
