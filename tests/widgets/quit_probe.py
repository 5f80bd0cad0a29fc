"""Open every dock of the plugin, use it a little, close each dock with its × button, then quit napari.

Run as a separate process (the test runs it ten times): it must exit 0 with nothing on stderr
that looks like an error. The layers of a 2-D phantom are loaded first so the widgets have
something to show, and the SSN widget gets a distribution so its timers run.
"""

from __future__ import annotations

WIDGETS = ("Load raters", "Soft labels", "Train", "Calibration", "Uncertainty maps", "SSN samples",
           "Guided workflow (demo)")
PLUGIN = "napari-seg-uncertainty"


def main() -> int:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer()
    app = QApplication.instance()
    viewer.open_sample(PLUGIN, "phantom_2d")
    docks = []
    widgets = {}
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        docks.append(dock)
        widgets[name] = widget
    for _ in range(20):
        app.processEvents()
    # put something into the SSN widget so that its timers and workers are alive when the dock closes
    ssn = widgets["SSN samples"]
    from napari_seg_uncertainty.core.ssn import synthetic_distribution

    ssn.set_distribution(synthetic_distribution((64, 64), num_classes=3, rank=4, seed=0))
    for _ in range(50):
        app.processEvents()
    for dock in docks:
        dock.title.close_button.click()
        app.processEvents()
    QTimer.singleShot(300, viewer.close)
    QTimer.singleShot(5000, app.quit)  # in case closing the viewer does not end the loop
    napari.run()
    print("viewer closed", flush=True)  # what follows is only the interpreter's own shutdown
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
