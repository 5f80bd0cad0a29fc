"""Helpers shared by the dock widgets: error reporting and in-place layer updates."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas  # noqa: F401 - see below
from napari.utils.notifications import show_error, show_info, show_warning

# pandas is imported here, on the GUI thread, before any worker starts. magicgui's Table looks for
# ``sys.modules["pandas"]`` on every value it is given; while a worker thread is importing pandas (MONAI,
# napari's layer set-up and the warm-ups pull it in) that module is half-initialised and the Table raises
# "partially initialized module 'pandas' has no attribute 'DataFrame'". napari imports pandas for its
# first Labels layer anyway; this only moves that once-per-session cost to the first dock opened.

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

__all__ = [
    "check_memory",
    "guarded",
    "keep_alive",
    "wait_for_workers",
    "notify_errors",
    "run_in_thread",
    "show_error",
    "show_info",
    "short_dock_title",
    "show_warning",
    "unwrap_viewer",
    "upsert_layer",
    "when_docked",
    "whole_tab_titles",
]

logger = logging.getLogger("napari_seg_uncertainty")


@contextlib.contextmanager
def notify_errors(action: str) -> Iterator[None]:
    """Turn any exception raised in the block into a napari error notification.

    The widgets call core functions inside this block so that bad input never reaches the
    user as a traceback dialog: the message says what failed and why, and the viewer stays usable.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure becomes a notification
        logger.debug("%s failed", action, exc_info=True)
        show_error(f"{action} failed: {exc}")


def check_memory(nbytes: int, *, what: str, cause: str, advice: str) -> None:
    """:func:`~napari_seg_uncertainty.core._memory.check_allocation`, its message led by "not enough free memory"
    so that the few words napari's notification shows before it is expanded say what went wrong."""
    from ..core._memory import OutputTooLargeError, check_allocation

    try:
        check_allocation(nbytes, what=what, cause=cause, advice=advice)
    except OutputTooLargeError as exc:
        raise OutputTooLargeError(f"not enough free memory — {exc}") from None


def _is_layer_type(layer: Any, layer_type: str) -> bool:
    """Whether ``layer`` is a napari layer of kind ``layer_type`` ("image", "labels", ...)."""
    from napari import layers

    cls = getattr(layers, layer_type.capitalize(), None)
    return cls is not None and isinstance(layer, cls)


def unwrap_viewer(viewer: Any) -> Any:
    """The viewer itself, not the proxy napari hands to widgets opened from the Plugins menu.

    napari's ``PublicOnlyProxy`` wraps every object it returns, so ``layer.data is array`` and
    ``layer in selection`` comparisons against objects a widget holds fail through it (a
    temperature-scaled layer was refused as "a PublicOnlyProxy layer"; the SSN widget never found its
    samples layer). The widgets only use napari's public API on the unwrapped viewer.
    """
    return getattr(viewer, "__wrapped__", viewer)


def upsert_layer(
    viewer: napari.viewer.Viewer,
    data: Any,
    *,
    name: str,
    layer_type: str = "image",
    geometry: Any = None,
    leading_axes: int = 0,
    case: str | None = None,
    **kwargs: Any,
) -> Layer:
    """Add a layer named ``name``, or update the existing one of that name and type in place.

    Updating in place keeps the user's display settings and avoids a pile-up of layers when a
    parameter changes. ``kwargs`` go to ``viewer.add_<layer_type>`` for a new layer; for an
    existing layer only ``scale``, ``translate``, ``affine``, ``metadata`` and ``contrast_limits``
    are refreshed.

    ``geometry`` (a :class:`~napari_seg_uncertainty.core.geometry.Geometry`, or a layer/RaterSet
    to read one from) places the layer: this is the one route by which every widget gives its
    output layers the source image's scale, translate and direction. ``leading_axes`` non-spatial
    axes in front of the spatial ones (classes, samples) get scale 1. ``case`` tags the layer
    with the case it belongs to (see :mod:`._case`), so loading another case replaces it.
    """
    if geometry is not None:
        from ..core.geometry import Geometry

        ndim = getattr(data, "ndim", len(getattr(data, "shape", ()))) - leading_axes
        kwargs.update(Geometry.of(geometry, ndim=ndim if not isinstance(geometry, Geometry) else None)
                      .layer_kwargs(leading_axes=leading_axes))
    if case is not None:
        from ._case import CASE_KEY

        kwargs["metadata"] = {**(kwargs.get("metadata") or {}), CASE_KEY: case}
    if name in viewer.layers:
        layer = viewer.layers[name]
        if _is_layer_type(layer, layer_type) and getattr(layer.data, "ndim", None) == getattr(data, "ndim", None):
            layer.data = data
            if "affine" not in kwargs and "scale" in kwargs:
                kwargs["affine"] = np.eye(layer.ndim + 1)  # a stale direction must not survive a new geometry
            for key in ("scale", "translate", "affine", "metadata", "contrast_limits"):
                # each setter redraws the layer (a slice, a thumbnail): only what changed
                if key in kwargs and not _same_setting(getattr(layer, key, None), kwargs[key]):
                    setattr(layer, key, kwargs[key])
            return layer
        from ._layer_queue import remove_layers

        remove_layers(viewer, [layer], release=False)  # a layer of another kind: perhaps the user's own
    add = getattr(viewer, f"add_{layer_type}")
    return add(data, name=name, **kwargs)


