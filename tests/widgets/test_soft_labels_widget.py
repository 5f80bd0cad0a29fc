"""The "Soft labels" dock widget, driven in a real viewer; numbers checked against independent code."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk

from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import soft_labels as widget_module
from napari_seg_uncertainty.widgets.soft_labels import DIFFERENCE_LAYER, SoftLabelsWidget

SCALE = (2.0, 0.5, 0.5)
TRANSLATE = (0.0, 10.0, -4.0)
CLASS_NAMES = ["background", "organ", "lesion"]


def paper_kernel(ndim: int, sigma: float, spacing=None) -> np.ndarray:
    """SVLS weights as the paper words them (Gaussian, centre := sum of the others), normalised to sum 1."""
    step = np.ones(ndim) if spacing is None else np.asarray(spacing, dtype=float)
    weights = np.zeros((3,) * ndim)
    for index in itertools.product(range(3), repeat=ndim):
        weights[index] = math.exp(-sum(((i - 1) * s) ** 2 for i, s in zip(index, step)) / (2 * sigma**2))
    weights[(1,) * ndim] = 0.0
    weights[(1,) * ndim] = weights.sum()
    return weights / weights.sum()


def direct_svls(labels: np.ndarray, num_classes: int, kernel: np.ndarray) -> np.ndarray:
    padded = np.pad(labels, 1, mode="edge")
    out = np.zeros((num_classes, *labels.shape))
    for index in itertools.product(range(3), repeat=labels.ndim):
        window = padded[tuple(slice(i, i + n) for i, n in zip(index, labels.shape))]
        for k in range(num_classes):
            out[k] += kernel[index] * (window == k)
    return out


def independent_one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.moveaxis(np.eye(num_classes)[labels], -1, 0)


@pytest.fixture
def raters() -> np.ndarray:
    base = np.zeros((4, 12, 14), dtype=np.uint8)
    base[:, 2:10, 3:12] = 1
    base[1:3, 5:8, 6:9] = 2
    stack = np.stack([base.copy() for _ in range(3)])
    stack[1, :, 9, 3:12] = 0  # rater 2 draws the organ one row shorter
    stack[2, 1:3, 4:7, 5:10] = 2  # rater 3 sees a bigger lesion
    stack[2, 2, 5, 1] = 1  # an isolated voxel (all 26 neighbours background)
    return stack


@pytest.fixture
def errors(monkeypatch) -> list[str]:
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    monkeypatch.setattr(widget_module, "show_error", messages.append)
    return messages


def make_widget(make_napari_viewer, raters, *, names=None):
    viewer = make_napari_viewer()
    names = names or [f"rater{i + 1}" for i in range(len(raters))]
    for name, labels in zip(names, raters):
        viewer.add_labels(labels, name=name, scale=SCALE, translate=TRANSLATE,
                          metadata={"class_names": CLASS_NAMES, "rater": name})
    widget = SoftLabelsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget


def wait_for_result(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.result is not None and not widget.busy, timeout=30000)


def soft_layers(viewer, slot="A"):
    return [layer for layer in viewer.layers if layer.name.startswith(f"soft {slot}: ")]


def test_svls_of_one_rater_shows_class_layers_with_scale(make_napari_viewer, qtbot, raters, errors):
    viewer, widget = make_widget(make_napari_viewer, raters)
    # all selected, nothing computed yet
    assert [layer.name for layer in widget._raters.value] == ["rater1", "rater2", "rater3"]
    assert widget.result is None
    widget._live.value = False
    widget._raters.value = ["rater3"]
    widget._method.value = "svls"
    widget._compute.native.click()
    wait_for_result(qtbot, widget)
    assert errors == []
    layers = soft_layers(viewer)
    assert [layer.name for layer in layers] == [f"soft A: {n}" for n in CLASS_NAMES]
    expected = direct_svls(raters[2], 3, paper_kernel(3, 1.0))
    for k, layer in enumerate(layers):
        assert layer._type_string == "image"
        np.testing.assert_allclose(layer.data, expected[k], atol=1e-6)
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
        assert tuple(layer.contrast_limits) == (0.0, 1.0)
        assert layer.metadata["method"] == "svls" and layer.metadata["class"] == k
    assert viewer.layers["soft A: organ"].colormap.name == "red"
    assert not viewer.layers["soft A: background"].visible
    # the isolated voxel gets 1/2 for its own class
    assert viewer.layers["soft A: organ"].data[2, 5, 1] == pytest.approx(0.5, abs=1e-6)
    assert viewer.layers["soft A: background"].data[2, 5, 1] == pytest.approx(0.5, abs=1e-6)
    assert "SVLS σ=1.00 voxel" in widget._status.value


def test_parameter_changes_update_layers_in_place(make_napari_viewer, qtbot, raters, errors):
    viewer, widget = make_widget(make_napari_viewer, raters)
    assert widget._method.value == "msvls"  # the default
    widget._sigma.value = 1.5  # live: computes
    wait_for_result(qtbot, widget)
    layers_before = {layer.name: layer for layer in viewer.layers}
    kernel = paper_kernel(3, 1.5)
    expected = np.mean([direct_svls(r, 3, kernel) for r in raters], axis=0)
    np.testing.assert_allclose(viewer.layers["soft A: lesion"].data, expected[2], atol=1e-6)

    widget._sigma.value = 2.0
    qtbot.waitUntil(lambda: widget.result.request.sigma == 2.0 and not widget.busy, timeout=30000)
    kernel = paper_kernel(3, 2.0)
    expected = np.mean([direct_svls(r, 3, kernel) for r in raters], axis=0)
    for k, name in enumerate(CLASS_NAMES):
        layer = viewer.layers[f"soft A: {name}"]
        assert layer is layers_before[f"soft A: {name}"]  # same layer object: updated in place
        np.testing.assert_allclose(layer.data, expected[k], atol=1e-6)

    # σ in mm uses the layers' scale as spacing
    widget._physical.value = True
    qtbot.waitUntil(lambda: widget.result.request.spacing is not None and not widget.busy, timeout=30000)
    kernel = paper_kernel(3, 2.0, SCALE)
    expected = np.mean([direct_svls(r, 3, kernel) for r in raters], axis=0)
    np.testing.assert_allclose(viewer.layers["soft A: organ"].data, expected[1], atol=1e-6)

    # label smoothing with α
    widget._method.value = "label_smoothing"
    widget._alpha.value = 0.3
    qtbot.waitUntil(lambda: widget.result.request.method == "label_smoothing"
                    and widget.result.request.alpha == pytest.approx(0.3) and not widget.busy, timeout=30000)
    votes = np.stack([(raters == k).sum(0) for k in range(3)])
    majority = np.argmax(votes, axis=0)  # ties → lowest class
    expected = independent_one_hot(majority, 3) * 0.7 + 0.3 / 3
    np.testing.assert_allclose(viewer.layers["soft A: organ"].data, expected[1], atol=1e-6)
    assert "majority vote" in widget._status.value
    assert len(viewer.layers) == len(layers_before)  # no pile-up
    assert errors == []


def test_comparison_difference_layer_and_numbers(make_napari_viewer, qtbot, raters, errors):
    viewer, widget = make_widget(make_napari_viewer, raters)
    widget._live.value = False
    widget._method.value = "msvls"
    widget._compare.value = "rater_mean"
    widget._compute.native.click()
    wait_for_result(qtbot, widget)
    first = np.mean([direct_svls(r, 3, paper_kernel(3, 1.0)) for r in raters], axis=0)
    second = np.mean([independent_one_hot(r, 3) for r in raters], axis=0)
    assert [layer.name for layer in soft_layers(viewer, "B")] == [f"soft B: {n}" for n in CLASS_NAMES]
    np.testing.assert_allclose(viewer.layers["soft B: lesion"].data, second[2], atol=1e-6)
    difference = viewer.layers[DIFFERENCE_LAYER]
    assert widget._difference_class.value == 1  # first foreground class by default
    np.testing.assert_allclose(difference.data, first[1] - second[1], atol=1e-6)
    np.testing.assert_allclose(difference.scale, SCALE)
    assert tuple(difference.contrast_limits) == (-1.0, 1.0)
    status = widget._status.value
    assert f"mean |Δ| = {np.abs(first[1] - second[1]).mean():.4f}" in status
    assert f"max |Δ| = {np.abs(first[1] - second[1]).max():.4f}" in status
    assert f"mean total variation = {0.5 * np.abs(first - second).sum(0).mean():.4f}" in status

    widget._difference_class.value = 2
    np.testing.assert_allclose(viewer.layers[DIFFERENCE_LAYER].data, first[2] - second[2], atol=1e-6)
    assert f"max |Δ| = {np.abs(first[2] - second[2]).max():.4f}" in widget._status.value

    # switching the comparison off removes B and the difference
    widget._compare.value = "(none)"
    widget._compute.native.click()
    qtbot.waitUntil(lambda: widget.result.request.compare_method is None and not widget.busy, timeout=30000)
    assert soft_layers(viewer, "B") == []
    assert DIFFERENCE_LAYER not in viewer.layers
    assert errors == []


def test_staple_and_majority_vote_match_simpleitk(make_napari_viewer, qtbot, raters, errors):
    binary = (raters > 0).astype(np.uint8)
    viewer, widget = make_widget(make_napari_viewer, binary)
    for layer in viewer.layers:
        layer.metadata = {}  # no class names: two classes, the binary STAPLE path
    widget._live.value = False
    widget._method.value = "staple"
    widget._compute.native.click()
    wait_for_result(qtbot, widget)
    staple_filter = sitk.STAPLEImageFilter()
    staple_filter.SetForegroundValue(1)
    expected = sitk.GetArrayFromImage(staple_filter.Execute([sitk.GetImageFromArray(r) for r in binary]))
    assert [layer.name for layer in soft_layers(viewer)] == ["soft A: class 0", "soft A: class 1"]
    np.testing.assert_allclose(viewer.layers["soft A: class 1"].data, expected, atol=1e-6)
    np.testing.assert_allclose(viewer.layers["soft A: class 0"].data, 1 - expected, atol=1e-6)

    widget._method.value = "majority_vote"
    widget._compute.native.click()
    qtbot.waitUntil(lambda: widget.result.request.method == "majority_vote" and not widget.busy, timeout=30000)
    voting = sitk.LabelVotingImageFilter()
    voting.SetLabelForUndecidedPixels(255)
    vote = sitk.GetArrayFromImage(voting.Execute([sitk.GetImageFromArray(r) for r in binary]))
    assert np.all(vote != 255)  # three raters, two classes: never a tie
    np.testing.assert_array_equal(viewer.layers["soft A: class 1"].data, (vote == 1).astype(np.float32))
    assert errors == []


def test_fewer_classes_remove_stale_layers(make_napari_viewer, qtbot, raters, errors):
    viewer, widget = make_widget(make_napari_viewer, raters, names=["r1", "r2", "r3"])
    for layer in viewer.layers:
        layer.metadata = {}
    viewer.add_labels((raters[0] > 0).astype(np.uint8), name="binary", scale=SCALE, translate=TRANSLATE)
    widget._live.value = False
    widget._raters.value = ["r1"]
    widget._method.value = "one_hot"
    widget._compute.native.click()
    wait_for_result(qtbot, widget)
    assert [layer.name for layer in soft_layers(viewer)] == ["soft A: class 0", "soft A: class 1", "soft A: class 2"]
    widget._raters.value = ["binary"]
    widget._compute.native.click()
    qtbot.waitUntil(lambda: widget.result.request.rater_names == ("binary",) and not widget.busy, timeout=30000)
    assert [layer.name for layer in soft_layers(viewer)] == ["soft A: class 0", "soft A: class 1"]
    np.testing.assert_array_equal(viewer.layers["soft A: class 1"].data, raters[0] > 0)
    assert errors == []


def test_export_keeps_spacing_and_refuses_to_overwrite(make_napari_viewer, qtbot, raters, errors, tmp_path):
    viewer, widget = make_widget(make_napari_viewer, raters)
    widget._export.native.click()  # nothing computed yet
    assert errors and "nothing computed yet" in errors[-1]
    widget._live.value = False
    widget._method.value = "rater_mean"
    widget._compute.native.click()
    wait_for_result(qtbot, widget)
    target = tmp_path / "soft.nii.gz"
    widget._export_path.value = target
    widget.export()
    qtbot.waitUntil(lambda: not widget.exporting, timeout=30000)
    assert target.exists()
    image = sitk.ReadImage(str(target))
    np.testing.assert_allclose(image.GetSpacing(), tuple(reversed(SCALE)))
    np.testing.assert_allclose(image.GetOrigin(), tuple(reversed(TRANSLATE)))
    assert image.GetNumberOfComponentsPerPixel() == 3
    written = np.moveaxis(sitk.GetArrayFromImage(image), -1, 0)
    np.testing.assert_allclose(written, np.mean([independent_one_hot(r, 3) for r in raters], axis=0), atol=1e-6)

    count = len(errors)
    widget._export.native.click()
    qtbot.waitUntil(lambda: not widget.exporting, timeout=30000)
    assert len(errors) == count + 1
    assert "Export soft labels failed" in errors[-1] and "already exists" in errors[-1]


def test_bad_input_becomes_notifications(make_napari_viewer, qtbot, raters, errors):
    viewer, widget = make_widget(make_napari_viewer, raters)
    widget._raters.value = []
    assert widget.compute() is None
    assert "no rater layer selected" in errors[-1]
    viewer.add_labels(np.zeros((4, 5, 5), dtype=np.uint8), name="small", scale=SCALE)
    widget._raters.value = ["rater1", "small"]
    assert "different shapes" in errors[-1]
    viewer.add_labels(np.full(raters.shape[1:], 300, dtype=np.uint16), name="huge label", scale=SCALE)
    widget._raters.value = ["huge label"]
    assert "301 classes" in errors[-1]
    assert widget.result is None
    # an error inside the worker (σ outside the core's range) is a notification too
    widget._live.value = False
    widget._raters.value = ["rater1"]
    widget._method.value = "svls"
    widget._sigma.value = 1.0
    widget.compute()
    wait_for_result(qtbot, widget)
    request = dataclasses.replace(widget.build_request(), sigma=-1.0)
    count = len(errors)
    widget._start(request)
    qtbot.waitUntil(lambda: len(errors) > count and not widget.busy, timeout=30000)
    assert errors[-1].startswith("Soft labels failed: sigma must be a finite number > 0")
    assert widget._status.value.startswith("Failed:")


def test_soft_labels_step_docstring_examples_run():
    import doctest

    from napari_seg_uncertainty.workflow import soft_labels as step_module

    result = doctest.testmod(step_module)
    assert result.attempted > 0 and result.failed == 0


def test_public_compute_sets_inputs_and_computes_once(make_napari_viewer, qtbot, raters, errors):
    """compute(...) with keywords: the settings are applied together (live updates on), one result, ``computed``."""
    viewer, widget = make_widget(make_napari_viewer, raters)
    assert widget._live.value
    emitted: list = []
    widget.computed.connect(emitted.append)
    with qtbot.waitSignal(widget.computed, timeout=30000):
        worker = widget.compute(raters=["rater1", "rater2"], method="msvls", compare_method="rater_mean", sigma=1.5)
        assert worker is not None
    result = emitted[-1]
    assert result is widget.result and not widget.busy
    assert result.request.rater_names == ("rater1", "rater2") and result.request.sigma == 1.5
    assert (result.request.method, result.request.compare_method) == ("msvls", "rater_mean")
    expected = np.mean([direct_svls(r, 3, paper_kernel(3, 1.5)) for r in raters[:2]], axis=0)
    np.testing.assert_allclose(viewer.layers["soft A: organ"].data, expected[1], atol=1e-6)
    qtbot.wait(300)
    assert len(emitted) == 1 and errors == []
    with qtbot.waitSignal(widget.computed, timeout=30000):
        widget.compute(compare_method="none")
    assert widget.result.request.compare_method is None and DIFFERENCE_LAYER not in viewer.layers
    assert widget.compute(raters=["no such layer"]) is None and "no layer named 'no such layer'" in errors[-1]
