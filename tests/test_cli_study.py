"""``napari-seg-uncertainty study``: a tiny study end to end, the dry-run plan, resuming, bad study files."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml

from napari_seg_uncertainty.cli import main
from napari_seg_uncertainty.cli_study import plan_lines

TINY = {
    "name": "tiny",
    "cohort": {"phantom": {"n_cases": 6, "ndim": 2, "num_raters": 2, "num_classes": 2, "shape": [32, 32]}},
    "split": {"val": 0.2, "test": 0.4, "seed": 0},
    "base": {
        "epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "channels": [4, 8], "strides": [2],
        "num_workers": 0, "amp": False, "device": "cpu",
    },
    "candidates": [{"name": "onehot", "config": {"target": "onehot"}}, {"name": "svls", "config": {"target": "svls"}}],
    "seeds": [0],
    "evaluate": {"num_resamples": 200},
    "table": {"metrics": ["organ:dice", "all:ece_reference_volume"]},
}  # fmt: skip


def write_study(folder, study=TINY, name="tiny.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny study run once through ``main``: two candidates, one seed, a generated 6-case cohort
    (capsys is per test: the output is captured here)."""
    folder = tmp_path_factory.mktemp("study")
    study, out = write_study(folder), folder / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["study", str(study), "--out", str(out)])
    return study, out, code, stdout.getvalue(), stderr.getvalue()


def test_a_tiny_study_runs_end_to_end_and_prints_its_table(tiny_run):
    _study, out, code, stdout, stderr = tiny_run
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == f"study tiny: 2 runs into {out}"
    assert any("onehot/seed0" in line and "new (trains from scratch)" in line for line in lines)
    for phase in ("[cohort]", "[train]", "[evaluate]", "[table]"):
        assert any(line.startswith(phase) for line in lines), phase
    # the printed table is study.md as written
    table = (out / "study.md").read_text().rstrip()
    assert table in stdout
    assert "2 run(s) trained, 0 finished run(s) kept." in stdout
    # the runner's warning about too few test cases is a note after the table, not a Python warning
    assert "note: with 2 test cases and 2 candidates no Wilcoxon difference can reach alpha = 0.05" in stdout
    assert "UserWarning" not in stderr
    written = [line.removeprefix("wrote ") for line in lines if line.startswith("wrote ")]
    for name in ("study.md", "study.csv", "study.png", "qc.png"):
        assert str(out / name) in written
    assert all((out / p).exists() for p in written)
    for run in ("onehot", "svls"):
        assert (out / "runs" / run / "seed0" / "last.pt").is_file()


def test_the_table_means_are_the_case_means_of_the_evaluation(tiny_run):
    """study.csv's mean per candidate and metric, against the per-case rows of evaluation/cases.csv."""
    _study, out, code, _stdout, stderr = tiny_run
    assert code == 0, stderr
    with open(out / "evaluation" / "cases.csv") as handle:
        cases = list(csv.DictReader(handle))
    with open(out / "study.csv") as handle:
        table = list(csv.DictReader(handle))
    checked = 0
    for row in table:
        class_name, metric = row["metric"].split(":")
        values = [
            float(c["value"]) for c in cases
            if c["candidate"] == f"{row['candidate']}/seed0" and c["class"] == class_name and c["metric"] == metric
        ]  # fmt: skip
        values = [v for v in values if not math.isnan(v)]
        assert values, row
        assert float(row["mean"]) == pytest.approx(np.mean(values), abs=1e-9)
        checked += 1
    assert checked == 4  # two candidates x two metrics


