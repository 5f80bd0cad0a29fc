"""A CT-size (300×512×512) SSN prediction under a memory limit: success or a clear error, never a signal (issue 15).

The child process sets ``RLIMIT_AS`` (``preexec_fn``), generates the CT-size image itself and runs
``predict_ssn_distribution`` (rank 10, 3 classes: 11 GiB of distribution, far over the limit) and
``predict_ssn_distribution_lazy`` with a tiny 2-D SSN trained here on a small case.  The whole
prediction must refuse with exit code 1 and its message on stderr; the lazy one must succeed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_seg_uncertainty.core.training import TrainConfig, train

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # CT size: about 35 s in all

LIMIT_BYTES = 3 << 30  # far below the 11 GiB the whole distribution needs, well above what the lazy path uses

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from napari_seg_uncertainty.core.training.ssn_inference import (
        predict_ssn_distribution, predict_ssn_distribution_lazy)

    checkpoint, mode = sys.argv[1], sys.argv[2]
    image = np.zeros((300, 512, 512), dtype=np.float32)  # a CT-size volume: a bright ellipsoid in air
    z, y, x = np.ogrid[:300, :512, :512]
    image[((z - 150) / 120.0) ** 2 + ((y - 256) / 200.0) ** 2 + ((x - 256) / 220.0) ** 2 < 1] = 1.0
    del z, y, x
    try:
        if mode == "full":
            dist = predict_ssn_distribution(checkpoint, image)
        else:
            dist = predict_ssn_distribution_lazy(checkpoint, image, cache_planes=4)
            for plane in (150, 0, 299, 150):
                labels = dist.slice_labels(plane, seed=0)
            print("lazy ok", dist.spatial_shape, dist.rank, labels.shape, dist.planes_computed)
    except MemoryError as exc:  # OutputTooLargeError: refused before allocating
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


def _limit_address_space() -> None:  # runs in the child before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_BYTES, resource.RLIM_INFINITY))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny 2-D SSN of the default rank (10) on 3 classes, trained one step on a 32² case."""
    image = np.zeros((32, 32), np.float32)
    image[8:24, 8:24] = 1.0
    raters = np.zeros((2, 32, 32), dtype=int)
    raters[:, 8:24, 8:24] = 1
    raters[1, 12:20, 12:20] = 2
    config = TrainConfig(head="ssn", loss="ssn", target="random_rater", ssn_rank=10, ssn_samples=2, epochs=1,
                         steps_per_epoch=1, channels=(4, 8), strides=(2,), num_res_units=0, batch_size=1,
                         val_fraction=0.0, device="cpu", output_dir=str(tmp_path_factory.mktemp("ct_ssn")))  # fmt: skip
    *_, last = train(config, (image, raters))
    return last.checkpoint


def _run(checkpoint: str, mode: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    env.update(OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    return subprocess.run(
        [sys.executable, "-c", CHILD, checkpoint, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_limit_address_space,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_full_ct_ssn_prediction_refuses_cleanly_under_a_memory_limit(checkpoint):
    result = _run(checkpoint, "full")
    assert result.returncode >= 0, f"killed by signal {-result.returncode}; stderr: {result.stderr[-2000:]}"
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: ") and "Traceback" not in result.stderr
    for part in ("(300, 512, 512)", "rank 10", "estimate", "available", "predict_ssn_distribution_lazy"):
        assert part in message, message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's")
def test_lazy_ct_ssn_prediction_succeeds_under_a_memory_limit(checkpoint):
    result = _run(checkpoint, "lazy")
    assert result.returncode >= 0, f"killed by signal {-result.returncode}; stderr: {result.stderr[-2000:]}"
    assert result.returncode == 0, result.stderr[-2000:]
    assert "lazy ok (300, 512, 512) 10 (512, 512) 3" in result.stdout
