"""What the Guide says and drives: its steps, their explanations, and the docks and layers it names.

Qt-free text and tables only; :class:`~napari_seg_uncertainty.widgets.guide.WorkflowGuide` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..workflow.demo import MODELS

__all__ = ["DOCKS", "INTRO", "LOADING", "PREDICTION_PREFIX", "RENAMED", "STEPS", "STEP_BY_KEY", "Step"]

#: Dock names of the widgets the Guide drives, in workflow order: key -> dock name.
DOCKS = {
    "load_raters": "Load raters",
    "soft_labels": "Soft labels",
    "train": "Train",
    "ssn_samples": "SSN samples",
    "calibration": "Calibration",
    "uncertainty": "Uncertainty maps",
    "cohort_review": "Cohort review",
}
#: Layer names of the two trained models' predictions: model key -> prefix.
PREDICTION_PREFIX = {key: label for key, (label, *_rest) in MODELS.items()}
#: What the Train widget's ``prediction …`` layers are renamed to (after the model's prefix).
RENAMED = {"prediction probabilities": "", "prediction labels": " labels", "prediction entropy": " entropy"}

@dataclass(frozen=True)
class Step:
    """One step of the workflow: its button text, the widget it uses, the explanation shown and what
    the status line says when it is done."""

    key: str
    title: str
    widget: str
    text: str
    done: str = ""


STEPS = (
    Step(
        "raters",
        "1. Raters and agreement",
        "load_raters",
        """
<b>1. Raters and agreement.</b> Four raters outlined the same image (outlines over the image; hide or
show a rater with its eye icon). <i>rater entropy</i> is 0 (black) where all raters agree and bright
where they disagree: the borders, and the small nodule that some raters missed. The <b>Load raters</b>
tab lists the pairwise Dice per class and the per-class volumes; the <i>agreement: …</i> layers
(hidden) give the fraction of raters who chose each class.""",
        "raters loaded, their agreement measured",
    ),
    Step(
        "soft_labels",
        "2. Soft labels: mSVLS vs one-hot",
        "soft_labels",
        """
<b>2. Soft labels.</b> Training targets made from the raters. <i>soft A: organ</i> is the mSVLS
probability of the organ (SVLS of each rater, averaged): 1 inside, 0 outside, and in between along
the borders where raters disagree. <i>soft B</i> is the one-hot majority vote; <i>soft A − B</i>
shows where they differ (green: mSVLS higher, pink: lower). Try another <b>Method</b> or σ: the
layers update in place.""",
        "soft labels compared (mSVLS against the one-hot majority vote)",
    ),
    Step(
        "train_svls",
        "3. Train a U-Net on mSVLS",
        "train",
        """
<b>3. Training on soft labels.</b> A tiny U-Net learns from the mSVLS targets for 8 short epochs (under a
minute on a laptop CPU). The <b>Training curves</b> tab shows the training loss falling. The validation
NLL and Dice are measured on the bottom fifth of the image, held out from training; in this one small
image that strip holds little but the organ's lower edge, so they stay low: judge the model by its
prediction. When it ends, <i>mSVLS U-Net</i> (class probabilities), <i>mSVLS U-Net labels</i> and
<i>mSVLS U-Net entropy</i> are added: the entropy is bright where the model is unsure, along the borders
where the raters disagreed.""",
        "U-Net trained on mSVLS, its prediction added",
    ),
    Step(
        "train_ssn",
        "4. Train an SSN",
        "train",
        """
<b>4. Stochastic segmentation network.</b> The same U-Net with an SSN head: it predicts a whole
distribution of segmentations (a mean and a low-rank covariance of the logits), learning from a random
rater at each step. Its layers are named <i>SSN</i>, <i>SSN labels</i> and <i>SSN entropy</i> (the
probabilities average 20 samples).""",
        "SSN trained, its prediction added",
    ),
    Step(
        "ssn_samples",
        "5. SSN samples and sliders",
        "ssn_samples",
        """
<b>5. Samples of the SSN.</b> <i>SSN samples</i> holds 10 plausible segmentations: move the first
slider under the canvas to browse them. In the <b>SSN samples</b> tab, each <b>class noise scale</b>
slider multiplies that class's noise (0: that class as in the mean prediction; 3: exaggerated
variation; negative: the mirror image), and <b>Temperature</b> scales all noise (0 gives the mean
prediction). The sample on screen is redrawn as you move them. <i>GED²</i> compares the samples with
the raters (lower is better); <i>diversity</i> is how much the samples (or the raters) differ.""",
        "SSN samples drawn, GED² and diversity measured",
    ),
    Step(
        "calibration",
        "6. Calibration: reliability diagram",
        "calibration",
        """
<b>6. Calibration.</b> The reliability diagram sorts the pixels by the model's confidence (x axis) and
shows how often the prediction was right in each bin (bars; against the raters, 'right' counts the
share of raters who agree). A calibrated model's bars follow the diagonal; bars below it mean
overconfidence (orange gaps). ECE summarises the gaps in %. Switch <b>Plot</b> to <i>Entropy:
prediction vs raters</i> to compare the model's uncertainty with the raters' disagreement.""",
        "reliability diagrams drawn",
    ),
    Step(
        "uncertainty",
        "7. Uncertainty maps and review",
        "uncertainty",
        """
<b>7. Uncertainty maps.</b> <i>… entropy</i> layers show each model's uncertainty per pixel (0 to 1).
The review table ranks the predicted structures by their mean entropy, most uncertain first: click a
row to jump to that structure. The last table gives the Dice of the mSVLS U-Net against each rater
and their majority vote.""",
        "uncertainty maps, review table and Dice against the raters ready",
    ),
    Step(
        "cohort",
        "8. A study and its cohort review",
        "cohort_review",
        """
<b>8. A study of four methods on a cohort.</b> One image says little about a method: this step trains four
candidates (U-Nets on the one-hot majority vote, on label smoothing and on mSVLS, and an SSN) on a cohort
of 12 generated cases plus this one, evaluates them on the held-out test cases and opens the result in
<b>Cohort review</b> (a minute or two on a laptop CPU; the runs are tiny). The table lists the test cases
ranked for review, most uncertain first: select one to open its image, raters, prediction and entropy in
place of the previous case; <i>Next</i> / <i>Previous</i> walk the queue. The dock's plots show the pooled
reliability diagram and the study table (mean [95 % bootstrap interval] per candidate, the best marked
where the paired test is significant). The same study runs from a terminal:
<tt>napari-seg-uncertainty study STUDY.yaml</tt> (see docs/studies.md).""",
        "four candidates trained and compared on the cohort's test cases, opened in Cohort review",
    ),
)
STEP_BY_KEY = {step.key: step for step in STEPS}

INTRO = """
<b>Guided workflow.</b> Press the numbered buttons in order (or <b>Run all steps</b>): each fills in the
widget of that step with the demo settings, presses its button and explains here what to look at. The
widgets stay editable: change any setting and press their own buttons to explore."""

LOADING = """
<b>Loading …</b> The window is ready to use while the demo starts: PyTorch and MONAI are imported and the
demo data are built in the background, then the plugin's widgets are docked on the right and the image
and the four raters appear. The numbered buttons wake up when everything is in place."""
