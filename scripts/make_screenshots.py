"""Take the documentation's screenshots from the real app: ``docs/images/*.png``.

Runs the GUI demo (``napari-seg-uncertainty demo``) in a real napari window, presses the Guide's step
buttons in order, waits for each step to finish and grabs the whole window after each one. The last
picture, ``07-3d-case.png``, is a user's own 3-D scan with a non-zero origin: a folder of NIfTI files
written here, loaded in a new window through *Load raters* and *Soft labels* opened from the Plugins
menu. Every setting changed beyond the Guide's buttons is listed in ``SCREENSHOTS`` and in
docs/user-guide.md, so that a reader can reproduce each picture by hand.

Without a display, run it under a virtual X server::

    xvfb-run -a -s "-screen 0 1920x1080x24" python scripts/make_screenshots.py

Options: ``--out DIR`` (default docs/images), ``--width``/``--height`` of the window (default
1700 x 1000), ``--colors N`` (PNG palette size; default 256 keeps each file small), ``--only NAME …``
(take only these pictures and press only their Guide steps, e.g. ``--only 07-3d-case.png``; the
pictures 03–06 need the steps of the ones before them, so list those too).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (file name, Guide steps to run (comma-separated), what the script does afterwards, caption)
SCREENSHOTS: list[tuple[str, str | None, str, str]] = [
    (
        "01-raters.png",
        None,
        "tab:load_raters",
        "Four raters' outlines over the phantom, the rater entropy map and the pairwise Dice table.",
    ),
    (
        "02-soft-labels.png",
        "soft_labels",
        "tab:soft_labels",
        "mSVLS soft labels (organ red, lesion green, nodule blue) compared with the one-hot majority vote.",
    ),
    (
        "03-training.png",
        "train_svls",
        "tab:curves",
        "Training curves of the U-Net on mSVLS targets and its entropy map.",
    ),
    (
        "04-ssn-samples.png",
        "train_ssn,ssn_samples",
        "ssn:lesion=3,sample=3",
        "SSN samples with the lesion's noise scale at 3 (sample 3 shown), each sample's Dice vs the mean.",
    ),
    (
        "05-calibration.png",
        "calibration",
        "tab:calibration",
        "Reliability diagrams and ECE/TACE/NLL/Brier of the two models against the raters.",
    ),
    (
        "06-uncertainty.png",
        "uncertainty",
        "tab:uncertainty",
        "SSN entropy map, the review table ranked by segment entropy and the Dice against each rater.",
    ),
    (
        "07-3d-case.png",
        None,
        "case3d",
        "A 3-D case of our own (40×128×128 voxels of 3 × 0.8 × 0.8 mm, origin (10, −40, −50)) loaded from a "
        "folder of NIfTI files, with mSVLS soft labels: every layer lies on the anatomy in world coordinates.",
    ),
]

#: The 3-D case of ``07-3d-case.png``: shape, spacing and origin in numpy order (Z, Y, X), as in the user guide.
CASE3D_SHAPE = (40, 128, 128)
CASE3D_SPACING = (3.0, 0.8, 0.8)
CASE3D_ORIGIN = (10.0, -40.0, -50.0)
CASE3D_CLASSES = "background, organ, lesion, nodule"


def _pump(seconds: float) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _wait(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} did not finish within {timeout:.0f} s.")
        QApplication.processEvents()
        time.sleep(0.05)


def _save(viewer, path: Path, *, colors: int) -> int:
    """Grab the whole window, reduce it to a ``colors`` palette and write an optimised PNG."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    _pump(0.8)
    for widget in QApplication.topLevelWidgets() + viewer.window._qt_window.findChildren(
        NapariQtNotification
    ):
        if isinstance(widget, NapariQtNotification):  # toasts would hide part of the canvas
            widget.close()
    _pump(0.3)
    pixels = viewer.screenshot(canvas_only=False, flash=False)
    image = Image.fromarray(pixels[..., :3])
    if colors:
        image = image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path.stat().st_size


def _apply(guide, action: str) -> None:
    """The extra settings of one screenshot (documented in docs/user-guide.md)."""
    for part in action.split(","):
        key, _, value = part.partition(":") if part.startswith("tab:") else part.partition("=")
        if key == "tab":
            guide.show_tab(value)
        elif key == "ssn:lesion":
            widget = guide.widget("ssn_samples")
            guide.show_tab("ssn_samples")
            slider = next(s for s in widget._class_sliders if s.label == "lesion")
            slider.value = float(value)
            _wait(lambda w=widget: not w.busy, timeout=120, what="redrawing the samples")
        elif key == "sample":
            guide.viewer.dims.set_point(0, float(value))
            widget = guide.widget("ssn_samples")
            _wait(lambda w=widget: not w.busy, timeout=120, what="drawing the sample")
        else:
            raise ValueError(f"unknown screenshot action {part!r}")


