"""Load raters, Soft labels and Uncertainty maps on a CT-size slab in a real viewer (issue 15, deliverable 6).

A 32×512×512 slab of a CT-like case (4 raters, 3 classes, spacing (2.5, 0.7, 0.7) mm, a non-zero origin) is
generated here and written as NIfTI with SimpleITK; nothing is stored. Every layer is checked for shape, dtype
and placement (scale = spacing, translate = origin) and every number against the core function on the same
raters (``rater_entropy``, ``agreement_map``, ``compute_soft_labels``, ``entropy``). With the free memory
patched low, each widget refuses with a notification naming the size, the estimate and what to do, and the
layers already shown stay as they were. That the window never blocks for > 100 ms is measured by
``benchmarks/ct_scale_widgets.py``, not asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty._sample_data import image_contrast_limits
from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core.labels import compute_soft_labels
from napari_seg_uncertainty.core.raters.statistics import agreement_map, rater_entropy
from napari_seg_uncertainty.core.uncertainty import entropy
from napari_seg_uncertainty.widgets import _common
from napari_seg_uncertainty.widgets import load_raters as load_raters_module
from napari_seg_uncertainty.widgets.load_raters import LoadRatersWidget
from napari_seg_uncertainty.widgets.soft_labels import SYNC_VALUES, SoftLabelsWidget
from napari_seg_uncertainty.widgets.uncertainty import UncertaintyWidget

SLAB = (32, 512, 512)
SPACING = (2.5, 0.7, 0.7)
ORIGIN = (-370.0, -180.0, -175.5)
CLASSES = ["background", "organ", "lesion"]
TIMEOUT_MS = 120_000


def make_slab(shape=SLAB, num_raters: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like image (HU, float32) and nested-ellipsoid raters (uint8) whose boundaries differ per rater."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    z = (z - shape[0] / 2) / (0.6 * shape[0])
    y = (y - shape[1] / 2) / (0.4 * shape[1])
    x = (x - shape[2] / 2) / (0.45 * shape[2])
    organ = ((y - 0.1) / 0.55) ** 2 + ((x + 0.2) / 0.45) ** 2 + (z / 0.9) ** 2
    lesion = ((y - 0.15) / 0.2) ** 2 + ((x + 0.25) / 0.18) ** 2 + (z / 0.5) ** 2
    image = np.where(y**2 + x**2 < 1.0, 40.0, -1000.0) + 60.0 * (organ < 1) + 45.0 * (lesion < 1)
    image = (image + rng.normal(0, 12, shape)).astype(np.float32)
    raters = np.zeros((num_raters, *shape), np.uint8)
    for r in range(num_raters):
        wobble = 0.05 * np.cos(3 * y + rng.uniform(0, 6)) + 0.05 * np.cos(3 * x + rng.uniform(0, 6))
        raters[r][organ < 1.0 + wobble] = 1
        raters[r][lesion < 1.0 + wobble] = 2
    return image, raters


def write_nifti(path, array) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(SPACING)))  # SimpleITK's (x, y, z) order
    image.SetOrigin(tuple(float(o) for o in reversed(ORIGIN)))
    sitk.WriteImage(image, str(path))


@pytest.fixture(scope="module")
def slab():
    return make_slab()


@pytest.fixture
def case(tmp_path, slab):
    image, raters = slab
    folder = tmp_path / "ct_slab"
    folder.mkdir()
    write_nifti(folder / "image.nii", image)
    for r, labels in enumerate(raters):
        write_nifti(folder / f"rater{r + 1}.nii", labels)
    return folder


@pytest.fixture
def errors(monkeypatch):
    out: list[str] = []
    monkeypatch.setattr(_common, "show_error", out.append)
    monkeypatch.setattr(load_raters_module, "show_error", out.append)
    return out


def assert_placed(layer, *, leading: int = 0) -> None:
    np.testing.assert_allclose(layer.scale[leading:], SPACING)
    np.testing.assert_allclose(layer.translate[leading:], ORIGIN)


def load_case(viewer, qtbot, folder) -> LoadRatersWidget:
    widget = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.load_from_path(folder, class_names=CLASSES) is not None
    qtbot.waitUntil(lambda: widget.statistics is not None and not widget.busy, timeout=TIMEOUT_MS)
    return widget


def test_load_raters_ct_slab_layers_and_maps(make_napari_viewer, qtbot, case, slab, errors):
    """From files, then from the Labels layers: placement, dtypes and the maps equal the core functions."""
    image, raters = slab
    viewer = make_napari_viewer()
    widget = load_case(viewer, qtbot, case)
    assert not errors
    assert viewer.layers.selection.active is viewer.layers["rater4"]  # selected once, after every layer was added
    shown = viewer.layers["image"]
    assert shown.data.shape == SLAB and shown.data.dtype == np.float32
    np.testing.assert_array_equal(shown.data, image)
    assert_placed(shown)
    lo, hi = shown.contrast_limits  # given to napari (0.5-99.5 % of a strided sample): it never scanned the volume
    assert image.min() <= lo < -900 and 40 < hi <= image.max()
    assert (lo, hi) == pytest.approx(image_contrast_limits(image))
    for r in range(4):
        layer = viewer.layers[f"rater{r + 1}"]
        assert layer.data.shape == SLAB and np.issubdtype(layer.data.dtype, np.integer)
        np.testing.assert_array_equal(layer.data, raters[r])
        assert_placed(layer)
    expected_entropy = rater_entropy(raters, num_classes=3)
    entropy_layer = viewer.layers["rater entropy"]
    assert entropy_layer.data.shape == SLAB and entropy_layer.data.dtype == np.float32
    np.testing.assert_allclose(entropy_layer.data, expected_entropy, atol=1e-6)
    assert_placed(entropy_layer)
    expected_agreement = agreement_map(raters, num_classes=3)
    for k, name in enumerate(CLASSES[1:], start=1):
        layer = viewer.layers[f"agreement: {name}"]
        np.testing.assert_allclose(layer.data, expected_agreement[k], atol=1e-6)
        np.testing.assert_allclose(layer.data, (raters == k).mean(axis=0), atol=1e-6)  # independent of the core
        assert_placed(layer)
    # the summary's volumes (computed in the worker): mean organ volume in ml from voxel counts × voxel volume
    organ_ml = np.count_nonzero(raters == 1) / 4 * np.prod(SPACING) / 1000
    assert widget._summary_table.value["columns"][0] == "ml"
    assert float(widget._summary_table.value["data"][1][0]) == pytest.approx(organ_ml, rel=1e-2)

    # again from the Labels layers: only the maps are replaced, the raters stay the same objects
    rater_layers = [viewer.layers[f"rater{r + 1}"] for r in range(4)]
    before = widget.statistics
    assert widget.load_from_layers(rater_layers) is not None
    qtbot.waitUntil(lambda: widget.statistics is not None and widget.statistics is not before and not widget.busy,
                    timeout=TIMEOUT_MS)
    assert [viewer.layers[f"rater{r + 1}"] for r in range(4)] == rater_layers
    np.testing.assert_allclose(viewer.layers["rater entropy"].data, expected_entropy, atol=1e-6)
    assert_placed(viewer.layers["rater entropy"])
    assert not errors


@pytest.mark.parametrize("methods", [("msvls", "one_hot"), ("label_smoothing", "svls"), ("rater_mean", "staple"),
                                     ("majority_vote", None)])
def test_soft_labels_ct_slab_equal_the_core(make_napari_viewer, qtbot, slab, errors, methods):
    """Each method's layers equal compute_soft_labels on the same raters (the stack is built in the worker)."""
    image, raters = slab
    assert raters.size > SYNC_VALUES  # the CT-size path: raters stacked and checked off the GUI thread
    viewer = make_napari_viewer()
    layers = [viewer.add_labels(r, name=f"rater{i + 1}", scale=SPACING, translate=ORIGIN,
                                metadata={"class_names": CLASSES}) for i, r in enumerate(raters)]
    widget = SoftLabelsWidget(viewer)
    widget._live.value = False
    method, compare = methods
    assert widget.compute(raters=layers, method=method, compare_method=compare or "none") is not None
    qtbot.waitUntil(lambda: widget.result is not None and not widget.busy, timeout=TIMEOUT_MS)
    assert not errors
    for slot, key in (("A", method), ("B", compare)):
        if key is None:
            assert "soft B: organ" not in viewer.layers
            continue
        expected = compute_soft_labels(raters, num_classes=3, method=key)
        for k, name in enumerate(CLASSES):
            layer = viewer.layers[f"soft {slot}: {name}"]
            assert layer.data.shape == SLAB and layer.data.dtype == np.float32
            np.testing.assert_allclose(layer.data, expected[k], atol=1e-6)
            assert_placed(layer)
    if compare is not None:
        difference = viewer.layers["soft A − B"]
        np.testing.assert_allclose(
            difference.data, compute_soft_labels(raters, num_classes=3, method=method)[1]
            - compute_soft_labels(raters, num_classes=3, method=compare)[1], atol=1e-6)
        assert_placed(difference)