def _same_setting(current: Any, new: Any) -> bool:
    """Whether a layer setting already has the value ``new`` (arrays and tuples by value, affines by matrix)."""
    current = getattr(current, "affine_matrix", current)
    new = getattr(new, "affine_matrix", new)
    if isinstance(current, dict) or isinstance(new, dict):
        try:
            return bool(current == new)
        except Exception:  # noqa: BLE001 - values that cannot be compared count as changed
            return False
    try:
        a, b = np.asarray(current, dtype=float), np.asarray(new, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and bool(np.array_equal(a, b))


#: Workers still running. A worker's Qt signals die with the worker object: a widget closed while its
#: worker runs would drop the last reference, and the worker's final ``finished``/``errored`` emit from
#: its thread would then abort the process. Running workers are kept here until they finish.
_RUNNING: set[Any] = set()


#: Longest wait at exit for running workers to end (seconds).
EXIT_WAIT_S = 30.0
_EXIT_HOOKED = False


def keep_alive(worker: Any) -> Any:
    """Hold a reference to ``worker`` until it has finished (see ``_RUNNING``); returns it.

    At quit (Qt's ``aboutToQuit``, and ``atexit`` for a script that never runs the event loop) running
    workers are asked to stop and waited for: a worker thread still running while Python shuts
    down emits into deleted Qt objects and aborts the process.
    """
    global _EXIT_HOOKED
    _RUNNING.add(worker)
    worker.finished.connect(lambda: _RUNNING.discard(worker))
    if not _EXIT_HOOKED:
        import atexit

        from qtpy.QtWidgets import QApplication

        atexit.register(wait_for_workers)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(wait_for_workers)
        _EXIT_HOOKED = True
    return worker


def wait_for_workers(timeout_s: float = EXIT_WAIT_S) -> bool:
    """Ask every running worker to stop and wait until they have ended; ``True`` if all did in time."""
    from qtpy.QtCore import QThreadPool

    for worker in list(_RUNNING):
        with contextlib.suppress(Exception):
            worker.quit()
    return bool(QThreadPool.globalInstance().waitForDone(int(timeout_s * 1000)))


def guarded(callback: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``callback`` that does nothing once the widget it belongs to has been deleted.

    A worker may finish after its dock was closed; its result then has nowhere to go. PyQt turns an
    exception escaping a slot into an abort, so "wrapped C/C++ object … has been deleted" is caught
    here and only logged.
    """
    if callback is None:
        return None

    def _call(*args: Any) -> Any:
        try:
            return callback(*args)
        except RuntimeError as exc:
            if "has been deleted" not in str(exc):
                raise
            logger.debug("result dropped: its widget was closed (%s)", exc)
            return None

    return _call


def run_in_thread(
    func: Callable[..., Any],
    *args: Any,
    action: str,
    returned: Callable[[Any], None] | None = None,
    errored: Callable[[BaseException], None] | None = None,
    finished: Callable[[], None] | None = None,
    yielded: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Any:
    """Run ``func(*args, **kwargs)`` in a worker thread so the event loop never blocks.

    ``returned`` receives the result on the GUI thread (for a generator function, its return value;
    ``yielded`` receives each value it yields). An exception becomes one napari error
    notification ``"<action> failed: <message>"`` (then ``errored`` is called, if given); unlike
    napari's own workers no traceback is relayed. The callbacks are dropped quietly when their
    widget has been closed meanwhile, and the worker is kept alive until it ends. Returns the
    started worker.
    """
    from superqt.utils import create_worker

    on_errored = guarded(errored)

    def _on_error(exc: BaseException) -> None:
        logger.debug("%s failed", action, exc_info=exc)
        show_error(f"{action} failed: {exc}")
        if on_errored is not None:
            on_errored(exc)

    connect: dict[str, Any] = {"errored": _on_error}
    if returned is not None:
        connect["returned"] = guarded(returned)
    if finished is not None:
        connect["finished"] = guarded(finished)
    if yielded is not None:
        connect["yielded"] = guarded(yielded)
    worker = create_worker(func, *args, _connect=connect, _start_thread=False, **kwargs)
    keep_alive(worker)
    worker.start()
    return worker


#: Suffix napari gives the dock title of every widget this plugin contributes.
PLUGIN_DOCK_SUFFIX = "(napari-seg-uncertainty)"


def when_docked(widget: Any, callback: Callable[[], Any]) -> None:
    """Call ``callback()`` on the next event-loop turn after ``widget`` (a Qt widget) is first shown."""
    from qtpy.QtCore import QEvent, QObject, QTimer

    class _ShowWatcher(QObject):
        def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            if event.type() == QEvent.Type.Show:
                obj.removeEventFilter(self)
                QTimer.singleShot(0, guarded(callback))
            return False

    widget.installEventFilter(_ShowWatcher(widget))


def tabify_when_docked(widget: Any) -> None:
    """Once ``widget`` (a Qt widget) sits in a dock, put that dock in a tab beside this plugin's other docks.

    napari stacks docks opened from the Plugins menu one above the other; with their minimum
    heights added up, six of them grow the main window far past a 1280×800 screen. Tabbed, any
    number fit: the newest tab is brought to the front, and the window is shrunk back inside the
    screen if it had already grown. Qt has no option for this on a dock another program creates,
    hence a callback once the dock is shown.
    """
    when_docked(widget, lambda: _tabify(widget))


def _tabify(widget: Any) -> None:
    from qtpy.QtWidgets import QDockWidget, QMainWindow

    try:
        dock = widget.parentWidget()
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parentWidget()
        window = dock.parentWidget() if dock is not None else None
        if not isinstance(window, QMainWindow) or dock.isFloating():
            return
        from qtpy.QtCore import QTimer

        area = window.dockWidgetArea(dock)
        dock.setProperty(_DOCK_PROPERTY, True)
        title = dock.windowTitle()
        if title.endswith(PLUGIN_DOCK_SUFFIX):  # "Train", not "Train (napari-seg-uncertainty)"
            short_dock_title(dock, title[: -len(PLUGIN_DOCK_SUFFIX)].rstrip())
        others = [d for d in window.findChildren(QDockWidget)
                  if d is not dock and d.isVisible() and not d.isFloating() and window.dockWidgetArea(d) == area
                  and (d.property(_DOCK_PROPERTY) or d.windowTitle().endswith(PLUGIN_DOCK_SUFFIX))]
        if others and dock not in window.tabifiedDockWidgets(others[-1]):
            window.tabifyDockWidget(others[-1], dock)
            dock.show()
            dock.raise_()
            fit_to_screen(window)  # stacked for a moment before the tab was made, the window may have grown
        QTimer.singleShot(0, lambda: whole_tab_titles(window))  # Qt makes the tab bars while laying out
    except RuntimeError:  # the dock was closed before the event loop came back
        return


_DOCK_PROPERTY = "napari_seg_uncertainty_dock"


def short_dock_title(dock: Any, title: str) -> None:
    """Title ``dock`` ``title`` in its tab and in its title bar, as the docks this plugin adds itself.

    Qt's tab shows the window title; napari's dock draws its own title bar, a label made from the
    dock's ``name`` (again whenever the dock floats or moves), which a new window title leaves as it
    was. The ``name`` itself stays: napari finds the dock by it when the dock is closed.
    """
    from qtpy.QtWidgets import QLabel

    def relabel(*_args: Any) -> None:
        try:
            label = getattr(getattr(dock, "title", None), "title", None)  # napari's QtCustomTitleBar's label
            if isinstance(label, QLabel):
                label.setText(title)
        except RuntimeError:  # the dock is being deleted
            return

    dock.setWindowTitle(title)
    relabel()
    for signal in (dock.topLevelChanged, dock.dockLocationChanged):  # after napari rebuilt its title bar
        signal.connect(relabel)


def whole_tab_titles(window: Any) -> None:
    """Tab titles of tabbed docks in full ("Training curves", not "Tr…"); the tab bar scrolls when they do not fit."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QTabBar

    try:
        bars = [bar for bar in window.findChildren(QTabBar) if bar.parent() is window]
    except RuntimeError:  # the window is gone
        return
    for bar in bars:  # the tab bars of tabbed docks (not those inside widgets)
        bar.setElideMode(Qt.TextElideMode.ElideNone)
        bar.setUsesScrollButtons(True)
        bar.setExpanding(False)


def fit_to_screen(window: Any) -> None:
    """Shrink a top-level window that has grown past its screen's available area back inside it."""
    screen = window.screen()
    if screen is None or window.isMaximized() or window.isFullScreen():
        return
    available = screen.availableGeometry()
    frame, inner = window.frameGeometry(), window.geometry()
    extra_w, extra_h = frame.width() - inner.width(), frame.height() - inner.height()
    width = min(inner.width(), available.width() - extra_w)
    height = min(inner.height(), available.height() - extra_h)
    if (width, height) != (inner.width(), inner.height()):
        window.resize(width, height)
        if not available.contains(window.frameGeometry()):
            window.move(available.topLeft())
