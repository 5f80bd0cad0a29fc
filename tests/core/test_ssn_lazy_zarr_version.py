"""zarr 3 or a clear ImportError (review 15 #5): zarr 2 (common in Python 3.10 napari environments) or no zarr.

Runs without zarr installed: the module is replaced in ``sys.modules``.
"""

from __future__ import annotations

import sys
import types

import pytest

from napari_seg_uncertainty.core._zarr import require_zarr
from napari_seg_uncertainty.core.ssn import synthetic_distribution
from napari_seg_uncertainty.core.ssn.store import ZarrPlaneSource, write_slabs


def _fake_zarr(version):
    module = types.ModuleType("zarr")
    module.__version__ = version
    module.open_group = lambda *a, **k: pytest.fail("zarr 2 must not be used")
    return module


@pytest.mark.parametrize("version", ["2.18.3", "2.0.0a1", "unknown"])
def test_zarr_2_is_refused_with_the_requirement_and_the_alternatives(monkeypatch, version):
    monkeypatch.setitem(sys.modules, "zarr", _fake_zarr(version))
    with pytest.raises(ImportError) as info:
        require_zarr("keeping it")
    text = str(info.value)
    assert text.startswith("keeping it needs zarr >= 3 (needs Python >= 3.11")
    assert f"zarr {version} is installed" in text and "2-D SSN" in text and ".npy" in text


def test_missing_zarr_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)  # import zarr raises ImportError
    with pytest.raises(ImportError, match=r"needs zarr >= 3 \(needs Python >= 3.11.*not installed.*2-D SSN"):
        require_zarr()


def test_zarr_3_passes(monkeypatch):
    fake = _fake_zarr("3.1.6")
    monkeypatch.setitem(sys.modules, "zarr", fake)
    assert require_zarr() is fake


def test_the_store_refuses_zarr_2_before_writing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "zarr", _fake_zarr("2.18.3"))
    full = synthetic_distribution((3, 4, 4), num_classes=2, rank=1)
    with pytest.raises(ImportError, match="3-D SSN distribution on disk needs zarr >= 3"):
        write_slabs(lambda a, b: (full.mean[:, a:b], full.cov_factor[:, :, a:b], full.cov_diag[:, a:b]),
                    spatial_shape=(3, 4, 4), num_classes=2, rank=1, roi_depth=2, overlap=0.5,
                    store=tmp_path / "s.zarr")
    with pytest.raises(ImportError, match="zarr 2.18.3 is installed"):
        ZarrPlaneSource(tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []
