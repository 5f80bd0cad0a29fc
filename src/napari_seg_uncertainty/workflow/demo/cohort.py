"""The demo's training cohort: generated phantom cases plus the shown case, held out as a test case.

The headless workflow trains its two models on a cohort, not on the one case it shows: a manifest
(``cohort/cohort.yaml``) lists ``DEMO_COHORT_CASES`` synthetic cases written by
:func:`~napari_seg_uncertainty.core.cohort.make_phantom_cohort` (each with its own anatomy, contrast,
noise, spacing and origin, and raters with habits; their ``split`` column says train, val or test)
and the shown case (the demo data set's image and raters, ``cohort/shown/``) with split ``test``.
Training draws patches from the ``train`` cases, validates on the ``val`` cases, and never sees the
shown case, on which the later steps (SSN samples, calibration, uncertainty) run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ...core._atomic import atomic_write
from ...core.io import write_image
from ...core.raters import RaterSet

if TYPE_CHECKING:
    from ...core.cohort import Cohort

__all__ = ["COHORT_FOLDER", "DEMO_COHORT_CASES", "SHOWN_CASE", "DemoCohort", "cohort_outputs", "make_demo_cohort"]

#: Generated cases in the demo's cohort (besides the shown case).
DEMO_COHORT_CASES = 12
#: Case id of the shown case in the demo's manifest.
SHOWN_CASE = "shown"
#: Folder of the cohort inside the workflow's output folder.
COHORT_FOLDER = "cohort"


@dataclass(frozen=True)
class DemoCohort:
    """The demo's cohort as loaded, its case-level split and the files written for it.

    Attributes
    ----------
    cohort : Cohort
        Loaded from the manifest (class names of the shown case).
    split : dict
        ``{"train": [...], "val": [...], "test": [...]}`` from the manifest's split column; the shown
        case is in ``test``.
    manifest : str
        Path of ``cohort.yaml``.
    files : list of str
        Paths written: the manifest, the shown case's files, the generated cases' folder.
    """

    cohort: Cohort
    split: dict[str, list[str]]
    manifest: str
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` records of the cohort: cases, generated cases, the split."""
        return {
            "cases": len(self.cohort),
            "generated_cases": len(self.cohort) - 1,
            "shown_case": SHOWN_CASE,
            "split": self.split,
        }


def cohort_outputs(raters: RaterSet) -> list[str]:
    """Paths (relative to the workflow folder) :func:`make_demo_cohort` writes; the generated cases
    are listed by their manifest, ``cohort/phantoms/cohort.csv``."""
    return [
        f"{COHORT_FOLDER}/cohort.yaml",
        f"{COHORT_FOLDER}/{SHOWN_CASE}/image.nii.gz",
        *[f"{COHORT_FOLDER}/{SHOWN_CASE}/rater_{i + 1}.nii.gz" for i in range(raters.num_raters)],
        f"{COHORT_FOLDER}/phantoms/cohort.csv",
    ]


def make_demo_cohort(
    folder: str | os.PathLike,
    image: np.ndarray,
    raters: RaterSet,
    *,
    n_cases: int = DEMO_COHORT_CASES,
    seed: int = 0,
    overwrite: bool = False,
) -> DemoCohort:
    """Write the demo's cohort into ``folder/cohort`` and load it.

    Parameters
    ----------
    folder : path
        The workflow's output folder.
    image : numpy.ndarray
        The shown case's image ``(*spatial)``.
    raters : RaterSet
        Its raters, class names and geometry.
    n_cases : int
        Generated cases (2-D or 3-D as the shown case; with as many raters and, up to 4, classes).
    seed : int
        Seed of the generated cases.
    overwrite : bool
        Replace the files of an earlier run.

    Returns
    -------
    DemoCohort
        The cohort (``n_cases + 1`` cases), its split and the files written.
    """
    from ...core.cohort import load_cohort, make_phantom_cohort

    root = Path(folder) / COHORT_FOLDER
    generated = make_phantom_cohort(
        n_cases,
        root / "phantoms",
        ndim=raters.ndim,
        layout="manifest",
        num_raters=raters.num_raters,
        num_classes=min(max(raters.num_classes, 2), 4),
        shape=tuple(image.shape) if raters.ndim == 2 else None,
        seed=seed,
        overwrite=overwrite,
        split=True,
    )
    geometry = {"spacing": raters.spacing, "origin": raters.origin, "overwrite": overwrite}
    shown = root / SHOWN_CASE
    shown.mkdir(parents=True, exist_ok=True)
    files = [write_image(shown / "image.nii.gz", np.asarray(image, np.float32), **geometry)]
    for i, labels in enumerate(raters.labels):
        files.append(write_image(shown / f"rater_{i + 1}.nii.gz", labels, **geometry))
    cases = [
        {
            "case_id": case.case_id,
            "image": [os.path.relpath(f, root) for f in case.image_files],
            "raters": [os.path.relpath(f, root) for f in case.rater_files],
            "split": case.split or "train",
        }
        for case in load_cohort(generated)
    ]
    cases.append(
        {
            "case_id": SHOWN_CASE,
            "image": [f"{SHOWN_CASE}/image.nii.gz"],
            "raters": [f"{SHOWN_CASE}/rater_{i + 1}.nii.gz" for i in range(raters.num_raters)],
            "split": "test",
        }
    )
    manifest = root / "cohort.yaml"
    with atomic_write(manifest, overwrite=overwrite) as temporary:
        temporary.write_text(yaml.safe_dump({"class_names": list(raters.class_names), "cases": cases}))
    cohort = load_cohort(manifest, class_names=list(raters.class_names))
    split = {name: list(ids) for name, ids in cohort.resolve_split("manifest").items()}
    return DemoCohort(
        cohort=cohort,
        split=split,
        manifest=str(manifest),
        files=[str(manifest), *[str(f) for f in files], str(generated)],
    )
