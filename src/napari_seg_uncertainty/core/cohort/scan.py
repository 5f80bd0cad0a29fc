"""Header-only scan of the cases of a cohort: what each case holds, on which grid, and what is wrong.

Nothing here reads voxel data of NIfTI/NRRD/MetaImage files: their geometry comes from
:meth:`SimpleITK.ImageFileReader.ReadImageInformation`. TIFF and PNG headers are read with tifffile
and PIL, ``.npy`` files are memory-mapped and ``.npz`` archives are read member header by member header.
Geometry is converted to numpy axis order exactly as :func:`napari_seg_uncertainty.core.io.read_image`
does (reversed from SimpleITK's ``(x, y, z)``; leading singleton axes of a one-slice volume dropped).
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._file_checks import check_nifti_complete, sitk_component_bytes
from ..io import (
    _SITK_IMAGE_IO,
    PNG_SUFFIXES,
    SITK_SUFFIXES,
    TIFF_SUFFIXES,
    _tiff_spacing,
    file_suffix,
    is_supported_file,
    itk_error_detail,
)
from ..raters.loading import _IMAGE_NAME, _MSSEG_SEG, _QUBIQ_SEG, _natural_key

__all__ = ["CaseInfo", "CohortProblem", "Header", "LAYOUTS", "read_header"]

#: The layouts a case can come in.
LAYOUTS = ("generic", "qubiq", "msseg", "npz", "manifest")
#: Grid tolerances of the per-case check.
SPACING_RTOL = 1e-3
ORIGIN_ATOL = 1e-3
DIRECTION_ATOL = 1e-4
#: Keys of the label stack in an ``.npz`` archive (the same names :func:`load_raters` accepts).
NPZ_MASK_KEYS = ("masks", "labels", "raters", "segs")
#: Image file suffixes beyond those :func:`read_image` reads.
NPY_SUFFIXES = (".npy",)


@dataclass(frozen=True, kw_only=True)
class CaseInfo:
    """What a header scan learns about one case (no voxel data).

    Attributes
    ----------
    case_id : str
        The case's name: its folder name, the manifest's ``case_id`` or the ``.npz``'s ``case_ids`` entry.
    layout : str
        One of :data:`LAYOUTS`.
    image_files : tuple of str
        One file per image channel, in channel order; ``()`` when the image is in an ``.npz`` or absent.
    rater_files : tuple of str
        One file per rater; for ``"npz"`` the archive, ``(npz_path,)``.
    shape, spacing, origin : tuple
        Spatial shape, voxel size (mm) and world position of the first voxel, numpy axis order.
    direction : tuple of float
        Flattened ``(ndim, ndim)`` direction cosines, numpy axis order.
    channels : int
        Image channels (0 when the case has no image).
    num_raters : int
        Number of raters.
    split : str or None
        ``"train"``, ``"val"`` or ``"test"`` from a manifest's split column, else None.
    npz_key : str or None
        For ``"npz"``: the case's index in stacked arrays (``"3"``) or its key prefix (``"case1/"``).

    Examples
    --------
    >>> info = CaseInfo(case_id="a", layout="generic", image_files=("a/image.nii.gz",),
    ...                 rater_files=("a/r1.nii.gz", "a/r2.nii.gz"), shape=(4, 8, 8), spacing=(2.0, 1.0, 1.0),
    ...                 origin=(0.0, 0.0, 0.0), direction=(1., 0., 0., 0., 1., 0., 0., 0., 1.),
    ...                 channels=1, num_raters=2)
    >>> info.ndim, info.nbytes
    (3, 1536)
    """

    case_id: str
    layout: str
    image_files: tuple[str, ...]
    rater_files: tuple[str, ...]
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    channels: int
    num_raters: int
    split: str | None = None
    npz_key: str | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """In-memory bytes of the case as loaded: float32 image plus uint8 raters (uint16 for > 256 classes)."""
        voxels = int(np.prod(self.shape, dtype=np.int64))
        return voxels * (4 * self.channels + self.num_raters)


@dataclass(frozen=True)
class CohortProblem:
    """A case that could not be used, the file at fault and what to do about it.

    Examples
    --------
    >>> print(CohortProblem("case7", "case7/r1.nii.gz", "the file does not exist."))
    case 'case7' (case7/r1.nii.gz): the file does not exist.
    """

    case_id: str
    file: str | None
    message: str

    def __str__(self) -> str:
        return f"case {self.case_id!r} ({self.file}): {self.message}"


@dataclass(frozen=True)
class Header:
    """Geometry of one file read from its header, numpy axis order (``None`` where the file does not say)."""

    path: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = field(default=None, repr=False)
    components: int = 1


@dataclass
class CaseFiles:
    """A case's files before the scan (what a folder or a manifest row names)."""

    case_id: str
    layout: str
    image_files: list[str]
    rater_files: list[str]
    split: str | None = None


