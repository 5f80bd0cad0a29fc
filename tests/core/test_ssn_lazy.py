"""Lazy SSN distributions (issue 15): a lazily computed plane equals the plane of the full computation.

2-D SSN on a volume: every plane, its samples and its mean bit for bit those of ``predict_ssn_distribution``
and of the batched MONAI computation it used to do.  3-D SSN: slab-by-slab inference into a zarr store
equals the whole-volume sliding-window result bit for bit (the same windows, weights and summation order).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core._memory import OutputTooLargeError
from napari_seg_uncertainty.core.ssn import LowRankLogits, SampleLabelStack, synthetic_distribution
from napari_seg_uncertainty.core.ssn.lazy import ArrayPlaneSource, LazyLowRankLogits
from napari_seg_uncertainty.core.ssn.store import _window_starts, plan_slabs, write_slabs
from napari_seg_uncertainty.core.training import TrainConfig, predict_ssn_distribution, train
from napari_seg_uncertainty.core.training.inference import _predict_raw_chunks, load_trained_model
from napari_seg_uncertainty.core.training.normalization import normalize_image
from napari_seg_uncertainty.core.training.ssn_inference import predict_ssn_distribution_lazy

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(channels=(4, 8), strides=(2,), num_res_units=0, device="cpu", batch_size=1, val_fraction=0.0)


def _case(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape).astype(np.float32)
    raters = np.zeros((2, *shape), dtype=int)
    raters[(slice(None),) + tuple(slice(s // 4, 3 * s // 4) for s in shape)] = 1
    raters[1, ..., : shape[-1] // 2] = 0
    return image, raters


def _checkpoint(spatial_dims: int, tmp: str, **extra) -> str:
    shape = (12, 24, 20) if spatial_dims == 3 else (4, 40, 36)
    config = TrainConfig(head="ssn", loss="ssn", target="random_rater", ssn_rank=3, ssn_samples=2, epochs=1,
                         steps_per_epoch=1, spatial_dims=spatial_dims, patch_size=(8, 8, 8) if spatial_dims == 3
                         else (16, 16), sw_batch_size=3, output_dir=tmp, **TINY, **extra)  # fmt: skip
    *_, last = train(config, _case(shape))
    return last.checkpoint


@pytest.fixture(scope="module")
def ckpt2d(tmp_path_factory):
    return _checkpoint(2, str(tmp_path_factory.mktemp("ssn2d")), normalization="zscore")


@pytest.fixture(scope="module")
def ckpt3d(tmp_path_factory):
    return _checkpoint(3, str(tmp_path_factory.mktemp("ssn3d")))


# ------------------------------------------------------------------------------------- generic lazy API
def test_lazy_planes_and_samples_equal_the_full_distribution():
    for planes in (False, True):
        base = synthetic_distribution((5, 12, 10), num_classes=3, rank=2, seed=4)
        full = LowRankLogits(base.mean, base.cov_factor, base.cov_diag, independent_planes=planes)
        lazy = LazyLowRankLogits(ArrayPlaneSource(full), cache_planes=2)
        assert (lazy.independent_planes, lazy.spatial_shape, lazy.rank) == (planes, (5, 12, 10), 2)
        for changed_full, changed_lazy in [
            (full, lazy),
            (full.with_temperature(1.7).scale_class(2, -0.5), lazy.with_temperature(1.7).scale_class(2, -0.5)),
            (full.with_class_scales([0, 1, 2]), lazy.with_class_scales([0, 1, 2])),
        ]:
            for z in range(5):
                np.testing.assert_array_equal(changed_lazy.slice(z, seed=3, sample_index=2),
                                              changed_full.slice(z, seed=3, sample_index=2))
            np.testing.assert_array_equal(changed_lazy.sample_labels_at(1, seed=8),
                                          changed_full.sample_labels_at(1, seed=8))
        assert len(lazy.cached_planes) == 2
        plane = lazy.with_temperature(0.5).plane(3)
        np.testing.assert_array_equal(plane.mean, full.mean[:, 3])
        np.testing.assert_array_equal(plane.cov_factor, full.cov_factor[:, :, 3])
        assert plane.temperature == 0.5


def test_dask_arrays_are_the_planes():
    full = synthetic_distribution((4, 9, 11), num_classes=3, rank=2, seed=2)
    lazy = LazyLowRankLogits(ArrayPlaneSource(full), cache_planes=1)
    labels = lazy.mean_labels_dask()
    assert labels.shape == (4, 9, 11) and labels.chunks[0] == (1, 1, 1, 1) and lazy.planes_computed == 0
    np.testing.assert_array_equal(labels[2].compute(), full.mean_prediction()[2])
    np.testing.assert_array_equal(labels.compute(), full.mean_prediction())
    probs = lazy.mean_probabilities_dask()[:, 1].compute()
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(full.mean[:, 1].copy()), 0).numpy(), rtol=1e-6)
    sample = lazy.with_temperature(2.0).sample_labels_dask(seed=5, sample_index=3)
    np.testing.assert_array_equal(sample.compute(), full.with_temperature(2.0).sample_labels_at(3, seed=5))


def test_sample_label_stack_reads_a_lazy_distribution_plane_by_plane():
    full = synthetic_distribution((4, 9, 11), num_classes=3, rank=2, seed=2)
    lazy = LazyLowRankLogits(ArrayPlaneSource(full))
    stack = SampleLabelStack(lazy, range(3), seed=4)
    np.testing.assert_array_equal(stack[2, 1], full.slice_labels(1, seed=4, sample_index=2))
    stack.set_distribution(lazy.scale_class(0, 2.0))
    np.testing.assert_array_equal(stack[1], full.scale_class(0, 2.0).sample_labels_at(1, seed=4))
    assert stack.prepare_noise(0) is False  # never a whole volume of noise for a lazy distribution


# ------------------------------------------------------------------------------------- 2-D SSN, plane on demand
def test_lazy_2d_ssn_planes_equal_the_full_prediction(ckpt2d):
    image = _case((5, 40, 36), seed=1)[0]
    full = predict_ssn_distribution(ckpt2d, image)
    lazy = predict_ssn_distribution_lazy(ckpt2d, image, cache_planes=2)
    assert lazy.independent_planes and full.independent_planes
    for z in (3, 0, 4):  # out of order, more planes than the cache holds
        plane = lazy.plane(z)
        np.testing.assert_array_equal(plane.mean, full.mean[:, z])
        np.testing.assert_array_equal(plane.cov_factor, full.cov_factor[:, :, z])
        np.testing.assert_array_equal(plane.cov_diag, full.cov_diag[:, z])
        np.testing.assert_array_equal(lazy.slice_labels(z, seed=2, sample_index=1),
                                      full.slice_labels(z, seed=2, sample_index=1))
    assert lazy.planes_computed == 3
    lazy.slice(0, seed=1)  # cached: not computed again
    assert lazy.planes_computed == 3
    # another thread count sums the convolutions in another order: float32 rounding only
    threaded = predict_ssn_distribution_lazy(ckpt2d, image, torch_threads=2)
    np.testing.assert_allclose(threaded.plane(4).cov_factor, full.cov_factor[:, :, 4], rtol=1e-4, atol=1e-5)
    assert torch.get_num_threads() == 1  # torch_threads=2 only while the plane ran (one_thread fixture: 1)


def test_2d_planes_equal_the_batched_monai_computation(ckpt2d):
    """Independent of the per-plane code: MONAI on batches of 8 planes, as predict_ssn_distribution used to."""
    image = _case((9, 40, 36), seed=2)[0]
    trained = load_trained_model(ckpt2d)
    net = trained.model.members[0]
    normed = normalize_image(image[None], trained.info["normalization"])
    raw = torch.cat([r for _, r in _predict_raw_chunks(net, normed, trained.info, trained.device, trained.config)])
    parts = net.ssn_parameters(raw)
    lazy = predict_ssn_distribution_lazy(ckpt2d, image)
    for z in (0, 7, 8):
        np.testing.assert_array_equal(lazy.plane(z).mean, parts.mean[z].numpy())
        np.testing.assert_array_equal(lazy.plane(z).cov_factor, parts.cov_factor[z].numpy())
        np.testing.assert_array_equal(lazy.plane(z).cov_diag, parts.cov_diag[z].numpy())


# ------------------------------------------------------------------------------------- 3-D SSN, slabs on disk
def test_plan_slabs_reproduces_monai_windows():
    from monai.data.utils import dense_patch_slices

    for depth, roi, overlap, windows in [(100, 32, 0.25, 2), (37, 8, 0.5, 3), (8, 8, 0.25, 1), (50, 8, 0.25, 1)]:
        full = [s[0].start for s in dense_patch_slices((depth,), (roi,), _scan(depth, roi, overlap))]
        assert _window_starts(depth, roi, overlap) == full
        slabs = plan_slabs(depth, roi, overlap, windows=windows)
        assert slabs[0].keep_start == 0 and slabs[-1].keep_stop == depth
        for slab, following in zip(slabs, slabs[1:]):
            assert slab.keep_stop == following.keep_start
        for slab in slabs:  # the slab's own windows are the whole volume's windows inside it
            size = slab.stop - slab.start
            own = [s[0].start + slab.start for s in dense_patch_slices((size,), (roi,), _scan(size, roi, overlap))]
            assert own == [s for s in full if slab.start <= s and s + roi <= slab.stop]


def _scan(size, roi, overlap):
    from monai.inferers.utils import _get_scan_interval

    return _get_scan_interval((size,), (roi,), 1, (overlap,))


@pytest.mark.parametrize("slab_planes", [8, 14, 40])
def test_lazy_3d_ssn_store_equals_the_whole_volume(ckpt3d, tmp_path, slab_planes):
    pytest.importorskip("zarr")
    image = _case((23, 24, 20), seed=3)[0]
    full = predict_ssn_distribution(ckpt3d, image)
    store = tmp_path / f"d{slab_planes}.zarr"
    lazy = predict_ssn_distribution_lazy(ckpt3d, image, store=store, slab_planes=slab_planes, cache_planes=3)
    assert not lazy.independent_planes and store.is_dir()
    for z in range(23):  # same windows, same Gaussian weights, same order: bit for bit
        plane = lazy.plane(z)
        np.testing.assert_array_equal(plane.mean, full.mean[:, z])
        np.testing.assert_array_equal(plane.cov_factor, full.cov_factor[:, :, z])
        np.testing.assert_array_equal(plane.cov_diag, full.cov_diag[:, z])
    np.testing.assert_array_equal(lazy.slice_labels(5, seed=1), full.slice_labels(5, seed=1))
    np.testing.assert_array_equal(lazy.sample_labels_at(2, seed=3), full.sample_labels_at(2, seed=3))


def test_store_refuses_a_non_empty_directory(tmp_path):
    pytest.importorskip("zarr")
    (tmp_path / "x").write_text("x")
    full = synthetic_distribution((3, 4, 4), num_classes=2, rank=1)
    with pytest.raises(FileExistsError, match="not empty"):
        write_slabs(lambda a, b: (full.mean, full.cov_factor, full.cov_diag), spatial_shape=(3, 4, 4),
                    num_classes=2, rank=1, roi_depth=4, overlap=0.25, store=tmp_path)


# ------------------------------------------------------------------------------------- refusing cleanly
def test_full_prediction_refuses_before_allocating(ckpt2d, monkeypatch):
    import napari_seg_uncertainty.core._memory as memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1 << 16)
    image = _case((5, 40, 36), seed=1)[0]
    with pytest.raises(OutputTooLargeError, match="predict_ssn_distribution_lazy") as info:
        predict_ssn_distribution(ckpt2d, image)
    text = str(info.value)
    assert "(5, 40, 36)" in text and "rank 3" in text and "64.0 KiB" in text


def test_cached_labels_are_the_computed_ones_and_follow_the_scales():
    full = synthetic_distribution((3, 10, 12), num_classes=3, rank=2, seed=6)
    lazy = LazyLowRankLogits(ArrayPlaneSource(full))
    first = lazy.slice_labels(1, seed=2, sample_index=4)
    first[:] = 0  # a copy: the cache is not changed through it
    np.testing.assert_array_equal(lazy.slice_labels(1, seed=2, sample_index=4),
                                  full.slice_labels(1, seed=2, sample_index=4))
    for hot, hot_full in [(lazy.with_temperature(3.0), full.with_temperature(3.0)),
                          (lazy.scale_class(0, -2.0), full.scale_class(0, -2.0))]:  # fmt: skip
        np.testing.assert_array_equal(hot.slice_labels(1, seed=2, sample_index=4),
                                      hot_full.slice_labels(1, seed=2, sample_index=4))
    np.testing.assert_array_equal(lazy.mean_plane_labels(2), full.mean_prediction()[2])


def test_redraw_kernel_gives_the_samples_of_the_plain_formula(monkeypatch):
    """Same seed, same sample as before the blocked kernel: against the formula written out in numpy here."""
    from napari_seg_uncertainty.core.ssn import sampling

    base = synthetic_distribution((2, 70, 33), num_classes=3, rank=4, seed=9)
    dist = LowRankLogits(base.mean, base.cov_factor, base.cov_diag, independent_planes=True)
    monkeypatch.setattr(sampling, "_NOISE_BLOCK_VALUES", 64)  # many blocks of rows, one of them partial
    for z, sample in [(0, 0), (1, 5)]:
        low = sampling._stream_generator(7, sample, sampling._LOWRANK_STREAM, z)
        diag = sampling._stream_generator(7, sample, sampling._DIAGONAL_STREAM, z)
        e = torch.randn(4, generator=low, dtype=torch.float32).numpy()
        noise = torch.randn((3, 70, 33), generator=diag, dtype=torch.float32).numpy()
        expected = noise * np.sqrt(dist.cov_diag[:, z])
        for k in range(4):
            expected = expected + dist.cov_factor[k, :, z] * e[k]
        np.testing.assert_array_equal(dist.slice(z, seed=7, sample_index=sample), expected + dist.mean[:, z])


def test_workflow_takes_a_lazy_prediction_and_refuses_to_save_it_whole(tmp_path):
    from napari_seg_uncertainty.workflow.ssn import (
        EXPORT_CURRENT,
        EXPORT_DISTRIBUTION,
        distribution_from_checkpoint,
        distribution_from_prediction,
        export_samples,
    )

    full = synthetic_distribution((3, 8, 8), num_classes=2, rank=1, seed=0)
    lazy = LazyLowRankLogits(ArrayPlaneSource(full))
    placed = distribution_from_prediction(lazy, spacing=(2.0, 1.0, 1.0))
    assert placed.spacing == (2.0, 1.0, 1.0) and placed._cache is lazy._cache
    checkpoint = tmp_path / "model.pt"
    torch.save({"x": 1}, checkpoint)  # a zip with data.pkl: a checkpoint as far as checkpoint_kind can tell
    got, placement = distribution_from_checkpoint(checkpoint, np.zeros((3, 8, 8)), scale=(3.0, 1.0, 1.0),
                                                  predict=lambda path, image: lazy)  # fmt: skip
    assert got.spacing == (3.0, 1.0, 1.0) and placement == {"origin": None, "direction": None, "crop_start": None}
    stack = SampleLabelStack(lazy, range(2), seed=1)
    with pytest.raises(ValueError, match="export the current sample"):
        export_samples(tmp_path / "d.npz", stack, what=EXPORT_DISTRIBUTION)
    written = export_samples(tmp_path / "s.npy", stack, what=EXPORT_CURRENT, entry=1)
    np.testing.assert_array_equal(np.load(written), full.sample_labels_at(1, seed=1))


def test_a_2d_model_trained_on_2d_images_runs_on_a_volume(tmp_path):
    """Its checkpoint's spacing has two entries: the volume's distribution has none (the layer gives it)."""
    image, raters = _case((32, 32), seed=5)
    config = TrainConfig(head="ssn", loss="ssn", target="random_rater", ssn_rank=2, ssn_samples=2, epochs=1,
                         steps_per_epoch=1, output_dir=str(tmp_path), **TINY)  # fmt: skip
    from napari_seg_uncertainty.core.training.data import TrainingData

    *_, last = train(config, TrainingData.from_arrays(image, raters, spacing=(0.5, 0.5)))
    assert load_trained_model(last.checkpoint).spacing == (0.5, 0.5)
    volume = np.stack([image, image[::-1]])
    lazy = predict_ssn_distribution_lazy(last.checkpoint, volume)
    full = predict_ssn_distribution(last.checkpoint, volume)
    assert lazy.spacing is None and full.spacing is None
    np.testing.assert_array_equal(lazy.slice_labels(1, seed=3), full.slice_labels(1, seed=3))


def test_a_plane_asked_for_by_two_threads_is_computed_once():
    import threading
    import time

    full = synthetic_distribution((3, 8, 8), num_classes=2, rank=1, seed=0)

    class Slow(ArrayPlaneSource):
        calls = 0

        def plane_parameters(self, z):
            Slow.calls += 1
            time.sleep(0.2)
            return super().plane_parameters(z)

    lazy = LazyLowRankLogits(Slow(full))
    results = []
    threads = [threading.Thread(target=lambda: results.append(lazy.slice_labels(1, seed=0))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Slow.calls == 1 and lazy.planes_computed == 1
    for labels in results:
        np.testing.assert_array_equal(labels, full.slice_labels(1, seed=0))
