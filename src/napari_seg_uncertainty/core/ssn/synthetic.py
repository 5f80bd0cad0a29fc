"""A plausible synthetic SSN output (nested blobs with smooth low-rank noise) for demos and tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._memory import array_bytes, check_allocation
from .._validation import check_index, check_num_classes, check_positive, check_seed, describe
from .distribution import LowRankLogits

__all__ = ["synthetic_distribution"]


def _smooth_fields(count: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """``count`` smooth random fields of unit standard deviation (coarse noise, interpolated)."""
    coarse = tuple(max(2, min(s, 6)) for s in shape)
    noise = torch.randn((count, 1, *coarse), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    fields = F.interpolate(noise, size=shape, mode=mode, align_corners=True)[:, 0]
    std = fields.reshape(count, -1).std(dim=1).clamp_min(1e-6)
    return fields / std.reshape((count,) + (1,) * len(shape))


def _nested_shells(radius: torch.Tensor, outer: float, num_classes: int) -> torch.Tensor:
    """Mean logits ``(C, *S)``: class 0 outside ``outer``, classes ``1 .. C-1`` in shells towards the centre."""
    # Class k (k >= 1) occupies outer*(1 - k/C') <= radius < outer*(1 - (k-1)/C'), C' = C - 1 shells.
    edges = [outer * (1.0 - k / (num_classes - 1)) for k in range(num_classes)]  # edges[0] = outer
    steepness = 8.0 / max(outer / (num_classes - 1), 1.0)  # about 8 logits across one shell
    mean = torch.empty((num_classes, *radius.shape), dtype=torch.float32)
    for k in range(num_classes):
        upper = float("inf") if k == 0 else edges[k - 1]
        lower = edges[0] if k == 0 else edges[k]
        below = (lower - radius).clamp_min(0)
        above = (radius - upper).clamp_min(0)
        mean[k] = -steepness * (below + above)
    return mean


def synthetic_distribution(
    shape: Sequence[int],
    *,
    num_classes: int,
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
        Rank ``K >= 1`` of the covariance factor (the SSN paper uses 10).
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
        ``mean (C, *shape)``, ``cov_factor (K, C, *shape)`` and ``cov_diag (C, *shape)``, all float32.

    References
    ----------
    .. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty." NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> dist = synthetic_distribution((64, 64), num_classes=4, rank=10, seed=0)
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
        what=f"the factor (K, C, *shape) = {(rank, num_classes, *spatial)} with mean and temporaries",
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
    mean = _nested_shells(radius, outer, num_classes)
    envelope = torch.exp(-((radius / (1.4 * outer)) ** 2))
    factor = torch.empty((rank, num_classes, *spatial), dtype=torch.float32)
    amplitude = 3.0 / np.sqrt(rank)
    for k in range(num_classes):
        factor[:, k] = _smooth_fields(rank, spatial, generator) * (amplitude * envelope)
    cov_diag = torch.full((num_classes, *spatial), diagonal_variance, dtype=torch.float32)
    return LowRankLogits(mean, factor, cov_diag, class_names=class_names, spacing=spacing)

