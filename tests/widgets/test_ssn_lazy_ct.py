"""SSN samples on a CT-size volume in a real viewer: a 2-D SSN's planes computed as they are shown.

A tiny 2-D SSN checkpoint is applied to a generated CT-like volume (512×512 planes, anisotropic
spacing, non-zero origin, made on the fly): the widget takes the lazy path, its samples and mean
layers are dask arrays on the image's grid, a plane not computed yet is computed in a worker and then
shown, and what is shown equals the core's ``slice_labels`` (sliders and "New sample" included) and, for
the mean, the whole prediction of a 2-D SSN on that plane alone. Memory that would not fit becomes a
notification naming the size, the estimate and what to do.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.widgets import _common, _ssn_controls
from napari_seg_uncertainty.widgets.ssn_samples import (
    MEAN_LAYER,
    SAMPLES_LAYER,
    SOURCE_CHECKPOINT,
    SOURCE_SYNTHETIC,
    SSNSamplesWidget,
)

training = pytest.importorskip("napari_seg_uncertainty.core.training")
ssn_inference = pytest.importorskip("napari_seg_uncertainty.core.training.ssn_inference")
if not hasattr(ssn_inference, "predict_ssn_distribution_lazy"):
    pytest.skip("core.training has no predict_ssn_distribution_lazy", allow_module_level=True)
da = pytest.importorskip("dask.array")

pytestmark = pytest.mark.usefixtures("one_thread")

TIMEOUT_MS = 60000
SPACING = (2.5, 0.7, 0.7)
ORIGIN = (-120.0, -180.0, -175.0)
SAMPLES = 4


def ct_volume(depth: int, size: int = 512) -> np.ndarray:
    """A CT-like float32 volume: a body ellipse of soft tissue with a brighter organ, in air (-1000 HU)."""
    y, x = np.ogrid[:size, :size]
    centre = (size - 1) / 2
    body = ((y - centre) / (0.42 * size)) ** 2 + ((x - centre) / (0.47 * size)) ** 2 <= 1
    organ = ((y - 0.45 * size) / (0.12 * size)) ** 2 + ((x - 0.6 * size) / (0.1 * size)) ** 2 <= 1
    plane = np.where(body, 40.0, -1000.0).astype(np.float32)
    plane[organ] = 120.0
    volume = np.empty((depth, size, size), np.float32)
    for z in range(depth):
        volume[z] = plane * (1.0 + 0.002 * z)
    return volume


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny 2-D SSN (rank 3, 2 classes) trained for one step on 16×16 planes."""
    raters = np.zeros((2, 3, 16, 16), dtype=int)
    raters[:, :, 4:12, 4:12] = 1
    raters[1, :, 4:12, 10:12] = 0
    config = training.TrainConfig(
        head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater", spatial_dims=2,
        channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1, batch_size=1, val_fraction=0.0,
        device="cpu", output_dir=str(tmp_path_factory.mktemp("ssn2d")),
    )  # fmt: skip
    *_, last = training.train(config, (np.linspace(0, 1, 3 * 256, dtype=np.float32).reshape(3, 16, 16), raters))
    return last.checkpoint


@pytest.fixture
def errors(monkeypatch):
    messages: list[str] = []
    monkeypatch.setattr(_common, "show_error", messages.append)
    return messages


