"""The "Load raters" dock widget, driven in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core.io import write_image
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import load_raters as load_raters_module
from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(load_raters_module, "show_error", messages.append)
    return messages


@pytest.fixture
def rater_files(tmp_path):
    base = np.zeros((3, 10, 12), np.uint8)
    base[:, 2:8, 2:10] = 1
    base[:, 4:6, 4:7] = 2
    raters = np.stack([base, base, base])
    raters[1, :, 7, 2:10] = 0
    raters[2, 1, 2:4, 2:4] = 0
    folder = tmp_path / "case"
    folder.mkdir()
    for i, r in enumerate(raters):
        write_image(folder / f"rater{i + 1}.nii.gz", r, spacing=(3.0, 0.5, 0.5), origin=(0.0, 10.0, 20.0))
    return folder, raters


def _independent_dice(a, b):
    inter = np.logical_and(a, b).sum()
    return 2 * inter / (a.sum() + b.sum())


def test_load_folder_adds_layers_scales_and_numbers(make_napari_viewer, qtbot, rater_files, errors):
    folder, raters = rater_files
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._path.value = str(folder)
    widget._load_files.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None, timeout=20000)
    assert errors == []
    for i in range(3):
        layer = viewer.layers[f"rater{i + 1}"]
        assert layer._type_string == "labels"
        np.testing.assert_allclose(layer.scale, (3.0, 0.5, 0.5))
        np.testing.assert_allclose(layer.translate, (0.0, 10.0, 20.0))
        np.testing.assert_array_equal(layer.data, raters[i])
    # agreement of class 1 = fraction of raters saying class 1 (independent count)
    agreement = viewer.layers["agreement: class 1"].data
    np.testing.assert_allclose(agreement, (raters == 1).mean(0))
    np.testing.assert_allclose(viewer.layers["agreement: class 1"].scale, (3.0, 0.5, 0.5))
    assert viewer.layers["rater entropy"].contrast_limits == [0.0, 1.0]
    # entropy where raters split 2:1 between classes 1 and 0 (3 classes -> normalised by log 3)
    p = np.array([2 / 3, 1 / 3])
    expected = -(p * np.log(p)).sum() / np.log(3)
    assert viewer.layers["rater entropy"].data[0, 7, 5] == pytest.approx(expected, rel=1e-5)
    # the pairwise Dice table shows class 1 by default
    table = widget._dice_table.value
    assert list(table["index"]) == ["rater1", "rater2", "rater3"]
    assert list(table["columns"]) == ["R1", "R2", "R3"]
    assert table["data"][0][1] == pytest.approx(_independent_dice(raters[0] == 1, raters[1] == 1), abs=1e-4)
    widget._dice_class.value = 2
    assert widget._dice_table.value["data"][0][2] == pytest.approx(
        _independent_dice(raters[0] == 2, raters[2] == 2), abs=1e-4)
    assert widget._status.value == ("3 raters · 3 classes (background, class 1, class 2) · 3×10×12 voxels of "
                                    "3 × 0.5 × 0.5 mm")
    # volumes from spacing × voxel count: 108 mm³ of class 1 at most, so the column is in mm³
    summary = widget._summary_table.value
    assert list(summary["index"]) == ["background", "class 1", "class 2"]
    assert summary["columns"][0] == "mm³"
    voxel = 3.0 * 0.5 * 0.5
    for k in range(3):
        expected = np.mean([np.count_nonzero(r == k) * voxel for r in raters])
        assert float(summary["data"][k][0].replace(",", "")) == pytest.approx(expected, rel=5e-3)


def test_reloading_updates_in_place(make_napari_viewer, qtbot, rater_files, errors):
    folder, _ = rater_files
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    for _ in range(2):
        widget.statistics = None
        widget.load_from_path(str(folder))
        qtbot.waitUntil(lambda: widget.statistics is not None, timeout=20000)
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(set(names)) == 3 + 2 + 1  # raters, agreement (2 classes), entropy


def test_use_existing_labels_layers(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    maps = [(rng.random((20, 20)) > 0.5).astype(np.uint8) for _ in range(2)]
    for i, m in enumerate(maps):
        viewer.add_labels(m, name=f"annot {i}", scale=(0.8, 0.8))
    viewer.add_image(rng.random((20, 20)), name="ct")
    widget = LoadRatersWidget(viewer)
    # only Labels layers are offered, and the choices are the layers themselves
    assert {layer.name for layer in widget._layers.choices} == {"annot 0", "annot 1"}
    assert all(choice is viewer.layers[choice.name] for choice in widget._layers.choices)
    widget._layers.value = ["annot 0", "annot 1"]  # names are accepted too (the Guide, scripts)
    assert [layer.name for layer in widget._layers.value] == ["annot 0", "annot 1"]  # in layer-list order
    widget._use_layers.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None, timeout=20000)
    assert errors == []
    assert widget.raters.spacing == (0.8, 0.8)
    assert widget.raters.rater_names == ["annot 0", "annot 1"]  # raters in layer-list order
    assert widget._dice_table.value["data"][0][1] == pytest.approx(_independent_dice(maps[0], maps[1]), abs=1e-4)
    assert len([layer for layer in viewer.layers if layer.name.startswith("annot")]) == 2  # no copies added
    for i, m in enumerate(maps):  # the user's layers are neither changed nor tagged with a case
        layer = viewer.layers[f"annot {i}"]
        np.testing.assert_array_equal(layer.data, m)
        assert "nsu_case" not in layer.metadata
    np.testing.assert_allclose(viewer.layers["agreement: class 1"].data, np.mean(maps, axis=0))
    # a layer added later shows up in the choices
    viewer.add_labels(maps[0], name="annot 2")
    assert "annot 2" in {layer.name for layer in widget._layers.choices}


def test_bad_inputs_become_notifications_and_viewer_stays_usable(make_napari_viewer, qtbot, tmp_path, errors):
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    widget._load_files.native.click()  # empty path
    assert "no file or folder" in errors[-1]
    # raters of different shapes: the worker fails, the message says why
    write_image(tmp_path / "a.nii.gz", np.zeros((4, 4), np.uint8))
    write_image(tmp_path / "b.nii.gz", np.zeros((5, 4), np.uint8))
    worker = widget.load_from_path(str(tmp_path))
    with qtbot.waitSignal(worker.finished, timeout=20000):
        pass
    assert "different shapes" in errors[-1]
    assert widget._load_files.enabled  # ready for another try
    # bad spacing text
    widget._spacing.value = "one, two"
    widget.load_from_path(str(tmp_path))
    assert "not a list of numbers" in errors[-1]
    # layers with different scales
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="a", scale=(1, 1))
    viewer.add_labels(np.zeros((4, 4), np.uint8), name="b", scale=(2, 2))
    widget._spacing.value = ""
    widget._layers.value = ["a", "b"]
    widget._use_layers.native.click()
    assert "different scales" in errors[-1]
    widget._layers.value = []
    widget._use_layers.native.click()
    assert "no Labels layer selected" in errors[-1]
    assert len(viewer.layers) == 2  # nothing half-added
    viewer.add_image(np.ones((3, 3)))  # the viewer is still usable
    assert len(viewer.layers) == 3


def test_guide_style_calls_and_a_superseded_request(make_napari_viewer, qtbot, errors):
    """The Guide adds the raters with rater_layer_data, calls load_from_layers(names), then sets the
    selection by names and presses the button before the first request has finished: only the last
    request is shown, once."""
    from napari_seg_uncertainty._sample_data import rater_layer_data
    from napari_seg_uncertainty.core.phantom import make_phantom_raters

    viewer = make_napari_viewer()
    image, raters = make_phantom_raters(2, shape=(48, 48), seed=0)
    for data, kwargs, kind in rater_layer_data(image, raters):
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = LoadRatersWidget(viewer)
    widget.load_from_layers(raters.rater_names)
    widget._layers.value = raters.rater_names
    widget._use_layers.native.click()
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=20000)
    qtbot.wait(200)  # the first request's result, if any, arrives and is dropped
    assert errors == []
    assert widget.raters.rater_names == raters.rater_names
    names = [layer.name for layer in viewer.layers]
    assert len(names) == len(set(names)) == 1 + raters.num_raters + raters.num_classes  # image, raters, maps
    organ = raters.labels == 1
    assert widget._dice_table.value["data"][0][1] == pytest.approx(_independent_dice(organ[0], organ[1]), abs=1e-4)
    # the maps lie under the raters, so the raters' outlines are drawn over the entropy map
    assert names.index("rater entropy") < min(names.index(n) for n in raters.rater_names)


def test_2d_areas_in_mm2_and_the_dock_scrolls(make_napari_viewer, qtbot, tmp_path, errors):
    from qtpy.QtWidgets import QScrollArea

    base = np.zeros((40, 50), np.uint8)
    base[5:30, 10:40] = 1
    raters = np.stack([base, np.roll(base, 2, axis=0)])
    for i, r in enumerate(raters):
        write_image(tmp_path / f"r{i}.png", r)
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    # napari docks ``widget.native``: the controls' scroll area must be inside it, not lost around it
    scroll = widget.scroll_area
    assert isinstance(scroll, QScrollArea) and scroll.parentWidget() is widget.native
    widget._spacing.value = "0.5, 0.25"
    widget.load_from_path(str(tmp_path))
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=20000)
    assert errors == []
    summary = widget._summary_table.value
    assert summary["columns"][0] == "mm²"
    expected = np.mean([np.count_nonzero(r == 1) for r in raters]) * 0.5 * 0.25  # 750 pixels of 0.125 mm²
    assert float(summary["data"][1][0]) == pytest.approx(expected, rel=1e-3)  # shown as 93.8
    assert widget._status.value.endswith("40×50 pixels of 0.5 × 0.25 mm")


def test_closing_the_dock_while_loading_is_quiet(make_napari_viewer, qtbot, rater_files, errors):
    folder, _ = rater_files
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Load raters")
    worker = widget.load_from_path(str(folder))
    viewer.window.remove_dock_widget(dock)
    widget.native.deleteLater()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=20000)  # (it may end before a waitSignal connects)
    qtbot.wait(300)  # the result arrives for a closed dock: nothing is added, nothing raises
    assert errors == []
    viewer.add_labels(np.zeros((3, 4), np.uint8))  # layer events reach no deleted widget


def test_public_load_methods_take_keywords_and_emit_computed(make_napari_viewer, qtbot, rater_files, errors):
    folder, raters = rater_files
    viewer = make_napari_viewer()
    widget = LoadRatersWidget(viewer)
    with qtbot.waitSignal(widget.computed, timeout=20000) as blocker:
        worker = widget.load_from_path(folder, spacing=(2.0, 1.0, 1.0), class_names=["bg", "organ", "lesion"])
        assert worker is not None and widget.busy and not widget._load_files.enabled
    stats = blocker.args[0]
    assert stats is widget.statistics and not widget.busy and widget._load_files.enabled
    assert stats.raters.class_names == ["bg", "organ", "lesion"] and stats.raters.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_allclose(viewer.layers["rater1"].scale, (2.0, 1.0, 1.0))
    assert widget._spacing.value == "2.0, 1.0, 1.0"
    with qtbot.waitSignal(widget.computed, timeout=20000) as blocker:
        widget.load_from_layers(["rater1", "rater3"], spacing="")
    stats_of_layers = blocker.args[0]
    assert stats_of_layers.raters.rater_names == ["rater1", "rater3"]
    np.testing.assert_allclose(blocker.args[0].dice[1, 0, 1], _independent_dice(raters[0] == 1, raters[2] == 1))
    assert errors == []
    with qtbot.waitSignal(widget.failed, timeout=20000):  # a load failing in the worker: notified, `failed`
        assert widget.load_from_path(folder / "missing") is not None
    assert len(errors) == 1 and widget.statistics is stats_of_layers  # the case on show stays
