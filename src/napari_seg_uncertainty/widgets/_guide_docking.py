"""Docking for the Guide: the Guide at the bottom, the plugin's seven widgets tabbed on the right.

:class:`GuideDocking` is mixed into :class:`~napari_seg_uncertainty.widgets.guide.WorkflowGuide`. Every
dock scrolls, so the window fits a laptop screen however long the widget; the tab titles are shown
whole; the Train widget's *Training curves* dock joins the group right after *Train*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._common import fit_to_screen, whole_tab_titles
from ._guide_steps import DOCKS

__all__ = ["DOCK_WIDTH", "GuideDocking", "alive", "dock_of"]

#: Width of the tabbed widget docks (pixels).
DOCK_WIDTH = 560


class GuideDocking:
    """Docks the Guide and the widgets it drives (mixed into ``WorkflowGuide``)."""

    viewer: Any
    native: Any
    widgets: dict[str, Any]
    _scroll_areas: dict[str, Any]
    _tabs: list[Any]
    _docked: bool
    run_root: Path | None

    def _connect_widget(self, key: str, widget: Any) -> None:
        """Called with each widget as it is made, before it is docked."""

    def _dock_guide_from_menu(self) -> None:
        if self.native.parent() is not None:
            self.dock_guide()
            from qtpy.QtWidgets import QMainWindow

            window = self._main_window()
            if isinstance(window, QMainWindow):
                fit_to_screen(window)

    # docking ----------------------------------------------------------------------------------------
    def dock_guide(self) -> None:
        """Dock the Guide itself at the bottom (idempotent); the widgets come with :meth:`dock`."""
        from qtpy.QtCore import Qt

        if self._docked:
            return
        self._docked = True
        if self.native.parent() is None:
            self.viewer.window.add_dock_widget(self, name="Guide", area="bottom")
        else:  # opened from the Plugins menu (napari docked us on the right): move to the bottom
            dock = self._own_dock()
            if dock is not None:
                self._main_window().addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)

    def dock(self) -> None:
        """Dock the Guide at the bottom and the seven widgets tabbed on the right (idempotent)."""
        self.dock_guide()
        missing = [key for key in DOCKS if key not in self.widgets]
        for key in missing:
            self._dock_widget(key)
        if missing:
            self._after_docking()

    def _own_dock(self) -> Any:
        return dock_of(self.native)

    def _make_widget(self, key: str) -> Any:
        from .calibration import CalibrationWidget
        from .cohort_review import CohortReviewWidget
        from .load_raters import LoadRatersWidget
        from .soft_labels import SoftLabelsWidget
        from .ssn_samples import SSNSamplesWidget
        from .train import TrainWidget
        from .uncertainty import UncertaintyWidget

        classes = {
            "load_raters": LoadRatersWidget,
            "soft_labels": SoftLabelsWidget,
            "train": TrainWidget,
            "ssn_samples": SSNSamplesWidget,
            "calibration": CalibrationWidget,
            "uncertainty": UncertaintyWidget,
            "cohort_review": CohortReviewWidget,
        }
        return classes[key](self.viewer)

    def widget(self, key: str) -> Any:
        """The docked widget ``key`` (a key of ``DOCKS``); all seven are created and docked on first use."""
        if key not in DOCKS:
            raise ValueError(f"key must be one of {list(DOCKS)}, got {key!r}.")
        if key not in self.widgets:
            self.dock()
        return self.widgets[key]

    def _dock_widget(self, key: str) -> None:
        """Create widget ``key`` and dock it as a tab of the group on the right, in workflow order.

        Every dock scrolls, so the window fits a laptop screen however long the widget: a widget that
        scrolls itself (Train) is docked as it is, a magicgui ``scrollable`` container with its scroll
        area (napari alone would dock the inner widget), any other inside a new scroll area. The Train
        widget docks its own *Training curves*; that dock joins the group after *Train*.
        """
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QDockWidget, QFrame, QLabel, QScrollArea

        window = self.viewer.window
        qt_window = self._main_window()
        events = self.viewer.layers.events
        previous = self._last_tab()
        widget = self._make_widget(key)
        self._connect_widget(key, widget)
        for label in widget.native.findChildren(QLabel):  # long status lines wrap in the narrow dock
            label.setWordWrap(True)
        root = widget.root_native_widget
        own_scroll = [child for child in widget.native.children() if isinstance(child, QScrollArea)]
        if isinstance(root, QScrollArea) or own_scroll:
            area = root if isinstance(root, QScrollArea) else own_scroll[0]
            docked = root
            if isinstance(root, QScrollArea):
                root._magic_widget = widget  # napari's dock_widgets[name] then gives the magicgui widget
        else:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setWidget(widget.native)
            docked = area
        docked.setMinimumWidth(min(int(widget.native.sizeHint().width()) + 24, DOCK_WIDTH - 60))
        # the magicgui widget itself when napari would dock the right Qt widget (then napari refreshes its
        # choices on layer events and dock_widgets[name] gives it back); else the Qt widget that scrolls
        target = widget if docked is widget.native else docked
        window.add_dock_widget(target, name=DOCKS[key], area="right", add_vertical_stretch=False)
        dock = dock_of(docked)
        if target is not widget:  # napari refreshes the choices of magicgui docks only; so do we
            for event in (events.inserted, events.removed, events.reordered, events.renamed):
                event.connect(widget.reset_choices)
        self.widgets[key] = widget
        self._scroll_areas[key] = area
        docks = [dock]
        if key == "train":  # the curves dock the Train widget added: move it behind the Train tab
            curves = [d for d in qt_window.findChildren(QDockWidget) if d.windowTitle() == "Training curves"]
            for extra in curves:
                qt_window.removeDockWidget(extra)
                qt_window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, extra)
                extra.show()
            docks += curves
        for item in docks:
            if previous is not None:
                qt_window.tabifyDockWidget(previous, item)
            previous = item
        self._tabs += docks

    def _last_tab(self) -> Any:
        tabs = [d for d in self._tabs if alive(d)]
        return tabs[-1] if tabs else None

    def _after_docking(self) -> None:
        """Width of the tab group, whole tab titles, the first tab in front."""
        from qtpy.QtCore import Qt, QTimer

        tabs = [d for d in self._tabs if alive(d)]
        if tabs:
            self._main_window().resizeDocks([tabs[0]], [DOCK_WIDTH], Qt.Orientation.Horizontal)
        self._whole_tab_titles()
        QTimer.singleShot(0, self._whole_tab_titles)  # Qt makes the tab bars while laying out
        self.show_tab("load_raters")

    def _whole_tab_titles(self) -> None:
        """Tab titles in full ("Training curves", not "Tr…"); the tab bar scrolls when they do not fit."""
        window = self._main_window()
        if alive(window):
            whole_tab_titles(window)

    def show_tab(self, key: str) -> None:
        """Bring the tab of widget ``key`` (or ``"curves"``, the training curves) to the front."""
        from qtpy.QtWidgets import QDockWidget

        name = "Training curves" if key == "curves" else DOCKS[key]
        for dock in self._main_window().findChildren(QDockWidget):
            if dock.windowTitle() == name:
                dock.show()
                dock.raise_()

    def _main_window(self) -> Any:
        """napari's main window (``QMainWindow``), which holds the docks: the window the Guide is docked in.

        Found through Qt's parents of our own widget, not ``viewer.window``: napari hands plugin widgets a
        proxy that refuses private attributes and that Qt does not accept as an argument.
        """
        return self.native.window()


    def scroll_to_bottom(self, key: str) -> None:
        """Scroll the dock of widget ``key`` to its end (e.g. the calibration plot)."""
        area = self._scroll_areas.get(key)
        if area is not None:
            area.widget().adjustSize()
            bar = area.verticalScrollBar()
            bar.setValue(bar.maximum())


def alive(qt_object: Any) -> bool:
    """Whether a Qt object still exists (its C++ side has not been deleted)."""
    if qt_object is None:
        return False
    try:
        qt_object.objectName()
    except RuntimeError:
        return False
    return True


def dock_of(widget: Any) -> Any:
    """The ``QDockWidget`` that holds the Qt widget ``widget`` (None when it is not docked)."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parent()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    return parent
