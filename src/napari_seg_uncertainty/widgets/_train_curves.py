"""The *Training curves* dock of the *Train* widget: training loss and validation metrics, drawn live.

:class:`TrainingCurves` is mixed into :class:`~napari_seg_uncertainty.widgets.train.TrainWidget`. The
plot is a themed matplotlib canvas (napari-matplotlib) docked next to the Train dock; its lines are
animated and blitted onto a cached background, so a live update costs a few milliseconds and the
full (slow) redraw happens only when an axis range has to grow.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["CURVES_DOCK", "LOSS_RANGE", "PLOT_INTERVAL_S", "TrainingCurves", "dock_of"]

PLOT_INTERVAL_S = 1.0
#: Initial y range of the (log-scale) loss plot; it grows only if a loss leaves it.
LOSS_RANGE = (1e-3, 30.0)
#: Least height of the Training curves plot (pixels).
MIN_PLOT_HEIGHT = 120
CURVES_DOCK = "Training curves"
#: Share of the height the Train dock gets when the Training curves dock sits below it (the rest: curves).
TRAIN_DOCK_SHARE = 0.66


def dock_of(widget: Any) -> Any:
    """The ``QDockWidget`` holding the Qt widget ``widget``, or ``None``."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent


class TrainingCurves:
    """Live plot of a training run's records (mixed into ``TrainWidget``)."""

    _viewer: Any
    _epochs: Any
    records: list[Any]
    state: str
    native: Any

    def _init_curves(self) -> None:
        self.plot_widget: Any = None
        self._background: Any = None
        self._lines: dict[str, Any] = {}
        self._last_draw = 0.0

    def _create_plot(self) -> None:
        """Themed matplotlib canvas (napari-matplotlib), docked next to this widget.

        Lines are animated and blitted onto a cached background, so a live update costs a few
        milliseconds; the full (slow) redraw happens only when an axis range has to grow.
        """
        from napari_matplotlib.base import BaseNapariMPLWidget

        self.plot_widget = BaseNapariMPLWidget(self._viewer)
        self.plot_widget.add_single_axes()
        axes = self.plot_widget.axes
        self._dice_axes = axes.twinx()
        self._lines = {
            "step": axes.plot([], [], lw=0.8, alpha=0.5, label="train loss (step)", animated=True)[0],
            "epoch": axes.plot([], [], "o-", label="train loss (epoch)", animated=True)[0],
            "val_nll": axes.plot([], [], "s-", label="validation NLL", animated=True)[0],
            "val_dice": self._dice_axes.plot(
                [], [], "^--", color="tab:green", label="validation Dice", animated=True
            )[0],
        }
        self._dice_axes.set_ylim(0, 1.05)
        self._dice_axes.set_ylabel("Dice")
        axes.set_xlabel("epoch")
        axes.set_ylabel("loss (log scale)")
        axes.set_yscale("log")
        # Fixed ranges: a live update is then a cheap blit, never a full redraw (which takes
        # ~100 ms and would stall the event loop); the x range follows the Epochs box.
        axes.set_xlim(0, max(1, int(self._epochs.value)))
        axes.set_ylim(*LOSS_RANGE)
        handles = list(self._lines.values())
        axes.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
        self._background = None
        self.plot_widget.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.plot_widget.setMinimumHeight(MIN_PLOT_HEIGHT)
        window = getattr(self._viewer, "window", None)
        if window is not None and hasattr(window, "add_dock_widget"):
            window.add_dock_widget(self.plot_widget, name=CURVES_DOCK, area="right")
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._balance_docks)

    def _balance_docks(self) -> None:
        """Give the Train dock most of the height when the Training curves dock is stacked below it.

        Qt splits the height by the docks' size hints, which leaves the Train dock's settings a
        sliver on a 1280×800 screen; the plot reads well in a third of it.
        """
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QMainWindow

        try:
            train, curves = dock_of(self.native), dock_of(self.plot_widget) if self.plot_widget else None
            if train is None or curves is None or train.isFloating() or curves.isFloating():
                return
            window = train.parentWidget()
            if not isinstance(window, QMainWindow) or window.dockWidgetArea(train) != window.dockWidgetArea(curves):
                return
            if curves in window.tabifiedDockWidgets(train):
                return
            total = train.height() + curves.height()
            if total <= 0:
                return
            share = int(TRAIN_DOCK_SHARE * total)
            window.resizeDocks([train, curves], [share, total - share], Qt.Orientation.Vertical)
        except RuntimeError:  # a dock went away meanwhile
            return

    def _close_curves(self) -> None:
        """Remove the *Training curves* dock this widget added (it would be left orphaned)."""
        plot, self.plot_widget = self.plot_widget, None
        if plot is None:
            return
        window = getattr(self._viewer, "window", None)
        try:
            if window is not None and dock_of(plot) is not None:
                window.remove_dock_widget(plot)
            plot.deleteLater()
        except (RuntimeError, LookupError, AttributeError):  # the viewer is closing: Qt deletes it anyway
            pass

    def _on_full_draw(self, _event: Any = None) -> None:
        if self.plot_widget is None:
            return
        canvas = self.plot_widget.canvas
        self._background = canvas.copy_from_bbox(canvas.figure.bbox)
        self._blit_lines()

    def _blit_lines(self) -> None:
        if self.plot_widget is None or self._background is None:
            return
        canvas = self.plot_widget.canvas
        canvas.restore_region(self._background)
        for line in self._lines.values():
            line.axes.draw_artist(line)
        canvas.blit(canvas.figure.bbox)

    def _reset_plot(self, epochs: int) -> None:
        for line in self._lines.values():
            line.set_data([], [])
        self._last_draw = 0.0
        if self.plot_widget is None:
            return
        axes = self.plot_widget.axes
        if tuple(axes.get_xlim()) != (0, epochs) or tuple(axes.get_ylim()) != LOSS_RANGE:
            axes.set_xlim(0, epochs)
            axes.set_ylim(*LOSS_RANGE)
            self.plot_widget.canvas.draw_idle()
        else:
            self._blit_lines()

    def _on_epochs_changed(self, value: int) -> None:
        if self.state == "idle" and self.plot_widget is not None:
            self.plot_widget.axes.set_xlim(0, max(1, int(value)))
            self.plot_widget.canvas.draw_idle()

    def _update_plot(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.plot_widget is None or (not force and now - self._last_draw < PLOT_INTERVAL_S):
            return
        self._last_draw = now
        steps = [r for r in self.records if r.kind == "step"]
        epochs = [r for r in self.records if r.kind == "epoch"]
        if steps:
            per_epoch = steps[0].steps_per_epoch
            self._lines["step"].set_data([r.global_step / per_epoch for r in steps], [r.loss for r in steps])
        self._lines["epoch"].set_data(
            [r.global_step / r.steps_per_epoch for r in epochs], [r.loss for r in epochs]
        )
        validated = [r for r in epochs if r.val_nll is not None]
        x_val = [r.global_step / r.steps_per_epoch for r in validated]
        self._lines["val_nll"].set_data(x_val, [r.val_nll for r in validated])
        self._lines["val_dice"].set_data(x_val, [r.val_dice for r in validated])
        values = [v for v in [r.loss for r in steps] + [r.val_nll for r in validated] if v > 0]
        axes = self.plot_widget.axes
        low, high = axes.get_ylim()
        if values and (max(values) > high or min(values) < low):
            axes.set_ylim(min(low, min(values) / 2), max(high, max(values) * 2))  # one full redraw
            self.plot_widget.canvas.draw_idle()
        else:
            self._blit_lines()
