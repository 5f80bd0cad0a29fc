"""``napari-seg-uncertainty evaluate``: one line per case, the summary table, errors as one line and exit 2."""

from __future__ import annotations

import pytest

from napari_seg_uncertainty.cli import main
from napari_seg_uncertainty.workflow.evaluation import EVALUATION_FILES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny checkpoints trained on 8 generated 2-D cases (split 4/2/2), and the cohort source."""
    import torch

    from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort
    from napari_seg_uncertainty.core.training import TrainConfig, train

    root = tmp_path_factory.mktemp("cli_evaluate")
    source = make_phantom_cohort(8, root / "cohort", ndim=2, num_raters=2, shape=(24, 24), seed=1)
    cohort = load_cohort(source)
    split = cohort.split(val=0.25, test=0.25, seed=0)
    paths = []
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in ("onehot", "mean"):
            config = TrainConfig(target=name, channels=(4, 8), strides=(2,), num_res_units=0, epochs=2,
                                 steps_per_epoch=2, batch_size=2, patch_size=(16, 16), num_workers=0,
                                 device="cpu", output_dir=str(root / name))
            *_, last = train(config, cohort, split=split)
            paths.append(last.checkpoint)
    finally:
        torch.set_num_threads(previous)
    return root, source, split, paths


def test_evaluate_prints_every_case_and_the_summary(checkpoints, capsys):
    root, source, split, paths = checkpoints
    out = root / "out"
    argv = ["evaluate", *paths, "--cohort", source, "--split", "test", "--out", str(out), "--device", "cpu",
            "--resamples", "200", "--tolerance-mm", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    for name in ("onehot", "mean"):
        for case_id in split["test"]:
            assert any(line.startswith(f"{name} [") and f"case {case_id} " in line for line in lines)
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", "class", "onehot", "mean"]
    dice = next(line for line in lines if line.startswith("dice "))
    assert dice.count("[") == 2  # mean [low, high] per candidate
    assert "over 2 test cases" in captured.out and captured.err == ""
    assert sorted(p.name for p in out.iterdir()) == sorted(EVALUATION_FILES)
    # a second run into the same folder is refused (exit 2, nothing replaced) unless --overwrite
    before = (out / "summary.csv").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and "Traceback" not in err
    assert (out / "summary.csv").read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0


def test_evaluate_errors_are_one_line_with_exit_2(checkpoints, tmp_path, capsys):
    root, source, split, paths = checkpoints
    missing = tmp_path / "nowhere" / "last.pt"
    assert main(["evaluate", str(missing), "--cohort", source, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", paths[0], "--cohort", source, "--split", "train", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training cases" in err
    assert main(["evaluate", paths[0], "--cohort", str(tmp_path / "no_cohort"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not (tmp_path / "o").exists()
    # a split file: its test cases are evaluated, a training case of the checkpoint among them is refused
    import json

    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": split["train"], "val": [], "test": split["val"]}))
    assert main(["evaluate", paths[0], "--cohort", source, "--split-file", str(split_file), "--out",
                 str(tmp_path / "v"), "--device", "cpu", "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert all(f"case {c} " in printed for c in split["val"])
    split_file.write_text(json.dumps({"train": split["val"], "val": [], "test": split["train"][:1]}))
    assert main(["evaluate", paths[0], "--cohort", source, "--split-file", str(split_file), "--out",
                 str(tmp_path / "w")]) == 2
    assert "training cases" in capsys.readouterr().err
    split_file.write_text("{not json")
    assert main(["evaluate", paths[0], "--cohort", source, "--split-file", str(split_file), "--out",
                 str(tmp_path / "w")]) == 2
    assert "is not JSON" in capsys.readouterr().err
