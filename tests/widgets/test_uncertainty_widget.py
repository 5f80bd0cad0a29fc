"""The "Uncertainty maps" dock widget in a real viewer: maps, review table with jumps, Dice vs raters."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets.uncertainty import UncertaintyWidget, _camera


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    return messages


def _softmax(z: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _entropy(p: np.ndarray, axis: int = 0) -> np.ndarray:
    p = p.astype(np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def _hb(p: np.ndarray) -> np.ndarray:
    return _entropy(np.stack([p, 1 - p]))


def _wait(widget, qtbot, attribute: str):
    setattr(widget, attribute, [])
    qtbot.waitUntil(lambda: bool(getattr(widget, attribute)), timeout=30000)
    qtbot.waitUntil(lambda: widget._rank.enabled, timeout=10000)


def test_entropy_and_mutual_information_layers(make_napari_viewer, qtbot, errors):
    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    probs = _softmax(rng.normal(scale=2, size=(3, 12, 14)))
    members = _softmax(rng.normal(scale=2, size=(4, 3, 12, 14)), axis=1)
    viewer.add_image(probs, name="model", scale=(1, 0.5, 0.25), translate=(0, 3, 4))
    viewer.add_image(members, name="samples")
    widget = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._probabilities.value = ["model"]
    widget._compute_maps.native.click()
    _wait(widget, qtbot, "maps")
    layer = viewer.layers["model entropy"]
    np.testing.assert_allclose(layer.data, _entropy(probs) / np.log(3), rtol=1e-5, atol=1e-7)
    assert layer.colormap.name == "magma" and list(layer.contrast_limits) == [0.0, 1.0]
    np.testing.assert_allclose(layer.scale, (0.5, 0.25))
    np.testing.assert_allclose(layer.translate, (3, 4))
    offered = [layer.name for layer in widget._probabilities.choices]
    assert "model entropy" not in offered and "model" in offered  # outputs are not offered as inputs

    widget._probabilities.value = ["samples"]  # a member stack is not offered as class probabilities
    widget._compute_maps.native.click()
    assert "'samples' does not sum to 1 over its first axis" in errors.pop()
    widget._layout.value = "members"
    assert [layer.name for layer in widget._probabilities.choices] == ["samples"]
    widget._probabilities.value = ["samples"]
    widget._compute_maps.native.click()
    _wait(widget, qtbot, "maps")
    mean = members.mean(axis=0)
    expected_mi = (_entropy(mean) - np.mean([_entropy(m) for m in members], axis=0)) / np.log(3)
    np.testing.assert_allclose(viewer.layers["samples entropy"].data, _entropy(mean) / np.log(3), rtol=1e-5)
    mi_layer = viewer.layers["samples mutual information"]
    np.testing.assert_allclose(mi_layer.data, np.maximum(expected_mi, 0), rtol=1e-4, atol=1e-6)
    assert mi_layer.colormap.name == "viridis"

    # two (C, ...) layers as members of one ensemble
    viewer.add_image(_softmax(rng.normal(scale=2, size=(3, 12, 14))), name="model 2", scale=(1, 0.5, 0.25))
    widget._layout.value = "classes"
    widget._as_ensemble.value = True
    widget._probabilities.value = ["model", "model 2"]
    widget._compute_maps.native.click()
    _wait(widget, qtbot, "maps")
    pair = np.stack([probs, viewer.layers["model 2"].data])
    expected = (_entropy(pair.mean(0)) - np.mean([_entropy(m) for m in pair], axis=0)) / np.log(3)
    np.testing.assert_allclose(
        viewer.layers["ensemble mutual information"].data, np.maximum(expected, 0), rtol=1e-4, atol=1e-6
    )
    # recomputing updates the layers in place
    n_layers = len(viewer.layers)
    same = viewer.layers["ensemble entropy"]
    widget._compute_maps.native.click()
    _wait(widget, qtbot, "maps")
    assert len(viewer.layers) == n_layers and viewer.layers["ensemble entropy"] is same
    assert errors == []


def _blob_volume():
    """3-D probabilities: a confident blob at z=2 and a doubtful one at z=6 (class 1), class 2 at z=4."""
    shape = (8, 20, 24)
    p1 = np.zeros(shape, np.float32)
    p2 = np.zeros(shape, np.float32)
    p1[1:4, 3:7, 4:9] = 0.95
    p1[5:8, 12:17, 14:20] = 0.6
    p2[4, 10:12, 2:4] = 0.8
    probs = np.stack([1 - p1 - p2, p1, p2])
    return probs


def test_review_structures_and_jump_to_selected(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    probs = _blob_volume()
    scale, translate = (2.0, 0.5, 0.5), (10.0, -5.0, 1.0)
    viewer.add_image(probs, name="pred", scale=(1, *scale), translate=(0, *translate))
    widget = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._probabilities.value = ["pred"]
    widget._rank.native.click()
    _wait(widget, qtbot, "review_rows")
    assert errors == []
    table = widget._review_table.value
    # independent: label the predicted classes with scipy, mean binary entropy per component
    pred = probs.argmax(axis=0)
    expected = []
    for k in (1, 2):
        comps, n = ndimage.label(pred == k, structure=np.ones((3, 3, 3)))
        for i in range(1, n + 1):
            region = comps == i
            centroid = np.argwhere(region).mean(axis=0)
            expected.append((float(_hb(probs[k][region]).mean()), k, int(region.sum()), centroid))
    expected.sort(key=lambda e: (-e[0], -e[2]))
    names = {1: "class 1", 2: "class 2"}  # no class names in the layer metadata
    assert [row[0].rsplit(" ", 1)[0] for row in table["data"]] == [names[e[1]] for e in expected]
    assert [int(row[1].replace(",", "")) for row in table["data"]] == [e[2] for e in expected]
    for row, e in zip(table["data"], expected):
        assert row[2] == pytest.approx(e[0], abs=1e-4)
        assert row[3] == "pred"
    # selecting a row moves the slider to the structure's slice and centres the camera on it
    for row_index in (0, 1, 2):
        widget._review_table.native.selectRow(row_index)
        world = expected[row_index][3] * np.array(scale) + np.array(translate)
        z_axis = viewer.dims.ndim - 3
        assert viewer.dims.point[z_axis] == pytest.approx(world[0], abs=scale[0] / 2 + 1e-6)
        np.testing.assert_allclose(_camera(viewer).center[-2:], world[1:], atol=1e-6)
        assert viewer.layers["pred"].world_to_data((0, *world))[1] == pytest.approx(
            expected[row_index][3][0], abs=0.5
        )
    # small structures can be left out of the table
    widget._min_size.value = 5
    widget._rank.native.click()
    _wait(widget, qtbot, "review_rows")
    assert [int(row[1]) for row in widget._review_table.value["data"]] == [e[2] for e in expected if e[2] >= 5]


def test_review_images_ranking_and_selection(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    sure = np.zeros((2, 10, 10), np.float32)
    sure[1, 2:6, 2:6] = 0.99
    sure[0] = 1 - sure[1]
    unsure = sure.copy()
    unsure[1, 2:6, 2:6] = 0.7
    unsure[0] = 1 - unsure[1]
    viewer.add_image(sure, name="case A")
    viewer.add_image(unsure, name="case B")
    widget = UncertaintyWidget(viewer)
    widget._probabilities.value = ["case A", "case B"]
    widget._rank_by.value = "images"
    widget._rank.native.click()
    _wait(widget, qtbot, "review_rows")
    table = widget._review_table.value
    assert [row[0] for row in table["data"]] == ["case B", "case A"]
    assert table["data"][0][1] == pytest.approx(float(_hb(np.array(0.7))), abs=1e-4)
    assert table["data"][1][1] == pytest.approx(float(_hb(np.array(0.99))), abs=1e-4)
    widget._review_table.native.selectRow(1)
    assert viewer.layers.selection.active is viewer.layers["case A"]
    assert viewer.layers["case A"].visible and not viewer.layers["case B"].visible
    assert errors == []


def _surface_dice(a, b, tol, spacing):
    ea = a & ~ndimage.binary_erosion(a)
    eb = b & ~ndimage.binary_erosion(b)
    da = ndimage.distance_transform_edt(~eb, sampling=spacing)[ea]
    db = ndimage.distance_transform_edt(~ea, sampling=spacing)[eb]
    return ((da <= tol).sum() + (db <= tol).sum()) / (ea.sum() + eb.sum())


def test_dice_and_surface_dice_against_raters(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:30, :30]
    radius = np.hypot(yy - 15, xx - 15)
    probs = np.stack([np.clip((radius - 6) / 4, 0, 1), 1 - np.clip((radius - 6) / 4, 0, 1)]).astype(
        np.float32
    )
    raters = [(radius < r).astype(np.int32) for r in (7.0, 9.0)]
    viewer.add_image(probs, name="pred", scale=(1, 0.5, 0.5))
    for i, r in enumerate(raters):
        viewer.add_labels(r, name=f"R{i}", scale=(0.5, 0.5))
    widget = UncertaintyWidget(viewer)
    widget._probabilities.value = ["pred"]
    widget._raters.value = ["R0", "R1"]
    widget._tolerance.value = 1.0
    widget._agreement.native.click()
    _wait(widget, qtbot, "agreement_rows")
    assert errors == []
    prediction = probs.argmax(axis=0) == 1
    vote = (np.stack(raters).sum(0) * 2 > 2).astype(bool)  # majority of 2 with ties -> background
    references = {"R0": raters[0] == 1, "R1": raters[1] == 1, "majority vote": vote}
    table = widget._agreement_table.value
    assert [row[0] for row in table["data"]] == ["R0", "R1", "majority vote"]
    for row in table["data"]:
        ref = references[row[0]]
        dice = 2 * (prediction & ref).sum() / (prediction.sum() + ref.sum())
        assert row[2] == pytest.approx(dice, abs=1e-4)
        assert row[3] == pytest.approx(_surface_dice(prediction, ref, 1.0, (0.5, 0.5)), abs=1e-4)


def test_errors_become_notifications(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((2, 6, 6), 0.5, np.float32), name="p")
    widget = UncertaintyWidget(viewer)
    widget._compute_maps.native.click()
    assert errors and "Uncertainty maps failed" in errors[-1] and "no probability layer" in errors[-1]
    widget._probabilities.value = ["p"]
    widget._layout.value = "members"  # a (C, Y, X) layer is not a member stack: no longer offered
    assert widget._probabilities.value == [] and widget._probabilities.choices == ()
    widget._compute_maps.native.click()  # says why 'p' was dropped
    assert re.search(r"'p' has shape \(2, 6, 6\); expected .*\(M, C, \*spatial\)", errors[-1])
    widget._layout.value = "classes"
    widget._probabilities.value = ["p"]
    widget._agreement.native.click()
    qtbot.waitUntil(lambda: len(errors) >= 3 and widget._agreement.enabled, timeout=30000)
    assert "no rater selected" in errors[-1]
    with pytest.raises(ValueError, match="row"):
        widget.jump_to(3)


def test_public_methods_emit_computed(make_napari_viewer, qtbot, errors):
    """compute_maps, rank and compute_agreement take their inputs as keywords and emit ``computed``."""
    rng = np.random.default_rng(1)
    viewer = make_napari_viewer()
    probs = _softmax(rng.normal(scale=2, size=(3, 12, 14)))
    viewer.add_image(probs, name="model")
    rater = probs.argmax(axis=0).astype(np.uint8)
    rater[:2] = 0
    viewer.add_labels(rater, name="rater A")
    widget = UncertaintyWidget(viewer)
    with qtbot.waitSignal(widget.computed, timeout=30000) as blocker:
        assert widget.compute_maps(probabilities=["model"], layout="classes", as_ensemble=False) is not None
    assert [m.name for m in blocker.args[0]] == ["model entropy"] and widget.maps == blocker.args[0]
    assert not widget.busy and widget._rank.enabled
    np.testing.assert_allclose(viewer.layers["model entropy"].data, _entropy(probs) / np.log(3), rtol=1e-5)

    with qtbot.waitSignal(widget.computed, timeout=30000) as blocker:
        widget.rank(by="images")
    assert [row.label for row in blocker.args[0]] == ["model"] and widget.review_rows == blocker.args[0]

    with qtbot.waitSignal(widget.computed, timeout=30000) as blocker:
        widget.compute_agreement(raters=["rater A"], tolerance=1.0)
    rows = [r for r in blocker.args[0] if r.reference == "rater A" and r.class_index == 1]
    prediction = probs.argmax(axis=0) == 1
    truth = rater == 1
    dice = 2 * np.count_nonzero(prediction & truth) / (np.count_nonzero(prediction) + np.count_nonzero(truth))
    assert rows[0].dice == pytest.approx(dice)
    assert errors == []
    assert widget.compute_maps(probabilities=["rater A"]) is None and "rater A" in errors[-1]
