"""Stochastic Segmentation Networks: the low-rank logit distribution, its samples and their metrics.

Modules
-------
distribution
    :class:`LowRankLogits`, the frozen distribution ``N(mu, P P^T + D)`` with ``cov_factor (K, C, *S)``.
sampling
    The plane-wise sampling and argmax kernels (:func:`argmax_labels`).
lazy
    :class:`LazyLowRankLogits`, a 3-D distribution whose planes are computed (2-D SSN) or read from
    disk (3-D SSN, :mod:`.store`) when needed, with dask arrays for a viewer.
stack
    :class:`SampleLabelStack`, a lazy array of sampled label maps for a viewer.
io
    :func:`save_distribution` / :func:`load_distribution` (``.npz``).
synthetic
    :func:`synthetic_distribution`, a plausible SSN output for demos and tests.
metrics
    GED², sample diversity, pairwise IoU distance and Dice against a reference.

References
----------
.. [1] Monteiro, M., et al. "Stochastic Segmentation Networks: Modelling Spatially Correlated
   Aleatoric Uncertainty." NeurIPS 2020.
"""

from __future__ import annotations

from .distribution import LowRankLogits
from .io import load_distribution, save_distribution
from .lazy import ArrayPlaneSource, LazyLowRankLogits, PlaneSource
from .metrics import dice_against_reference, generalized_energy_distance, pairwise_iou_distance, sample_diversity
from .sampling import argmax_labels
from .stack import SampleLabelStack
from .synthetic import synthetic_distribution

__all__ = [
    "ArrayPlaneSource",
    "LazyLowRankLogits",
    "LowRankLogits",
    "PlaneSource",
    "SampleLabelStack",
    "argmax_labels",
    "dice_against_reference",
    "generalized_energy_distance",
    "load_distribution",
    "pairwise_iou_distance",
    "sample_diversity",
    "save_distribution",
    "synthetic_distribution",
]
