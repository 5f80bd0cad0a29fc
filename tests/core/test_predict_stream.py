"""predict at CT scale: slab-by-slab sliding windows into preallocated outputs equal the whole computation.

The references are independent of the slab logic: today's whole-volume path (``ensemble_probabilities``:
MONAI's sliding windows over the whole image, then the probabilities) for deterministic models, and MONAI's
sliding windows over the whole image with the same per-window seeded predictor for Monte-Carlo dropout.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core._memory import OutputTooLargeError
from napari_seg_uncertainty.core._numeric import entropy_nats
from napari_seg_uncertainty.core.models import mc_dropout
from napari_seg_uncertainty.core.training import TrainConfig, load_trained_model, predict, train
from napari_seg_uncertainty.core.training.inference import (
    _covariance_mask,
    _predict_raw_chunks,
    _prediction_image,
    ensemble_probabilities,
    normalize_image,
)
from napari_seg_uncertainty.core.training.streamed import (
    _DROPOUT,
    _SSN_LATENT,
    _SSN_PLANE,
    _derived_seed,
    _seeded_predictor,
    _ssn_volume_mean,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py

F16 = 2.0**-11  # float16 rounding of a value in [0, 1]


def make_case(shape, seed=0):
    """A bright ball (class 1) with a core (class 2) and noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids))
    labels = (radius < shape[-1] * 0.3).astype(np.uint8) + (radius < shape[-1] * 0.12)
    image = labels + 0.1 * rng.normal(size=shape)
    return image.astype(np.float32), np.stack([labels, labels])


def fit(spatial_dims, shape, **options):
    """A tiny model trained one step (the weights do not matter, only that the paths agree)."""
    image, raters = make_case(shape)
    config = TrainConfig(channels=(4, 8), strides=(2,), num_res_units=0, device="cpu", batch_size=1, epochs=1,
                         steps_per_epoch=1, val_fraction=0.0, output_dir=tempfile.mkdtemp(),
                         spatial_dims=spatial_dims, **options)
    generator = train(config, (image, raters))
    try:
        while True:
            next(generator)
    except StopIteration as stop:
        return load_trained_model(stop.value.checkpoint)


VOLUME = (30, 20, 20)
IMAGE = make_case(VOLUME, seed=1)[0]


@pytest.fixture(scope="module")
def net3d():
    return fit(3, VOLUME, patch_size=(16, 16, 16))


@pytest.fixture(scope="module")
def net2d():
    return fit(2, VOLUME[1:], patch_size=(16, 16))


def full_probabilities(trained, image, num_samples=0, members=None):
    """Today's whole-image path: normalize all, sliding windows over the whole image, average the members."""
    arr = _prediction_image(trained, image)
    normed = normalize_image(arr, trained.info["normalization"])
    return ensemble_probabilities(trained.model, normed, trained.info, trained.device, trained.config,
                                  num_samples=num_samples, members=members).numpy()


