"""Segmentation networks: MONAI U-Net backbones with softmax, SoftSeg and SSN heads.

Every network is a :class:`SegmentationNet`: a MONAI :class:`~monai.networks.nets.UNet` (2-D or 3-D)
that outputs ``features`` channels, a PReLU, and a 1×1 convolution head. The head decides how the
raw output is read:

``"softmax"``
    ``C`` logits; probabilities are ``softmax`` over classes (for one-hot, LS, SVLS, mSVLS or
    rater-mean targets).
``"softseg"``
    ``C`` activations; probabilities are the multi-class normalized ReLU
    ``relu(x_c) / Σ_c' relu(x_c')`` of SoftSeg (Lemay et al.).
``"ssn"``
    A stochastic segmentation network head (Monteiro et al. 2020): the logits follow
    ``N(μ, P Pᵀ + D)`` with ``μ`` of ``C`` channels, ``D = exp(log_diag) + ε`` of ``C`` channels and
    a covariance factor ``P`` of rank ``K``. The raw output stacks ``[μ | log_diag | P]`` along the
    channel axis, ``C + C + K·C`` channels; :meth:`SegmentationNet.ssn_parameters` turns it into

    - ``mean``: ``(B, C, *S)``
    - ``cov_diag``: ``(B, C, *S)`` (already ``exp(·) + ε``, strictly positive)
    - ``cov_factor``: ``(B, K, C, *S)``; :func:`flatten_cov_factor` gives the
      ``(B, C·prod(S), K)`` matrix of the paper, rows ordered class-major (``c·prod(S) + voxel``),
      the same order as ``mean.reshape(B, -1)``.

Monte-Carlo dropout comes from the U-Net's own dropout layers (``dropout > 0``), switched on at
inference with :func:`enable_mc_dropout`. A deep ensemble is a :class:`SegmentationEnsemble` of
``M`` independently initialised members trained on independently shuffled patches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._validation import (
    check_int,
    check_int_tuple,
    check_num_classes,
    check_positive,
    check_probability,
    describe,
)

__all__ = [
    "HEADS",
    "SSNParameters",
    "SegmentationEnsemble",
    "SegmentationNet",
    "build_model",
    "enable_mc_dropout",
    "estimate_parameters",
    "flatten_cov_factor",
    "mc_dropout",
    "normalized_relu",
    "weights_digest",
]

#: Head kinds understood by :class:`SegmentationNet`.
HEADS = ("softmax", "softseg", "ssn")


def normalized_relu(x: torch.Tensor, *, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """Multi-class normalized ReLU of SoftSeg: ``relu(x_c) / Σ_c' relu(x_c')``.

    A small ``eps`` is added to every class before normalizing so that the output always sums to
    one, also where every activation is negative (then it is uniform).

    Parameters
    ----------
    x : torch.Tensor
        Activations with the classes along ``dim``.
    dim : int
        The class axis.
    eps : float
        Added to each rectified activation; ``> 0``.

    Returns
    -------
    torch.Tensor
        Non-negative values of the same shape, summing to 1 along ``dim``.

    Examples
    --------
    >>> import torch
    >>> p = normalized_relu(torch.tensor([[3.0, 1.0, -2.0]]), dim=1, eps=1e-12)
    >>> [round(v, 4) for v in p[0].tolist()]
    [0.75, 0.25, 0.0]
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {describe(x)}.")
    check_positive(eps, name="eps")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim must be an axis of x (from {-x.ndim} to {x.ndim - 1}), got {dim!r}.")
    rectified = torch.relu(x) + eps
    return rectified / rectified.sum(dim=dim, keepdim=True)