def test_a_second_run_keeps_the_finished_runs_and_the_dry_run_says_so(tiny_run, capsys):
    study, out, code, _stdout, stderr = tiny_run
    assert code == 0, stderr
    checkpoint = out / "runs" / "onehot" / "seed0" / "last.pt"
    before = checkpoint.read_bytes()
    assert main(["study", str(study), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 runs: 2 finished, 0 to resume, 0 new" in printed
    assert "finished (kept, not retrained)" in printed and "dry run: nothing was trained or written." in printed
    assert main(["study", str(study), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "0 run(s) trained, 2 finished run(s) kept." in printed
    assert checkpoint.read_bytes() == before


def test_the_dry_run_plans_new_runs_and_writes_nothing(tmp_path, capsys):
    study = write_study(tmp_path)
    out = tmp_path / "out"
    assert main(["study", str(study), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1:4] == [
        f"  onehot/seed0  new (trains from scratch)  {out / 'runs' / 'onehot' / 'seed0'}",
        f"  svls/seed0    new (trains from scratch)  {out / 'runs' / 'svls' / 'seed0'}",
        "  2 runs: 0 finished, 0 to resume, 2 new",
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({**TINY, "epochs": 3}, "unknown key(s) ['epochs']"),
        ({**TINY, "base": {**TINY["base"], "epoch": 3}}, "epoch"),
        ({**TINY, "candidates": [{"name": "a", "config": {"target": "fuzzy"}}]}, "candidate 'a'"),
        ({**TINY, "seeds": [0, 0]}, "seeds lists a seed twice"),
    ],
)
def test_a_bad_study_file_is_one_error_line_and_exit_code_2(tmp_path, capsys, study, message):
    path = write_study(tmp_path, study)
    assert main(["study", str(path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_files_and_options_that_do_not_work_are_one_error_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    for argv in (
        ["study", str(tmp_path / "missing.yaml")],
        ["study", str(broken), "--out", str(tmp_path / "out")],
        ["study"],
        ["study", "--example", "nonesuch", "--out", str(tmp_path / "out")],
        ["study", str(write_study(tmp_path)), "--out", str(tmp_path / "out"), "--jobs", "0"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (argv, err)


def test_the_packaged_examples_are_listed_and_plan(tmp_path, capsys):
    assert main(["study", "--list-examples"]) == 0
    listed = capsys.readouterr().out
    for name in ("svls", "msvls", "softseg", "mehrtash"):
        assert any(line.startswith(name + " ") for line in listed.splitlines()), name
    assert main(["study", "--example", "svls", "--out", str(tmp_path / "svls"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "new (trains from scratch)" in printed and not (tmp_path / "svls").exists()
    assert main(["study", "--example", "svls", "--dry-run"]) == 2
    assert "--example svls needs --out DIR" in capsys.readouterr().err


def test_plan_lines_count_each_status():
    from types import SimpleNamespace as Run

    runs = [Run(run_id="a/seed0", status="finished", folder="x"), Run(run_id="a/seed1", status="resume", folder="y"),
            Run(run_id="b/seed0", status="new", folder="z")]
    assert plan_lines(runs)[-1] == "3 runs: 1 finished, 1 to resume, 1 new"
    assert "interrupted (resumes from last.pt)" in plan_lines(runs)[1]


def test_the_console_script_names_the_study_command():
    result = subprocess.run(
        [sys.executable, "-m", "napari_seg_uncertainty.cli", "study", "--help"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0
    for option in ("--out", "--launcher", "--jobs", "--dry-run", "--example", "--list-examples"):
        assert option in result.stdout


def test_without_out_the_study_goes_to_the_files_out_dir_or_beside_the_file(tmp_path, capsys):
    study = write_study(tmp_path)
    assert main(["study", str(study), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"study tiny: 2 runs into {tmp_path / 'tiny'}"
    study = write_study(tmp_path, {**TINY, "out_dir": "results/tiny"}, name="own.yaml")
    assert main(["study", str(study), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"study tiny: 2 runs into {tmp_path / 'results' / 'tiny'}"


def test_a_second_run_reads_each_finished_checkpoint_once(tiny_run, capsys, monkeypatch):
    """The plan reads every last.pt; running the planned study and reusing its evaluation reads none again."""
    import torch

    study, out, code, _stdout, stderr = tiny_run
    assert code == 0, stderr
    loaded = []
    original = torch.load

    def counting_load(f, *args, **kwargs):
        loaded.append(str(f))
        return original(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    assert main(["study", str(study), "--out", str(out)]) == 0
    assert "checkpoints unchanged" in capsys.readouterr().out
    last = sorted(str(out / "runs" / name / "seed0" / "last.pt") for name in ("onehot", "svls"))
    assert sorted(path for path in loaded if path.endswith("last.pt")) == last