def check_outputs(result, reference, *, dtype=np.float32):
    """Probabilities, entropy and labels of ``result`` against the float32 ``reference`` probabilities."""
    tol = F16 if dtype == np.float16 else 1e-6
    assert result.probabilities.dtype == dtype and result.entropy.dtype == dtype
    np.testing.assert_allclose(np.asarray(result.probabilities, np.float32), reference, atol=tol, rtol=0)
    entropy = entropy_nats(reference, axis=0) / np.log(reference.shape[0])
    np.testing.assert_allclose(result.entropy.astype(np.float32), entropy, atol=tol, rtol=0)
    assert np.array_equal(result.labels, reference.argmax(axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [VOLUME, (37, 19, 23), (9, 20, 12)])  # several rows; Z and X below the window
def test_3d_streamed_equals_the_whole_volume(net3d, dtype, shape):
    image = make_case(shape, seed=2)[0]
    reference = full_probabilities(net3d, image)
    check_outputs(predict(net3d, image, dtype=dtype), reference, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_2d_model_over_a_volume_equals_the_whole_volume(net2d, dtype):
    reference = full_probabilities(net2d, IMAGE)
    for slab in (None, 5):
        check_outputs(predict(net2d, IMAGE, slab_planes=slab, dtype=dtype), reference, dtype=dtype)


@pytest.mark.parametrize("normalization", ["zscore", "percentile"])
def test_per_case_normalization_by_slabs_equals_the_whole_image(normalization):
    trained = fit(3, VOLUME, patch_size=(16, 16, 16), normalization=normalization)
    image = IMAGE * 40.0 + 100.0
    image[:4] = 0.0  # outside the body for zscore
    check_outputs(predict(trained, image), full_probabilities(trained, image))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_ensemble_of_two_with_members(dtype):
    trained = fit(3, VOLUME, patch_size=(16, 16, 16), ensemble_size=2)
    members = []
    reference = full_probabilities(trained, IMAGE, members=members)
    result = predict(trained, IMAGE, dtype=dtype, keep_members=True)
    check_outputs(result, reference, dtype=dtype)
    tol = F16 if dtype == np.float16 else 1e-6
    assert result.member_probabilities.shape == (2, 3, *VOLUME) and result.member_probabilities.dtype == dtype
    np.testing.assert_allclose(result.member_probabilities.astype(np.float32), torch.stack(members).numpy(),
                               atol=tol, rtol=0)


def whole_mc_dropout(trained, image, num_samples, seed):
    """MC dropout over the whole image: MONAI's windows over everything, each window seeded by its position."""
    net = trained.model.members[0]
    normed = normalize_image(_prediction_image(trained, image), trained.info["normalization"])
    sliced = normed.ndim - 1 != net.spatial_dims
    batch = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normed, 1, 0) if sliced else normed[None]))
    total = 0
    with mc_dropout(net), torch.no_grad():
        for p in range(num_samples):
            raw = sliding_window_inference(
                batch, roi_size=list(trained.info["patch_size"]), sw_batch_size=trained.config.sw_batch_size,
                predictor=_seeded_predictor(net, (seed, _DROPOUT, 0, p), 0, sliced), overlap=trained.config.sw_overlap,
                mode="gaussian", with_coord=True,
            )
            probs = net.probabilities(raw)
            total = total + (probs.movedim(0, 1) if sliced else probs[0])
    return (total / num_samples).numpy()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mc_dropout_streamed_equals_the_whole_image(spatial_dims):
    patch = (16,) * spatial_dims
    trained = fit(spatial_dims, VOLUME if spatial_dims == 3 else VOLUME[1:], patch_size=patch, dropout=0.3)
    reference = whole_mc_dropout(trained, IMAGE, 3, seed=5)
    off = predict(trained, IMAGE, num_samples=0)
    assert not np.allclose(off.probabilities, reference, atol=1e-4)  # dropout did act
    for slab, dtype in [(4, np.float32), (None, np.float32), (6, np.float16)]:
        result = predict(trained, IMAGE, num_samples=3, seed=5, slab_planes=slab, dtype=dtype, keep_members=True)
        check_outputs(result, reference, dtype=dtype)
        assert result.member_probabilities.shape[0] == 3


def test_2d_ssn_samples_do_not_depend_on_the_chunk():
    trained = fit(2, VOLUME[1:], patch_size=(16, 16), head="ssn", ssn_rank=2, loss="ssn", ssn_samples=2)
    mean = predict(trained, IMAGE, num_samples=0, slab_planes=4)
    check_outputs(mean, full_probabilities(trained, IMAGE, num_samples=0))
    whole = predict(trained, IMAGE, num_samples=5, seed=2, slab_planes=30)
    for slab in (3, 11):
        check_outputs(predict(trained, IMAGE, num_samples=5, seed=2, slab_planes=slab), whole.probabilities)
    assert not np.allclose(whole.probabilities, mean.probabilities, atol=1e-6)  # the samples did act