def flatten_cov_factor(cov_factor: torch.Tensor) -> torch.Tensor:
    """Reshape an SSN covariance factor ``(B, K, C, *S)`` to the paper's ``(B, C·prod(S), K)``.

    Parameters
    ----------
    cov_factor : torch.Tensor
        Covariance factor as returned by :meth:`SegmentationNet.ssn_parameters`.

    Returns
    -------
    torch.Tensor
        ``(B, C·prod(S), K)``; row ``c·prod(S) + i`` belongs to class ``c`` at flat voxel ``i``.

    Examples
    --------
    >>> import torch
    >>> flatten_cov_factor(torch.zeros(2, 10, 3, 4, 5)).shape
    torch.Size([2, 60, 10])
    """
    if not isinstance(cov_factor, torch.Tensor) or cov_factor.ndim < 4:
        raise ValueError(f"cov_factor must be a (B, K, C, *spatial) tensor, got {describe(cov_factor)}.")
    batch, rank = cov_factor.shape[:2]
    return cov_factor.reshape(batch, rank, -1).transpose(1, 2)


@dataclass(frozen=True)
class SSNParameters:
    """The low-rank logit distribution ``N(mean, cov_factor cov_factorᵀ + diag(cov_diag))`` of an SSN output.

    Attributes
    ----------
    mean : torch.Tensor
        ``(B, C, *S)`` mean logits ``μ``.
    cov_factor : torch.Tensor
        ``(B, K, C, *S)`` covariance factor ``P`` of rank ``K``.
    cov_diag : torch.Tensor
        ``(B, C, *S)`` covariance diagonal ``exp(log_diag) + ε``.

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020.
    """

    mean: torch.Tensor
    cov_factor: torch.Tensor
    cov_diag: torch.Tensor


