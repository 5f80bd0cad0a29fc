"""The GUI demo: napari with the demo data, every widget docked and the *Guide* dock.

The headless demo and the demo data live in :mod:`napari_seg_uncertainty.workflow.demo`; this is its
window.
"""

from __future__ import annotations

from typing import Any

from ..core._validation import describe
from ..workflow.demo import DATASETS, WORKFLOW_DATASET, DemoTraining
from .guide import WorkflowGuide

__all__ = ["run_gui_demo"]


def run_gui_demo(
    dataset: str = WORKFLOW_DATASET,
    *,
    seed: int = 0,
    viewer: Any = None,
    training: DemoTraining | None = None,
    wait: bool | None = None,
) -> WorkflowGuide:
    """Open napari with the demo data, every widget docked and the *Guide* that walks through the workflow.

    The window answers from the moment it shows: the Guide docks first and says "Loading …" while
    PyTorch, MONAI and the demo data are prepared in a worker thread; the widgets and layers then
    arrive one per event-loop turn. A window opened here fills the screen (maximised, or fitted to the
    screen's available area), and the image is fitted to the canvas once the docks are laid out.

    Parameters
    ----------
    dataset : str
        A key of :data:`DATASETS`.
    seed : int
        Seed of the simulated raters (and of the training the Guide starts).
    viewer : napari.viewer.Viewer, optional
        Use this viewer instead of opening a new one.
    training : DemoTraining, optional
        Settings the Guide fills into the *Train* widget.
    wait : bool, optional
        Return only when the data are loaded and the widgets docked (Qt events run meanwhile).
        Default: wait when ``viewer`` is given (a script or a test goes on with a ready Guide); do not
        wait when the demo opens its own window (the event loop, ``napari.run()``, starts next).

    Returns
    -------
    WorkflowGuide
        The Guide dock widget; ``guide.viewer`` is the viewer and ``guide.widgets`` the docked widgets;
        ``guide.ready`` (and the ``guide.loaded`` signal) say when loading has finished.

    Examples
    --------
    >>> guide = run_gui_demo("phantom2d")  # doctest: +SKIP
    >>> guide.run_step("soft_labels")  # doctest: +SKIP
    """
    if dataset not in DATASETS:
        raise ValueError(f"demo data {dataset!r} is unknown; choose one of {', '.join(DATASETS)}.")
    if wait is not None and not isinstance(wait, bool):
        raise TypeError(f"wait must be True, False or None, got {describe(wait)}.")
    own_window = viewer is None
    if own_window:
        import napari

        viewer = napari.Viewer(title=f"napari-seg-uncertainty demo — {DATASETS[dataset]}")
    guide = WorkflowGuide(viewer, training=training, seed=seed)
    guide.dock_guide()
    if own_window:
        _fill_screen(guide.native.window())
    guide.load_demo_data(dataset, wait=(not own_window) if wait is None else wait)
    return guide


def _fill_screen(window: Any) -> None:
    """Maximise ``window``; without a window manager (which may ignore that) fit it to the screen."""
    screen = window.screen() if hasattr(window, "screen") else None
    if screen is not None:
        area = screen.availableGeometry()
        window.setGeometry(area)  # fitted first: a bare X server has no window manager to maximise
    window.showMaximized()
