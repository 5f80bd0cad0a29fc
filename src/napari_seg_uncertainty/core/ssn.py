"""Low-rank Gaussian logit distributions of Stochastic Segmentation Networks (SSN).

An SSN head predicts, for an image with ``C`` classes and spatial shape ``S``, a multivariate
normal distribution over the logit map::

    eta ~ N(mu, P P^T + D)

with ``mu`` of shape ``(C, *S)``, a covariance factor ``P`` of rank ``R`` and a diagonal ``D``
(Monteiro et al., 2020).  :class:`LowRankLogits` holds such a distribution and draws samples,
manipulates them (per-class noise scale and temperature, Sec. 5.3 and Fig. 6 of the paper) and
draws single 2-D slices of a 3-D sample without computing the volume.

How a sample is drawn (and why a slice equals the slice of the full volume)
--------------------------------------------------------------------------
Sample ``i`` of seed ``s`` is::

    eta[c] = mu[c] + T * w[c] * ((P e)[c] + sqrt(D[c]) * n[c])

where ``T`` is the temperature, ``w`` the per-class noise scales, ``e ~ N(0, I_R)`` comes from a
random stream keyed by ``(s, i)`` and the diagonal noise ``n`` of every 2-D plane comes from its
own stream keyed by ``(s, i, z)`` (one plane for 2-D maps).  A full 3-D sample is assembled plane
by plane from the same streams, so ``slice(z)`` only draws the ``C * Y * X`` numbers of plane
``z`` and gives exactly the plane of the full sample.  Temperature and class scales multiply the
same standard-normal draws, so moving a slider changes a sample smoothly instead of redrawing it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._memory import array_bytes, check_allocation
from ._validation import (
    as_float_tensor,
    check_index,
    check_num_classes,
    check_positive,
    check_real,
    check_seed,
    check_spacing,
    describe,
)

__all__ = [
    "LowRankLogits",
    "SampleLabelStack",
    "argmax_labels",
    "load_distribution",
    "save_distribution",
    "synthetic_distribution",
]

# Stream identifiers mixed into the seed of each random stream.
_LOWRANK_STREAM = 0
_DIAGONAL_STREAM = 1


def _stream_generator(seed: int, sample_index: int, stream: int, plane: int | None) -> torch.Generator:
    """A torch CPU generator for one independent random stream, derived with numpy's SeedSequence."""
    key = (sample_index, stream) if plane is None else (sample_index, stream, plane)
    state = np.random.SeedSequence(entropy=seed, spawn_key=key).generate_state(1, np.uint64)[0]
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(state))
    return generator


#: Voxels per block when a whole sample is re-scaled and arg-maxed (a few planes: fewer numpy calls, still in cache).
_ARGMAX_BLOCK_VOXELS = 1 << 17


def _label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8) if num_classes <= 256 else np.dtype(np.int32)