class SegmentationNet(nn.Module):
    """A MONAI U-Net with a softmax, SoftSeg or SSN head.

    Parameters
    ----------
    spatial_dims : int
        2 or 3.
    in_channels : int
        Image channels.
    num_classes : int
        Classes ``C`` including background (at least 2).
    head : {"softmax", "softseg", "ssn"}
        How the output is read (module docstring).
    channels : sequence of int
        Feature channels per U-Net level, e.g. ``(16, 32, 64)``.
    strides : sequence of int
        Down-sampling factor between levels; ``len(channels) - 1`` entries. Input sizes must be
        divisible by their product.
    num_res_units : int
        Residual units per U-Net block (0 for plain convolutions).
    dropout : float
        Dropout probability inside the U-Net blocks; ``> 0`` enables Monte-Carlo dropout.
    ssn_rank : int
        Rank ``K`` of the SSN covariance factor (default 10, as in the paper).
    ssn_eps : float
        ``ε`` added to ``exp(log_diag)`` for the SSN covariance diagonal.

    Examples
    --------
    >>> import torch
    >>> net = SegmentationNet(spatial_dims=2, in_channels=1, num_classes=3, head="ssn",
    ...                       channels=(4, 8), strides=(2,), ssn_rank=5)
    >>> raw = net(torch.zeros(1, 1, 16, 16))
    >>> raw.shape  # 3 + 3 + 5*3 channels
    torch.Size([1, 21, 16, 16])
    >>> parts = net.ssn_parameters(raw)
    >>> tuple(parts.mean.shape), tuple(parts.cov_factor.shape), tuple(parts.cov_diag.shape)
    ((1, 3, 16, 16), (1, 5, 3, 16, 16), (1, 3, 16, 16))
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        head: str = "softmax",
        channels: Sequence[int] = (16, 32, 64),
        strides: Sequence[int] = (2, 2),
        num_res_units: int = 1,
        dropout: float = 0.0,
        ssn_rank: int = 10,
        ssn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {describe(spatial_dims)}.")
        in_channels = check_int(in_channels, name="in_channels", minimum=1)
        num_classes = check_num_classes(num_classes, minimum=2)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        channels = check_int_tuple(channels, name="channels", minimum=1)
        strides = check_int_tuple(strides, name="strides", minimum=1)
        if len(channels) < 2 or len(strides) != len(channels) - 1:
            raise ValueError(
                f"channels and strides must give at least two levels with len(strides) == len(channels) - 1, "
                f"got channels={channels} and strides={strides}."
            )
        num_res_units = check_int(num_res_units, name="num_res_units", minimum=0)
        dropout = check_probability(dropout, name="dropout")
        if dropout >= 1.0:
            raise ValueError(f"dropout must be < 1, got {dropout}.")
        ssn_rank = check_int(ssn_rank, name="ssn_rank", minimum=1)
        ssn_eps = check_positive(ssn_eps, name="ssn_eps")

        self.spatial_dims = int(spatial_dims)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.head = head
        self.ssn_rank = ssn_rank
        self.ssn_eps = ssn_eps
        self.dropout = dropout
        self.size_divisor = 1
        for s in strides:
            self.size_divisor *= s

        features = channels[0]
        self.backbone = UNet(
            spatial_dims=self.spatial_dims,
            in_channels=in_channels,
            out_channels=features,
            channels=channels,
            strides=strides,
            num_res_units=num_res_units,
            dropout=dropout,
        )
        self.activation = nn.PReLU()
        conv = nn.Conv2d if self.spatial_dims == 2 else nn.Conv3d
        if head == "ssn":
            self.mean_head = conv(features, num_classes, kernel_size=1)
            self.log_diag_head = conv(features, num_classes, kernel_size=1)
            self.factor_head = conv(features, num_classes * ssn_rank, kernel_size=1)
            # Start close to a deterministic model: small, smooth covariance; the mean learns first.
            with torch.no_grad():
                self.log_diag_head.weight.mul_(0.1)
                self.log_diag_head.bias.fill_(-2.0)
                self.factor_head.weight.mul_(0.1)
                self.factor_head.bias.zero_()
        else:
            self.mean_head = conv(features, num_classes, kernel_size=1)

    @property
    def num_outputs(self) -> int:
        """Channels of the raw output: ``C`` (softmax/softseg) or ``C·(2 + K)`` (SSN)."""
        if self.head == "ssn":
            return self.num_classes * (2 + self.ssn_rank)
        return self.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw output ``(B, num_outputs, *S)`` for an image batch ``(B, in_channels, *S)``."""
        features = self.activation(self.backbone(x))
        if self.head == "ssn":
            return torch.cat(
                [self.mean_head(features), self.log_diag_head(features), self.factor_head(features)], dim=1
            )
        return self.mean_head(features)

    def ssn_parameters(self, raw: torch.Tensor) -> SSNParameters:
        """The low-rank logit distribution in a raw output of the SSN head (layouts in the module docstring)."""
        if self.head != "ssn":
            raise ValueError(f"ssn_parameters needs a network with head='ssn', this one has head={self.head!r}.")
        if raw.ndim != self.spatial_dims + 2 or raw.shape[1] != self.num_outputs:
            raise ValueError(
                f"raw must be a (B, {self.num_outputs}, *spatial) output of this network, "
                f"got {describe(raw)}."
            )
        c, k = self.num_classes, self.ssn_rank
        return SSNParameters(
            mean=raw[:, :c],
            cov_factor=raw[:, 2 * c :].reshape(raw.shape[0], k, c, *raw.shape[2:]),
            cov_diag=torch.exp(raw[:, c : 2 * c].float()).to(raw.dtype) + self.ssn_eps,
        )

    def probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, C, *S)`` of a raw output (SSN: softmax of the mean logits)."""
        if self.head == "softseg":
            return normalized_relu(raw.float(), dim=1)
        if self.head == "ssn":
            return torch.softmax(raw[:, : self.num_classes].float(), dim=1)
        return torch.softmax(raw.float(), dim=1)


class SegmentationEnsemble(nn.Module):
    """A deep ensemble of ``M`` :class:`SegmentationNet` members (``M = 1`` for a single model).

    :meth:`forward` takes one batch per member, ``(M, B, in_channels, *S)``, so that a single call
    (and a single DistributedDataParallel all-reduce) trains every member on its own patches;
    :meth:`forward_shared` runs every member on the same batch.

    Examples
    --------
    >>> import torch
    >>> ens = build_model(spatial_dims=2, in_channels=1, num_classes=2, ensemble_size=3,
    ...                   channels=(4, 8), strides=(2,), seed=0)
    >>> ens(torch.zeros(3, 2, 1, 8, 8)).shape
    torch.Size([3, 2, 2, 8, 8])
    """

    def __init__(self, members: Sequence[SegmentationNet]) -> None:
        super().__init__()
        if len(members) == 0 or not all(isinstance(m, SegmentationNet) for m in members):
            raise TypeError(
                f"members must be a non-empty sequence of SegmentationNet, got {describe(members)}."
            )
        self.members = nn.ModuleList(members)

    @property
    def size(self) -> int:
        """Number of members ``M``."""
        return len(self.members)

    @property
    def reference(self) -> SegmentationNet:
        """The first member (all members share head, classes and geometry)."""
        return self.members[0]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(M, B, K, *S)`` for per-member batches ``(M, B, in_channels, *S)``."""
        if x.shape[0] != self.size:
            raise ValueError(f"x must hold one batch per member ({self.size}), got {describe(x)}.")
        return torch.stack([member(x[i]) for i, member in enumerate(self.members)])

    def forward_shared(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs ``(M, B, K, *S)`` of every member on the same batch ``(B, in_channels, *S)``."""
        return torch.stack([member(x) for member in self.members])


def build_model(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    head: str = "softmax",
    ensemble_size: int = 1,
    channels: Sequence[int] = (16, 32, 64),
    strides: Sequence[int] = (2, 2),
    num_res_units: int = 1,
    dropout: float = 0.0,
    ssn_rank: int = 10,
    ssn_eps: float = 1e-5,
    seed: int | None = 0,
) -> SegmentationEnsemble:
    """Build an ensemble of ``ensemble_size`` independently initialised :class:`SegmentationNet`.

    Parameters
    ----------
    spatial_dims, in_channels, num_classes, head, channels, strides, num_res_units, dropout
        As for :class:`SegmentationNet`.
    ssn_rank, ssn_eps
        As for :class:`SegmentationNet`.
    ensemble_size : int
        Number of members ``M`` (1 for a single network).
    seed : int or None
        Seed of the weight initialisation (member ``m`` uses ``seed + m``); ``None`` keeps the
        global torch RNG.

    Returns
    -------
    SegmentationEnsemble

    Examples
    --------
    >>> model = build_model(spatial_dims=3, in_channels=1, num_classes=2, head="softseg",
    ...                     channels=(4, 8), strides=(2,), seed=1)
    >>> model.size, model.reference.head
    (1, 'softseg')
    """
    ensemble_size = check_int(ensemble_size, name="ensemble_size", minimum=1)
    if seed is not None:
        seed = check_int(seed, name="seed", minimum=0)
    _check_model_size(
        spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, head=head,
        ensemble_size=ensemble_size, channels=channels, num_res_units=num_res_units, ssn_rank=ssn_rank,
    )  # fmt: skip
    members = []
    for m in range(ensemble_size):
        context = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with context:
            if seed is not None:
                torch.manual_seed(seed + m)
            members.append(
                SegmentationNet(
                    spatial_dims=spatial_dims,
                    in_channels=in_channels,
                    num_classes=num_classes,
                    head=head,
                    channels=channels,
                    strides=strides,
                    num_res_units=num_res_units,
                    dropout=dropout,
                    ssn_rank=ssn_rank,
                    ssn_eps=ssn_eps,
                )
            )
    return SegmentationEnsemble(members)


def estimate_parameters(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    channels: Sequence[int],
    num_res_units: int = 1,
    head: str = "softmax",
    ssn_rank: int = 10,
) -> int:
    """Approximate number of weights of one :class:`SegmentationNet`, without building it.

    Every U-Net level joins ``a`` to ``b`` channels with 3×3(×3) convolutions in the encoder, the
    residual units and the decoder, about ``3^d · a · b · (num_res_units + 2)`` weights; the head adds
    ``features × outputs``. The estimate is within a factor of 1.5 of the real count for the usual
    shapes (tested), which is what a memory check needs before an absurd ``channels`` allocates.

    Parameters
    ----------
    spatial_dims, in_channels, num_classes, channels, num_res_units, head, ssn_rank
        As for :class:`SegmentationNet`.

    Returns
    -------
    int

    Examples
    --------
    >>> estimate_parameters(spatial_dims=2, in_channels=1, num_classes=2, channels=(16, 32, 64))
    69584
    """
    kernel = 3 ** int(spatial_dims)
    widths = [int(in_channels), *(int(c) for c in channels)]
    joins = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    outputs = 2 * num_classes + ssn_rank * num_classes if head == "ssn" else num_classes
    return kernel * joins * (int(num_res_units) + 2) + int(channels[0]) * outputs


def _check_model_size(
    *,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    head: str,
    ensemble_size: int,
    channels: Sequence[int],
    num_res_units: int,
    ssn_rank: int,
) -> None:
    """Refuse a network whose weights alone would not fit in memory, naming ``channels``."""
    from ._memory import check_allocation

    try:
        widths = [int(c) for c in channels]
        params = estimate_parameters(
            spatial_dims=int(spatial_dims), in_channels=int(in_channels), num_classes=int(num_classes),
            channels=widths, num_res_units=int(num_res_units), head=head, ssn_rank=int(ssn_rank),
        )  # fmt: skip
    except (TypeError, ValueError):
        return  # malformed arguments: SegmentationNet's own checks name them
    check_allocation(
        4 * params * ensemble_size,
        what=f"the weights of {ensemble_size} U-Net(s) (about {params:,} parameters each, float32)",
        cause=f"channels={tuple(widths)}",
        advice="use fewer channels per level (the default is (16, 32, 64))",
    )


def enable_mc_dropout(model: nn.Module, *, enabled: bool = True) -> int:
    """Put every dropout layer of ``model`` in training (sampling) mode, leaving the rest in eval mode.

    Parameters
    ----------
    model : torch.nn.Module
        Usually in ``eval()`` mode already.
    enabled : bool
        ``False`` puts the dropout layers back into eval mode.

    Returns
    -------
    int
        The number of dropout layers switched (0 means the model has no MC dropout).

    Examples
    --------
    >>> net = SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, channels=(4, 8),
    ...                       strides=(2,), dropout=0.3).eval()
    >>> enable_mc_dropout(net) > 0
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}.")
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            module.train(enabled)
            count += 1
    return count


@contextlib.contextmanager
def mc_dropout(model: nn.Module) -> Iterator[int]:
    """Context manager: eval mode with dropout sampling on; restores the previous modes on exit.

    Examples
    --------
    >>> import torch
    >>> net = SegmentationNet(spatial_dims=2, in_channels=1, num_classes=2, channels=(4, 8),
    ...                       strides=(2,), dropout=0.5)
    >>> with mc_dropout(net) as n_layers:
    ...     a, b = net(torch.ones(1, 1, 8, 8)), net(torch.ones(1, 1, 8, 8))
    >>> n_layers > 0 and not torch.equal(a, b)
    True
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield enable_mc_dropout(model)
    finally:
        for module, mode in modes.items():
            module.train(mode)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (key order), e.g. to check DDP ranks agree.

    Examples
    --------
    >>> net = build_model(spatial_dims=2, in_channels=1, num_classes=2, channels=(4, 8), strides=(2,), seed=0)
    >>> weights_digest(net) == weights_digest(build_model(spatial_dims=2, in_channels=1, num_classes=2,
    ...                                                   channels=(4, 8), strides=(2,), seed=0))
    True
    """
    import hashlib

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}.")
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
