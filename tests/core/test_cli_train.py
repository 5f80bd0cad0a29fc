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
