"""Read and write images and label maps with their spacing, origin and direction.

Medical formats (NIfTI, NRRD, MetaImage, DICOM) go through SimpleITK; TIFF through tifffile and
PNG through scikit-image. Arrays come out in numpy axis order ``(Z, Y, X)`` / ``(Y, X)`` as napari
shows them, so spacing, origin and direction are reversed from SimpleITK's ``(x, y, z)`` order.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write
from ._file_checks import check_decoded_size, check_nifti_complete, check_npz_fits, sitk_component_bytes
from ._validation import check_spacing, describe

__all__ = [
    "ImageMeta",
    "LABEL_SUFFIXES",
    "SITK_SUFFIXES",
    "check_npz_fits",
    "file_suffix",
    "is_supported_file",
    "read_image",
    "write_image",
]

#: Suffixes read and written through SimpleITK.
SITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
#: SimpleITK ImageIO for each suffix (the format is known from the name).
_SITK_IMAGE_IO = {
    ".nii": "NiftiImageIO",
    ".nii.gz": "NiftiImageIO",
    ".nrrd": "NrrdImageIO",
    ".nhdr": "NrrdImageIO",
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
    ".dcm": "GDCMImageIO",
}
#: Suffixes read through tifffile / scikit-image.
TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
#: Every file suffix that can hold a label map.
LABEL_SUFFIXES = SITK_SUFFIXES + TIFF_SUFFIXES + PNG_SUFFIXES


@dataclass
class ImageMeta:
    """Geometry of an image in numpy axis order.

    Attributes
    ----------
    spacing : tuple of float or None
        Voxel size per axis, e.g. ``(dz, dy, dx)`` in mm. ``None`` where the file does not say.
    origin : tuple of float or None
        World position of the first voxel, per axis in numpy order.
    direction : numpy.ndarray or None
        ``(ndim, ndim)`` direction cosines with rows and columns in numpy axis order.
    path : str or None
        The file the image came from.
    channel_axis : int or None
        ``0`` when the file holds several components per voxel (e.g. class probabilities),
        which :func:`read_image` puts first; ``None`` for scalar images.
    """

    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = field(default=None, repr=False)
    path: str | None = None
    channel_axis: int | None = None


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix of ``path`` including double suffixes such as ``.nii.gz``."""
    name = Path(path).name.lower()
    for double in (".nii.gz",):
        if name.endswith(double):
            return double
    return Path(name).suffix


