"""Benchmark: what input validation costs on everyday calls.

Run ``python benchmarks/bench_robustness.py`` (``--repeats`` to change). Each line compares a guarded call
with the same work without the guard, measured in the same run (median of several repeats):

* reading a BraTS-sized label map (155 x 240 x 240, 4 classes; ``.nii.gz`` and ``.nii``) and a noisy
  CT-like int16 volume of that size with :func:`read_image` (header-only size check, truncation check,
  plus its usual axis handling) against a plain ``SimpleITK.ReadImage`` + ``GetArrayFromImage``;
* loading a LIDC-style ``.npz`` with :func:`load_raters` (header check of the archive) against the same
  call with :func:`check_npz_fits` switched off;
* :func:`one_hot` and :func:`rater_mean` with and without the memory check;
* one call of :func:`check_allocation` (reads ``/proc/meminfo``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np

from napari_seg_uncertainty.core import _memory, raters
from napari_seg_uncertainty.core import labels as soft_labels
from napari_seg_uncertainty.core.io import read_image, write_image


def median_time(func: Callable[[], object], repeats: int) -> float:
    func()  # warm up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def plain_sitk_read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def report(name: str, guarded: float, baseline: float) -> None:
    print(f"{name:<44} guarded {guarded * 1e3:9.2f} ms   baseline {baseline * 1e3:9.2f} ms   "
          f"ratio {guarded / baseline:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = np.zeros((155, 240, 240), np.uint8)
    labels[40:120, 60:180, 50:190] = 1
    labels[60:100, 90:150, 80:160] = 2
    labels[70:90, 100:140, 100:140] = 3
    labels ^= (rng.random(labels.shape) < 0.01).astype(np.uint8)  # a little texture
    raters_stack = np.stack([labels, np.roll(labels, 2, axis=1), np.roll(labels, -2, axis=2)])
    no_check = mock.patch.object(_memory, "available_memory_bytes", lambda: None)
    image = (rng.normal(40.0, 30.0, labels.shape) + 400.0 * labels).astype(np.int16)  # CT-like, noisy
    with tempfile.TemporaryDirectory() as folder:
        files = {
            "labels uint8": Path(write_image(Path(folder) / "seg.nii.gz", labels, spacing=(1.0, 1.0, 1.0))),
            "labels uint8 ": Path(write_image(Path(folder) / "seg.nii", labels, spacing=(1.0, 1.0, 1.0))),
            "image int16": Path(write_image(Path(folder) / "ct.nii.gz", image, spacing=(1.0, 1.0, 1.0))),
        }
        npz = Path(folder) / "case.npz"
        np.savez(npz, masks=raters_stack)
        assert np.array_equal(read_image(files["labels uint8"])[0], labels)
        for kind, path in files.items():
            guarded = median_time(lambda p=path: read_image(p), args.repeats)
            baseline = median_time(lambda p=path: plain_sitk_read(p), args.repeats)
            report(f"read_image {path.name} ({kind.strip()})", guarded, baseline)
        guarded = median_time(lambda: raters.load_raters(npz), args.repeats)
        with mock.patch.object(raters, "check_npz_fits", lambda path: None):
            baseline = median_time(lambda: raters.load_raters(npz), args.repeats)
        report("load_raters case.npz (3 raters)", guarded, baseline)
    for name, call in [
        ("one_hot (155x240x240, 4 classes)", lambda: soft_labels.one_hot(labels, num_classes=4)),
        ("rater_mean (3 raters, 4 classes)", lambda: soft_labels.rater_mean(raters_stack, num_classes=4)),
    ]:
        guarded = median_time(call, args.repeats)
        with no_check:
            baseline = median_time(call, args.repeats)
        report(name, guarded, baseline)
    calls = 2000
    start = time.perf_counter()
    for _ in range(calls):
        _memory.check_allocation(1024, what="x", cause="y")
    print(f"check_allocation: {(time.perf_counter() - start) / calls * 1e6:.1f} us per call")
    print(f"available memory: {_memory.format_bytes(_memory.available_memory_bytes() or 0)}")


if __name__ == "__main__":
    main()
