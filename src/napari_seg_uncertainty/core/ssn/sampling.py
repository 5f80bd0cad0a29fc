"""Plane-wise sampling kernels of a low-rank logit distribution.

Sample ``i`` of seed ``s`` is::

    eta[c] = mu[c] + T * w[c] * ((P e)[c] + sqrt(D[c]) * n[c])

where ``T`` is the temperature, ``w`` the per-class noise scales, ``e ~ N(0, I_K)`` comes from a
random stream keyed by ``(s, i)`` (by ``(s, i, z)`` for independent planes) and the diagonal noise
``n`` of every 2-D plane comes from its own stream keyed by ``(s, i, z)`` (one plane for 2-D maps).
A full 3-D sample is assembled plane by plane from the same streams, so a slice only draws the
``C * Y * X`` numbers of its plane and gives exactly the plane of the full sample.  Temperature and
class scales multiply the same standard-normal draws, so moving a slider changes a sample smoothly
instead of redrawing it.

Everything here runs in numpy, in one thread, with element-wise float32 operations in a fixed
order: a plane of a whole-volume computation is bit for bit the plane computed alone.

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import torch

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import as_float_tensor, describe

__all__ = ["NoiseModel", "argmax_into", "argmax_labels", "labels_from_noise", "plane_noise", "scaled_logits"]

# Stream identifiers mixed into the seed of each random stream.
_LOWRANK_STREAM = 0
_DIAGONAL_STREAM = 1

#: Voxels per block when a whole sample is re-scaled and arg-maxed (a few planes: fewer numpy calls, still in cache).
_ARGMAX_BLOCK_VOXELS = 1 << 17

#: Values per block of rows when the low-rank terms are added to a plane's noise (64 KiB of float32).
_NOISE_BLOCK_VALUES = 1 << 14

Planes = int | slice | None


def _stream_generator(seed: int, sample_index: int, stream: int, plane: int | None) -> torch.Generator:
    """A torch CPU generator for one independent random stream, derived with numpy's SeedSequence."""
    key = (sample_index, stream) if plane is None else (sample_index, stream, plane)
    state = np.random.SeedSequence(entropy=seed, spawn_key=key).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(state))
    return generator


