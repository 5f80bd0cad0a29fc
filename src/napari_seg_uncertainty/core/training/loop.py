"""The training loop: one generator used by the Train widget, the command line and the tests.

:func:`train` yields a :class:`TrainProgress` record after every optimization step and every epoch
and returns a :class:`TrainResult`. A :class:`Checkpointer` writes ``last.pt`` and ``best.pt``;
validation (NLL and Dice) runs on rank 0 at the end of an epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Generator, Iterable
from typing import Any

import numpy as np
import torch

from ..labels import rater_mean
from ..losses import adaptive_wing_loss, dice_loss, mask_covariance, soft_cross_entropy, ssn_loss
from ..models import SegmentationEnsemble, SegmentationNet
from .checkpointer import Checkpointer
from .config import TrainConfig
from .data import (
    Case,
    TrainingData,
)
from .inference import ensemble_probabilities
from .normalization import normalize_image
from .records import Recorder, TrainProgress, TrainResult
from .session import Session, set_up

__all__ = ["Checkpointer", "TrainProgress", "TrainResult", "train"]


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
    session = set_up(config, data, resume, split)
    state = session.state
    _check_step_memory(session)
    checkpointer = Checkpointer(session, resumed=resume is not None)
    record = Recorder(session)
    if state.global_step >= record.total_steps:
        raise ValueError(
            f"the resumed checkpoint is already at step {state.global_step} of {record.total_steps}; "
            "raise epochs to train further."
        )
    session.model.train()
    checkpointer.save_split()
    command = yield record("start", checkpoint=checkpointer.last_path, message=f"training on {session.device}")
    patches = config.ensemble_size * config.batch_size * session.world
    clock = _EpochClock()
    try:
        while state.global_step < record.total_steps:
            if command == "cancel":
                path = checkpointer.save_last("cancelled")
                yield record("cancelled", checkpoint=path, message="training cancelled")
                return checkpointer.result(path, cancelled=True)
            t0 = time.perf_counter()
            value = _step(session)
            seconds = time.perf_counter() - t0
            clock.add(seconds, patches, session.data_wait if session.cohort is not None else None)
            command = yield record("step", loss=value, throughput=patches / seconds)
            if state.global_step % config.steps_per_epoch and state.global_step != record.total_steps:
                continue
            entry, checkpoint = _end_epoch(session, checkpointer, last=state.global_step == record.total_steps)
            throughput, data_wait = clock.take()
            command = yield record(
                "epoch",
                loss=entry["loss"],
                val_nll=entry.get("val_nll"),
                val_dice=entry.get("val_dice"),
                checkpoint=checkpoint,
                throughput=throughput,
                data_wait=data_wait,
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


class _EpochClock:
    """The optimization steps of the current epoch: their patches per second and share spent waiting for data."""

    def __init__(self) -> None:
        self.seconds = self.patches = self.waiting = 0.0
        self.cohort = False

    def add(self, seconds: float, patches: int, data_wait: float | None) -> None:
        self.seconds += seconds
        self.patches += patches
        if data_wait is not None:
            self.cohort = True
            self.waiting += data_wait * seconds

    def take(self) -> tuple[float | None, float | None]:
        """``(patches per second, data-wait share or None)`` of the epoch; starts the next one."""
        if self.seconds <= 0:
            return None, None
        result = self.patches / self.seconds, (self.waiting / self.seconds if self.cohort else None)
        self.__init__()
        return result


def _check_step_memory(session: Session) -> None:
    """Refuse a batch that cannot fit in memory before the first step (names ``batch_size``)."""
    from .budget import check_batch_memory

    config, info = session.config, session.info
    check_batch_memory(
        batch_size=config.batch_size, ensemble_size=config.ensemble_size, patch_size=info["patch_size"],
        in_channels=info["in_channels"], num_classes=info["num_classes"], channels=config.channels,
        strides=config.strides, num_res_units=config.num_res_units, head=config.head, ssn_rank=config.ssn_rank,
        ssn_samples=config.ssn_samples,
    )  # fmt: skip


def _step(session: Session) -> float:
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


def _end_epoch(session: Session, checkpointer: Checkpointer, *, last: bool) -> tuple[dict[str, float], str | None]:
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
