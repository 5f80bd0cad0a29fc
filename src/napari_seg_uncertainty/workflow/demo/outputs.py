"""The files the headless demo writes: their names, the check that none would be replaced, the writer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._validation import describe
from ...core.io import write_image
from ...core.raters import RaterSet
from ..figures import middle_slice, save_figure
from ..tables import write_rows
from .cohort import cohort_outputs
from .study import study_outputs
from .training import MODELS, SSN_SETTINGS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .cohort import DemoCohort

__all__ = ["SOFT_LABEL_OUTPUTS", "DemoRun", "planned_outputs", "refuse_existing_outputs", "workflow_outputs"]

#: Soft-label methods written by the headless workflow, in this order (keys of ``SOFT_LABEL_METHODS``).
SOFT_LABEL_OUTPUTS = ("one_hot", "label_smoothing", "svls", "msvls", "rater_mean", "staple")


def safe_name(name: str) -> str:
    """``name`` as a file name (spaces become underscores)."""
    return name.replace(" ", "_")


def planned_outputs(raters: RaterSet, *, workflow: bool) -> list[str]:
    """Relative paths of the files the headless demo writes for one data set.

    Parameters
    ----------
    raters : RaterSet
        The data set's raters (their names become file names).
    workflow : bool
        Include the soft-label, training, SSN, calibration, uncertainty and study outputs.

    Returns
    -------
    list of str
        Paths relative to the data set's folder, ``metrics.json`` last. The training cohort's
        generated cases are listed by their manifest, ``cohort/phantoms/cohort.csv``.

    Examples
    --------
    >>> from napari_seg_uncertainty.workflow.demo import load_demo_data
    >>> _, raters = load_demo_data("phantom2d")
    >>> "calibration/reliability.png" in planned_outputs(raters, workflow=True)
    True
    """
    if not isinstance(raters, RaterSet):
        raise TypeError(f"raters must be a RaterSet, got {describe(raters)}.")
    files = [
        "input/image.nii.gz",
        *[f"input/{safe_name(r)}.nii.gz" for r in raters.rater_names],
        "agreement.nii.gz",
        "rater_entropy.nii.gz",
        "summary.csv",
        "pairwise_dice.csv",
        "overview.png",
    ]
    if workflow:
        files += [f"soft_labels/{m}.nii.gz" for m in SOFT_LABEL_OUTPUTS]
        files += ["soft_labels/comparison.csv", "soft_labels/soft_labels.png"]
        files += [*cohort_outputs(raters), "training/split.json"]
        for key in MODELS:
            files += [
                f"training/{key}/last.pt",
                f"training/{key}/best.pt",
                f"training/{key}/history.csv",
                f"predictions/{key}_probabilities.nii.gz",
                f"predictions/{key}_labels.nii.gz",
                f"predictions/{key}_entropy.nii.gz",
            ]
        files += ["training/curves.png", "ssn/distribution.npz"]
        files += [f"ssn/{stem}.tif" for stem, *_ in SSN_SETTINGS]
        files += [
            "ssn/samples.png",
            "calibration/bins.csv",
            "calibration/metrics.csv",
            "calibration/reliability.png",
            "calibration/entropy_scatter.png",
            "uncertainty/ssn_mutual_information.nii.gz",
            "uncertainty/review.csv",
            "uncertainty/dice_vs_raters.csv",
            "uncertainty/uncertainty.png",
            *study_outputs(),
        ]
    return [*files, "metrics.json"]


def workflow_outputs(raters: RaterSet) -> list[str]:
    """The files :func:`~napari_seg_uncertainty.workflow.demo.run_workflow` writes (the planned
    outputs beyond the raters' own)."""
    own = set(planned_outputs(raters, workflow=False))
    return [p for p in planned_outputs(raters, workflow=True) if p not in own]


def refuse_existing_outputs(folder: Path, relative: Sequence[str], *, overwrite: bool) -> None:
    """Raise :class:`FileExistsError` naming up to three of ``folder/relative`` that exist, unless
    ``overwrite`` (checked before the demo computes anything)."""
    if overwrite:
        return
    existing = [str(folder / r) for r in relative if (folder / r).exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"{', '.join(existing[:3])}{more} already exists; pass --overwrite (overwrite=True) "
            "or choose another --out folder."
        )


@dataclass
class DemoRun:
    """What the workflow steps share: inputs, settings and the list of files written."""

    image: np.ndarray
    raters: RaterSet
    folder: Path
    overwrite: bool
    seed: int
    log: Callable[[str], None]
    written: list[str]
    cohort: DemoCohort | None = None

    @property
    def geometry(self) -> dict[str, Any]:
        """Keywords of :func:`~napari_seg_uncertainty.core.io.write_image`: the raters' geometry."""
        return {"spacing": self.raters.spacing, "origin": self.raters.origin, "overwrite": self.overwrite}

    @property
    def plane(self) -> int | None:
        """The slice the figures show (None for 2-D data)."""
        return middle_slice(self.raters, self.raters.entropy_map())[0]

    def image_file(self, relative: str, array: np.ndarray, **kwargs: Any) -> None:
        """Write ``array`` with the raters' geometry to ``folder/relative``."""
        self.written.append(write_image(self.folder / relative, array, **{**self.geometry, **kwargs}))

    def rows_file(self, relative: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write ``rows`` as CSV to ``folder/relative``."""
        self.written.append(str(write_rows(self.folder / relative, rows, overwrite=self.overwrite)))

    def figure_file(self, relative: str, figure: Figure) -> None:
        """Save ``figure`` to ``folder/relative``."""
        self.written.append(save_figure(figure, self.folder / relative, overwrite=self.overwrite))
