"""Training under faults: cancel, abort, exceptions, CUDA out-of-memory, kill; the last checkpoint survives.

These tests exercise the training engineer's modules (core/training.py, core/checkpoint.py,
widgets/train.py, cli_train.py) without editing them. A test that shows a defect there is marked
``xfail(strict=True)`` with the defect in its reason, so it turns into a failure once fixed (then drop
the mark).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core import models
from napari_seg_uncertainty.core._memory import OutputTooLargeError
from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.core.training import TrainConfig, predict, train
from napari_seg_uncertainty.workflow.training import TrainingFailure, advice_for, training_job

IMAGE = np.random.default_rng(0).random((16, 16)).astype(np.float32)
RATERS = np.zeros((2, 16, 16), dtype=np.uint8)
RATERS[:, 4:12, 4:12] = 1
RATERS[1, 4:12, 12] = 1


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py


def tiny_config(output_dir: Path | None, **overrides) -> TrainConfig:
    settings = dict(
        channels=(4, 8),
        strides=(2,),
        epochs=3,
        steps_per_epoch=2,
        batch_size=1,
        patch_size=(16, 16),
        val_fraction=0.0,
        device="cpu",
        amp=False,
        output_dir=None if output_dir is None else str(output_dir),
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def fail_forward_at(monkeypatch, call: int, error: BaseException) -> None:
    """Make the ``call``-th forward pass of the training model raise ``error`` (a simulated fault)."""
    original = models.SegmentationEnsemble.forward
    calls = {"n": 0}

    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == call:
            raise error
        return original(self, x)

    monkeypatch.setattr(models.SegmentationEnsemble, "forward", forward)


def cuda_oom() -> BaseException:
    return torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
    )


def test_cancel_writes_a_loadable_last_checkpoint(tmp_path):
    gen = train(tiny_config(tmp_path), (IMAGE, RATERS))
    kinds = [next(gen).kind, next(gen).kind]  # start, step: before the first periodic checkpoint
    record = gen.send("cancel")
    assert kinds == ["start", "step"] and record.kind == "cancelled"
    state = load_checkpoint(record.checkpoint)
    assert state["reason"] == "cancelled" and state["global_step"] == 1
    assert predict(record.checkpoint, IMAGE).probabilities.shape == (2, 16, 16)


def test_aborting_the_worker_saves_the_last_checkpoint(tmp_path):
    gen = train(tiny_config(tmp_path), (IMAGE, RATERS))
    for _ in range(4):  # start, step, step, epoch (periodic last.pt at step 2)
        next(gen)
    next(gen)  # step 3
    gen.close()  # what a napari worker quit or an interpreter shutdown does
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["reason"] == "cancelled" and state["global_step"] == 3


def test_exception_after_a_checkpoint_keeps_it_loadable(tmp_path, monkeypatch):
    fail_forward_at(monkeypatch, 3, cuda_oom())  # step 3, after the periodic checkpoint of epoch 1
    with pytest.raises(torch.OutOfMemoryError):
        list(train(tiny_config(tmp_path), (IMAGE, RATERS)))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["global_step"] >= 2
    monkeypatch.undo()
    resumed = list(train(tiny_config(tmp_path, epochs=4), (IMAGE, RATERS), resume=tmp_path / "last.pt"))
    assert resumed[-1].kind == "done" and load_checkpoint(tmp_path / "last.pt")["global_step"] == 8


def test_exception_before_the_first_checkpoint_still_leaves_one(tmp_path, monkeypatch):
    fail_forward_at(monkeypatch, 2, cuda_oom())
    with pytest.raises(torch.OutOfMemoryError):
        list(train(tiny_config(tmp_path), (IMAGE, RATERS)))
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["global_step"] == 1


def test_interrupted_checkpoint_write_during_training_keeps_the_previous_one(tmp_path, monkeypatch):
    """Ctrl-C while the periodic checkpoint of epoch 2 is half written."""
    original_save = torch.save
    calls = {"n": 0}

    def save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # best.pt and last.pt of epoch 1 went through; this is epoch 2's best.pt
            handle.write(b"PK\x03\x04" + b"\x00" * 64)
            raise KeyboardInterrupt
        return original_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        list(train(tiny_config(tmp_path), (IMAGE, RATERS)))
    monkeypatch.undo()
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(tmp_path / name)
        assert state["global_step"] in (2, 4)
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_simulated_cuda_oom_is_reported_with_advice(tmp_path, monkeypatch):
    fail_forward_at(monkeypatch, 2, cuda_oom())
    records = list(training_job(tiny_config(tmp_path), (IMAGE, RATERS)))  # never raises
    failure = records[-1]
    assert isinstance(failure, TrainingFailure)
    assert "CUDA out of memory" in failure.message
    assert "batch size" in failure.advice and "patch size" in failure.advice


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(cuda_oom(), id="torch-OutOfMemoryError"),
        pytest.param(RuntimeError("CUDA error: out of memory"), id="RuntimeError-cuda"),
        pytest.param(MemoryError(), id="MemoryError"),
        pytest.param(OutputTooLargeError("n=10: the samples would need 9 TiB"), id="OutputTooLargeError"),
        pytest.param(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), id="mps"),
    ],
)
def test_out_of_memory_advice(error):
    assert advice_for(error).startswith("Out of memory")


def test_bad_device_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="device"):
        next(train(tiny_config(tmp_path, device="tpu:0"), (IMAGE, RATERS)))
    assert not list(tmp_path.iterdir())


def test_absurd_model_size_is_refused_naming_channels():
    with pytest.raises((ValueError, MemoryError), match="channels"):
        models.build_model(
            spatial_dims=2, in_channels=1, num_classes=2, channels=(10**6, 10**6), strides=(2,)
        )


def test_absurd_batch_is_refused_before_training_starts(tmp_path):
    gen = train(tiny_config(tmp_path, batch_size=10**9), (IMAGE, RATERS))
    try:
        with pytest.raises((ValueError, MemoryError), match="batch_size"):
            next(gen)  # only the 'start' record: nothing has been allocated yet
    finally:
        gen.close()


def test_training_does_not_replace_an_earlier_runs_checkpoints(tmp_path):
    list(train(tiny_config(tmp_path, epochs=1), (IMAGE, RATERS)))
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="last.pt"):
        list(train(tiny_config(tmp_path, epochs=1, seed=1), (IMAGE, RATERS)))
    assert (tmp_path / "last.pt").read_bytes() == before


def test_cli_predict_never_overwrites_without_flag(tmp_path, capsys):
    from napari_seg_uncertainty.cli import main
    from napari_seg_uncertainty.core.io import write_image

    list(train(tiny_config(tmp_path / "run", epochs=1), (IMAGE, RATERS)))
    image = write_image(tmp_path / "image.nii.gz", IMAGE)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "run" / "last.pt"), image, "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*argv, "--overwrite"]) == 0


_TRAIN_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
from napari_seg_uncertainty.core.training import TrainConfig, train
image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
raters = np.zeros((2, 16, 16), np.uint8); raters[:, 4:12, 4:12] = 1
config = TrainConfig(channels=(4, 8), strides=(2,), epochs=100000, steps_per_epoch=1, batch_size=1,
                     patch_size=(16, 16), val_fraction=0.0, device="cpu", amp=False, output_dir=sys.argv[1])
for record in train(config, (image, raters)):
    if record.kind == "epoch":
        print(record.global_step, flush=True)
"""


def test_kill_during_training_leaves_a_loadable_last_checkpoint(tmp_path):
    """``kill -9`` of a training process that writes last.pt every step; then resume from it."""
    process = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        for _ in range(3):  # a few checkpoints written
            assert process.stdout.readline().strip(), "the training process stopped"
        time.sleep(0.37)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["global_step"] >= 3
    config = tiny_config(tmp_path, epochs=state["global_step"] + 1, steps_per_epoch=1)
    records = list(train(config, (IMAGE, RATERS), resume=tmp_path / "last.pt"))
    assert records[-1].kind == "done"
    assert load_checkpoint(tmp_path / "last.pt")["global_step"] == state["global_step"] + 1