class ScanError(Exception):
    """One problem found while resolving or scanning a case (carries the file at fault)."""

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file


# ----------------------------------------------------------------------------------------------
# one file
# ----------------------------------------------------------------------------------------------
def read_header(path: str | os.PathLike) -> Header:
    """Geometry of an image or label file from its header, without reading the voxels.

    Parameters
    ----------
    path : str or path-like
        A NIfTI, NRRD or MetaImage file (SimpleITK ``ReadImageInformation``), a TIFF or PNG (their
        headers) or a ``.npy`` array (memory-mapped).

    Returns
    -------
    Header
        Shape, spacing, origin and flattened direction in numpy order, as :func:`read_image` reports them.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format is not supported or the header cannot be read.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from napari_seg_uncertainty.core.io import write_image
    >>> p = write_image(os.path.join(tempfile.mkdtemp(), "a.nii.gz"), np.zeros((3, 4, 5), np.uint8),
    ...                 spacing=(2.5, 1.0, 0.5), origin=(-4.0, 1.0, 2.0))
    >>> h = read_header(p)
    >>> h.shape, h.spacing, h.origin
    ((3, 4, 5), (2.5, 1.0, 0.5), (-4.0, 1.0, 2.0))
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a folder; expected an image or label file.")
    suffix = file_suffix(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{str(path)!r} is an empty file (0 bytes).")
    if suffix in SITK_SUFFIXES:
        return _sitk_header(path)
    if suffix in TIFF_SUFFIXES:
        return _tiff_header(path)
    if suffix in PNG_SUFFIXES:
        return _png_header(path)
    if suffix in NPY_SUFFIXES:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types on corrupt files
            raise ValueError(f"could not read {str(path)!r}: not a valid .npy file ({exc}).") from exc
        return Header(str(path), _squeeze_shape(tuple(int(s) for s in arr.shape)))
    raise ValueError(f"{str(path)!r} has unsupported format {suffix or '(no suffix)'!r}; supported: "
                     f"{', '.join(SITK_SUFFIXES + TIFF_SUFFIXES + PNG_SUFFIXES + NPY_SUFFIXES)}.")


def _sitk_header(path: Path) -> Header:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image_io = _SITK_IMAGE_IO.get(file_suffix(path))
    if image_io in _registered_image_ios():
        reader.SetImageIO(image_io)  # skips ITK's probing of every format
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ValueError(f"could not read {str(path)!r}: the file is corrupt, truncated or not a "
                         f"{file_suffix(path)} image ({itk_error_detail(exc)}).") from exc
    ndim = len(reader.GetSize())
    if file_suffix(path) in (".nii", ".nii.gz"):  # a truncated download: caught here, not at the first epoch
        itemsize = sitk_component_bytes(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
        voxels = math.prod(int(s) for s in reader.GetSize()) * int(reader.GetNumberOfComponents())
        check_nifti_complete(path, voxels * itemsize, compressed=file_suffix(path) == ".nii.gz")
    # the same conversion as core.io._read_sitk: reverse (x, y, z) to numpy order
    shape = tuple(int(s) for s in reversed(reader.GetSize()))
    spacing = tuple(float(s) for s in reversed(reader.GetSpacing()))
    origin = tuple(float(o) for o in reversed(reader.GetOrigin()))
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(ndim, ndim)[::-1, ::-1]
    while len(shape) > 2 and shape[0] == 1:  # a 2-D slice stored as a one-slice volume
        shape, spacing, origin = shape[1:], spacing[1:], origin[1:]
        direction = direction[1:, 1:]
    return Header(str(path), shape, spacing, origin, tuple(float(v) for v in direction.ravel()),
                  int(reader.GetNumberOfComponents()))


@functools.lru_cache(maxsize=1)
def _registered_image_ios() -> tuple[str, ...]:
    """SimpleITK's image IOs (asked once: the query costs about as much as reading a header)."""
    import SimpleITK as sitk

    return tuple(sitk.ImageFileReader().GetRegisteredImageIOs())


def _tiff_header(path: Path) -> Header:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            shape = _squeeze_shape(tuple(int(s) for s in tif.series[0].shape))
            spacing = _tiff_spacing(tif, len(shape))
    except Exception as exc:  # noqa: BLE001 - tifffile raises several types on corrupt files
        raise ValueError(f"could not read {str(path)!r}: the file is corrupt, truncated or not a TIFF ({exc}).") \
            from exc
    if spacing is not None and len(spacing) != len(shape):
        spacing = None
    return Header(str(path), shape, spacing)


