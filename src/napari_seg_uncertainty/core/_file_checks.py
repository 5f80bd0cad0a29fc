"""Checks on image files made from their headers, before any pixel is decoded.

A forged or damaged header must not make the reader allocate more memory than the machine has,
and a truncated NIfTI file must not be read with its missing voxels silently set to 0.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._memory import check_allocation, format_bytes
from ._validation import describe

__all__ = [
    "check_decoded_size",
    "check_nifti_complete",
    "check_npz_fits",
    "file_sha256",
    "sitk_component_bytes",
    "update_with_file",
]

_HASH_BLOCK = 1 << 20  # bytes per read when hashing a file


def check_decoded_size(path: Path, shape: tuple[int, ...], itemsize: int, *, copies: int = 1) -> None:
    """Refuse, from the header alone, an image whose pixels cannot fit in memory (e.g. a forged header)."""
    count = 1
    for s in shape:
        count *= int(s)
    check_allocation(
        count * int(itemsize) * copies,
        what=f"its pixel data ({' x '.join(str(int(s)) for s in shape)} values of {itemsize} bytes, "
             f"{format_bytes(count * int(itemsize))})",
        cause=f"path {str(path)!r}",
        advice="the header may be corrupt; otherwise crop or downsample the image before loading it",
    )


def sitk_component_bytes(pixel_type: str) -> int:
    """Bytes per pixel component from SimpleITK's pixel type name (e.g. '16-bit signed integer')."""
    text = pixel_type.lower()
    sizes = {"64-bit": 8, "32-bit": 4, "16-bit": 2, "8-bit": 1}
    size = next((n for bits, n in sizes.items() if bits in text), 8)
    return size * (2 if "complex" in text else 1)


def _nifti_data_offset(header: bytes) -> int | None:
    """``vox_offset`` of a NIfTI-1 or NIfTI-2 header (either byte order), or None if not NIfTI."""
    for order in "<>":
        if len(header) >= 112 and struct.unpack(f"{order}i", header[:4])[0] == 348:
            return int(struct.unpack(f"{order}f", header[108:112])[0])
        if len(header) >= 176 and struct.unpack(f"{order}i", header[:4])[0] == 540:
            return int(struct.unpack(f"{order}q", header[168:176])[0])
    return None


def _truncated(path: Path, expected: int, found: int | str) -> ValueError:
    return ValueError(
        f"could not read {str(path)!r}: the file is truncated (its header announces {expected} bytes of "
        f"header and pixels, the file holds {found}); copy or download it again."
    )


def check_nifti_complete(path: Path, data_bytes: int, *, compressed: bool) -> None:
    """Refuse a truncated NIfTI file, which SimpleITK would read with the missing voxels set to 0.

    ``.nii``: the file must reach ``vox_offset + data_bytes``. ``.nii.gz``: the gzip trailer (uncompressed
    size modulo 2**32) must match; otherwise the stream is decompressed to check its end and CRC (this also
    accepts valid multi-member gzip files, whose trailer only counts the last member).
    """
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                header = stream.read(540)
        else:
            with open(path, "rb") as stream:
                header = stream.read(540)
        offset = _nifti_data_offset(header)
        if offset is None:
            return  # not a NIfTI header after all: SimpleITK decides
        expected = offset + data_bytes
        if not compressed:
            size = path.stat().st_size
            if size < expected:
                raise _truncated(path, expected, size)
            return
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", raw.read(4))[0]
        if trailer == expected % 2**32:
            return
        total = 0
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
        if total < expected:
            raise _truncated(path, expected, f"{total} once decompressed")
    except (EOFError, OSError, zlib.error, struct.error) as exc:
        raise ValueError(f"could not read {str(path)!r}: the file is truncated or corrupt ({exc}).") from exc



def npz_member_headers(path: str | os.PathLike) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
    """``(name, shape, dtype)`` of every array in an ``.npz`` archive, from the member headers only.

    Nothing but the few header bytes of each member is read (no voxel data, no pickle); zip and header
    errors of a damaged archive propagate to the caller, which words them.
    """
    import zipfile

    from numpy.lib import format as npy_format

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = npy_format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(member)
                elif version in ((2, 0), (3, 0)):
                    shape, _, dtype = npy_format.read_array_header_2_0(member)
                else:  # pragma: no cover - numpy rejects other versions in read_magic
                    continue
            yield info.filename[: -len(".npy")], tuple(int(n) for n in shape), np.dtype(dtype)


def check_npz_fits(path: str | os.PathLike) -> None:
    """Check an ``.npz`` archive from its headers: readable, no pickled objects, arrays that fit in memory.

    Parameters
    ----------
    path : str or path-like
        The archive.

    Raises
    ------
    ValueError
        If the file is not a zip archive of ``.npy`` arrays (truncated or corrupt), or holds object arrays
        (which only load with pickle, refused for safety).
    OutputTooLargeError
        If the arrays together would not fit in the available memory (e.g. a forged header).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(p, masks=np.zeros((2, 4, 4), np.uint8))
    >>> check_npz_fits(p)
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or path-like), got {describe(path)}.")
    total = 0
    try:
        for name, shape, dtype in npz_member_headers(path):
            if dtype.hasobject:
                raise ValueError(
                    f"path {str(path)!r}: array {name!r} holds Python objects, which load "
                    "only with pickle (refused for safety); save plain numeric arrays with numpy.savez."
                )
            count = 1
            for size in shape:
                count *= int(size)
            total += count * dtype.itemsize
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types on corrupt archives
        if "refused for safety" in str(exc):
            raise
        raise ValueError(
            f"path {str(path)!r} is not a readable .npz archive (truncated or corrupt?): {exc}"
        ) from exc
    check_allocation(total, what=f"its arrays ({format_bytes(total)})", cause=f"path {str(path)!r}",
                     advice="the archive may be corrupt; otherwise save smaller arrays")




def update_with_file(digest: Any, path: str | os.PathLike) -> None:
    """Feed the bytes of the file at ``path`` into ``digest`` (a :mod:`hashlib` object), block by block.

    ``hashlib.file_digest`` makes a new digest per file; this one adds a file to a running digest
    (several files hashed as one) without holding the file in memory.
    """
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of the file at ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as handle:
    ...     _ = handle.write(b"abc")
    >>> file_sha256(handle.name)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    update_with_file(digest, path)
    return digest.hexdigest()
