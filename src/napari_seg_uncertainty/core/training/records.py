"""Progress records of a training run: what :func:`~.loop.train` yields and returns."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["TrainProgress", "TrainResult"]


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


class Recorder:
    """Makes :class:`TrainProgress` records with the run's counters and clock."""

    def __init__(self, session: Session) -> None:
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