def _png_header(path: Path) -> Header:
    from PIL import Image

    try:
        with Image.open(str(path)) as header:
            width, height = header.size
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"could not read {str(path)!r}: the file is corrupt, truncated or not a PNG ({exc}).") \
            from exc
    return Header(str(path), (int(height), int(width)))


def _squeeze_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    while len(shape) > 2 and shape[0] == 1:
        shape = shape[1:]
    return shape


def grid_mismatch(ref: Header, other: Header) -> str | None:
    """Why ``other`` is not on ``ref``'s grid (shape, spacing, origin, direction), or None when it is.

    Geometry a file does not record (TIFF/PNG/.npy) is not compared, only the shape.
    """
    if other.shape != ref.shape:
        return f"shape {other.shape} differs from {ref.shape} of {Path(ref.path).name!r}"
    if ref.spacing is not None and other.spacing is not None \
            and not _close(other.spacing, ref.spacing, rtol=SPACING_RTOL, atol=0.0):
        return f"spacing {other.spacing} differs from {ref.spacing} of {Path(ref.path).name!r}"
    if ref.origin is not None and other.origin is not None \
            and not _close(other.origin, ref.origin, rtol=0.0, atol=ORIGIN_ATOL):
        return f"origin {other.origin} differs from {ref.origin} of {Path(ref.path).name!r}"
    if ref.direction is not None and other.direction is not None \
            and not _close(other.direction, ref.direction, rtol=0.0, atol=DIRECTION_ATOL):
        return f"direction {other.direction} differs from {ref.direction} of {Path(ref.path).name!r}"
    return None


def _close(a: Sequence[float], b: Sequence[float], *, rtol: float, atol: float) -> bool:
    """``numpy.allclose`` for short tuples (in pure Python: a scan compares thousands of them)."""
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rtol, abs_tol=atol) for x, y in zip(a, b))


# ----------------------------------------------------------------------------------------------
# one case from its files
# ----------------------------------------------------------------------------------------------
def scan_case(files: CaseFiles) -> CaseInfo:
    """Read the headers of a case's files and check they share one grid.

    Raises
    ------
    ScanError
        Naming the file at fault: missing, unreadable, a multi-component rater, a file on another grid,
        or no rater at all.
    """
    if not files.rater_files:
        raise ScanError("the case has no rater file; give at least one rater's label map.",
                        files.image_files[0] if files.image_files else None)
    headers: list[Header] = []
    for f in (*files.rater_files, *files.image_files):
        if not os.path.exists(f):
            raise ScanError("the file does not exist; check the path (relative paths are relative to the "
                            "manifest).", f)
        if os.path.isdir(f):
            raise ScanError("the path is a folder; expected an image or label file.", f)
        try:
            headers.append(read_header(f))
        except (ValueError, OSError) as exc:
            raise ScanError(f"the file cannot be read: {exc} Replace or remove it.", f) from exc
    raters = headers[: len(files.rater_files)]
    images = headers[len(files.rater_files):]
    for h in raters:
        if h.components != 1:
            raise ScanError(f"the rater file holds {h.components} components per voxel; a label map holds one "
                            "integer label per voxel.", h.path)
    ref = raters[0]
    if len(ref.shape) not in (2, 3):
        raise ScanError(f"the label map has shape {ref.shape}; expected a 2-D or 3-D label map.", ref.path)
    for h in headers[1:]:
        why = grid_mismatch(ref, h)
        if why is not None:
            kind = "rater" if h in raters else "image channel"
            raise ScanError(f"this {kind} is on another grid: {why}; every rater and image channel of a case "
                            "must share one grid (resample it onto the case's grid).", h.path)
    geo = next((h for h in headers if h.spacing is not None), ref)
    ndim = len(ref.shape)
    spacing = geo.spacing if geo.spacing is not None else (1.0,) * ndim
    origin = geo.origin if geo.origin is not None else (0.0,) * ndim
    direction = geo.direction if geo.direction is not None else tuple(np.eye(ndim).ravel().tolist())
    return CaseInfo(
        case_id=files.case_id,
        layout=files.layout,
        image_files=tuple(files.image_files),
        rater_files=tuple(files.rater_files),
        shape=ref.shape,
        spacing=tuple(spacing),
        origin=tuple(origin),
        direction=tuple(direction),
        channels=sum(h.components for h in images),
        num_raters=len(raters),
        split=files.split,
    )


# ----------------------------------------------------------------------------------------------
# case folders
# ----------------------------------------------------------------------------------------------
def _files_of(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=_natural_key)


def _image_files(files: Sequence[Path]) -> list[str]:
    return [str(p) for p in files if is_supported_file(p) and _IMAGE_NAME.match(p.name)]


