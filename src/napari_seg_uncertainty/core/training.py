"""The training loop: one generator used by the Train widget, the command line and the tests.

:func:`train` takes a :class:`TrainConfig` and the data (an image and its raters) and yields a
:class:`TrainProgress` record after every optimisation step and every epoch. The caller decides
what to do with them (update a progress bar, print a line, collect a history). Sending
``"cancel"`` into the generator (``gen.send("cancel")``, or ``worker.send("cancel")`` for a napari
worker) saves a checkpoint of the current state and ends the run; ``gen.close()`` does the same
without the last record.

Data handling
-------------
- 3-D volumes: a 3-D U-Net trained on random patches (half of them centred on a voxel that some
  rater labelled foreground, by default) with sliding-window inference (MONAI) for validation and
  prediction.
- 2-D images, or ``spatial_dims=2`` on a volume: a 2-D U-Net on (patches of) 2-D slices.
- Validation: the last ``val_fraction`` of the cases (or slices), or with a single 2-D image the
  last rows; metrics are the NLL against the raters' mean one-hot map and the mean foreground Dice
  of the prediction against the raters' majority.
- Targets: any fused soft label from :mod:`~napari_seg_uncertainty.core.labels`
  (``"mean"``, ``"msvls"``, ``"svls"``, ``"label_smoothing"``, ``"onehot"``, ``"staple"``), or
  ``"random_rater"``: one randomly chosen rater per patch and step.

Devices: ``"auto"`` picks CUDA, then MPS, then CPU. Mixed precision runs on CUDA (bfloat16 where
supported, else float16 with loss scaling). With ``torchrun`` (``torch.distributed`` initialised)
the model is wrapped in ``DistributedDataParallel``: every rank draws its own patches, gradients
are averaged, and rank 0 validates and writes checkpoints. With a fixed ``seed`` a CPU run is
reproducible, also across an interruption and ``resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import as_rater_stack, check_num_classes, check_spacing, describe
from .checkpoint import load_checkpoint, save_checkpoint
from .losses import (
    LOSSES,
    adaptive_wing_loss,
    dice_loss,
    sample_low_rank_logits,
    soft_cross_entropy,
    ssn_loss,
)
from .models import HEADS, SegmentationEnsemble, SegmentationNet, build_model, mc_dropout

__all__ = [
    "TARGETS",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainedModel",
    "TrainingData",
    "load_trained_model",
    "predict",
    "predict_ssn_distribution",
    "resolve_device",
    "train",
    "weights_digest",
]

#: Target strategies: fused soft labels (core.labels) or a random rater per patch.
TARGETS = ("mean", "msvls", "svls", "label_smoothing", "onehot", "staple", "random_rater")
#: Metrics that can select the best checkpoint.
BEST_METRICS = ("val_dice", "val_nll")
#: Config fields that define the network; a resumed run must not change them.
_MODEL_FIELDS = (
    "head",
    "channels",
    "strides",
    "num_res_units",
    "dropout",
    "ensemble_size",
    "ssn_rank",
    "ssn_epsilon",
    "spatial_dims",
)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {describe(value)}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def _real(
    value: Any, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {describe(value)}.")
    value = float(value)
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (math.isfinite(value) and ok_low and ok_high):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return value


def _choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return str(value)


def _int_tuple(value: Any, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise TypeError(f"{name} must be a non-empty list of integers, got {describe(value)}.")
    return tuple(_int(v, f"{name}[{i}]", minimum) for i, v in enumerate(value))


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
    ssn_rank, ssn_samples, ssn_epsilon : int, int, float
        SSN covariance rank (10), Monte-Carlo samples per step (20, even: antithetic pairs) and ``ε``.
    mask_background : bool
        Leave voxels whose image is exactly 0 in every channel (e.g. air outside a skull-stripped
        brain) out of the loss, as the SSN paper does.
    epochs, steps_per_epoch, batch_size : int
        Run length; each step draws ``batch_size`` patches per ensemble member.
    patch_size : tuple of int or None
        Training patch size; ``None`` picks up to 64 (2-D) or 32 (3-D) per axis, within the data.
        Every entry must be divisible by the product of ``strides``.
    learning_rate, weight_decay : float
        Adam optimiser settings.
    foreground_fraction : float
        Probability that a patch is centred on a voxel some rater labelled foreground.
    augment : bool
        Random flips along every spatial axis.
    val_fraction : float
        Share of the data held out for validation (0 disables validation).
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
    ssn_epsilon: float = 1e-5
    mask_background: bool = False
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

    def __post_init__(self) -> None:
        self.head = _choice(self.head, "head", HEADS)
        self.loss = _choice(self.loss, "loss", LOSSES)
        if (self.head == "ssn") != (self.loss == "ssn"):
            raise ValueError(
                f"head={self.head!r} and loss={self.loss!r} do not fit: the SSN head is trained with the SSN "
                "Monte-Carlo loss and that loss needs the SSN head; use head='ssn' with loss='ssn'."
            )
        self.target = _choice(self.target, "target", TARGETS)
        self.label_smoothing = _real(self.label_smoothing, "label_smoothing", 0.0, 1.0)
        self.svls_sigma = _real(self.svls_sigma, "svls_sigma", 0.0, math.inf, low_open=True, high_open=True)
        if self.spatial_dims is not None and (
            isinstance(self.spatial_dims, bool) or self.spatial_dims not in (2, 3)
        ):
            raise ValueError(f"spatial_dims must be 2, 3 or None, got {self.spatial_dims!r}.")
        self.channels = _int_tuple(self.channels, "channels", 1)
        self.strides = _int_tuple(self.strides, "strides", 1)
        if len(self.channels) < 2 or len(self.strides) != len(self.channels) - 1:
            raise ValueError(
                f"channels and strides must describe at least two U-Net levels with len(strides) == "
                f"len(channels) - 1, got channels={self.channels} and strides={self.strides}."
            )
        self.num_res_units = _int(self.num_res_units, "num_res_units", 0)
        self.dropout = _real(self.dropout, "dropout", 0.0, 1.0, high_open=True)
        self.ensemble_size = _int(self.ensemble_size, "ensemble_size", 1)
        self.ssn_rank = _int(self.ssn_rank, "ssn_rank", 1)
        self.ssn_samples = _int(self.ssn_samples, "ssn_samples", 2)
        if self.ssn_samples % 2:
            raise ValueError(f"ssn_samples must be even (antithetic pairs), got {self.ssn_samples}.")
        self.ssn_epsilon = _real(self.ssn_epsilon, "ssn_epsilon", 0.0, 1.0, low_open=True)
        if not isinstance(self.mask_background, bool):
            raise TypeError(f"mask_background must be True or False, got {describe(self.mask_background)}.")
        self.epochs = _int(self.epochs, "epochs", 1)
        self.steps_per_epoch = _int(self.steps_per_epoch, "steps_per_epoch", 1)
        self.batch_size = _int(self.batch_size, "batch_size", 1)
        if self.patch_size is not None:
            self.patch_size = _int_tuple(self.patch_size, "patch_size", 1)
            if len(self.patch_size) not in (2, 3):
                raise ValueError(f"patch_size must have 2 or 3 entries, got {self.patch_size}.")
            divisor = math.prod(self.strides)
            if any(p % divisor for p in self.patch_size):
                raise ValueError(
                    f"patch_size entries must be divisible by {divisor} (the product of strides "
                    f"{self.strides}), got {self.patch_size}."
                )
        self.learning_rate = _real(
            self.learning_rate, "learning_rate", 0.0, math.inf, low_open=True, high_open=True
        )
        self.weight_decay = _real(self.weight_decay, "weight_decay", 0.0, math.inf, high_open=True)
        self.foreground_fraction = _real(self.foreground_fraction, "foreground_fraction", 0.0, 1.0)
        if not isinstance(self.augment, bool):
            raise TypeError(f"augment must be True or False, got {describe(self.augment)}.")
        self.val_fraction = _real(self.val_fraction, "val_fraction", 0.0, 0.9)
        self.val_every = _int(self.val_every, "val_every", 1)
        self.best_metric = _choice(self.best_metric, "best_metric", BEST_METRICS)
        if not isinstance(self.device, str) or not self.device:
            raise TypeError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {describe(self.device)}."
            )
        if not isinstance(self.amp, bool):
            raise TypeError(f"amp must be True or False, got {describe(self.amp)}.")
        self.seed = _int(self.seed, "seed", 0)
        if self.output_dir is not None:
            if not isinstance(self.output_dir, (str, os.PathLike)):
                raise TypeError(f"output_dir must be a folder path or None, got {describe(self.output_dir)}.")
            self.output_dir = str(self.output_dir)
        self.checkpoint_every = _int(self.checkpoint_every, "checkpoint_every", 1)
        self.sw_overlap = _real(self.sw_overlap, "sw_overlap", 0.0, 1.0, high_open=True)
        self.sw_batch_size = _int(self.sw_batch_size, "sw_batch_size", 1)
        self.predict_samples = _int(self.predict_samples, "predict_samples", 0)

    # serialisation -------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """Images and their raters' label maps, as the training loop reads them.

    Attributes
    ----------
    images : list of numpy.ndarray
        One float32 ``(in_channels, *S)`` array per case.
    raters : list of numpy.ndarray
        One integer ``(R, *S)`` stack per case (same ``*S`` as its image).
    num_classes : int
        Classes including background.
    class_names : list of str
        One name per class.
    spacing : tuple of float or None
        Voxel spacing (carried into checkpoints and predictions).
    """

    images: list[np.ndarray]
    raters: list[np.ndarray]
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    spacing: tuple[float, ...] | None = None

    @property
    def ndim(self) -> int:
        """Spatial dimensions of the data (2 or 3)."""
        return self.raters[0].ndim - 1

    @property
    def in_channels(self) -> int:
        """Image channels."""
        return int(self.images[0].shape[0])

    @classmethod
    def from_arrays(
        cls,
        image: Any,
        raters: Any,
        *,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        spacing: Sequence[float] | None = None,
    ) -> TrainingData:
        """Validate one case (or lists of cases) and wrap it.

        Parameters
        ----------
        image : array_like or list of array_like
            ``(*S)`` or ``(in_channels, *S)``.
        raters : array_like, RaterSet, or a list of them
            ``(R, *S)`` integer stack; a ``RaterSet`` also gives class names and spacing.
        num_classes : int, optional
            Default: from ``class_names`` or the largest label + 1 (at least 2).
        class_names : sequence of str, optional
            One name per class.
        spacing : sequence of float, optional
            Voxel spacing per spatial axis.

        Returns
        -------
        TrainingData

        Examples
        --------
        >>> import numpy as np
        >>> data = TrainingData.from_arrays(np.zeros((8, 8)), np.zeros((3, 8, 8), int), num_classes=2)
        >>> data.images[0].shape, data.raters[0].shape, data.class_names
        ((1, 8, 8), (3, 8, 8), ['background', 'class 1'])
        """
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if isinstance(class_names, str):
            raise TypeError(f"class_names must be a sequence of names, one per class, got the string "
                            f"{class_names!r}; write e.g. ['background', 'lesion'].")
        rater_list = list(raters) if isinstance(raters, (list, tuple)) and _is_case_list(raters) else [raters]
        if len(images) != len(rater_list):
            raise ValueError(
                f"image and raters must list the same number of cases, got {len(images)} and "
                f"{len(rater_list)}."
            )
        stacks = []
        for i, r in enumerate(rater_list):
            if hasattr(r, "labels") and hasattr(r, "class_names"):  # a RaterSet
                if class_names is None and r.class_names:
                    class_names = list(r.class_names)
                if spacing is None and getattr(r, "spacing", None) is not None:
                    spacing = r.spacing
                r = r.labels
            stacks.append(as_rater_stack(r, name="raters" if len(rater_list) == 1 else f"raters[{i}]"))
        ndim = stacks[0].ndim - 1
        if any(s.ndim - 1 != ndim for s in stacks):
            raise ValueError("raters must all be 2-D or all be 3-D cases.")
        largest = max(int(s.max()) for s in stacks)
        if num_classes is None and class_names:
            if largest >= len(class_names):
                raise ValueError(
                    f"class_names must have at least {largest + 1} entries (one per class, the raters "
                    f"use labels up to {largest}), got {len(class_names)}."
                )
            num_classes = len(class_names)
        if num_classes is None:
            num_classes = max(largest + 1, 2)
        num_classes = check_num_classes(num_classes, minimum=2)
        if largest >= num_classes:
            raise ValueError(
                f"raters contain label {largest}, outside 0..{num_classes - 1} for num_classes={num_classes}."
            )
        if class_names is None:
            class_names = ["background"] + [f"class {k}" for k in range(1, num_classes)]
        class_names = [str(n) for n in class_names]
        if len(class_names) != num_classes:
            raise ValueError(
                f"class_names must have {num_classes} entries (one per class), got {len(class_names)}."
            )
        arrays = []
        for i, (img, stack) in enumerate(zip(images, stacks)):
            name = "image" if len(images) == 1 else f"image[{i}]"
            arr = _as_image(img, name=name)
            spatial = stack.shape[1:]
            if arr.shape == spatial:
                arr = arr[None]
            elif arr.ndim != len(spatial) + 1 or arr.shape[1:] != spatial:
                raise ValueError(
                    f"{name} must have the raters' spatial shape {spatial} (or (channels, *{spatial})), "
                    f"got shape {arr.shape}."
                )
            arrays.append(np.ascontiguousarray(arr, dtype=np.float32))
        if any(a.shape[0] != arrays[0].shape[0] for a in arrays):
            raise ValueError("every image must have the same number of channels.")
        spacing = check_spacing(spacing, ndim)
        return cls(
            images=arrays,
            raters=[s.astype(np.int64) for s in stacks],
            num_classes=num_classes,
            class_names=class_names,
            spacing=spacing,
        )


def _is_case_list(raters: Sequence[Any]) -> bool:
    """Whether a list of raters means several cases (list of stacks / RaterSets) or one case."""
    first = raters[0] if len(raters) else None
    if hasattr(first, "labels"):
        return True
    try:
        return np.asarray(first).ndim >= 3
    except Exception:  # noqa: BLE001
        return False


def _as_image(image: Any, *, name: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, (str, bytes)) or image is None:
        raise TypeError(f"{name} must be a numeric array, got {describe(image)}.")
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got {describe(arr)}.")
    if arr.ndim not in (2, 3, 4):
        raise ValueError(f"{name} must be (Y, X), (Z, Y, X) or channels-first, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr.astype(np.float32, copy=False)


def as_training_data(data: Any) -> TrainingData:
    """Accept :class:`TrainingData`, ``(image, raters)`` or a ``RaterSet`` carrying its image."""
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return TrainingData.from_arrays(data[0], data[1])
    if hasattr(data, "labels") and getattr(data, "image", None) is not None:
        return TrainingData.from_arrays(data.image, data)
    raise TypeError(
        "data must be a TrainingData, an (image, raters) tuple or a RaterSet with an image, "
        f"got {describe(data)}."
    )


# ----------------------------------------------------------------------------------------------
# progress records
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainProgress:
    """One progress record yielded by :func:`train`.

    ``kind`` is ``"start"``, ``"step"`` (after every optimisation step), ``"epoch"`` (after the
    last step of an epoch, with validation metrics when validated), ``"done"`` or ``"cancelled"``.
    ``epoch`` and ``step`` count from 1; ``throughput`` is in patches per second (all members).
    """

    kind: str
    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    global_step: int
    total_steps: int
    loss: float | None = None
    val_nll: float | None = None
    val_dice: float | None = None
    throughput: float | None = None
    elapsed: float = 0.0
    checkpoint: str | None = None
    device: str = "cpu"
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain ``dict`` (for JSON lines)."""
        return dataclasses.asdict(self)

    @property
    def fraction(self) -> float:
        """Share of the run done, in ``[0, 1]``."""
        return self.global_step / self.total_steps if self.total_steps else 0.0


