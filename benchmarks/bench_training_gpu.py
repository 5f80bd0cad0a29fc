"""Training throughput on a GPU (mixed precision on and off) against the CPU, on the 3-D demo phantom.

For each model (3-D U-Net with a softmax head and soft-target cross-entropy; the same U-Net with
the SSN head, rank 10, 20 Monte-Carlo samples) it trains a few epochs with
:func:`~napari_seg_uncertainty.core.training.train` and prints the median throughput of the steps
after the first epoch (patches per second), the peak GPU memory, the last validation metrics and
the time of a sliding-window prediction of the whole volume.

Run on a machine with CUDA::

    python benchmarks/bench_training_gpu.py                 # GPU with and without AMP, then CPU
    python benchmarks/bench_training_gpu.py --skip-cpu --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_seg_uncertainty.core.phantom import make_phantom_raters
    from napari_seg_uncertainty.core.training import TrainConfig, TrainingData, predict, train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args(argv)

    # four phantom cases (40, 96, 96), spacing (2.5, 1, 1), 4 raters, 4 classes; the last one validates
    cases = [make_phantom_raters(3, seed=seed) for seed in range(4)]
    image, raters = cases[-1]
    data = TrainingData.from_arrays([c[0] for c in cases], [c[1] for c in cases])
    small = dict(channels=(16, 32, 64, 128), strides=(2, 2, 2))
    large = dict(channels=(32, 64, 128, 256), strides=(2, 2, 2), batch_size=4 * args.batch)
    models = {
        "softmax + CE": dict(head="softmax", loss="ce", target="mean", **small),
        "SSN rank 10": dict(
            head="ssn", loss="ssn", target="random_rater", ssn_rank=10, ssn_samples=20, **small
        ),
        "large softmax": dict(head="softmax", loss="ce", target="mean", **large),
    }
    runs = []
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
        runs += [("cuda", True), ("cuda", False)]
    else:
        print("no CUDA device: CPU only")
    if not args.skip_cpu:
        runs.append(("cpu", False))
    print(
        f"data: 4 x 3-D phantom {image.shape} (3 train, 1 validation), {raters.num_raters} raters, "
        f"{raters.num_classes} classes; U-Net 16-32-64-128 (large: 32-64-128-256, batch x4), "
        f"patches 32x64x64, batch {args.batch}, {args.epochs} x {args.steps} steps on the GPU"
    )
    for name, options in models.items():
        for device, amp in runs:
            epochs = args.epochs if device == "cuda" else 2
            steps = args.steps if device == "cuda" else max(3, args.steps // 4)
            options = {"batch_size": args.batch, **options}
            config = TrainConfig(
                patch_size=(32, 64, 64),
                epochs=epochs,
                steps_per_epoch=steps,
                device=device,
                amp=amp,
                output_dir=tempfile.mkdtemp(),
                **options,
            )
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            records = list(train(config, data))
            wall = time.perf_counter() - start
            later = [r.throughput for r in records if r.kind == "step" and r.epoch > 1]
            last_epoch = [r for r in records if r.kind == "epoch"][-1]
            memory = (
                f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
                if device == "cuda"
                else ""
            )
            t0 = time.perf_counter()
            out = predict(records[-1].checkpoint, image, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            predict_s = time.perf_counter() - t0
            label = f"{device}{' AMP' if amp else ''}"
            print(
                f"  {name:<13} {label:<9} batch {config.batch_size:>2} {statistics.median(later):7.1f} "
                f"patches/s (median of {len(later)} steps), run {wall:6.1f} s{memory}; "
                f"val NLL {last_epoch.val_nll:.3f}, val Dice {last_epoch.val_dice:.3f}; "
                f"predict whole volume {predict_s:.2f} s (shape {out.probabilities.shape})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
