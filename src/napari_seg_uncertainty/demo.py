"""The demo: the plugin's whole workflow on shipped data, in a napari window or headless into a folder.

The workflow (the same in both forms):

1. **Raters**: load the raters of a demo data set and measure how much they disagree
   (pairwise Dice, agreement maps, rater entropy).
2. **Soft labels**: one-hot (majority vote), label smoothing, SVLS, mSVLS, the raters' mean and
   STAPLE, compared with each other.
3. **Training**: a short run of a U-Net on the mSVLS target (softmax + soft cross-entropy) and of a
   stochastic segmentation network (SSN, low-rank logits, random rater per step).
4. **SSN samples**: samples of the SSN, with the per-class noise scales and the temperature
   changed (the sliders of the *SSN samples* widget), GED² and diversity against the raters.
5. **Calibration and uncertainty**: reliability diagrams, ECE/TACE/NLL/Brier (also after temperature
   scaling), entropy and mutual-information maps, a review table ranked by segment entropy and the
   Dice of each model against each rater.

:func:`run_headless_demo` writes every output into a folder; :func:`run_gui_demo` opens napari with
the widgets docked and the *Guide* dock (:class:`~napari_seg_uncertainty.widgets.guide.WorkflowGuide`)
that walks through the same steps.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core._validation import describe
from .core.io import write_image
from .core.phantom import make_phantom_raters, make_real_raters
from .core.raters import RaterSet

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .core.training import TrainConfig

__all__ = [
    "DATASETS",
    "DemoTraining",
    "load_demo_data",
    "planned_outputs",
    "run_gui_demo",
    "run_headless_demo",
    "run_workflow",
]

#: Demo data sets: name -> description.
DATASETS = {
    "phantom2d": "synthetic 2-D phantom, 4 raters (organ, lesion, nodule)",
    "phantom3d": "synthetic 3-D phantom with 2.5 x 1 x 1 voxels, 4 raters",
    "ct2d": "real CT slice (pydicom test data), 4 simulated raters",
    "mr3d": "real MR head volume (nibabel test data), 4 simulated raters",
}
#: Data set the workflow (soft labels, training, SSN, calibration) runs on unless told otherwise.
WORKFLOW_DATASET = "phantom2d"
#: Soft-label methods written by the headless workflow, in this order (keys of ``SOFT_LABEL_METHODS``).
SOFT_LABEL_OUTPUTS = ("one_hot", "label_smoothing", "svls", "msvls", "rater_mean", "staple")
#: The two models the workflow trains: key -> (label, head, loss, target).
MODELS = {
    "svls": ("mSVLS U-Net", "softmax", "ce", "msvls"),
    "ssn": ("SSN", "ssn", "ssn", "random_rater"),
}
#: SSN sample settings of the headless workflow:
#: (file stem, title, class index, that class's noise scale, temperature).
#: ``None`` as class index leaves every class at scale 1; class 2 is the phantom's lesion.
SSN_SETTINGS = (
    ("samples", "as trained (T = 1)", None, 1.0, 1.0),
    ("samples_T0", "temperature 0 (mean)", None, 1.0, 0.0),
    ("samples_T2", "temperature 2", None, 1.0, 2.0),
    ("samples_class2_x3", "class 2 noise × 3", 2, 3.0, 1.0),
)
NUM_SSN_SAMPLES = 8
#: Predicted structures smaller than this (voxels) are left out of the review table (specks of noise).
REVIEW_MIN_VOXELS = 10


@dataclass(frozen=True)
class DemoTraining:
    """Settings of the demo's two short training runs (shared by the headless demo and the Guide).

    The defaults train each model in about 10 to 30 seconds on two CPU cores: a tiny U-Net
    (8-16-32 channels) on 2-D patches, 8 epochs of 20 steps of 8 patches.

    Attributes
    ----------
    epochs, steps_per_epoch, batch_size : int
        Run length; ``steps_per_epoch * batch_size`` patches per epoch.
    channels : tuple of int
        U-Net channels per level (strides of 2 between levels).
    learning_rate : float
        Adam learning rate (higher than the usual 1e-3 so that the short run converges).
    ssn_rank, ssn_samples : int
        Rank of the SSN covariance factor and Monte-Carlo samples per step (even).
    predict_samples : int
        SSN logit samples averaged for the SSN's probabilities.

    Examples
    --------
    >>> settings = DemoTraining(epochs=2)
    >>> config = settings.config("ssn", output_dir=None)
    >>> config.head, config.target, config.epochs
    ('ssn', 'random_rater', 2)
    """

    epochs: int = 8
    steps_per_epoch: int = 20
    batch_size: int = 8
    channels: tuple[int, ...] = (8, 16, 32)
    learning_rate: float = 5e-3
    ssn_rank: int = 4
    ssn_samples: int = 8
    predict_samples: int = 20

    def config(
        self, model: str, *, output_dir: str | os.PathLike | None, device: str = "auto", seed: int = 0
    ) -> TrainConfig:
        """The :class:`~napari_seg_uncertainty.core.training.TrainConfig` of ``model``.

        Parameters
        ----------
        model : {"svls", "ssn"}
            Which of the two demo models.
        output_dir : path or None
            Folder for ``last.pt`` and ``best.pt`` (None writes no checkpoint).
        device : str
            ``"auto"``, ``"cpu"``, ``"cuda:0"`` ...
        seed : int
            Seed of weights, patches and SSN noise.

        Returns
        -------
        TrainConfig
            2-D training (a volume trains on its slices), patch size chosen to fit the data.

        Examples
        --------
        >>> DemoTraining().config("svls", output_dir=None).target
        'msvls'
        """
        from .core.training import TrainConfig

        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}.")
        _, head, loss, target = MODELS[model]
        return TrainConfig(
            head=head,
            loss=loss,
            target=target,
            spatial_dims=2,
            channels=self.channels,
            strides=(2,) * (len(self.channels) - 1),
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            ssn_rank=self.ssn_rank,
            ssn_samples=self.ssn_samples,
            predict_samples=self.predict_samples,
            device=device,
            seed=seed,
            output_dir=None if output_dir is None else str(output_dir),
        )


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


# ---------------------------------------------------------------------------------------------------
# output files
# ---------------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return name.replace(" ", "_")


def planned_outputs(raters: RaterSet, *, workflow: bool) -> list[str]:
    """Relative paths of the files the headless demo writes for one data set.

    Parameters
    ----------
    raters : RaterSet
        The data set's raters (their names become file names).
    workflow : bool
        Include the soft-label, training, SSN, calibration and uncertainty outputs.

    Returns
    -------
    list of str
        Paths relative to the data set's folder, ``metrics.json`` last.

    Examples
    --------
    >>> _, raters = load_demo_data("phantom2d")
    >>> "calibration/reliability.png" in planned_outputs(raters, workflow=True)
    True
    """
    if not isinstance(raters, RaterSet):
        raise TypeError(f"raters must be a RaterSet, got {describe(raters)}.")
    files = [
        "input/image.nii.gz",
        *[f"input/{_safe(r)}.nii.gz" for r in raters.rater_names],
        "agreement.nii.gz",
        "rater_entropy.nii.gz",
        "summary.csv",
        "pairwise_dice.csv",
        "overview.png",
    ]
    if workflow:
        files += [f"soft_labels/{m}.nii.gz" for m in SOFT_LABEL_OUTPUTS]
        files += ["soft_labels/comparison.csv", "soft_labels/soft_labels.png"]
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
        ]
    return [*files, "metrics.json"]


def _workflow_outputs(raters: RaterSet) -> list[str]:
    """The files :func:`run_workflow` writes (the planned outputs beyond the raters' own)."""
    own = set(planned_outputs(raters, workflow=False))
    return [p for p in planned_outputs(raters, workflow=True) if p not in own]


def _refuse_existing(folder: Path, relative: Sequence[str], *, overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(folder / r) for r in relative if (folder / r).exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise FileExistsError(
            f"{', '.join(existing[:3])}{more} already exists; pass --overwrite (overwrite=True) "
            "or choose another --out folder."
        )


def _write_rows(path: Path, rows: Sequence[dict[str, Any]], *, overwrite: bool) -> str:
    """Write dict rows as CSV (temporary file renamed into place)."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _plain(v) for k, v in row.items()})
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return str(path)


def _plain(value: Any) -> Any:
    """JSON/CSV-friendly value (numpy scalars and arrays to Python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), constrained_layout=True)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure: Figure, path: Path, *, overwrite: bool, dpi: int = 100) -> str:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite or choose another --out folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            figure.savefig(stream, dpi=dpi, format=path.suffix[1:])
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return str(path)


