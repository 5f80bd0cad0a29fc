"""npe2 reader: multi-rater folders, LIDC-style ``.npz`` stacks and medical image files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._sample_data import LayerData, rater_layer_data
from .core.io import SITK_SUFFIXES, file_suffix, read_image
from .core.raters import load_raters

__all__ = ["get_reader", "read_path"]

_MAX_DISTINCT_LABELS = 64


def _looks_like_labels(data: np.ndarray) -> bool:
    """Integer data with few distinct non-negative values is a label map; anything else an image."""
    if not np.issubdtype(data.dtype, np.integer) or data.min() < 0:
        return False
    return np.unique(data).size <= _MAX_DISTINCT_LABELS


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for ``path`` when this plugin understands it, else ``None``.

    Understood: a folder of rater label files (generic, QUBIQ or MSSEG-2016 layouts), a
    LIDC-style ``.npz`` with ``masks``, and single NIfTI/NRRD/MetaImage files.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for p in paths:
        p = Path(p)
        if p.is_dir():
            continue
        suffix = file_suffix(p)
        if suffix == ".npz" and not _is_rater_npz(p):
            return None  # e.g. a saved SSN distribution: open it in the "SSN samples" widget
        if suffix not in SITK_SUFFIXES + (".npz",):
            return None
    return read_path


def _is_rater_npz(path: Path) -> bool:
    """Whether a ``.npz`` holds a LIDC-style rater stack (``masks``/``labels``/``raters``/``segs``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return any(k in data.files for k in ("masks", "labels", "raters", "segs"))
    except Exception:  # unreadable: let load_raters report it if the user insists
        return False


def read_path(path: str | list[str]) -> list[LayerData]:
    """Read ``path`` (see :func:`get_reader`) into napari layer data with spacing as scale."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        p = Path(p)
        if p.is_dir() or file_suffix(p) == ".npz":
            raters = load_raters(p)
            layers += rater_layer_data(raters.image, raters, prefix=f"{_stem(p)} ")
        else:
            layers.append(_read_single(p))
    return layers


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".npz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _read_single(p: Path) -> LayerData:
    data, meta = read_image(p)
    ndim_spatial = data.ndim - (1 if meta.channel_axis is not None else 0)
    scale = list(meta.spacing) if meta.spacing else [1.0] * ndim_spatial
    translate = list(meta.origin) if meta.origin else [0.0] * ndim_spatial
    kwargs: dict[str, Any] = {"name": _stem(p), "metadata": {"path": str(p), "spacing": scale}}
    if meta.channel_axis is not None:
        # class probabilities (C, *spatial): one layer per channel
        kwargs.update(channel_axis=0, scale=scale, translate=translate)
        if np.nanmin(data) >= 0.0 and np.nanmax(data) <= 1.0:
            kwargs["contrast_limits"] = [0.0, 1.0]
        return data, kwargs, "image"
    kwargs.update(scale=scale, translate=translate)
    if _looks_like_labels(data):
        return data, kwargs, "labels"
    return data, kwargs, "image"
