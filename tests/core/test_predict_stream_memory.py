"""predict's memory: an integer CT is never copied whole to float32, and the estimate counts the statistics.

The references: ``predict`` of the same image converted to float32 up front (the former path), numpy's own
percentile of the whole channel, and tracemalloc's count of the numpy allocations.
"""

from __future__ import annotations

import dataclasses
import tracemalloc

import numpy as np
import pytest
from test_predict_stream import IMAGE, VOLUME, fit, net3d  # noqa: F401 - module fixtures

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core._memory import OutputTooLargeError, array_bytes
from napari_seg_uncertainty.core.training import normalization as N
from napari_seg_uncertainty.core.training import predict
from napari_seg_uncertainty.core.training import streamed as S
from napari_seg_uncertainty.core.training.inference import _prediction_image

pytestmark = pytest.mark.usefixtures("one_thread")

CT = np.round(IMAGE * 300.0 - 200.0).astype(np.int16)  # Hounsfield-like integers
CT[:3] = -1000


@pytest.fixture(scope="module", params=["dataset", "zscore", "percentile"])
def normalized_net(request):
    return fit(3, VOLUME, patch_size=(16, 16, 16), normalization=request.param)


def test_int16_image_equals_its_float32_conversion_bit_for_bit(normalized_net):
    reference = predict(normalized_net, CT.astype(np.float32))
    result = predict(normalized_net, CT)
    np.testing.assert_array_equal(result.probabilities, reference.probabilities)
    np.testing.assert_array_equal(result.entropy, reference.entropy)
    np.testing.assert_array_equal(result.labels, reference.labels)


def test_no_float32_copy_of_an_int16_volume(normalized_net):
    image = np.tile(CT, (10, 2, 2))  # (300, 40, 40): a float32 copy is 1.9 MB, a float64 16-plane slab 205 KB
    mode = normalized_net.info["normalization"]["mode"]
    tracemalloc.start()
    arr = _prediction_image(normalized_net, image, float32=False)
    N.SlabNormalizer(arr, normalized_net.info["normalization"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert arr.dtype == np.int16 and np.shares_memory(arr, image)
    full = array_bytes(image.shape, np.float32)
    statistics = N.statistics_bytes(mode, image.shape)
    assert peak <= max(statistics, 0.1 * full) * 1.1
    assert (mode == "percentile") == (statistics == full)
    assert peak < 1.1 * full  # the former path: a float32 copy plus an isfinite mask and numpy's channel copy


def test_percentiles_equal_numpy_on_the_whole_channel():
    for channel in (CT, CT.astype(np.float32)):
        got = N._channel_percentiles(channel, (0.5, 99.5))
        np.testing.assert_array_equal(got, np.percentile(channel.astype(np.float32), (0.5, 99.5)))


def test_estimate_counts_the_statistics(net3d):  # noqa: F811
    shape = (300, 40, 40)
    slabs = 4 * 16 * 1600 * 8  # four float64 16-plane slabs
    for mode, expected in [("dataset", 0), ("zscore", slabs), ("percentile", array_bytes(shape, np.float32))]:
        info = {**net3d.info, "normalization": {"mode": mode}}
        parts = S.estimate_prediction_bytes(dataclasses.replace(net3d, info=info), shape)
        kept = parts.probabilities + parts.entropy + parts.labels + parts.members + parts.working
        assert parts.statistics == expected
        assert parts.total == max(kept, expected)


def test_refused_before_any_volume_size_allocation(net3d, monkeypatch):  # noqa: F811
    image = np.tile(CT, (4, 2, 2))
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 50_000)
    tracemalloc.start()
    with pytest.raises(OutputTooLargeError, match=r"image shape \(120, 40, 40\)"):
        predict(net3d, image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.25 * array_bytes(image.shape, np.float32)


def test_non_finite_values_found_in_any_slab(net3d):  # noqa: F811
    image = np.tile(IMAGE, (2, 1, 1))
    image[-1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict(net3d, image)
    image[-1, 3, 4] = -np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        predict(net3d, image[None].astype(np.float64))
