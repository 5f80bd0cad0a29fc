"""The demo command, headless and in a viewer."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from napari_seg_uncertainty.cli import main
from napari_seg_uncertainty.core.io import read_image
from napari_seg_uncertainty.demo import load_demo_data, run_gui_demo


def test_headless_demo_console_script_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "napari_seg_uncertainty.cli", "demo", "--headless", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for name in ("phantom2d", "phantom3d", "ct2d", "mr3d"):
        folder = out / name
        metrics = json.loads((folder / "metrics.json").read_text())
        for rel in metrics["files"]:
            assert (out / rel).exists(), rel
        image, raters = load_demo_data(name)
        arr, meta = read_image(folder / "rater_1.nii.gz")
        np.testing.assert_array_equal(arr, raters.labels[0])
        assert meta.spacing == pytest.approx(raters.scale)
        # the CSV's Dice equals an independent overlap count
        with open(folder / "pairwise_dice.csv") as fh:
            rows = list(csv.DictReader(fh))
        row = next(r for r in rows if r["class"] == raters.class_names[1] and r["rater_a"] == raters.rater_names[0]
                   and r["rater_b"] == raters.rater_names[1])
        a, b = raters.labels[0] == 1, raters.labels[1] == 1
        assert float(row["dice"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-6)
    assert "mean pairwise Dice" in result.stdout


def test_headless_demo_never_overwrites(tmp_path, capsys):
    assert main(["demo", "--headless", "--out", str(tmp_path), "--data", "phantom2d"]) == 0
    before = (tmp_path / "phantom2d" / "rater_1.nii.gz").read_bytes()
    assert main(["demo", "--headless", "--out", str(tmp_path), "--data", "phantom2d"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "phantom2d" / "rater_1.nii.gz").read_bytes() == before
    assert main(["demo", "--headless", "--out", str(tmp_path), "--data", "phantom2d", "--overwrite"]) == 0


def test_headless_needs_out(capsys):
    assert main(["demo", "--headless"]) == 2
    assert "--out" in capsys.readouterr().err


def test_gui_demo_docks_widget_with_raters_loaded(make_napari_viewer):
    viewer = make_napari_viewer()
    run_gui_demo("phantom2d", viewer=viewer)
    assert "Load raters" in viewer.window.dock_widgets
    assert "rater entropy" in viewer.layers
    assert sum(layer._type_string == "labels" for layer in viewer.layers) == 4