class _ArgmaxWork:
    """Scratch arrays of :func:`_argmax_into` for one plane shape, reused from plane to plane."""

    def __init__(self, num_classes: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.logits = np.empty((num_classes, *shape), dtype=np.float32)
        self.best = np.empty(shape, dtype=np.float32)
        self.better = np.empty(shape, dtype=bool)
        self.step = np.empty(shape, dtype=dtype)


def _argmax_into(logits: np.ndarray, labels: np.ndarray, work: _ArgmaxWork | None = None) -> np.ndarray:
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
        # labels += better * (c - labels): modular integer arithmetic, exact for labels < 256.
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
        Index of the largest class per pixel (``uint8`` for up to 256 classes); ties go to the
        lower class index, as :func:`numpy.argmax`.

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
    labels = np.empty(array.shape[1:], dtype=_label_dtype(array.shape[0]))
    return _argmax_into(array, labels)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class LowRankLogits:
    """Low-rank multivariate normal distribution over a ``(C, *S)`` logit map, as output by an SSN head.

    Parameters
    ----------
    mean : array_like, shape (C, Y, X) or (C, Z, Y, X)
        Mean logit map ``mu``.
    cov_factor : array_like or None
        Covariance factor ``P`` of rank ``R`` in one of two layouts: flattened ``(C * prod(S), R)``
        as :class:`torch.distributions.LowRankMultivariateNormal` (rows ordered as
        ``mean.reshape(-1)``), or ``(R, C, *S)`` (one logit map per rank).  ``None`` means rank 0
        (a diagonal-only model).  Neither layout is copied when given as float32.
    cov_diag : array_like, shape (C, *S) or (C * prod(S),)
        Diagonal ``D`` of the covariance (variances, ``>= 0``).
    class_scales : sequence of float, optional
        Factor on each class's noise, ``w`` in Fig. 6 of the paper (default all 1).
    temperature : float
        Factor ``T >= 0`` on all noise (default 1; 0 gives the mean).
    class_names : sequence of str, optional
        One name per class (default ``"class 0"``, ``"class 1"``, ...).
    spacing : sequence of float, optional
        Voxel spacing per spatial axis, carried along for display and export.
    independent_planes : bool
        3-D only: draw the low-rank weights ``e`` separately for every plane ``z``, for a volume
        predicted plane by plane by a 2-D SSN (the factor of each plane then only correlates
        pixels of that plane).  Default False: one ``e`` for the whole volume.

    Notes
    -----
    Samples are ``mu[c] + T * w[c] * ((P e)[c] + sqrt(D[c]) * n[c])`` with standard-normal ``e``
    and ``n``, so the covariance is ``T**2 * (W P)(W P)^T + T**2 * W**2 D`` with ``W`` the diagonal
    of per-class scales (block-diagonal over planes with ``independent_planes``).  Samples are
    reproducible for a seed on the same machine and torch build; sample ``i`` of a seed does not
    depend on how many samples are drawn.  Methods that change the scales or the temperature
    return a new object sharing the (large) arrays with this one.

    Examples
    --------
    >>> import numpy as np
    >>> mean = np.zeros((2, 4, 5), dtype=np.float32)
    >>> factor = np.ones((3, 2, 4, 5), dtype=np.float32)  # (R, C, Y, X)
    >>> dist = LowRankLogits(mean, factor, np.full((2, 4, 5), 0.1, dtype=np.float32))
    >>> dist.sample(2, seed=0).shape
    (2, 2, 4, 5)
    >>> float(abs(dist.scale_class(1, 0.0).sample(1, seed=0)[0, 1]).max())
    0.0
    """

    def __init__(
        self,
        mean: Any,
        cov_factor: Any,
        cov_diag: Any,
        *,
        class_scales: Sequence[float] | None = None,
        temperature: float = 1.0,
        class_names: Sequence[str] | None = None,
        spacing: Sequence[float] | None = None,
        independent_planes: bool = False,
    ) -> None:
        mean_t = as_float_tensor(mean, name="mean")
        if mean_t.ndim not in (3, 4):
            raise ValueError(
                f"mean must be a logit map shaped (C, Y, X) or (C, Z, Y, X), got {describe(mean)}."
            )
        num_classes = check_num_classes(mean_t.shape[0], name="mean.shape[0] (number of classes)", minimum=2)
        spatial = tuple(int(s) for s in mean_t.shape[1:])
        if min(spatial) < 1:
            raise ValueError(f"mean has an empty spatial axis (shape {tuple(mean_t.shape)}).")
        size = num_classes * prod(spatial)
        flat_shape = (size, "R")
        stacked_shape = ("R", num_classes, *spatial)

        if cov_factor is None:
            factor = None
            rank_last = False
            rank = 0
        else:
            factor_t = as_float_tensor(cov_factor, name="cov_factor")
            if factor_t.ndim == 2 and factor_t.shape[0] == size:
                rank_last = True
                rank = int(factor_t.shape[1])
                factor = factor_t.reshape(num_classes, *spatial, rank)
            elif factor_t.ndim == mean_t.ndim + 1 and tuple(factor_t.shape[1:]) == (num_classes, *spatial):
                rank_last = False
                rank = int(factor_t.shape[0])
                factor = factor_t.contiguous()  # a view unless the given array is strided
            else:
                raise ValueError(
                    f"cov_factor must be shaped {flat_shape} (flattened, as torch's "
                    f"LowRankMultivariateNormal) or {stacked_shape} for a mean of shape "
                    f"{tuple(mean_t.shape)}, got {describe(cov_factor)}."
                )
            if rank < 1:
                raise ValueError(
                    f"cov_factor has rank 0 (shape {tuple(factor_t.shape)}); pass None for rank 0."
                )

        diag_t = as_float_tensor(cov_diag, name="cov_diag", non_negative=True)
        if tuple(diag_t.shape) == (size,):
            diag_t = diag_t.reshape(num_classes, *spatial)
        elif tuple(diag_t.shape) != (num_classes, *spatial):
            raise ValueError(
                f"cov_diag must be shaped {(num_classes, *spatial)} or ({size},) for a mean of shape "
                f"{tuple(mean_t.shape)}, got {describe(cov_diag)}."
            )

        self._mean = np.ascontiguousarray(mean_t.numpy())
        self._factor = factor
        self._rank_last = rank_last
        self._rank = rank
        self._diag_std = np.sqrt(diag_t.numpy())
        self._num_classes = num_classes
        self._spatial_shape = spatial
        self._class_scales = self._check_class_scales(class_scales)
        self._temperature = check_positive(temperature, name="temperature", allow_zero=True)
        self._class_names = self._check_class_names(class_names)
        self._spacing = check_spacing(spacing, len(spatial))
        if not isinstance(independent_planes, (bool, np.bool_)):
            raise TypeError(f"independent_planes must be True or False, got {describe(independent_planes)}.")
        self._independent_planes = bool(independent_planes) and len(spatial) == 3

    # ------------------------------------------------------------------ validation helpers
    def _check_class_scales(self, class_scales: Sequence[float] | None) -> np.ndarray:
        if class_scales is None:
            return np.ones(self._num_classes)
        if isinstance(class_scales, (str, bytes)) or not hasattr(class_scales, "__len__"):
            raise TypeError(f"class_scales must be a sequence of numbers, got {describe(class_scales)}.")
        if len(class_scales) != self._num_classes:
            raise ValueError(
                f"class_scales must have one entry per class ({self._num_classes}), got {len(class_scales)}."
            )
        return np.array([check_real(w, name=f"class_scales[{i}]") for i, w in enumerate(class_scales)])

    def _check_class_names(self, class_names: Sequence[str] | None) -> tuple[str, ...]:
        if class_names is None:
            return tuple(f"class {c}" for c in range(self._num_classes))
        if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__len__"):
            raise TypeError(f"class_names must be a sequence of strings, got {describe(class_names)}.")
        names = tuple(class_names)
        if len(names) != self._num_classes or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"class_names must be {self._num_classes} strings (one per class), "
                f"got {describe(class_names)}."
            )
        return names

    def _replace(self, **changes: Any) -> LowRankLogits:
        new = object.__new__(LowRankLogits)
        new.__dict__.update(self.__dict__)
        for key, value in changes.items():
            setattr(new, f"_{key}", value)
        return new

    # ------------------------------------------------------------------ properties
    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return self._num_classes

    @property
    def rank(self) -> int:
        """Rank ``R`` of the covariance factor (0 for a diagonal-only model)."""
        return self._rank

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``: ``(Y, X)`` or ``(Z, Y, X)``."""
        return self._spatial_shape

    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self._spatial_shape)

    @property
    def class_scales(self) -> tuple[float, ...]:
        """Factor on each class's noise (``w`` in Fig. 6 of the SSN paper)."""
        return tuple(float(w) for w in self._class_scales)

    @property
    def temperature(self) -> float:
        """Factor on all noise."""
        return self._temperature

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per class."""
        return self._class_names

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel spacing per spatial axis, or ``None`` when unknown."""
        return self._spacing

    @property
    def independent_planes(self) -> bool:
        """True when every plane of a 3-D map draws its own low-rank weights (a 2-D SSN on a volume)."""
        return self._independent_planes

    @property
    def noise_scales(self) -> np.ndarray:
        """Effective factor on each class's noise: ``temperature * class_scales``, shape ``(C,)``."""
        return self._temperature * self._class_scales

    @property
    def mean(self) -> np.ndarray:
        """Mean logit map ``mu``, shape ``(C, *S)`` (read-only view)."""
        return _read_only(self._mean)

    def _scaled_factor(self) -> torch.Tensor | None:
        """Effective factor in the stored layout; the stored tensor itself when no scale applies."""
        if self._factor is None:
            return None
        scales = self.noise_scales
        if np.all(scales == 1.0):
            return self._factor
        scales_t = torch.from_numpy(scales.astype(np.float32))
        if self._rank_last:
            return self._factor * scales_t.reshape((-1,) + (1,) * (self.spatial_ndim + 1))
        return self._factor * scales_t.reshape((1, -1) + (1,) * self.spatial_ndim)

    @property
    def cov_factor(self) -> np.ndarray | None:
        """Effective covariance factor (scales and temperature applied), shape ``(R, C, *S)``, read-only.

        A view of the given factor when no scale is applied, otherwise a new array; ``None`` for
        rank 0.
        """
        factor = self._scaled_factor()
        if factor is None:
            return None
        stacked = factor.movedim(-1, 0) if self._rank_last else factor
        return _read_only(stacked.numpy())

    @property
    def cov_diag(self) -> np.ndarray:
        """Effective diagonal of the covariance (variances), shape ``(C, *S)``."""
        scales = (self.noise_scales**2).astype(np.float32)
        return self._diag_std**2 * scales.reshape((-1,) + (1,) * self.spatial_ndim)

    def base_parameters(self) -> dict[str, Any]:
        """The parameters this distribution was built from, without copying.

        Returns
        -------
        dict
            ``mean (C, *S)``, ``cov_factor`` (in the layout it was given: ``(C*prod(S), R)`` or
            ``(R, C, *S)``, or ``None``), ``cov_diag (C, *S)``, ``class_scales``, ``temperature``,
            ``class_names`` and ``spacing``: ``LowRankLogits(**d)`` rebuilds an equal distribution.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> rebuilt = LowRankLogits(**dist.base_parameters())
        >>> bool((rebuilt.sample(1, seed=3) == dist.sample(1, seed=3)).all())
        True
        """
        if self._factor is None:
            factor = None
        elif self._rank_last:
            factor = self._factor.reshape(-1, self._rank).numpy()
        else:
            factor = self._factor.numpy()
        return {
            "mean": self.mean,
            "cov_factor": None if factor is None else _read_only(factor),
            "cov_diag": self._diag_std**2,
            "class_scales": self.class_scales,
            "temperature": self._temperature,
            "class_names": self._class_names,
            "spacing": self._spacing,
            "independent_planes": self._independent_planes,
        }

    def __repr__(self) -> str:
        return (
            f"LowRankLogits(num_classes={self._num_classes}, spatial_shape={self._spatial_shape}, "
            f"rank={self._rank}, class_scales={self.class_scales}, temperature={self._temperature})"
        )

    # ------------------------------------------------------------------ manipulation
    def scale_class(self, class_index: int, weight: float) -> LowRankLogits:
        """Multiply the noise of one class (its factor rows and diagonal std) by ``weight``.

        Parameters
        ----------
        class_index : int
            Class whose noise to scale, ``0 <= class_index < C``.
        weight : float
            Factor on that class's noise; Fig. 6 of the SSN paper uses ``-3 ... 3``.  0 removes the
            class's noise, a negative weight mirrors it (a sample that grew the class shrinks it).

        Returns
        -------
        LowRankLogits
            A new distribution sharing the arrays of this one; scales compose by multiplication.

        Examples
        --------
        >>> dist = synthetic_distribution((32, 32), 3, rank=4, seed=1)
        >>> quiet = dist.scale_class(2, 0.0)
        >>> bool(np.array_equal(quiet.sample(1, seed=5)[0, 2], dist.mean[2]))
        True
        """
        class_index = check_index(class_index, name="class_index", size=self._num_classes)
        weight = check_real(weight, name="weight")
        scales = self._class_scales.copy()
        scales[class_index] *= weight
        return self._replace(class_scales=scales)

    def with_class_scales(self, class_scales: Sequence[float]) -> LowRankLogits:
        """Set the factor on every class's noise at once (replaces the current scales).

        Parameters
        ----------
        class_scales : sequence of float, length C
            Factor on each class's noise.

        Returns
        -------
        LowRankLogits
            A new distribution sharing the arrays of this one.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> dist.with_class_scales([1.0, -2.0, 0.5]).class_scales
        (1.0, -2.0, 0.5)
        """
        return self._replace(class_scales=self._check_class_scales(class_scales))

    def with_temperature(self, temperature: float) -> LowRankLogits:
        """Set the temperature ``T``, the factor on all noise (covariance scaled by ``T**2``).

        Parameters
        ----------
        temperature : float
            ``T >= 0``; 0 turns every sample into the mean, values below 1 trade diversity for
            quality, above 1 the reverse.  Replaces (does not multiply) the current temperature.

        Returns
        -------
        LowRankLogits
            A new distribution sharing the arrays of this one.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 2, rank=2)
        >>> bool(np.array_equal(dist.with_temperature(0).sample(1, seed=0)[0], dist.mean))
        True
        """
        return self._replace(temperature=check_positive(temperature, name="temperature", allow_zero=True))

    def with_class_names(self, class_names: Sequence[str]) -> LowRankLogits:
        """The same distribution with other class names (e.g. the raters' names for a file without any).

        Parameters
        ----------
        class_names : sequence of str
            One name per class.

        Returns
        -------
        LowRankLogits
            A new distribution sharing the arrays of this one; samples are unchanged.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 2, rank=2)
        >>> dist.with_class_names(["background", "organ"]).class_names
        ('background', 'organ')
        """
        return self._replace(class_names=self._check_class_names(class_names))

    # ------------------------------------------------------------------ sampling
    def _low_rank_weights(self, seed: int, sample_index: int, plane: int | None) -> torch.Tensor | None:
        """The standard-normal low-rank weights ``e (R,)``: one draw per sample, or per plane."""
        if self._rank == 0:
            return None
        key = plane if self._independent_planes else None
        generator = _stream_generator(seed, sample_index, _LOWRANK_STREAM, key)
        return torch.randn(self._rank, generator=generator, dtype=torch.float32)

    def _factor_matrix(self, class_index: int, plane: int | None) -> torch.Tensor:
        """Factor rows of one class (and plane) as a ``(pixels, R)`` matrix view, without copying."""
        assert self._factor is not None
        if self._rank_last:
            block = self._factor[class_index] if plane is None else self._factor[class_index, plane]
            return block.reshape(-1, self._rank)
        block = self._factor[:, class_index] if plane is None else self._factor[:, class_index, plane]
        return block.reshape(self._rank, -1).t()

    def _factor_block(self, rank_index: int, class_index: int, planes: int | slice | None) -> np.ndarray:
        """Column ``rank_index`` of the factor for one class (and plane or planes), a numpy view."""
        assert self._factor is not None
        factor = self._factor.numpy()
        where = (slice(None),) if planes is None else (planes,)
        if self._rank_last:
            return factor[(class_index, *where, Ellipsis, rank_index)]
        return factor[(rank_index, class_index, *where)]

    def _add_low_rank(
        self, out: np.ndarray, class_index: int, planes: int | slice | None, weights: np.ndarray, work: np.ndarray
    ) -> None:
        """``out += sum_r P[r, class] * e[r]``, one rank at a time in rank order (``work``: scratch like ``out``).

        Element-wise multiply and add, each rounded as IEEE float32, in the same order for every
        pixel: the result does not depend on how many pixels are processed at once, so a plane of
        a whole-volume computation is bit for bit the plane computed alone, on any machine's BLAS.
        """
        for r in range(self._rank):
            np.multiply(self._factor_block(r, class_index, planes), weights[r], out=work)
            np.add(out, work, out=out)

    def _plane_noise(self, seed: int, sample_index: int, plane: int | None) -> np.ndarray:
        """Unscaled zero-mean noise ``P e + sqrt(D) n`` of one plane (the whole map when ``plane`` is None).

        Runs in numpy, in one thread (no waiting on a busy second core), on views of the stored
        factor: the low-rank part is added one rank at a time (see :meth:`_add_low_rank`).
        """
        shape = self._spatial_shape if plane is None else self._spatial_shape[1:]
        weights = self._low_rank_weights(seed, sample_index, plane)
        generator = _stream_generator(seed, sample_index, _DIAGONAL_STREAM, plane)
        noise = torch.randn((self._num_classes, *shape), generator=generator, dtype=torch.float32).numpy()
        work = np.empty(shape, dtype=np.float32)
        for c in range(self._num_classes):
            std_c = self._diag_std[c] if plane is None else self._diag_std[c, plane]
            np.multiply(noise[c], std_c, out=noise[c])
            if weights is not None:
                self._add_low_rank(noise[c], c, plane, weights.numpy(), work)
        return noise

    def _scaled_logits(self, noise: np.ndarray, plane: int | slice | None, out: np.ndarray) -> np.ndarray:
        """``mean + T * w[c] * noise[c]`` of one plane (or planes), written into ``out`` (may be ``noise``)."""
        scales = self.noise_scales
        for c in range(self._num_classes):
            mean_c = self._mean[c] if plane is None else self._mean[c, plane]
            scale = float(scales[c])
            if scale == 0.0:
                np.copyto(out[c], mean_c)
            elif scale == 1.0:
                np.add(noise[c], mean_c, out=out[c])
            else:
                np.multiply(noise[c], scale, out=out[c])
                np.add(out[c], mean_c, out=out[c])
        return out

    def _plane_logits(
        self, seed: int, sample_index: int, plane: int | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Logits of one plane, shape ``(C, *plane_shape)``.

        Every full sample and every slice goes through this function, plane by plane, with the
        same random streams and the same operations, hence bit-identical results.
        """
        noise = self._plane_noise(seed, sample_index, plane)
        return self._scaled_logits(noise, plane, noise if out is None else out)

    def _volume_noise(self, seed: int, sample_index: int) -> np.ndarray:
        """Unscaled noise ``P e + sqrt(D) n`` of a whole sample, shape ``(C, *S)``, float32.

        The planes of :meth:`_plane_noise`, stacked (so bit for bit what a slice draws).  Memory:
        ``C * prod(S)`` float32 (the caller caches it; see :class:`SampleLabelStack`).
        """
        if self.spatial_ndim == 2:
            return self._plane_noise(seed, sample_index, None)
        depth = self._spatial_shape[0]
        check_allocation(
            array_bytes((self._num_classes, *self._spatial_shape), np.float32),
            what=f"the noise of one sample, shape {(self._num_classes, *self._spatial_shape)}",
            cause=f"{self._num_classes} classes on {self._spatial_shape}",
            advice="compute the sample plane by plane (sample_labels_at) instead",
        )
        noise = np.empty((self._num_classes, *self._spatial_shape), dtype=np.float32)
        for z in range(depth):
            noise[:, z] = self._plane_noise(seed, sample_index, z)
        return noise

    def _labels_from_noise(
        self, noise: np.ndarray, labels: np.ndarray | None = None, *, plane: int | None = None
    ) -> np.ndarray:
        """Label map of the sample whose unscaled noise is ``noise``, with this distribution's scales.

        ``noise`` is ``(C, *S)`` (from :meth:`_volume_noise`) or, with ``plane``, the ``(C, Y, X)``
        noise of that plane.  Only the scaling and the argmax run: exactly the operations of
        :meth:`sample_labels_at` / :meth:`slice_labels` on the same noise, hence the same labels
        bit for bit.  This is what a class-scale or temperature slider recomputes.
        """
        dtype = _label_dtype(self._num_classes)
        if plane is not None or self.spatial_ndim == 2:
            shape = noise.shape[1:]
            out = np.empty(shape, dtype=dtype) if labels is None else labels
            logits = self._scaled_logits(noise, plane, out=np.empty_like(noise))
            return _argmax_into(logits, out)
        out = np.empty(self._spatial_shape, dtype=dtype) if labels is None else labels
        depth, plane_shape = self._spatial_shape[0], self._spatial_shape[1:]
        block = max(1, min(depth, _ARGMAX_BLOCK_VOXELS // max(1, prod(plane_shape))))
        work = _ArgmaxWork(self._num_classes, (block, *plane_shape), dtype)
        for z0 in range(0, depth, block):  # a few planes at a time: element-wise, so the same result
            z1 = min(depth, z0 + block)
            if z1 - z0 < block:
                work = _ArgmaxWork(self._num_classes, (z1 - z0, *plane_shape), dtype)
            logits = self._scaled_logits(noise[:, z0:z1], slice(z0, z1), out=work.logits)
            _argmax_into(logits, out[z0:z1], work)
        return out

    def _shares_parameters(self, other: LowRankLogits) -> bool:
        """True when ``other`` differs from this distribution at most by scales and temperature."""
        return (
            self._mean is other._mean
            and self._factor is other._factor
            and self._diag_std is other._diag_std
            and self._rank_last == other._rank_last
            and self._independent_planes == other._independent_planes
        )

    def _sample_array(self, seed: int, sample_index: int, out: np.ndarray | None = None) -> np.ndarray:
        if self.spatial_ndim == 2:
            return self._plane_logits(seed, sample_index, None, out=out)
        if out is None:
            out = np.empty((self._num_classes, *self._spatial_shape), dtype=np.float32)
        for z in range(self._spatial_shape[0]):
            self._plane_logits(seed, sample_index, z, out=out[:, z])
        return out

    @staticmethod
    def _check_samples_fit(n: int, shape: tuple[int, ...], dtype: Any, what: str) -> None:
        check_allocation(
            array_bytes((n, *shape), dtype),
            what=f"{n} {what} of shape {shape}",
            cause=f"n={n}",
            advice="draw fewer samples at once, or one at a time with sample_at / sample_labels_at",
        )

    def _check_sampling(self, seed: Any, sample_index: Any) -> tuple[int, int]:
        return check_seed(seed), check_index(sample_index, name="sample_index")

    def sample(self, n: int = 1, *, seed: int = 0) -> np.ndarray:
        """Draw ``n`` logit maps.

        Parameters
        ----------
        n : int
            Number of samples, ``>= 1``.
        seed : int
            Seed (``>= 0``); sample ``i`` equals ``sample_at(i, seed=seed)`` whatever ``n`` is.

        Returns
        -------
        numpy.ndarray, shape (n, C, *S), float32
            Sampled logits.

        Examples
        --------
        >>> dist = synthetic_distribution((32, 32), 3, rank=4)
        >>> logits = dist.sample(4, seed=7)
        >>> logits.shape, bool(np.array_equal(logits[2], dist.sample_at(2, seed=7)))
        ((4, 3, 32, 32), True)
        """
        n = check_index(n, name="n", minimum=1)
        seed = check_seed(seed)
        self._check_samples_fit(n, (self._num_classes, *self._spatial_shape), np.float32, "logit samples")
        out = np.empty((n, self._num_classes, *self._spatial_shape), dtype=np.float32)
        for i in range(n):
            self._sample_array(seed, i, out=out[i])
        return out

    def sample_at(self, sample_index: int, *, seed: int = 0) -> np.ndarray:
        """Logits of sample number ``sample_index`` of ``seed``, shape ``(C, *S)``.

        Parameters
        ----------
        sample_index : int
            Which sample of the seeded sequence (``>= 0``).
        seed : int
            Seed (``>= 0``).

        Returns
        -------
        numpy.ndarray, shape (C, *S), float32
            Sampled logits.

        Examples
        --------
        >>> dist = synthetic_distribution((32, 32), 3, rank=4)
        >>> dist.sample_at(5, seed=1).shape
        (3, 32, 32)
        """
        seed, sample_index = self._check_sampling(seed, sample_index)
        return self._sample_array(seed, sample_index)

    def sample_labels(self, n: int = 1, *, seed: int = 0) -> np.ndarray:
        """Draw ``n`` label maps (argmax of the sampled logits), computed plane by plane.

        Parameters
        ----------
        n : int
            Number of samples, ``>= 1``.
        seed : int
            Seed (``>= 0``); the labels are the argmax of ``sample(n, seed=seed)``.

        Returns
        -------
        numpy.ndarray, shape (n, *S)
            Labels (``uint8`` for up to 256 classes).

        Examples
        --------
        >>> dist = synthetic_distribution((32, 32), 3, rank=4)
        >>> dist.sample_labels(3, seed=0).shape
        (3, 32, 32)
        """
        n = check_index(n, name="n", minimum=1)
        seed = check_seed(seed)
        self._check_samples_fit(n, self._spatial_shape, _label_dtype(self._num_classes), "label samples")
        labels = np.empty((n, *self._spatial_shape), dtype=_label_dtype(self._num_classes))
        for i in range(n):
            labels[i] = self.sample_labels_at(i, seed=seed)
        return labels

    def sample_labels_at(self, sample_index: int, *, seed: int = 0) -> np.ndarray:
        """Label map of sample number ``sample_index`` of ``seed``, shape ``S``.

        A 3-D sample is computed plane by plane, so only one plane of logits is in memory.

        Parameters
        ----------
        sample_index : int
            Which sample of the seeded sequence (``>= 0``).
        seed : int
            Seed (``>= 0``).

        Returns
        -------
        numpy.ndarray, shape S
            Labels (``uint8`` for up to 256 classes).

        Examples
        --------
        >>> dist = synthetic_distribution((8, 32, 32), 3, rank=4)
        >>> dist.sample_labels_at(0, seed=2).shape
        (8, 32, 32)
        """
        seed, sample_index = self._check_sampling(seed, sample_index)
        labels = np.empty(self._spatial_shape, dtype=_label_dtype(self._num_classes))
        if self.spatial_ndim == 2:
            _argmax_into(self._plane_logits(seed, sample_index, None), labels)
        else:
            for z in range(self._spatial_shape[0]):
                _argmax_into(self._plane_logits(seed, sample_index, z), labels[z])
        return labels

    def _check_plane(self, z: Any) -> int:
        if self.spatial_ndim != 3:
            raise ValueError(
                f"slice needs a 3-D distribution, this one is 2-D with spatial shape {self._spatial_shape}; "
                "use sample_at for a 2-D sample."
            )
        return check_index(z, name="z", size=self._spatial_shape[0])

    def slice(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Logits of plane ``z`` of a 3-D sample, computed without the rest of the volume.

        Parameters
        ----------
        z : int
            Plane index along the first spatial axis, ``0 <= z < Z``.
        seed : int
            Seed (``>= 0``).
        sample_index : int
            Which sample of the seeded sequence (``>= 0``).

        Returns
        -------
        numpy.ndarray, shape (C, Y, X), float32
            Exactly ``sample_at(sample_index, seed=seed)[:, z]``; memory is O(C * Y * X).

        Examples
        --------
        >>> dist = synthetic_distribution((6, 16, 16), 3, rank=2)
        >>> bool(np.array_equal(dist.slice(4, seed=9), dist.sample_at(0, seed=9)[:, 4]))
        True
        """
        z = self._check_plane(z)
        seed, sample_index = self._check_sampling(seed, sample_index)
        return self._plane_logits(seed, sample_index, z)

    def slice_labels(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Label map of plane ``z`` of a 3-D sample (argmax of :meth:`slice`), shape ``(Y, X)``.

        Parameters
        ----------
        z : int
            Plane index along the first spatial axis.
        seed : int
            Seed (``>= 0``).
        sample_index : int
            Which sample of the seeded sequence (``>= 0``).

        Returns
        -------
        numpy.ndarray, shape (Y, X)
            Exactly ``sample_labels_at(sample_index, seed=seed)[z]``.

        Examples
        --------
        >>> dist = synthetic_distribution((6, 16, 16), 3, rank=2)
        >>> dist.slice_labels(2, seed=1).shape
        (16, 16)
        """
        logits = self.slice(z, seed=seed, sample_index=sample_index)
        labels = np.empty(logits.shape[1:], dtype=_label_dtype(self._num_classes))
        return _argmax_into(logits, labels)

    def mean_prediction(self) -> np.ndarray:
        """Label map of the mean logits (the SSN's most likely prediction), shape ``S``.

        Returns
        -------
        numpy.ndarray, shape S
            ``argmax`` over classes of :attr:`mean` (``uint8`` for up to 256 classes); unaffected by
            class scales and temperature.

        Examples
        --------
        >>> dist = synthetic_distribution((32, 32), 3, rank=4)
        >>> dist.mean_prediction().shape
        (32, 32)
        """
        labels = np.empty(self._spatial_shape, dtype=_label_dtype(self._num_classes))
        return _argmax_into(self._mean, labels)

    def to_torch_distribution(self) -> torch.distributions.LowRankMultivariateNormal:
        """The same distribution as :class:`torch.distributions.LowRankMultivariateNormal` (flattened).

        Materialises the effective factor ``(C * prod(S), R)``; meant for small maps, tests and
        benchmarks.  Requires every effective variance to be positive.

        Returns
        -------
        torch.distributions.LowRankMultivariateNormal
            Event shape ``(C * prod(S),)``, ordered as ``mean.reshape(-1)``.

        Examples
        --------
        >>> dist = synthetic_distribution((8, 8), 2, rank=3)
        >>> dist.to_torch_distribution().event_shape
        torch.Size([128])
        """
        size = self._num_classes * prod(self._spatial_shape)
        columns = max(self._rank, 1) * (self._spatial_shape[0] if self._independent_planes else 1)
        check_allocation(
            array_bytes((size, columns), np.float32) * 2,
            what=f"the flattened covariance factor ({size}, {columns})",
            cause=f"{self._num_classes} classes on {self._spatial_shape} with rank {self._rank}",
            advice="to_torch_distribution is meant for small maps; sample with sample / sample_at instead",
        )
        diag = torch.from_numpy(self.cov_diag).reshape(size)
        if bool((diag <= 0).any()):
            raise ValueError(
                "to_torch_distribution needs every effective variance > 0; cov_diag has zeros "
                f"(class_scales={self.class_scales}, temperature={self._temperature})."
            )
        factor = self._scaled_factor()
        if factor is None:
            factor_flat = torch.zeros((size, 1))
        elif self._rank_last:
            factor_flat = factor.reshape(size, self._rank)
        else:
            factor_flat = factor.reshape(self._rank, size).t().contiguous()
        if factor is not None and self._independent_planes:
            # one block of R columns per plane: rows of plane z only load on block z
            depth = self._spatial_shape[0]
            per_plane = factor_flat.reshape(self._num_classes, depth, -1, self._rank)
            blocks = torch.zeros((self._num_classes, depth, per_plane.shape[2], depth, self._rank))
            for z in range(depth):
                blocks[:, z, :, z] = per_plane[:, z]
            factor_flat = blocks.reshape(size, depth * self._rank)
        return torch.distributions.LowRankMultivariateNormal(
            torch.from_numpy(self._mean.reshape(size)), factor_flat, diag
        )


# ---------------------------------------------------------------------- saving and loading
_REQUIRED_KEYS = ("mean", "cov_factor", "cov_diag")
_KNOWN_KEYS = (*_REQUIRED_KEYS, "class_names", "spacing", "class_scales", "temperature", "independent_planes")


def save_distribution(
    path: str | os.PathLike[str], distribution: LowRankLogits, *, overwrite: bool = False
) -> Path:
    """Write a :class:`LowRankLogits` to an ``.npz`` file (atomically: temporary file, then rename).

    Parameters
    ----------
    path : str or path-like
        Destination; must end with ``.npz``.
    distribution : LowRankLogits
        What to save: ``mean``, ``cov_factor`` (in its original layout; an empty ``(0,)`` array
        for rank 0), ``cov_diag``, ``class_scales``, ``temperature``, ``class_names``,
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
    >>> dist = synthetic_distribution((16, 16), 3, rank=2)
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
    params = distribution.base_parameters()
    arrays: dict[str, np.ndarray] = {
        "mean": params["mean"],
        "cov_factor": np.zeros((0,), np.float32) if params["cov_factor"] is None else params["cov_factor"],
        "cov_diag": params["cov_diag"],
        "class_scales": np.asarray(params["class_scales"], dtype=np.float64),
        "temperature": np.asarray(params["temperature"], dtype=np.float64),
        "class_names": np.asarray(params["class_names"], dtype=np.str_),
        "independent_planes": np.asarray(params["independent_planes"]),
    }
    if params["spacing"] is not None:
        arrays["spacing"] = np.asarray(params["spacing"], dtype=np.float64)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def load_distribution(path: str | os.PathLike[str]) -> LowRankLogits:
    """Read a distribution written by :func:`save_distribution` (or any ``.npz`` with the same keys).

    Parameters
    ----------
    path : str or path-like
        An ``.npz`` file holding ``mean (C, *S)``, ``cov_factor`` (``(C*prod(S), R)``,
        ``(R, C, *S)`` or empty for rank 0) and ``cov_diag``, and optionally ``class_names``,
        ``spacing``, ``class_scales``, ``temperature`` and ``independent_planes``.

    Returns
    -------
    LowRankLogits
        The distribution, with class names and spacing when the file has them.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> dist = synthetic_distribution((16, 16), 3, rank=2, seed=4)
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
    from .io import check_npz_fits

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


# ---------------------------------------------------------------------- synthetic distribution
def _smooth_fields(count: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``count`` smooth random fields of unit standard deviation (coarse noise, interpolated)."""
    coarse = tuple(max(2, min(s, 6)) for s in shape)
    noise = torch.randn((count, 1, *coarse), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    fields = F.interpolate(noise, size=shape, mode=mode, align_corners=True)[:, 0]
    std = fields.reshape(count, -1).std(dim=1).clamp_min(1e-6)
    return fields / std.reshape((count,) + (1,) * len(shape))


def synthetic_distribution(
    shape: Sequence[int],
    num_classes: int,
    *,
    rank: int = 10,
    seed: int = 0,
    diagonal_variance: float = 0.05,
    class_names: Sequence[str] | None = None,
    spacing: Sequence[float] | None = None,
) -> LowRankLogits:
    """A plausible SSN output for demos and tests: nested blob classes with smooth low-rank noise.

    The mean puts class ``C-1`` in a central blob, surrounded by shells of classes ``C-2 ... 1``,
    in background 0; the shells' radii are perturbed by a smooth field.  Each class and rank gets
    an independent smooth random factor map, strongest around the object, so samples move the
    class borders coherently (as a trained SSN does) rather than adding pixel noise.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``(Y, X)`` or ``(Z, Y, X)``; every axis ``>= 2``.
    num_classes : int
        Number of classes ``C >= 2`` (background included).
    rank : int
        Rank ``R >= 1`` of the covariance factor (the SSN paper uses 10).
    seed : int
        Seed of the random fields; the same seed gives the same distribution.
    diagonal_variance : float
        Value of the diagonal ``D`` everywhere (``> 0``).
    class_names : sequence of str, optional
        One name per class.
    spacing : sequence of float, optional
        Voxel spacing to attach.

    Returns
    -------
    LowRankLogits
        ``mean (C, *shape)``, factor ``(R, C, *shape)`` and ``cov_diag (C, *shape)``, all float32.

    Examples
    --------
    >>> dist = synthetic_distribution((64, 64), 4, rank=10, seed=0)
    >>> dist.num_classes, dist.rank, dist.spatial_shape
    (4, 10, (64, 64))
    >>> sorted(np.unique(dist.mean_prediction()).tolist())
    [0, 1, 2, 3]
    """
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__"):
        raise TypeError(f"shape must be a sequence of 2 or 3 integers, got {describe(shape)}.")
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 entries ((Y, X) or (Z, Y, X)), got {tuple(shape)}.")
    spatial = tuple(check_index(s, name=f"shape[{i}]", minimum=2) for i, s in enumerate(shape))
    num_classes = check_num_classes(num_classes, minimum=2)
    rank = check_index(rank, name="rank", minimum=1)
    seed = check_seed(seed)
    diagonal_variance = check_positive(diagonal_variance, name="diagonal_variance")
    check_allocation(
        array_bytes((rank + 6, num_classes, *spatial), np.float32),
        what=f"the factor (rank, C, *shape) = {(rank, num_classes, *spatial)} with mean and temporaries",
        cause=f"shape={spatial}, num_classes={num_classes}, rank={rank}",
        advice="use a smaller shape, fewer classes or a lower rank",
    )
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]))

    # Distance from the centre (pixels), with a smoothly perturbed radius.
    axes = [torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in grids))
    radius = radius * (1.0 + 0.12 * _smooth_fields(1, spatial, generator)[0])
    outer = 0.38 * min(spatial)
    # Class k (k >= 1) occupies outer*(1 - k/C') <= radius < outer*(1 - (k-1)/C'), C' = C - 1 shells.
    edges = [outer * (1.0 - k / (num_classes - 1)) for k in range(num_classes)]  # edges[0] = outer
    steepness = 8.0 / max(outer / (num_classes - 1), 1.0)  # about 8 logits across one shell
    mean = torch.empty((num_classes, *spatial), dtype=torch.float32)
    for k in range(num_classes):
        upper = float("inf") if k == 0 else edges[k - 1]
        lower = edges[0] if k == 0 else edges[k]
        below = (lower - radius).clamp_min(0)
        above = (radius - upper).clamp_min(0)
        mean[k] = -steepness * (below + above)

    envelope = torch.exp(-((radius / (1.4 * outer)) ** 2))
    factor = torch.empty((rank, num_classes, *spatial), dtype=torch.float32)
    amplitude = 3.0 / np.sqrt(rank)
    for k in range(num_classes):
        factor[:, k] = _smooth_fields(rank, spatial, generator) * (amplitude * envelope)
    cov_diag = torch.full((num_classes, *spatial), diagonal_variance, dtype=torch.float32)
    return LowRankLogits(mean, factor, cov_diag, class_names=class_names, spacing=spacing)


