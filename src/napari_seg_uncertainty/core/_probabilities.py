"""Private validators for probability maps, targets and masks (calibration and uncertainty).

The generic validators live in :mod:`._checks`; these add the checks that only the calibration and
uncertainty metrics need: class-probability maps ``(C, *spatial)``, member stacks ``(M, C, *spatial)``,
targets given as hard labels, a rater stack or a soft map, and voxel masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._checks import as_label_array, as_rater_stack, describe

#: Tolerance on probabilities: values may exceed [0, 1] and sums may differ from 1 by this much
#: (float32 softmax outputs and 16-bit storage round a little).
PROBABILITY_ATOL = 1e-3

#: Voxels processed per chunk in the streaming kernels (fits the per-chunk temporaries in cache).
CHUNK_VOXELS = 1 << 17


def to_numpy_array(value: Any, *, name: str) -> np.ndarray:
    """Convert tensors and array-likes (dask, zarr, lists) to numpy, rejecting strings and objects."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if value is None or isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{name} must be a numeric array, got {describe(value)}.")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - ragged input and friends
        raise TypeError(f"{name} must be a numeric array, got {describe(value)}.") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got {describe(arr)}.")
    return arr


def iter_chunks(n: int, chunk: int = CHUNK_VOXELS) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` in blocks of ``chunk``."""
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def check_probability_chunk(p: np.ndarray, *, name: str, axis: int = 0) -> None:
    """Raise ValueError if a block of probabilities is non-finite, outside [0, 1] or not normalised."""
    low = float(p.min())
    high = float(p.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values; expected probabilities in [0, 1].")
    if low < -PROBABILITY_ATOL or high > 1 + PROBABILITY_ATOL:
        raise ValueError(
            f"{name} has values between {low:.4g} and {high:.4g}; expected probabilities in [0, 1] "
            "(apply a softmax to logits first)."
        )
    sums = p.sum(axis=axis, dtype=np.float32)
    worst = float(np.abs(sums - 1).max())
    if worst > PROBABILITY_ATOL:
        raise ValueError(
            f"{name} must sum to 1 over the class axis (axis {axis}); found sums between "
            f"{float(sums.min()):.4g} and {float(sums.max()):.4g}. Apply a softmax to logits, or "
            "give one channel per class including the background."
        )


def as_probability_array(
    probs: Any,
    *,
    name: str = "probs",
    leading_axes: int = 1,
    check_values: bool = True,
) -> np.ndarray:
    """Validate class probabilities shaped ``(C, *spatial)`` (or ``(M, C, *spatial)``).

    Parameters
    ----------
    probs : array_like
        Floating-point probabilities; ``leading_axes`` axes come before the 2 or 3 spatial axes and
        the last of them is the class axis.
    name : str
        Argument name used in error messages.
    leading_axes : int
        1 for ``(C, *spatial)``, 2 for a member stack ``(M, C, *spatial)``.
    check_values : bool
        Also check the values (finite, in [0, 1], summing to 1). Streaming kernels pass ``False`` and
        check each chunk themselves with :func:`check_probability_chunk`.

    Returns
    -------
    numpy.ndarray
        The probabilities as float32 (float64 input is kept as float64).
    """
    arr = to_numpy_array(probs, name=name)
    layout = "(C, Y, X) or (C, Z, Y, X)" if leading_axes == 1 else "(M, C, Y, X) or (M, C, Z, Y, X)"
    if arr.ndim not in (leading_axes + 2, leading_axes + 3):
        raise ValueError(
            f"{name} must be shaped {layout} (class axis first), got {arr.ndim}-D data of shape {arr.shape}."
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); expected at least one voxel and one class.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"{name} must hold floating-point probabilities, got dtype {arr.dtype}. "
            "Integer label maps are targets, not probabilities; convert them with a one-hot encoding."
        )
    if arr.dtype != np.float64:
        arr = arr.astype(np.float32, copy=False)
    if check_values:
        class_axis = leading_axes - 1
        for part in _value_check_blocks(arr, leading_axes):
            check_probability_chunk(part, name=name, axis=class_axis)
    return arr


def _value_check_blocks(arr: np.ndarray, leading_axes: int) -> Iterator[np.ndarray]:
    """Blocks of ``arr`` along the first spatial axis, so value checks stay cache friendly."""
    spatial0 = leading_axes
    n = arr.shape[spatial0]
    per_row = max(1, int(np.prod(arr.shape, dtype=np.int64) // max(n, 1)))
    step = max(1, (4 * CHUNK_VOXELS) // per_row)
    for start in range(0, n, step):
        index = [slice(None)] * arr.ndim
        index[spatial0] = slice(start, start + step)
        yield arr[tuple(index)]


@dataclass(frozen=True)
class Target:
    """A validated target: hard labels ``(*spatial)`` or a soft map ``(C, *spatial)`` (float32)."""

    labels: np.ndarray | None
    soft: np.ndarray | None

    @property
    def is_soft(self) -> bool:
        return self.soft is not None


def as_target(
    target: Any, *, num_classes: int, spatial_shape: tuple[int, ...], name: str = "target"
) -> Target:
    """Validate a target against probabilities with ``num_classes`` classes on ``spatial_shape``.

    Accepted forms (told apart by shape and dtype):

    * integer labels shaped like the spatial grid -> hard target;
    * an integer rater stack ``(R, *spatial)`` -> soft target, the mean of the raters' one-hot maps;
    * floating-point soft labels ``(C, *spatial)`` summing to 1 -> soft target.
    """
    arr = to_numpy_array(target, name=name)
    spatial_ndim = len(spatial_shape)
    if arr.shape == tuple(spatial_shape):
        labels = as_label_array(arr, name=name, ndim=(spatial_ndim,), num_classes=num_classes)
        return Target(labels=labels, soft=None)
    if arr.ndim == spatial_ndim + 1 and arr.shape[1:] == tuple(spatial_shape):
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
            from .soft_labels import rater_mean

            raters = as_rater_stack(arr, name=name, num_classes=num_classes)
            return Target(labels=None, soft=rater_mean(raters, num_classes))
        if arr.shape[0] != num_classes:
            raise ValueError(
                f"{name} holds soft labels with {arr.shape[0]} classes (shape {arr.shape}) but the "
                f"probabilities have {num_classes}; expected shape {(num_classes, *spatial_shape)}."
            )
        soft = as_probability_array(arr, name=name)
        return Target(labels=None, soft=soft.astype(np.float32, copy=False))
    raise ValueError(
        f"{name} must be integer labels of shape {tuple(spatial_shape)}, a rater stack "
        f"(R, *{tuple(spatial_shape)}) or soft labels of shape {(num_classes, *spatial_shape)}, "
        f"got {describe(arr)}."
    )


def as_mask(mask: Any, *, spatial_shape: tuple[int, ...], name: str = "mask") -> np.ndarray | None:
    """Validate an optional boolean voxel mask with the spatial shape; ``None`` passes through."""
    if mask is None:
        return None
    arr = to_numpy_array(mask, name=name)
    if arr.shape != tuple(spatial_shape):
        raise ValueError(f"{name} must have the spatial shape {tuple(spatial_shape)}, got {describe(arr)}.")
    if arr.dtype != bool:
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError(
                f"{name} must be boolean (or 0/1), got values other than 0 and 1 ({describe(arr)})."
            )
        arr = arr.astype(bool)
    if not arr.any():
        raise ValueError(f"{name} selects no voxel; expected at least one True entry.")
    return arr
