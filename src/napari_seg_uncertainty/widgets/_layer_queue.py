"""Showing many layers without freezing the window: one layer update per event-loop turn.

:class:`LayerQueue` runs layer additions and updates one per turn, so each turn stays short and paint
events run in between; :func:`keep_selection` adds layers without making each the active one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import napari

__all__ = ["LAYER_INTERVAL_MS", "LayerQueue", "keep_selection", "release_data", "remove_layers",
           "without_full_collection"]

logger = logging.getLogger("napari_seg_uncertainty")

#: Pause between two staged layer updates: long enough for the canvas to repaint in between, so the
#: new layers' first draws (shader builds) are spread over turns instead of piling up in one paint.
LAYER_INTERVAL_MS = 15


@contextlib.contextmanager
def keep_selection(viewer: napari.viewer.Viewer) -> Any:
    """Add layers without making each the active one.

    Activating a new layer switches napari's layer-controls panel and re-lays it out, about as costly as
    adding the layer itself; for a batch of derived layers the user's selection stays as it was.
    """
    # ``_activate_on_insert`` is napari's own switch (no public one exists). Plugin widgets get the viewer
    # behind a proxy that warns on private names, so the switch is read on the unwrapped layer list;
    # where a napari version lacks it, layers are added the ordinary way.
    layers = getattr(viewer, "__wrapped__", viewer).layers
    layers = getattr(layers, "__wrapped__", layers)
    previous = getattr(layers, "_activate_on_insert", None)
    if previous is None:
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = previous


@contextlib.contextmanager
def without_full_collection() -> Any:
    """Let napari remove layers without its full garbage collection (0.3-0.5 s with a session's objects).

    napari runs ``gc.collect()`` after every layer removal (or batch of removals): a fix for a Windows OpenGL
    driver race, which scans every object of the process — about 320 000 with napari, PyTorch and the docks,
    0.3-0.5 s on a busy 2-core machine, far beyond the 100 ms a window may freeze. Inside this block the objects
    that exist already are frozen (:func:`gc.freeze`, Python's documented way to exclude long-lived objects
    from collections), so that collection only scans what is new; they are unfrozen at the end and examined by
    the next ordinary collection. The removed layers' OpenGL objects are released by napari beforehand
    (``close()``); release their arrays first with :func:`release_data`, so that no memory waits for that later
    collection. Does nothing special where objects are frozen already (someone else's freeze is left alone) or
    the collector is off.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def release_data(layers: Iterable[Any]) -> None:
    """Give layers about to be removed a one-voxel array of their kind, so that their (CT-size) arrays are freed
    at once by reference counting instead of at the next full garbage collection (see
    :func:`without_full_collection`)."""
    import numpy as np

    for layer in layers:
        data = getattr(layer, "data", None)
        if isinstance(data, np.ndarray) and data.size > 1 and not getattr(layer, "multiscale", False):
            with contextlib.suppress(Exception):  # a layer that refuses a new array keeps its own until collected
                layer.data = np.zeros((1,) * data.ndim, dtype=data.dtype)


def remove_layers(viewer: napari.viewer.Viewer, layers: Iterable[Any], *, release: bool = True) -> None:
    """Remove ``layers`` (layers or names) in one batch without a full garbage collection; with ``release`` (for
    the plugin's own layers) their arrays are freed at once, otherwise at the next collection."""
    present = [viewer.layers[item] if isinstance(item, str) else item for item in layers
               if (item in viewer.layers if isinstance(item, str) else item in viewer.layers)]
    if not present:
        return
    if release:
        release_data(present)
    with without_full_collection(), viewer.layers.batched_update():
        for layer in present:
            viewer.layers.remove(layer)


class LayerQueue:
    """Run callables one per event-loop turn (a short single-shot ``QTimer`` chain).

    ``run(jobs, done=...)`` replaces whatever is still queued; ``done`` runs after the last job.
    An exception in a job is logged and reported through ``failed`` (if given) and ends the run.
    ``owner`` is a Qt object: the timer dies with it, and nothing runs after it is destroyed.
    """

    def __init__(self, owner: Any = None, *, failed: Callable[[BaseException], None] | None = None) -> None:
        from qtpy.QtCore import QTimer

        self._jobs: deque[Callable[[], Any]] = deque()
        self._done: Callable[[], Any] | None = None
        self._failed = failed
        self._timer = QTimer(owner)
        self._timer.setSingleShot(True)
        self._timer.setInterval(LAYER_INTERVAL_MS)
        self._timer.timeout.connect(self._step)
        self.total = 0

    @property
    def busy(self) -> bool:
        """Whether jobs are waiting (or the final callback has not run yet)."""
        return bool(self._jobs) or self._done is not None

    @property
    def remaining(self) -> int:
        return len(self._jobs)

    def run(self, jobs: Iterable[Callable[[], Any]], *, done: Callable[[], Any] | None = None) -> None:
        """Queue ``jobs`` (replacing any still waiting) and start on the next event-loop turn."""
        self._jobs = deque(jobs)
        self.total = len(self._jobs)
        self._done = done
        self._schedule()

    def cancel(self) -> None:
        """Drop the waiting jobs and the final callback."""
        self._jobs.clear()
        self._done = None
        with contextlib.suppress(RuntimeError):  # the timer's C++ object may be gone at shutdown
            self._timer.stop()

    def _schedule(self) -> None:
        try:
            self._timer.start()
        except RuntimeError:  # owner destroyed: the dock was closed
            self._jobs.clear()
            self._done = None

    def _step(self) -> None:
        if self._jobs:
            job = self._jobs.popleft()
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - reported, and the rest of the run is dropped
                logger.debug("staged layer update failed", exc_info=True)
                self._jobs.clear()
                self._done = None
                if self._failed is not None:
                    self._failed(exc)
                return
            self._schedule()
            return
        done, self._done = self._done, None
        if done is not None:
            done()
