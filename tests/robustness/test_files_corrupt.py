"""Readers fed truncated, corrupt, forged and unsupported files: a ValueError naming the file, never a crash.

Covers :func:`read_image` (NIfTI, NRRD, MetaImage, DICOM, TIFF, PNG), :func:`load_raters` (files, folders,
``.npz``), :func:`load_distribution` and the npe2 reader. Forged headers that announce more pixels than
memory holds are refused from the header, before any pixel buffer is allocated.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_seg_uncertainty import _reader
from napari_seg_uncertainty.core import _memory
from napari_seg_uncertainty.core.io import check_npz_fits, read_image, write_image
from napari_seg_uncertainty.core.raters import load_raters
from napari_seg_uncertainty.core.ssn import load_distribution, save_distribution, synthetic_distribution

VOLUME = np.zeros((5, 12, 13), dtype=np.uint8)
VOLUME[1:4, 3:9, 2:10] = 1
VOLUME[2, 5:7, 4:6] = 2
SINGLE_FILE_FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha", ".tif", ".png", ".dcm")


def _dicom_source() -> Path | None:
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    return path if path.exists() else None


def write_valid(folder: Path, suffix: str, stem: str = "rater") -> Path:
    """A valid label file of the format; the DICOM one is pydicom's CT slice."""
    path = folder / f"{stem}{suffix}"
    if suffix == ".dcm":
        source = _dicom_source()
        if source is None:  # pragma: no cover - pydicom is a dependency
            pytest.skip("pydicom's test CT slice is not installed")
        shutil.copy(source, path)
        return path
    data = VOLUME[2] if suffix == ".png" else VOLUME
    return Path(write_image(path, data, spacing=(1.0,) * data.ndim))


def corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-header":
        path.write_bytes(data[:24])
    elif kind == "truncated-half":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("this is not an image\n" * 20)
    else:  # pragma: no cover
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["empty", "truncated-header", "truncated-half", "garbage", "text"])
@pytest.mark.parametrize("suffix", SINGLE_FILE_FORMATS)
def test_corrupt_single_file_gives_value_error_naming_it(tmp_path, suffix, kind):
    path = write_valid(tmp_path, suffix)
    corrupt(path, kind)
    with pytest.raises(ValueError) as excinfo:
        read_image(path)
    assert path.name in str(excinfo.value)
    # the same file as a rater, and through the npe2 reader napari calls
    with pytest.raises(ValueError, match=path.name.replace(".", r"\.")):
        load_raters([path, path])
    reader = _reader.get_reader(str(path))
    if reader is not None:
        with pytest.raises(ValueError, match=path.name.replace(".", r"\.")):
            reader(str(path))


@pytest.mark.parametrize("suffix", [".mhd", ".nhdr"])
@pytest.mark.parametrize("damage", ["data-file-missing", "data-file-truncated", "header-garbage"])
def test_header_with_separate_data_file(tmp_path, suffix, damage):
    header = Path(write_image(tmp_path / f"rater{suffix}", VOLUME, spacing=(2.0, 1.0, 1.0)))
    data_files = [p for p in tmp_path.iterdir() if p != header]
    assert data_files, "the format writes a separate data file"
    if damage == "data-file-missing":
        for p in data_files:
            p.unlink()
    elif damage == "data-file-truncated":
        for p in data_files:
            p.write_bytes(p.read_bytes()[:10])
    else:
        header.write_text("NDims = banana\nElementDataFile = nowhere.raw\n")
    with pytest.raises(ValueError, match=header.name.replace(".", r"\.")):
        read_image(header)


