"""The low-rank logit distribution an SSN checkpoint predicts for an image.

:func:`predict_ssn_distribution` runs MONAI sliding-window inference (slice by slice for a 2-D model on
a volume) with the helpers of :mod:`.inference` and returns a
:class:`~napari_seg_uncertainty.core.ssn.LowRankLogits`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._validation import check_int
from .inference import (
    TrainedModel,
    _batch_mask,
    _covariance_mask,
    _masked,
    _on_device,
    _predict_raw_chunks,
    _prediction_image,
    _spatial_batches,
    load_trained_model,
)
from .normalization import normalize_image

if TYPE_CHECKING:
    from ..ssn import LowRankLogits

__all__ = ["predict_ssn_distribution"]


def predict_ssn_distribution(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    member: int = 0,
    device: str | None = None,
) -> LowRankLogits:
    """The low-rank logit distribution an SSN model predicts for an image.

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        A model trained with ``head="ssn"``.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``.
    member : int
        Which ensemble member (0 for a single model).
    device : str, optional
        Default: the model's device.

    Returns
    -------
    LowRankLogits
        ``mean (C, *S)``, ``cov_factor (K, C, *S)`` and ``cov_diag (C, *S)`` (``exp(log_diag) + ε``)
        stitched from sliding windows, with the checkpoint's ``class_names`` and ``spacing``. A 2-D
        model on a volume predicts every plane separately, so the planes draw independent low-rank
        noise (``independent_planes=True``). A model trained with ``background_mask="covariance"``
        has its covariance zeroed where the image is 0 in every channel (factor 0, diagonal ``ε``).

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_seg_uncertainty.core.training import TrainConfig, train
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater",
    ...                   channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1, batch_size=1,
    ...                   val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> dist = predict_ssn_distribution(last.checkpoint, np.ones((16, 16)))
    >>> dist.mean.shape, dist.cov_factor.shape, dist.cov_diag.shape, dist.independent_planes
    ((2, 16, 16), (3, 2, 16, 16), (2, 16, 16), False)
    """
    from ..ssn import LowRankLogits

    trained = load_trained_model(checkpoint)
    if trained.config.head != "ssn":
        raise ValueError(
            f"checkpoint was trained with head={trained.config.head!r}; an SSN distribution "
            "needs a model trained with head='ssn'."
        )
    member = check_int(member, name="member", minimum=0)
    if member >= trained.model.size:
        raise ValueError(f"member must be below the ensemble size {trained.model.size}, got {member}.")
    trained = _on_device(trained, device)
    arr = _prediction_image(trained, image)
    normed = normalize_image(arr, trained.info["normalization"])
    net = trained.model.members[member]
    net.eval()
    _, sliced = _spatial_batches(normed, net.spatial_dims)
    pieces = [
        raw for _, raw in _predict_raw_chunks(net, normed, trained.info, trained.device, trained.config)
    ]
    parts = net.ssn_parameters(torch.cat(pieces, dim=0))  # batch b: 1, or Z planes of a volume
    parts = _masked(parts, _batch_mask(_covariance_mask(trained, arr), sliced, parts.mean.device), eps=net.ssn_eps)
    if sliced:  # (Z, C, Y, X) → (C, Z, Y, X); factor (Z, K, C, Y, X) → (K, C, Z, Y, X)
        mean = parts.mean.movedim(0, 1)
        diag = parts.cov_diag.movedim(0, 1)
        factor = parts.cov_factor.permute(1, 2, 0, 3, 4)
    else:
        mean, diag, factor = parts.mean[0], parts.cov_diag[0], parts.cov_factor[0]
    return LowRankLogits(
        mean=mean.cpu().numpy().astype(np.float32),
        cov_factor=factor.cpu().numpy().astype(np.float32),
        cov_diag=diag.cpu().numpy().astype(np.float32),
        class_names=list(trained.class_names),
        spacing=trained.spacing,
        independent_planes=sliced,
    )
