"""The demo: the plugin's workflow on shipped data, in a napari window or headless into a folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .core.io import write_image
from .core.phantom import make_phantom_raters, make_real_raters
from .core.raters import RaterSet

__all__ = ["DATASETS", "load_demo_data", "run_gui_demo", "run_headless_demo"]

#: Demo data sets: name -> description.
DATASETS = {
    "phantom2d": "synthetic 2-D phantom, 4 raters (organ, lesion, nodule)",
    "phantom3d": "synthetic 3-D phantom with 2.5 x 1 x 1 voxels, 4 raters",
    "ct2d": "real CT slice (pydicom test data), 4 simulated raters",
    "mr3d": "real MR head volume (nibabel test data), 4 simulated raters",
}


def load_demo_data(name: str, *, seed: int = 0) -> tuple[np.ndarray, RaterSet]:
    """Image and raters of demo data set ``name`` (a key of :data:`DATASETS`)."""
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


def _overview_png(path: Path, image: np.ndarray, raters: RaterSet, entropy: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if raters.ndim == 3:
        z = int(np.argmax(entropy.sum(axis=(1, 2))))
        image, labels, entropy = image[z], raters.labels[:, z], entropy[z]
        title = f"slice z={z}"
    else:
        labels, title = raters.labels, "2-D"
    aspect = raters.scale[-2] / raters.scale[-1]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), constrained_layout=True)
    axes[0].imshow(image, cmap="gray", aspect=aspect)
    axes[0].set_title(f"image ({title})")
    axes[1].imshow(image, cmap="gray", aspect=aspect)
    colours = plt.get_cmap("tab10")
    for r in range(raters.num_raters):
        for k in range(1, raters.num_classes):
            mask = labels[r] == k
            if mask.any():
                axes[1].contour(mask, levels=[0.5], colors=[colours(r)], linewidths=0.8)
    axes[1].set_title(f"{raters.num_raters} raters' outlines")
    im = axes[2].imshow(entropy, cmap="magma", vmin=0, vmax=1, aspect=aspect)
    axes[2].set_title("rater entropy (normalised)")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.set_axis_off()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_headless_demo(out: str | os.PathLike, *, datasets: list[str] | None = None, overwrite: bool = False,
                      seed: int = 0) -> dict[str, Any]:
    """Run the demo without a display and write every output into ``out``.

    For each data set: the image and each rater as NIfTI (with spacing), the agreement maps
    (one vector NIfTI, classes as components), the rater entropy map, the per-class summary and
    pairwise Dice as CSV, a PNG overview, and ``metrics.json`` with the numbers.

    Parameters
    ----------
    out : path
        Output folder (created if missing). Existing files are never replaced unless ``overwrite``.
    datasets : list of str, optional
        Keys of :data:`DATASETS`; default all.
    overwrite : bool
        Allow replacing files from an earlier run.
    seed : int
        Random seed for the simulated raters.

    Returns
    -------
    dict
        Per data set, the metrics written to ``metrics.json``.
    """
    out = Path(out)
    datasets = list(DATASETS) if datasets is None else datasets
    unknown = [d for d in datasets if d not in DATASETS]
    if unknown:
        raise ValueError(f"unknown demo data {unknown}; choose from {', '.join(DATASETS)}.")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in datasets:
        folder = out / name
        folder.mkdir(exist_ok=True)
        image, raters = load_demo_data(name, seed=seed)
        geo = {"spacing": raters.spacing, "origin": raters.origin, "overwrite": overwrite}
        written = [write_image(folder / "image.nii.gz", image, **geo)]
        for rname, labels in zip(raters.rater_names, raters.labels):
            written.append(write_image(folder / f"{rname.replace(' ', '_')}.nii.gz", labels, **geo))
        agreement = raters.agreement_map()
        entropy = raters.entropy_map()
        written.append(write_image(folder / "agreement.nii.gz", agreement, channel_axis=0, **geo))
        written.append(write_image(folder / "rater_entropy.nii.gz", entropy, **geo))
        summary = raters.summary()
        summary_path = folder / "summary.csv"
        if summary_path.exists() and not overwrite:
            raise FileExistsError(f"{summary_path} exists; pass --overwrite or choose another --out folder.")
        written.append(summary.to_csv(summary_path))
        dice = raters.pairwise_dice()
        dice_path = folder / "pairwise_dice.csv"
        if dice_path.exists() and not overwrite:
            raise FileExistsError(f"{dice_path} exists; pass --overwrite or choose another --out folder.")
        with open(dice_path, "w") as fh:
            fh.write("class,rater_a,rater_b,dice\n")
            for k, cname in enumerate(raters.class_names):
                for i, a in enumerate(raters.rater_names):
                    for j, b in enumerate(raters.rater_names):
                        fh.write(f"{cname},{a},{b},{dice[k, i, j]:.6f}\n")
        written.append(str(dice_path))
        png = folder / "overview.png"
        if png.exists() and not overwrite:
            raise FileExistsError(f"{png} exists; pass --overwrite or choose another --out folder.")
        _overview_png(png, image, raters, entropy)
        written.append(str(png))
        metrics = {
            "dataset": name,
            "description": DATASETS[name],
            "shape": list(raters.shape),
            "spacing": list(raters.scale),
            "num_raters": raters.num_raters,
            "class_names": raters.class_names,
            "summary": summary.rows,
            "mean_rater_entropy": float(entropy.mean()),
            "files": [os.path.relpath(w, out) for w in written],
        }
        with open(folder / "metrics.json", "w") as fh:
            json.dump(metrics, fh, indent=2, default=float)
        results[name] = metrics
    return results


def run_gui_demo(dataset: str = "phantom2d", *, seed: int = 0, viewer: Any = None) -> Any:
    """Show the demo data in napari with the plugin's widgets docked; returns the viewer.

    A new viewer is opened unless ``viewer`` is given.
    """
    from ._sample_data import rater_layer_data
    from .widgets.load_raters import LoadRatersWidget

    image, raters = load_demo_data(dataset, seed=seed)
    if viewer is None:
        import napari

        viewer = napari.Viewer(title=f"napari-seg-uncertainty demo — {DATASETS[dataset]}")
    for data, kwargs, kind in rater_layer_data(image, raters):
        layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
        if kind == "labels":
            layer.visible, layer.contour, layer.opacity = True, 1, 0.9  # every rater's outline over the image
    loader = LoadRatersWidget(viewer)
    viewer.window.add_dock_widget(loader, name="Load raters", area="right")
    loader.load_from_layers(raters.rater_names)
    viewer.reset_view()
    return viewer
