"""Setting a training run up: the model, optimizer, data (arrays or a streamed cohort) and a resumed state."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import describe
from ..checkpoint import load_checkpoint
from ..models import SegmentationEnsemble
from .config import MODEL_FIELDS, TrainConfig
from .data import (
    Case,
    PatchSampler,
    TrainingData,
    as_training_data,
    prepare_cases,
    resolve_patch_size,
    resolve_patch_size_for_shapes,
)
from .device import distributed_rank_world, resolve_device
from .inference import build_network
from .normalization import normalization_parameters

__all__ = ["RunState", "Session", "set_up"]


@dataclass
class RunState:
    """The progress of a run: what a checkpoint stores besides weights and optimizer."""

    global_step: int = 0
    best_value: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


@dataclass
class Session:
    """Everything :func:`train` sets up before the first step."""

    config: TrainConfig
    data: TrainingData
    device: torch.device
    rank: int
    world: int
    info: dict[str, Any]
    model: SegmentationEnsemble
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    sampler_gen: torch.Generator
    loss_gen: torch.Generator
    sampler: PatchSampler | Any  # a CohortPatchLoader for cohort training
    val_cases: list[Case] | Iterable[Case]
    state: RunState
    cohort: dict[str, Any] | None = None  # {"source", "class_names", "target_spacing", "split"}
    data_wait: float | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cases_per_step(self) -> int:
        """Training cases one step reads on one rank (0 without a cohort)."""
        return int(getattr(self.sampler, "cases_per_step", 0)) if self.cohort is not None else 0

    def close(self) -> None:
        """Shut the cohort loader's worker processes down (nothing to do for array data)."""
        close = getattr(self.sampler, "close", None)
        if close is not None:
            close()

    def rng_state(self) -> dict[str, Any]:
        state = {
            "sampler": self.sampler_gen.get_state(),
            "loss": self.loss_gen.get_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore_rng(self, state: dict[str, Any]) -> None:
        self.sampler_gen.set_state(state["sampler"])
        loss = state["loss"]
        self.loss_gen.set_state(loss.to(self.loss_gen.get_state().device) if hasattr(loss, "to") else loss)
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            with contextlib.suppress(Exception):
                torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------------------
def set_up(config: TrainConfig, data: Any, resume: str | os.PathLike | None, split: Any = None) -> Session:
    """Check the inputs, build the model, optimizer and sampler, and restore a resumed run."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {describe(config)}.")
    if _is_cohort(data):
        return _set_up_cohort(config, data, resume, split)
    if split is not None:
        raise ValueError(
            f"split applies to cohort training only (a Cohort as data), got split={describe(split)} with "
            f"{describe(data)}."
        )
    data = as_training_data(data)
    spatial_dims = config.spatial_dims or data.ndim
    if spatial_dims > data.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got {data.ndim}-D raters.")
    device = resolve_device(config.device)
    rank, world = distributed_rank_world()
    saved = None if resume is None else _load_resume(config, resume)
    if saved is not None:
        normalization = saved["model"]["normalization"]
    elif config.normalization == "dataset":
        normalization = None  # from the training cases, below
    else:
        normalization = normalization_parameters(config.normalization, clip_percentiles=config.clip_percentiles)
    train_cases, val_cases = prepare_cases(data, config, spatial_dims, normalization)
    patch_size = resolve_patch_size(config, train_cases, spatial_dims, math.prod(config.strides))
    if saved is not None:
        patch_size = tuple(saved["model"]["patch_size"])
    elif normalization is None:
        normalization = {"mode": "dataset", **_normalization(train_cases)}
    info = {
        "spatial_dims": spatial_dims,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "patch_size": list(patch_size),
        "normalization": normalization,
    }
    model, optimizer, amp_dtype, scaler, sampler_gen, loss_gen = _build(config, info, device, rank)
    dataset_mode = normalization.get("mode", "dataset") == "dataset"
    sampler = PatchSampler(
        train_cases,
        num_classes=data.num_classes,
        patch_size=patch_size,
        mean=np.asarray(normalization["mean"] if dataset_mode else [0.0], dtype=np.float32),
        std=np.asarray(normalization["std"] if dataset_mode else [1.0], dtype=np.float32),
        config=config,
        generator=sampler_gen,
        normalization=normalization,
    )
    session = Session(
        config, data, device, rank, world, info, model, model, optimizer, scaler, amp_dtype,
        sampler_gen, loss_gen, sampler, val_cases, RunState(),
    )  # fmt: skip
    return _finishset_up(session, saved)


def _build(config: TrainConfig, info: dict[str, Any], device: torch.device, rank: int) -> tuple[Any, ...]:
    """Model, optimizer, AMP dtype, grad scaler and the sampler / loss generators (in this order of seeding)."""
    torch.manual_seed(config.seed)
    model = build_network(config, info, seed=config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    sampler_gen = torch.Generator().manual_seed(config.seed * 1000 + 7919 * rank + 1)
    loss_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + 7919 * rank + 2)
    return model, optimizer, amp_dtype, scaler, sampler_gen, loss_gen


def _finishset_up(session: Session, saved: dict[str, Any] | None) -> Session:
    """Restore a resumed run and wrap the model for DDP."""
    if saved is not None:
        _restore(session, saved)
    if session.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device = session.device
        session.train_model = DistributedDataParallel(
            session.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return session


def _is_cohort(data: Any) -> bool:
    from ..cohort import Cohort

    return isinstance(data, Cohort)


@dataclass
class _CohortData:
    """What the checkpoints need of a cohort (in place of a TrainingData)."""

    class_names: list[str]
    spacing: tuple[float, ...] | None
    num_classes: int
    in_channels: int
    ndim: int


def _set_up_cohort(config: TrainConfig, cohort: Any, resume: str | os.PathLike | None, split: Any) -> Session:
    """The session of a cohort run: split by case, streamed training patches, validation case by case."""
    from .streaming import CohortPatchLoader, StreamedCases, cohort_normalization
    from .target_cache import TargetCache

    split = _cohort_split(config, cohort, split)
    spatial_dims = config.spatial_dims or cohort.ndim
    if spatial_dims > cohort.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got a {cohort.ndim}-D cohort.")
    device = resolve_device(config.device)
    rank, world = distributed_rank_world()
    saved = None if resume is None else _load_resume(config, resume)
    if saved is not None:
        _check_resume_split(saved, resume, split)
    class_names = list(cohort.class_names) if cohort.class_names else None
    num_classes = len(class_names) if class_names else cohort.num_classes()
    if class_names is None:
        class_names = ["background"] + [f"class {k}" for k in range(1, num_classes)]
    if saved is not None:
        normalization = saved["model"]["normalization"]
        patch_size = tuple(saved["model"]["patch_size"])
    else:
        normalization = cohort_normalization(cohort, split["train"], config)
        patch_size = resolve_patch_size_for_shapes(
            config, [_case_shape(cohort, c)[-spatial_dims:] for c in split["train"]], spatial_dims,
            math.prod(config.strides),
        )  # fmt: skip
    target_spacing = None if cohort.target_spacing is None else tuple(float(s) for s in cohort.target_spacing)
    data = _CohortData(class_names, target_spacing, num_classes, cohort.channels, cohort.ndim)
    info = {
        "spatial_dims": spatial_dims,
        "in_channels": cohort.channels,
        "num_classes": num_classes,
        "patch_size": list(patch_size),
        "normalization": normalization,
    }
    model, optimizer, amp_dtype, scaler, sampler_gen, loss_gen = _build(config, info, device, rank)
    cache = None
    if config.target != "random_rater":
        cache = TargetCache(_target_cache_dir(config), config, num_classes=num_classes, target_spacing=target_spacing)
    loader = CohortPatchLoader(
        cohort,
        split["train"],
        config=config,
        num_classes=num_classes,
        patch_size=patch_size,
        normalization=normalization,
        target_cache=cache,
        patches_per_step=config.ensemble_size * config.batch_size,
        rank=rank,
        world=world,
        start_step=0 if saved is None else int(saved["global_step"]),
        pin_memory=device.type == "cuda",
    )
    val_cases = StreamedCases(cohort, split["val"])
    session = Session(
        config, data, device, rank, world, info, model, model, optimizer, scaler, amp_dtype,
        sampler_gen, loss_gen, loader, val_cases, RunState(), {**cohort.to_dict(), "split": split},
    )  # fmt: skip
    try:
        return _finishset_up(session, saved)
    except BaseException:
        loader.close()
        raise


def _cohort_split(config: TrainConfig, cohort: Any, split: Any) -> dict[str, list[str]]:
    """The run's case-level split (from the config's fractions unless given), checked for a training case."""
    from ..cohort.splits import SPLIT_KEYS

    if split is None:
        split = cohort.split(val=config.val_fraction, test=config.test_fraction, seed=config.seed)
    else:
        split = cohort.resolve_split(split, seed=config.seed)
    split = {k: list(split.get(k, [])) for k in SPLIT_KEYS}
    if not split["train"]:
        raise ValueError("the split has no training case; give the cohort more cases or smaller val/test shares.")
    if cohort.channels < 1:
        raise ValueError(
            f"the cohort from {cohort.source!r} has no image channels; training needs an image for every case "
            "(give each case an image file, or an 'image' column in the manifest)."
        )
    return split


def _check_resume_split(saved: dict[str, Any], resume: str | os.PathLike, split: dict[str, list[str]]) -> None:
    """Refuse to resume a checkpoint that was not trained on a cohort, or on another split of it."""
    previous = (saved.get("cohort") or {}).get("split")
    if previous is None:
        raise ValueError(
            f"resume checkpoint {str(resume)!r} was not trained on a cohort; resume it with the data it "
            "was trained on."
        )
    if {k: list(previous.get(k, [])) for k in split} != split:
        raise ValueError(
            f"resume checkpoint {str(resume)!r} was trained with a different split of the cohort: "
            f"{_split_difference(previous, split)}; resume with the same split (and seed), e.g. the "
            "run's split.json."
        )


def _split_difference(before: dict[str, Any], now: dict[str, list[str]]) -> str:
    """Which cases moved between two splits, in words (at most three named per part)."""
    parts = []
    for name in ("train", "val", "test"):
        old, new = set(before.get(name, [])), set(now.get(name, []))
        for verb, ids in (("now in", new - old), ("no longer in", old - new)):
            if ids:
                shown = ", ".join(repr(i) for i in sorted(ids)[:3]) + (" …" if len(ids) > 3 else "")
                parts.append(f"{len(ids)} case(s) {verb} {name} ({shown})")
    if not parts:  # the same cases in another order
        return "the same cases in a different order"
    return "; ".join(parts)


def _case_shape(cohort: Any, case_id: str) -> tuple[int, ...]:
    """A case's spatial shape from its header, after resampling to ``cohort.target_spacing`` when set."""
    info = cohort[case_id]
    if cohort.target_spacing is None:
        return tuple(info.shape)
    from ..cohort.resample import resampled_shape

    return resampled_shape(info.shape, info.spacing, cohort.target_spacing)