def test_entropy_map_of_the_rater_mean_equals_rater_entropy(make_napari_viewer, qtbot, slab, errors):
    """Uncertainty maps on the raters' mean one-hot (C, Z, Y, X): the entropy layer equals rater_entropy."""
    _image, raters = slab
    viewer = make_napari_viewer()
    probs = np.stack([(raters == k).mean(axis=0, dtype=np.float32) for k in range(3)])
    layer = viewer.add_image(probs, name="rater mean", scale=(1, *SPACING), translate=(0, *ORIGIN),
                             contrast_limits=(0, 1), metadata={"class_names": CLASSES})
    widget = UncertaintyWidget(viewer)
    assert widget.compute_maps(probabilities=[layer]) is not None
    qtbot.waitUntil(lambda: bool(widget.maps) and not widget.busy, timeout=TIMEOUT_MS)
    assert not errors
    shown = viewer.layers["rater mean entropy"]
    assert shown.data.shape == SLAB and shown.data.dtype == np.float32
    np.testing.assert_allclose(shown.data, rater_entropy(raters, num_classes=3), atol=1e-5)
    np.testing.assert_allclose(shown.data, entropy(probs), atol=1e-6)
    assert_placed(shown)


def test_low_memory_refusals_leave_every_layer_as_it_was(make_napari_viewer, qtbot, case, slab, errors,
                                                         monkeypatch):
    """With the free memory patched low, each widget refuses before computing, with a message naming the size,
    the estimate and what to do; the layers already shown keep their data."""
    _image, raters = slab
    viewer = make_napari_viewer()
    loader = load_case(viewer, qtbot, case)
    soft = SoftLabelsWidget(viewer)
    soft._live.value = False
    rater_layers = [viewer.layers[f"rater{r + 1}"] for r in range(4)]
    soft.compute(raters=rater_layers, method="rater_mean", compare_method="none")
    qtbot.waitUntil(lambda: soft.result is not None and not soft.busy, timeout=TIMEOUT_MS)
    probs = np.stack([(raters == k).mean(axis=0, dtype=np.float32) for k in range(3)])
    prob_layer = viewer.add_image(probs, name="rater mean", scale=(1, *SPACING), translate=(0, *ORIGIN),
                                  contrast_limits=(0, 1))
    unc = UncertaintyWidget(viewer)
    unc.compute_maps(probabilities=[prob_layer])
    qtbot.waitUntil(lambda: bool(unc.maps) and not unc.busy, timeout=TIMEOUT_MS)
    assert not errors
    before = {layer.name: (layer, layer.data) for layer in viewer.layers}
    statistics, result, maps = loader.statistics, soft.result, unc.maps

    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 40 * 2**20)  # 40 MiB free
    low = "not enough free memory — "
    steps = [
        (lambda: loader.load_from_path(case), f"Load raters failed: {low}5 files: reading them", loader),
        (lambda: loader.load_from_layers(rater_layers), f"Load raters from layers failed: {low}4 raters of "
         "32×512×512 voxels, 3 classes: the agreement and entropy maps", loader),
        (lambda: soft.compute(method="msvls", compare_method="one_hot"), f"Soft labels failed: {low}4 raters of "
         "32×512×512 voxels, 3 classes: mSVLS compared with One-hot", soft),
        (lambda: unc.compute_maps(), f"Uncertainty maps failed: {low}the probability layer(s) rater mean "
         "(3×32×512×512)", unc),
    ]
    for start, prefix, widget in steps:
        count = len(errors)
        assert start() is not None
        qtbot.waitUntil(lambda w=widget, n=count: len(errors) > n and not w.busy, timeout=TIMEOUT_MS)
        message = errors[-1]
        assert message.startswith(prefix), message
        assert "would need" in message and "more than the 40.0 MiB of memory available" in message
        assert "your layers are unchanged" in message
    assert {layer.name: (layer, layer.data) for layer in viewer.layers}.keys() == before.keys()
    for layer in viewer.layers:
        assert before[layer.name][0] is layer and before[layer.name][1] is layer.data
    assert loader.statistics is statistics and soft.result is result and unc.maps is maps
