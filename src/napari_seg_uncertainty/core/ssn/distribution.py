"""Low-rank Gaussian logit distributions of Stochastic Segmentation Networks (SSN).

An SSN head predicts, for an image with ``C`` classes and spatial shape ``S``, a multivariate
normal distribution over the logit map::

    eta ~ N(mu, P P^T + D)

with ``mu`` of shape ``(C, *S)``, a covariance factor ``P`` of rank ``K`` stored as
``cov_factor (K, C, *S)`` and a diagonal ``D`` (Monteiro et al., 2020).  :class:`LowRankLogits`
holds such a distribution, draws samples, changes them (per-class noise scale and temperature,
Sec. 5.3 and Fig. 6 of the paper; cropping) and draws single 2-D slices of a 3-D sample without
computing the volume.  How a sample is drawn is described in :mod:`.sampling`.

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np
import torch

from .._memory import array_bytes, check_allocation
from .._numeric import label_dtype
from .._validation import (
    check_flag,
    check_index,
    check_num_classes,
    check_positive,
    check_real,
    check_seed,
    check_spacing,
    describe,
)
from . import _parameters
from .sampling import NoiseModel, argmax_into, labels_from_noise, scaled_logits

__all__ = ["LowRankLogits"]


# ---------------------------------------------------------------------------------------- the distribution
@dataclass(frozen=True, eq=False, repr=False)
class LowRankLogits:
    """Low-rank multivariate normal distribution over a ``(C, *S)`` logit map, as output by an SSN head.

    A frozen dataclass: every change (:meth:`with_temperature`, :meth:`scale_class`, :meth:`crop`,
    :func:`dataclasses.replace`) returns a new object sharing the large arrays with this one.

    Parameters
    ----------
    mean : array_like, shape (C, Y, X) or (C, Z, Y, X)
        Mean logit map ``mu``.  Stored as a read-only float32 array.
    cov_factor : array_like or None
        Covariance factor ``P`` of rank ``K``, given as ``(K, C, *S)`` (one logit map per rank) or
        flattened ``(C * prod(S), K)`` as :class:`torch.distributions.LowRankMultivariateNormal`
        (rows ordered as ``mean.reshape(-1)``).  Stored as a read-only ``(K, C, *S)`` float32 array
        (a view of the given one: float32 input is not copied).  ``None`` means rank 0.
    cov_diag : array_like, shape (C, *S) or (C * prod(S),)
        Diagonal ``D`` of the covariance (variances, ``>= 0``).  Stored as ``(C, *S)``.
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
        pixels of that plane).  Default False: one ``e`` for the whole volume.  Always False for
        a 2-D map.

    Notes
    -----
    Samples are ``mu[c] + T * w[c] * ((P e)[c] + sqrt(D[c]) * n[c])`` with standard-normal ``e``
    and ``n`` (see :mod:`.sampling`), so the covariance is ``T**2 * (W P)(W P)^T + T**2 * W**2 D``
    with ``W`` the diagonal of per-class scales (block-diagonal over planes with
    ``independent_planes``).  Samples are reproducible for a seed on the same machine and torch
    build; sample ``i`` of a seed does not depend on how many samples are drawn.  The fields hold
    the parameters as given; :meth:`effective_cov_factor` and :meth:`effective_cov_diag` apply the
    scales and the temperature.

    References
    ----------
    .. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty." NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> mean = np.zeros((2, 4, 5), dtype=np.float32)
    >>> factor = np.ones((3, 2, 4, 5), dtype=np.float32)  # (K, C, Y, X)
    >>> dist = LowRankLogits(mean, factor, np.full((2, 4, 5), 0.1, dtype=np.float32))
    >>> dist.sample(2, seed=0).shape
    (2, 2, 4, 5)
    >>> float(abs(dist.scale_class(1, 0.0).sample(1, seed=0)[0, 1]).max())
    0.0
    """

    mean: np.ndarray
    cov_factor: np.ndarray | None
    cov_diag: np.ndarray
    _: KW_ONLY
    class_scales: tuple[float, ...] | None = None
    temperature: float = 1.0
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None
    independent_planes: bool = False
    _noise: NoiseModel = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mean = _parameters.checked_array(self.mean, name="mean")
        if mean.ndim not in (3, 4):
            raise ValueError(
                f"mean must be a logit map shaped (C, Y, X) or (C, Z, Y, X), got {describe(self.mean)}."
            )
        num_classes = check_num_classes(mean.shape[0], name="mean.shape[0] (number of classes)", minimum=2)
        if min(mean.shape[1:]) < 1:
            raise ValueError(f"mean has an empty spatial axis (shape {mean.shape}).")
        factor = _parameters.stacked_factor(self.cov_factor, mean)
        diag = _parameters.variances(self.cov_diag, mean)
        planes = check_flag(self.independent_planes, name="independent_planes") and mean.ndim == 4
        values = {
            "mean": mean,
            "cov_factor": factor,
            "cov_diag": diag,
            "class_scales": _parameters.class_scales(self.class_scales, num_classes),
            "temperature": check_positive(self.temperature, name="temperature", allow_zero=True),
            "class_names": _parameters.class_names(self.class_names, num_classes),
            "spacing": check_spacing(self.spacing, mean.ndim - 1),
            "independent_planes": planes,
            "_noise": NoiseModel(factor, _parameters.CHECKED.get(diag)[1], planes),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ shape and scales
    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        """Rank ``K`` of the covariance factor (0 for a diagonal-only model)."""
        return self._noise.rank

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Spatial shape ``S``: ``(Y, X)`` or ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.mean.shape[1:])

    @property
    def spatial_ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return self.mean.ndim - 1

    @property
    def noise_scales(self) -> np.ndarray:
        """Effective factor on each class's noise: ``temperature * class_scales``, shape ``(C,)``."""
        return self.temperature * np.asarray(self.class_scales)

    def effective_cov_factor(self) -> np.ndarray | None:
        """Covariance factor with the scales and the temperature applied, shape ``(K, C, *S)``, read-only.

        The stored factor itself when no scale applies, otherwise a new array; ``None`` for rank 0.
        """
        if self.cov_factor is None:
            return None
        scales = self.noise_scales
        if np.all(scales == 1.0):
            return self.cov_factor
        factors = scales.astype(np.float32).reshape((1, -1) + (1,) * self.spatial_ndim)
        return _parameters.read_only(self.cov_factor * factors)

    def effective_cov_diag(self) -> np.ndarray:
        """Diagonal of the covariance with the scales and the temperature applied, shape ``(C, *S)``."""
        scales = (self.noise_scales**2).astype(np.float32)
        return self._noise.diag_std**2 * scales.reshape((-1,) + (1,) * self.spatial_ndim)

    def __repr__(self) -> str:
        return (
            f"LowRankLogits(num_classes={self.num_classes}, spatial_shape={self.spatial_shape}, "
            f"rank={self.rank}, class_scales={self.class_scales}, temperature={self.temperature}, "
            f"independent_planes={self.independent_planes})"
        )

    # ------------------------------------------------------------------ changes (new objects)
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
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((32, 32), num_classes=3, rank=4, seed=1)
        >>> quiet = dist.scale_class(2, 0.0)
        >>> bool(np.array_equal(quiet.sample(1, seed=5)[0, 2], dist.mean[2]))
        True
        """
        class_index = check_index(class_index, name="class_index", size=self.num_classes)
        weight = check_real(weight, name="weight")
        scales = list(self.class_scales)
        scales[class_index] *= weight
        return dataclasses.replace(self, class_scales=tuple(scales))

    def with_class_scales(self, class_scales: Sequence[float]) -> LowRankLogits:
        """The same distribution with another factor on every class's noise (replaces the current scales).

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((16, 16), num_classes=3, rank=2).with_class_scales([1.0, -2.0, 0.5]).class_scales
        (1.0, -2.0, 0.5)
        """
        return dataclasses.replace(self, class_scales=class_scales)

    def with_temperature(self, temperature: float) -> LowRankLogits:
        """The same distribution with temperature ``T >= 0``, the factor on all noise (covariance × ``T**2``).

        0 turns every sample into the mean, values below 1 trade diversity for quality, above 1 the
        reverse.  Replaces (does not multiply) the current temperature.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=2, rank=2)
        >>> bool(np.array_equal(dist.with_temperature(0).sample(1, seed=0)[0], dist.mean))
        True
        """
        return dataclasses.replace(self, temperature=temperature)

    def with_class_names(self, class_names: Sequence[str]) -> LowRankLogits:
        """The same distribution with other class names (e.g. the raters' names for a file without any).

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((16, 16), num_classes=2, rank=2)
        >>> dist.with_class_names(["background", "organ"]).class_names
        ('background', 'organ')
        """
        return dataclasses.replace(self, class_names=class_names)

    def crop(self, region: Sequence[slice]) -> LowRankLogits:
        """The marginal distribution of a box of the grid (views of the arrays, no copy).

        Parameters
        ----------
        region : sequence of slice
            One slice per spatial axis, step 1, each selecting at least one index.

        Returns
        -------
        LowRankLogits
            The distribution of the logits inside the box, with the same scales, temperature, names,
            spacing and ``independent_planes``.  Its samples are not the crops of this one's samples
            (the random streams depend on the shape).

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((6, 16, 16), num_classes=3, rank=2)
        >>> dist.crop((slice(1, 3), slice(None), slice(4, 12))).spatial_shape
        (2, 16, 8)
        """
        if isinstance(region, (str, bytes)) or not hasattr(region, "__len__") or len(region) != self.spatial_ndim:
            raise TypeError(
                f"region must be {self.spatial_ndim} slices (one per spatial axis), got {describe(region)}."
            )
        box = (slice(None),) + tuple(
            _parameters.crop_slice(value, size, axis)
            for axis, (value, size) in enumerate(zip(region, self.spatial_shape, strict=True))
        )
        # views of checked arrays are checked too: registered so that the new object does not copy them
        checked = _parameters.CHECKED
        factor = None if self.cov_factor is None else checked.add(self.cov_factor[(slice(None), *box)])
        mean = checked.add(self.mean[box])
        diag = checked.add(self.cov_diag[box], self._noise.diag_std[box])
        return dataclasses.replace(self, mean=mean, cov_factor=factor, cov_diag=diag)

    # ------------------------------------------------------------------ sampling
    def _plane_noise(self, seed: int, sample_index: int, plane: int | None) -> np.ndarray:
        """Unscaled noise ``P e + sqrt(D) n`` of one plane (the whole map when ``plane`` is None)."""
        return self._noise.plane(seed, sample_index, plane)

    def _volume_noise(self, seed: int, sample_index: int) -> np.ndarray:
        """Unscaled noise of a whole sample, ``(C, *S)`` float32, bit for bit its planes stacked."""
        return self._noise.volume(seed, sample_index)

    def _labels_from_noise(
        self, noise: np.ndarray, labels: np.ndarray | None = None, *, plane: int | None = None
    ) -> np.ndarray:
        """Labels of the sample with unscaled noise ``noise`` under this distribution's scales."""
        return labels_from_noise(self.mean, noise, self.noise_scales, plane=plane, labels=labels)

    def _shares_parameters(self, other: LowRankLogits) -> bool:
        """True when ``other`` differs from this distribution at most by scales, temperature and names."""
        return self._noise is other._noise or (
            self.mean is other.mean
            and self.cov_factor is other.cov_factor
            and self.cov_diag is other.cov_diag
            and self.independent_planes == other.independent_planes
        )

    def _plane_logits(
        self, seed: int, sample_index: int, plane: int | None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Logits of one plane; every sample and slice goes through here, hence bit-identical results."""
        noise = self._noise.plane(seed, sample_index, plane)
        return scaled_logits(self.mean, noise, self.noise_scales, plane, noise if out is None else out)

    def _sample_array(self, seed: int, sample_index: int, out: np.ndarray | None = None) -> np.ndarray:
        if self.spatial_ndim == 2:
            return self._plane_logits(seed, sample_index, None, out=out)
        if out is None:
            out = np.empty(self.mean.shape, dtype=np.float32)
        for z in range(self.spatial_shape[0]):
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

    def sample(self, n: int = 1, *, seed: int = 0) -> np.ndarray:
        """Draw ``n`` logit maps, shape ``(n, C, *S)`` float32.

        Sample ``i`` equals ``sample_at(i, seed=seed)`` whatever ``n`` is; ``seed >= 0``.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((32, 32), num_classes=3, rank=4)
        >>> logits = dist.sample(4, seed=7)
        >>> logits.shape, bool(np.array_equal(logits[2], dist.sample_at(2, seed=7)))
        ((4, 3, 32, 32), True)
        """
        n = check_index(n, name="n", minimum=1)
        seed = check_seed(seed)
        self._check_samples_fit(n, self.mean.shape, np.float32, "logit samples")
        out = np.empty((n, *self.mean.shape), dtype=np.float32)
        for i in range(n):
            self._sample_array(seed, i, out=out[i])
        return out

    def sample_at(self, sample_index: int, *, seed: int = 0) -> np.ndarray:
        """Logits of sample number ``sample_index`` (``>= 0``) of ``seed``, shape ``(C, *S)`` float32.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((32, 32), num_classes=3, rank=4).sample_at(5, seed=1).shape
        (3, 32, 32)
        """
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        return self._sample_array(seed, sample_index)

    def sample_labels(self, n: int = 1, *, seed: int = 0) -> np.ndarray:
        """Draw ``n`` label maps (argmax of ``sample(n, seed=seed)``), shape ``(n, *S)``, plane by plane.

        Labels have the dtype of :func:`~napari_seg_uncertainty.core._numeric.label_dtype`
        (``uint8`` for up to 256 classes).

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((32, 32), num_classes=3, rank=4).sample_labels(3, seed=0).shape
        (3, 32, 32)
        """
        n = check_index(n, name="n", minimum=1)
        seed = check_seed(seed)
        dtype = label_dtype(self.num_classes)
        self._check_samples_fit(n, self.spatial_shape, dtype, "label samples")
        labels = np.empty((n, *self.spatial_shape), dtype=dtype)
        for i in range(n):
            labels[i] = self.sample_labels_at(i, seed=seed)
        return labels

    def sample_labels_at(self, sample_index: int, *, seed: int = 0) -> np.ndarray:
        """Label map of sample number ``sample_index`` of ``seed``, shape ``S``, one plane of logits at a time.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((8, 32, 32), num_classes=3, rank=4).sample_labels_at(0, seed=2).shape
        (8, 32, 32)
        """
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        labels = np.empty(self.spatial_shape, dtype=label_dtype(self.num_classes))
        if self.spatial_ndim == 2:
            argmax_into(self._plane_logits(seed, sample_index, None), labels)
        else:
            for z in range(self.spatial_shape[0]):
                argmax_into(self._plane_logits(seed, sample_index, z), labels[z])
        return labels

    def slice(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Logits of plane ``z`` of a 3-D sample, computed without the rest of the volume.

        Returns exactly ``sample_at(sample_index, seed=seed)[:, z]``, shape ``(C, Y, X)``, in
        ``O(C * Y * X)`` memory.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> dist = synthetic_distribution((6, 16, 16), num_classes=3, rank=2)
        >>> bool(np.array_equal(dist.slice(4, seed=9), dist.sample_at(0, seed=9)[:, 4]))
        True
        """
        if self.spatial_ndim != 3:
            raise ValueError(
                f"slice needs a 3-D distribution, this one is 2-D with spatial shape {self.spatial_shape}; "
                "use sample_at for a 2-D sample."
            )
        z = check_index(z, name="z", size=self.spatial_shape[0])
        seed, sample_index = check_seed(seed), check_index(sample_index, name="sample_index")
        return self._plane_logits(seed, sample_index, z)

    def slice_labels(self, z: int, *, seed: int = 0, sample_index: int = 0) -> np.ndarray:
        """Label map of plane ``z`` of a 3-D sample: exactly ``sample_labels_at(sample_index, seed=seed)[z]``.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((6, 16, 16), num_classes=3, rank=2).slice_labels(2, seed=1).shape
        (16, 16)
        """
        logits = self.slice(z, seed=seed, sample_index=sample_index)
        labels = np.empty(logits.shape[1:], dtype=label_dtype(self.num_classes))
        return argmax_into(logits, labels)

    def mean_prediction(self) -> np.ndarray:
        """Label map of the mean logits (the SSN's most likely prediction), shape ``S``.

        Unaffected by class scales and temperature.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((32, 32), num_classes=3, rank=4).mean_prediction().shape
        (32, 32)
        """
        labels = np.empty(self.spatial_shape, dtype=label_dtype(self.num_classes))
        return argmax_into(self.mean, labels)

    def to_torch_distribution(self) -> torch.distributions.LowRankMultivariateNormal:
        """The same distribution as :class:`torch.distributions.LowRankMultivariateNormal` (flattened).

        Materializes the effective factor ``(C * prod(S), K)`` (``K`` columns per plane with
        ``independent_planes``); meant for small maps, tests and benchmarks.  Requires every
        effective variance to be positive.  The event shape is ``(C * prod(S),)``, ordered as
        ``mean.reshape(-1)``.

        Examples
        --------
        >>> from napari_seg_uncertainty.core.ssn import synthetic_distribution
        >>> synthetic_distribution((8, 8), num_classes=2, rank=3).to_torch_distribution().event_shape
        torch.Size([128])
        """
        size, rank = self.mean.size, self.rank
        depth = self.spatial_shape[0] if self.independent_planes else 1
        check_allocation(
            array_bytes((size, max(rank, 1) * depth), np.float32) * 2,
            what=f"the flattened covariance factor ({size}, {max(rank, 1) * depth})",
            cause=f"{self.num_classes} classes on {self.spatial_shape} with rank {rank}",
            advice="to_torch_distribution is meant for small maps; sample with sample / sample_at instead",
        )
        diag = torch.from_numpy(self.effective_cov_diag().reshape(size).copy())
        if bool((diag <= 0).any()):
            raise ValueError(
                "to_torch_distribution needs every effective variance > 0; cov_diag has zeros "
                f"(class_scales={self.class_scales}, temperature={self.temperature})."
            )
        factor = self.effective_cov_factor()
        if factor is None:
            flat = torch.zeros((size, 1))
        else:
            flat = torch.from_numpy(factor.reshape(rank, size).T.copy())
        if factor is not None and self.independent_planes:
            # one block of K columns per plane: rows of plane z only load on block z
            per_plane = flat.reshape(self.num_classes, depth, -1, rank)
            blocks = torch.zeros((self.num_classes, depth, per_plane.shape[2], depth, rank))
            for z in range(depth):
                blocks[:, z, :, z] = per_plane[:, z]
            flat = blocks.reshape(size, depth * rank)
        return torch.distributions.LowRankMultivariateNormal(
            torch.from_numpy(self.mean.reshape(size).copy()), flat, diag
        )
