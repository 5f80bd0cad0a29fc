"""Dock widgets: thin Qt front-ends that call :mod:`napari_seg_uncertainty.core`."""
