"""Pure computation: numpy, torch and SimpleITK only (no Qt, no napari)."""
