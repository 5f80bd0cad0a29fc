"""Resample a case to a target voxel spacing with SimpleITK (images linear, label maps nearest neighbour).

Pure functions on arrays and geometry in numpy axis order; the origin and direction are kept, the
grid's extent is kept as closely as whole voxels allow (``size = round(shape * spacing / target)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._validation import check_choice, check_spacing, describe

__all__ = ["resample_array", "resample_case", "resampled_shape"]


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]) -> tuple[int, ...]:
    """Grid size after resampling: ``round(shape * spacing / target_spacing)``, at least 1 per axis.

    Examples
    --------
    >>> resampled_shape((10, 20), (2.0, 0.5), (1.0, 1.0))
    (20, 10)
    """
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample_array(
    array: np.ndarray,
    *,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: np.ndarray | Sequence[float] | None,
    target_spacing: Sequence[float],
    interpolation: str = "linear",
) -> np.ndarray:
    """Resample one ``(*spatial)`` array onto a grid of spacing ``target_spacing`` with the same origin and direction.

    Parameters
    ----------
    array : numpy.ndarray
        2-D or 3-D data in numpy order.
    spacing, origin : sequence of float
        The array's voxel size and first-voxel position, numpy order.
    direction : array-like, optional
        ``(ndim, ndim)`` (or flattened) direction cosines in numpy order; identity when None.
    target_spacing : sequence of float
        The voxel size to resample to, numpy order.
    interpolation : {"linear", "nearest"}
        Linear for images (result float32), nearest neighbour for label maps (dtype kept).

    Returns
    -------
    numpy.ndarray
        The resampled array of shape :func:`resampled_shape`.

    Examples
    --------
    >>> import numpy as np
    >>> out = resample_array(np.arange(16, dtype=np.uint8).reshape(4, 4), spacing=(2.0, 2.0), origin=(0.0, 0.0),
    ...                      direction=None, target_spacing=(1.0, 1.0), interpolation="nearest")
    >>> out.shape, out.dtype
    ((8, 8), dtype('uint8'))
    """
    import SimpleITK as sitk

    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"array must be 2-D or 3-D, got {describe(array)}.")
    ndim = array.ndim
    spacing = check_spacing(spacing, ndim)
    target = check_spacing(target_spacing, ndim, name="target_spacing")
    if spacing is None or target is None:
        raise ValueError("spacing and target_spacing are required to resample.")
    interpolation = check_choice(interpolation, name="interpolation", choices=("linear", "nearest"))
    origin = tuple(float(o) for o in origin)
    if len(origin) != ndim:
        raise ValueError(f"origin must have {ndim} entries, got {origin}.")
    dmat = np.eye(ndim) if direction is None else np.asarray(direction, dtype=float).reshape(ndim, ndim)
    data = array.astype(np.float32) if interpolation == "linear" else array
    if data.dtype == np.int64 or data.dtype == bool:
        data = data.astype(np.int32 if data.dtype == np.int64 else np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(data))
    image.SetSpacing(tuple(reversed(spacing)))
    image.SetOrigin(tuple(reversed(origin)))
    image.SetDirection(tuple(dmat[::-1, ::-1].ravel()))
    size = resampled_shape(array.shape, spacing, target)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing(tuple(reversed(target)))
    resampler.SetOutputOrigin(image.GetOrigin())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetSize([int(s) for s in reversed(size)])
    resampler.SetDefaultPixelValue(0)
    resampler.SetInterpolator(sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor)
    out = sitk.GetArrayFromImage(resampler.Execute(image))
    return out.astype(array.dtype, copy=False) if interpolation == "nearest" else out.astype(np.float32, copy=False)


def resample_case(
    image: np.ndarray | None,
    raters: np.ndarray,
    *,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: np.ndarray | Sequence[float] | None,
    target_spacing: Sequence[float],
) -> tuple[np.ndarray | None, np.ndarray, tuple[float, ...]]:
    """Resample a case: every image channel linearly, every rater by nearest neighbour.

    Parameters
    ----------
    image : numpy.ndarray or None
        ``(C, *spatial)`` image channels.
    raters : numpy.ndarray
        ``(R, *spatial)`` integer label maps.
    spacing, origin, direction, target_spacing
        As :func:`resample_array`.

    Returns
    -------
    image, raters, spacing
        The resampled float32 image (or None), the resampled raters (same dtype) and the new spacing.

    Examples
    --------
    >>> import numpy as np
    >>> img, rat, sp = resample_case(np.ones((1, 4, 4), np.float32), np.zeros((2, 4, 4), np.uint8),
    ...                              spacing=(1.0, 1.0), origin=(5.0, -3.0), direction=None, target_spacing=(2.0, 2.0))
    >>> img.shape, rat.shape, sp
    ((1, 2, 2), (2, 2, 2), (2.0, 2.0))
    """
    raters = np.asarray(raters)
    if raters.ndim not in (3, 4):
        raise ValueError(f"raters must be stacked as (R, *spatial), got {describe(raters)}.")
    kwargs = dict(spacing=spacing, origin=origin, direction=direction, target_spacing=target_spacing)
    new_raters = np.stack([resample_array(r, interpolation="nearest", **kwargs) for r in raters])
    new_image = None
    if image is not None:
        image = np.asarray(image)
        if image.shape[1:] != raters.shape[1:]:
            raise ValueError(f"image of shape {image.shape} does not match the raters' grid {raters.shape[1:]}.")
        new_image = np.stack([resample_array(c, interpolation="linear", **kwargs) for c in image])
    target = check_spacing(target_spacing, raters.ndim - 1, name="target_spacing")
    return new_image, new_raters, tuple(target)
