"""The steps of the headless demo: raters, soft labels, training, SSN samples, calibration, uncertainty.

Each step writes its files through a :class:`~napari_seg_uncertainty.workflow.demo.outputs.DemoRun`
and returns the numbers that go to ``metrics.json``.

References
----------
.. [1] M. Islam, B. Glocker, "Spatially varying label smoothing: capturing uncertainty from expert
   annotations", IPMI 2021.
.. [2] M. Monteiro et al., "Stochastic segmentation networks: modelling spatially correlated
   aleatoric uncertainty", NeurIPS 2020 (GED², sample diversity).
.. [3] A. Mehrtash et al., "Confidence calibration and predictive uncertainty estimation for deep
   medical image segmentation", IEEE TMI 39(12), 2020 (ECE, temperature scaling).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...core._numeric import entropy_nats, softmax
from ...core.io import write_image
from ...core.raters import RaterSet
from ..figures import (
    ModelResult,
    bin_rows,
    curves_figure,
    draw_entropy_scatter,
    draw_reliability,
    maps_figure,
    metric_rows,
    new_figure,
    overview_figure,
    samples_figure,
    save_figure,
    soft_labels_figure,
)
from ..tables import plain, write_rows
from .outputs import SOFT_LABEL_OUTPUTS, DemoRun, safe_name
from .training import MODELS, NUM_SSN_SAMPLES, SSN_SETTINGS, DemoTraining, train_demo_model

if TYPE_CHECKING:
    from ...core.ssn import LowRankLogits

__all__ = [
    "REVIEW_MIN_VOXELS",
    "calibration_step",
    "normalized_entropy",
    "rater_step",
    "soft_label_step",
    "ssn_step",
    "training_step",
    "uncertainty_step",
]

#: Predicted structures smaller than this (voxels) are left out of the review table (specks of noise).
REVIEW_MIN_VOXELS = 10


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of ``probs`` ``(C, *S)`` over classes divided by ``ln C`` (in [0, 1]), float32."""
    return (entropy_nats(probs) / math.log(probs.shape[0])).astype(np.float32)


def rater_step(
    folder: Path, image: np.ndarray, raters: RaterSet, *, overwrite: bool
) -> tuple[list[str], dict[str, Any]]:
    """Step 1: the case as files, the agreement and rater-entropy maps, summary, pairwise Dice, overview.

    Returns the paths written and the numbers for ``metrics.json``.
    """
    geo = {"spacing": raters.spacing, "origin": raters.origin, "overwrite": overwrite}
    (folder / "input").mkdir(parents=True, exist_ok=True)  # the case as files: Load raters reads this folder
    written = [write_image(folder / "input" / "image.nii.gz", image, **geo)]
    for rname, labels in zip(raters.rater_names, raters.labels):
        written.append(write_image(folder / "input" / f"{safe_name(rname)}.nii.gz", labels, **geo))
    agreement = raters.agreement_map()
    entropy = raters.entropy_map()
    written.append(write_image(folder / "agreement.nii.gz", agreement, channel_axis=0, **geo))
    written.append(write_image(folder / "rater_entropy.nii.gz", entropy, **geo))
    summary = raters.summary()
    summary_path = folder / "summary.csv"
    if summary_path.exists() and not overwrite:
        raise FileExistsError(
            f"{summary_path} already exists; pass --overwrite or choose another --out folder."
        )
    written.append(summary.to_csv(summary_path))
    dice = raters.pairwise_dice()
    rows = [
        {"class": cname, "rater_a": a, "rater_b": b, "dice": f"{dice[k, i, j]:.6f}"}
        for k, cname in enumerate(raters.class_names)
        for i, a in enumerate(raters.rater_names)
        for j, b in enumerate(raters.rater_names)
    ]
    written.append(str(write_rows(folder / "pairwise_dice.csv", rows, overwrite=overwrite)))
    overview = overview_figure(image, raters, entropy)
    written.append(save_figure(overview, folder / "overview.png", overwrite=overwrite))
    metrics = {
        "summary": summary.rows,
        "mean_rater_entropy": float(entropy.mean()),
    }
    return written, metrics


def soft_label_step(run: DemoRun) -> dict[str, Any]:
    """Step 2: every soft-label method, its difference to the one-hot majority vote, a figure."""
    from ...core.labels import SOFT_LABEL_METHODS, compare_soft_labels, compute_soft_labels

    raters, names = run.raters, run.raters.class_names
    maps = {
        method: compute_soft_labels(raters.labels, num_classes=raters.num_classes, method=method)
        for method in SOFT_LABEL_OUTPUTS
    }
    for method, probs in maps.items():
        run.image_file(f"soft_labels/{method}.nii.gz", probs, channel_axis=0)
    rows = []
    for method in SOFT_LABEL_OUTPUTS:
        comparison = compare_soft_labels(maps[method], maps["one_hot"])
        rows += [
            {
                "method": method,
                "versus": "one_hot",
                "class": cname,
                "mean_abs_difference": float(comparison.mean_abs[k]),
                "max_abs_difference": float(comparison.max_abs[k]),
                "mean_total_variation": float(comparison.mean_total_variation),
            }
            for k, cname in enumerate(names)
        ]
    run.rows_file("soft_labels/comparison.csv", rows)
    figure = soft_labels_figure(maps, SOFT_LABEL_METHODS, raters, run.plane)
    run.figure_file("soft_labels/soft_labels.png", figure)
    numbers = {
        method: {r["class"]: r["mean_abs_difference"] for r in rows if r["method"] == method}
        for method in SOFT_LABEL_OUTPUTS
    }
    run.log(
        "soft labels, mean |Δ| vs one-hot of "
        + names[1]
        + ": "
        + ", ".join(f"{m} {numbers[m][names[1]]:.4f}" for m in SOFT_LABEL_OUTPUTS[1:])
    )
    return {"mean_abs_difference_vs_one_hot": numbers}


