"""The training loop: one generator used by the Train widget, the command line and the tests.

:func:`train` yields a :class:`TrainProgress` record after every optimization step and every epoch
and returns a :class:`TrainResult`. A :class:`Checkpointer` writes ``last.pt`` and ``best.pt``;
validation (NLL and Dice) runs on rank 0 at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import describe
from ..checkpoint import load_checkpoint, save_checkpoint
from ..labels import rater_mean
from ..losses import adaptive_wing_loss, dice_loss, mask_covariance, soft_cross_entropy, ssn_loss
from ..models import SegmentationEnsemble, SegmentationNet, weights_digest
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
from .inference import build_network, ensemble_probabilities
from .normalization import normalization_parameters, normalize_image

__all__ = ["Checkpointer", "TrainProgress", "TrainResult", "train"]


# ----------------------------------------------------------------------------------------------
# records
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainProgress:
    """One progress record yielded by :func:`train`.

    ``kind`` is ``"start"``, ``"step"`` (after every optimization step), ``"epoch"`` (after the
    last step of an epoch, with validation metrics when validated), ``"done"`` or ``"cancelled"``.
    ``epoch`` and ``step`` count from 1; ``throughput`` is in patches per second (all members).
    Cohort training adds ``cases_seen`` (training cases read so far, all ranks) and ``data_wait``
    (share of the last step's time spent waiting for the loader, 0…1); both are None otherwise.
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
    cases_seen: int | None = None
    data_wait: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain ``dict`` (for JSON lines)."""
        return dataclasses.asdict(self)

    @property
    def fraction(self) -> float:
        """Share of the run done, in ``[0, 1]``."""
        return self.global_step / self.total_steps if self.total_steps else 0.0


@dataclass
class TrainResult:
    """What :func:`train` returns (the ``StopIteration`` value / a napari worker's ``returned``).

    Attributes
    ----------
    checkpoint : str or None
        The last checkpoint written (``last.pt``), None without ``output_dir``.
    best_checkpoint : str or None
        ``best.pt`` when one was written.
    cancelled : bool
        Whether the run was cancelled before its last step.
    global_step : int
        Optimization steps done.
    history : list of dict
        One entry per epoch: ``epoch``, ``loss`` and the validation metrics when validated.
    weights_digest : str
        SHA-256 of the final weights (:func:`~napari_seg_uncertainty.core.models.weights_digest`).
    """

    checkpoint: str | None
    best_checkpoint: str | None
    cancelled: bool
    global_step: int
    history: list[dict[str, float]]
    weights_digest: str = ""


@dataclass
class _RunState:
    """The progress of a run: what a checkpoint stores besides weights and optimizer."""

    global_step: int = 0
    best_value: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)


@dataclass
class _Session:
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
    state: _RunState
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


class Checkpointer:
    """Writes a run's ``last.pt`` and ``best.pt`` (rank 0 with an ``output_dir`` only).

    Parameters
    ----------
    session : _Session
        The run whose model, optimizer and random states are saved.
    resumed : bool
        The run continues from a checkpoint: an existing ``best.pt`` counts as written.
    """

    def __init__(self, session: _Session, *, resumed: bool) -> None:
        self._session = session
        config = session.config
        out_dir = Path(config.output_dir) if (config.output_dir and session.is_main) else None
        self.last_path = str(out_dir / "last.pt") if out_dir else None
        self.best_path = str(out_dir / "best.pt") if out_dir else None
        if not resumed and not config.overwrite:
            for path in (self.last_path, self.best_path):
                if path and os.path.exists(path):
                    raise FileExistsError(
                        f"{path!r} holds the checkpoint of an earlier run; training into {str(out_dir)!r} "
                        "would replace it. Choose another output_dir, resume from it, or set overwrite=True "
                        "(--overwrite on the command line) to replace it."
                    )
        self.best_written = bool(self.best_path and os.path.exists(self.best_path) and resumed)

    @property
    def best_checkpoint(self) -> str | None:
        """``best.pt`` once written, else None."""
        return self.best_path if self.best_written else None

    def _payload(self, reason: str) -> dict[str, Any]:
        s = self._session
        state = s.state
        return {
            "config": s.config.to_dict(),
            "model": s.info,
            "class_names": list(s.data.class_names),
            "spacing": None if s.data.spacing is None else list(s.data.spacing),
            "state_dict": {k: v.detach().cpu() for k, v in s.model.state_dict().items()},
            "optimizer": s.optimizer.state_dict(),
            "scaler": s.scaler.state_dict() if s.scaler.is_enabled() else {},
            "rng": s.rng_state(),
            "epoch": state.global_step // s.config.steps_per_epoch,
            "global_step": state.global_step,
            "best_metric": state.best_value,
            "history": state.history,
            "epoch_losses": list(state.epoch_losses),
            "reason": reason,
            "cohort": s.cohort,
        }

    def save_last(self, reason: str) -> str | None:
        """Write ``last.pt``; its path or None.

        ``reason`` is ``"periodic"``, ``"final"``, ``"cancelled"`` or ``"error"``.
        """
        if self.last_path is None:
            return None
        return save_checkpoint(self.last_path, self._payload(reason))

    def save_best(self) -> None:
        """Write ``best.pt``."""
        if self.best_path is not None:
            save_checkpoint(self.best_path, self._payload("best"))
            self.best_written = True

    def result(self, path: str | None, *, cancelled: bool) -> TrainResult:
        """The run's :class:`TrainResult` with ``path`` as its last checkpoint."""
        state = self._session.state
        return TrainResult(
            path, self.best_checkpoint, cancelled, state.global_step, state.history,
            weights_digest(self._session.model),
        )  # fmt: skip


class _Recorder:
    """Makes :class:`TrainProgress` records with the run's counters and clock."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        self._start = time.perf_counter()
        self.total_steps = session.config.epochs * session.config.steps_per_epoch

    def __call__(self, kind: str, **kwargs: Any) -> TrainProgress:
        steps = self._session.config.steps_per_epoch
        global_step = self._session.state.global_step
        epoch = max(1, math.ceil(global_step / steps)) if global_step else 1
        if self._session.cohort is not None:
            kwargs.setdefault("cases_seen", global_step * self._session.cases_per_step * self._session.world)
            if kind == "step":
                kwargs.setdefault("data_wait", self._session.data_wait)
        return TrainProgress(
            kind=kind,
            epoch=epoch,
            epochs=self._session.config.epochs,
            step=global_step - (epoch - 1) * steps,
            steps_per_epoch=steps,
            global_step=global_step,
            total_steps=self.total_steps,
            elapsed=time.perf_counter() - self._start,
            device=str(self._session.device),
            **kwargs,
        )


# ----------------------------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------------------------
def train(
    config: TrainConfig,
    data: TrainingData | tuple[Any, Any] | Any,
    *,
    resume: str | os.PathLike | None = None,
    split: dict[str, list[str]] | str | None = None,
) -> Generator[TrainProgress, str | None, TrainResult]:
    """Train a model, yielding a :class:`TrainProgress` record after every step and epoch.

    Parameters
    ----------
    config : TrainConfig
        All settings (validated on construction).
    data : TrainingData, (image, raters), RaterSet with an image, or Cohort
        The training data; see :meth:`TrainingData.from_arrays`. A
        :class:`~napari_seg_uncertainty.core.cohort.Cohort` is streamed from disk
        (:mod:`~napari_seg_uncertainty.core.training.streaming`): patches from the ``"train"``
        cases only, validation on the ``"val"`` cases, read one at a time.
    resume : str or path-like, optional
        A checkpoint to continue from (weights, optimizer, random states, step); its model
        settings must match ``config``. ``config.epochs`` may be larger than before. A cohort run
        resumes mid-epoch with exactly the patches an uninterrupted run would draw, and needs the
        same split.
    split : dict, str or None
        Cohort only: the case-level split, resolved with ``cohort.resolve_split(split,
        seed=config.seed)``; None: ``cohort.split(val=config.val_fraction,
        test=config.test_fraction, seed=config.seed)``.

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
    set), yields a ``"cancelled"`` record and returns; ``gen.close()`` writes it without the last
    record. The global torch RNG is seeded from ``config.seed`` (dropout draws from it).

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
    session = _set_up(config, data, resume, split)
    state = session.state
    _check_step_memory(session)
    checkpointer = Checkpointer(session, resumed=resume is not None)
    record = _Recorder(session)
    if state.global_step >= record.total_steps:
        raise ValueError(
            f"the resumed checkpoint is already at step {state.global_step} of {record.total_steps}; "
            "raise epochs to train further."
        )
    session.model.train()
    command = yield record("start", checkpoint=checkpointer.last_path, message=f"training on {session.device}")
    try:
        while state.global_step < record.total_steps:
            if command == "cancel":
                path = checkpointer.save_last("cancelled")
                yield record("cancelled", checkpoint=path, message="training cancelled")
                return checkpointer.result(path, cancelled=True)
            t0 = time.perf_counter()
            value = _step(session)
            patches = config.ensemble_size * config.batch_size * session.world
            command = yield record("step", loss=value, throughput=patches / (time.perf_counter() - t0))
            if state.global_step % config.steps_per_epoch and state.global_step != record.total_steps:
                continue
            entry, checkpoint = _end_epoch(session, checkpointer, last=state.global_step == record.total_steps)
            command = yield record(
                "epoch",
                loss=entry["loss"],
                val_nll=entry.get("val_nll"),
                val_dice=entry.get("val_dice"),
                checkpoint=checkpoint,
            )
    except (GeneratorExit, KeyboardInterrupt):
        checkpointer.save_last("cancelled")
        raise
    except Exception:
        # CUDA out of memory, a diverging loss, a failing loader: keep what was trained so far
        # (reason "error"), also before the first periodic checkpoint, then let the error through.
        with contextlib.suppress(Exception):
            checkpointer.save_last("error")
        raise
    finally:
        session.close()  # a cohort loader's worker processes: at the end, on cancel, on errors
    path = checkpointer.save_last("final")
    yield record("done", checkpoint=path, message="training finished")
    return checkpointer.result(path, cancelled=False)


def _check_step_memory(session: _Session) -> None:
    """Refuse a batch that cannot fit in memory before the first step (names ``batch_size``)."""
    from .budget import check_batch_memory

    config, info = session.config, session.info
    check_batch_memory(
        batch_size=config.batch_size, ensemble_size=config.ensemble_size, patch_size=info["patch_size"],
        in_channels=info["in_channels"], num_classes=info["num_classes"], channels=config.channels,
        strides=config.strides, num_res_units=config.num_res_units, head=config.head, ssn_rank=config.ssn_rank,
        ssn_samples=config.ssn_samples,
    )  # fmt: skip


def _step(session: _Session) -> float:
    """One optimization step of every ensemble member; the mean loss per member (over ranks)."""
    config, device, state = session.config, session.device, session.state
    t_start = time.perf_counter()
    x, t, m = session.sampler.sample(config.ensemble_size * config.batch_size)
    shape = (config.ensemble_size, config.batch_size)
    x = x.reshape(*shape, *x.shape[1:]).to(device, non_blocking=True)
    t = t.reshape(*shape, *t.shape[1:]).to(device, non_blocking=True)
    m = None if m is None else m.reshape(*shape, *m.shape[1:]).to(device, non_blocking=True)
    session.optimizer.zero_grad(set_to_none=True)
    autocast = (
        torch.autocast(device_type="cuda", dtype=session.amp_dtype)
        if session.amp_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        raw = session.train_model(x)
    losses = [
        member_loss(net, raw[i], t[i], None if m is None else m[i], config, session.loss_gen)
        for i, net in enumerate(session.model.members)
    ]
    loss = torch.stack(losses).sum()
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {float(loss)} at step {state.global_step + 1}; lower learning_rate "
            "(or, for SSN, use background_mask='covariance' / a smaller ssn_rank)."
        )
    session.scaler.scale(loss).backward()
    session.scaler.step(session.optimizer)
    session.scaler.update()
    value = float(loss.detach()) / config.ensemble_size
    if session.world > 1:
        reduced = torch.tensor([value], device=device)
        torch.distributed.all_reduce(reduced)
        value = float(reduced) / session.world
    state.global_step += 1
    state.epoch_losses.append(value)
    if session.cohort is not None:
        elapsed = time.perf_counter() - t_start
        session.data_wait = min(1.0, session.sampler.last_wait / elapsed) if elapsed > 0 else 0.0
    return value


def _end_epoch(session: _Session, checkpointer: Checkpointer, *, last: bool) -> tuple[dict[str, float], str | None]:
    """Validate, pick the best checkpoint and write ``last.pt`` when due; the history entry and that path."""
    config, state = session.config, session.state
    steps = config.steps_per_epoch
    epoch = math.ceil(state.global_step / steps)
    entry = {"epoch": float(epoch), "loss": float(np.mean(state.epoch_losses))}
    state.epoch_losses = []
    metrics: dict[str, float] = {}
    if session.is_main and session.val_cases and (epoch % config.val_every == 0 or last):
        metrics = evaluate(session.model, session.val_cases, session.info, session.device, config)
        entry.update(metrics)
    state.history.append(entry)
    if not session.is_main:
        return entry, None
    if metrics:
        current = metrics[config.best_metric]
        better = state.best_value is None or (
            current > state.best_value if config.best_metric == "val_dice" else current < state.best_value
        )
    elif not session.val_cases:
        current = entry["loss"]
        better = state.best_value is None or current < state.best_value
    else:
        better = False
    if better:
        state.best_value = float(current)
        checkpointer.save_best()
    checkpoint = None
    if epoch % config.checkpoint_every == 0 and not last:
        checkpoint = checkpointer.save_last("periodic")
    return entry, checkpoint


# ----------------------------------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------------------------------
def _set_up(
    config: TrainConfig, data: Any, resume: str | os.PathLike | None, split: Any = None
) -> _Session:
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
        raise ValueError(
            f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got {data.ndim}-D raters."
        )
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
    session = _Session(
        config, data, device, rank, world, info, model, model, optimizer, scaler, amp_dtype,
        sampler_gen, loss_gen, sampler, val_cases, _RunState(),
    )  # fmt: skip
    return _finish_set_up(session, saved)


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


def _finish_set_up(session: _Session, saved: dict[str, Any] | None) -> _Session:
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


def _set_up_cohort(config: TrainConfig, cohort: Any, resume: str | os.PathLike | None, split: Any) -> _Session:
    """The session of a cohort run: split by case, streamed training patches, validation case by case."""
    from .streaming import CohortPatchLoader, StreamedCases, cohort_normalization
    from .target_cache import TargetCache

    if split is None:
        split = cohort.split(val=config.val_fraction, test=config.test_fraction, seed=config.seed)
    else:
        split = cohort.resolve_split(split, seed=config.seed)
    split = {k: list(split.get(k, [])) for k in ("train", "val", "test")}
    if not split["train"]:
        raise ValueError("the split has no training case; give the cohort more cases or smaller val/test shares.")
    if cohort.channels < 1:
        raise ValueError(
            f"the cohort from {cohort.source!r} has no image channels; training needs an image for every case "
            "(give each case an image file, or an 'image' column in the manifest)."
        )
    spatial_dims = config.spatial_dims or cohort.ndim
    if spatial_dims > cohort.ndim:
        raise ValueError(f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got a {cohort.ndim}-D cohort.")
    device = resolve_device(config.device)
    rank, world = distributed_rank_world()
    saved = None if resume is None else _load_resume(config, resume)
    if saved is not None:
        previous = (saved.get("cohort") or {}).get("split")
        if previous is None:
            raise ValueError(
                f"resume checkpoint {str(resume)!r} was not trained on a cohort; resume it with the data it "
                "was trained on."
            )
        if {k: list(previous.get(k, [])) for k in split} != split:
            raise ValueError(
                f"resume checkpoint {str(resume)!r} was trained with a different split of the cohort "
                f"(train {len(previous.get('train', []))} / val {len(previous.get('val', []))} / test "
                f"{len(previous.get('test', []))} cases); resume with the same split (and seed)."
            )
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
    session = _Session(
        config, data, device, rank, world, info, model, model, optimizer, scaler, amp_dtype,
        sampler_gen, loss_gen, loader, val_cases, _RunState(), {**cohort.to_dict(), "split": split},
    )  # fmt: skip
    try:
        return _finish_set_up(session, saved)
    except BaseException:
        loader.close()
        raise


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


def _restore(session: _Session, saved: dict[str, Any]) -> None:
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


# ----------------------------------------------------------------------------------------------
# loss and validation
# ----------------------------------------------------------------------------------------------
def member_loss(
    net: SegmentationNet,
    raw: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
    config: TrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """The training loss of one ensemble member on its batch ``raw`` ``(B, outputs, *S)``.

    ``mask`` ``(B, *S)`` is the background mask (None with ``background_mask="none"``): with
    ``"covariance"`` it zeroes the SSN covariance and every voxel stays in the likelihood, with
    ``"likelihood"`` the masked voxels are left out of the loss.
    """
    raw = raw.float()
    if net.head == "ssn":
        parts = net.ssn_parameters(raw)
        factor, diag = parts.cov_factor, parts.cov_diag
        if mask is not None and config.background_mask == "covariance":
            factor, diag = mask_covariance(factor, diag, mask, eps=net.ssn_eps)
            mask = None
        return ssn_loss(
            parts.mean, factor, diag, target, num_samples=config.ssn_samples, mask=mask, generator=generator
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


def evaluate(
    model: SegmentationEnsemble,
    cases: Iterable[Case],
    info: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
) -> dict[str, float]:
    """Validation NLL (against the raters' mean) and mean foreground Dice (against their majority).

    ``cases`` may be any iterable (a cohort's validation cases are read one at a time).
    """
    num_classes = info["num_classes"]
    was_training = model.training
    model.eval()
    nll_sum, voxels, dices = 0.0, 0, []
    try:
        for case in cases:
            normed = case.normed if getattr(case, "normed", None) is not None else None
            if normed is None:
                normed = normalize_image(case.image, info["normalization"])
            probs = ensemble_probabilities(model, normed, info, device, config, num_samples=0)
            reference = torch.from_numpy(rater_mean(case.raters, num_classes=num_classes))
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
