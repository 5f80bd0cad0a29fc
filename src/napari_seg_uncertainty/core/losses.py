"""Training losses for soft targets, SoftSeg and stochastic segmentation networks.

All losses take torch tensors with the batch first and the classes second, ``(B, C, *S)``, where
``*S`` is any number of spatial axes; targets are soft labels ``(B, C, *S)`` that sum to 1 over
``C`` (a one-hot map is a soft label too). An optional ``mask`` ``(B, *S)`` (bool) keeps only the
voxels where it is ``True`` in the loss. The SSN reference code masks the background differently:
it zeroes the covariance there and keeps every voxel in the likelihood (:func:`mask_covariance`).
"""

from __future__ import annotations

import math

import torch

from ._validation import check_positive, describe

__all__ = [
    "LOSSES",
    "adaptive_wing_loss",
    "dice_loss",
    "mask_covariance",
    "sample_low_rank_logits",
    "soft_cross_entropy",
    "ssn_log_likelihoods",
    "ssn_loss",
]

#: Loss names understood by the training loop.
LOSSES = ("ce", "dice", "ce_dice", "adaptive_wing", "ssn")


def _check_tensor(value: object, *, name: str, min_ndim: int = 3) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}.")
    if value.ndim < min_ndim:
        raise ValueError(
            f"{name} must be (B, C, *spatial) with at least one spatial axis, got {describe(value)}."
        )
    if not torch.is_floating_point(value):
        raise TypeError(f"{name} must be a floating-point tensor, got {describe(value)}.")
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the model output and the targets "
                         "(a diverging run: lower the learning rate).")
    return value


def _check_target(target: object, reference: torch.Tensor, *, name: str = "target") -> torch.Tensor:
    target = _check_tensor(target, name=name)
    if target.shape != reference.shape:
        raise ValueError(
            f"{name} must have the shape of the prediction {tuple(reference.shape)} (B, C, *spatial), "
            f"got {describe(target)}."
        )
    return target


