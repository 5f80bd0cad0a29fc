"""What both prediction paths share: the :class:`TrainedModel` and :class:`Prediction` records and the SSN sample mean.

:mod:`.inference` (``predict``, checkpoints) and :mod:`.streamed` (the block-by-block engine ``predict``
runs) both need these; keeping them here lets ``inference`` call ``streamed`` without ``streamed`` importing
``inference`` back.

References
----------
.. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric
   Uncertainty", NeurIPS 2020 (the SSN sample mean, appendix eq. 9).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..losses import mask_covariance, sample_low_rank_logits
from ..models import SegmentationEnsemble, SegmentationNet, SSNParameters
from .config import TrainConfig
from .data import background_mask

__all__ = ["Prediction", "TrainedModel"]


@dataclass
class TrainedModel:
    """A trained model with everything needed to run it on new images.

    Attributes
    ----------
    model : SegmentationEnsemble
        The network(s), in eval mode.
    config : TrainConfig
        The training settings.
    class_names : list of str
    spacing : tuple of float or None
    info : dict
        ``spatial_dims``, ``in_channels``, ``num_classes``, ``patch_size``, ``normalization``.
    device : torch.device
    checkpoint : str or None
        The file it came from.
    """

    model: SegmentationEnsemble
    config: TrainConfig
    class_names: list[str]
    spacing: tuple[float, ...] | None
    info: dict[str, Any]
    device: torch.device
    checkpoint: str | None = None


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` returns for one image.

    Attributes
    ----------
    probabilities : numpy.ndarray or array-like
        ``(C, *S)`` class probabilities (float32, or float16 with ``predict(..., dtype="float16")``),
        averaged over ensemble members, Monte-Carlo dropout passes and SSN logit samples; they sum to 1
        over ``C``. With ``predict(..., out=...)`` the array written to (a numpy memmap of a ``.npy`` file,
        a zarr array, or the array given).
    labels : numpy.ndarray
        ``(*S)`` argmax of ``probabilities``, in the smallest unsigned dtype that holds ``C - 1``.
    entropy : numpy.ndarray
        ``(*S)`` entropy (in the probabilities' dtype) of ``probabilities`` divided by ``log C``, in ``[0, 1]``.
    class_names : list of str
        One name per class, from the training data.
    spacing : tuple of float or None
        Voxel spacing of the training data.
    member_probabilities : numpy.ndarray or None
        ``(M, C, *S)`` (the probabilities' dtype): the probabilities of every ensemble member and
        Monte-Carlo dropout pass (``M`` = members × passes, member-major; an SSN member's entry is its
        sample mean), whose mean over ``M`` is ``probabilities``. Only with
        ``predict(..., keep_members=True)``, else None.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    entropy: np.ndarray
    class_names: list[str]
    spacing: tuple[float, ...] | None
    member_probabilities: np.ndarray | None = None


def _covariance_mask(trained: TrainedModel, image: np.ndarray) -> np.ndarray | None:
    """The SSN sampling mask ``(*S)`` of a model trained with ``background_mask="covariance"``, else None."""
    if trained.config.head != "ssn" or trained.config.background_mask != "covariance":
        return None
    return background_mask(image)


def _batch_mask(mask: np.ndarray | None, sliced: bool, device: torch.device) -> torch.Tensor | None:
    """A ``(*S)`` mask in the network's batch layout: ``(1, *S)``, or ``(Z, Y, X)`` for slices."""
    return None if mask is None else torch.from_numpy(mask if sliced else mask[None]).to(device)


def _masked(parts: SSNParameters, mask: torch.Tensor | None, *, eps: float) -> SSNParameters:
    """``parts`` with the covariance zeroed where ``mask`` (batch layout) is False; as is without a mask."""
    if mask is None:
        return parts
    factor, diag = mask_covariance(parts.cov_factor, parts.cov_diag, mask, eps=eps)
    return dataclasses.replace(parts, cov_factor=factor, cov_diag=diag)


def _ssn_sample_mean(
    net: SegmentationNet,
    raw: torch.Tensor,
    num_samples: int,
    generator: torch.Generator | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean softmax over ``num_samples`` logit samples of an SSN output (SSN appendix, eq. 9)."""
    parts = _masked(net.ssn_parameters(raw), mask, eps=net.ssn_eps)
    total = torch.zeros_like(parts.mean)
    chunk = 4
    drawn = 0
    while drawn < num_samples:
        m = min(chunk, num_samples - drawn)
        samples = sample_low_rank_logits(
            parts.mean,
            parts.cov_factor,
            parts.cov_diag,
            num_samples=m,
            antithetic=False,
            generator=generator,
        )
        total += torch.softmax(samples, dim=2).sum(0)
        drawn += m
    return total / num_samples
