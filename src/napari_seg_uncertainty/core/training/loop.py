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
from collections.abc import Generator
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
from .data import Case, PatchSampler, TrainingData, as_training_data, prepare_cases, resolve_patch_size
from .device import distributed_rank_world, resolve_device
from .inference import build_network, ensemble_probabilities, normalize_image

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
    sampler: PatchSampler
    val_cases: list[Case]
    state: _RunState

    @property
    def is_main(self) -> bool:
        return self.rank == 0

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
        }

    def save_last(self, reason: str) -> str | None:
        """Write ``last.pt`` (``reason``: ``"periodic"``, ``"final"`` or ``"cancelled"``); its path or None."""
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
) -> Generator[TrainProgress, str | None, TrainResult]:
    """Train a model, yielding a :class:`TrainProgress` record after every step and epoch.

    Parameters
    ----------
    config : TrainConfig
        All settings (validated on construction).
    data : TrainingData, (image, raters) or RaterSet with an image
        The training data; see :meth:`TrainingData.from_arrays`.
    resume : str or path-like, optional
        A checkpoint to continue from (weights, optimizer, random states, step); its model
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
    session = _set_up(config, data, resume)
    state = session.state
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
    path = checkpointer.save_last("final")
    yield record("done", checkpoint=path, message="training finished")
    return checkpointer.result(path, cancelled=False)


def _step(session: _Session) -> float:
    """One optimization step of every ensemble member; the mean loss per member (over ranks)."""
    config, device, state = session.config, session.device, session.state
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
def _set_up(config: TrainConfig, data: Any, resume: str | os.PathLike | None) -> _Session:
    """Check the inputs, build the model, optimizer and sampler, and restore a resumed run."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {describe(config)}.")
    data = as_training_data(data)
    spatial_dims = config.spatial_dims or data.ndim
    if spatial_dims > data.ndim:
        raise ValueError(
            f"spatial_dims={spatial_dims} needs {spatial_dims}-D data, got {data.ndim}-D raters."
        )
    device = resolve_device(config.device)
    rank, world = distributed_rank_world()
    saved = None if resume is None else _load_resume(config, resume)
    train_cases, val_cases = prepare_cases(data, config, spatial_dims)
    patch_size = resolve_patch_size(config, train_cases, spatial_dims, math.prod(config.strides))
    if saved is not None:
        normalization = saved["model"]["normalization"]
        patch_size = tuple(saved["model"]["patch_size"])
    else:
        normalization = _normalization(train_cases)
    info = {
        "spatial_dims": spatial_dims,
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "patch_size": list(patch_size),
        "normalization": normalization,
    }
    torch.manual_seed(config.seed)
    model = build_network(config, info, seed=config.seed).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    amp_dtype = None
    if config.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    sampler_gen = torch.Generator().manual_seed(config.seed * 1000 + 7919 * rank + 1)
    loss_gen = torch.Generator(device=device).manual_seed(config.seed * 1000 + 7919 * rank + 2)
    sampler = PatchSampler(
        train_cases,
        num_classes=data.num_classes,
        patch_size=patch_size,
        mean=np.asarray(normalization["mean"], dtype=np.float32),
        std=np.asarray(normalization["std"], dtype=np.float32),
        config=config,
        generator=sampler_gen,
    )
    session = _Session(
        config, data, device, rank, world, info, model, model, optimizer, scaler, amp_dtype,
        sampler_gen, loss_gen, sampler, val_cases, _RunState(),
    )  # fmt: skip
    if saved is not None:
        _restore(session, saved)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        session.train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return session


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
    cases: list[Case],
    info: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
) -> dict[str, float]:
    """Validation NLL (against the raters' mean) and mean foreground Dice (against their majority)."""
    num_classes = info["num_classes"]
    was_training = model.training
    model.eval()
    nll_sum, voxels, dices = 0.0, 0, []
    try:
        for case in cases:
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
