"""Memory checks made before training starts, so an absurd setting is refused instead of exhausting memory.

The estimates are deliberately simple (activations of a U-Net grow with the patch voxels times the
channels of every level); they only have to tell a batch that fits from one that cannot, naming
the setting that asks for too much.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._memory import check_allocation

__all__ = ["estimate_batch_bytes", "check_batch_memory"]


def estimate_batch_bytes(
    *,
    batch_size: int,
    ensemble_size: int,
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    head: str = "softmax",
    ssn_rank: int = 10,
    ssn_samples: int = 20,
) -> int:
    """Approximate bytes one training step holds for its batch: patches, targets, activations, gradients.

    Parameters
    ----------
    batch_size, ensemble_size : int
        Patches per member and members; the step holds ``batch_size × ensemble_size`` patches.
    patch_size : sequence of int
        Spatial size of a patch.
    in_channels, num_classes : int
        Image channels and classes.
    channels, strides, num_res_units : sequences of int, int
        U-Net shape; level ``i`` holds ``channels[i]`` features at the patch size divided by the
        product of the first ``i`` strides per axis.
    head, ssn_rank, ssn_samples : str, int, int
        The SSN head adds its ``C·(K + 2)`` outputs and ``ssn_samples`` logit samples per voxel.

    Returns
    -------
    int
        Bytes (float32), activations counted twice (forward values and their gradients).

    Examples
    --------
    >>> estimate_batch_bytes(batch_size=4, ensemble_size=1, patch_size=(64, 64), in_channels=1,
    ...                      num_classes=2, channels=(16, 32, 64), strides=(2, 2), num_res_units=1)
    15269888
    """
    voxels = math.prod(int(p) for p in patch_size)
    dims = len(patch_size)
    features = 0.0
    scale = 1
    for level, width in enumerate(channels):
        # encoder and decoder units at this level's resolution (level 0 at the patch's own, where the
        # decoder ends), one kept tensor per convolution of a unit
        features += 2 * (int(num_res_units) + 1) * int(width) * voxels / scale
        if level < len(strides):
            scale *= int(strides[level]) ** dims
    outputs = num_classes * (ssn_rank + 2 + ssn_samples) if head == "ssn" else num_classes
    per_patch = in_channels * voxels + 2 * num_classes * voxels + 2 * (features + outputs * voxels)
    return int(4 * per_patch * int(batch_size) * int(ensemble_size))


def check_batch_memory(
    *,
    batch_size: int,
    ensemble_size: int,
    patch_size: Sequence[int],
    in_channels: int,
    num_classes: int,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    head: str = "softmax",
    ssn_rank: int = 10,
    ssn_samples: int = 20,
) -> None:
    """Raise ``OutputTooLargeError`` (a ``MemoryError`` and ``ValueError``) naming ``batch_size`` when one
    step's batch cannot fit in the available memory; see :func:`estimate_batch_bytes`."""
    nbytes = estimate_batch_bytes(
        batch_size=batch_size, ensemble_size=ensemble_size, patch_size=patch_size, in_channels=in_channels,
        num_classes=num_classes, channels=channels, strides=strides, num_res_units=num_res_units, head=head,
        ssn_rank=ssn_rank, ssn_samples=ssn_samples,
    )  # fmt: skip
    check_allocation(
        nbytes,
        what=f"one training step ({batch_size * ensemble_size} patches of {tuple(patch_size)} with their "
        "activations and gradients)",
        cause=f"batch_size={batch_size} (ensemble_size={ensemble_size}, patch_size={tuple(patch_size)})",
        advice="lower batch_size or patch_size",
    )
