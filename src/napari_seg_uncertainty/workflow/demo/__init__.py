"""The demo: the plugin's whole workflow on shipped data, headless into a folder (the GUI demo is
:func:`napari_seg_uncertainty.widgets.demo_window.run_gui_demo`).

The workflow (the same in both forms):

1. **Raters**: load the raters of a demo data set and measure how much they disagree
   (pairwise Dice, agreement maps, rater entropy).
2. **Soft labels**: one-hot (majority vote), label smoothing, SVLS, mSVLS, the raters' mean and
   STAPLE, compared with each other.
3. **Training**: a short run of a U-Net on the mSVLS target (softmax + soft cross-entropy) and of a
   stochastic segmentation network (SSN, low-rank logits, random rater per step). Headless, both
   train on a cohort (12 generated phantom cases split by case, validated on the held-out ``val``
   cases); the shown case is one of its ``test`` cases, never trained on. The Guide trains on the
   open layers.
4. **SSN samples**: samples of the SSN, with the per-class noise scales and the temperature
   changed (the sliders of the *SSN samples* widget), GED² and diversity against the raters.
5. **Calibration and uncertainty**: reliability diagrams, ECE/TACE/NLL/Brier (also after temperature
   scaling), entropy and mutual-information maps, a review table ranked by segment entropy and the
   Dice of each model against each rater.
6. **A study**: four candidates (one-hot, label smoothing, mSVLS, SSN; one short run each) trained on
   the cohort, evaluated on its test cases and compared in the study table (``study/study.md``, means
   with 95 % bootstrap intervals, paired tests); the Guide opens it in the *Cohort review* dock.

Modules: :mod:`.data` (the data sets), :mod:`.cohort` (the training cohort),
:mod:`.training` (the two models and their settings), :mod:`.study` (the study of four candidates),
:mod:`.outputs` (the files written), :mod:`.steps` (one function per step), :mod:`.headless`
(:func:`run_headless_demo`, :func:`run_workflow`) and :mod:`.results` (what they return).
"""

from __future__ import annotations

from .cohort import DEMO_COHORT_CASES, SHOWN_CASE, DemoCohort, make_demo_cohort
from .data import DATASETS, WORKFLOW_DATASET, load_demo_data
from .headless import run_headless_demo, run_workflow
from .outputs import SOFT_LABEL_OUTPUTS, planned_outputs
from .results import DemoResult, WorkflowResult
from .steps import REVIEW_MIN_VOXELS
from .study import STUDY_CANDIDATES, DemoStudyTraining, iter_demo_study
from .training import MODELS, NUM_SSN_SAMPLES, SSN_SETTINGS, DemoTraining

__all__ = [
    "DATASETS",
    "DEMO_COHORT_CASES",
    "MODELS",
    "NUM_SSN_SAMPLES",
    "REVIEW_MIN_VOXELS",
    "SOFT_LABEL_OUTPUTS",
    "SHOWN_CASE",
    "SSN_SETTINGS",
    "STUDY_CANDIDATES",
    "WORKFLOW_DATASET",
    "DemoCohort",
    "DemoResult",
    "DemoStudyTraining",
    "DemoTraining",
    "WorkflowResult",
    "iter_demo_study",
    "load_demo_data",
    "make_demo_cohort",
    "planned_outputs",
    "run_headless_demo",
    "run_workflow",
]
