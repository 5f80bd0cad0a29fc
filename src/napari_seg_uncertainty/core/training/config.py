"""The settings of a training run: :class:`TrainConfig`, and reading them from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._validation import check_choice, check_flag, check_int, check_int_tuple, check_real_in, describe
from ..losses import LOSSES
from ..models import HEADS

__all__ = ["BACKGROUND_MASKS", "BEST_METRICS", "NORMALIZATIONS", "TARGETS", "TrainConfig", "read_config_file"]

#: Target strategies: fused soft labels (core.labels) or a random rater per patch.
TARGETS = ("mean", "msvls", "svls", "label_smoothing", "onehot", "staple", "random_rater")
#: Metrics that can select the best checkpoint.
BEST_METRICS = ("val_dice", "val_nll")
#: What ``background_mask`` does with the voxels whose image is 0 in every channel.
BACKGROUND_MASKS = ("none", "covariance", "likelihood")
#: How images are normalized: the training data's per-channel mean/std, a z-score per case and
#: channel over the body mask, or a per-case percentile clip followed by a z-score.
NORMALIZATIONS = ("dataset", "zscore", "percentile")
#: Config fields that define the network; a resumed run must not change them.
MODEL_FIELDS = (
    "head",
    "channels",
    "strides",
    "num_res_units",
    "dropout",
    "ensemble_size",
    "ssn_rank",
    "ssn_eps",
    "spatial_dims",
)

_INF = math.inf
# field: (low, high, low_open, high_open)
_REAL_FIELDS = {
    "label_smoothing": (0.0, 1.0, False, False),
    "svls_sigma": (0.0, _INF, True, True),
    "dropout": (0.0, 1.0, False, True),
    "ssn_eps": (0.0, 1.0, True, False),
    "learning_rate": (0.0, _INF, True, True),
    "weight_decay": (0.0, _INF, False, True),
    "foreground_fraction": (0.0, 1.0, False, False),
    "val_fraction": (0.0, 0.9, False, False),
    "sw_overlap": (0.0, 1.0, False, True),
    "test_fraction": (0.0, 0.9, False, False),
    "cache_mb": (0.0, _INF, False, True),
}
# field: minimum
_INT_FIELDS = {
    "num_res_units": 0,
    "ensemble_size": 1,
    "ssn_rank": 1,
    "ssn_samples": 2,
    "epochs": 1,
    "steps_per_epoch": 1,
    "batch_size": 1,
    "val_every": 1,
    "seed": 0,
    "checkpoint_every": 1,
    "sw_batch_size": 1,
    "predict_samples": 0,
    "patches_per_case": 1,
    "num_workers": 0,
}
_CHOICE_FIELDS = {
    "head": HEADS,
    "loss": LOSSES,
    "target": TARGETS,
    "background_mask": BACKGROUND_MASKS,
    "best_metric": BEST_METRICS,
    "normalization": NORMALIZATIONS,
}
_FLAG_FIELDS = ("augment", "amp", "augment_spatial", "augment_intensity", "overwrite")


@dataclass
class TrainConfig:
    """Every setting of a training run; saved with :meth:`save` and inside each checkpoint.

    Attributes
    ----------
    head : {"softmax", "softseg", "ssn"}
        Output head (see :mod:`~napari_seg_uncertainty.core.models`).
    loss : {"ce", "dice", "ce_dice", "adaptive_wing", "ssn"}
        Soft-target cross-entropy, soft Dice (MONAI), their sum, Adaptive Wing (SoftSeg) or the SSN
        Monte-Carlo loss (only with ``head="ssn"``, which needs it).
    target : str
        One of :data:`TARGETS`: ``"mean"`` (raters' mean one-hot, mOH), ``"msvls"``, ``"svls"``,
        ``"label_smoothing"`` and ``"onehot"`` (of the majority vote), ``"staple"``, or
        ``"random_rater"`` (a random rater's label map per patch and step).
    label_smoothing : float
        ``α`` of label smoothing.
    svls_sigma : float
        Gaussian ``σ`` of SVLS / mSVLS.
    spatial_dims : int or None
        2 or 3; ``None`` uses the data's dimensionality (2 on a volume trains on its slices).
    channels, strides, num_res_units : tuple of int, tuple of int, int
        U-Net shape (MONAI ``UNet``).
    dropout : float
        Dropout in the U-Net blocks, for Monte-Carlo dropout at prediction time.
    ensemble_size : int
        Members of a deep ensemble (1 for a single model).
    ssn_rank, ssn_samples, ssn_eps : int, int, float
        SSN covariance rank ``K`` (10), Monte-Carlo samples per step (20, even: antithetic pairs)
        and the floor ``ε`` added to the covariance diagonal.
    background_mask : {"none", "covariance", "likelihood"}
        What happens to the background, the voxels whose image is exactly 0 in every channel (e.g.
        air outside a skull-stripped brain):

        - ``"none"`` (default): nothing, every voxel is trained like any other.
        - ``"covariance"`` (SSN only): as the SSN reference code does it, the covariance is zeroed
          there (factor 0, diagonal ``ε``) so the samples carry no noise outside the mask, and
          every voxel still counts in the likelihood.
        - ``"likelihood"``: the background voxels are left out of the loss (every head).
    epochs, steps_per_epoch, batch_size : int
        Run length; each step draws ``batch_size`` patches per ensemble member.
    patch_size : tuple of int or None
        Training patch size; ``None`` picks up to 64 (2-D) or 32 (3-D) per axis, within the data.
        Every entry must be divisible by the product of ``strides``.
    learning_rate, weight_decay : float
        Adam optimizer settings.
    foreground_fraction : float
        Probability that a patch is centred on a voxel some rater labelled foreground.
    augment : bool
        Random flips along every spatial axis.
    augment_spatial : bool
        Small random rotations (±10°) and scaling (0.9–1.1) of the patches (MONAI ``RandAffined``;
        cohort training).
    augment_intensity : bool
        Random intensity scaling and shifts (±0.1, MONAI ``RandScaleIntensityd`` /
        ``RandShiftIntensityd``; cohort training).
    normalization : {"dataset", "zscore", "percentile"}
        ``"dataset"``: the training data's per-channel mean and standard deviation (stored in the
        checkpoint); ``"zscore"``: per case and channel over the body mask (voxels whose image is
        non-zero in some channel; all voxels when there are none); ``"percentile"``: per case, clip
        to ``clip_percentiles`` and z-score (CT).
    clip_percentiles : tuple of float
        Lower and upper percentile of ``normalization="percentile"``.
    val_fraction : float
        Share of the data held out for validation (0 disables validation).
    test_fraction : float
        Share of a cohort's cases held out for testing (never read during training).
    patches_per_case : int
        Patches drawn from a cohort case each time it is read.
    num_workers : int
        DataLoader worker processes reading cohort cases (0: in the training process).
    cache_mb : float
        Memory budget, in MiB, of prepared cohort cases kept in memory (split across the workers);
        the others are read from disk again when needed.
    target_cache_dir : str or None
        Folder of the soft targets cached on disk for cohort training; ``None``:
        ``<output_dir>/cache``, or a temporary folder without ``output_dir``.
    overwrite : bool
        Allow training into an ``output_dir`` that holds an earlier run's ``last.pt`` / ``best.pt``.
    val_every : int
        Validate every this many epochs (and after the last).
    best_metric : {"val_dice", "val_nll"}
        Which validation metric picks ``best.pt``.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU) or a torch device string.
    amp : bool
        Mixed precision on CUDA.
    seed : int
        Seed of weights, patch sampling and SSN noise.
    output_dir : str or None
        Folder for ``last.pt`` and ``best.pt``; ``None`` writes no checkpoint.
    checkpoint_every : int
        Write ``last.pt`` every this many epochs (and at the end, and on cancel).
    sw_overlap : float
        Overlap of sliding-window inference.
    sw_batch_size : int
        Windows per forward pass in sliding-window inference.
    predict_samples : int
        Default number of samples at prediction: SSN logit samples or MC-dropout passes
        (0: the SSN mean / dropout off).

    References
    ----------
    .. [1] Monteiro M. et al., "Stochastic Segmentation Networks: Modelling Spatially Correlated
       Aleatoric Uncertainty", NeurIPS 2020 (``background_mask="covariance"`` follows the
       sampling mask of its reference code).

    Examples
    --------
    >>> cfg = TrainConfig(head="ssn", loss="ssn", target="random_rater", epochs=2)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    head: str = "softmax"
    loss: str = "ce"
    target: str = "mean"
    label_smoothing: float = 0.1
    svls_sigma: float = 1.0
    spatial_dims: int | None = None
    channels: tuple[int, ...] = (16, 32, 64)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 1
    dropout: float = 0.0
    ensemble_size: int = 1
    ssn_rank: int = 10
    ssn_samples: int = 20
    ssn_eps: float = 1e-5
    background_mask: str = "none"
    epochs: int = 10
    steps_per_epoch: int = 20
    batch_size: int = 4
    patch_size: tuple[int, ...] | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    foreground_fraction: float = 0.5
    augment: bool = True
    val_fraction: float = 0.2
    val_every: int = 1
    best_metric: str = "val_dice"
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    output_dir: str | None = None
    checkpoint_every: int = 1
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    predict_samples: int = 20
    normalization: str = "dataset"
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    test_fraction: float = 0.2
    patches_per_case: int = 4
    num_workers: int = 2
    cache_mb: float = 1024.0
    augment_spatial: bool = False
    augment_intensity: bool = False
    overwrite: bool = False
    target_cache_dir: str | None = None

    def __post_init__(self) -> None:
        for name, choices in _CHOICE_FIELDS.items():
            setattr(self, name, check_choice(getattr(self, name), name=name, choices=choices))
        for name, (low, high, low_open, high_open) in _REAL_FIELDS.items():
            value = check_real_in(
                getattr(self, name), name=name, low=low, high=high, low_open=low_open, high_open=high_open
            )
            setattr(self, name, value)
        for name, minimum in _INT_FIELDS.items():
            setattr(self, name, check_int(getattr(self, name), name=name, minimum=minimum))
        for name in _FLAG_FIELDS:
            setattr(self, name, check_flag(getattr(self, name), name=name))
        self.channels = check_int_tuple(self.channels, name="channels", minimum=1)
        self.strides = check_int_tuple(self.strides, name="strides", minimum=1)
        if self.patch_size is not None:
            self.patch_size = check_int_tuple(self.patch_size, name="patch_size", minimum=1)
        self.clip_percentiles = _check_percentiles(self.clip_percentiles)
        self._check_combinations()
        if not isinstance(self.device, str) or not self.device:
            raise TypeError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {describe(self.device)}."
            )
        if self.output_dir is not None:
            if not isinstance(self.output_dir, (str, os.PathLike)):
                raise TypeError(f"output_dir must be a folder path or None, got {describe(self.output_dir)}.")
            self.output_dir = str(self.output_dir)
        if self.target_cache_dir is not None:
            if not isinstance(self.target_cache_dir, (str, os.PathLike)):
                raise TypeError(
                    f"target_cache_dir must be a folder path or None, got {describe(self.target_cache_dir)}."
                )
            self.target_cache_dir = str(self.target_cache_dir)

    def _check_combinations(self) -> None:
        """Rules that tie several settings together."""
        if (self.head == "ssn") != (self.loss == "ssn"):
            raise ValueError(
                f"head={self.head!r} and loss={self.loss!r} do not fit: the SSN head is trained with the SSN "
                "Monte-Carlo loss and that loss needs the SSN head; use head='ssn' with loss='ssn'."
            )
        if self.background_mask == "covariance" and self.head != "ssn":
            raise ValueError(
                f"background_mask='covariance' zeroes the SSN covariance and needs head='ssn', got "
                f"head={self.head!r}; use background_mask='likelihood' to leave the background out of the loss."
            )
        if self.spatial_dims is not None and (
            isinstance(self.spatial_dims, bool) or self.spatial_dims not in (2, 3)
        ):
            raise ValueError(f"spatial_dims must be 2, 3 or None, got {self.spatial_dims!r}.")
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"channels and strides must describe at least two U-Net levels with len(strides) == "
                f"len(channels) - 1, got channels={self.channels} and strides={self.strides}."
            )
        if self.ssn_samples % 2:
            raise ValueError(f"ssn_samples must be even (antithetic pairs), got {self.ssn_samples}.")
        if self.patch_size is not None:
            if len(self.patch_size) not in (2, 3):
                raise ValueError(f"patch_size must have 2 or 3 entries, got {self.patch_size}.")
            divisor = math.prod(self.strides)
            if any(p % divisor for p in self.patch_size):
                raise ValueError(
                    f"patch_size entries must be divisible by {divisor} (the product of strides "
                    f"{self.strides}), got {self.patch_size}."
                )

    # serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (lists instead of tuples) for JSON, YAML and checkpoints."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build a config from a ``dict``; unknown keys raise ``ValueError`` naming them."""
        if not isinstance(values, dict):
            raise TypeError(f"a training config must be a mapping of settings, got {describe(values)}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known settings: {sorted(known)}.")
        return cls(**values)

    def save(self, path: str | os.PathLike) -> str:
        """Write the config to ``.yaml``/``.yml`` or ``.json`` (by suffix); returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        elif suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2)
        else:
            raise ValueError(f"path must end in .yaml, .yml or .json, got {str(path)!r}.")
        path.write_text(text)
        return str(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a config written by :meth:`save` (or by hand) from YAML or JSON."""
        return cls.from_dict(read_config_file(path))


def _check_percentiles(value: Any) -> tuple[float, float]:
    """``clip_percentiles`` as ``(low, high)`` with ``0 <= low < high <= 100``."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise TypeError(
            f"clip_percentiles must be two numbers (low, high) such as (0.5, 99.5), got {describe(value)}."
        )
    low = check_real_in(value[0], name="clip_percentiles[0]", low=0.0, high=100.0)
    high = check_real_in(value[1], name="clip_percentiles[1]", low=0.0, high=100.0)
    if not low < high:
        raise ValueError(f"clip_percentiles must have low < high, got {(low, high)}.")
    return (float(low), float(high))


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or JSON mapping from ``path`` (helper of :meth:`TrainConfig.load` and the CLI)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    text = path.read_text()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {str(path)!r} is not valid YAML (or uses a tag that is refused "
                             f"for safety): {exc}") from exc
    elif suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {str(path)!r} is not valid JSON: {exc}") from exc
    else:
        raise ValueError(f"config file must end in .yaml, .yml or .json, got {str(path)!r}.")
    if not isinstance(values, dict):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping of settings, got {describe(values)}."
        )
    return values
