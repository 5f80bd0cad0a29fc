"""Soft labels, Calibration and Uncertainty maps on a 3-D case with a non-zero origin and anisotropic voxels.

The case is what a clinical NIfTI gives: 40×128×128 (Z, Y, X), spacing (3, 0.8, 0.8) mm, origin
(10, −40, −50), four raters. Every layer the three docks add must line up with the image (same world
extent, scale and translate) and carry the case; review jumps land on the structure's world position;
choices hold layer objects that survive renames and offer only layers that fit; tables use class names.
Numbers are checked against independent numpy code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from napari_seg_uncertainty.core.phantom import make_phantom_raters
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import calibration as calibration_module
from napari_seg_uncertainty.widgets import soft_labels as soft_labels_module
from napari_seg_uncertainty.widgets.calibration import CalibrationWidget
from napari_seg_uncertainty.widgets.soft_labels import DIFFERENCE_LAYER, SoftLabelsWidget
from napari_seg_uncertainty.widgets.uncertainty import UncertaintyWidget, _camera

SPACING = (3.0, 0.8, 0.8)
ORIGIN = (10.0, -40.0, -50.0)
CASE = "case 3-D"
CLASS_NAMES = ["background", "organ", "lesion", "nodule"]


@pytest.fixture(scope="module")
def phantom():
    image, raters = make_phantom_raters(3, shape=(40, 128, 128), seed=0)
    labels = raters.labels
    # a model: softmax of smoothed rater-1 one-hot logits plus noise, float64 so no two values tie
    rng = np.random.default_rng(1)
    onehot = np.stack([(labels[0] == k) for k in range(4)]).astype(np.float64)
    logits = 4.0 * np.stack([ndimage.gaussian_filter(o, sigma=(0.5, 1.5, 1.5)) for o in onehot])
    logits += rng.normal(scale=0.3, size=logits.shape)
    e = np.exp(logits - logits.max(axis=0))
    model = e / e.sum(axis=0)
    return image, labels, model


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(soft_labels_module, "show_error", messages.append)
    monkeypatch.setattr(calibration_module, "show_error", messages.append)
    return messages


@pytest.fixture(autouse=True)
def _errors_everywhere(errors):
    """Every test here records notifications instead of showing them."""


def add_case(viewer, phantom, *, model=False, entropy=False):
    image, labels, probs = phantom
    place = {"scale": SPACING, "translate": ORIGIN}
    viewer.add_image(image, name="image", metadata={"nsu_case": CASE}, **place)
    for i, rater in enumerate(labels):
        viewer.add_labels(rater, name=f"rater {i + 1}", opacity=0.5, visible=False, **place,
                          metadata={"nsu_case": CASE, "rater": f"rater {i + 1}", "class_names": CLASS_NAMES})
    if model:
        viewer.add_image(probs, name="model", scale=(1.0, *SPACING), translate=(0.0, *ORIGIN), visible=False,
                         metadata={"nsu_case": CASE, "class_names": CLASS_NAMES})
    if entropy:  # an entropy map (float, (*spatial)) must never be offered as probabilities
        viewer.add_image(np.zeros(image.shape, np.float32), name="rater entropy", visible=False,
                         metadata={"nsu_case": CASE, "uncertainty_map": True}, **place)


def assert_lines_up(viewer, layer, *, leading_axes=0):
    """Same world extent (spatial axes), scale and translate as the image, and the image's case."""
    image = viewer.layers["image"]
    np.testing.assert_allclose(layer.scale[leading_axes:], SPACING)
    np.testing.assert_allclose(layer.translate[leading_axes:], ORIGIN)
    np.testing.assert_allclose(layer.extent.world[:, leading_axes:], image.extent.world, atol=1e-9)
    assert layer.metadata.get("nsu_case") == CASE, layer.name


def names(select):
    return [layer.name for layer in select.choices]


