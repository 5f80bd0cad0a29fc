"""The Qt-free workflow layer: its import rule, its table and figure writers, the demo's pieces."""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import napari_seg_uncertainty
from napari_seg_uncertainty.workflow import figures, tables
from napari_seg_uncertainty.workflow.demo import (
    DATASETS,
    MODELS,
    REVIEW_MIN_VOXELS,
    WORKFLOW_DATASET,
    DemoTraining,
    load_demo_data,
    planned_outputs,
    run_headless_demo,
    run_workflow,
)
from napari_seg_uncertainty.workflow.demo.steps import normalized_entropy

PACKAGE = Path(napari_seg_uncertainty.__file__).parent
GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "napari_matplotlib")


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against the package)."""
    parts = ("napari_seg_uncertainty", *path.relative_to(PACKAGE).with_suffix("").parts)
    package = parts[:-1]  # a module and an __init__.py both resolve against their folder
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
    return names


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "workflow").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_workflow_modules_import_only_core_never_widgets_or_gui(path):
    for name in _imported_modules(path):
        top = name.split(".")[0]
        assert top not in GUI_MODULES, f"{path.name} imports {name}"
        assert not name.startswith("napari_seg_uncertainty.widgets"), f"{path.name} imports {name}"


def test_importing_the_workflow_loads_no_gui_module():
    code = (
        "import sys\n"
        "import napari_seg_uncertainty.workflow.demo, napari_seg_uncertainty.workflow.figures\n"
        "import napari_seg_uncertainty.workflow.tables\n"
        "from napari_seg_uncertainty.workflow.demo import headless, outputs, steps, training\n"
        f"gui = {GUI_MODULES!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in gui or '.widgets' in m))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_demo_registry_names_the_guide_needs():
    assert WORKFLOW_DATASET in DATASETS
    assert set(MODELS) == {"svls", "ssn"}
    assert REVIEW_MIN_VOXELS == 10
    assert DemoTraining(epochs=2).config("svls", output_dir=None).epochs == 2
    with pytest.raises(ValueError, match="model must be one of"):
        DemoTraining().config("unet", output_dir=None)
    with pytest.raises(TypeError, match="name must be a demo data set name"):
        load_demo_data(2)


def test_write_rows_joins_columns_converts_numpy_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sub" / "t.csv"
    rows = [{"a": np.int64(1), "b": (1, 2)}, {"a": 2, "c": np.float32(0.5)}]
    assert tables.write_rows(path, rows, overwrite=False) == path
    with open(path, newline="") as fh:
        assert list(csv.DictReader(fh)) == [
            {"a": "1", "b": "[1, 2]", "c": ""},
            {"a": "2", "b": "", "c": "0.5"},
        ]
    with pytest.raises(FileExistsError, match="already exists"):
        tables.write_rows(path, rows[:1], overwrite=False)
    tables.write_rows(path, rows[:1], overwrite=True)
    assert path.read_text().splitlines() == ["a,b", "1,\"[1, 2]\""]
    assert sorted(p.name for p in path.parent.iterdir()) == ["t.csv"]  # no temporary file left


def test_write_csv_refuses_an_empty_table(tmp_path):
    with pytest.raises(ValueError, match="nothing to export"):
        tables.write_csv(tmp_path / "t.csv", [])
    assert not (tmp_path / "t.csv").exists()


def test_refuse_existing_names_every_existing_file(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(FileExistsError, match="a.csv"):
        tables.refuse_existing(tmp_path / "a.csv", tmp_path / "b.csv", overwrite=False)
    tables.refuse_existing(tmp_path / "a.csv", overwrite=True)


def test_save_figure_writes_a_png_atomically_and_refuses_to_overwrite(tmp_path):
    figure = figures.new_figure(2, 2)
    figure.subplots().plot([0, 1], [0, 1])
    path = tmp_path / "f.png"
    assert figures.save_figure(figure, path, overwrite=False) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError):
        figures.save_figure(figure, path, overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


def test_normalized_entropy_is_the_entropy_over_ln_c():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(6, 5)).transpose(2, 0, 1).astype(np.float32)
    probs[:, 0, 0] = [1, 0, 0, 0]
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    expected = -(probs * np.log(p)).sum(axis=0) / math.log(4)
    result = normalized_entropy(probs)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert result[0, 0] == 0.0


def test_demo_figures_draw_on_2d_and_3d_data(tmp_path):
    for name in ("phantom2d", "phantom3d"):
        image, raters = load_demo_data(name)
        entropy = raters.entropy_map()
        z, title = figures.middle_slice(raters, entropy)
        assert (z is None) == (raters.ndim == 2) and title
        maps = {"mean": np.stack([(raters.labels == k).mean(axis=0) for k in range(raters.num_classes)])}
        samples = np.repeat(raters.labels[:1], 2, axis=0)
        drawn = [
            figures.overview_figure(image, raters, entropy),
            figures.soft_labels_figure(maps, {"mean": "raters' mean"}, raters, z),
            figures.samples_figure([("as trained", samples)], raters),
            figures.maps_figure(image, {"rater entropy": entropy}, raters, z),
            figures.curves_figure({"model": [{"epoch": 1, "loss": 0.5, "val_dice": 0.4}, {"epoch": 2, "loss": 0.3}]}),
        ]
        for i, figure in enumerate(drawn):
            figures.save_figure(figure, tmp_path / name / f"{i}.png", overwrite=False)
        assert len(list((tmp_path / name).iterdir())) == len(drawn)


def test_rater_outputs_of_the_headless_demo(tmp_path):
    results = run_headless_demo(tmp_path, datasets=["phantom2d"], workflow=None)
    _, raters = load_demo_data("phantom2d")
    metrics = json.loads((tmp_path / "phantom2d" / "metrics.json").read_text())
    assert results["phantom2d"].workflow is None
    assert metrics == json.loads(json.dumps(results["phantom2d"].to_dict()))
    assert list(metrics) == [
        "dataset",
        "description",
        "shape",
        "spacing",
        "num_raters",
        "class_names",
        "summary",
        "mean_rater_entropy",
        "files",
    ]
    assert sorted(metrics["files"]) == sorted(f"phantom2d/{p}" for p in planned_outputs(raters, workflow=False))
    assert sorted(p.name for p in (tmp_path / "phantom2d").iterdir() if p.name.startswith(".")) == []
    with pytest.raises(FileExistsError, match="already exists"):
        run_headless_demo(tmp_path, datasets=["phantom2d"], workflow=None)


def test_run_workflow_checks_its_inputs_before_writing(tmp_path):
    image, raters = load_demo_data("phantom2d")
    with pytest.raises(TypeError, match="raters must be a RaterSet"):
        run_workflow(image, raters.labels, tmp_path)
    with pytest.raises(ValueError, match="expected the raters' grid"):
        run_workflow(image[:10], raters, tmp_path)
    with pytest.raises(TypeError, match="training must be a DemoTraining"):
        run_workflow(image, raters, tmp_path, training={"epochs": 1})
    assert list(tmp_path.iterdir()) == []


def test_demo_cohort_holds_generated_cases_and_the_shown_case_as_a_test_case(tmp_path):
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.workflow.demo import SHOWN_CASE, make_demo_cohort
    from napari_seg_uncertainty.workflow.demo.cohort import cohort_outputs

    image, raters = load_demo_data("phantom2d")
    demo = make_demo_cohort(tmp_path, image, raters, n_cases=4, seed=1)
    assert len(demo.cohort) == 5 and demo.cohort.class_names == raters.class_names
    assert SHOWN_CASE in demo.split["test"] and SHOWN_CASE not in demo.split["train"] + demo.split["val"]
    assert demo.split == load_cohort(demo.manifest).manifest_split()
    assert sorted(os.path.relpath(f, tmp_path) for f in demo.files) == sorted(cohort_outputs(raters))
    assert all(os.path.exists(f) for f in demo.files)
    assert demo.to_dict()["generated_cases"] == 4
    np.testing.assert_array_equal(demo.cohort.load_case(SHOWN_CASE).raters, raters.labels)
    with pytest.raises(FileExistsError):
        make_demo_cohort(tmp_path, image, raters, n_cases=4, seed=1)
    assert len(make_demo_cohort(tmp_path, image, raters, n_cases=4, seed=1, overwrite=True).cohort) == 5
