"""Numeric helpers shared by the core modules: one softmax, one entropy, one label dtype.

Each of these was written three times before; the copies disagreed on the label dtype. Keep them
here so every module gives the same answer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["binary_entropy_nats", "entropy_nats", "label_dtype", "softmax", "xlogx"]


def softmax(logits: np.ndarray, *, axis: int = 0, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Softmax of ``logits`` along ``axis``, computed in float64 and returned as ``dtype``.

    The maximum is subtracted first, so large logits do not overflow.

    Examples
    --------
    >>> softmax(np.array([0.0, np.log(3.0)])).round(3).tolist()
    [0.25, 0.75]
    """
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted.astype(dtype, copy=False)


def xlogx(p: np.ndarray) -> np.ndarray:
    """``p ln p`` with ``0 ln 0 = 0`` (float64), for ``p`` clipped to [0, 1]."""
    q = np.clip(p, 0.0, 1.0).astype(np.float64)
    out = np.zeros_like(q)
    np.log(q, out=out, where=q > 0)
    out *= q
    return out


def entropy_nats(p: np.ndarray, *, axis: int = 0) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (float64), summed class by class to limit memory.

    Divide by ``log(C)`` for the normalized entropy in [0, 1].

    Examples
    --------
    >>> float(entropy_nats(np.array([0.5, 0.5])) / np.log(2))
    1.0
    """
    moved = np.moveaxis(np.asarray(p), axis, 0)
    h = np.zeros(moved.shape[1:], dtype=np.float64)
    for c in range(moved.shape[0]):
        h -= xlogx(moved[c])
    return h


def binary_entropy_nats(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of a Bernoulli variable with probability ``p`` (float64)."""
    return -(xlogx(p) + xlogx(1.0 - np.clip(p, 0.0, 1.0)))


def label_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned integer dtype that holds labels ``0 … num_classes - 1``.

    Examples
    --------
    >>> [str(label_dtype(n)) for n in (2, 256, 257, 70000)]
    ['uint8', 'uint8', 'uint16', 'uint32']
    """
    if num_classes <= 256:
        return np.dtype(np.uint8)
    if num_classes <= 65536:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)