def training_step(
    run: DemoRun, *, training: DemoTraining, device: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, np.ndarray]]:
    """Step 3: train both models on the cohort (``run.cohort``; the shown case when None), write the
    split, checkpoints, histories, predictions on the shown case and the curves."""
    import json

    from ...core._atomic import atomic_write
    from ...core.training import predict

    numbers: dict[str, Any] = {}
    checkpoints: dict[str, str] = {}
    probabilities: dict[str, np.ndarray] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    cohort = run.cohort
    if cohort is not None:
        path = run.folder / "training" / "split.json"
        with atomic_write(path, overwrite=run.overwrite) as temporary:
            temporary.write_text(json.dumps(cohort.split, indent=2) + "\n")
        run.written.append(str(path))
        run.log(
            f"cohort: {len(cohort.cohort)} cases, train {len(cohort.split['train'])}, "
            f"val {len(cohort.split['val'])}, test {len(cohort.split['test'])} (the shown case is a test case)"
        )
    for key, (label, _head, _loss, target) in MODELS.items():
        result = train_demo_model(
            key,
            run.image,
            run.raters,
            training=training,
            output_dir=run.folder / "training" / key,
            device=device,
            seed=run.seed,
            log=run.log,
            cohort=None if cohort is None else cohort.cohort,
            split=None if cohort is None else cohort.split,
        )
        checkpoints[key], histories[key] = result.checkpoint, result.history
        run.written += [result.checkpoint] + ([result.best_checkpoint] if result.best_checkpoint else [])
        run.rows_file(f"training/{key}/history.csv", result.history)
        prediction = predict(result.checkpoint, run.image, seed=run.seed)
        probabilities[key] = prediction.probabilities
        run.image_file(f"predictions/{key}_probabilities.nii.gz", prediction.probabilities, channel_axis=0)
        run.image_file(f"predictions/{key}_labels.nii.gz", prediction.labels)
        run.image_file(f"predictions/{key}_entropy.nii.gz", prediction.entropy)
        numbers[label] = {
            "checkpoint": os.path.relpath(result.checkpoint, run.folder),
            "target": target,
            "steps": result.global_step,
            "final_loss": result.history[-1]["loss"],
            "final_val_dice": result.history[-1].get("val_dice"),
            "weights_digest": result.weights_digest,
        }
    run.figure_file("training/curves.png", curves_figure({MODELS[k][0]: h for k, h in histories.items()}))
    return numbers, checkpoints, probabilities


def ssn_step(run: DemoRun, checkpoint: str) -> tuple[dict[str, Any], LowRankLogits]:
    """Step 4: the SSN's distribution, samples with changed class scales and temperature, GED²."""
    from ...core.ssn import generalized_energy_distance, sample_diversity, save_distribution
    from ...core.training import predict_ssn_distribution
    from ..ssn import distribution_from_prediction

    raters, names, num_classes = run.raters, run.raters.class_names, run.raters.num_classes
    prediction = predict_ssn_distribution(checkpoint, run.image)
    distribution = distribution_from_prediction(prediction, spacing=raters.spacing)
    run.written.append(
        str(save_distribution(run.folder / "ssn" / "distribution.npz", distribution, overwrite=run.overwrite))
    )
    figure_rows: list[tuple[str, np.ndarray]] = []
    settings: dict[str, Any] = {}
    for stem, title, class_index, factor, temperature in SSN_SETTINGS:
        scales = [1.0] * num_classes
        if class_index is not None and class_index < num_classes:
            scales[class_index] = factor
            title = title.replace(f"class {class_index}", names[class_index])
        samples = (
            distribution.with_class_scales(scales)
            .with_temperature(temperature)
            .sample_labels(NUM_SSN_SAMPLES, seed=run.seed)
        )
        run.image_file(f"ssn/{stem}.tif", samples, channel_axis=0)  # samples along the first axis
        figure_rows.append((title, samples))
        settings[stem] = {
            "title": title,
            "class_scales": scales,
            "temperature": temperature,
            "ged2": generalized_energy_distance(samples, raters.labels, num_classes=num_classes),
            "sample_diversity": sample_diversity(samples, num_classes=num_classes),
        }
    run.figure_file("ssn/samples.png", samples_figure(figure_rows, raters))
    numbers = {
        "rank": distribution.rank,
        "num_samples": NUM_SSN_SAMPLES,
        "settings": settings,
        "rater_diversity": sample_diversity(raters.labels, num_classes=num_classes),
    }
    run.log(
        f"SSN samples: GED² {settings['samples']['ged2']:.4f}, sample diversity "
        f"{settings['samples']['sample_diversity']:.4f}, rater diversity {numbers['rater_diversity']:.4f}"
    )
    return numbers, distribution