def is_supported_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a suffix this package reads label maps from."""
    return file_suffix(path) in LABEL_SUFFIXES


def _supported_list() -> str:
    return ", ".join(LABEL_SUFFIXES)


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read an image or label map with its geometry.

    Parameters
    ----------
    path : str or path-like
        A NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``/``.mhd``), DICOM slice, TIFF or PNG file.

    Returns
    -------
    array : numpy.ndarray
        Pixel data in numpy order ``(Z, Y, X)`` or ``(Y, X)``; multi-component files (probability
        maps) come as ``(C, Z, Y, X)`` with ``meta.channel_axis == 0``. A 2-D slice stored as a
        one-slice volume comes back 2-D.
    meta : ImageMeta
        Spacing, origin and direction in the same axis order (``None`` where unknown).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the format is not supported or the file cannot be decoded (truncated or corrupt).

    Examples
    --------
    >>> from napari_seg_uncertainty.core.io import read_image, write_image
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> p = write_image(os.path.join(d, "seg.nii.gz"), np.zeros((4, 5, 6), np.uint8), spacing=(3.0, 1.0, 1.0))
    >>> arr, meta = read_image(p)
    >>> arr.shape, meta.spacing
    ((4, 5, 6), (3.0, 1.0, 1.0))
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or path-like), got {describe(path)}.")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {str(path)!r} does not exist.")
    if path.is_dir():
        raise ValueError(f"path {str(path)!r} is a folder; read_image expects one file.")
    suffix = file_suffix(path)
    if suffix in LABEL_SUFFIXES and path.stat().st_size == 0:
        raise ValueError(f"path {str(path)!r} is an empty file (0 bytes); expected a {suffix} image.")
    if suffix in SITK_SUFFIXES:
        arr, meta = _read_sitk(path)
    elif suffix in TIFF_SUFFIXES:
        arr, meta = _read_tiff(path)
    elif suffix in PNG_SUFFIXES:
        arr, meta = _read_png(path)
    else:
        raise ValueError(f"path {str(path)!r} has unsupported format {suffix or '(no suffix)'!r}; "
                         f"supported: {_supported_list()}.")
    if arr.size == 0:
        raise ValueError(f"could not read {str(path)!r}: it holds no pixels (shape {arr.shape}); the file is "
                         "corrupt or empty.")
    return arr, meta


def itk_error_detail(exc: Exception) -> str:
    """The last line of an ITK error, without the object addresses ITK prints (``NiftiImageIO(0x7f…)``)."""
    lines = str(exc).strip().splitlines()
    detail = lines[-1] if lines else "unknown error"
    return re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", detail)[:200]


def _sitk_error(path: Path, exc: Exception) -> ValueError:
    return ValueError(f"could not read {str(path)!r}: the file is corrupt, truncated or not a "
                      f"{file_suffix(path)} image ({itk_error_detail(exc)}).")


def _read_sitk(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image_io = _SITK_IMAGE_IO.get(file_suffix(path))
    if image_io in reader.GetRegisteredImageIOs():
        reader.SetImageIO(image_io)  # skips ITK's probing of every format (about a third of a read)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _sitk_error(path, exc) from exc
    shape = (*reader.GetSize(), reader.GetNumberOfComponents())
    itemsize = sitk_component_bytes(sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    check_decoded_size(path, shape, itemsize, copies=2)  # SimpleITK's buffer and the numpy copy of it
    if file_suffix(path) in (".nii", ".nii.gz"):
        data_bytes = itemsize
        for s in shape:
            data_bytes *= int(s)
        check_nifti_complete(path, data_bytes, compressed=file_suffix(path) == ".nii.gz")
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _sitk_error(path, exc) from exc
    arr = sitk.GetArrayFromImage(image)
    spatial_dim = image.GetDimension()
    channel_axis = None
    if image.GetNumberOfComponentsPerPixel() > 1:
        arr = np.moveaxis(arr, -1, 0)
        channel_axis = 0
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    origin = tuple(float(o) for o in reversed(image.GetOrigin()))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(spatial_dim, spatial_dim)[::-1, ::-1].copy()
    # Drop singleton spatial axes from the front (a 2-D slice stored as (1, Y, X)) and 4-D singleton axes.
    first_spatial = 0 if channel_axis is None else 1
    while arr.ndim - first_spatial > 2 and arr.shape[first_spatial] == 1:
        arr = arr[0] if channel_axis is None else arr[:, 0]
        spacing, origin = spacing[1:], origin[1:]
        direction = direction[1:, 1:]
    return arr, ImageMeta(spacing=spacing, origin=origin, direction=direction, path=str(path),
                          channel_axis=channel_axis)


def _read_tiff(path: Path) -> tuple[np.ndarray, ImageMeta]:
    import tifffile

    errors = _ErrorLog()
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.addHandler(errors)
    try:
        with tifffile.TiffFile(str(path)) as tif:
            series = tif.series[0]
            check_decoded_size(path, tuple(series.shape), np.dtype(series.dtype).itemsize)
            arr = tif.asarray()
            spacing = _tiff_spacing(tif, arr.ndim)
        if errors.messages:
            # tifffile logs damage (missing pages, bad offsets) and returns what it could read
            raise ValueError("; ".join(errors.messages[:3]))
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises several exception types on corrupt files
        raise ValueError(
            f"could not read {str(path)!r}: the file is corrupt, truncated or not a TIFF ({exc})."
        ) from exc
    finally:
        tiff_logger.removeHandler(errors)
    arr = _squeeze_leading(arr)
    if spacing is not None and len(spacing) != arr.ndim:
        spacing = None
    return arr, ImageMeta(spacing=spacing, path=str(path))


class _ErrorLog(logging.Handler):
    """Collects the error messages a library logs while it reads one file (only from this thread)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        import threading

        self._thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self._thread:
            self.messages.append(record.getMessage()[:200])


def _tiff_spacing(tif: Any, ndim: int) -> tuple[float, ...] | None:
    """Spacing from ImageJ metadata and the XY resolution tags, when present."""
    try:
        page = tif.pages[0]
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        xr = tags["XResolution"].value
        yr = tags["YResolution"].value
        dx = xr[1] / xr[0] if xr[0] else None
        dy = yr[1] / yr[0] if yr[0] else None
        if not dx or not dy or (dx == 1.0 and dy == 1.0 and not tif.imagej_metadata):
            return None
        ij = tif.imagej_metadata or {}
        if ndim == 3:
            dz = float(ij.get("spacing", 1.0))
            return (dz, float(dy), float(dx))
        return (float(dy), float(dx))
    except Exception:  # metadata is optional: any oddity means "unknown"
        return None


