"""Studies: train candidates on one cohort, evaluate them on the test split and compare them.

A study file (:mod:`.spec`) lists candidates (target × head/loss × ensemble/MC dropout) and seeds on
one cohort; :func:`run_study` (:mod:`.runner`) trains every run without a finished checkpoint through a
launcher (:mod:`.launch`: here, as local processes or as SLURM jobs with submitit), evaluates every
run on the held-out cases and writes the study table (:mod:`.table`) and the quality control
(:mod:`.quality`). :func:`example_studies` lists the packaged studies that follow the protocols of
the SVLS, SoftSeg and Mehrtash papers on a generated cohort.

The names below are imported on first use, so importing this package loads no training code.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__all__ = [
    "LAUNCHERS",
    "StudyCandidate",
    "StudyProgress",
    "StudyResult",
    "StudyRun",
    "StudySpec",
    "example_studies",
    "load_study",
    "plan_study",
    "run_study",
    "train_run",
]

_LAZY = {
    "LAUNCHERS": "spec",
    "StudyCandidate": "spec",
    "StudySpec": "spec",
    "load_study": "spec",
    "StudyProgress": "launch",
    "train_run": "launch",
    "StudyResult": "runner",
    "StudyRun": "runner",
    "plan_study": "runner",
    "run_study": "runner",
}


def example_studies() -> dict[str, Path]:
    """The packaged example studies, by name (the file stem).

    Returns
    -------
    dict of str to Path
        ``svls``, ``msvls``, ``softseg`` and ``mehrtash``: their YAML files.

    Examples
    --------
    >>> sorted(example_studies())
    ['mehrtash', 'msvls', 'softseg', 'svls']
    """
    folder = Path(__file__).with_name("examples")
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
