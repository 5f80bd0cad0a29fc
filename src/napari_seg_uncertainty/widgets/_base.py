"""The base of every dock widget: layer choices, work in a worker, a busy state and one result signal.

Each dock repeats the same frame around its own controls: the controls in a scroll area inside what
napari docks, layer lists that follow the viewer, a status line, buttons disabled while work runs,
work run in a worker thread with failures turned into notifications, and a way for a caller (the
Guide, a script, a test) to learn that the work is done. :class:`DockWidget` holds that frame.

A subclass builds its controls, adds them to :attr:`DockWidget.content`, calls
:meth:`DockWidget.finish_layout` once, and starts its work with :meth:`DockWidget.run`. When the
result has been *shown* (layers added, tables filled, plot drawn) the subclass calls
:meth:`DockWidget.done`, which ends the busy state and emits :attr:`DockWidget.computed` with the
result; a failure ends it through :meth:`DockWidget.fail`, which emits :attr:`DockWidget.failed`.
A public method that starts work returns the worker, or ``None`` when nothing ran (bad input is
reported as a notification and leaves the widget idle).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label
from psygnal import Signal

from . import _common
from ._common import logger, run_in_thread, tabify_when_docked, unwrap_viewer
from ._layer_choices import LayerWatcher
from ._layer_queue import LayerQueue
from ._layer_select import LayerSelect
from ._layout import scroll_area_for

if TYPE_CHECKING:
    import napari

__all__ = ["DockWidget"]


class DockWidget(Container):
    """A dock widget of this plugin: controls in a scroll area, layer lists, busy state, result signals.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer (napari passes it in; a ``PublicOnlyProxy`` is unwrapped, so that identity checks
        between layers work).
    status : str
        First text of the status line.

    Attributes
    ----------
    computed : psygnal.Signal
        Emitted with the result once a piece of work has finished and its result is on show.
    failed : psygnal.Signal
        Emitted with the message once a piece of work started in a worker has failed (the user has
        been notified already). Bad input found before starting emits nothing: the public method
        returns ``None`` instead.
    worker
        The latest worker started by :meth:`run` (``None`` before the first).
    content : magicgui.widgets.Container
        The labelled container of the controls (inside the scroll area).
    """

    computed = Signal(object)
    failed = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer, *, status: str = "") -> None:
        super().__init__(labels=False)
        self._viewer = unwrap_viewer(viewer)  # identity checks on layers need the real objects
        self.content = Container(labels=True)
        self.worker: Any = None
        self._status = Label(value=status)
        self._status.native.setWordWrap(True)
        self._status.native.setMinimumWidth(120)  # wraps instead of widening the dock
        self._running = False
        self._busy_controls: list[Any] = []
        self._layer_selects: list[LayerSelect] = []
        self._queue = LayerQueue(self.native, failed=self._on_show_failed)
        self._action = "Computation"
        self._applying = False
        self._generation = 0  # of the latest run(): older workers' results are dropped

    # building ---------------------------------------------------------------------------------------
    def layer_select(
        self,
        accept: Callable[[Any], bool],
        *,
        explain: Callable[[Any], str | None] | None = None,
        label: str,
        tooltip: str = "",
        min_height: int = 64,
        max_height: int = 110,
    ) -> LayerSelect:
        """A multi-choice layer list that follows the viewer (refreshed by :meth:`reset_choices`)."""
        select = LayerSelect(self._viewer, accept, explain=explain, label=label, tooltip=tooltip)
        select.native.setMinimumHeight(min_height)
        select.native.setMaximumHeight(max_height)
        self._layer_selects.append(select)
        return select

    def disable_while_busy(self, *controls: Any) -> None:
        """Controls (buttons) disabled while work runs."""
        self._busy_controls.extend(controls)

    def finish_layout(self, *, min_width: int = 300, min_height: int = 150) -> None:
        """Put :attr:`content` in a vertical scroll area, follow the viewer's layers, tab the dock."""
        self.scroll_area = scroll_area_for(self, self.content, min_width=min_width, min_height=min_height)
        self._watcher = LayerWatcher(self._viewer, self.reset_choices, owner=self.native)
        tabify_when_docked(self.native)

    # inputs -----------------------------------------------------------------------------------------
    @property
    def applying(self) -> bool:
        """Whether :meth:`apply` is setting inputs (live updates wait until it is done)."""
        return self._applying

    def apply(self, settings: Iterable[tuple[Any, Any]]) -> None:
        """Set each ``(control, value)`` in order, skipping ``None`` values; :attr:`applying` meanwhile.

        Public methods that start work take their inputs as keywords and set them here first, so a
        widget that recomputes on every change (live updates) computes once, with all of them.
        """
        self._applying = True
        try:
            for control, value in settings:
                if value is not None:
                    control.value = value
        finally:
            self._applying = False

    # choices ----------------------------------------------------------------------------------------
    def reset_choices(self, *_args: Any) -> None:
        """Refresh the layer lists (napari calls this on layer changes; so does the layer watcher)."""
        for select in self._layer_selects:
            select.reset_choices()

    # state ------------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether work is running, or its result is still being shown."""
        return self._running or self._queue.busy

    @property
    def status(self) -> str:
        """The status line's text."""
        return str(self._status.value)

    def set_status(self, message: str) -> None:
        """Show ``message`` in the status line."""
        self._status.value = message

    def set_busy(self, busy: bool, message: str | None = None) -> None:
        """Enter or leave the busy state (controls disabled); ``message`` goes to the status line."""
        self._running = busy
        for control in self._busy_controls:
            with contextlib.suppress(RuntimeError):  # the dock is being deleted
                control.enabled = not busy
        if message is not None:
            self._status.value = message

    def alive(self) -> bool:
        """Whether the widget's Qt objects still exist (``False`` once the dock was closed)."""
        try:
            self.native.objectName()
        except RuntimeError:
            return False
        return True

    # work -------------------------------------------------------------------------------------------
    def run(
        self,
        func: Callable[..., Any],
        *args: Any,
        action: str,
        message: str | None = None,
        returned: Callable[[Any], None] | None = None,
        errored: Callable[[BaseException], None] | None = None,
        finished: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``func(*args, **kwargs)`` in a worker thread; returns the started worker.

        The widget is busy from now on (``message``, default ``"<action>…"``, in the status line).
        ``returned`` receives the result on the GUI thread and must end in :meth:`done` (or
        :meth:`fail`) once it is shown; without ``returned``, :meth:`done` is called with the result.
        A failure is notified as ``"<action> failed: <message>"``, then ``errored`` (if given) runs
        and :meth:`fail` ends the busy state. A worker overtaken by a newer :meth:`run` is dropped: its
        result is not shown and its failure only notified. Callbacks are dropped once the dock has been
        closed.
        """
        self._action = action
        self._generation += 1
        generation = self._generation
        self.set_busy(True, message if message is not None else f"{action}…")
        show = returned if returned is not None else self.done

        def on_returned(result: Any) -> None:
            if generation != self._generation:
                return
            try:
                show(result)
            except RuntimeError as exc:
                if "has been deleted" in str(exc):  # the dock was closed meanwhile: see _common.guarded
                    raise
                self._on_show_failed(exc)
            except Exception as exc:  # a result that cannot be shown must not leave the dock busy for good
                self._on_show_failed(exc)

        def on_errored(exc: BaseException) -> None:
            if generation != self._generation:
                return
            if errored is not None:
                errored(exc)
            self.fail(str(exc), notify=False)

        self.worker = run_in_thread(
            func, *args, action=action, returned=on_returned, errored=on_errored, finished=finished, **kwargs,
        )
        return self.worker

    def done(self, result: Any, message: str | None = None) -> None:
        """The result is on show: leave the busy state and emit :attr:`computed` with ``result``."""
        self.set_busy(False, message)
        self.computed.emit(result)

    def fail(self, message: str, *, notify: bool = True) -> None:
        """The work failed: notify (unless done already), leave the busy state, emit :attr:`failed`."""
        if notify:
            _common.show_error(f"{self._action} failed: {message}")
        self._queue.cancel()
        self.set_busy(False, f"Failed: {message}")
        self.failed.emit(message)

    def _on_show_failed(self, exc: BaseException) -> None:
        """A step of showing a result (see :class:`LayerQueue`) raised."""
        logger.warning("%s: showing the result failed", self._action, exc_info=exc)
        self.fail(str(exc))
