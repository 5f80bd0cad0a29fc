"""Saving and loading :class:`~.distribution.LowRankLogits` as ``.npz`` files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from .._validation import describe
from .distribution import LowRankLogits

__all__ = ["load_distribution", "save_distribution"]

_REQUIRED_KEYS = ("mean", "cov_factor", "cov_diag")
_KNOWN_KEYS = (*_REQUIRED_KEYS, "class_names", "spacing", "class_scales", "temperature", "independent_planes")


def save_distribution(
    path: str | os.PathLike[str], distribution: LowRankLogits, *, overwrite: bool = False
) -> Path:
    """Write a :class:`LowRankLogits` to an ``.npz`` file, atomically (see :func:`~.._atomic.atomic_write`).

    Parameters
    ----------
    path : str or path-like
        Destination; must end with ``.npz``.
    distribution : LowRankLogits
        What to save: ``mean``, ``cov_factor`` (``(K, C, *S)``; an empty ``(0,)`` array for rank
        0), ``cov_diag``, ``class_scales``, ``temperature``, ``class_names``,
        ``independent_planes`` and, when known, ``spacing``.
    overwrite : bool
        Replace an existing file (default False).

    Returns
    -------
    pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2)
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "dist.npz"
    >>> save_distribution(target, dist).name
    'dist.npz'
    >>> load_distribution(target).rank
    2
    """
    if not isinstance(distribution, LowRankLogits):
        raise TypeError(f"distribution must be a LowRankLogits, got {describe(distribution)}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {describe(path)}.")
    target = Path(path)
    if target.suffix.lower() != ".npz":
        raise ValueError(f"path must end with .npz, got {str(target)!r}.")
    if target.exists() and not overwrite:
        raise ValueError(f"path {str(target)!r} exists; pass overwrite=True to replace it.")
    if not target.parent.is_dir():
        raise ValueError(f"path {str(target)!r}: folder {str(target.parent)!r} does not exist.")
    factor = distribution.cov_factor
    arrays: dict[str, np.ndarray] = {
        "mean": distribution.mean,
        "cov_factor": np.zeros((0,), np.float32) if factor is None else factor,
        "cov_diag": distribution.cov_diag,
        "class_scales": np.asarray(distribution.class_scales, dtype=np.float64),
        "temperature": np.asarray(distribution.temperature, dtype=np.float64),
        "class_names": np.asarray(distribution.class_names, dtype=np.str_),
        "independent_planes": np.asarray(distribution.independent_planes),
    }
    if distribution.spacing is not None:
        arrays["spacing"] = np.asarray(distribution.spacing, dtype=np.float64)
    with atomic_write(target, overwrite=overwrite) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, **arrays)
    return target


def load_distribution(path: str | os.PathLike[str]) -> LowRankLogits:
    """Read a distribution written by :func:`save_distribution` (or any ``.npz`` with the same keys).

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` file holding ``mean (C, *S)``, ``cov_factor`` (``(K, C, *S)``,
        ``(C*prod(S), K)`` or empty for rank 0) and ``cov_diag``, and optionally ``class_names``,
        ``spacing``, ``class_scales``, ``temperature`` and ``independent_planes``.

    Returns
    -------
    LowRankLogits
        The distribution, with class names and spacing when the file has them.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
    >>> dist = synthetic_distribution((16, 16), num_classes=3, rank=2, seed=4)
    >>> target = save_distribution(pathlib.Path(tempfile.mkdtemp()) / "d.npz", dist)
    >>> bool(np.array_equal(load_distribution(target).mean, dist.mean))
    True
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or Path), got {describe(path)}.")
    source = Path(path)
    if not source.is_file():
        raise ValueError(
            f"path {str(source)!r} is not an existing file; expected a saved distribution (.npz)."
        )
    from ..io import check_npz_fits

    check_npz_fits(source)  # readable, no pickled objects, fits in memory: checked from the headers
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = [key for key in _REQUIRED_KEYS if key not in archive.files]
            if missing:
                raise ValueError(
                    f"path {str(source)!r} lacks {missing}; a saved distribution holds "
                    f"{list(_REQUIRED_KEYS)} (found {archive.files})."
                )
            arrays = {key: archive[key] for key in archive.files if key in _KNOWN_KEYS}
    except Exception as exc:  # noqa: BLE001 - zip and decompression errors of a truncated member
        if isinstance(exc, ValueError) and str(source) in str(exc):
            raise
        raise ValueError(
            f"path {str(source)!r} is not a readable .npz file (truncated or corrupt?): {exc}"
        ) from exc
    factor = arrays["cov_factor"]
    readers: dict[str, Any] = {
        "class_names": lambda a: [str(name) for name in np.atleast_1d(a).tolist()],
        "spacing": lambda a: [float(v) for v in np.atleast_1d(a)],
        "class_scales": lambda a: [float(w) for w in np.atleast_1d(a)],
        "temperature": lambda a: float(a.item()),
        "independent_planes": lambda a: bool(a.item()),
    }
    kwargs: dict[str, Any] = {}
    for key, read in readers.items():
        if key in arrays:
            try:
                kwargs[key] = read(arrays[key])
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"path {str(source)!r}: {key} must hold numbers (names for class_names), got "
                    f"{describe(arrays[key])} ({exc})."
                ) from exc
    try:
        factor = None if factor.size == 0 else factor
        return LowRankLogits(arrays["mean"], factor, arrays["cov_diag"], **kwargs)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"path {str(source)!r}: {exc}") from exc