def test_npz_damage(tmp_path):
    """Truncated, non-zip, key-less, pickled, NaN and float .npz rater stacks."""
    good = tmp_path / "case.npz"
    np.savez(good, image=VOLUME.astype(np.float32), masks=np.stack([VOLUME, VOLUME]))
    assert load_raters(good).num_raters == 2

    broken = {
        "truncated.npz": good.read_bytes()[: good.stat().st_size // 2],
        "notzip.npz": b"PK but not really a zip" * 10,
        "empty.npz": b"",
    }
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    np.savez(tmp_path / "nokeys.npz", volume=VOLUME)
    np.savez(tmp_path / "nan.npz", masks=np.full((2, 4, 4), np.nan))
    np.savez(tmp_path / "fraction.npz", masks=np.full((2, 4, 4), 0.5))
    np.savez(tmp_path / "flat.npz", masks=np.zeros(7, np.uint8))
    np.savez(tmp_path / "pickled.npz", masks=np.array([{"rater": 1}, None], dtype=object))
    expected = {
        "truncated.npz": "truncated.npz",
        "notzip.npz": "notzip.npz",
        "empty.npz": "empty.npz",
        "nokeys.npz": "masks",
        "nan.npz": "NaN",
        "fraction.npz": "non-integer",
        "flat.npz": "masks",
        "pickled.npz": "pickle",
    }
    for name, words in expected.items():
        with pytest.raises(ValueError, match=words):
            load_raters(tmp_path / name)
    # napari's reader declines these files, or its reader refuses them with the file named
    for name in expected:
        reader = _reader.get_reader(str(tmp_path / name))
        if reader is not None:
            with pytest.raises(ValueError, match=name.replace(".", r"\.")):
                reader(str(tmp_path / name))


def test_saved_distribution_damage(tmp_path):
    path = save_distribution(tmp_path / "dist.npz", synthetic_distribution((6, 7), num_classes=3, rank=2))
    assert load_distribution(path).rank == 2
    data = path.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) * 2 // 3])
    np.savez(tmp_path / "missing.npz", mean=np.zeros((2, 3, 3)))
    np.savez(
        tmp_path / "nan.npz",
        mean=np.full((2, 3, 3), np.nan),
        cov_factor=np.zeros(0),
        cov_diag=np.ones((2, 3, 3)),
    )
    np.savez(tmp_path / "pickled.npz", mean=np.array([object()]), cov_factor=np.zeros(0), cov_diag=np.ones(1))
    np.savez(
        tmp_path / "badscalar.npz",
        mean=np.zeros((2, 3, 3)),
        cov_factor=np.zeros(0),
        cov_diag=np.ones((2, 3, 3)),
        temperature=np.array(["hot"]),
    )
    for name, words in {
        "truncated.npz": "truncated",
        "missing.npz": "lacks",
        "nan.npz": "NaN",
        "pickled.npz": "pickle",
        "badscalar.npz": "temperature",
    }.items():
        with pytest.raises(ValueError, match=words) as excinfo:
            load_distribution(tmp_path / name)
        assert name in str(excinfo.value)


@pytest.mark.parametrize(
    "name", ["scan.jpg", "scan.bmp", "notes.txt", "README", "volume.gz", "labels.nii.zip"]
)
def test_unsupported_format_is_refused_and_declined(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="unsupported"):
        read_image(path)
    with pytest.raises(ValueError, match="unsupported"):
        load_raters([path])
    assert _reader.get_reader(str(path)) is None


