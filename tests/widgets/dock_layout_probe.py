"""Open the plugin's docks from the Plugins menu on a screen of a given size and report the layout.

Run as ``python dock_layout_probe.py`` under an X server whose screen has the size to test (the
test starts ``Xvfb`` with that size). Prints one JSON object: for each widget opened alone and for
all of them opened together, the main window's frame size, whether it stays inside the screen, and
the buttons and plots that cannot be scrolled into view.
"""

from __future__ import annotations

import json
import sys
import time

WIDGETS = ("Load raters", "Soft labels", "Train", "Calibration", "Uncertainty maps", "SSN samples",
           "Cohort review", "Guided workflow (demo)")
PLUGIN = "napari-seg-uncertainty"


def _unreachable(app, dock, screen_rect) -> list[str]:
    """Buttons and plot canvases of ``dock`` that cannot be brought into view inside the screen."""
    from qtpy.QtWidgets import QAbstractButton, QAbstractItemView, QScrollArea, QWidget

    def in_item_view(widget) -> bool:  # a table's corner button is part of the table, not a control
        parent = widget.parentWidget()
        while parent is not None and parent is not dock:
            if isinstance(parent, QAbstractItemView):
                return True
            parent = parent.parentWidget()
        return False

    missing = []
    candidates = [w for w in dock.findChildren(QWidget)
                  if (isinstance(w, QAbstractButton) and not in_item_view(w))
                  or type(w).__name__.startswith("FigureCanvas")]
    for widget in candidates:
        if not widget.isVisibleTo(dock) or widget.width() == 0:
            continue
        parent = widget.parentWidget()
        while parent is not None and not isinstance(parent, QScrollArea):
            parent = parent.parentWidget()
        if parent is not None:
            parent.ensureWidgetVisible(widget, 0, 0)
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                app.processEvents()
        top_left = widget.mapToGlobal(widget.rect().topLeft())
        inside = screen_rect.contains(top_left) and not widget.visibleRegion().isEmpty()
        if not inside:
            label = widget.text() if isinstance(widget, QAbstractButton) else type(widget).__name__
            where = widget.mapToGlobal(widget.rect().topLeft())
            missing.append(f"{type(widget).__name__}({label!r}) at ({where.x()}, {where.y()}) "
                           f"size {widget.width()}×{widget.height()}")
    return missing


def _front(app, dock):
    """Bring a tabbed dock to the front, as a click on its tab does; returns it."""
    dock.raise_()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)
    return dock


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()
    app = QApplication.instance()
    window = viewer.window._qt_window
    screen = window.screen().availableGeometry()
    window.setGeometry(screen)
    window.showNormal()
    app.processEvents()
    report: dict[str, object] = {"screen": [screen.width(), screen.height()], "cases": {}}

    def settle(seconds: float = 0.5, *, stable: float = 0.3, longest: float = 10.0) -> None:
        """Let deferred layout (tabs, resizes, dock splits) happen: at least ``seconds``, then until the
        window's geometry has not changed for ``stable`` seconds (a loaded machine runs the deferred
        steps later), at most ``longest``."""
        start = time.monotonic()
        last, since = None, start
        while True:
            app.processEvents()
            time.sleep(0.01)
            now = time.monotonic()
            frame = window.frameGeometry()
            current = (frame.x(), frame.y(), frame.width(), frame.height())
            if current != last:
                last, since = current, now
            if now - start >= seconds and now - since >= stable or now - start >= longest:
                return

    def measure(label: str, docks: list) -> None:
        settle()
        frame = window.frameGeometry()
        report["cases"][label] = {
            "window": [frame.width(), frame.height()],
            "inside": frame.width() <= screen.width() and frame.height() <= screen.height(),
            "unreachable": {dock.windowTitle(): _unreachable(app, _front(app, dock), screen) for dock in docks},
        }

    for name in WIDGETS:
        dock, _widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        measure(name, [dock])
        viewer.window.remove_dock_widget(dock)
        app.processEvents()
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[0] for name in WIDGETS]
    measure("all", docks)
    if len(sys.argv) > 1:  # a screenshot of the window with every dock open, for a person to look at
        window.grab().save(sys.argv[1])
    print(json.dumps(report))
    sys.stdout.flush()
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