def test_3d_ssn_samples_equal_sampling_the_whole_volume():
    trained = fit(3, VOLUME, patch_size=(16, 16, 16), head="ssn", ssn_rank=2, loss="ssn", ssn_samples=2,
                  background_mask="covariance")
    image = IMAGE.copy()
    image[:, :3] = 0.0  # outside the covariance mask
    check_outputs(predict(trained, image, num_samples=0), full_probabilities(trained, image, num_samples=0))
    net = trained.model.members[0]
    arr = _prediction_image(trained, image)
    normed = normalize_image(arr, trained.info["normalization"])
    raw = torch.cat([r for _, r in _predict_raw_chunks(net, normed, trained.info, trained.device, trained.config)])
    latent = torch.randn((5, 2), generator=torch.Generator().manual_seed(_derived_seed(2, _SSN_LATENT, 0)))
    mask = torch.from_numpy(_covariance_mask(trained, arr))[None]
    reference = _ssn_volume_mean(net, raw, mask, latent=latent, key=(2, _SSN_PLANE, 0), z0=0).numpy()
    result = predict(trained, image, num_samples=5, seed=2)
    check_outputs(result, reference)
    assert not np.allclose(result.probabilities, full_probabilities(trained, image), atol=1e-6)


def test_out_npy_file_is_written_and_readable(net3d, tmp_path):
    path = tmp_path / "probabilities.npy"
    result = predict(net3d, IMAGE, slab_planes=5, out=str(path))
    assert isinstance(result.probabilities, np.memmap)
    del result
    stored = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(stored, predict(net3d, IMAGE).probabilities)


def test_out_array_and_zarr(net3d, tmp_path):
    reference = predict(net3d, IMAGE).probabilities
    target = np.zeros((3, *VOLUME), np.float16)
    result = predict(net3d, IMAGE, slab_planes=5, out=target, dtype="float16")
    assert result.probabilities is target
    np.testing.assert_array_equal(target, reference.astype(np.float16))
    zarr = pytest.importorskip("zarr")
    predict(net3d, IMAGE, slab_planes=5, out=str(tmp_path / "p.zarr"))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "p.zarr"), mode="r")[:], reference)


def test_bad_out_and_dtype_are_refused(net3d, tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        predict(net3d, IMAGE, dtype="int8")
    with pytest.raises(ValueError, match="out must be a writable array of shape"):
        predict(net3d, IMAGE, out=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\.npy or \.zarr"):
        predict(net3d, IMAGE, out=str(tmp_path / "p.txt"))


def test_refused_with_sizes_and_advice_when_too_large(net3d, monkeypatch):
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 50_000)
    with pytest.raises(OutputTooLargeError) as info:
        predict(net3d, IMAGE)
    message = str(info.value)
    assert "image shape (30, 20, 20), dtype=float32" in message
    assert "probabilities 140.6 KiB" in message  # 3 x 12000 float32
    assert "dtype='float16'" in message and "out='<file>.npy'" in message and "crop" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(OutputTooLargeError) as info:
        predict(net3d, IMAGE, dtype="float16", out=np.zeros((3, *VOLUME), np.float16))
    assert "dtype='float16'" not in str(info.value) and "crop" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_2d_model_on_a_2d_image_equals_the_whole_image(net2d, dtype):
    for shape in [(37, 29), (12, 40)]:  # rows of windows along Y; Y below the window
        image = make_case(shape, seed=3)[0]
        check_outputs(predict(net2d, image, dtype=dtype), full_probabilities(net2d, image), dtype=dtype)


def test_other_overlap_and_window_batch(net3d):
    import dataclasses

    trained = dataclasses.replace(net3d, config=dataclasses.replace(net3d.config, sw_overlap=0.6, sw_batch_size=3))
    image = make_case((41, 22, 18), seed=4)[0]
    check_outputs(predict(trained, image), full_probabilities(trained, image))