def test_folders_without_raters(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_raters(empty)
    only_image = tmp_path / "only_image"
    only_image.mkdir()
    write_image(only_image / "image.nii.gz", VOLUME.astype(np.float32))
    with pytest.raises(FileNotFoundError, match="no label file"):
        load_raters(only_image)
    with pytest.raises(ValueError, match="folder"):
        read_image(only_image)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_image(mixed / "rater1.nii.gz", VOLUME, spacing=(1.0, 1.0, 1.0))
    write_image(mixed / "rater2.nii.gz", VOLUME, spacing=(3.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        load_raters(mixed)
    (mixed / "rater2.nii.gz").unlink()
    write_image(mixed / "rater2.nii.gz", VOLUME[:, :5], spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="different shapes"):
        load_raters(mixed)
    probabilities = tmp_path / "probabilities"
    probabilities.mkdir()
    write_image(probabilities / "soft.nii.gz", np.full((2, 4, 5, 6), 0.5, np.float32), channel_axis=0)
    with pytest.raises(ValueError, match="components"):
        load_raters(probabilities / "soft.nii.gz")


# ------------------------------------------------------------------------------------ forged headers
def _forged_nifti(path: Path, shape: tuple[int, ...]) -> Path:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\x00" * 4 + b"\x01" * 64)
    return path


def _forged_npz(path: Path, key: str, shape: tuple[int, ...]) -> Path:
    from numpy.lib import format as npy_format

    with zipfile.ZipFile(path, "w") as archive, archive.open(f"{key}.npy", "w") as member:
        npy_format.write_array_header_2_0(member, {"descr": "<i8", "fortran_order": False, "shape": shape})
        member.write(b"\x00" * 64)
    return path


def test_forged_nifti_header_is_refused_before_allocating(tmp_path):
    path = _forged_nifti(tmp_path / "bomb.nii", (30000, 30000, 30000))  # 54 TB of int16 in a 420-byte file
    with pytest.raises(MemoryError) as excinfo:
        read_image(path)
    assert isinstance(excinfo.value, ValueError)  # widgets and callers that catch ValueError see it too
    assert "bomb.nii" in str(excinfo.value) and "memory available" in str(excinfo.value)
    with pytest.raises(MemoryError, match="bomb.nii"):
        load_raters([path, path])


@pytest.mark.parametrize("loader", [load_raters, load_distribution, check_npz_fits])
def test_forged_npz_header_is_refused_before_allocating(tmp_path, loader):
    path = _forged_npz(
        tmp_path / "bomb.npz",
        "masks" if loader is not load_distribution else "mean",
        (100_000, 100_000, 100_000),
    )
    with pytest.raises(MemoryError, match="memory available") as excinfo:
        loader(path)
    assert "bomb.npz" in str(excinfo.value)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".tif", ".png", ".dcm"])
def test_files_larger_than_available_memory_are_refused(tmp_path, monkeypatch, suffix):
    """With little memory left, a real file whose pixels do not fit is refused from its header."""
    path = write_valid(tmp_path, suffix)
    assert read_image(path)[0].size > 0
    monkeypatch.setattr(_memory, "available_memory_bytes", lambda: 64)
    with pytest.raises(MemoryError, match="memory available") as excinfo:
        read_image(path)
    assert path.name in str(excinfo.value)


# ------------------------------------------------------------------------------------------- fuzzing
_VALID_BYTES: dict[str, bytes] = {}


def _valid_bytes(suffix: str, folder: Path) -> bytes:
    if suffix not in _VALID_BYTES:
        if suffix == ".npz":
            path = folder / "fuzz_base.npz"
            np.savez(path, masks=np.stack([VOLUME, VOLUME]), spacing=np.ones(3))
        else:
            path = write_valid(folder, suffix, stem="fuzz_base")
        _VALID_BYTES[suffix] = path.read_bytes()
        path.unlink()
    return _VALID_BYTES[suffix]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    suffix=st.sampled_from([".nii", ".nii.gz", ".nrrd", ".mha", ".tif", ".png", ".npz"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=12),
    header_bias=st.booleans(),
)
def test_fuzzed_files_raise_value_error_or_load(tmp_path, suffix, cut, flips, header_bias):
    """Random truncations and byte changes: an array or a ValueError (MemoryError for forged sizes)."""
    data = bytearray(_valid_bytes(suffix, tmp_path))
    data = data[: max(1, int(len(data) * (1.0 - cut / 2))) if cut < 0.5 else len(data)]
    for position, value in flips:
        span = min(len(data), 512) if header_bias else len(data)
        data[int(position * (span - 1))] = value
    path = tmp_path / f"fuzzed{suffix}"
    path.write_bytes(bytes(data))
    try:
        if suffix == ".npz":
            result = load_raters(path).labels
        else:
            result = read_image(path)[0]
    except (ValueError, MemoryError) as exc:
        assert path.name in str(exc) or "rater" in str(exc), str(exc)
    else:
        assert isinstance(result, np.ndarray) and result.size > 0
    finally:
        os.unlink(path)