def write_case3d(folder: Path) -> Path:
    """Write the 3-D case as a user would have it: ``image.nii.gz`` and ``rater_1..4.nii.gz`` with spacing
    and a non-zero origin (a phantom of ``core.phantom``, written with SimpleITK)."""
    import numpy as np
    import SimpleITK as sitk

    from napari_seg_uncertainty.core.phantom import make_phantom_raters

    image, raters = make_phantom_raters(3, shape=CASE3D_SHAPE, seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"image": (image * 1000.0 - 200.0).astype(np.int16)}  # CT-like numbers
    arrays.update({f"rater_{i + 1}": np.asarray(labels, dtype=np.uint8) for i, labels in enumerate(raters.labels)})
    for name, array in arrays.items():
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(tuple(reversed(CASE3D_SPACING)))  # SimpleITK orders X, Y, Z
        volume.SetOrigin(tuple(reversed(CASE3D_ORIGIN)))
        sitk.WriteImage(volume, str(folder / f"{name}.nii.gz"))
    return folder


def _plugin_widget(viewer, name: str):
    """Open widget ``name`` from the Plugins menu, as a user would, and return it."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-seg-uncertainty", name)
    return widget


def case3d_viewer(*, width: int, height: int):
    """A fresh window, as a user with their own scan has it: *Load raters* and *Soft labels* opened
    from the Plugins menu, the 3-D case loaded from its folder, mSVLS soft labels computed, the slice
    through the lesion in 2-D and the *Load raters* tab in front."""
    import napari

    folder = write_case3d(Path(tempfile.mkdtemp(prefix="napari-screenshots-")) / "case3d")
    viewer = napari.Viewer(show=True, title="napari")
    viewer.window._qt_window.resize(width, height)
    loader = _plugin_widget(viewer, "Load raters")
    soft = _plugin_widget(viewer, "Soft labels")
    _pump(1.0)
    loader._class_names.value = CASE3D_CLASSES
    loader.load_from_path(str(folder))
    _wait(lambda: loader.statistics is not None and not loader.busy, timeout=300, what="loading the 3-D case")
    _pump(0.5)
    raters = [layer for layer in viewer.layers if (layer.metadata or {}).get("rater_color")]
    soft._live.value = False
    soft._raters.value = raters
    soft._method.value = "msvls"
    soft._compare.value = "(none)"  # only the soft labels: the outlines stay readable
    soft.compute()
    _wait(lambda: soft.result is not None and not soft.busy, timeout=300, what="the 3-D soft labels")
    for layer in viewer.layers:
        if layer.name.startswith(("agreement", "soft A: background", "soft A: organ")):
            layer.visible = False  # the organ's soft label would tint the whole organ: the lesion's and nodule's show
        elif layer.name.startswith("soft A: "):
            layer.opacity = 0.7
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, CASE3D_ORIGIN[0] + CASE3D_SPACING[0] * (CASE3D_SHAPE[0] // 2))
    viewer.layers.selection.active = viewer.layers["image"]
    _show_dock(viewer, "Load raters")
    viewer.reset_view()
    _pump(1.0)
    return viewer


def _show_dock(viewer, title: str) -> None:
    from qtpy.QtWidgets import QDockWidget

    for dock in viewer.window._qt_window.findChildren(QDockWidget):
        if dock.windowTitle() == title:
            dock.show()
            dock.raise_()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for the PNG files")
    parser.add_argument("--width", type=int, default=1700)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--colors", type=int, default=256, help="PNG palette size (0: full colour)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="NAME",
        help="take only these screenshots and run only their Guide steps (e.g. 07-3d-case.png)",
    )
    args = parser.parse_args(argv)

    # a private napari settings file: no notifications over the canvas, the user's settings untouched
    settings_dir = tempfile.mkdtemp(prefix="napari-screenshots-")
    os.environ["NAPARI_CONFIG"] = os.path.join(settings_dir, "settings.yaml")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import napari
    from napari.settings import get_settings

    from napari_seg_uncertainty.widgets.demo_window import run_gui_demo

    get_settings().application.gui_notification_level = "none"
    viewer = napari.Viewer(show=True, title="napari-seg-uncertainty demo")
    viewer.window._qt_window.resize(args.width, args.height)
    guide = run_gui_demo("phantom2d", viewer=viewer)
    _pump(1.0)
    out = Path(args.out)
    started = time.monotonic()
    for name, steps, action, caption in SCREENSHOTS:
        if args.only is not None and name not in args.only:
            continue  # neither the picture nor its Guide steps
        for step in steps.split(",") if steps else []:
            guide._buttons[step].native.click()  # the Guide's own button, as a user would press it
            _wait(lambda: not guide.busy, timeout=900, what=f"step {step}")
            if guide._status.value.startswith("Stopped"):
                print(f"step {step} failed: {guide._status.value}", file=sys.stderr)
                return 1
        if action == "case3d":  # a new window: the user's own scan, widgets from the Plugins menu
            viewer.close()
            viewer = case3d_viewer(width=args.width, height=args.height)
        else:
            _apply(guide, action)
        size = _save(viewer, out / name, colors=args.colors)
        print(f"{out / name}: {size / 1024:.0f} KB after {time.monotonic() - started:.0f} s — {caption}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