# ---------------------------------------------------------------------------------------- argmax
class _ArgmaxWork:
    """Scratch arrays of :func:`argmax_into` for one plane shape, reused from plane to plane."""

    def __init__(self, num_classes: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.logits = np.empty((num_classes, *shape), dtype=np.float32)
        self.best = np.empty(shape, dtype=np.float32)
        self.better = np.empty(shape, dtype=bool)
        self.step = np.empty(shape, dtype=dtype)


def argmax_into(logits: np.ndarray, labels: np.ndarray, work: _ArgmaxWork | None = None) -> np.ndarray:
    """Write the index of the largest class of ``logits (C, ...)`` into ``labels``; ties go to the first.

    A running maximum over the class axis with branch-free integer updates is several times
    faster than ``argmax(axis=0)`` for a few classes, and runs in one thread (no waiting on a
    busy second core).  ``work`` (scratch arrays of the plane's shape) saves the allocations when
    many planes are processed in a row; the result is the same with or without it.
    """
    if work is not None and work.best.shape == labels.shape and logits.dtype == np.float32:
        best, better, step = work.best, work.better, work.step
        np.copyto(best, logits[0])
    else:
        best = logits[0].copy()
        better = np.empty(labels.shape, dtype=bool)
        step = np.empty(labels.shape, dtype=labels.dtype)
    labels[...] = 0
    for c in range(1, logits.shape[0]):
        np.greater(logits[c], best, out=better)
        # labels += better * (c - labels): modular unsigned arithmetic, exact for any c the dtype holds.
        np.subtract(labels.dtype.type(c), labels, out=step)
        np.multiply(step, better, out=step)
        np.add(labels, step, out=labels)
        np.maximum(best, logits[c], out=best)
    return labels


def argmax_labels(logits: Any, *, name: str = "logits") -> np.ndarray:
    """Label map of the most likely class of a logit (or probability) map.

    Parameters
    ----------
    logits : array_like, shape (C, *spatial)
        Logits or probabilities with the class axis first.
    name : str
        Argument name used in error messages.

    Returns
    -------
    numpy.ndarray, shape (*spatial)
        Index of the largest class per pixel (the dtype of :func:`~.._numeric.label_dtype`:
        ``uint8`` for up to 256 classes); ties go to the lower class index, as :func:`numpy.argmax`.

    Examples
    --------
    >>> import numpy as np
    >>> argmax_labels(np.array([[0.1, 0.7], [0.9, 0.3]]))
    array([1, 0], dtype=uint8)
    """
    array = as_float_tensor(logits, name=name).numpy()
    if array.ndim < 2:
        raise ValueError(
            f"{name} must have a class axis and spatial axes (C, *spatial), got {describe(logits)}."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); expected at least one class and one pixel.")
    labels = np.empty(array.shape[1:], dtype=label_dtype(array.shape[0]))
    return argmax_into(array, labels)


# ---------------------------------------------------------------------------------------- noise
def plane_noise(
    factor: np.ndarray | None,
    diag_std: np.ndarray,
    seed: int,
    sample_index: int,
    *,
    plane: int | None,
    low_rank_plane: int | None = None,
) -> np.ndarray:
    """Unscaled noise ``P e + sqrt(D) n`` of one plane from that plane's own parameters.

    Parameters
    ----------
    factor : numpy.ndarray or None
        The plane's covariance factor ``(K, C, *plane_shape)`` float32 (any strides), None for rank 0.
    diag_std : numpy.ndarray
        The plane's ``sqrt(D)``, ``(C, *plane_shape)`` float32.
    seed, sample_index : int
        Which sample.
    plane : int or None
        Key of the diagonal stream: the plane's index ``z`` in its volume (None for a 2-D map).
    low_rank_plane : int or None
        Key of the low-rank stream: ``z`` for independent planes, None for one ``e`` per sample.

    Returns
    -------
    numpy.ndarray
        ``(C, *plane_shape)`` float32: bit for bit plane ``z`` of :meth:`NoiseModel.volume` of the
        volume the plane belongs to, so a plane computed on its own (a lazy distribution) draws the
        same sample as the whole volume.
    """
    num_classes, *shape = diag_std.shape
    generator = _stream_generator(seed, sample_index, _DIAGONAL_STREAM, plane)
    noise = torch.randn((num_classes, *shape), generator=generator, dtype=torch.float32).numpy()
    if factor is None:
        for c in range(num_classes):
            np.multiply(noise[c], diag_std[c], out=noise[c])
        return noise
    rank = int(factor.shape[0])
    low_rank = _stream_generator(seed, sample_index, _LOWRANK_STREAM, low_rank_plane)
    weights = torch.randn(rank, generator=low_rank, dtype=torch.float32).numpy()
    _add_noise_terms(noise, factor, diag_std, weights)
    return noise


def _add_noise_terms(noise: np.ndarray, factor: np.ndarray, diag_std: np.ndarray, weights: np.ndarray) -> None:
    """``noise[c] = noise[c] * std[c] + sum_k P[k, c] * e[k]``, each step rounded as IEEE float32, in rank order.

    Element-wise multiply and add in the same order for every pixel: the result does not depend on
    how many pixels are processed at once, so a plane of a whole-volume computation is bit for bit
    the plane computed alone, on any machine's BLAS (a matrix product would sum in another order).
    The ranks are added block of rows by block of rows (about 64 KiB each), so that the partial sum
    stays in the CPU cache over the ``K`` steps instead of going through memory ``K`` times (about
    20 % faster on a 512² plane, numpy having no fused multiply-add that rounds like this).
    """
    num_classes, rows = noise.shape[0], noise.shape[1]
    per_row = max(1, noise[0, 0].size)
    block = max(1, min(rows, _NOISE_BLOCK_VALUES // per_row))
    work = np.empty((block, *noise.shape[2:]), dtype=np.float32)
    for c in range(num_classes):
        np.multiply(noise[c], diag_std[c], out=noise[c])
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            out, scratch = noise[c, r0:r1], work[: r1 - r0]
            for k in range(factor.shape[0]):
                np.multiply(factor[k, c, r0:r1], weights[k], out=scratch)
                np.add(out, scratch, out=out)


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """The zero-mean part ``P e + sqrt(D) n`` of a sample, drawn plane by plane.

    Parameters
    ----------
    factor : numpy.ndarray or None
        Covariance factor ``P``, shape ``(K, C, *S)`` float32 (any strides), or None for rank 0.
    diag_std : numpy.ndarray
        Square root of the covariance diagonal, shape ``(C, *S)`` float32.
    independent_planes : bool
        Draw the low-rank weights ``e`` separately for every plane ``z`` of a 3-D map.
    """

    factor: np.ndarray | None
    diag_std: np.ndarray
    independent_planes: bool

    @property
    def rank(self) -> int:
        """Rank ``K`` of the factor (0 without one)."""
        return 0 if self.factor is None else int(self.factor.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """``(C, *S)``."""
        return tuple(self.diag_std.shape)

    def plane(self, seed: int, sample_index: int, plane: int | None) -> np.ndarray:
        """Unscaled noise of plane ``plane`` (the whole map when None), shape ``(C, *plane_shape)``, float32."""
        if plane is None:
            return plane_noise(self.factor, self.diag_std, seed, sample_index, plane=None)
        factor = None if self.factor is None else self.factor[:, :, plane]
        return plane_noise(
            factor,
            self.diag_std[:, plane],
            seed,
            sample_index,
            plane=plane,
            low_rank_plane=plane if self.independent_planes else None,
        )

    def volume(self, seed: int, sample_index: int) -> np.ndarray:
        """Unscaled noise of a whole sample, shape ``(C, *S)``, float32.

        The planes of :meth:`plane`, stacked (so bit for bit what a slice draws).  Memory:
        ``C * prod(S)`` float32 (the caller caches it; see :class:`~.stack.SampleLabelStack`).
        """
        shape = self.shape
        if len(shape) == 3:
            return self.plane(seed, sample_index, None)
        check_allocation(
            array_bytes(shape, np.float32),
            what=f"the noise of one sample, shape {shape}",
            cause=f"{shape[0]} classes on {shape[1:]}",
            advice="compute the sample plane by plane (sample_labels_at) instead",
        )
        noise = np.empty(shape, dtype=np.float32)
        for z in range(shape[1]):
            noise[:, z] = self.plane(seed, sample_index, z)
        return noise


# ---------------------------------------------------------------------------------------- logits and labels
def scaled_logits(
    mean: np.ndarray, noise: np.ndarray, scales: np.ndarray, plane: Planes, out: np.ndarray
) -> np.ndarray:
    """``mean + scales[c] * noise[c]`` of one plane (or planes), written into ``out`` (may be ``noise``).

    ``scales`` is the effective factor on each class's noise (temperature times class scale).
    """
    for c in range(mean.shape[0]):
        mean_c = mean[c] if plane is None else mean[c, plane]
        scale = float(scales[c])
        if scale == 0.0:
            np.copyto(out[c], mean_c)
        elif scale == 1.0:
            np.add(noise[c], mean_c, out=out[c])
        else:
            np.multiply(noise[c], scale, out=out[c])
            np.add(out[c], mean_c, out=out[c])
    return out


def labels_from_noise(
    mean: np.ndarray,
    noise: np.ndarray,
    scales: np.ndarray,
    *,
    plane: int | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Label map of the sample whose unscaled noise is ``noise``, with the noise scales ``scales``.

    ``noise`` is ``(C, *S)`` (from :meth:`NoiseModel.volume`) or, with ``plane``, the ``(C, Y, X)``
    noise of that plane.  Only the scaling and the argmax run: exactly the operations of a sample
    drawn plane by plane on the same noise, hence the same labels bit for bit.  This is what a
    class-scale or temperature slider recomputes.
    """
    num_classes, *spatial = mean.shape
    dtype = label_dtype(num_classes)
    if plane is not None or len(spatial) == 2:
        out = np.empty(noise.shape[1:], dtype=dtype) if labels is None else labels
        logits = scaled_logits(mean, noise, scales, plane, out=np.empty_like(noise))
        return argmax_into(logits, out)
    out = np.empty(tuple(spatial), dtype=dtype) if labels is None else labels
    depth, plane_shape = spatial[0], tuple(spatial[1:])
    block = max(1, min(depth, _ARGMAX_BLOCK_VOXELS // max(1, prod(plane_shape))))
    work = _ArgmaxWork(num_classes, (block, *plane_shape), dtype)
    for z0 in range(0, depth, block):  # a few planes at a time: element-wise, so the same result
        z1 = min(depth, z0 + block)
        if z1 - z0 < block:
            work = _ArgmaxWork(num_classes, (z1 - z0, *plane_shape), dtype)
        logits = scaled_logits(mean, noise[:, z0:z1], scales, slice(z0, z1), out=work.logits)
        argmax_into(logits, out[z0:z1], work)
    return out
