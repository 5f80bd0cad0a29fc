"""predict(out='….zarr'): whole chunks written once, uncompressed, equal to the in-memory prediction."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from test_predict_stream import IMAGE, VOLUME, net2d, net3d  # noqa: F401 - module fixtures

from napari_seg_uncertainty.core.training import predict
from napari_seg_uncertainty.core.training import prediction_output as W

pytestmark = pytest.mark.usefixtures("one_thread")
zarr = pytest.importorskip("zarr")


class _Recorder:
    """Wraps the writer's zarr array and records the plane ranges written."""

    def __init__(self, array):
        self.array, self.writes = array, []

    def __setitem__(self, index, value):
        self.writes.append((index[1].start, index[1].stop))
        self.array[index] = value


@pytest.mark.parametrize("model", ["net3d", "net2d"])
@pytest.mark.parametrize("slab", [None, 3])
def test_zarr_chunks_written_once_and_equal(model, slab, request, tmp_path, monkeypatch):
    trained = request.getfixturevalue(model)
    reference = predict(trained, IMAGE).probabilities
    recorders = []
    opened = W._ZarrWriter.__init__

    def init(self, *args):
        opened(self, *args)
        self.array = _Recorder(self.array)
        recorders.append(self.array)

    monkeypatch.setattr(W._ZarrWriter, "__init__", init)
    path = str(tmp_path / "p.zarr")
    result = predict(trained, IMAGE, out=path, slab_planes=slab)
    stored = zarr.open_array(path, mode="r")
    np.testing.assert_array_equal(stored[:], reference)
    np.testing.assert_array_equal(np.asarray(result.probabilities.array[:]), reference)
    assert stored.chunks == (1, W.ZARR_CHUNK_PLANES, *VOLUME[1:])
    assert stored.compressors == ()
    depth = W.ZARR_CHUNK_PLANES
    expected = [(z, min(z + depth, VOLUME[0])) for z in range(0, VOLUME[0], depth)]
    assert recorders[0].writes == expected  # each chunk once, aligned, in order


def test_out_of_order_planes_are_refused(tmp_path):
    writer = W._ZarrWriter(str(tmp_path / "p.zarr"), (2, 20, 4, 4), np.dtype(np.float32))
    writer[:, 0:4] = np.zeros((2, 4, 4, 4), np.float32)
    with pytest.raises(RuntimeError, match="in order"):
        writer[:, 8:12] = np.zeros((2, 4, 4, 4), np.float32)


def test_zarr_2_is_refused_before_anything_is_written(net3d, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "zarr", types.SimpleNamespace(__version__="2.18.3"))
    path = tmp_path / "p.zarr"
    with pytest.raises(ImportError, match=r"zarr >= 3 \(needs Python >= 3.11"):
        predict(net3d, IMAGE, out=str(path))
    assert not path.exists()
