"""Small pieces the Soft labels, Calibration and Uncertainty docks share: layer lists, staged layers, tables.

* :class:`LayerSelect` — a multi-choice list of layers (values are the layer objects, see
  :mod:`._layer_choices`) that keeps its selection across renames and reorders, also takes layer
  *names* (scripts and the Guide set it that way), and says why a layer that does not fit is refused.
* :class:`LayerQueue` — runs layer additions and updates one per event-loop turn, so that showing
  many large layers never freezes the window (each turn stays short; paint events run in between).
* :func:`fit_table` — a table that fits the dock width: stretched columns, no horizontal scroll bar.
* :func:`scroll_area_for` — the dock's controls in a vertical scroll area. napari docks a magicgui
  widget's ``native`` (the inner widget, not magicgui's own ``scrollable`` area), so the scroll area
  has to sit inside the docked widget for a long dock to fit a small screen.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Select

from ._layer_choices import choices_for

if TYPE_CHECKING:
    import napari

__all__ = [
    "LayerQueue",
    "LayerSelect",
    "fit_table",
    "format_cell",
    "full_width_after",
    "keep_selection",
    "labels_problem",
    "scroll_area_for",
]

logger = logging.getLogger("napari_seg_uncertainty")

#: Pause between two staged layer updates: long enough for the canvas to repaint in between, so the
#: new layers' first draws (shader builds) are spread over turns instead of piling up in one paint.
LAYER_INTERVAL_MS = 15


def labels_problem(layer: Any) -> str | None:
    """Why ``layer`` is not a label map (integer Labels layer ``(*spatial)``), or ``None`` if it is."""
    from ._layer_choices import is_labels_layer

    if is_labels_layer(layer):
        return None
    dtype = getattr(getattr(layer, "data", None), "dtype", "?")
    shape = tuple(getattr(getattr(layer, "data", None), "shape", ()))
    return (f"layer {getattr(layer, 'name', '?')!r} is a {type(layer).__name__} layer of {dtype} values with "
            f"shape {shape}; expected a Labels layer (or an integer image) of shape (*spatial) holding "
            "0 (background), 1, 2, …")


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


class LayerSelect(Select):
    """A list of the viewer's layers that fit (``accept``), in layer-list order; the value is a list of layers.

    Setting the value accepts layers or layer names. A layer that is not offered is refused: the
    selection is emptied and :attr:`refused` holds ``explain(layer)`` (what is wrong with it and what
    is expected), which :meth:`check` raises as ``ValueError`` when the widget computes, so the user
    gets one notification naming the layer instead of a traceback. A selected layer that stops
    fitting (its data or the widget's layout changed) is refused the same way. The selection survives
    renames and moves of the selected layers; a removed layer leaves it.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        accept: Callable[[Any], bool],
        *,
        explain: Callable[[Any], str | None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._viewer = viewer
        self._explain = explain
        self.refused: str | None = None
        top_first = choices_for(viewer, accept)

        def in_list_order(widget: Any = None) -> list[tuple[str, Any]]:
            return top_first(widget)[::-1]  # rater 1 before rater 2: selections read in layer-list order

        super().__init__(choices=in_list_order, **kwargs)

    @property
    def value(self) -> list[Any]:
        """The selected layers, in list order."""
        return list(Select.value.fget(self))  # type: ignore[attr-defined]

    @value.setter
    def value(self, value: Any) -> None:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        try:
            layers = [self._resolve(item) for item in items]
        except ValueError as exc:
            self.refused = str(exc)
            Select.value.fset(self, [])  # type: ignore[attr-defined]
            return
        self.refused = None
        Select.value.fset(self, layers)  # type: ignore[attr-defined]

    def check(self) -> None:
        """Raise ``ValueError`` with the reason a layer was refused, while nothing has been selected since."""
        if self.refused and not self.value:
            raise ValueError(self.refused)

    def _resolve(self, item: Any) -> Any:
        offered = self.choices
        if isinstance(item, str):
            matches = [layer for layer in offered if getattr(layer, "name", None) == item]
            if matches:
                return matches[0]
            if item not in self._viewer.layers:
                raise ValueError(f"there is no layer named {item!r}; choose one of "
                                 f"{[layer.name for layer in offered]}.")
            item = self._viewer.layers[item]
        if any(item is layer for layer in offered):
            return item
        reason = self._explain(item) if self._explain is not None else None
        raise ValueError(reason or f"layer {getattr(item, 'name', item)!r} cannot be used for {self.label!r}; "
                                   f"choose one of {[layer.name for layer in offered]}.")

    def reset_choices(self, *_args: Any) -> None:
        """Refresh from the viewer in layer-list order, keeping the selected layers that are still offered."""
        before = self.value
        fresh = self._default_choices(self) if callable(self._default_choices) else []
        with self.changed.blocked():
            current = [name for name, _ in self._widget._mgui_get_choices()]
            if current != [name for name, _ in fresh]:
                self.choices = ()  # rebuild in order (a renamed item would otherwise move to the end)
            super().reset_choices()
            kept = [layer for layer in before if any(layer is c for c in self.choices)]
            Select.value.fset(self, kept)  # type: ignore[attr-defined]
        unfit = [layer for layer in before if layer not in kept and layer in self._viewer.layers]
        if unfit and self._explain is not None:  # still there, but no longer fits: say why at the next compute
            self.refused = self._explain(unfit[0])
        if len(kept) != len(before):
            self.changed.emit(self.value)


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


def format_cell(text: Any) -> str:
    """How a table shows a number: 1,234,567 · 0.1234 · 2.31 · 1.2e-05 (never 1.055e+06 or 2.5e-02)."""
    if isinstance(text, str):
        try:
            value: float | int = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return text
    elif isinstance(text, (int, float)):
        value = text
    else:
        return str(text)
    if isinstance(value, int):
        return f"{value:,}"
    if value != value:  # NaN
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1e-3 or value == 0:
        return f"{value:.4f}"
    return f"{value:.2e}"


def fit_table(table: Any, *, min_height: int = 120, show_index: bool = True) -> None:
    """Make a magicgui ``Table`` fit its dock: columns share the width, no horizontal scroll bar, and
    numbers formatted by :func:`format_cell` (magicgui's own display turns 0.0258 into 2.580e-02)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate

    class _NumberDelegate(QStyledItemDelegate):
        def displayText(self, value: Any, locale: Any) -> str:  # noqa: N802 - Qt's name
            return format_cell(value)

    native = table.native
    native._number_delegate = _NumberDelegate(native)
    native.setItemDelegate(native._number_delegate)
    native.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    native.setWordWrap(False)
    native.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    native.setMinimumHeight(min_height)
    native.setMinimumWidth(0)
    header = native.horizontalHeader()
    header.setMinimumSectionSize(24)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    native.verticalHeader().setVisible(show_index)
    native.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)


def scroll_area_for(owner: Any, content: Any, *, min_width: int = 300, min_height: int = 200) -> Any:
    """Put magicgui container ``content`` in a vertical scroll area inside ``owner`` (the docked container).

    Returns the ``QScrollArea``. The dock then never asks for more height than ``min_height``: a long
    dock scrolls instead of growing the main window beyond the screen; there is no horizontal scrolling.
    """
    from qtpy.QtCore import QEvent, QObject, Qt
    from qtpy.QtWidgets import QComboBox, QFrame, QScrollArea

    for combo in content.native.findChildren(QComboBox):  # long entries elide instead of widening the dock
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(12)
    content.native.layout().addStretch(1)  # spare height goes below the controls, not between them
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(content.native)
    area.setMinimumSize(min_width, min_height)

    class _FitWidth(QObject):
        """Keep the area at least as wide as the controls (there is no horizontal scrolling)."""

        def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
            if event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show, QEvent.Type.Polish):
                needed = watched.minimumSizeHint().width() + area.verticalScrollBar().sizeHint().width() + 4
                if area.minimumWidth() < needed:
                    area.setMinimumWidth(max(min_width, needed))
            return False

    area._fit_width = _FitWidth(area)  # parented: lives and dies with the area
    content.native.installEventFilter(area._fit_width)
    layout = owner.native.layout()
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(area)
    return area


def full_width_after(content: Any, anchor: Any, *widgets: Any) -> None:
    """Put ``widgets`` (tables, status lines) in ``content`` right after ``anchor``, over the whole width.

    A labelled magicgui container would give each its own (empty) label column, squeezing tables into
    the right-hand half of the dock. ``anchor`` must be an unlabelled widget of ``content`` (a button).
    """
    layout = content.native.layout()
    index = layout.indexOf(anchor.native)
    if index < 0:
        raise ValueError(f"{anchor!r} is not an unlabelled widget of the container.")
    from qtpy.QtWidgets import QSizePolicy

    for offset, widget in enumerate(widgets, start=1):
        widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, widget.native.sizePolicy().verticalPolicy())
        layout.insertWidget(index + offset, widget.native)