def _target_cache_dir(config: TrainConfig) -> str:
    """``target_cache_dir``, else ``<output_dir>/cache``, else a new temporary folder."""
    if config.target_cache_dir is not None:
        return config.target_cache_dir
    if config.output_dir is not None:
        return str(Path(config.output_dir) / "cache")
    import tempfile

    return tempfile.mkdtemp(prefix="napari-seg-uncertainty-targets-")


def _load_resume(config: TrainConfig, resume: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint to resume from, after checking that its model settings equal ``config``'s."""
    saved = load_checkpoint(resume)
    previous = saved["config"]
    changed = [k for k in MODEL_FIELDS if _plain(previous.get(k)) != _plain(getattr(config, k))]
    if changed:
        raise ValueError(
            f"resume checkpoint {str(resume)!r} was trained with different model settings "
            f"{changed}; keep them equal to resume."
        )
    return saved


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _normalization(cases: list[Case]) -> dict[str, list[float]]:
    """Per-channel mean and standard deviation (1 where constant) of the training images."""
    stacked = np.concatenate([c.image.reshape(c.image.shape[0], -1) for c in cases], axis=1)
    std = stacked.std(axis=1)
    return {
        "mean": [float(v) for v in stacked.mean(axis=1)],
        "std": [float(v) if v > 1e-8 else 1.0 for v in std],
    }


def _restore(session: Session, saved: dict[str, Any]) -> None:
    """Continue a run from a checkpoint: weights, optimizer, scaler, counters and random states."""
    session.model.load_state_dict(saved["state_dict"])
    session.optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        session.scaler.load_state_dict(saved["scaler"])
    state = session.state
    state.global_step = int(saved["global_step"])
    state.best_value = saved.get("best_metric")
    state.history = list(saved.get("history", []))
    state.epoch_losses = [float(v) for v in saved.get("epoch_losses", [])]
    if session.world == 1:
        session.restore_rng(saved["rng"])
    else:
        torch.manual_seed(session.config.seed + state.global_step)
