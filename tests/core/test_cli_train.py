"""``napari-seg-uncertainty train`` / ``predict`` and a 2-process torchrun (gloo, CPU) run."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import yaml

from napari_seg_uncertainty.cli import main as cli_main
from napari_seg_uncertainty.cli_train import predict_main, train_main
from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.core.io import read_image, write_image
from napari_seg_uncertainty.core.training import load_trained_model, weights_digest

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def make_files(folder, *, nifti=False):
    rng = np.random.default_rng(0)
    raters = np.zeros((3, 24, 24), np.uint8)
    for r in range(3):
        raters[r, 6 - r : 18, 6:18] = 1
    image = (raters.mean(0) + 0.1 * rng.normal(size=(24, 24))).astype(np.float32)
    if nifti:
        write_image(folder / "image.nii.gz", image, spacing=(0.8, 0.6))
        for r in range(3):
            write_image(folder / f"rater{r + 1}.nii.gz", raters[r], spacing=(0.8, 0.6))
        data = {"image": "image.nii.gz", "raters": [f"rater{r + 1}.nii.gz" for r in range(3)]}
    else:
        np.save(folder / "image.npy", image)
        np.save(folder / "raters.npy", raters)
        data = {"image": "image.npy", "raters": "raters.npy", "class_names": ["background", "square"]}
    config = {
        "data": data,
        "target": "random_rater",
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
        "epochs": 2,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": [16, 16],
        "device": "cpu",
        "output_dir": "run",
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, image, raters


def test_train_and_predict_npy(tmp_path, capsys):
    config, image, _ = make_files(tmp_path)
    assert cli_main(["train", str(config)]) == 0  # through the package's command dispatcher
    out = capsys.readouterr().out
    assert "epoch 2/2" in out and "checkpoint:" in out
    checkpoint = tmp_path / "run" / "last.pt"
    state = load_checkpoint(checkpoint)
    assert state["class_names"] == ["background", "square"] and state["global_step"] == 4
    assert predict_main([str(checkpoint), str(tmp_path / "image.npy"), "--out", str(tmp_path / "pred")]) == 0
    probs = np.load(tmp_path / "pred" / "probabilities.npy")
    labels = np.load(tmp_path / "pred" / "labels.npy")
    entropy = np.load(tmp_path / "pred" / "entropy.npy")
    assert probs.shape == (2, 24, 24)
    np.testing.assert_array_equal(labels, probs.argmax(0))
    p = np.clip(probs, 1e-12, None)
    np.testing.assert_allclose(entropy, -(probs * np.log(p)).sum(0) / np.log(2), rtol=1e-5, atol=1e-6)
    # --dtype float16: the same prediction in half the memory (probabilities within float16 rounding)
    args = [str(checkpoint), str(tmp_path / "image.npy"), "--out", str(tmp_path / "half"), "--dtype", "float16"]
    assert predict_main(args) == 0
    half = np.load(tmp_path / "half" / "probabilities.npy")
    assert half.dtype == np.float16 and np.load(tmp_path / "half" / "entropy.npy").dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), probs, atol=1e-3)


def test_train_and_predict_nifti_keeps_spacing(tmp_path):
    config, _, _ = make_files(tmp_path, nifti=True)
    assert train_main([str(config), "--epochs", "1", "--output-dir", str(tmp_path / "out")]) == 0
    checkpoint = tmp_path / "out" / "last.pt"
    assert load_checkpoint(checkpoint)["spacing"] == pytest.approx([0.8, 0.6])
    assert (
        predict_main([str(checkpoint), str(tmp_path / "image.nii.gz"), "--out", str(tmp_path / "pred")]) == 0
    )
    probs, meta = read_image(tmp_path / "pred" / "probabilities.nii.gz")
    assert probs.shape == (2, 24, 24) and meta.spacing == pytest.approx((0.8, 0.6))
    labels, meta = read_image(tmp_path / "pred" / "labels.nii.gz")
    np.testing.assert_array_equal(labels, probs.argmax(0))
    # a second run refuses to overwrite without --overwrite
    assert (
        predict_main([str(checkpoint), str(tmp_path / "image.nii.gz"), "--out", str(tmp_path / "pred")]) == 2
    )


def test_train_resume_continues_from_checkpoint(tmp_path):
    config, _, _ = make_files(tmp_path)
    assert train_main([str(config), "--epochs", "1"]) == 0
    assert train_main([str(config), "--epochs", "2", "--resume", str(tmp_path / "run" / "last.pt")]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 4


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    config, _, _ = make_files(tmp_path)
    values = yaml.safe_load(config.read_text())
    del values["data"]
    (tmp_path / "nodata.yaml").write_text(yaml.safe_dump(values))
    assert train_main([str(tmp_path / "nodata.yaml")]) == 2
    assert "no 'data' section" in capsys.readouterr().err
    values = yaml.safe_load(config.read_text())
    values["head"] = "ssn"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(values))
    assert train_main([str(tmp_path / "bad.yaml")]) == 2
    assert "do not fit" in capsys.readouterr().err
    assert train_main([str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert (
        predict_main([str(tmp_path / "missing.pt"), str(tmp_path / "image.npy"), "--out", str(tmp_path)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_torchrun_two_cpu_processes_agree_on_weights(tmp_path):
    config, _, _ = make_files(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "napari_seg_uncertainty.cli_train",
        "train",
        str(config),
        "--threads",
        "1",
        "--output-dir",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    digests = dict(re.findall(r"rank (\d)/2 weights sha256 ([0-9a-f]{64})", done.stdout + done.stderr))
    assert set(digests) == {"0", "1"}, done.stdout + done.stderr
    assert digests["0"] == digests["1"]
    # the checkpoint rank 0 wrote holds exactly those weights
    trained = load_trained_model(tmp_path / "ddp" / "last.pt")
    assert weights_digest(trained.model) == digests["0"]
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["global_step"] == 4


# --- cohorts -------------------------------------------------------------------------------------------------


def cohort_config(folder, *, layout="manifest", split=None, n_cases=5, extra=None, **data):
    """A tiny cohort (2-D, 24 x 24, two raters) written by make_phantom_cohort and a config training on it."""
    from napari_seg_uncertainty.core.cohort import make_phantom_cohort

    source = make_phantom_cohort(
        n_cases, folder / "cohort", ndim=2, layout=layout, num_raters=2, shape=(24, 24), seed=1
    )
    section = {"cohort": os.path.relpath(source, folder), **data}
    if split is not None:
        section["split"] = split
    config = {
        "data": section,
        "target": "random_rater",
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": 0,
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "patch_size": [16, 16],
        "num_workers": 0,
        "device": "cpu",
        "output_dir": "run",
        **(extra or {}),
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, source


def read_split(path):
    import json

    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("layout", "split"),
    [("generic", {"val": 0.2, "test": 0.2}), ("manifest", "manifest"), ("npz", {"folds": 4, "fold": 1, "test": 0.2})],
)
def test_train_on_a_cohort_writes_its_split(tmp_path, capsys, layout, split):
    from napari_seg_uncertainty.core.cohort import load_cohort

    config, source = cohort_config(tmp_path, layout=layout, split=split)
    assert train_main([str(config)]) == 0
    out = capsys.readouterr().out
    cohort = load_cohort(source)
    expected = cohort.resolve_split(split, seed=0)
    assert f"{len(cohort)} cases" in out
    assert f"split: train {len(expected['train'])}, val {len(expected['val'])}, test {len(expected['test'])}" in out
    assert "cases seen" in out and "patches/s" in out and "checkpoint:" in out
    written = read_split(tmp_path / "run" / "split.json")
    assert written == {k: list(v) for k, v in expected.items()}
    ids = [i for name in ("train", "val", "test") for i in written[name]]
    assert sorted(ids) == sorted(cohort.case_ids) and len(ids) == len(set(ids))  # no case in two splits
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["cohort"]["split"] == written
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # atomic: no temporaries
    if layout == "manifest":
        assert written == cohort.manifest_split()


def test_train_on_a_cohort_with_an_explicit_split_and_a_skipped_case(tmp_path, capsys):
    config, source = cohort_config(tmp_path, layout="generic", on_error="skip")
    bad = tmp_path / "cohort" / "case_zz_bad"
    bad.mkdir()
    write_image(bad / "image.nii.gz", np.zeros((24, 24), np.float32))
    write_image(bad / "rater_1.nii.gz", np.zeros((20, 24), np.uint8))  # not on the image's grid
    values = yaml.safe_load(config.read_text())
    values["data"]["split"] = {"train": ["case_000", "case_001", "case_002"], "val": ["case_003"], "test": ["case_004"]}
    config.write_text(yaml.safe_dump(values))
    assert train_main([str(config)]) == 0
    out = capsys.readouterr().out
    assert "5 cases" in out and "skipped 1 case(s)" in out and "case_zz_bad" in out
    assert read_split(tmp_path / "run" / "split.json")["val"] == ["case_003"]
    # the same cohort without on_error: skip stops before training, naming the case
    del values["data"]["on_error"]
    values["output_dir"] = "run2"
    config.write_text(yaml.safe_dump(values))
    assert train_main([str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "case_zz_bad" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "run2").exists()


def test_an_earlier_run_is_refused_unless_overwrite_or_resume(tmp_path, capsys):
    config, _ = cohort_config(tmp_path, split={"val": 0.2, "test": 0.2})
    assert train_main([str(config)]) == 0
    first = read_split(tmp_path / "run" / "split.json")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    capsys.readouterr()
    assert train_main([str(config)]) == 2  # the same run again: last.pt exists
    err = capsys.readouterr().err
    assert err.startswith("error:") and "last.pt" in err and "Traceback" not in err
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    # a different split into the same folder is refused before anything is trained
    assert train_main([str(config), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "split.json" in err and "--overwrite" in err
    assert read_split(tmp_path / "run" / "split.json") == first
    # resuming continues with the split; --overwrite replaces the run and its split
    assert train_main([str(config), "--epochs", "2", "--resume", str(tmp_path / "run" / "last.pt")]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 4
    assert train_main([str(config), "--seed", "3", "--overwrite"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["global_step"] == 2
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert read_split(tmp_path / "run" / "split.json") == state["cohort"]["split"] != first


def test_cohort_config_errors_are_messages(tmp_path, capsys):
    config, _ = cohort_config(tmp_path)
    values = yaml.safe_load(config.read_text())

    def run(data, name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**values, "data": data, "output_dir": name}))
        status = train_main([str(path)])
        err = capsys.readouterr().err
        assert status == 2 and err.startswith("error:") and "Traceback" not in err, err
        assert not (tmp_path / name).exists()
        return err

    assert "nowhere" in run({"cohort": "nowhere/cohort.csv"}, "missing")
    assert "data.split" in run({**values["data"], "split": {"validation": 0.2}}, "badkey")
    assert "data.split" in run({**values["data"], "split": 0.2}, "badtype")
    assert "image" in run({**values["data"], "image": "x.npy"}, "mixed")
    assert "case_999" in run({**values["data"], "split": {"train": ["case_999"], "val": [], "test": []}}, "unknown")


def test_predict_with_a_cohort_checkpoint(tmp_path, capsys):
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.training import predict

    config, source = cohort_config(tmp_path, split="manifest", extra={"normalization": "zscore"})
    assert train_main([str(config)]) == 0
    cohort = load_cohort(source)
    case = cohort[cohort.manifest_split()["test"][0]]
    image_file = case.image_files[0]
    checkpoint = tmp_path / "run" / "last.pt"
    assert predict_main([str(checkpoint), image_file, "--out", str(tmp_path / "pred")]) == 0
    probs, meta = read_image(tmp_path / "pred" / "probabilities.nii.gz")
    assert probs.shape == (2, 24, 24) and meta.spacing == pytest.approx(case.spacing)
    # the same numbers as predict() on the case read by the cohort: normalization from the checkpoint
    expected = predict(checkpoint, cohort.load_case(case.case_id).image[0]).probabilities
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert load_checkpoint(checkpoint)["model"]["normalization"]["mode"] == "zscore"
    # several image files are channels: a one-channel model says it cannot take two
    status = predict_main([str(checkpoint), image_file, image_file, "--out", str(tmp_path / "pred2")])
    assert status == 2 and capsys.readouterr().err.startswith("error:")


def test_torchrun_on_a_cohort_prints_and_writes_the_split_once(tmp_path):
    config, _ = cohort_config(tmp_path, split={"val": 0.2, "test": 0.2}, n_cases=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "napari_seg_uncertainty.cli_train", "train", str(config), "--threads", "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    digests = dict(re.findall(r"rank (\d)/2 weights sha256 ([0-9a-f]{64})", output))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"], output
    assert output.count("split: train") == 1 and output.count("split written to") == 1  # rank 0 only
    split = read_split(tmp_path / "run" / "split.json")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["cohort"]["split"] == split


def test_predict_writes_outputs_on_the_images_grid(tmp_path, capsys):
    """The outputs carry the image's spacing, origin and direction, so they overlay it in any viewer."""
    config, image, _ = make_files(tmp_path, nifti=True)
    assert train_main([str(config)]) == 0
    direction = np.array([[0.0, 1.0], [1.0, 0.0]])
    placed = write_image(tmp_path / "placed.nii.gz", image, spacing=(0.8, 0.6), origin=(-40.5, 12.25),
                         direction=direction)  # fmt: skip
    out = tmp_path / "pred"
    assert predict_main([str(tmp_path / "run" / "last.pt"), placed, "--out", str(out), "--device", "cpu"]) == 0
    _, meta = read_image(placed)
    for name in ("labels", "entropy", "probabilities"):
        _, written = read_image(out / f"{name}.nii.gz")
        assert written.spacing == pytest.approx(meta.spacing)
        assert written.origin == pytest.approx(meta.origin)
        np.testing.assert_allclose(written.direction, meta.direction, atol=1e-6)
    capsys.readouterr()
    assert predict_main([str(tmp_path / "run" / "last.pt"), placed, "--out", str(out), "--device", "cpu"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