# ---------------------------------------------------------------------------------------------- soft labels
def test_soft_labels_line_up_carry_the_case_and_arrive_one_per_turn(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom, model=True, entropy=True)
    widget = SoftLabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert names(widget._raters) == ["rater 1", "rater 2", "rater 3", "rater 4"]  # images are not offered
    assert [layer.name for layer in widget._raters.value] == names(widget._raters)
    widget._live.value = False
    widget._raters.value = ["image"]  # refused: nothing selected, and Compute says why
    assert widget._raters.value == []
    assert widget.compute() is None
    assert re.search(r"Soft labels failed: layer 'image' is a Image layer of float32.*expected a Labels", errors[-1])
    widget._raters.value = ["rater 1", "rater 2", "rater 3", "rater 4"]
    errors.clear()
    widget._compare.value = "one_hot"
    widget.compute()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.busy, timeout=60000)
    assert errors == []
    outputs = [f"soft {slot}: {n}" for slot in "AB" for n in CLASS_NAMES] + [DIFFERENCE_LAYER]
    for name in outputs:
        assert_lines_up(viewer, viewer.layers[name])
    labels = phantom[1]
    organ_share = (labels == 1).mean(axis=0)
    votes = np.stack([(labels == k).sum(axis=0) for k in range(4)])
    majority_organ = np.argmax(votes, axis=0) == 1
    np.testing.assert_allclose(viewer.layers["soft B: organ"].data, majority_organ, atol=1e-6)
    difference = viewer.layers[DIFFERENCE_LAYER]
    np.testing.assert_allclose(difference.data, viewer.layers["soft A: organ"].data - majority_organ, atol=1e-6)
    assert abs(float(np.mean(viewer.layers["soft A: organ"].data)) - organ_share.mean()) < 0.01  # mSVLS keeps mass
    # the difference map: symmetric limits, translucent, transparent where A = B, opaque at ±1
    assert tuple(difference.contrast_limits) == (-1.0, 1.0)
    assert str(difference.blending) == "translucent"
    rgba = difference.colormap.map(np.array([0.0, 0.5, 1.0]))
    assert rgba[1, 3] == 0.0 and rgba[0, 3] == 1.0 and rgba[2, 3] == 1.0
    assert rgba[0, 0] > rgba[0, 1] and rgba[2, 1] > rgba[2, 0]  # pink for B > A, green for A > B

    # a new result is shown one layer per event-loop turn: right after _show at most one layer changed
    result = widget.result
    for name in outputs:
        viewer.layers.remove(name)
    widget._show(result)
    assert not any(name in viewer.layers for name in outputs)  # nothing yet: the first layer comes next turn
    assert widget.busy
    qtbot.waitUntil(lambda: not widget.busy, timeout=30000)
    assert all(name in viewer.layers for name in outputs)


def test_soft_labels_choices_survive_renames_and_removals(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom)
    widget = SoftLabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    second = viewer.layers["rater 2"]
    second.name = "rater B"
    assert names(widget._raters) == ["rater 1", "rater B", "rater 3", "rater 4"]
    assert any(layer is second for layer in widget._raters.value)  # still selected: the value is the layer
    viewer.layers.remove("rater 4")
    assert names(widget._raters) == ["rater 1", "rater B", "rater 3"]
    assert [layer.name for layer in widget._raters.value] == ["rater 1", "rater B", "rater 3"]
    widget._live.value = False
    widget._method.value = "rater_mean"
    widget.compute()
    qtbot.waitUntil(lambda: widget.result is not None and not widget.busy, timeout=60000)
    assert widget.result.request.rater_names == ("rater 1", "rater B", "rater 3")
    lesion = (phantom[1][:3] == 2).mean(axis=0)
    np.testing.assert_allclose(viewer.layers["soft A: lesion"].data, lesion, atol=1e-6)
    assert errors == []


# ---------------------------------------------------------------------------------------------- calibration
def _independent_tace(p: np.ndarray, share: np.ndarray, n_bins: int = 10, threshold: float = 1e-3) -> float:
    keep = p > threshold
    order = np.argsort(p[keep], kind="stable")
    values, indicator = p[keep][order], share[keep][order]
    bins = zip(np.array_split(values, n_bins), np.array_split(indicator, n_bins))
    return float(np.mean([abs(a.mean() - v.mean()) for v, a in bins]))


