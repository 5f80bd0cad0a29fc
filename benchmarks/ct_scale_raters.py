"""CT-scale part ``raters``: load + summary + entropy map + mSVLS + STAPLE on the generated 300x512x512 case.

``python benchmarks/bench_ct_scale.py --part raters [--shape Z Y X] [--repeats N] [--no-simpleitk]``

The parent generates the case once (:func:`ct_case.make_ct_case`, 4 raters, 3 classes) and saves the raters
as a ``.npy``. Each step then runs in a fresh subprocess that loads that file, builds the :class:`RaterSet`
the way a user does (``load_raters(array, spacing=...)``) and times the step ``--repeats`` times (median),
reporting its peak resident memory (``ru_maxrss``, which includes the loaded input). ``staple`` is the
default ``method="patterns"``; ``staple_simpleitk`` times SimpleITK's filters themselves on the same input
(``STAPLEImageFilter`` per class and ``MultiLabelSTAPLEImageFilter``, about a minute at full size: run
once), for the ratio, and checks that the two agree (largest differences of the class probabilities,
sensitivities, specificities and confusion matrices; labels and undecided voxels differing). ``all`` runs the
five steps one after the other in one process (dropping each result before the next), as a script would.

Targets: load + summary + entropy + mSVLS + STAPLE <= 10 s in all, STAPLE >= 20x faster than SimpleITK's
filters, peak RSS <= 3 GB. Figures are printed beside the issue's "today" (measured before this work).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SRC = HERE.parent / "src"
#: The issue's figures for the same case before this work (seconds; peak RSS in GB over all steps).
TODAY = {"load": 3.6, "summary": 1.4, "entropy": 7.7, "msvls": 0.8, "staple": 65.7}
TODAY_PEAK_GB = 10.0
STEPS = ("load", "summary", "entropy", "msvls", "staple")

CHILD = r"""
import json, resource, statistics, sys, time, warnings
import numpy as np
path, step, repeats, spacing = sys.argv[1], sys.argv[2], int(sys.argv[3]), tuple(json.loads(sys.argv[4]))
from napari_seg_uncertainty.core.labels import msvls, staple
from napari_seg_uncertainty.core.raters import load_raters
raw = np.load(path)
def build():
    return load_raters(raw, spacing=spacing, class_names=["background", "organ", "lesion"][: int(raw.max()) + 1])
raters = None
if step not in ("load", "all"):
    raters = build()
    del raw  # a user keeps the RaterSet, not the array it was loaded from
def run_step(name, rs):
    if name == "load":
        return build()
    if name == "summary":
        return rs.summary()
    if name == "entropy":
        return rs.entropy_map()
    if name == "msvls":
        return msvls(rs.labels, num_classes=rs.num_classes, spacing=rs.spacing)
    if name == "staple":
        return staple(rs.labels, num_classes=rs.num_classes)
    raise ValueError(name)
def largest_difference(a, b):
    return max(float(np.max(np.abs(a[i:i + 16] - b[i:i + 16]))) for i in range(0, len(a), 16))
def simpleitk_filters(rs):
    # SimpleITK's STAPLEImageFilter per class and MultiLabelSTAPLEImageFilter, timed alone, then compared
    import SimpleITK as sitk
    labels, num_classes = rs.labels, rs.num_classes
    fast = staple(labels, num_classes=num_classes)
    seconds, extra = 0.0, {}
    for c in range(num_classes):
        masks = (labels == c).astype(np.uint8)
        if not masks.any() or masks.all():
            continue
        start = time.perf_counter()
        binary = sitk.STAPLEImageFilter()
        binary.SetForegroundValue(1)
        posterior = sitk.GetArrayFromImage(binary.Execute([sitk.GetImageFromArray(m) for m in masks]))
        seconds += time.perf_counter() - start
        del masks
        extra[f"class_probabilities[{c}]"] = largest_difference(fast.class_probabilities[c], posterior)
        extra[f"sensitivities[{c}]"] = float(np.max(np.abs(fast.sensitivities[:, c] - binary.GetSensitivity())))
        extra[f"specificities[{c}]"] = float(np.max(np.abs(fast.specificities[:, c] - binary.GetSpecificity())))
        del posterior
    start = time.perf_counter()
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    fusion.SetLabelForUndecidedPixels(num_classes)
    fused = sitk.GetArrayFromImage(fusion.Execute([sitk.GetImageFromArray(r) for r in labels]))
    seconds += time.perf_counter() - start
    present = int(labels.max()) + 1
    raw = np.stack([np.reshape(fusion.GetConfusionMatrix(r), (present + 1, present)) for r in range(len(labels))])
    mine = fast.confusion_matrices[:, :present + 1, :present].copy()
    mine[:, present] = fast.confusion_matrices[:, num_classes, :present]
    defined = fast.confusion_defined[:present]
    extra["confusion_matrices"] = float(np.max(np.abs(mine[:, :, defined] - raw[:, :, defined])))
    decided = fused != num_classes
    extra["undecided_differing"] = int(np.count_nonzero(fast.undecided == decided))
    extra["labels_differing"] = int(np.count_nonzero((fast.labels != fused) & decided))
    return seconds, extra
