"""The Guide's queue of actions: each runs on its own event-loop turn, or waits for a widget's signal.

:class:`StepQueue` is mixed into :class:`~napari_seg_uncertainty.widgets.guide.WorkflowGuide`. A step is a
list of ``(description, action)`` pairs. An action that starts a widget's work (:meth:`StepQueue._work`)
connects to the widget's ``computed`` and ``failed`` signals before calling its public start method and
returns :data:`WAITING`; the queue goes on when ``computed`` arrives, and stops with a message naming the
step when ``failed`` does, when nothing started, or when the step takes longer than
:data:`STEP_TIMEOUT_S`. Nothing is polled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ._common import show_error
from ._guide_docking import alive
from ._guide_steps import STEP_BY_KEY, STEPS

__all__ = ["STEP_TIMEOUT_S", "WAITING", "Action", "StepQueue"]

#: Longest a step may take before the Guide gives up waiting (seconds).
STEP_TIMEOUT_S = 1800.0
#: What an action returns when it has started work: the queue goes on when that work signals its end.
WAITING = object()
#: A queued action: (status text, action). An action returns :data:`WAITING` or anything else (done).
Action = tuple[str, Callable[[], Any]]


class StepQueue:
    """Runs the Guide's actions in order (mixed into ``WorkflowGuide``)."""

    native: Any
    running: str | None
    _queue: list[Action]
    _step_key: str | None
    _status: Any
    _timer: Any
    _deadline: Any
    _waiting_on: Any
    _accept: Callable[[Any], bool] | None
    _stepping: bool
    _wait_loops: list[Any]
    _load: Any
    _run_all: Any
    _buttons: dict[str, Any]

    def _done_message(self) -> str:
        raise NotImplementedError

    def wait(self, timeout_s: float = STEP_TIMEOUT_S) -> None:
        """Return when the Guide has finished what it is running (Qt events run meanwhile)."""
        from qtpy.QtCore import QEventLoop, QTimer

        if self.running is None:
            return
        loop = QEventLoop()
        self._wait_loops.append(loop)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        try:
            loop.exec()
        finally:
            self._wait_loops.remove(loop)

    @property
    def busy(self) -> bool:
        """Whether a step (or *Run all steps*, or loading) is running."""
        return self.running is not None

    # the queue --------------------------------------------------------------------------------------
    def _step_words(self, key: str | None) -> str:
        """"step 3 of 7" for step ``key``."""
        keys = [step.key for step in STEPS]
        return f"step {keys.index(key) + 1} of {len(keys)}" if key in keys else "a step"

    def _running_words(self) -> str:
        if self.running == "load":
            return "the loading of the demo data"
        if self.running == "all":
            return "all steps"
        return self._step_words(self.running)

    def _start_queue(self, name: str, queue: list[Action]) -> None:
        if self.running is not None:
            raise RuntimeError(f"the Guide is still running {self._running_words()}; wait until it finishes.")
        self.running = name
        self._step_key = name if name in STEP_BY_KEY else None
        self._queue = list(queue)
        self._set_buttons(False)
        if self._step_key is not None:
            self._status.value = f"{self._step_words(name).capitalize()}: starting…"
        elif name == "all":
            self._status.value = "Running all steps…"
        self._timer.start()

    def _work(self, widget: Any, start: Callable[[], Any], what: str,
              accept: Callable[[Any], bool] | None = None) -> Any:
        """Start a widget's work through ``start()`` and wait for its ``computed`` (or ``failed``) signal.

        ``accept(result)`` tells the result this step waits for from an earlier one still arriving.
        """
        self._waiting_on, self._accept = widget, accept
        widget.computed.connect(self._on_computed)
        widget.failed.connect(self._on_failed)
        self._deadline.start()
        if start() is None:  # bad input: the widget has said why in a notification
            self._release()
            raise RuntimeError(f"{what} did not start (the notification says why)")
        return WAITING

    def _release(self) -> None:
        """Stop listening to the widget waited for, and stop the step's deadline."""
        widget, self._waiting_on, self._accept = self._waiting_on, None, None
        self._deadline.stop()
        if widget is not None:
            for signal, slot in ((widget.computed, self._on_computed), (widget.failed, self._on_failed)):
                with contextlib.suppress(Exception):
                    signal.disconnect(slot)

    def _on_computed(self, result: Any) -> None:
        if self._accept is not None and not self._accept(result):
            return  # an earlier request's result; this step's follows
        self._release()
        self._resume()

    def _on_failed(self, message: str) -> None:
        self._release()
        self._stop(RuntimeError(message))

    def _on_timeout(self) -> None:
        self._release()
        self._stop(TimeoutError(f"'{self._status.value}' did not finish within {STEP_TIMEOUT_S:.0f} s."))

    def _resume(self) -> None:
        """The awaited work has ended: run the next action on the next event-loop turn."""
        if self.running is not None and alive(self.native):
            self._deadline.stop()
            self._timer.start()

    def _next(self) -> None:
        """Run queued actions until one waits for a widget's work (one event-loop turn each)."""
        if self.running is None:
            return
        if self._stepping:  # an action processed events (napari's progress bars do): no nested step
            self._timer.start()
            return
        self._stepping = True
        try:
            if not self._queue:
                self._finish(self._done_message())
                return
            description, action = self._queue.pop(0)
            step = self._step_key
            self._status.value = (
                f"{self._step_words(step).capitalize()}: {description}…" if step else f"{description}…"
            )
            if action() is not WAITING:
                self._timer.start()
        except Exception as exc:  # noqa: BLE001 - a failing step becomes a notification, the Guide stays usable
            self._stop(exc)
        finally:
            self._stepping = False

    def _stop(self, exc: BaseException) -> None:
        """End the queue at a failure: the status line and a notification say where and why."""
        if self.running is None:
            return
        if self.running == "load":
            where = "loading the demo data"
        else:
            step = STEP_BY_KEY.get(self._step_key or "")
            where = f"{self._step_words(self._step_key)} ({step.title.split('. ', 1)[-1]})" if step else "a step"
        self._finish(f"Stopped at {where}: {exc}")
        show_error(f"Guide: stopped at {where}: {exc}")

    def _finish(self, message: str) -> None:
        self._timer.stop()
        self._release()
        self._queue = []
        self.running = None
        self._status.value = message
        self._set_buttons(True)
        for loop in self._wait_loops:
            loop.quit()

    def _set_buttons(self, enabled: bool) -> None:
        for button in (self._load, self._run_all, *self._buttons.values()):
            button.enabled = enabled

