"""Streaming training keeps memory bounded by the cache budget, not by the cohort (measured in a subprocess).

A cohort whose prepared cases take about 4× ``cache_mb`` is trained on in a fresh process; its resident
anonymous memory (``RssAnon``: the heap and the arrays, not the file pages of memory-mapped cases and
libraries, which the kernel can drop at any time) is sampled after every step. The growth over
the memory at the ``start`` record (model built, no case read yet) must stay within the budget plus
a fixed allowance for the batch and the allocator. The same run with a budget that holds every case
grows by about the whole cohort, which shows the measurement can tell the two apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

N_CASES, RATERS, SHAPE = 24, 3, (32, 96, 96)
ALLOWANCE_MB = 40.0  # one batch, a case being prepared, allocator slack

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from napari_seg_uncertainty.core.cohort import load_cohort
    from napari_seg_uncertainty.core.training import TrainConfig, train

    def rss_mb():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024

    source, cache_mb, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    cohort = load_cohort(source)
    ids = cohort.case_ids
    config = TrainConfig(
        target="mean", channels=(4, 8), strides=(2,), patch_size=(16, 32, 32), batch_size=2,
        patches_per_case=2, epochs=1, steps_per_epoch=2 * len(ids), val_fraction=0.0, num_workers=0,
        cache_mb=cache_mb, augment=False, device="cpu", amp=False, output_dir=out,
    )
    gen = train(config, cohort, split={"train": ids, "val": [], "test": []})
    start = rss_mb()
    next(gen)
    start = rss_mb()
    peak = start
    for record in gen:
        peak = max(peak, rss_mb())
    print(json.dumps({"start": start, "peak": peak}))
    """
)


def _write_cohort(path) -> float:
    """A multi-case .npz (uncompressed); returns the bytes of one prepared case in MiB."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(N_CASES, *SHAPE)).astype(np.float32)
    masks = np.zeros((N_CASES, RATERS, *SHAPE), dtype=np.uint8)
    for i in range(N_CASES):
        for r in range(RATERS):
            z, y, x = 8 + i % 5, 20 + 2 * r + i, 30 + r
            masks[i, r, z : z + 12, y : y + 40, x : x + 30] = 1
    np.savez(path, images=images, masks=masks, spacing=np.array([2.5, 0.8, 0.8]))
    voxels = int(np.prod(SHAPE))
    # float32 image + float32 two-class target + the raters and a foreground/background mask
    return (4 * voxels + 8 * voxels + RATERS * voxels + 2 * voxels) / 2**20


def _growth(source, cache_mb: float, out) -> float:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(source), str(cache_mb), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures["peak"] - figures["start"]


@pytest.mark.usefixtures("one_thread")
def test_training_memory_is_bounded_by_the_cache_budget_not_the_cohort(tmp_path):
    case_mb = _write_cohort(tmp_path / "cohort.npz")
    cohort_mb = N_CASES * case_mb
    budget_mb = cohort_mb / 4
    bounded = _growth(tmp_path / "cohort.npz", budget_mb, tmp_path / "bounded")
    everything = _growth(tmp_path / "cohort.npz", 2 * cohort_mb, tmp_path / "everything")
    assert bounded <= budget_mb + ALLOWANCE_MB, (bounded, budget_mb)
    assert everything >= 0.75 * cohort_mb, (everything, cohort_mb)  # the measurement sees a full cache
