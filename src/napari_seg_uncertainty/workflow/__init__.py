"""The workflow layer: Qt-free orchestration between the dock widgets and :mod:`~napari_seg_uncertainty.core`.

``core`` computes; ``workflow`` strings core's functions into the steps a user runs (the demo data and
its two short trainings, the headless demo, figures and tables) without any window; ``widgets`` show
these steps in napari. Everything here runs in a script, a test or on a headless cluster node.

Import rule: imports run ``widgets → workflow → core`` only. A module of this package imports
``core`` (and numpy, matplotlib's Agg canvas, the standard library), never ``widgets``, Qt, napari,
magicgui or superqt.
"""
