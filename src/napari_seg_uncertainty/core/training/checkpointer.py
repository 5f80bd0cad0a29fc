"""Writing a run's ``last.pt``, ``best.pt`` and, for a cohort, ``split.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint import save_checkpoint
from ..models import weights_digest
from .records import TrainResult
from .session import Session

__all__ = ["Checkpointer"]


class Checkpointer:
    """Writes a run's ``last.pt`` and ``best.pt`` (rank 0 with an ``output_dir`` only).

    Parameters
    ----------
    session : Session
        The run whose model, optimizer and random states are saved.
    resumed : bool
        The run continues from a checkpoint: an existing ``best.pt`` counts as written.
    """

    def __init__(self, session: Session, *, resumed: bool) -> None:
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

    def save_split(self) -> str | None:
        """Write the case-level split of a cohort run as ``split.json`` beside the checkpoints.

        Done once the folder is accepted (no earlier run there, or resuming / ``overwrite``), so a
        run from the command line, the Train dock or a script leaves the same record of which cases
        trained, validated and were held out. Returns its path, or None (array data, no
        ``output_dir``, not rank 0).
        """
        cohort = self._session.cohort
        if self.last_path is None or cohort is None:
            return None
        from .._atomic import atomic_write

        path = Path(self.last_path).with_name("split.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, overwrite=True) as temporary:
            temporary.write_text(json.dumps(cohort["split"], indent=2) + "\n")
        return str(path)

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
