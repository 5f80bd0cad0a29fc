"""Per-case normalization of a volume for the lazy SSN (review 15 #4): statistics taken slab by slab, no
normalized copy of the volume held, each plane or slab normalized when it runs.

Reference: :func:`normalize_image` on the whole volume (the function the lazy path used before).
"""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from napari_seg_uncertainty.core.training import TrainConfig, train
from napari_seg_uncertainty.core.training.inference import load_trained_model
from napari_seg_uncertainty.core.training.normalization import normalize_image
from napari_seg_uncertainty.core.training.ssn_inference import (
    SlicePredictor,
    _normalized_volume,
    _slab_normalizer,
    estimate_ssn_memory,
    predict_ssn_distribution,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MODES = [
    {"mode": "zscore"},
    {"mode": "percentile", "clip_percentiles": (1.0, 99.0)},
    {"mode": "dataset", "mean": [3.0, -1.0], "std": [2.0, 0.5]},
]


def _volume(shape=(2, 37, 24, 20), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 50.0, size=shape).astype(np.float32)
    image[:, :, :4] = 0  # background outside the body (zscore uses the non-zero voxels)
    return image


@pytest.mark.parametrize("normalization", MODES, ids=lambda n: n["mode"])
def test_slab_normalization_equals_the_whole_volume_function(normalization):
    image = _volume()
    trained = SimpleNamespace(info={"normalization": normalization})
    reference = normalize_image(image, normalization)
    normalize = _slab_normalizer(trained, image)
    np.testing.assert_allclose(_normalized_volume(normalize, image), reference, rtol=1e-6, atol=1e-6)
    for z in (0, 15, 16, 36):  # one plane at a time, as SlicePredictor runs them
        np.testing.assert_allclose(normalize(image[:, z : z + 1])[:, 0], reference[:, z], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("normalization", MODES[:2], ids=lambda n: n["mode"])
def test_statistics_need_a_fraction_of_the_image(normalization):
    image = _volume((1, 96, 96, 96), seed=1)  # 3.4 MiB float32
    trained = SimpleNamespace(info={"normalization": normalization})
    tracemalloc.start()
    try:
        normalize = _slab_normalizer(trained, image)
        normalize(image[:, 40:41])
        _, slab_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        normalize_image(image, normalization)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # measured: zscore 0.6x, percentile 1.4x the image (one channel copied for np.percentile, plus float64
    # temporaries of 16 of the 96 planes); the whole-volume function 7.1-7.3x
    assert slab_peak < 2 * image.nbytes < whole_peak / 3


def test_slice_predictor_holds_the_raw_volume_only(tmp_path):
    shape = (4, 40, 36)
    rng = np.random.default_rng(0)
    raters = np.zeros((2, *shape), dtype=int)
    raters[:, :, 10:30, 8:28] = 1
    config = TrainConfig(head="ssn", loss="ssn", target="random_rater", ssn_rank=2, ssn_samples=2, epochs=1,
                         steps_per_epoch=1, spatial_dims=2, patch_size=(16, 16), channels=(4, 8), strides=(2,),
                         num_res_units=0, device="cpu", batch_size=1, val_fraction=0.0, normalization="percentile",
                         output_dir=str(tmp_path))  # fmt: skip
    *_, last = train(config, (rng.normal(size=shape).astype(np.float32), raters))
    trained = load_trained_model(last.checkpoint)
    image = _volume((1, 6, 40, 36), seed=3)
    predictor = SlicePredictor(trained, trained.model.members[0], image)
    assert predictor._image is image  # no normalized copy of the volume
    reference = normalize_image(image, trained.info["normalization"])
    for z in (0, 5):
        np.testing.assert_allclose(predictor.normalized_plane(z), reference[:, z], rtol=1e-6, atol=1e-6)
    full = predict_ssn_distribution(trained, image)  # the whole path normalizes the same way: bit for bit
    params = predictor.plane_parameters(2)
    np.testing.assert_array_equal(params.mean, full.mean[:, 2])
    np.testing.assert_array_equal(params.cov_factor, full.cov_factor[:, :, 2])
    # the estimate beyond the distribution and one plane's temporaries: percentile's channel copy (1x the
    # float32 image) and float64 slab temporaries, no normalized volume (it counted 1x, the real peak was 7x)
    big, image_bytes = (1, 300, 512, 512), 300 * 512 * 512 * 4
    maps = (2 + 2) * 2
    extra = estimate_ssn_memory(trained, big) - (maps * image_bytes + 6 * (maps + 1) * 512 * 512 * 4)
    assert image_bytes <= extra <= 1.5 * image_bytes