def _open(viewer, qtbot, image_layer, checkpoint):
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget._source.value = SOURCE_CHECKPOINT
    widget._checkpoint_file.value = checkpoint
    widget._image_layer.value = image_layer
    widget._num_samples.value = SAMPLES
    widget._load_button.changed.emit(True)
    qtbot.waitUntil(lambda: widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    return widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def _shown(layer) -> np.ndarray:
    return np.asarray(layer._slice.image.raw)


def _go_to_plane(viewer, qtbot, widget, z):
    viewer.dims.set_current_step(1, z)
    qtbot.waitUntil(lambda: z in widget.distribution.cached_planes and not widget.busy, timeout=TIMEOUT_MS)


def _check_ct_case(viewer, qtbot, widget, image, checkpoint, planes):
    samples, mean = viewer.layers[SAMPLES_LAYER], viewer.layers[MEAN_LAYER]
    depth = image.data.shape[0]
    assert isinstance(samples.data, da.Array) and isinstance(mean.data, da.Array)
    assert samples.data.shape == (SAMPLES, depth, 512, 512) and mean.data.shape == (depth, 512, 512)
    assert samples.data.chunksize == (1, 1, 512, 512)
    np.testing.assert_allclose(samples.scale, (1.0, *SPACING))
    np.testing.assert_allclose(samples.translate, (0.0, *ORIGIN))
    np.testing.assert_allclose(mean.scale, SPACING)
    np.testing.assert_allclose(mean.translate, ORIGIN)
    np.testing.assert_allclose(mean.extent.world, image.extent.world)
    assert widget.distribution.lazy and widget.distribution.spacing == SPACING
    whole_2d = training.predict_ssn_distribution
    for z in planes:
        _go_to_plane(viewer, qtbot, widget, z)
        entry = widget.current_entry()
        index = widget.stack.sample_indices[entry]
        expected = widget.distribution.slice_labels(z, seed=widget.stack.seed, sample_index=index)
        np.testing.assert_array_equal(_shown(samples), expected)
        # the mean, independently: the whole prediction of the 2-D SSN on this plane alone
        plane_alone = whole_2d(checkpoint, np.asarray(image.data[z]))
        np.testing.assert_array_equal(_shown(mean), np.argmax(plane_alone.mean, axis=0))
        assert len(widget.distribution.cached_planes) <= widget.distribution.cache_planes


def test_ct_volume_with_a_2d_ssn_is_computed_plane_by_plane(
    make_napari_viewer, qtbot, monkeypatch, checkpoint, tmp_path, errors
):
    viewer = make_napari_viewer()
    image = viewer.add_image(ct_volume(40), name="CT", scale=SPACING, translate=ORIGIN)
    widget = _open(viewer, qtbot, image, checkpoint)
    _check_ct_case(viewer, qtbot, widget, image, checkpoint, planes=(20, 0, 39))
    assert widget.distribution.planes_computed <= 4  # only the planes shown (and the first one) ran the network
    samples = viewer.layers[SAMPLES_LAYER]
    z = 39

    # sliders: the plane on screen is redrawn under the new scales and temperature
    widget._class_sliders[1].value = -1.5
    widget._temperature.value = 2.0
    _wait_idle(qtbot, widget)
    moved = widget.base_distribution.with_class_scales([1.0, -1.5]).with_temperature(2.0)
    entry = widget.current_entry()
    expected = moved.slice_labels(z, seed=widget.stack.seed, sample_index=widget.stack.sample_indices[entry])
    np.testing.assert_array_equal(_shown(samples), expected)
    assert widget._dice_plane == z and widget.dice.shape == (SAMPLES, 1)

    # another sample on the slider, then "New sample": a sample never shown, exact
    viewer.dims.set_current_step(0, 2)
    _wait_idle(qtbot, widget)
    widget._new_sample_button.changed.emit(True)
    _wait_idle(qtbot, widget)
    assert widget.stack.sample_indices[2] == SAMPLES
    np.testing.assert_array_equal(_shown(samples), moved.slice_labels(z, seed=widget.stack.seed, sample_index=SAMPLES))

    # 3-D display: the planes computed so far, nothing more computed (no network on every plane)
    computed = widget.distribution.planes_computed
    viewer.dims.ndisplay = 3
    _wait_idle(qtbot, widget)
    volume = _shown(samples)
    assert volume.shape == (40, 512, 512) and widget.distribution.planes_computed == computed
    assert "3-D view" in widget._status.value
    for plane in range(40):
        cached = plane in widget.distribution.cached_planes
        expected = moved.slice_labels(plane, seed=widget.stack.seed, sample_index=SAMPLES) if cached else 0
        np.testing.assert_array_equal(volume[plane], expected)
    viewer.dims.ndisplay = 2
    _wait_idle(qtbot, widget)

    # keeping the sample on screen computes its 40 planes in a worker (the user is told), exactly
    infos: list[str] = []
    monkeypatch.setattr(_common, "show_info", infos.append)
    monkeypatch.setattr(_ssn_controls, "show_info", infos.append)
    kept: list = []
    widget.computed.connect(kept.append)
    widget.keep_sample()
    qtbot.waitUntil(lambda: bool(kept), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    assert infos and "40 planes of sample 2" in infos[0]
    assert kept[0].data.shape == (40, 512, 512)
    for plane in (0, 17, 39):
        expected = moved.slice_labels(plane, seed=widget.stack.seed, sample_index=SAMPLES)
        np.testing.assert_array_equal(kept[0].data[plane], expected)
    np.testing.assert_allclose(kept[0].scale, SPACING)

    # work on every whole sample is refused with a message (it would run the network on 40 planes x 4 samples)
    assert widget.export(tmp_path / "all.npy", what="All samples") is None
    assert errors and "160 plane computations" in errors[-1] and not (tmp_path / "all.npy").exists()


def test_what_would_not_fit_becomes_a_notification(make_napari_viewer, qtbot, monkeypatch, errors):
    viewer = make_napari_viewer()
    viewer.add_image(ct_volume(40), name="CT", scale=SPACING, translate=ORIGIN)
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 256 << 20)
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget.load(source="synthetic", image="CT")
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    message = errors[-1]
    assert "(40, 512, 512)" in message  # the size
    assert "GiB" in message and "256.0 MiB" in message  # the estimate and what is available
    assert "image layer" in message  # what to do
    assert widget.stack is None and SAMPLES_LAYER not in viewer.layers
    assert widget._source.value == SOURCE_SYNTHETIC


def test_a_saved_distribution_too_large_for_memory_says_what_to_do(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, errors
):
    from napari_seg_uncertainty.core.ssn import save_distribution, synthetic_distribution

    path = save_distribution(tmp_path / "ct.npz", synthetic_distribution((6, 512, 512), num_classes=2, rank=2))
    viewer = make_napari_viewer()
    viewer.add_image(ct_volume(6), name="CT", scale=SPACING, translate=ORIGIN)
    # 36 MiB free: the distribution needs 60 MiB (its 48 MiB of arrays and the square root of the diagonal)
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 36 << 20)
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget.load(source="saved", path=path, image="CT")
    qtbot.waitUntil(lambda: bool(errors), timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    expected = 5 * 2 * 6 * 512 * 512 * 4  # (rank 2 + 3) maps of (2 classes, 6, 512, 512) float32
    assert errors[-1].startswith("Loading the SSN distribution failed: ct.npz: grid (6, 512, 512), rank 2")
    assert f"{expected / 2**20:.1f} MiB" in errors[-1] and "36.0 MiB" in errors[-1]
    assert "'SSN checkpoint + image'" in errors[-1]
    assert widget.stack is None and SAMPLES_LAYER not in viewer.layers


def test_a_3d_ssn_too_large_for_memory_says_what_to_do(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, errors
):
    raters = np.zeros((2, 8, 16, 16), dtype=int)
    raters[:, 2:6, 4:12, 4:12] = 1
    config = training.TrainConfig(
        head="ssn", loss="ssn", ssn_rank=2, ssn_samples=2, target="random_rater", spatial_dims=3,
        channels=(2, 4), strides=(2,), patch_size=(8, 16, 16), epochs=1, steps_per_epoch=1, batch_size=1,
        val_fraction=0.0, device="cpu", output_dir=str(tmp_path),
    )  # fmt: skip
    *_, last = training.train(config, (np.linspace(0, 1, 8 * 256, dtype=np.float32).reshape(8, 16, 16), raters))
    viewer = make_napari_viewer()
    image = viewer.add_image(ct_volume(24), name="CT", scale=SPACING, translate=ORIGIN)
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 192 << 20)
    widget = SSNSamplesWidget(viewer)
    viewer.window.add_dock_widget(widget, name="SSN samples")
    widget.load(source="checkpoint", path=last.checkpoint, image=image, num_samples=2)
    qtbot.waitUntil(lambda: bool(errors) or widget.stack is not None, timeout=TIMEOUT_MS)
    _wait_idle(qtbot, widget)
    # too large whole (~0.8 GiB); the lazy path keeps it on disk (zarr), computed slab by slab, but even one slab of
    # the 8-plane windows does not fit in 192 MiB: either way the user is told the size, the memory and what to do
    assert widget.stack is None and len(errors) == 1
    message = errors[0]
    assert "(24, 512, 512)" in message and "192.0 MiB" in message and "2-D SSN" in message
    try:
        import zarr  # noqa: F401
    except ImportError:  # the whole path's estimate, and how to get the lazy one
        assert "estimate" in message and "pip install 'zarr>=3'" in message


@pytest.mark.slow
def test_full_ct_300x512x512(make_napari_viewer, qtbot, checkpoint, errors):
    viewer = make_napari_viewer()
    image = viewer.add_image(ct_volume(300), name="CT", scale=SPACING, translate=ORIGIN)
    widget = _open(viewer, qtbot, image, checkpoint)
    _check_ct_case(viewer, qtbot, widget, image, checkpoint, planes=(150, 151, 299))
    assert errors == []