times, extra = [], {}
if step == "all":
    start = time.perf_counter()
    rs = None
    for name in ("load", "summary", "entropy", "msvls", "staple"):
        t0 = time.perf_counter()
        out = run_step(name, rs)
        extra[name] = time.perf_counter() - t0
        if name == "load":
            rs = out
            del raw
        del out
    times.append(time.perf_counter() - start)
elif step == "staple_simpleitk":
    seconds, extra = simpleitk_filters(raters)
    times.append(seconds)
else:
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_step(step, raters)
        times.append(time.perf_counter() - start)
        del result
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"median": statistics.median(times), "times": times, "peak": peak, "extra": extra}))
"""


def _child(path: Path, step: str, repeats: int, spacing: tuple[float, ...]) -> dict:
    env = {"PYTHONPATH": str(SRC)}
    command = [sys.executable, "-c", CHILD, str(path), step, str(repeats), json.dumps(list(spacing))]
    done = subprocess.run(command, capture_output=True, text=True, env={**_base_env(), **env})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1][len("RESULT "):])


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1024**3:.2f} GB"


def run(args, rest: list[str]) -> None:
    """Generate the case, time each step in a fresh subprocess, print the table beside today's figures."""
    from ct_case import make_ct_case

    with_simpleitk = "--no-simpleitk" not in rest
    shape = tuple(args.shape)
    case = make_ct_case(shape)
    spacing = case.spacing
    with tempfile.TemporaryDirectory(prefix="ct_raters_") as folder:
        path = Path(folder) / "raters.npy"
        np.save(path, case.raters)
        del case
        results = {step: _child(path, step, args.repeats, spacing) for step in STEPS}
        results["all"] = _child(path, "all", 1, spacing)
        if with_simpleitk:
            results["staple_simpleitk"] = _child(path, "staple_simpleitk", 1, spacing)
    _report(shape, results, with_simpleitk)


def _report(shape: tuple[int, ...], results: dict, with_simpleitk: bool) -> None:
    print(f"case {shape}, 4 raters, 3 classes; medians in a fresh process per step (under load: shared machine)")
    if shape != (300, 512, 512):
        print("(today's figures are for 300x512x512: the speed-ups compare different sizes)")
    print(f"{'step':<18}{'now (s)':>10}{'today (s)':>11}{'speed-up':>10}{'peak RSS':>12}")
    total, peaks = 0.0, []
    for step in STEPS:
        r = results[step]
        if "error" in r:
            print(f"{step:<18} failed: {r['error']}")
            continue
        total += r["median"]
        peaks.append(r["peak"])
        print(f"{step:<18}{r['median']:>10.2f}{TODAY[step]:>11.1f}{TODAY[step] / r['median']:>9.1f}x"
              f"{_gb(r['peak']):>12}")
    print(f"{'sum of steps':<18}{total:>10.2f}{sum(TODAY.values()):>11.1f}{'':>10}{'max ' + _gb(max(peaks or [0])):>12}"
          f"   (today's peak {TODAY_PEAK_GB:.1f} GB)")
    one = results["all"]
    if "error" in one:
        print(f"all steps in one process failed: {one['error']}")
    else:
        steps = ", ".join(f"{k} {v:.2f}" for k, v in one["extra"].items())
        print(f"all steps in one process: {one['median']:.2f} s ({steps}), peak RSS {_gb(one['peak'])}")
    if not with_simpleitk:
        return
    itk = results["staple_simpleitk"]
    if "error" in itk:
        print(f"staple method='simpleitk' failed: {itk['error']}")
        return
    fast = results["staple"]
    ratio = itk["median"] / fast["median"] if "median" in fast else float("nan")
    print(f"STAPLE: SimpleITK's filters alone {itk['median']:.2f} s (peak {_gb(itk['peak'])}) vs patterns "
          f"{fast.get('median', float('nan')):.2f} s: {ratio:.1f}x faster (target >= 20x)")
    print("patterns vs SimpleITK, largest differences: "
          + ", ".join(f"{k} {v:.2g}" for k, v in itk["extra"].items()))
