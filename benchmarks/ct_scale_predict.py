"""CT-scale part ``predict``: the default 3-D U-Net run on the generated 300x512x512 case.

``python benchmarks/bench_ct_scale.py --part predict [--shape Z Y X] [--repeats N] [--variants a,b] [--slab N]``

A default :class:`TrainConfig` 3-D U-Net (channels 16-32-64, 32^3 patches) is trained for one step on a small
crop of the same generated case in a temporary folder (its weights do not matter for time and memory). Each
variant then runs in a fresh subprocess under ``memcap.py 5`` (a 5 GB address-space cap) that loads the
image, runs ``predict`` and reports its time and peak resident memory (``ru_maxrss``) minus the image's size,
and minus the resident memory after the imports (the "beyond imports" figure is the prediction's own).

Variants: ``float32`` (probabilities in memory), ``float16``, ``npy`` (float32 probabilities written to a
``.npy`` file block by block), ``today`` (the whole-volume path ``predict`` took before: MONAI's
sliding windows over the whole image into a full-size output, then the probabilities, for the ratio).
Target: peak RSS <= 2 GB beyond the input image.

Measured 2026-11-28 on the shared 2-core machine (under load from other runs; one repeat each, times vary 3x
with the load): float32 563 s, peak 2.18 GiB, 1.89 GiB beyond the image (0.41 GiB of it the imports of
torch and MONAI, 1.25 GiB the outputs); float16 183 s, 1.33 GiB beyond the image; npy 640 s, 1.07 GiB beyond
the image. Before (the whole-volume path, tiny U-Net, issue 15): 20 s, 3.6 GB.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
VARIANTS = ("float32", "float16", "npy", "today")

CHILD = r"""
import json, resource, sys, time
import numpy as np
checkpoint, image_path, variant, slab, folder = sys.argv[1:6]
image = np.load(image_path)
from napari_seg_uncertainty.core.training import load_trained_model, predict
trained = load_trained_model(checkpoint)
def rss():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
base = rss()
options = {"slab_planes": int(slab) if slab != "auto" else None}
if variant == "float16":
    options["dtype"] = "float16"
elif variant == "npy":
    options["out"] = folder + "/probabilities.npy"
start = time.perf_counter()
if variant == "today":  # the whole-volume path predict took before streaming
    from napari_seg_uncertainty.core._numeric import entropy_nats
    from napari_seg_uncertainty.core.training.inference import ensemble_probabilities, normalize_image
    normed = normalize_image(image[None], trained.info["normalization"])
    probs = ensemble_probabilities(trained.model, normed, trained.info, trained.device, trained.config,
                                   num_samples=0).numpy()
    del normed
    class result:
        labels = probs.argmax(axis=0).astype(np.uint8)
        entropy = (entropy_nats(probs, axis=0) / np.log(3)).astype(np.float32)
else:
    result = predict(trained, image, **options)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak": peak, "after_imports": base, "image": image.nbytes,
                  "labels": np.bincount(result.labels.ravel(), minlength=3).tolist()}))
"""


def _child(checkpoint: str, image: str, variant: str, slab: str, folder: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(HERE / "memcap.py"), "5", "--", sys.executable, "-c", CHILD,
               checkpoint, image, variant, slab, folder]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args, rest) -> None:
    """Time and peak memory of ``predict`` with the default 3-D U-Net, per variant (medians of repeats)."""
    import argparse

    from ct_case import save_ct_image, train_checkpoint

    parser = argparse.ArgumentParser(prog="ct_scale_predict")
    parser.add_argument("--variants", default="float32,float16,npy")
    parser.add_argument("--slab", default="auto", help="slices per chunk of a 2-D net (a 3-D net: unused)")
    options = parser.parse_args(rest)
    gib = 2.0**30
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = train_checkpoint(folder, (48, 96, 96), spatial_dims=3)  # the default 3-D U-Net
        image = save_ct_image(folder, tuple(args.shape))
        print(f"shape {tuple(args.shape)}, default 3-D U-Net, slab {options.slab}, {args.repeats} repeat(s)")
        for variant in options.variants.split(","):
            runs = [_child(checkpoint, image, variant, options.slab, folder) for _ in range(args.repeats)]
            failed = [r for r in runs if "error" in r]
            if failed:
                print(f"{variant:8s} FAILED {failed[0]['error']}")
                continue
            seconds = statistics.median(r["seconds"] for r in runs)
            peak = max(r["peak"] for r in runs)
            beyond_image = peak - runs[0]["image"]
            beyond_imports = peak - runs[0]["after_imports"]  # the image is loaded before the imports
            verdict = "ok" if beyond_image <= 2e9 else "OVER 2 GB"  # the target is in GB (10**9 bytes)
            print(f"{variant:8s} {seconds:7.1f} s   peak RSS {peak / gib:5.2f} GiB   beyond the image "
                  f"{beyond_image / gib:5.2f} GiB = {beyond_image / 1e9:5.2f} GB ({verdict})   "
                  f"beyond image+imports {beyond_imports / gib:5.2f} GiB")
