"""The 3-D SSN's zarr store on disk (review 15 #2, #3): what is deleted, when, and what is refused first.

``ZarrPlaneSource(cleanup=True)`` deletes its own directory and nothing above it; ``write_slabs`` deletes
its temporary directory with the source, and everything it wrote on any failure; a store that cannot fit on
its disk (or, on a tmpfs, in memory) is refused before anything is written.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections import namedtuple

import numpy as np
import pytest

from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core._memory import OutputTooLargeError, check_disk_space
from napari_seg_uncertainty.core.ssn import synthetic_distribution

pytest.importorskip("zarr")

from napari_seg_uncertainty.core.ssn.store import ZarrPlaneSource, write_slabs  # noqa: E402

SHAPE = (6, 8, 8)
FULL = synthetic_distribution(SHAPE, num_classes=2, rank=2, seed=1)
STORE_BYTES = (2 + 2) * 2 * 6 * 8 * 8 * 4  # (2 + K) * C * Z * Y * X float32


def _run(z0, z1):
    return FULL.mean[:, z0:z1], FULL.cov_factor[:, :, z0:z1], FULL.cov_diag[:, z0:z1]


def _write(**kwargs):
    return write_slabs(kwargs.pop("run", _run), spatial_shape=SHAPE, num_classes=2, rank=2, roi_depth=2,
                       overlap=0.5, slab_planes=2, **kwargs)


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """``tempfile.gettempdir()`` redirected to an empty directory of this test."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _same_planes(source):
    for z in range(SHAPE[0]):
        params = source.plane_parameters(z)
        np.testing.assert_array_equal(params.mean, FULL.mean[:, z])
        np.testing.assert_array_equal(params.cov_factor, FULL.cov_factor[:, :, z])
        np.testing.assert_array_equal(params.cov_diag, FULL.cov_diag[:, z])


# ------------------------------------------------------------------------------ what cleanup deletes (#3)
def test_cleanup_deletes_the_store_only_never_its_parent(tmp_path):
    case = tmp_path / "case7"
    case.mkdir()
    (case / "image.nii.gz").write_bytes(b"scan")
    _write(store=case / "ssn.zarr")
    source = ZarrPlaneSource(case / "ssn.zarr", cleanup=True)
    _same_planes(source)
    del source
    gc.collect()
    assert sorted(p.name for p in case.iterdir()) == ["image.nii.gz"]


def test_the_temporary_directory_goes_with_the_source(temp_root):
    source = _write()
    root = source.path.parent
    assert root.parent == temp_root and source.path.name == "distribution.zarr"
    _same_planes(source)
    del source
    gc.collect()
    assert not root.exists() and list(temp_root.iterdir()) == []


def test_a_given_store_is_kept(tmp_path):
    source = _write(store=tmp_path / "keep.zarr")
    del source
    gc.collect()
    _same_planes(ZarrPlaneSource(tmp_path / "keep.zarr"))


# ------------------------------------------------------------------------------ failures leave nothing (#2)
class _Stop(BaseException):
    """Stands for KeyboardInterrupt (a BaseException) without stopping pytest."""


@pytest.mark.parametrize("error", [RuntimeError("the model failed"), _Stop(), OutputTooLargeError("refused")])
def test_a_failing_slab_leaves_no_temporary_directory(temp_root, error):
    calls = []

    def run(z0, z1):
        calls.append(z0)
        if len(calls) == 2:  # after the first slab was written
            raise error
        return _run(z0, z1)

    with pytest.raises(type(error)):
        _write(run=run)
    assert len(calls) == 2 and list(temp_root.iterdir()) == []


