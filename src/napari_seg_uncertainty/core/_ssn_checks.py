"""Private validators used by :mod:`.ssn` and :mod:`.ssn_metrics` (on top of :mod:`._checks`)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from ._checks import describe

__all__ = ["as_float_tensor", "check_index", "check_real", "check_seed"]

# Finite-value checks run in blocks of this many elements so that validating a large
# covariance factor does not allocate a boolean array of the same size.
_CHECK_BLOCK = 1 << 22


def check_seed(seed: Any, *, name: str = "seed") -> int:
    """Return ``seed`` as a non-negative Python int (numpy integers accepted)."""
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {describe(seed)}.")
    if seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {int(seed)}.")
    return int(seed)


def check_index(value: Any, *, name: str, size: int | None = None, minimum: int = 0) -> int:
    """Return ``value`` as int after checking ``minimum <= value`` (and ``value < size`` when given)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}.")
    value = int(value)
    if size is not None and not minimum <= value < size:
        raise ValueError(f"{name} must lie in {minimum}..{size - 1}, got {value}.")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}.")
    return value


def check_real(value: Any, *, name: str) -> float:
    """Return ``value`` as float after checking it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


def as_float_tensor(value: Any, *, name: str, non_negative: bool = False) -> torch.Tensor:
    """Convert ``value`` (numpy array, tensor or nested list) to a float32 CPU tensor and check it is finite.

    A float32 numpy array or CPU tensor is wrapped without copying.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got {describe(value)}.")
        tensor = tensor.to(device="cpu", dtype=torch.float32)
    else:
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be an array of real numbers, got {describe(value)}.")
        try:
            array = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of real numbers, got {describe(value)}.") from exc
        if array.dtype == object or not (
            np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
        ):
            raise TypeError(f"{name} must be an array of real numbers, got {describe(array)}.")
        if array.dtype != np.float32:
            array = array.astype(np.float32)
        if not array.flags.writeable:
            # torch.from_numpy warns on read-only memory; the values are never written to.
            array = array.copy()
        tensor = torch.from_numpy(array)
    flat = tensor.reshape(-1).numpy()  # a view for contiguous input
    for start in range(0, flat.size, _CHECK_BLOCK):
        block = flat[start : start + _CHECK_BLOCK]
        if not np.isfinite(block).all():
            raise ValueError(f"{name} contains NaN or infinite values; expected finite numbers.")
        if non_negative and (block < 0).any():
            raise ValueError(
                f"{name} contains negative values (minimum {float(block.min()):.4g}); variances must be >= 0."
            )
    return tensor
