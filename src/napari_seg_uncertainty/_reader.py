"""npe2 reader: multi-rater folders, LIDC-style ``.npz`` stacks and medical image files.

A rater folder (or ``.npz``) opens as one case, drawn exactly as *Load raters* draws it: the image,
one Labels layer per rater in its own colour, the agreement maps and the rater entropy map, with the
files' spacing, origin and direction, every layer tagged with the case (the folder's name).

napari 0.9 offers a folder to every reader that ``accepts_directories`` (its own builtin reader
too): File → Open Folder… and drag-and-drop show napari's reader choice (tick "remember" to make this
plugin the default for such folders), and from a script pass the plugin,
``viewer.open(folder, plugin="napari-seg-uncertainty")`` — ``viewer.open``'s default, ``plugin="napari"``,
asks napari's builtin reader, which cannot read NIfTI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._sample_data import LayerData, case_layer_specs, with_geometry
from .core.geometry import Geometry
from .core.io import SITK_SUFFIXES, file_suffix, is_supported_file, read_image
from .core.raters import RaterSet, load_raters
from .widgets._case import case_name_for

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
            if not _holds_label_files(p):
                return None  # nothing this plugin reads (a Zarr store, a folder of JPEGs …)
            continue
        suffix = file_suffix(p)
        if suffix == ".npz" and not _is_rater_npz(p):
            return None  # e.g. a saved SSN distribution: open it in the "SSN samples" widget
        if suffix not in SITK_SUFFIXES + (".npz",):
            return None
    return read_path


def _holds_label_files(folder: Path) -> bool:
    """Whether a folder holds files this plugin reads: label maps (directly, or below it in MSSEG-2016's
    layout) or a LIDC-style ``.npz``."""
    try:
        if any(p.is_file() and (is_supported_file(p) or (file_suffix(p) == ".npz" and _is_rater_npz(p)))
               for p in folder.iterdir()):
            return True
        return any(True for _ in folder.rglob("ManualSegmentation_*.nii*"))
    except OSError:
        return False


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
            layers += case_layer_data(load_raters(p), case=case_name_for(p))
        else:
            layers.append(_read_single(p))
    return layers


def case_layer_data(raters: RaterSet, *, case: str | None = None) -> list[LayerData]:
    """The layers of one case as *Load raters* shows them: image, raters, agreement and entropy maps."""
    specs = case_layer_specs(raters, raters.agreement_map(), raters.entropy_map())
    return with_geometry(specs, Geometry.of(raters), case=case)


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".npz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return p.stem


def _read_single(p: Path) -> LayerData:
    data, meta = read_image(p)
    ndim_spatial = data.ndim - (1 if meta.channel_axis is not None else 0)
    geometry = Geometry.from_meta(ndim_spatial, spacing=meta.spacing, origin=meta.origin, direction=meta.direction)
    kwargs: dict[str, Any] = {"name": _stem(p), "metadata": {"path": str(p), "spacing": list(geometry.spacing)}}
    kwargs.update(geometry.layer_kwargs())
    if meta.channel_axis is not None:
        # class probabilities (C, *spatial): one layer per channel, each placed like the file
        kwargs.update(channel_axis=0)
        if np.nanmin(data) >= 0.0 and np.nanmax(data) <= 1.0:
            kwargs["contrast_limits"] = [0.0, 1.0]
        return data, kwargs, "image"
    if _looks_like_labels(data):
        return data, kwargs, "labels"
    return data, kwargs, "image"
