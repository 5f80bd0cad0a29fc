"""The Calibration dock's plot: a themed matplotlib canvas drawn in a worker thread.

A reliability diagram costs a few hundred milliseconds of matplotlib, which would freeze the window:
:class:`CalibrationPlot` draws and rasterises each new plot on a fresh Agg figure in a worker
(:func:`~napari_seg_uncertainty.workflow.calibration.render_figure`) and then swaps it onto its canvas.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari_matplotlib.base import NapariMPLWidget
from napari_matplotlib.util import Interval

from ..workflow.calibration import RELIABILITY, draw_results, render_figure
from ..workflow.figures import ModelResult
from ._common import run_in_thread

if TYPE_CHECKING:
    import napari

__all__ = ["CalibrationPlot"]


class CalibrationPlot(NapariMPLWidget):
    """Themed matplotlib canvas that draws the current results (redrawn on theme changes).

    New results are drawn and rasterised in a worker thread on a fresh figure, which then replaces the
    canvas's figure with its pixels: a reliability diagram costs a few hundred milliseconds of
    matplotlib, which would otherwise freeze the window.
    """

    n_layers_input = Interval(None, None)

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: Any = None) -> None:
        from qtpy.QtCore import QTimer

        super().__init__(napari_viewer, parent=parent)
        self.results: list[ModelResult] = []
        self.kind = RELIABILITY
        self.min_count = 1
        self.artists: dict[str, Any] = {}
        self.rendering = False
        self._generation = 0
        self._when_rendered: list[Any] = []
        self.setMinimumHeight(360)
        QTimer.singleShot(0, self._first_draw)  # not while the dock opens

    def _first_draw(self) -> None:
        with contextlib.suppress(RuntimeError):  # closed before the first turn
            if not self.rendering:
                self._draw()

    def _setup_callbacks(self) -> None:
        """Redraw on theme changes only (connected by the base class), not on slice or layer selection.

        The plots summarise whole volumes and the selected layers of the dock, so napari-matplotlib's
        default redraws on every slider step and layer selection would only cost time.
        """

    def show_results(self, results: list[ModelResult], *, kind: str | None = None, done: Any = None) -> None:
        """Replace the results (and optionally the plot kind) and redraw in a worker; ``done()`` when shown."""
        self.results = list(results)
        if kind is not None:
            self.kind = kind
        self.render_in_worker(render_figure, list(self.results), kind=self.kind, min_count=self.min_count,
                              action="Calibration plot", done=done)

    def render_in_worker(self, render: Callable[..., Any], *args: Any, action: str, done: Any = None,
                         **kwargs: Any) -> None:
        """Run ``render(*args, size=, dpi=, style=, **kwargs)`` in a worker and put its figure on the canvas.

        ``render`` returns ``(figure, agg_canvas, artists)`` drawn at the canvas's size and dpi in the
        napari theme; a newer call supersedes an older one still rendering. ``done()`` once shown.
        """
        if done is not None:
            self._when_rendered.append(done)
        self._generation += 1
        generation = self._generation
        figure = self.canvas.figure
        self.rendering = True
        run_in_thread(
            render,
            *args,
            size=tuple(figure.get_size_inches()),
            dpi=float(figure.dpi),
            style=self.napari_theme_style_sheet,
            action=action,
            returned=lambda out: self._adopt(out, generation, getattr(figure, "_original_dpi", figure.dpi)),
            errored=lambda _exc: self._rendered(generation),
            **kwargs,
        )

    def _adopt(self, out: tuple[Any, Any, dict[str, Any]], generation: int, original_dpi: float) -> None:
        """Put a figure rendered in the worker on the canvas (GUI thread; cheap: no drawing)."""
        if generation != self._generation:
            return  # a newer plot is on its way
        figure, agg, artists = out
        try:
            canvas = self.canvas
            old = canvas.figure
            figure._original_dpi = original_dpi
            figure._canvas_callbacks = old._canvas_callbacks  # the toolbar's and the widget's connections
            canvas.figure = figure
            figure.set_canvas(canvas)
            if canvas.get_width_height(physical=True) == agg.get_width_height(physical=True):
                canvas.renderer = agg.renderer
                canvas._lastKey = agg._lastKey
                canvas.update()
            else:  # resized meanwhile: draw once at the new size
                canvas.draw_idle()
        except RuntimeError:  # the dock was closed
            return
        self.artists = artists
        self._rendered(generation)

    def _rendered(self, generation: int) -> None:
        if generation != self._generation:
            return
        self.rendering = False
        callbacks, self._when_rendered = self._when_rendered, []
        for callback in callbacks:
            callback()

    def clear(self) -> None:
        """Remove all axes."""
        self.figure.clear()

    def draw(self) -> None:
        """Draw the reliability diagram or the entropy scatter plot of ``self.results`` (on the GUI thread)."""
        self.artists = draw_results(self.figure, self.results, kind=self.kind, min_count=self.min_count)
