"""LIDC-style ``.npz`` archives holding many cases: headers, members read lazily, one case's arrays."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._file_checks import npz_member_headers
from .scan import NPZ_MASK_KEYS, CaseInfo, CohortProblem, natural_key

__all__ = ["npz_headers", "npz_image", "npz_mask_key", "npz_masks", "npz_member", "scan_npz"]


def npz_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an ``.npz`` archive, read from the member headers only.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(p, **{"c1/masks": np.zeros((2, 4, 4), np.uint8)})
    >>> npz_headers(p)
    {'c1/masks': ((2, 4, 4), dtype('uint8'))}
    """
    try:
        return {name: (shape, dtype) for name, shape, dtype in npz_member_headers(path)}
    except Exception as exc:  # noqa: BLE001 - zip and header errors of a damaged archive
        raise ValueError(f"could not read {str(path)!r}: not a valid .npz archive ({exc}).") from exc


def npz_member(path: str | os.PathLike, key: str) -> np.ndarray:
    """One array of an ``.npz`` archive; memory-mapped when the member is stored uncompressed (``numpy.savez``).

    A case of a stacked archive then reads only its own slice (``npz_member(p, "masks")[i]``), not the
    whole stack; compressed members (``numpy.savez_compressed``) are read in full.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.npz")
    >>> np.savez(p, masks=np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    >>> m = npz_member(p, "masks")
    >>> type(m).__name__, m[1, 2].tolist()
    ('memmap', [20, 21, 22, 23])
    """
    import struct

    from numpy.lib import format as npy_format

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(key + ".npy")
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                local = fh.read(30)
                if local[:4] == b"PK\x03\x04":
                    name_len, extra_len = struct.unpack("<HH", local[26:30])
                    fh.seek(info.header_offset + 30 + name_len + extra_len)
                    version = npy_format.read_magic(fh)
                    if version == (1, 0):
                        shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
                    else:
                        shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
                    offset = fh.tell()
                    if not dtype.hasobject and int(np.prod(shape, dtype=np.int64)) > 0:
                        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                                         order="F" if fortran else "C")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, struct.error):
        pass  # anything unusual: numpy's own reader below says what is wrong
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[key])


def npz_mask_key(keys: Sequence[str], prefix: str = "") -> str | None:
    """The key of the label stack (``masks``, ``labels``, ``raters`` or ``segs``) under ``prefix``."""
    return next((prefix + k for k in NPZ_MASK_KEYS if prefix + k in keys), None)


