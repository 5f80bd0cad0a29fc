"""Command line: ``napari-seg-uncertainty demo|train|predict``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from .demo import DATASETS, WORKFLOW_DATASET, run_gui_demo, run_headless_demo

    if args.headless:
        if not args.out:
            print("error: --headless needs --out DIR (the folder to write the outputs to).", file=sys.stderr)
            return 2
        datasets = [args.data] if args.data else list(DATASETS)
        workflow = None if args.no_workflow else (args.data or WORKFLOW_DATASET)
        results = run_headless_demo(
            args.out,
            datasets=datasets,
            workflow=workflow,
            overwrite=args.overwrite,
            seed=args.seed,
            device=args.device,
            log=print,
        )
        for name, metrics in results.items():
            print(
                f"{name}: {metrics['num_raters']} raters, shape {tuple(metrics['shape'])}, "
                f"{len(metrics['files'])} files written to {args.out}/{name}"
            )
            for row in metrics["summary"][1:]:
                print(
                    f"    {row['name']:<14} mean pairwise Dice {row['mean_pairwise_dice']:.3f}, "
                    f"empty for {row['raters_empty']} rater(s)"
                )
            flow = metrics.get("workflow")
            if flow:
                for model, numbers in flow["calibration"].items():
                    print(
                        f"    {model:<30} ECE {100 * numbers['ece']:.2f}%, NLL {numbers['nll']:.4f}, "
                        f"Brier {numbers['brier']:.5f}"
                    )
                trained = flow["ssn"]["settings"]["samples"]
                print(
                    f"    SSN samples: GED² {trained['ged2']:.4f}, "
                    f"diversity {trained['sample_diversity']:.4f} "
                    f"(raters {flow['ssn']['rater_diversity']:.4f})"
                )
        return 0
    import napari

    run_gui_demo(args.data or WORKFLOW_DATASET, seed=args.seed)
    napari.run()
    return 0


def _delegate(module: str, func: str, argv: list[str]) -> int:
    try:
        mod = importlib.import_module(f"napari_seg_uncertainty.{module}")
    except ModuleNotFoundError as exc:
        print(f"error: this installation has no {module} module ({exc}).", file=sys.stderr)
        return 2
    return int(getattr(mod, func)(argv) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-seg-uncertainty`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return _delegate("cli_train", "train_main", argv[1:])
    if argv and argv[0] == "predict":
        return _delegate("cli_train", "predict_main", argv[1:])
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty",
        description=(
            "Segmentation uncertainty in napari. Subcommands: demo, train CONFIG, predict CHECKPOINT IMAGE."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="open napari with the demo data, or run it headless into a folder")
    demo.add_argument("--headless", action="store_true", help="no window: write every output into --out")
    demo.add_argument("--out", help="output folder for --headless")
    demo.add_argument(
        "--data",
        choices=["phantom2d", "phantom3d", "ct2d", "mr3d"],
        help="demo data (GUI default phantom2d; headless default: all four, the workflow on phantom2d)",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the simulated raters, the training and the SSN samples"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace files from an earlier headless run")
    demo.add_argument(
        "--no-workflow",
        action="store_true",
        help="headless: write only the raters' outputs (no soft labels, training, SSN, calibration)",
    )
    demo.add_argument(
        "--device",
        default="auto",
        help="headless: training device, e.g. cpu or cuda:0 (default auto: CUDA, then MPS, then CPU)",
    )
    sub.add_parser("train", help="train a model from a config file (see 'train --help')")
    sub.add_parser("predict", help="run a checkpoint on an image (see 'predict --help')")
    args = parser.parse_args(argv)
    try:
        return _demo(args)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