def test_calibration_offers_only_probabilities_and_names_classes(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom, model=True, entropy=True)
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert names(widget._probabilities) == ["model"]  # not the image, not the entropy map, not a rater
    assert names(widget._target) == ["rater 1", "rater 2", "rater 3", "rater 4"]
    widget._live.value = False
    refusals = [
        ("image", "does not sum to 1"),
        ("rater entropy", "does not sum to 1"),
        ("rater 1", "is a Labels layer"),
    ]
    for wrong, why in refusals:  # a (40, 128, 128) scan could pass for 40 classes: the sums tell
        widget._probabilities.value = [viewer.layers[wrong]]
        assert widget._probabilities.value == []
        widget.compute()
        assert re.search(rf"Calibration failed: layer '{wrong}' {why}.*expected .*\(C, \*spatial\)", errors[-1])
    errors.clear()
    widget._probabilities.value = ["model"]
    widget._target.value = ["rater 1", "rater 2", "rater 3", "rater 4"]
    widget._compute.native.click()
    qtbot.waitUntil(lambda: bool(widget.results) and widget._compute.enabled, timeout=60000)
    assert errors == []
    probs, labels = phantom[2], phantom[1]
    share = np.stack([(labels == k).mean(axis=0) for k in range(4)])
    rows = widget._class_table.value["data"]
    assert [row[1] for row in rows] == CLASS_NAMES and all(row[0] == "model" for row in rows)
    for k, row in enumerate(rows):
        expected_brier = np.mean((probs[k] - share[k]) ** 2 + share[k] * (1 - share[k]))  # over raters
        assert row[3] == pytest.approx(expected_brier, abs=2e-5)  # Brier of class k
        assert row[2] == pytest.approx(_independent_tace(probs[k], share[k]), abs=2e-5)  # TACE of class k
    assert f"on {labels[0].size:,} voxels" in widget._status.value
    assert list(widget._table.value["columns"])[0] == "ECE %"

    # a renamed probability layer stays selected, and temperature scaling places its output on the image
    viewer.layers["model"].name = "U-Net"
    assert [layer.name for layer in widget._probabilities.value] == ["U-Net"]
    widget._fit_temperature.native.click()
    qtbot.waitUntil(lambda: len(widget.results) == 2 and widget._compute.enabled, timeout=120000)
    scaled = viewer.layers["U-Net temperature-scaled"]
    assert_lines_up(viewer, scaled, leading_axes=1)
    assert "U-Net temperature-scaled" in names(widget._probabilities)
    assert errors == []


def test_calibration_legend_sits_above_the_bars(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom, model=True)
    widget = CalibrationWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._probabilities.value = ["model"]
    widget._target.value = ["rater 1"]
    widget._compute.native.click()
    qtbot.waitUntil(lambda: bool(widget.results) and widget._compute.enabled, timeout=60000)
    widget.plot.canvas.draw()
    axes = widget.plot.artists["reliability"]
    renderer = widget.plot.canvas.get_renderer()
    legend_box = axes.get_legend().get_window_extent(renderer)
    axes_box = axes.get_window_extent(renderer)
    assert legend_box.y0 >= axes_box.y1 - 1  # outside the bars: above the axes
    assert errors == []


# ---------------------------------------------------------------------------------------------- uncertainty
def test_uncertainty_maps_review_jumps_and_tables_on_3d_case(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom, model=True, entropy=True)
    widget = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert names(widget._probabilities) == ["model"]
    assert names(widget._raters) == ["rater 1", "rater 2", "rater 3", "rater 4"]
    widget._probabilities.value = ["image"]
    widget._compute_maps.native.click()
    assert re.search(r"Uncertainty maps failed: layer 'image' does not sum to 1 .*\(C, \*spatial\)", errors[-1])
    errors.clear()
    widget._probabilities.value = ["model"]
    widget._compute_maps.native.click()
    qtbot.waitUntil(lambda: bool(widget.maps) and widget._compute_maps.enabled, timeout=60000)
    probs = phantom[2]
    entropy_layer = viewer.layers["model entropy"]
    assert_lines_up(viewer, entropy_layer)
    p = np.clip(probs, 1e-300, 1)
    np.testing.assert_allclose(entropy_layer.data, -(probs * np.log(p)).sum(0) / np.log(4), atol=1e-5)

    widget._min_size.value = 20
    widget._rank.native.click()
    qtbot.waitUntil(lambda: bool(widget.review_rows) and widget._rank.enabled, timeout=60000)
    table = widget._review_table.value
    assert list(table["columns"]) == ["structure", "voxels", "mean H (nats)", "layer"]
    # independent: components of each predicted class, numbered per class from the largest
    pred = probs.argmax(axis=0)
    expected = {}
    for k in (1, 2, 3):
        comps, n = ndimage.label(pred == k, structure=np.ones((3, 3, 3)))
        sizes = ndimage.sum_labels(np.ones_like(comps), comps, index=np.arange(1, n + 1)).astype(int)
        kept = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= 20]
        for number, component in enumerate(kept, start=1):
            region = comps == component
            q = np.clip(probs[k][region], 1e-12, 1 - 1e-12)
            entropy = float(np.mean(-q * np.log(q) - (1 - q) * np.log(1 - q)))
            expected[f"{CLASS_NAMES[k]} {number}"] = (int(region.sum()), entropy, np.argwhere(region).mean(axis=0))
    assert sorted(row[0] for row in table["data"]) == sorted(expected)
    for row in table["data"]:
        voxels, entropy, _ = expected[row[0]]
        assert int(row[1].replace(",", "")) == voxels and row[2] == pytest.approx(entropy, abs=1e-4)
        assert row[3] == "model"
    assert [row[2] for row in table["data"]] == sorted((row[2] for row in table["data"]), reverse=True)

    # the jump lands on the structure's world position: centroid index × spacing + origin
    for row in range(min(3, len(widget.review_rows))):
        widget._review_table.native.selectRow(row)
        centroid = expected[table["data"][row][0]][2]
        world = centroid * np.array(SPACING) + np.array(ORIGIN)
        z_axis = viewer.dims.ndim - 3
        assert viewer.dims.point[z_axis] == pytest.approx(world[0], abs=SPACING[0] / 2 + 1e-6)
        np.testing.assert_allclose(_camera(viewer).center[-2:], world[1:], atol=1e-6)
        np.testing.assert_allclose(viewer.layers["image"].world_to_data(world), centroid, atol=0.5 + 1e-6)

    widget._raters.value = ["rater 1", "rater 2"]
    widget._agreement.native.click()
    qtbot.waitUntil(lambda: bool(widget.agreement_rows) and widget._agreement.enabled, timeout=120000)
    dice_table = widget._agreement_table.value
    assert [row[1] for row in dice_table["data"][:3]] == ["organ", "lesion", "nodule"]
    labels = phantom[1]
    for row in dice_table["data"][:6]:
        rater = labels[0] if row[0] == "rater 1" else labels[1]
        k = CLASS_NAMES.index(row[1])
        a, b = pred == k, rater == k
        assert row[2] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-4)
    assert errors == []