def scan_npz(path: str | os.PathLike) -> tuple[list[CaseInfo], list[CohortProblem]]:
    """The cases of a LIDC-style ``.npz`` (stacked ``images``/``masks`` or per-case ``<case>/masks``).

    Raises
    ------
    ValueError
        If the archive cannot be read or holds neither form.
    """
    path = str(Path(path).resolve())
    headers = npz_headers(path)
    keys = list(headers)
    mask_key = npz_mask_key(keys)
    prefixes = {k.rsplit("/", 1)[0] for k in keys if "/" in k}
    per_case = sorted((p for p in prefixes if npz_mask_key(keys, p + "/")), key=natural_key)
    cases: list[CaseInfo] = []
    problems: list[CohortProblem] = []
    spacing = _npz_small(path, "spacing") if "spacing" in headers else None
    if mask_key is not None and ("images" in headers or "case_ids" in headers or len(headers[mask_key][0]) == 5):
        shape = headers[mask_key][0]
        if len(shape) not in (4, 5):
            raise ValueError(f"{path!r}: {mask_key!r} must be stacked as (N, R, Y, X) or (N, R, Z, Y, X), "
                             f"got shape {shape}.")
        n, num_raters, spatial = shape[0], shape[1], shape[2:]
        ids = [str(s) for s in _npz_small(path, "case_ids")] if "case_ids" in headers \
            else [f"case{i:03d}" for i in range(n)]
        if len(ids) != n:
            raise ValueError(f"{path!r}: 'case_ids' has {len(ids)} entries but {mask_key!r} holds {n} cases.")
        channels = 0
        if "images" in headers:
            ishape = headers["images"][0]
            if ishape[0] != n or ishape[-len(spatial):] != spatial or len(ishape) not in (len(shape) - 1, len(shape)):
                raise ValueError(f"{path!r}: 'images' has shape {ishape}; expected (N, *S) or (N, C, *S) with "
                                 f"N={n} and S={spatial} as in {mask_key!r}.")
            channels = 1 if len(ishape) == len(shape) - 1 else ishape[1]
        for i, cid in enumerate(ids):
            cases.append(_npz_case(path, cid, str(i), spatial, spacing, channels, num_raters))
        return cases, problems
    if per_case:
        for prefix in per_case:
            mshape = headers[npz_mask_key(keys, prefix + "/")][0]
            if len(mshape) not in (3, 4):
                problems.append(CohortProblem(prefix, path, f"'{prefix}/masks' has shape {mshape}; expected "
                                                            "(R, Y, X) or (R, Z, Y, X)."))
                continue
            spatial = mshape[1:]
            channels = 0
            if prefix + "/image" in headers:
                ishape = headers[prefix + "/image"][0]
                if ishape[-len(spatial):] != spatial or len(ishape) not in (len(spatial), len(spatial) + 1):
                    problems.append(CohortProblem(prefix, path, f"'{prefix}/image' has shape {ishape} but the "
                                                                f"masks' grid is {spatial}."))
                    continue
                channels = 1 if len(ishape) == len(spatial) else ishape[0]
            sp = _npz_small(path, prefix + "/spacing") if prefix + "/spacing" in headers else spacing
            cases.append(_npz_case(path, prefix, prefix + "/", spatial, sp, channels, mshape[0]))
        return cases, problems
    if mask_key is not None:  # one LIDC case: masks (R, *S) and image (*S)
        mshape = headers[mask_key][0]
        spatial = mshape[1:]
        channels = 1 if "image" in headers else 0
        return [_npz_case(path, Path(path).name.removesuffix(".npz"), "", spatial, spacing, channels,
                          mshape[0])], problems
    raise ValueError(f"{path!r} has arrays {sorted(keys)}; a cohort .npz needs stacked 'images' (N, *S) and "
                     "'masks' (N, R, *S) (optional 'case_ids', 'spacing'), or per-case '<case>/image' and "
                     "'<case>/masks'.")


def _npz_small(path: str, key: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as data:
        return np.asarray(data[key])


def _npz_case(path: str, case_id: str, key: str, spatial: tuple[int, ...], spacing: Any, channels: int,
              num_raters: int) -> CaseInfo:
    ndim = len(spatial)
    sp = tuple(float(s) for s in spacing) if spacing is not None and len(spacing) == ndim else (1.0,) * ndim
    return CaseInfo(case_id=case_id, layout="npz", image_files=(), rater_files=(path,), shape=tuple(spatial),
                    spacing=sp, origin=(0.0,) * ndim, direction=tuple(np.eye(ndim).ravel().tolist()),
                    channels=int(channels), num_raters=int(num_raters), npz_key=key)



def npz_masks(info: CaseInfo) -> np.ndarray:
    path, key = info.rater_files[0], info.npz_key or ""
    keys = list(npz_headers(path))
    if key.endswith("/"):
        return np.asarray(npz_member(path, npz_mask_key(keys, key)))
    stack = npz_member(path, npz_mask_key(keys))
    return np.array(stack if key == "" else stack[int(key)])


def npz_image(info: CaseInfo) -> np.ndarray | None:
    path, key = info.rater_files[0], info.npz_key or ""
    keys = set(npz_headers(path))
    name = key + "image" if key.endswith("/") or key == "" else "images"
    if name not in keys:
        return None
    arr = npz_member(path, name)
    return np.array(arr if name != "images" else arr[int(key)])