@dataclass
class TrainResult:
    """What :func:`train` returns (the ``StopIteration`` value / a napari worker's ``returned``)."""

    checkpoint: str | None
    best_checkpoint: str | None
    cancelled: bool
    global_step: int
    history: list[dict[str, float]]
    weights_digest: str = ""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Pick the torch device: ``"auto"`` tries CUDA, then Apple MPS, then CPU.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` or any torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the device string is invalid or the device is not available here.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise TypeError(f"device must be a string such as 'auto' or 'cuda:0', got {describe(device)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} was asked for but CUDA is not available; use 'auto' or 'cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s).")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but MPS is not available; use 'auto' or 'cpu'.")
    return dev


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(*S)`` integer labels → ``(C, *S)`` float32 one-hot."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 0).float()


def _rater_mean(raters: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean one-hot of a ``(R, *S)`` stack (the validation reference)."""
    out = np.zeros((num_classes, *raters.shape[1:]), dtype=np.float32)
    for k in range(num_classes):
        out[k] = (raters == k).mean(axis=0)
    return out


def _fused_target(
    raters: np.ndarray, num_classes: int, config: TrainConfig, spacing: tuple[float, ...] | None
) -> np.ndarray:
    """The fused soft target ``(C, *S)`` of one case (not used for ``random_rater``)."""
    from . import labels as soft_labels

    method = config.target
    if method == "mean":
        out = soft_labels.rater_mean(raters, num_classes=num_classes)
    elif method == "msvls":
        out = soft_labels.msvls(raters, num_classes=num_classes, sigma=config.svls_sigma, spacing=spacing)
    elif method == "staple":
        out = soft_labels.staple(raters, num_classes=num_classes).probabilities
    else:
        majority = soft_labels.majority_vote(raters, num_classes=num_classes)
        if method == "svls":
            out = soft_labels.svls(
                majority, num_classes=num_classes, sigma=config.svls_sigma, spacing=spacing
            )
        elif method == "label_smoothing":
            out = soft_labels.label_smoothing(majority, num_classes=num_classes, alpha=config.label_smoothing)
        else:  # onehot
            out = soft_labels.one_hot(majority, num_classes=num_classes)
    out = np.asarray(out, dtype=np.float32)
    if out.shape != (num_classes, *raters.shape[1:]):
        raise ValueError(
            f"target {method!r} gave shape {out.shape}, expected {(num_classes, *raters.shape[1:])}."
        )
    return out


@dataclass
class _Case:
    image: np.ndarray  # (Cin, *S) raw float32
    raters: np.ndarray  # (R, *S)
    target: np.ndarray | None  # (C, *S) fused target, None for random_rater


def _prepare_cases(
    data: TrainingData, config: TrainConfig, spatial_dims: int
) -> tuple[list[_Case], list[_Case]]:
    """Fused targets, slicing of volumes for 2-D training, and the train/validation split."""
    cases = []
    for image, raters in zip(data.images, data.raters):
        target = None
        if config.target != "random_rater":
            target = _fused_target(raters, data.num_classes, config, data.spacing)
        if spatial_dims == 2 and raters.ndim == 4:  # slice training on a volume
            for z in range(raters.shape[1]):
                cases.append(_Case(image[:, z], raters[:, z], None if target is None else target[:, z]))
        else:
            cases.append(_Case(image, raters, target))
    if config.val_fraction == 0:
        return cases, []
    if len(cases) >= 2:
        n_val = min(len(cases) - 1, max(1, round(config.val_fraction * len(cases))))
        return cases[:-n_val], cases[-n_val:]
    case = cases[0]
    extent = case.raters.shape[1]
    n_val = max(1, round(config.val_fraction * extent))
    if extent - n_val < 1:
        return cases, []

    def part(sl: slice) -> _Case:
        return _Case(
            case.image[:, sl], case.raters[:, sl], None if case.target is None else case.target[:, sl]
        )

    return [part(slice(0, extent - n_val))], [part(slice(extent - n_val, extent))]


def _resolve_patch_size(
    config: TrainConfig, cases: list[_Case], spatial_dims: int, divisor: int
) -> tuple[int, ...]:
    smallest = tuple(min(c.raters.shape[1 + a] for c in cases) for a in range(spatial_dims))
    if config.patch_size is not None:
        patch = tuple(config.patch_size)
        if len(patch) != spatial_dims:
            raise ValueError(
                f"patch_size {patch} must have {spatial_dims} entries for {spatial_dims}-D training."
            )
        if any(p > s for p, s in zip(patch, smallest)):
            raise ValueError(
                f"patch_size {patch} is larger than the training data {smallest}; "
                "choose a smaller patch_size."
            )
        return patch
    default = 64 if spatial_dims == 2 else 32
    patch = tuple((min(default, s) // divisor) * divisor for s in smallest)
    if min(patch) < divisor:
        hint = " or spatial_dims=2 (slice training)" if spatial_dims == 3 else ""
        raise ValueError(
            f"the training data {smallest} is too small for a U-Net that down-samples by {divisor}; "
            f"use fewer levels (shorter channels/strides){hint}."
        )
    return patch


class _PatchSampler:
    """Random training patches with targets, from one torch generator (reproducible)."""

    def __init__(
        self,
        cases: list[_Case],
        *,
        num_classes: int,
        patch_size: tuple[int, ...],
        mean: np.ndarray,
        std: np.ndarray,
        config: TrainConfig,
        generator: torch.Generator,
    ) -> None:
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.config = config
        self.generator = generator
        self.images = [
            torch.from_numpy(
                (c.image - mean.reshape(-1, *[1] * (c.image.ndim - 1)))
                / std.reshape(-1, *[1] * (c.image.ndim - 1))
            ).float()
            for c in cases
        ]
        self.raters = [torch.from_numpy(c.raters) for c in cases]
        self.targets = [None if c.target is None else torch.from_numpy(c.target) for c in cases]
        self.masks = [
            torch.from_numpy(np.any(c.image != 0, axis=0)) if config.mask_background else None for c in cases
        ]
        self.foreground = [torch.from_numpy(np.flatnonzero((c.raters > 0).any(axis=0))) for c in cases]

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def sample(self, count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        xs, ts, ms = [], [], []
        for _ in range(count):
            i = self._randint(len(self.images))
            shape = tuple(self.raters[i].shape[1:])
            fg = self.foreground[i]
            if len(fg) and self._rand() < self.config.foreground_fraction:
                centre = np.unravel_index(int(fg[self._randint(len(fg))]), shape)
                start = [
                    min(max(int(c) - p // 2, 0), s - p) for c, p, s in zip(centre, self.patch_size, shape)
                ]
            else:
                start = [self._randint(s - p + 1) for p, s in zip(self.patch_size, shape)]
            window = tuple(slice(b, b + p) for b, p in zip(start, self.patch_size))
            x = self.images[i][(slice(None), *window)]
            if self.targets[i] is None:
                rater = self._randint(self.raters[i].shape[0])
                t = _one_hot(self.raters[i][(rater, *window)], self.num_classes)
            else:
                t = self.targets[i][(slice(None), *window)]
            m = None if self.masks[i] is None else self.masks[i][window]
            if self.config.augment:
                for axis in range(len(self.patch_size)):
                    if self._rand() < 0.5:
                        x, t = x.flip(axis + 1), t.flip(axis + 1)
                        m = None if m is None else m.flip(axis)
            xs.append(x)
            ts.append(t)
            ms.append(m)
        mask = None if ms[0] is None else torch.stack(ms)
        return torch.stack(xs), torch.stack(ts), mask


def _member_loss(
    net: SegmentationNet,
    raw: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    raw = raw.float()
    if net.head == "ssn":
        parts = net.split(raw)
        return ssn_loss(
            parts["mean"],
            parts["cov_factor"],
            parts["cov_diag"],
            target,
            num_samples=config.ssn_samples,
            mask=mask,
            generator=generator,
        )
    probabilities = net.probabilities(raw)
    if config.loss == "adaptive_wing":
        return adaptive_wing_loss(probabilities, target, mask=mask)
    loss = raw.new_zeros(())
    if config.loss in ("ce", "ce_dice"):
        if net.head == "softmax":
            loss = loss + soft_cross_entropy(raw, target, mask=mask)
        else:
            loss = loss + soft_cross_entropy(probabilities, target, from_probabilities=True, mask=mask)
    if config.loss in ("dice", "ce_dice"):
        loss = loss + dice_loss(probabilities, target, mask=mask)
    return loss


def _normalise(image: np.ndarray, normalization: dict[str, list[float]]) -> np.ndarray:
    mean = np.asarray(normalization["mean"], dtype=np.float32)
    std = np.asarray(normalization["std"], dtype=np.float32)
    shape = (-1, *[1] * (image.ndim - 1))
    return (image - mean.reshape(shape)) / std.reshape(shape)


def _sliding_raw(
    net: SegmentationNet, image: torch.Tensor, *, roi_size: Sequence[int], overlap: float, sw_batch_size: int
) -> torch.Tensor:
    """Raw network output for a normalised ``(B, Cin, *S)`` batch via MONAI sliding windows."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        image,
        roi_size=list(roi_size),
        sw_batch_size=sw_batch_size,
        predictor=net,
        overlap=overlap,
        mode="gaussian",
    )


def _spatial_batches(image: np.ndarray, spatial_dims: int) -> tuple[np.ndarray, bool]:
    """``(Cin, *S)`` → a network batch: ``(1, Cin, *S)``, or ``(Z, Cin, Y, X)`` for a 2-D net on a volume."""
    if image.ndim - 1 == spatial_dims:
        return image[None], False
    return np.moveaxis(image, 1, 0), True


@torch.no_grad()
def _predict_raw_chunks(
    net: SegmentationNet, image: np.ndarray, info: dict[str, Any], device: torch.device, config: TrainConfig
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(index, raw)`` pieces of the network output on a normalised ``(Cin, *S)`` image."""
    batch, sliced = _spatial_batches(image, net.spatial_dims)
    step = 8 if sliced else 1
    for start in range(0, batch.shape[0], step):
        chunk = torch.from_numpy(np.ascontiguousarray(batch[start : start + step])).to(device)
        raw = _sliding_raw(
            net,
            chunk,
            roi_size=info["patch_size"],
            overlap=config.sw_overlap,
            sw_batch_size=config.sw_batch_size,
        )
        yield slice(start, start + step), raw.float()


def _assemble(pieces: list[torch.Tensor], sliced: bool) -> torch.Tensor:
    """Join per-chunk ``(b, K, *s)`` outputs into ``(K, *S)`` (slices go back along Z)."""
    joined = torch.cat(pieces, dim=0)
    return joined.movedim(0, 1) if sliced else joined[0]


def _evaluate(
    model: SegmentationEnsemble,
    cases: list[_Case],
    info: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
    num_classes: int,
) -> dict[str, float]:
    """Validation NLL (against the raters' mean) and mean foreground Dice (against their majority)."""
    was_training = model.training
    model.eval()
    nll_sum, voxels, dices = 0.0, 0, []
    try:
        for case in cases:
            normed = _normalise(case.image, info["normalization"])
            probs = _ensemble_probabilities(model, normed, info, device, config, num_samples=0)
            reference = torch.from_numpy(_rater_mean(case.raters, num_classes))
            nll_sum += float(-(reference * torch.log(probs.clamp_min(1e-7))).sum(0).sum())
            voxels += reference[0].numel()
            predicted = probs.argmax(0)
            truth = reference.argmax(0)
            for k in range(1, num_classes):
                p, t = predicted == k, truth == k
                denominator = int(p.sum() + t.sum())
                if denominator:
                    dices.append(2.0 * int((p & t).sum()) / denominator)
    finally:
        model.train(was_training)
    return {"val_nll": nll_sum / max(voxels, 1), "val_dice": float(np.mean(dices)) if dices else 1.0}


def _ensemble_probabilities(
    model: SegmentationEnsemble,
    normed: np.ndarray,
    info: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
    *,
    num_samples: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean class probabilities ``(C, *S)`` over ensemble members, MC-dropout passes and SSN samples."""
    total = None
    count = 0
    for net in model.members:
        _, sliced = _spatial_batches(normed, net.spatial_dims)
        passes = num_samples if (net.dropout > 0 and num_samples > 0 and net.head != "ssn") else 1
        context = mc_dropout(net) if passes > 1 else contextlib.nullcontext()
        with context:
            for _ in range(passes):
                pieces = []
                for _, raw in _predict_raw_chunks(net, normed, info, device, config):
                    if net.head == "ssn" and num_samples > 0:
                        pieces.append(_ssn_sample_mean(net, raw, num_samples, generator))
                    else:
                        pieces.append(net.probabilities(raw))
                probs = _assemble(pieces, sliced)
                total = probs if total is None else total + probs
                count += 1
    return (total / count).cpu()


def _ssn_sample_mean(
    net: SegmentationNet, raw: torch.Tensor, num_samples: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Mean softmax over ``num_samples`` logit samples of an SSN output (SSN appendix, eq. 9)."""
    parts = net.split(raw)
    total = torch.zeros_like(parts["mean"])
    chunk = 4
    drawn = 0
    while drawn < num_samples:
        m = min(chunk, num_samples - drawn)
        samples = sample_low_rank_logits(
            parts["mean"],
            parts["cov_factor"],
            parts["cov_diag"],
            num_samples=m,
            antithetic=False,
            generator=generator,
        )
        total += torch.softmax(samples, dim=2).sum(0)
        drawn += m
    return total / num_samples


def _rng_state(sampler_gen: torch.Generator, loss_gen: torch.Generator) -> dict[str, Any]:
    state = {"sampler": sampler_gen.get_state(), "loss": loss_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], sampler_gen: torch.Generator, loss_gen: torch.Generator) -> None:
    sampler_gen.set_state(state["sampler"])
    loss_gen.set_state(
        state["loss"].to(loss_gen.get_state().device) if hasattr(state["loss"], "to") else state["loss"]
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (key order), e.g. to check DDP ranks agree.

    Examples
    --------
    >>> net = build_model(spatial_dims=2, in_channels=1, num_classes=2, channels=(4, 8), strides=(2,), seed=0)
    >>> weights_digest(net) == weights_digest(build_model(spatial_dims=2, in_channels=1, num_classes=2,
    ...                                                   channels=(4, 8), strides=(2,), seed=0))
    True
    """
    import hashlib

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}.")
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _distributed() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ----------------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------------
def train(
    config: TrainConfig,
    data: TrainingData | tuple[Any, Any] | Any,
    *,
    resume: str | os.PathLike | None = None,
) -> Generator[TrainProgress, str | None, TrainResult]:
    """Train a model, yielding a :class:`TrainProgress` record after every step and epoch.

    Parameters
    ----------
    config : TrainConfig
        All settings (validated on construction).
    data : TrainingData, (image, raters) or RaterSet with an image
        The training data; see :meth:`TrainingData.from_arrays`.
    resume : str or path-like, optional
        A checkpoint to continue from (weights, optimiser, random states, step); its model
        settings must match ``config``. ``config.epochs`` may be larger than before.

    Yields
    ------
    TrainProgress
        ``"start"``, then ``"step"`` records, an ``"epoch"`` record at the end of every epoch, and
        finally ``"done"`` or ``"cancelled"`` (with the checkpoint path).

    Returns
    -------
    TrainResult
        As the generator's return value (``StopIteration.value``).

    Notes
    -----
    Send ``"cancel"`` into the generator to stop: it writes ``last.pt`` (when ``output_dir`` is
    set), yields a ``"cancelled"`` record and returns. The global torch RNG is seeded from
    ``config.seed`` (dropout draws from it).

    Examples
    --------
    >>> import numpy as np
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1,
    ...                   steps_per_epoch=2, batch_size=2, val_fraction=0.0, device="cpu")
    >>> records = list(train(cfg, (np.random.default_rng(0).random((16, 16)), raters)))
    >>> [r.kind for r in records]
    ['start', 'step', 'step', 'epoch', 'done']
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {describe(config)}.")
    data = as_training_data(data)
    spatial_dims = config.spatial_dims or data.ndim
    if spatial_dims > data.ndim:
        raise ValueError(
            f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got {data.ndim}-D raters."
        )
    device = resolve_device(config.device)
    rank, world = _distributed()
    is_main = rank == 0

    checkpoint_state = None
    if resume is not None:
        checkpoint_state = load_checkpoint(resume)
        saved = checkpoint_state["config"]
        changed = [k for k in _MODEL_FIELDS if _normal(saved.get(k)) != _normal(getattr(config, k))]
        if changed:
            raise ValueError(
                f"resume checkpoint {str(resume)!r} was trained with different model settings "
                f"{changed}; keep them equal to resume."
            )

    train_cases, val_cases = _prepare_cases(data, config, spatial_dims)
    divisor = math.prod(config.strides)
    patch_size = _resolve_patch_size(config, train_cases, spatial_dims, divisor)
    if checkpoint_state is not None:
        normalization = checkpoint_state["model"]["normalization"]
        patch_size = tuple(checkpoint_state["model"]["patch_size"])
    else:
        stacked = np.concatenate([c.image.reshape(c.image.shape[0], -1) for c in train_cases], axis=1)
        std = stacked.std(axis=1)
        normalization = {
            "mean": [float(v) for v in stacked.mean(axis=1)],
            "std": [float(v) if v > 1e-8 else 1.0 for v in std],
        }
    info = {
        "spatial_dims": spatial_dims,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "patch_size": list(patch_size),
        "normalization": normalization,
    }

    torch.manual_seed(config.seed)
    model = build_model(
        spatial_dims=spatial_dims,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        head=config.head,
        ensemble_size=config.ensemble_size,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        ssn_rank=config.ssn_rank,
        ssn_epsilon=config.ssn_epsilon,
        seed=config.seed,
    ).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    sampler_gen = torch.Generator().manual_seed(config.seed * 1000 + 7919 * rank + 1)
    loss_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + 7919 * rank + 2)
    mean_arr = np.asarray(normalization["mean"], dtype=np.float32)
    std_arr = np.asarray(normalization["std"], dtype=np.float32)
    sampler = _PatchSampler(
        train_cases,
        num_classes=data.num_classes,
        patch_size=patch_size,
        mean=mean_arr,
        std=std_arr,
        config=config,
        generator=sampler_gen,
    )

    start_step = 0
    restored_epoch_losses: list[float] = []
    best_value: float | None = None
    history: list[dict[str, float]] = []
    if checkpoint_state is not None:
        model.load_state_dict(checkpoint_state["state_dict"])
        optimizer.load_state_dict(checkpoint_state["optimizer"])
        if checkpoint_state.get("scaler"):
            scaler.load_state_dict(checkpoint_state["scaler"])
        start_step = int(checkpoint_state["global_step"])
        best_value = checkpoint_state.get("best_metric")
        history = list(checkpoint_state.get("history", []))
        restored_epoch_losses = [float(v) for v in checkpoint_state.get("epoch_losses", [])]
        if world == 1:
            _restore_rng(checkpoint_state["rng"], sampler_gen, loss_gen)
        else:
            torch.manual_seed(config.seed + start_step)

    train_model: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    steps = config.steps_per_epoch
    total_steps = config.epochs * steps
    out_dir = Path(config.output_dir) if (config.output_dir and is_main) else None
    last_path = str(out_dir / "last.pt") if out_dir else None
    best_path = str(out_dir / "best.pt") if out_dir else None
    best_written = bool(best_path and os.path.exists(best_path) and resume is not None)
    t_start = time.perf_counter()
    global_step = start_step
    epoch_losses: list[float] = restored_epoch_losses

    def record(kind: str, **kwargs: Any) -> TrainProgress:
        epoch = max(1, math.ceil(global_step / steps)) if global_step else 1
        step_in_epoch = global_step - (epoch - 1) * steps
        return TrainProgress(
            kind=kind,
            epoch=epoch,
            epochs=config.epochs,
            step=step_in_epoch,
            steps_per_epoch=steps,
            global_step=global_step,
            total_steps=total_steps,
            elapsed=time.perf_counter() - t_start,
            device=str(device),
            **kwargs,
        )

    def save(path: str | None, reason: str) -> str | None:
        if path is None:
            return None
        payload = {
            "config": config.to_dict(),
            "model": info,
            "class_names": list(data.class_names),
            "spacing": None if data.spacing is None else list(data.spacing),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": _rng_state(sampler_gen, loss_gen),
            "epoch": global_step // steps,
            "global_step": global_step,
            "best_metric": best_value,
            "history": history,
            "epoch_losses": list(epoch_losses),
            "reason": reason,
        }
        return save_checkpoint(path, payload)

    if start_step >= total_steps:
        raise ValueError(
            f"the resumed checkpoint is already at step {start_step} of {total_steps}; "
            "raise epochs to train further."
        )
    model.train()
    command = yield record("start", checkpoint=last_path, message=f"training on {device}")
    try:
        while global_step < total_steps:
            if command == "cancel":
                path = save(last_path, "cancelled")
                yield record("cancelled", checkpoint=path, message="training cancelled")
                return TrainResult(
                    path,
                    best_path if best_written else None,
                    True,
                    global_step,
                    history,
                    weights_digest(model),
                )
            t0 = time.perf_counter()
            x, t, m = sampler.sample(config.ensemble_size * config.batch_size)
            shape = (config.ensemble_size, config.batch_size)
            x = x.reshape(*shape, *x.shape[1:]).to(device, non_blocking=True)
            t = t.reshape(*shape, *t.shape[1:]).to(device, non_blocking=True)
            m = None if m is None else m.reshape(*shape, *m.shape[1:]).to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            autocast = (
                torch.autocast(device_type="cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()
            )
            with autocast:
                raw = train_model(x)
            losses = [
                _member_loss(net, raw[i], t[i], None if m is None else m[i], config, loss_gen)
                for i, net in enumerate(model.members)
            ]
            loss = torch.stack(losses).sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"the training loss became {float(loss)} at step {global_step + 1}; lower learning_rate "
                    "(or, for SSN, use mask_background / a smaller ssn_rank)."
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            value = float(loss.detach()) / config.ensemble_size
            if world > 1:
                reduced = torch.tensor([value], device=device)
                torch.distributed.all_reduce(reduced)
                value = float(reduced) / world
            global_step += 1
            epoch_losses.append(value)
            elapsed_step = time.perf_counter() - t0
            command = yield record(
                "step", loss=value, throughput=config.ensemble_size * config.batch_size * world / elapsed_step
            )
            if global_step % steps and global_step != total_steps:
                continue
            # end of epoch: validate, checkpoint, report
            epoch = global_step // steps if global_step % steps == 0 else global_step // steps + 1
            entry = {"epoch": float(epoch), "loss": float(np.mean(epoch_losses))}
            epoch_losses = []
            metrics: dict[str, float] = {}
            if is_main and val_cases and (epoch % config.val_every == 0 or global_step == total_steps):
                metrics = _evaluate(model, val_cases, info, device, config, data.num_classes)
                entry.update(metrics)
            history.append(entry)
            checkpoint = None
            if is_main:
                if metrics:
                    current = metrics[config.best_metric]
                    better = best_value is None or (
                        current > best_value if config.best_metric == "val_dice" else current < best_value
                    )
                elif not val_cases:
                    current = entry["loss"]
                    better = best_value is None or current < best_value
                else:
                    better = False
                if better:
                    best_value = float(current)
                    if best_path:
                        save(best_path, "best")
                        best_written = True
                if epoch % config.checkpoint_every == 0 and global_step != total_steps:
                    checkpoint = save(last_path, "periodic")
            command = yield record(
                "epoch",
                loss=entry["loss"],
                val_nll=metrics.get("val_nll"),
                val_dice=metrics.get("val_dice"),
                checkpoint=checkpoint,
            )
    except (GeneratorExit, KeyboardInterrupt):
        save(last_path, "cancelled")
        raise
    path = save(last_path, "final")
    yield record("done", checkpoint=path, message="training finished")
    return TrainResult(
        path, best_path if best_written else None, False, global_step, history, weights_digest(model)
    )


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


# ----------------------------------------------------------------------------------------------
# inference from a checkpoint
# ----------------------------------------------------------------------------------------------
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


def load_trained_model(checkpoint: str | os.PathLike | TrainedModel, *, device: str = "cpu") -> TrainedModel:
    """Rebuild the model stored in a checkpoint (``weights_only`` loading).

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        A ``last.pt`` / ``best.pt`` written by :func:`train` (a ``TrainedModel`` is returned as is).
    device : str
        Device to put the model on (``"auto"`` allowed).

    Returns
    -------
    TrainedModel

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
    ...                   batch_size=1, val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> load_trained_model(last.checkpoint).class_names
    ['background', 'class 1']
    """
    if isinstance(checkpoint, TrainedModel):
        return checkpoint
    state = load_checkpoint(checkpoint)
    config = TrainConfig.from_dict(state["config"])
    info = state["model"]
    dev = resolve_device(device)
    model = build_model(
        spatial_dims=info["spatial_dims"],
        in_channels=info["in_channels"],
        num_classes=info["num_classes"],
        head=config.head,
        ensemble_size=config.ensemble_size,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        dropout=config.dropout,
        ssn_rank=config.ssn_rank,
        ssn_epsilon=config.ssn_epsilon,
        seed=None,
    )
    model.load_state_dict(state["state_dict"])
    model.to(dev).eval()
    spacing = None if state.get("spacing") is None else tuple(float(s) for s in state["spacing"])
    return TrainedModel(
        model=model,
        config=config,
        class_names=list(state["class_names"]),
        spacing=spacing,
        info=info,
        device=dev,
        checkpoint=str(checkpoint),
    )


def _prediction_image(trained: TrainedModel, image: Any) -> np.ndarray:
    arr = _as_image(image, name="image")
    spatial_dims = trained.info["spatial_dims"]
    in_channels = trained.info["in_channels"]
    if in_channels == 1 and arr.ndim in (2, 3) and arr.ndim >= spatial_dims:
        arr = arr[None]
    if arr.shape[0] != in_channels or arr.ndim - 1 not in (spatial_dims, 3):
        raise ValueError(
            f"image must be (*spatial) or ({in_channels}, *spatial) with {spatial_dims}-D (or 3-D for slice "
            f"models) spatial axes for this model, got shape {arr.shape}."
        )
    return _normalise(arr, trained.info["normalization"])


def predict(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    num_samples: int | None = None,
    device: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run a trained model on an image: probabilities, argmax labels and normalised entropy.

    Parameters
    ----------
    checkpoint : str, path-like or TrainedModel
        The trained model.
    image : array_like
        ``(*S)`` or ``(in_channels, *S)``; a 2-D model runs slice by slice on a volume.
    num_samples : int, optional
        SSN: logit samples averaged (0 = softmax of the mean); MC dropout: stochastic passes
        averaged (0 = dropout off). Default ``config.predict_samples``. Ensembles always average
        their members.
    device : str, optional
        Default: the model's device.
    seed : int
        Seed of SSN / dropout sampling.

    Returns
    -------
    dict
        ``probabilities`` float32 ``(C, *S)``, ``labels`` integer ``(*S)`` (argmax),
        ``entropy`` float32 ``(*S)`` normalised by ``log C`` to ``[0, 1]``, ``class_names`` and ``spacing``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(target="random_rater", channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1,
    ...                   batch_size=1, val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> out = predict(last.checkpoint, np.ones((16, 16)))
    >>> out["probabilities"].shape, out["labels"].shape
    ((2, 16, 16), (16, 16))
    """
    trained = load_trained_model(checkpoint)
    if device is not None:
        trained.device = resolve_device(device)
        trained.model.to(trained.device)
    if num_samples is None:
        num_samples = trained.config.predict_samples
    num_samples = _int(num_samples, "num_samples", 0)
    normed = _prediction_image(trained, image)
    generator = torch.Generator(device=trained.device).manual_seed(_int(seed, "seed", 0))
    fork = torch.random.fork_rng(devices=[]) if trained.device.type == "cpu" else contextlib.nullcontext()
    with fork:
        torch.manual_seed(seed)
        probs = (
            _ensemble_probabilities(
                trained.model,
                normed,
                trained.info,
                trained.device,
                trained.config,
                num_samples=num_samples,
                generator=generator,
            )
            .numpy()
            .astype(np.float32)
        )
    num_classes = probs.shape[0]
    labels = probs.argmax(axis=0).astype(np.uint8 if num_classes <= 255 else np.int32)
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=0) / math.log(num_classes)
    return {
        "probabilities": probs,
        "labels": labels,
        "entropy": entropy.astype(np.float32),
        "class_names": trained.class_names,
        "spacing": trained.spacing,
    }


@torch.no_grad()
def predict_ssn_distribution(
    checkpoint: str | os.PathLike | TrainedModel,
    image: Any,
    *,
    member: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
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
    dict
        ``mean`` ``(C, *S)``, ``cov_factor`` ``(R, C, *S)`` and ``cov_diag`` ``(C, *S)`` (float32 numpy,
        ``cov_diag = exp(log_diag) + ε``), stitched from sliding windows; plus ``class_names`` and
        ``spacing``. Feed them to :class:`napari_seg_uncertainty.core.ssn.LowRankLogits`. For a 2-D
        model on a volume every slice is predicted separately (the factor is per slice).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> raters = np.zeros((2, 16, 16), dtype=int); raters[:, 4:12, 4:12] = 1
    >>> cfg = TrainConfig(head="ssn", loss="ssn", ssn_rank=3, ssn_samples=4, target="random_rater",
    ...                   channels=(4, 8), strides=(2,), epochs=1, steps_per_epoch=1, batch_size=1,
    ...                   val_fraction=0.0, device="cpu", output_dir=tempfile.mkdtemp())
    >>> *_, last = train(cfg, (np.ones((16, 16)), raters))
    >>> dist = predict_ssn_distribution(last.checkpoint, np.ones((16, 16)))
    >>> dist["mean"].shape, dist["cov_factor"].shape, dist["cov_diag"].shape
    ((2, 16, 16), (3, 2, 16, 16), (2, 16, 16))
    """
    trained = load_trained_model(checkpoint)
    if trained.config.head != "ssn":
        raise ValueError(
            f"checkpoint was trained with head={trained.config.head!r}; an SSN distribution "
            "needs a model trained with head='ssn'."
        )
    member = _int(member, "member", 0)
    if member >= trained.model.size:
        raise ValueError(f"member must be below the ensemble size {trained.model.size}, got {member}.")
    if device is not None:
        trained.device = resolve_device(device)
        trained.model.to(trained.device)
    normed = _prediction_image(trained, image)
    net = trained.model.members[member]
    net.eval()
    _, sliced = _spatial_batches(normed, net.spatial_dims)
    pieces = [
        raw for _, raw in _predict_raw_chunks(net, normed, trained.info, trained.device, trained.config)
    ]
    raw = torch.cat(pieces, dim=0)  # (b, K, *s)
    parts = net.split(raw)
    if sliced:  # (Z, C, Y, X) → (C, Z, Y, X); factor (Z, R, C, Y, X) → (R, C, Z, Y, X)
        mean = parts["mean"].movedim(0, 1)
        diag = parts["cov_diag"].movedim(0, 1)
        factor = parts["cov_factor"].permute(1, 2, 0, 3, 4)
    else:
        mean, diag, factor = parts["mean"][0], parts["cov_diag"][0], parts["cov_factor"][0]
    return {
        "mean": mean.cpu().numpy().astype(np.float32),
        "cov_factor": factor.cpu().numpy().astype(np.float32),
        "cov_diag": diag.cpu().numpy().astype(np.float32),
        "class_names": trained.class_names,
        "spacing": trained.spacing,
    }