def _read_png(path: Path) -> tuple[np.ndarray, ImageMeta]:
    from PIL import Image
    from skimage import io as skio

    try:
        with Image.open(str(path)) as header:  # reads the header only
            width, height = header.size
            bands = len(header.getbands())
            bits = 16 if header.mode.startswith("I;16") else 32 if header.mode in ("I", "F") else 8
        check_decoded_size(path, (height, width, bands), bits // 8)
        arr = np.asarray(skio.imread(str(path)))
    except MemoryError:
        raise
    except Exception as exc:
        raise ValueError(f"could not read {str(path)!r}: the file is corrupt, truncated or not a PNG ({exc}).") from exc
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if np.all(rgb == rgb[..., :1]):
            arr = rgb[..., 0]
        else:
            raise ValueError(
                f"{str(path)!r} is a colour PNG whose channels differ; label maps must be single-channel "
                "(grey) images with one integer label per pixel. Save the mask as an 8- or 16-bit grey PNG."
            )
    return arr, ImageMeta(path=str(path))


def _squeeze_leading(arr: np.ndarray) -> np.ndarray:
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def write_image(
    path: str | os.PathLike,
    array: np.ndarray,
    *,
    spacing: tuple[float, ...] | None = None,
    origin: tuple[float, ...] | None = None,
    direction: np.ndarray | None = None,
    channel_axis: int | None = None,
    overwrite: bool = False,
) -> str:
    """Write an image, label map or probability map with its geometry.

    The file is written to a temporary name in the same folder and renamed into place, so an
    interrupted write never leaves a half-written file under ``path``.

    Parameters
    ----------
    path : str or path-like
        Destination; the suffix picks the format (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``,
        ``.tif``/``.tiff``, ``.png`` for 2-D 8/16-bit data).
    array : numpy.ndarray
        ``(Y, X)`` or ``(Z, Y, X)`` data, or with one extra channel axis (e.g. ``(C, Z, Y, X)``
        probabilities) named by ``channel_axis``.
    spacing, origin : tuple of float, optional
        Per spatial axis, in numpy order (as napari's layer ``scale`` and ``translate``).
    direction : numpy.ndarray, optional
        ``(ndim, ndim)`` direction cosines in numpy axis order.
    channel_axis : int, optional
        Axis of ``array`` holding channels (classes). Medical formats store it as a vector pixel.
    overwrite : bool
        Replace an existing file. Without it an existing file raises ``FileExistsError``.

    Returns
    -------
    str
        The path written.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from napari_seg_uncertainty.core.io import write_image
    >>> p = write_image(os.path.join(tempfile.mkdtemp(), "prob.nii.gz"),
    ...                 np.full((2, 3, 4), 0.5, np.float32), channel_axis=0, spacing=(1.0, 2.0))
    >>> os.path.exists(p)
    True
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or path-like), got {describe(path)}.")
    path = Path(path)
    if isinstance(array, (str, bytes)) or array is None:
        raise TypeError(f"array must be a numeric array, got {describe(array)}.")
    array = np.asarray(array)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"array must be numeric, got {describe(array)}.")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(
            f"array must hold real numbers (labels, intensities or probabilities), got {describe(array)}."
        )
    if array.size == 0:
        raise ValueError(f"array is empty (shape {array.shape}); an image needs at least one voxel.")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise TypeError(
                f"channel_axis must be an integer axis index or None, got {describe(channel_axis)}."
            )
        if not -array.ndim <= channel_axis < array.ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an array of shape {array.shape}.")
        array = np.moveaxis(array, channel_axis, -1)
        spatial_ndim = array.ndim - 1
    else:
        spatial_ndim = array.ndim
    if spatial_ndim not in (2, 3):
        raise ValueError(
            f"array must have 2 or 3 spatial axes (plus an optional channel_axis), got shape {array.shape}."
        )
    spacing = check_spacing(spacing, spatial_ndim)
    suffix = file_suffix(path)
    if suffix not in LABEL_SUFFIXES or suffix == ".dcm":
        raise ValueError(
            f"path {str(path)!r} has unsupported suffix {suffix or '(none)'!r}; write to one of "
            ".nii.gz, .nii, .nrrd, .mha, .mhd, .tif, .png."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; choose another name or pass overwrite=True to replace it."
        )
    if not path.parent.exists():
        raise FileNotFoundError(f"folder {str(path.parent)!r} does not exist; create it first.")

    if suffix in SITK_SUFFIXES:
        writer = _write_sitk
    elif suffix in TIFF_SUFFIXES:
        writer = _write_tiff
    else:
        writer = _write_png
    if suffix in (".mhd", ".nhdr"):
        vector = channel_axis is not None
        _write_with_data_file(path, array, spacing, origin, direction, vector, overwrite=overwrite)
        return str(path)
    with atomic_write(path, overwrite=overwrite, suffix=suffix) as temporary:
        writer(temporary, array, spacing, origin, direction, channel_axis is not None)
    return str(path)


def _write_with_data_file(
    path: Path, array: np.ndarray, spacing: Any, origin: Any, direction: Any, vector: bool, *, overwrite: bool
) -> None:
    """Write a header + data file pair (``.mhd``/``.raw``, ``.nhdr``/``.raw``) without tearing either.

    Both files are written into a temporary folder next to ``path`` (the header names its data file
    relative to itself), then moved into place data file first, header last. An existing data file of
    that name (which the header would claim) is never replaced without ``overwrite``.

    This is not :func:`atomic_write`: SimpleITK writes the pair under names it derives from the
    header's name, and the header records the data file's name, so a temporary name for the header
    would end up inside it; staging the pair under its final names in a private folder avoids that.
    """
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        staged = Path(folder) / path.name
        _write_sitk(staged, array, spacing, origin, direction, vector)
        produced = sorted(Path(folder).iterdir(), key=lambda p: p.name == path.name)  # header last
        clashes = [str(path.parent / p.name) for p in produced if (path.parent / p.name).exists()]
        if clashes and not overwrite:
            raise FileExistsError(
                f"{', '.join(repr(c) for c in clashes)} already exist(s); writing {str(path)!r} would "
                "replace them. Choose another name or pass overwrite=True."
            )
        for produced_file in produced:
            os.replace(produced_file, path.parent / produced_file.name)


def _write_sitk(path: Path, array: np.ndarray, spacing: Any, origin: Any, direction: Any, vector: bool) -> None:
    import SimpleITK as sitk

    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype == np.int64 and array.size and array.min() >= 0 and array.max() < 2**31:
        array = array.astype(np.int32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
    if spacing is not None:
        image.SetSpacing(tuple(reversed(spacing)))
    if origin is not None:
        image.SetOrigin(tuple(float(o) for o in reversed(tuple(origin))))
    if direction is not None:
        d = np.asarray(direction, dtype=float)[::-1, ::-1]
        image.SetDirection(tuple(d.ravel()))
    sitk.WriteImage(image, str(path), useCompression=file_suffix(path) in (".nii.gz", ".nrrd", ".mha"))


def _write_tiff(path: Path, array: np.ndarray, spacing: Any, origin: Any, direction: Any, vector: bool) -> None:
    import tifffile

    kwargs: dict[str, Any] = {}
    data = np.moveaxis(array, -1, 0) if vector else array
    if array.dtype == np.float64:
        data = data.astype(np.float32)
    if spacing is not None:
        dy, dx = spacing[-2], spacing[-1]
        kwargs["resolution"] = (1.0 / dx, 1.0 / dy)
        if len(spacing) == 3 and not vector:
            kwargs["imagej"] = data.dtype in (np.uint8, np.uint16, np.float32)
            if kwargs["imagej"]:
                kwargs["metadata"] = {"spacing": spacing[0], "axes": "ZYX"}
    # grey pages: without this, tifffile stores a volume of 3 or 4 slices as one RGB(A) image
    kwargs.setdefault("photometric", "minisblack")
    tifffile.imwrite(str(path), data, **kwargs)


def _write_png(path: Path, array: np.ndarray, spacing: Any, origin: Any, direction: Any, vector: bool) -> None:
    from skimage import io as skio

    if vector or array.ndim != 2:
        raise ValueError(f"PNG holds one 2-D grey image; got shape {array.shape}. Use .tif or .nii.gz instead.")
    if array.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() < 65536:
            array = array.astype(np.uint8 if array.max() < 256 else np.uint16)
        else:
            raise ValueError(f"PNG stores 8/16-bit integers; got {describe(array)}. Use .tif or .nii.gz instead.")
    skio.imsave(str(path), array, check_contrast=False)
