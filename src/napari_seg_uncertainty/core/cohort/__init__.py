"""Cohorts: many cases on disk, scanned from their headers, split by case and read one case at a time.

:func:`load_cohort` reads a folder of case folders (generic, QUBIQ, MSSEG-2016), a LIDC-style ``.npz``
holding many cases, or a CSV/YAML manifest into a :class:`Cohort`; :func:`make_phantom_cohort` writes a
synthetic cohort for tests, docs and the demo.

Modules: :mod:`.cohort` (:class:`Cohort`, :func:`load_cohort`), :mod:`.scan` (header scan and checks),
:mod:`.npz` (multi-case archives), :mod:`.manifest` (CSV/YAML manifests), :mod:`.splits` (case-level
splits), :mod:`.resample` (resampling to a target spacing), :mod:`.phantom` (synthetic cohorts),
:mod:`.real_cases` (cases from scans shipped inside installed packages).
"""

from __future__ import annotations

from typing import Any

from .cohort import LAYOUTS, CaseData, CaseInfo, Cohort, CohortProblem, load_cohort

__all__ = ["LAYOUTS", "CaseData", "CaseInfo", "Cohort", "CohortProblem", "load_cohort", "make_phantom_cohort"]


def __getattr__(name: str) -> Any:
    # imported on first use, so the package imports whether or not the phantom module is there yet
    if name == "make_phantom_cohort":
        from .phantom import make_phantom_cohort

        return make_phantom_cohort
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
