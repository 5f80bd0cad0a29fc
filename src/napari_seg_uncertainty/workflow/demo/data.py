"""The demo data sets: two synthetic phantoms and two real scans, each with four raters."""

from __future__ import annotations

import numpy as np

from ...core._validation import describe
from ...core.phantom import make_phantom_raters, make_real_raters
from ...core.raters import RaterSet

__all__ = ["DATASETS", "WORKFLOW_DATASET", "load_demo_data"]

#: Demo data sets: name -> description.
DATASETS = {
    "phantom2d": "synthetic 2-D phantom, 4 raters (organ, lesion, nodule)",
    "phantom3d": "synthetic 3-D phantom with 2.5 x 1 x 1 voxels, 4 raters",
    "ct2d": "real CT slice (pydicom test data), 4 simulated raters",
    "mr3d": "real MR head volume (nibabel test data), 4 simulated raters",
}
#: Data set the workflow (soft labels, training, SSN, calibration) runs on unless told otherwise.
WORKFLOW_DATASET = "phantom2d"


def load_demo_data(name: str, *, seed: int = 0) -> tuple[np.ndarray, RaterSet]:
    """Image and raters of demo data set ``name`` (a key of :data:`DATASETS`).

    Parameters
    ----------
    name : str
        ``"phantom2d"``, ``"phantom3d"``, ``"ct2d"`` or ``"mr3d"``.
    seed : int
        Seed of the simulated raters.

    Returns
    -------
    image : numpy.ndarray
        The image, float32 ``(*spatial)``.
    raters : RaterSet
        Four raters with class names and spacing.

    Examples
    --------
    >>> image, raters = load_demo_data("phantom2d")
    >>> image.shape, raters.num_raters, raters.class_names[1]
    ((128, 128), 4, 'organ')
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a demo data set name (str), got {describe(name)}.")
    if name == "phantom2d":
        return make_phantom_raters(2, seed=seed)
    if name == "phantom3d":
        return make_phantom_raters(3, seed=seed)
    if name == "ct2d":
        image, raters, _ = make_real_raters(2, seed=seed)
        return image, raters
    if name == "mr3d":
        image, raters, _ = make_real_raters(3, seed=seed)
        return image, raters
    raise ValueError(f"demo data {name!r} is unknown; choose one of {', '.join(DATASETS)}.")