def calibration_step(run: DemoRun, probabilities: dict[str, np.ndarray]) -> dict[str, Any]:
    """Step 5a: calibration against the raters, before and after temperature scaling; two figures."""
    from ...core.calibration import apply_temperature, calibration_summary, fit_temperature
    from ...core.uncertainty import entropy_agreement

    models = {MODELS[key][0]: probs for key, probs in probabilities.items()}
    temperatures: dict[str, float] = {}
    for label, probs in list(models.items()):
        logits = np.log(np.maximum(probs.astype(np.float64), 1e-12))  # ln p: the logits up to a constant
        temperatures[label] = fit_temperature(logits, run.raters.labels)
        scaled = apply_temperature(logits, temperature=temperatures[label]).astype(np.float32)
        models[f"{label} temperature-scaled"] = scaled
    results = [
        ModelResult(
            name,
            calibration_summary(p, run.raters.labels),
            entropy_agreement(p, run.raters.labels, seed=run.seed),
        )
        for name, p in models.items()
    ]
    run.rows_file("calibration/bins.csv", bin_rows(results))
    run.rows_file("calibration/metrics.csv", metric_rows(results))
    originals = [r for r in results if r.name in temperatures]
    figure = new_figure(7.5, 6.5)
    draw_reliability(figure, originals)
    run.figure_file("calibration/reliability.png", figure)
    figure = new_figure(6.5, 5.5)
    draw_entropy_scatter(figure, originals)
    run.figure_file("calibration/entropy_scatter.png", figure)
    run.log("calibration: " + "; ".join(f"{r.name} ECE {100 * r.summary.ece:.2f}%" for r in results))
    return {
        r.name: {
            **{k: plain(v) for k, v in r.summary.to_dict().items()},
            "entropy_mae": r.entropy.mae,
            **({"temperature": temperatures[r.name]} if r.name in temperatures else {}),
        }
        for r in results
    }


def uncertainty_step(
    run: DemoRun, probabilities: dict[str, np.ndarray], distribution: LowRankLogits
) -> dict[str, Any]:
    """Step 5b: mutual information of the SSN samples, review table, Dice vs raters, a figure."""
    from ...core.uncertainty import agreement_with_raters, predictive_uncertainty, structure_entropy

    raters, names = run.raters, run.raters.class_names
    logit_samples = distribution.sample(NUM_SSN_SAMPLES, seed=run.seed)
    uncertainty = predictive_uncertainty(softmax(logit_samples, axis=1, dtype=np.float64))
    run.image_file(
        "uncertainty/ssn_mutual_information.nii.gz", uncertainty.mutual_information.astype(np.float32)
    )
    review = [
        {
            "model": MODELS[key][0],
            "class": names[s.class_index],
            "class_index": s.class_index,
            "structure": s.component,
            "voxels": s.voxels,
            "mean_entropy": s.mean_entropy,
            "centroid": " ".join(f"{c:.1f}" for c in s.centroid),
        }
        for key, probs in probabilities.items()
        for s in structure_entropy(probs, min_voxels=REVIEW_MIN_VOXELS)
    ]
    review.sort(key=lambda r: (-r["mean_entropy"], -r["voxels"]))
    run.rows_file("uncertainty/review.csv", review)
    dice_rows = [
        {"model": MODELS[key][0], **asdict(row)}
        for key, probs in probabilities.items()
        for row in agreement_with_raters(
            np.argmax(probs, axis=0),
            raters.labels,
            num_classes=raters.num_classes,
            spacing=raters.spacing,
            rater_names=raters.rater_names,
        )
    ]
    run.rows_file("uncertainty/dice_vs_raters.csv", dice_rows)
    panels = {f"{MODELS[key][0]} entropy": normalized_entropy(probs) for key, probs in probabilities.items()}
    panels["SSN mutual information"] = uncertainty.mutual_information
    panels["rater entropy"] = raters.entropy_map()
    run.figure_file("uncertainty/uncertainty.png", maps_figure(run.image, panels, raters, run.plane))
    top = review[0] if review else None
    run.log(
        f"uncertainty: {len(review)} structures ranked; most uncertain: "
        + (f"{top['model']} {top['class']} ({top['mean_entropy']:.3f})" if top else "none")
    )
    return {
        "mean_entropy": {
            MODELS[key][0]: float(panels[f"{MODELS[key][0]} entropy"].mean()) for key in probabilities
        },
        "mean_ssn_mutual_information": float(uncertainty.mutual_information.mean()),
        "most_uncertain_structure": top,
    }