def _middle_slice(raters: RaterSet, entropy: np.ndarray) -> tuple[int | None, str]:
    if raters.ndim == 2:
        return None, "2-D"
    z = int(np.argmax(entropy.sum(axis=(1, 2))))
    return z, f"slice z={z}"


def _plane(array: np.ndarray, z: int | None) -> np.ndarray:
    return array if z is None else array[z]


def _overview_png(
    path: Path, image: np.ndarray, raters: RaterSet, entropy: np.ndarray, *, overwrite: bool
) -> str:
    from matplotlib import colormaps

    z, title = _middle_slice(raters, entropy)
    labels = raters.labels if z is None else raters.labels[:, z]
    aspect = raters.scale[-2] / raters.scale[-1]
    figure = _new_figure(12, 4.2)
    axes = figure.subplots(1, 3)
    axes[0].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    axes[0].set_title(f"image ({title})")
    axes[1].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    colours = colormaps["tab10"]
    for r in range(raters.num_raters):
        for k in range(1, raters.num_classes):
            mask = labels[r] == k
            if mask.any() and not mask.all():
                axes[1].contour(mask, levels=[0.5], colors=[colours(r)], linewidths=0.8)
    axes[1].set_title(f"{raters.num_raters} raters' outlines")
    shown = axes[2].imshow(_plane(entropy, z), cmap="magma", vmin=0, vmax=1, aspect=aspect)
    axes[2].set_title("rater entropy (normalised)")
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    return _save_figure(figure, path, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------------
# headless demo
# ---------------------------------------------------------------------------------------------------
def _write_rater_outputs(
    folder: Path, image: np.ndarray, raters: RaterSet, *, overwrite: bool
) -> tuple[list[str], dict[str, Any]]:
    geo = {"spacing": raters.spacing, "origin": raters.origin, "overwrite": overwrite}
    (folder / "input").mkdir(parents=True, exist_ok=True)  # the case as files: Load raters reads this folder
    written = [write_image(folder / "input" / "image.nii.gz", image, **geo)]
    for rname, labels in zip(raters.rater_names, raters.labels):
        written.append(write_image(folder / "input" / f"{_safe(rname)}.nii.gz", labels, **geo))
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
    written.append(_write_rows(folder / "pairwise_dice.csv", rows, overwrite=overwrite))
    written.append(_overview_png(folder / "overview.png", image, raters, entropy, overwrite=overwrite))
    metrics = {
        "summary": summary.rows,
        "mean_rater_entropy": float(entropy.mean()),
    }
    return written, metrics


def run_headless_demo(
    out: str | os.PathLike,
    *,
    datasets: Sequence[str] | None = None,
    workflow: str | None = WORKFLOW_DATASET,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    training: DemoTraining | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the demo without a display and write every output into ``out``.

    For each data set in ``datasets`` (folder ``out/<name>/``): the image and each rater as NIfTI
    (with spacing) in ``input/`` (a folder that *Load raters* and ``load_raters`` read), the
    agreement maps (one vector NIfTI, classes as components), the rater entropy map, the per-class
    summary and pairwise Dice as CSV, a PNG overview, and ``metrics.json``.
    For the ``workflow`` data set also everything :func:`run_workflow` writes (soft labels, two
    trained models with checkpoints and predictions, SSN samples, calibration and uncertainty).

    Parameters
    ----------
    out : path
        Output folder (created if missing). Existing files are never replaced unless ``overwrite``;
        the check is made before anything is computed.
    datasets : sequence of str, optional
        Keys of :data:`DATASETS`; default all (and always the ``workflow`` data set).
    workflow : str or None
        Data set of the full workflow (default ``"phantom2d"``); None writes only the rater outputs.
    overwrite : bool
        Allow replacing files from an earlier run.
    seed : int
        Seed of the simulated raters, the training and the samples.
    device : str
        Training device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:0"`` ...
    training : DemoTraining, optional
        Training settings; default :class:`DemoTraining()`.
    log : callable, optional
        Receives one line per step (e.g. ``print``).

    Returns
    -------
    dict
        Per data set, the metrics written to its ``metrics.json``.

    Examples
    --------
    >>> import tempfile
    >>> results = run_headless_demo(tempfile.mkdtemp(), datasets=["mr3d"], workflow=None)
    >>> results["mr3d"]["num_raters"]
    4
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {describe(out)}.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {describe(overwrite)}.")
    names = list(DATASETS) if datasets is None else list(datasets)
    if isinstance(datasets, str):
        raise TypeError(
            f"datasets must be a list of names, got the string {datasets!r}; write [{datasets!r}]."
        )
    unknown = [d for d in names if d not in DATASETS]
    if unknown or (workflow is not None and workflow not in DATASETS):
        bad = unknown or [workflow]
        raise ValueError(f"unknown demo data {bad}; choose from {', '.join(DATASETS)}.")
    if workflow is not None and workflow not in names:
        names.append(workflow)
    training = DemoTraining() if training is None else training
    if not isinstance(training, DemoTraining):
        raise TypeError(f"training must be a DemoTraining, got {describe(training)}.")
    log = log or (lambda _line: None)
    out = Path(out)
    loaded = {name: load_demo_data(name, seed=seed) for name in names}
    for name, (_, raters) in loaded.items():  # refuse before computing anything
        _refuse_existing(out / name, planned_outputs(raters, workflow=name == workflow), overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, (image, raters) in loaded.items():
        folder = out / name
        folder.mkdir(exist_ok=True)
        log(
            f"[{name}] raters: {raters.num_raters} raters, classes {', '.join(raters.class_names[1:])}, "
            f"shape {raters.shape}"
        )
        written, rater_metrics = _write_rater_outputs(folder, image, raters, overwrite=overwrite)
        metrics: dict[str, Any] = {
            "dataset": name,
            "description": DATASETS[name],
            "shape": list(raters.shape),
            "spacing": list(raters.scale),
            "num_raters": raters.num_raters,
            "class_names": raters.class_names,
            **rater_metrics,
        }
        if name == workflow:
            flow = run_workflow(
                image,
                raters,
                folder,
                overwrite=overwrite,
                seed=seed,
                device=device,
                training=training,
                log=lambda line, n=name: log(f"[{n}] {line}"),
            )
            written += flow.pop("files")
            metrics["workflow"] = flow
        metrics["files"] = [os.path.relpath(w, out) for w in written] + [os.path.join(name, "metrics.json")]
        metrics_path = folder / "metrics.json"
        if metrics_path.exists() and not overwrite:
            raise FileExistsError(
                f"{metrics_path} already exists; pass --overwrite or choose another --out folder."
            )
        with open(metrics_path, "w") as fh:
            json.dump(metrics, fh, indent=2, default=_json_default)
        results[name] = metrics
    return results


def _json_default(value: Any) -> Any:
    plain = _plain(value)
    if plain is value:
        return float(value)
    return plain


# ---------------------------------------------------------------------------------------------------
# the workflow
# ---------------------------------------------------------------------------------------------------
def _train_model(key: str, run: _Run, *, training: DemoTraining, device: str) -> Any:
    from .core.training import TrainingData, train

    label = MODELS[key][0]
    raters = run.raters
    config = training.config(key, output_dir=run.folder / "training" / key, device=device, seed=run.seed)
    data = TrainingData.from_arrays(
        run.image, raters.labels, class_names=raters.class_names, spacing=raters.spacing
    )
    generator = train(config, data)
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        if record.kind == "epoch":
            extra = (
                ""
                if record.val_dice is None
                else (f", val NLL {record.val_nll:.3f}, val Dice {record.val_dice:.3f}")
            )
            run.log(f"train {label}: epoch {record.epoch}/{record.epochs} loss {record.loss:.4f}{extra}")


def _curves_figure(histories: dict[str, list[dict[str, float]]]) -> Figure:
    figure = _new_figure(9, 3.6)
    loss_axes, dice_axes = figure.subplots(1, 2)
    for key, history in histories.items():
        loss_axes.plot(
            [h["epoch"] for h in history],
            [h["loss"] for h in history],
            "o-",
            label=f"{MODELS[key][0]} train loss",
        )
        validated = [h for h in history if "val_dice" in h]
        dice_axes.plot(
            [h["epoch"] for h in validated], [h["val_dice"] for h in validated], "s-", label=MODELS[key][0]
        )
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("loss")
    loss_axes.set_yscale("log")
    loss_axes.legend(fontsize="small")
    dice_axes.set_xlabel("epoch")
    dice_axes.set_ylabel("validation Dice (foreground)")
    dice_axes.set_ylim(0, 1)
    dice_axes.legend(fontsize="small")
    return figure


def _samples_figure(rows: list[tuple[str, np.ndarray]], raters: RaterSet) -> Figure:
    from matplotlib.colors import ListedColormap

    columns = min(4, rows[0][1].shape[0])
    figure = _new_figure(2.4 * columns, 2.4 * len(rows))
    axes = np.atleast_2d(figure.subplots(len(rows), columns))
    palette = ["#000000", "#56B4E9", "#E69F00", "#CC79A7", "#009E73", "#F0E442", "#0072B2", "#D55E00"]
    colours = ListedColormap([palette[k % len(palette)] for k in range(max(raters.num_classes, 2))])
    aspect = raters.scale[-2] / raters.scale[-1]
    for r, (title, samples) in enumerate(rows):
        for c in range(columns):
            plane = samples[c] if samples.ndim == 3 else samples[c, samples.shape[1] // 2]
            axes[r, c].imshow(
                plane,
                cmap=colours,
                vmin=0,
                vmax=max(raters.num_classes - 1, 1),
                aspect=aspect,
                interpolation="nearest",
            )
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if c == 0:
                axes[r, c].set_ylabel(title, fontsize="small")
            if r == 0:
                axes[r, c].set_title(f"sample {c}", fontsize="small")
    return figure


def _maps_figure(image: np.ndarray, panels: dict[str, np.ndarray], raters: RaterSet, z: int | None) -> Figure:
    figure = _new_figure(3 * (len(panels) + 1), 3.4)
    axes = figure.subplots(1, len(panels) + 1)
    aspect = raters.scale[-2] / raters.scale[-1]
    axes[0].imshow(_plane(image, z), cmap="gray", aspect=aspect)
    axes[0].set_title("image", fontsize="small")
    for ax, (title, data) in zip(axes[1:], panels.items()):
        shown = ax.imshow(_plane(data, z), cmap="magma", vmin=0, vmax=1, aspect=aspect)
        ax.set_title(title, fontsize="small")
    for ax in axes:
        ax.set_axis_off()
    figure.colorbar(shown, ax=axes[-1], fraction=0.046)
    return figure


def _softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class _Run:
    """What the workflow steps share: inputs, settings and the list of files written."""

    image: np.ndarray
    raters: RaterSet
    folder: Path
    overwrite: bool
    seed: int
    log: Callable[[str], None]
    written: list[str]

    @property
    def geometry(self) -> dict[str, Any]:
        return {"spacing": self.raters.spacing, "origin": self.raters.origin, "overwrite": self.overwrite}

    @property
    def plane(self) -> int | None:
        return _middle_slice(self.raters, self.raters.entropy_map())[0]

    def image_file(self, relative: str, array: np.ndarray, **kwargs: Any) -> None:
        self.written.append(write_image(self.folder / relative, array, **{**self.geometry, **kwargs}))

    def rows_file(self, relative: str, rows: Sequence[dict[str, Any]]) -> None:
        self.written.append(_write_rows(self.folder / relative, rows, overwrite=self.overwrite))

    def figure_file(self, relative: str, figure: Figure) -> None:
        self.written.append(_save_figure(figure, self.folder / relative, overwrite=self.overwrite))


def _soft_label_step(run: _Run) -> dict[str, Any]:
    """Step 2: every soft-label method, its difference to the one-hot majority vote, a figure."""
    from .core.labels import SOFT_LABEL_METHODS, compare_soft_labels, compute_soft_labels

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
    figure = _new_figure(3 * len(maps), 3.4)
    axes = figure.subplots(1, len(maps))
    aspect = raters.scale[-2] / raters.scale[-1]
    for ax, (method, probs) in zip(axes, maps.items()):
        shown = ax.imshow(_plane(probs[1], run.plane), cmap="viridis", vmin=0, vmax=1, aspect=aspect)
        ax.set_title(f"{SOFT_LABEL_METHODS[method]}\np({names[1]})", fontsize="small")
        ax.set_axis_off()
    figure.colorbar(shown, ax=axes[-1], fraction=0.046)
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


def _training_step(
    run: _Run, *, training: DemoTraining, device: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, np.ndarray]]:
    """Step 3: train both models, write checkpoints, histories, predictions and the curves."""
    from .core.training import predict

    numbers: dict[str, Any] = {}
    checkpoints: dict[str, str] = {}
    probabilities: dict[str, np.ndarray] = {}
    histories: dict[str, list[dict[str, float]]] = {}
    for key, (label, _head, _loss, target) in MODELS.items():
        result = _train_model(key, run, training=training, device=device)
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
    run.figure_file("training/curves.png", _curves_figure(histories))
    return numbers, checkpoints, probabilities


def _ssn_step(run: _Run, checkpoint: str) -> tuple[dict[str, Any], Any]:
    """Step 4: the SSN's distribution, samples with changed class scales and temperature, GED²."""
    from .core.ssn import LowRankLogits, generalized_energy_distance, sample_diversity, save_distribution
    from .core.training import predict_ssn_distribution

    raters, names, num_classes = run.raters, run.raters.class_names, run.raters.num_classes
    raw = predict_ssn_distribution(checkpoint, run.image)
    distribution = LowRankLogits(
        raw.mean, raw.cov_factor, raw.cov_diag, class_names=list(names), spacing=raters.spacing,
        independent_planes=raw.independent_planes,
    )
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
    run.figure_file("ssn/samples.png", _samples_figure(figure_rows, raters))
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


def _calibration_step(run: _Run, probabilities: dict[str, np.ndarray]) -> dict[str, Any]:
    """Step 5a: calibration against the raters, before and after temperature scaling; two figures."""
    from .core.calibration import apply_temperature, calibration_summary, fit_temperature
    from .core.uncertainty import entropy_agreement
    from .widgets._calibration_plots import (
        ModelResult,
        bin_rows,
        draw_entropy_scatter,
        draw_reliability,
        metric_rows,
    )

    models = {MODELS[key][0]: probs for key, probs in probabilities.items()}
    temperatures: dict[str, float] = {}
    for label, probs in list(models.items()):
        logits = np.log(np.maximum(probs.astype(np.float64), 1e-12))  # ln p: the logits up to a constant
        temperatures[label] = fit_temperature(logits, run.raters.labels, target_kind="raters")
        scaled = apply_temperature(logits, temperature=temperatures[label]).astype(np.float32)
        models[f"{label} temperature-scaled"] = scaled
    results = [
        ModelResult(
            name,
            calibration_summary(p, run.raters.labels, target_kind="raters"),
            entropy_agreement(p, run.raters.labels, seed=run.seed),
        )
        for name, p in models.items()
    ]
    run.rows_file("calibration/bins.csv", bin_rows(results))
    run.rows_file("calibration/metrics.csv", metric_rows(results))
    originals = [r for r in results if r.name in temperatures]
    figure = _new_figure(7.5, 6.5)
    draw_reliability(figure, originals)
    run.figure_file("calibration/reliability.png", figure)
    figure = _new_figure(6.5, 5.5)
    draw_entropy_scatter(figure, originals)
    run.figure_file("calibration/entropy_scatter.png", figure)
    run.log("calibration: " + "; ".join(f"{r.name} ECE {100 * r.summary.ece:.2f}%" for r in results))
    return {
        r.name: {
            **{k: _plain(v) for k, v in r.summary.to_dict().items()},
            "entropy_mae": r.entropy.mae,
            **({"temperature": temperatures[r.name]} if r.name in temperatures else {}),
        }
        for r in results
    }


def _uncertainty_step(run: _Run, probabilities: dict[str, np.ndarray], distribution: Any) -> dict[str, Any]:
    """Step 5b: mutual information of the SSN samples, review table, Dice vs raters, a figure."""
    from .core.uncertainty import agreement_with_raters, predictive_uncertainty, structure_entropy

    raters, names = run.raters, run.raters.class_names
    logit_samples = distribution.sample(NUM_SSN_SAMPLES, seed=run.seed)
    uncertainty = predictive_uncertainty(_softmax(logit_samples.astype(np.float64), axis=1))
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
    panels = {f"{MODELS[key][0]} entropy": _normalised_entropy(probs) for key, probs in probabilities.items()}
    panels["SSN mutual information"] = uncertainty.mutual_information
    panels["rater entropy"] = raters.entropy_map()
    run.figure_file("uncertainty/uncertainty.png", _maps_figure(run.image, panels, raters, run.plane))
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


def run_workflow(
    image: np.ndarray,
    raters: RaterSet,
    folder: str | os.PathLike,
    *,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    training: DemoTraining | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Soft labels, two short trainings, SSN samples, calibration and uncertainty, written to ``folder``.

    Parameters
    ----------
    image : numpy.ndarray
        The image ``(*spatial)`` the raters annotated.
    raters : RaterSet
        Their label maps (``(R, *spatial)``), class names and spacing.
    folder : path
        Output folder; subfolders ``soft_labels``, ``training``, ``predictions``, ``ssn``,
        ``calibration`` and ``uncertainty`` are created (see :func:`planned_outputs`).
    overwrite : bool
        Replace files of an earlier run (checked before anything is computed).
    seed : int
        Seed of training and sampling.
    device : str
        Training device (``"auto"``, ``"cpu"``, ``"cuda:0"`` ...).
    training : DemoTraining, optional
        Settings of the two runs.
    log : callable, optional
        Receives one line per step.

    Returns
    -------
    dict
        The numbers (``soft_labels``, ``training``, ``ssn``, ``calibration``, ``uncertainty``) and
        ``files``, the paths written.

    Examples
    --------
    >>> import tempfile
    >>> image, raters = load_demo_data("phantom2d")
    >>> result = run_workflow(image, raters, tempfile.mkdtemp(), device="cpu",
    ...                       training=DemoTraining(epochs=1, steps_per_epoch=2))  # doctest: +SKIP
    >>> sorted(result["calibration"])  # doctest: +SKIP
    ['SSN', 'SSN temperature-scaled', 'mSVLS U-Net', 'mSVLS U-Net temperature-scaled']
    """
    if not isinstance(raters, RaterSet):
        raise TypeError(f"raters must be a RaterSet, got {describe(raters)}.")
    image = np.asarray(image)
    if image.shape != raters.shape:
        raise ValueError(f"image has shape {image.shape}; expected the raters' grid {raters.shape}.")
    training = DemoTraining() if training is None else training
    if not isinstance(training, DemoTraining):
        raise TypeError(f"training must be a DemoTraining, got {describe(training)}.")
    folder = Path(folder)
    _refuse_existing(
        folder, _workflow_outputs(raters), overwrite=overwrite
    )
    for sub in ("soft_labels", "training", "predictions", "ssn", "calibration", "uncertainty"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    run = _Run(image, raters, folder, overwrite, seed, log or (lambda _line: None), [])
    summary: dict[str, Any] = {"soft_labels": _soft_label_step(run)}
    summary["training"], checkpoints, probabilities = _training_step(run, training=training, device=device)
    summary["ssn"], distribution = _ssn_step(run, checkpoints["ssn"])
    summary["calibration"] = _calibration_step(run, probabilities)
    summary["uncertainty"] = _uncertainty_step(run, probabilities, distribution)
    summary["files"] = run.written
    return summary


def _normalised_entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    return (-(probs * np.log(p)).sum(axis=0) / math.log(probs.shape[0])).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# GUI demo
# ---------------------------------------------------------------------------------------------------
def run_gui_demo(
    dataset: str = WORKFLOW_DATASET,
    *,
    seed: int = 0,
    viewer: Any = None,
    training: DemoTraining | None = None,
    wait: bool | None = None,
) -> Any:
    """Open napari with the demo data, every widget docked and the *Guide* that walks through the workflow.

    The window answers from the moment it shows: the Guide docks first and says "Loading …" while
    PyTorch, MONAI and the demo data are prepared in a worker thread; the widgets and layers then
    arrive one per event-loop turn. A window opened here fills the screen (maximised, or fitted to the
    screen's available area), and the image is fitted to the canvas once the docks are laid out.

    Parameters
    ----------
    dataset : str
        A key of :data:`DATASETS`.
    seed : int
        Seed of the simulated raters (and of the training the Guide starts).
    viewer : napari.viewer.Viewer, optional
        Use this viewer instead of opening a new one.
    training : DemoTraining, optional
        Settings the Guide fills into the *Train* widget.
    wait : bool, optional
        Return only when the data are loaded and the widgets docked (Qt events run meanwhile).
        Default: wait when ``viewer`` is given (a script or a test goes on with a ready Guide); do not
        wait when the demo opens its own window (the event loop, ``napari.run()``, starts next).

    Returns
    -------
    WorkflowGuide
        The Guide dock widget; ``guide.viewer`` is the viewer and ``guide.widgets`` the docked widgets;
        ``guide.ready`` (and the ``guide.loaded`` signal) say when loading has finished.

    Examples
    --------
    >>> guide = run_gui_demo("phantom2d")  # doctest: +SKIP
    >>> guide.run_step("soft_labels")  # doctest: +SKIP
    """
    from .widgets.guide import WorkflowGuide

    if dataset not in DATASETS:
        raise ValueError(f"demo data {dataset!r} is unknown; choose one of {', '.join(DATASETS)}.")
    if wait is not None and not isinstance(wait, bool):
        raise TypeError(f"wait must be True, False or None, got {describe(wait)}.")
    own_window = viewer is None
    if own_window:
        import napari

        viewer = napari.Viewer(title=f"napari-seg-uncertainty demo — {DATASETS[dataset]}")
    guide = WorkflowGuide(viewer, training=training, seed=seed)
    guide.dock_guide()
    if own_window:
        _fill_screen(guide.native.window())
    guide.load_demo_data(dataset, wait=(not own_window) if wait is None else wait)
    return guide


def _fill_screen(window: Any) -> None:
    """Maximise ``window``; without a window manager (which may ignore that) fit it to the screen."""
    screen = window.screen() if hasattr(window, "screen") else None
    if screen is not None:
        area = screen.availableGeometry()
        window.setGeometry(area)  # fitted first: a bare X server has no window manager to maximise
    window.showMaximized()