def case_files_from_folder(folder: str | os.PathLike, *, task: int | None = None,
                           case_id: str | None = None) -> CaseFiles:
    """The image and rater files of a case folder, in any layout :func:`load_raters` reads.

    Raters are found as :func:`load_raters` finds them (QUBIQ ``taskXX_segYY``, MSSEG-2016
    ``ManualSegmentation_N`` anywhere below the folder, else every label file not named like an image);
    every file named like an image (``image*``, ``flair*``, ``t1*``…) is one image channel, in natural
    order (MSSEG: the FLAIR only, the preprocessed one first, as :func:`load_raters` takes it).

    Raises
    ------
    ScanError
        If the folder holds no rater, or not the QUBIQ ``task`` asked for.
    """
    folder = Path(folder)
    case_id = folder.name if case_id is None else case_id
    files = _files_of(folder)
    qubiq = [(p, m) for p in files if (m := _QUBIQ_SEG.match(p.name))]
    if qubiq:
        tasks = sorted({int(m.group(1)) for _, m in qubiq})
        chosen = tasks[0] if task is None else task
        if chosen not in tasks:
            raise ScanError(f"QUBIQ task {task} is not in this case; it has tasks {tasks}. Pass another task=.",
                            str(folder))
        segs = sorted((int(m.group(2)), p) for p, m in qubiq if int(m.group(1)) == chosen)
        return CaseFiles(case_id, "qubiq", _image_files(files), [str(p) for _, p in segs])
    msseg = sorted((int(m.group(1)), p) for p in folder.rglob("*") if p.is_file() and (m := _MSSEG_SEG.match(p.name)))
    if msseg:
        flair = sorted((p for p in folder.rglob("*") if p.is_file() and "flair" in p.name.lower()
                        and is_supported_file(p)), key=lambda p: ("preprocessed" not in p.name.lower(), str(p)))
        return CaseFiles(case_id, "msseg", [str(flair[0])] if flair else [], [str(p) for _, p in msseg])
    labels = [str(p) for p in files if is_supported_file(p) and not _IMAGE_NAME.match(p.name)]
    if not labels:
        raise ScanError("the case folder holds no label file (.nii, .nii.gz, .nrrd, .mha, .mhd, .tif, .tiff, "
                        ".png); files named image*/img*/flair*/t1*/t2*/ct* are images, not raters.", str(folder))
    return CaseFiles(case_id, "generic", _image_files(files), labels)


def is_case_folder(folder: Path) -> bool:
    """Whether ``folder`` itself holds label files (it is one case rather than a folder of cases)."""
    return any(is_supported_file(p) for p in _files_of(folder))


def case_folders(folder: Path) -> list[Path]:
    """The sub-folders of a cohort folder, natural-sorted (hidden and ``_``/``.`` folders left out)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
                  key=_natural_key)


# ----------------------------------------------------------------------------------------------
# across cases
# ----------------------------------------------------------------------------------------------
def check_across(cases: Sequence[CaseInfo]) -> tuple[list[CaseInfo], list[CohortProblem]]:
    """Keep the cases that share the cohort's ndim and image channel count (the most common; ties: first case)."""
    if not cases:
        return [], []
    ndim = _mode([c.ndim for c in cases])
    channels = _mode([c.channels for c in cases if c.ndim == ndim])
    good, problems = [], []
    for c in cases:
        where = c.image_files[0] if c.image_files else c.rater_files[0]
        if c.ndim != ndim:
            problems.append(CohortProblem(c.case_id, where, f"the case is {c.ndim}-D but the other cases are "
                                                            f"{ndim}-D; a cohort holds cases of one dimension."))
        elif c.channels != channels:
            problems.append(CohortProblem(c.case_id, where, f"the case has {c.channels} image channel(s) but the "
                                                            f"other cases have {channels}; give every case the "
                                                            "same image channels in the same order."))
        else:
            good.append(c)
    _warn_on_fewer_raters(good)
    return good, problems


def _warn_on_fewer_raters(cases: Sequence[CaseInfo]) -> None:
    """Warn (not refuse: LIDC nodules, for one, have one to four readers) when some cases have fewer raters
    than most cases, which in a folder of files usually means a rater file is missing."""
    if not cases:
        return
    usual = _mode([c.num_raters for c in cases])
    fewer = [c for c in cases if c.num_raters < usual]
    if fewer:
        shown = ", ".join(f"{c.case_id!r} ({c.num_raters})" for c in fewer[:5]) + (" …" if len(fewer) > 5 else "")
        warnings.warn(
            f"{len(fewer)} case(s) have fewer raters than the usual {usual}: {shown}; check that no rater file "
            "is missing from them (cases are kept as they are).",
            UserWarning,
            stacklevel=4,
        )


def _mode(values: list[int]) -> int:
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``case2`` before ``case10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def with_split(info: CaseInfo, split: str | None) -> CaseInfo:
    """``info`` with another split."""
    return replace(info, split=split)