def _check_mask(mask: object, reference: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a boolean torch.Tensor or None, got {describe(mask)}.")
    expected = (reference.shape[0], *reference.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must have shape (B, *spatial) = {expected}, got {describe(mask)}.")
    return mask.bool()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` ``(B, *S)`` over voxels where ``mask`` is True (0 if none)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def soft_cross_entropy(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    from_probabilities: bool = False,
    mask: torch.Tensor | None = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Cross-entropy with soft targets, ``-Σ_c t_c log p_c`` averaged over voxels.

    Parameters
    ----------
    prediction : torch.Tensor
        ``(B, C, *S)`` logits, or probabilities with ``from_probabilities=True`` (e.g. the
        normalized-ReLU output of SoftSeg).
    target : torch.Tensor
        ``(B, C, *S)`` soft labels summing to 1 over ``C``.
    from_probabilities : bool
        Whether ``prediction`` already holds probabilities (then ``log(p + eps)`` is used).
    mask : torch.Tensor, optional
        ``(B, *S)`` bool; only voxels where it is True count.
    eps : float
        Floor inside the logarithm for probability inputs.

    Returns
    -------
    torch.Tensor
        Scalar loss (nats per voxel).

    Examples
    --------
    >>> import torch
    >>> logits = torch.zeros(1, 2, 3, 3)
    >>> target = torch.full((1, 2, 3, 3), 0.5)
    >>> round(float(soft_cross_entropy(logits, target)), 4)  # log 2
    0.6931
    """
    prediction = _check_tensor(prediction, name="prediction")
    target = _check_target(target, prediction)
    mask = _check_mask(mask, prediction)
    check_positive(eps, name="eps")
    if from_probabilities:
        log_p = torch.log(prediction.float().clamp_min(0) + eps)
    else:
        log_p = torch.log_softmax(prediction.float(), dim=1)
    per_voxel = -(target.float() * log_p).sum(dim=1)
    return _masked_mean(per_voxel, mask)


def dice_loss(
    probabilities: torch.Tensor,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    include_background: bool = True,
) -> torch.Tensor:
    """Soft Dice loss (MONAI ``DiceLoss`` with its soft-label formulation), averaged over classes and batch.

    Parameters
    ----------
    probabilities : torch.Tensor
        ``(B, C, *S)`` class probabilities (softmax or normalized ReLU).
    target : torch.Tensor
        ``(B, C, *S)`` soft labels.
    mask : torch.Tensor, optional
        ``(B, *S)`` bool; voxels where it is False are left out (MONAI ``MaskedDiceLoss``).
    include_background : bool
        Whether class 0 takes part.

    Returns
    -------
    torch.Tensor
        Scalar loss in ``[0, 1]``.

    Examples
    --------
    >>> import torch
    >>> t = torch.zeros(1, 2, 4, 4); t[:, 0] = 1
    >>> float(dice_loss(t, t)) < 1e-4
    True
    """
    from monai.losses import DiceLoss, MaskedDiceLoss

    probabilities = _check_tensor(probabilities, name="probabilities")
    target = _check_target(target, probabilities)
    mask = _check_mask(mask, probabilities)
    if not isinstance(include_background, bool):
        raise TypeError(f"include_background must be True or False, got {describe(include_background)}.")
    options = dict(include_background=include_background, soft_label=True, smooth_nr=1e-5, smooth_dr=1e-5)
    if mask is None:
        return DiceLoss(**options)(probabilities.float(), target.float())
    return MaskedDiceLoss(**options)(probabilities.float(), target.float(), mask=mask[:, None].float())


def adaptive_wing_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    *,
    theta: float = 0.5,
    alpha: float = 2.1,
    omega: float = 14.0,
    eps: float = 1.0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adaptive Wing loss (Wang et al. 2019), the regression loss of SoftSeg.

    With ``d = |t - p|`` and the per-element exponent ``a = α - t``:

    - ``d < θ``: ``ω · ln(1 + (d/ε)^a)``
    - ``d ≥ θ``: ``A·d - K`` with ``A = ω · a · (θ/ε)^(a-1) / (ε · (1 + (θ/ε)^a))`` and
      ``K = θ·A - ω · ln(1 + (θ/ε)^a)``, which makes the loss continuous and smooth at ``θ``.

    Parameters
    ----------
    prediction : torch.Tensor
        ``(B, C, *S)`` predictions in ``[0, 1]`` (SoftSeg's normalized ReLU output).
    target : torch.Tensor
        ``(B, C, *S)`` soft targets in ``[0, 1]``.
    theta, alpha, omega, eps : float
        Loss parameters (defaults θ = 0.5, α = 2.1, ω = 14, ε = 1).
    mask : torch.Tensor, optional
        ``(B, *S)`` bool voxel mask.

    Returns
    -------
    torch.Tensor
        Scalar: the mean over classes and (masked) voxels.

    Examples
    --------
    >>> import torch
    >>> p = torch.zeros(1, 1, 1, 1); t = torch.ones(1, 1, 1, 1)
    >>> round(float(adaptive_wing_loss(p, t)), 4)  # d = 1 > θ: linear branch
    10.2594
    """
    prediction = _check_tensor(prediction, name="prediction")
    target = _check_target(target, prediction)
    mask = _check_mask(mask, prediction)
    for name, value in (("theta", theta), ("omega", omega), ("eps", eps)):
        check_positive(value, name=name)
    check_positive(alpha, name="alpha")
    if alpha <= 1.0:
        raise ValueError(f"alpha must be > 1 (the exponent alpha - target must stay positive), got {alpha}.")
    t = target.float()
    diff = (t - prediction.float()).abs()
    exponent = alpha - t
    ratio = theta / eps
    a_coef = omega * exponent * ratio ** (exponent - 1) / (eps * (1 + ratio**exponent))
    k_coef = theta * a_coef - omega * torch.log1p(ratio**exponent)
    small = omega * torch.log1p((diff / eps) ** exponent)
    large = a_coef * diff - k_coef
    per_element = torch.where(diff < theta, small, large)
    return _masked_mean(per_element.mean(dim=1), mask)


def sample_low_rank_logits(
    mean: torch.Tensor,
    cov_factor: torch.Tensor,
    cov_diag: torch.Tensor,
    *,
    num_samples: int,
    antithetic: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Reparameterised samples of logits ``η ~ N(μ, P Pᵀ + D)`` with a low-rank covariance.

    ``η = μ ± (P z + √D ⊙ e)`` with ``z ~ N(0, I_K)`` and ``e ~ N(0, I)``; with ``antithetic`` the
    ``num_samples`` samples come in pairs sharing ``(z, e)`` with opposite signs, which halves the
    noise draws and lowers the variance of Monte-Carlo estimates.

    Parameters
    ----------
    mean : torch.Tensor
        ``(B, C, *S)`` mean logits ``μ``.
    cov_factor : torch.Tensor
        ``(B, K, C, *S)`` covariance factor ``P`` (rank ``K``); ``K`` may be 0 for a diagonal model.
    cov_diag : torch.Tensor
        ``(B, C, *S)`` positive covariance diagonal ``D``.
    num_samples : int
        Number of samples ``M`` (even when ``antithetic``).
    antithetic : bool
        Draw antithetic pairs.
    generator : torch.Generator, optional
        Source of the noise (on the tensors' device) for reproducible samples.

    Returns
    -------
    torch.Tensor
        ``(M, B, C, *S)`` logit samples (differentiable with respect to the three inputs).

    Examples
    --------
    >>> import torch
    >>> mu = torch.zeros(1, 2, 5); P = torch.ones(1, 1, 2, 5); D = torch.full((1, 2, 5), 1e-6)
    >>> s = sample_low_rank_logits(mu, P, D, num_samples=4, generator=torch.Generator().manual_seed(0))
    >>> s.shape, bool(torch.allclose(s[0], -s[2]))
    (torch.Size([4, 1, 2, 5]), True)
    """
    mean = _check_tensor(mean, name="mean")
    cov_diag = _check_target(cov_diag, mean, name="cov_diag")
    if bool((cov_diag < 0).any()):
        raise ValueError("cov_diag must be a non-negative variance everywhere (the SSN head gives exp(.) + eps), "
                         f"got a minimum of {float(cov_diag.min()):.3g}.")
    if not isinstance(cov_factor, torch.Tensor) or not torch.is_floating_point(cov_factor):
        raise TypeError(f"cov_factor must be a floating-point torch.Tensor, got {describe(cov_factor)}.")
    if (
        cov_factor.ndim != mean.ndim + 1
        or cov_factor.shape[0] != mean.shape[0]
        or (cov_factor.shape[2:] != mean.shape[1:])
    ):
        raise ValueError(
            f"cov_factor must be (B, K, C, *spatial) matching mean {tuple(mean.shape)}, "
            f"got {describe(cov_factor)}."
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {describe(num_samples)}.")
    if antithetic and num_samples % 2:
        raise ValueError(f"num_samples must be even for antithetic pairs, got {num_samples}.")
    draws = num_samples // 2 if antithetic else num_samples
    batch, rank = cov_factor.shape[:2]
    kwargs = {"device": mean.device, "dtype": mean.dtype, "generator": generator}
    diag_noise = torch.randn((draws, *mean.shape), **kwargs) * cov_diag.sqrt()
    if rank > 0:
        z = torch.randn((draws, batch, rank), **kwargs)
        flat = cov_factor.reshape(batch, rank, -1)
        factor_noise = torch.einsum("brn,mbr->mbn", flat, z).reshape(draws, *mean.shape)
        noise = factor_noise + diag_noise
    else:
        noise = diag_noise
    if antithetic:
        noise = torch.cat([noise, -noise], dim=0)
    return mean.unsqueeze(0) + noise


def mask_covariance(
    cov_factor: torch.Tensor, cov_diag: torch.Tensor, mask: torch.Tensor, *, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero a low-rank logit covariance outside a mask, as the SSN reference code does.

    Outside ``mask`` the factor becomes 0 and the diagonal ``eps`` (the SSN head's floor, which
    keeps the covariance positive definite), so logit samples there are the mean up to noise of
    standard deviation ``sqrt(eps)``; inside, both are unchanged. The likelihood is untouched:
    pass the masked covariance to :func:`ssn_loss` without ``mask`` to keep every voxel in it.

    Parameters
    ----------
    cov_factor : torch.Tensor
        ``(B, K, C, *S)`` covariance factor (``K`` the rank).
    cov_diag : torch.Tensor
        ``(B, C, *S)`` covariance diagonal.
    mask : torch.Tensor
        ``(B, *S)`` bool: True where the covariance is kept (e.g. where the image is non-zero).
    eps : float
        Diagonal variance left outside the mask.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        The masked ``cov_factor`` and ``cov_diag``.

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020; its reference code applies a sampling mask to the
       covariance and keeps every voxel in the loss.

    Examples
    --------
    >>> import torch
    >>> P, D = torch.ones(1, 2, 3, 4), torch.ones(1, 3, 4)
    >>> P2, D2 = mask_covariance(P, D, torch.tensor([[True, True, False, False]]), eps=0.5)
    >>> P2[0, 0, 0].tolist(), D2[0, 0].tolist()
    ([1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.5, 0.5])
    """
    cov_diag = _check_tensor(cov_diag, name="cov_diag")
    mask = _check_mask(mask, cov_diag)
    eps = check_positive(eps, name="eps")
    if not isinstance(cov_factor, torch.Tensor) or cov_factor.shape[:1] + cov_factor.shape[2:] != cov_diag.shape:
        raise ValueError(
            f"cov_factor must be (B, K, C, *spatial) matching cov_diag {tuple(cov_diag.shape)}, "
            f"got {describe(cov_factor)}."
        )
    keep = mask.unsqueeze(1)  # (B, 1, *S): every class
    factor = cov_factor * keep.unsqueeze(1).to(cov_factor.dtype)
    diag = torch.where(keep, cov_diag, torch.full_like(cov_diag, eps))
    return factor, diag


def ssn_log_likelihoods(
    logit_samples: torch.Tensor,
    target: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-likelihood ``Σ_i Σ_c t_ic log softmax(η_i^(m))_c`` of a label map under each logit sample.

    Parameters
    ----------
    logit_samples : torch.Tensor
        ``(M, B, C, *S)`` samples from :func:`sample_low_rank_logits`.
    target : torch.Tensor
        ``(B, C, *S)`` one-hot (or soft) labels.
    mask : torch.Tensor, optional
        ``(B, *S)`` bool; only voxels where it is True are summed.

    Returns
    -------
    torch.Tensor
        ``(M, B)``: the summed log-likelihood of each image under each sample.

    Examples
    --------
    >>> import torch
    >>> ll = ssn_log_likelihoods(torch.zeros(2, 1, 2, 3), torch.tensor([[[1., 0, 1], [0, 1, 0]]]))
    >>> [round(v, 4) for v in ll[:, 0].tolist()]  # 3 · log ½
    [-2.0794, -2.0794]
    """
    if not isinstance(logit_samples, torch.Tensor) or logit_samples.ndim < 4:
        raise ValueError(
            f"logit_samples must be a (M, B, C, *spatial) tensor, got {describe(logit_samples)}."
        )
    target = _check_tensor(target, name="target")
    if tuple(target.shape) != tuple(logit_samples.shape[1:]):
        raise ValueError(
            f"target must have shape (B, C, *spatial) = {tuple(logit_samples.shape[1:])}, "
            f"got {describe(target)}."
        )
    mask = _check_mask(mask, target)
    log_p = torch.log_softmax(logit_samples.float(), dim=2)
    per_voxel = (target.float().unsqueeze(0) * log_p).sum(dim=2)  # (M, B, *S)
    if mask is not None:
        per_voxel = per_voxel * mask.unsqueeze(0).to(per_voxel.dtype)
    return per_voxel.reshape(per_voxel.shape[0], per_voxel.shape[1], -1).sum(dim=2)


def ssn_loss(
    mean: torch.Tensor,
    cov_factor: torch.Tensor,
    cov_diag: torch.Tensor,
    target: torch.Tensor,
    *,
    num_samples: int = 20,
    mask: torch.Tensor | None = None,
    antithetic: bool = True,
    per_voxel: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Monte-Carlo negative log-likelihood of a stochastic segmentation network (SSN eq. 7).

    ``-(logsumexp_m Σ_i log p(y_i | η_i^(m)) - log M)`` with ``M`` reparameterised (antithetic)
    samples of the low-rank logit distribution, averaged over the batch.

    Parameters
    ----------
    mean, cov_factor, cov_diag : torch.Tensor
        The SSN head's distribution: ``(B, C, *S)``, ``(B, K, C, *S)``, ``(B, C, *S)``.
    target : torch.Tensor
        ``(B, C, *S)`` one-hot labels (e.g. a randomly chosen rater) or soft labels.
    num_samples : int
        Monte-Carlo samples ``M`` (default 20; even with antithetic pairs).
    mask : torch.Tensor, optional
        ``(B, *S)`` bool; voxels where it is False are left out of the likelihood. (The SSN
        reference code keeps them and zeroes the covariance instead: :func:`mask_covariance`.)
    antithetic : bool
        Use antithetic sample pairs.
    per_voxel : bool
        Divide each image's negative log-likelihood by its number of (unmasked) voxels, which keeps
        the loss scale independent of the patch size; ``False`` gives nats per image (eq. 7).
    generator : torch.Generator, optional
        Noise source for reproducible losses.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Examples
    --------
    >>> import torch
    >>> mu = torch.zeros(1, 2, 4); P = torch.zeros(1, 2, 2, 4); D = torch.full((1, 2, 4), 1e-6)
    >>> y = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 0]]), 2).permute(0, 2, 1).float()
    >>> round(float(ssn_loss(mu, P, D, y, per_voxel=False)), 4)  # 4 · log 2: a coin per pixel
    2.7726
    """
    samples = sample_low_rank_logits(
        mean, cov_factor, cov_diag, num_samples=num_samples, antithetic=antithetic, generator=generator
    )
    target = _check_target(target, mean)
    log_likelihoods = ssn_log_likelihoods(samples, target, mask=mask)  # (M, B)
    nll = -(torch.logsumexp(log_likelihoods, dim=0) - math.log(num_samples))  # (B,)
    if per_voxel:
        if mask is None:
            count = torch.full_like(nll, float(math.prod(mean.shape[2:])))
        else:
            count = mask.reshape(mask.shape[0], -1).sum(dim=1).to(nll.dtype).clamp_min(1.0)
        nll = nll / count
    return nll.mean()