# ---------------------------------------------------------------------- lazy stack of sampled label maps
def _normalise_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """Expand ``key`` to one entry per axis (Ellipsis and missing trailing axes become full slices)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is None for k in key):
        raise IndexError("SampleLabelStack does not support numpy.newaxis in indices.")
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...').")
    if Ellipsis in key:
        position = key.index(Ellipsis)
        fill = (slice(None),) * (ndim - len(key) + 1)
        key = key[:position] + fill + key[position + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a stack with {ndim} dimensions: {len(key)} given.")
    return key + (slice(None),) * (ndim - len(key))


def _as_plane_index(value: Any) -> int | None:
    """The index when ``value`` picks a single plane (an integer), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        return int(value)
    return None


class SampleLabelStack:
    """Read-only array of sampled label maps, shape ``(N, *S)``, computed on demand.

    Indexing a single sample and, for 3-D maps, a single plane (``stack[i, z]``, what a viewer
    showing one plane asks for) computes only that plane with :meth:`LowRankLogits.slice_labels`;
    other indices compute whole samples.  Results are cached (least recently used first out)
    until :meth:`set_distribution` or :meth:`set_sample_index` changes what a sample is.  The
    standard-normal part of recently shown planes is cached too, so a new distribution that
    differs only in class scales or temperature (a slider move) is redrawn without drawing new
    random numbers.  Thread-safe.

    Parameters
    ----------
    distribution : LowRankLogits
        Distribution to sample from (scales and temperature included).
    sample_indices : sequence of int
        For each of the ``N`` entries, which sample of the seeded sequence it shows.
    seed : int
        Seed of the samples (``>= 0``).
    cache_bytes : int
        Upper bound on the memory kept for label maps (default 256 MiB).
    noise_cache_bytes : int
        Upper bound on the memory kept for unscaled noise planes (default 64 MiB; 0 disables).
    volume_cache_bytes : int
        Upper bound on the memory kept for the unscaled noise of whole 3-D samples (default
        320 MiB: two samples of 4 classes on 155×240×240).  A whole sample, once computed, keeps
        its noise here, so a class-scale or temperature change redraws the whole volume with one
        scaling and argmax pass (no new random numbers), and its planes come from it too.

    Examples
    --------
    >>> dist = synthetic_distribution((4, 32, 32), 3, rank=2)
    >>> stack = SampleLabelStack(dist, range(5), seed=1)
    >>> stack.shape, stack.dtype
    ((5, 4, 32, 32), dtype('uint8'))
    >>> bool(np.array_equal(stack[3, 2], dist.slice_labels(2, seed=1, sample_index=3)))
    True
    """

    def __init__(
        self,
        distribution: LowRankLogits,
        sample_indices: Sequence[int],
        *,
        seed: int = 0,
        cache_bytes: int = 256 << 20,
        noise_cache_bytes: int = 64 << 20,
        volume_cache_bytes: int = 320 << 20,
    ) -> None:
        import threading
        from collections import OrderedDict

        if not isinstance(distribution, LowRankLogits):
            raise TypeError(f"distribution must be a LowRankLogits, got {describe(distribution)}.")
        if isinstance(sample_indices, (str, bytes)) or not hasattr(sample_indices, "__iter__"):
            raise TypeError(f"sample_indices must be a sequence of integers, got {describe(sample_indices)}.")
        indices = [check_index(i, name=f"sample_indices[{k}]") for k, i in enumerate(sample_indices)]
        if not indices:
            raise ValueError("sample_indices is empty; give at least one sample index.")
        self._distribution = distribution
        self._indices = indices
        self._seed = check_seed(seed)
        self._cache_bytes = check_index(cache_bytes, name="cache_bytes")
        self._cache: OrderedDict[tuple[int, int | None], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._noise_cache_bytes = check_index(noise_cache_bytes, name="noise_cache_bytes")
        self._noise_cache: OrderedDict[tuple[int, int | None], np.ndarray] = OrderedDict()
        self._noise_cached_bytes = 0
        self._noise_owner: LowRankLogits | None = None
        self._volume_cache_bytes = check_index(volume_cache_bytes, name="volume_cache_bytes")
        self._volume_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._volume_cached_bytes = 0
        self._volume_owner: LowRankLogits | None = None
        self._lock = threading.RLock()

    # array protocol ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *S)``."""
        return (len(self._indices), *self._distribution.spatial_shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions, ``1 + spatial_ndim``."""
        return 1 + self._distribution.spatial_ndim

    @property
    def dtype(self) -> np.dtype:
        """Label dtype (``uint8`` for up to 256 classes)."""
        return _label_dtype(self._distribution.num_classes)

    @property
    def size(self) -> int:
        """Number of elements."""
        return prod(self.shape)

    def __len__(self) -> int:
        return len(self._indices)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self[:]
        return full if dtype is None else full.astype(dtype)

    # state ---------------------------------------------------------------------------
    @property
    def distribution(self) -> LowRankLogits:
        """The distribution the samples come from."""
        return self._distribution

    @property
    def seed(self) -> int:
        """Seed of the samples."""
        return self._seed

    @property
    def sample_indices(self) -> tuple[int, ...]:
        """Which sample of the seeded sequence each entry shows."""
        return tuple(self._indices)

    def set_distribution(self, distribution: LowRankLogits) -> None:
        """Show samples of another distribution on the same grid (e.g. new scales); clears the cache.

        Parameters
        ----------
        distribution : LowRankLogits
            Same number of classes and grid as the current one.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.set_distribution(dist.with_temperature(0.0))
        >>> bool(np.array_equal(stack[1], dist.mean_prediction()))
        True
        """
        if not isinstance(distribution, LowRankLogits):
            raise TypeError(f"distribution must be a LowRankLogits, got {describe(distribution)}.")
        if (distribution.num_classes, distribution.spatial_shape) != (
            self._distribution.num_classes,
            self._distribution.spatial_shape,
        ):
            raise ValueError(
                f"distribution must have {self._distribution.num_classes} classes on the grid "
                f"{self._distribution.spatial_shape}, got {distribution.num_classes} on "
                f"{distribution.spatial_shape}."
            )
        with self._lock:
            self._distribution = distribution
            self._cache.clear()
            self._cached_bytes = 0

    def set_sample_index(self, entry: int, sample_index: int) -> None:
        """Make ``entry`` show sample number ``sample_index`` of the seeded sequence (a "new sample").

        Parameters
        ----------
        entry : int
            Position in the stack, ``0 <= entry < N``.
        sample_index : int
            Which sample of the seeded sequence it shows from now on.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.set_sample_index(0, 9)
        >>> stack.sample_indices
        (9, 1)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        sample_index = check_index(sample_index, name="sample_index")
        with self._lock:
            self._indices[entry] = sample_index
            for key in [k for k in self._cache if k[0] == entry]:
                self._cached_bytes -= self._cache.pop(key).nbytes

    # computation ---------------------------------------------------------------------
    @staticmethod
    def _store(cache: Any, key: Any, value: np.ndarray, total: int, limit: int) -> int:
        """Insert into an LRU cache, evict the oldest entries beyond ``limit`` bytes; return the new total."""
        if key in cache:
            total -= cache.pop(key).nbytes
        cache[key] = value
        total += value.nbytes
        while total > limit and cache:
            _, dropped = cache.popitem(last=False)
            total -= dropped.nbytes
        return total

    def _noise(self, distribution: LowRankLogits, sample_index: int, plane: int | None) -> np.ndarray:
        key = (sample_index, plane)
        with self._lock:
            owner = self._noise_owner
            if owner is not None and distribution._shares_parameters(owner) and key in self._noise_cache:
                self._noise_cache.move_to_end(key)
                return self._noise_cache[key]
        noise = distribution._plane_noise(self._seed, sample_index, plane)
        noise.flags.writeable = False
        with self._lock:
            if self._noise_owner is None or not distribution._shares_parameters(self._noise_owner):
                self._noise_cache.clear()
                self._noise_cached_bytes = 0
                self._noise_owner = distribution
            self._noise_cached_bytes = self._store(
                self._noise_cache, key, noise, self._noise_cached_bytes, self._noise_cache_bytes
            )
        return noise

    def _cached_volume_noise(self, distribution: LowRankLogits, sample_index: int) -> np.ndarray | None:
        with self._lock:
            owner = self._volume_owner
            if owner is not None and distribution._shares_parameters(owner) and sample_index in self._volume_cache:
                self._volume_cache.move_to_end(sample_index)
                return self._volume_cache[sample_index]
        return None

    def _volume_noise(self, distribution: LowRankLogits, sample_index: int, *, keep: bool) -> np.ndarray:
        """Unscaled noise of a whole 3-D sample: from the cache, or computed (and kept if ``keep``)."""
        noise = self._cached_volume_noise(distribution, sample_index)
        if noise is not None:
            return noise
        noise = distribution._volume_noise(self._seed, sample_index)
        noise.flags.writeable = False
        if keep and noise.nbytes <= self._volume_cache_bytes:
            with self._lock:
                if self._volume_owner is None or not distribution._shares_parameters(self._volume_owner):
                    self._volume_cache.clear()
                    self._volume_cached_bytes = 0
                    self._volume_owner = distribution
                self._volume_cached_bytes = self._store(
                    self._volume_cache, sample_index, noise, self._volume_cached_bytes, self._volume_cache_bytes
                )
        return noise

    def _whole_sample_noise_fits(self, distribution: LowRankLogits) -> bool:
        size = array_bytes((distribution.num_classes, *distribution.spatial_shape), np.float32)
        return size <= max(self._volume_cache_bytes, 1 << 20)

    def _cached(self, entry: int, plane: int | None, *, keep_noise: bool = True) -> np.ndarray:
        key = (entry, plane)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            if plane is not None and (entry, None) in self._cache:
                return self._cache[(entry, None)][plane]
            distribution, sample_index = self._distribution, self._indices[entry]
        if plane is None and distribution.spatial_ndim == 3:
            if self._whole_sample_noise_fits(distribution):
                noise = self._volume_noise(distribution, sample_index, keep=keep_noise)
                result = distribution._labels_from_noise(noise)
            else:  # too large to hold the noise: plane by plane, O(C * Y * X) memory
                result = distribution.sample_labels_at(sample_index, seed=self._seed)
        else:
            volume = None if plane is None else self._cached_volume_noise(distribution, sample_index)
            if volume is not None:
                result = distribution._labels_from_noise(volume[:, plane], plane=plane)
            else:
                noise = self._noise(distribution, sample_index, plane)
                result = distribution._labels_from_noise(noise, plane=plane)
        result.flags.writeable = False
        with self._lock:
            if distribution is self._distribution and sample_index == self._indices[entry]:
                self._cached_bytes = self._store(
                    self._cache, key, result, self._cached_bytes, self._cache_bytes
                )
        return result

    def cached_sample(self, entry: int) -> np.ndarray | None:
        """Whole label map of one entry if it is computed already (read-only), else ``None``; never computes.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> stack = SampleLabelStack(dist, range(2), seed=0)
        >>> stack.cached_sample(1) is None
        True
        >>> _ = stack.sample(1)
        >>> stack.cached_sample(1).shape
        (16, 16)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            found = self._cache.get((entry, None))
            if found is not None:
                self._cache.move_to_end((entry, None))
            return found

    def has_noise(self, entry: int) -> bool:
        """True when the unscaled noise of the whole sample of ``entry`` is cached (a redraw is fast)."""
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            distribution, sample_index = self._distribution, self._indices[entry]
        if distribution.spatial_ndim == 2:
            return True
        return self._cached_volume_noise(distribution, sample_index) is not None

    def prepare_noise(self, entry: int) -> bool:
        """Compute and keep the unscaled noise of the whole sample of ``entry`` (3-D), for fast redraws.

        Returns True when the noise is kept (always for 2-D, where planes are the samples), False
        when it does not fit ``volume_cache_bytes``.

        Examples
        --------
        >>> stack = SampleLabelStack(synthetic_distribution((4, 16, 16), 3, rank=2), range(2), seed=0)
        >>> stack.has_noise(1), stack.prepare_noise(1), stack.has_noise(1)
        (False, True, True)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        with self._lock:
            distribution, sample_index = self._distribution, self._indices[entry]
        if distribution.spatial_ndim == 2:
            return True
        if not self._whole_sample_noise_fits(distribution):
            return False
        self._volume_noise(distribution, sample_index, keep=True)
        return self.has_noise(entry)

    def sample(self, entry: int, *, keep_noise: bool = True) -> np.ndarray:
        """Whole label map of one entry, shape ``S`` (read-only, cached).

        Parameters
        ----------
        entry : int
            Position in the stack, ``0 <= entry < N``.
        keep_noise : bool
            3-D: keep the sample's unscaled noise (``C * prod(S)`` float32, up to
            ``volume_cache_bytes``) so that the next class-scale or temperature change redraws it
            without new random numbers.  Pass False when going through many samples once (metrics,
            export), so they do not push the sample on screen out of the cache.

        Returns
        -------
        numpy.ndarray
            ``distribution.sample_labels_at(sample_indices[entry], seed=seed)``.

        Examples
        --------
        >>> dist = synthetic_distribution((16, 16), 3, rank=2)
        >>> SampleLabelStack(dist, range(2), seed=0).sample(1).shape
        (16, 16)
        """
        entry = check_index(entry, name="entry", size=len(self._indices))
        return self._cached(entry, None, keep_noise=bool(keep_noise))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _normalise_key(key, self.ndim)
        entries = np.arange(len(self._indices))[key[0]]
        single_entry = np.ndim(entries) == 0
        plane = _as_plane_index(key[1]) if self._distribution.spatial_ndim == 3 else None
        if plane is not None:
            depth = self._distribution.spatial_shape[0]
            if not -depth <= plane < depth:
                raise IndexError(f"index {plane} is out of bounds for axis 1 with size {depth}.")
            plane %= depth
            rest = key[2:]
        else:
            rest = key[1:]
        entry_list = np.atleast_1d(entries)
        if len(entry_list) > 1:  # one map is never larger than the distribution's own mean
            map_shape = self.shape[1:] if plane is None else self.shape[2:]
            check_allocation(
                array_bytes((len(entry_list), *map_shape), self.dtype),
                what=f"{len(entry_list)} sampled label maps of shape {map_shape}",
                cause=f"index {key!r}",
                advice="index fewer samples (or one plane) at a time",
            )
        maps = [self._cached(int(e), plane)[rest] for e in entry_list]
        if single_entry:
            return maps[0].copy()
        if not maps:
            shape_rest = np.empty(self.shape[1:] if plane is None else self.shape[2:], dtype=bool)[rest].shape
            return np.empty((0, *shape_rest), dtype=self.dtype)
        return np.stack(maps)

    def __repr__(self) -> str:
        return f"SampleLabelStack(shape={self.shape}, dtype={self.dtype}, seed={self._seed})"
