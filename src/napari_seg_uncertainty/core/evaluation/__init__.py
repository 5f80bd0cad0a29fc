"""Evaluation of a study: per-case metrics over a split, bootstrap CIs, paired tests, study tables.

* :mod:`.case_metrics` — the metrics of each case (Dice, surface Dice, HD95, calibration, uncertainty);
* :mod:`.statistics` — means with percentile-bootstrap CIs over cases (:func:`bootstrap_ci`);
* :mod:`.comparison` — paired comparisons (:func:`paired_comparison`: paired bootstrap and Wilcoxon
  signed-rank), Holm correction (:func:`holm_correction`) and the "best marked where significant"
  rule of the papers' tables (:func:`compare_candidates`);
* :mod:`.quality` — quality control: segment-level entropy against Dice (:func:`entropy_dice_correlation`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .comparison import CandidateComparison, PairedComparison, compare_candidates, holm_correction, paired_comparison
from .quality import EntropyDiceCorrelation, entropy_dice_correlation
from .statistics import BootstrapCI, bootstrap_ci

__all__ = [
    "BootstrapCI",
    "EntropyDiceCorrelation",
    "entropy_dice_correlation",
    "CandidateComparison",
    "PairedComparison",
    "bootstrap_ci",
    "compare_candidates",
    "holm_correction",
    "paired_comparison",
]

# Names of the per-case metrics, imported on first use: case_metrics needs torch and MONAI, the statistics
# only numpy and scipy, so ``from napari_seg_uncertainty.core.evaluation import bootstrap_ci`` stays fast.
_LAZY = {
    "CaseEvaluation": "case_metrics",
    "evaluate_case": "case_metrics",
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
