"""npe2 writers: label and probability/image layers to NIfTI, NRRD, MetaImage or TIFF, keeping spacing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.io import write_image

__all__ = ["write_image_layer", "write_labels_layer"]


def _geometry(meta: dict[str, Any], spatial_ndim: int) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    scale = meta.get("scale")
    translate = meta.get("translate")
    spacing = tuple(float(s) for s in scale[-spatial_ndim:]) if scale is not None else None
    origin = tuple(float(t) for t in translate[-spatial_ndim:]) if translate is not None else None
    return spacing, origin


def write_labels_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer; the layer's scale becomes the file's voxel spacing.

    An existing file is never replaced: choose a new name or delete the old file first.
    """
    arr = np.asarray(data)
    if arr.ndim > 3:
        raise ValueError(f"labels layer has {arr.ndim} dimensions {arr.shape}; only 2-D or 3-D label maps are written.")
    spacing, origin = _geometry(meta, arr.ndim)
    if arr.dtype == np.int64 and arr.max(initial=0) < 2**31:
        arr = arr.astype(np.int32)
    return [write_image(path, arr, spacing=spacing, origin=origin)]


def write_image_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (e.g. probabilities or entropy); ``(C, *spatial)`` data becomes a vector image.

    Data with more than 3 dimensions (or 3 dimensions whose first axis is small and marked as
    channels in the layer metadata ``{"channel_axis": 0}``) is written with the first axis as
    channels. The layer's scale becomes the voxel spacing. An existing file is never replaced.
    """
    arr = np.asarray(data)
    layer_meta = meta.get("metadata") or {}
    channel_axis = 0 if arr.ndim == 4 or layer_meta.get("channel_axis") == 0 else None
    spatial_ndim = arr.ndim - (1 if channel_axis is not None else 0)
    spacing, origin = _geometry(meta, spatial_ndim)
    return [write_image(path, arr, spacing=spacing, origin=origin, channel_axis=channel_axis)]