def test_uncertainty_choices_follow_renames_and_layout(make_napari_viewer, qtbot, phantom, errors):
    viewer = make_napari_viewer()
    add_case(viewer, phantom, model=True)
    widget = UncertaintyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget._probabilities.value = ["model"]
    model = viewer.layers["model"]
    model.name = "ensemble member 1"
    assert widget._probabilities.value == [model] and names(widget._probabilities) == ["ensemble member 1"]
    samples = np.stack([phantom[2][:, ::4], phantom[2][:, ::4]]).astype(np.float32)  # (M, C, Z, Y, X)
    viewer.add_image(samples, name="samples", scale=(1, 1, 12.0, 0.8, 0.8), translate=(0, 0, *ORIGIN))
    assert names(widget._probabilities) == ["ensemble member 1"]  # a member stack is not class probabilities
    widget._layout.value = "members"
    assert names(widget._probabilities) == ["samples"]
    widget._probabilities.value = ["samples"]
    widget._compute_maps.native.click()
    qtbot.waitUntil(lambda: bool(widget.maps) and widget._compute_maps.enabled, timeout=60000)
    mi = viewer.layers["samples mutual information"]
    np.testing.assert_allclose(mi.scale, (12.0, 0.8, 0.8))
    np.testing.assert_allclose(mi.translate, ORIGIN)
    np.testing.assert_allclose(mi.data, 0.0, atol=1e-6)  # two identical members: no disagreement
    assert errors == []


# ---------------------------------------------------------------------------------------------- docks fit
def test_the_three_docks_fit_a_1280x800_window_and_the_plot_is_reachable(make_napari_viewer, qtbot, phantom):
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1280, 800)
    add_case(viewer, phantom, model=True)
    widgets = [SoftLabelsWidget(viewer), CalibrationWidget(viewer), UncertaintyWidget(viewer)]
    docks = [viewer.window.add_dock_widget(widget, name=name)
             for widget, name in zip(widgets, ("Soft labels", "Calibration", "Uncertainty maps"))]
    qtbot.wait(300)
    assert window.height() <= 800 and window.width() <= 1280
    for widget in widgets:  # a long dock scrolls instead of growing the window; no horizontal scrolling
        assert widget.scroll_area.minimumSizeHint().height() <= 300
        assert not widget.scroll_area.horizontalScrollBar().isVisible()
        assert widget.scroll_area.viewport().width() >= widget.content.native.minimumSizeHint().width()
    calibration = widgets[1]
    docks[1].raise_()  # the docks are tabbed: bring Calibration's tab to the front, as a click on it does
    qtbot.wait(100)
    bar = calibration.scroll_area.verticalScrollBar()
    bar.setValue(bar.maximum())
    qtbot.wait(100)
    assert not calibration.plot.visibleRegion().isEmpty()  # the reliability diagram can be scrolled into view