def test_a_failure_empties_a_given_store_and_keeps_what_was_there(tmp_path):
    def run(z0, z1):
        if z0 > 0:
            raise RuntimeError("the model failed")
        return _run(z0, z1)

    empty, new = tmp_path / "empty.zarr", tmp_path / "new" / "d.zarr"
    empty.mkdir()
    for store in (empty, new):
        with pytest.raises(RuntimeError):
            _write(run=run, store=store)
    assert empty.is_dir() and list(empty.iterdir()) == []  # the user's directory stays, empty
    assert not new.exists()


# ------------------------------------------------------------------------------ disk space (#2)
Usage = namedtuple("Usage", "total used free")


def test_a_store_too_large_for_the_disk_is_refused_before_writing(temp_root, monkeypatch):
    free = STORE_BYTES  # the store needs all of it: more than the 90 % that may be used
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * free, 9 * free, free))
    with pytest.raises(OutputTooLargeError) as info:
        _write()
    text = str(info.value)
    assert repr(str(temp_root)) in text and "store=" in text and "rank 2, 2 classes" in text
    assert _memory.format_bytes(STORE_BYTES) in text
    assert list(temp_root.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10 * free, 8 * free, 2 * free))
    _same_planes(_write())


def test_disk_space_threshold_and_nearest_existing_directory(tmp_path, monkeypatch):
    seen = []

    def usage(path):
        seen.append(path)
        return Usage(10_000, 9_000, 1_000)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    target = tmp_path / "not" / "yet" / "store.zarr"
    check_disk_space(900, target, what="x", cause="c")  # 90 % of the free space may be used
    assert seen == [str(tmp_path)]
    with pytest.raises(OutputTooLargeError, match="more than the 1000 bytes free in"):
        check_disk_space(901, target, what="x", cause="c")


def test_a_tmpfs_store_also_needs_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(_memory, "_mount_type", lambda path: "tmpfs")
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 1000)
    check_disk_space(900, tmp_path, what="the store", cause="c")
    with pytest.raises(OutputTooLargeError, match="a tmpfs: its files are kept in memory"):
        check_disk_space(901, tmp_path, what="the store", cause="c")


def test_mount_type_is_that_of_the_longest_mount_point():
    mounts = {}
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                device, point, fstype = line.split()[:3]
                mounts[point] = fstype
    except OSError:
        pytest.skip("no /proc/mounts")
    assert _memory._mount_type("/") == mounts["/"]
    for point, fstype in mounts.items():
        if point.startswith("/dev/") and " " not in point:
            assert _memory._mount_type(point) == fstype


# ------------------------------------------------------------------------------ slabs vs MONAI's windows (#13)
def test_slabs_keep_only_planes_stitched_from_the_whole_runs_windows():
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from napari_seg_uncertainty.core.ssn.store import plan_slabs

    def starts(size, roi, overlap):  # MONAI pads a volume thinner than the window to the window
        size = max(size, roi)
        return [s[0].start for s in dense_patch_slices((size,), (roi,), _get_scan_interval((size,), (roi,), 1,
                                                                                            (overlap,)))]

    cases = 0
    for depth in range(1, 60, 4):
        for roi in (3, 8, 16):
            for overlap in (0.0, 0.25, 0.5, 0.8):
                whole = starts(depth, roi, overlap)
                for windows in (1, 2, 4):
                    slabs = plan_slabs(depth, roi, overlap, windows=windows)
                    assert [s.keep_start for s in slabs[1:]] == [s.keep_stop for s in slabs[:-1]]
                    assert slabs[0].keep_start == 0 and slabs[-1].keep_stop == depth
                    for slab in slabs:
                        size = slab.stop - slab.start
                        own = [slab.start + s for s in starts(size, roi, overlap)]
                        inside = [s for s in whole if slab.start <= s and s + roi <= max(slab.stop, roi)]
                        assert own == inside, (depth, roi, overlap, windows, slab)
                        for z in range(slab.keep_start, slab.keep_stop):  # every window over z is the slab's
                            assert all(s in own for s in whole if s <= z < s + roi)
                    cases += 1
    assert cases == 15 * 3 * 4 * 3
