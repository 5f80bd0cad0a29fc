"""``napari-seg-uncertainty evaluate CHECKPOINT… --cohort SRC --split test --out DIR``.

Runs :func:`~napari_seg_uncertainty.workflow.evaluation.evaluate_checkpoints`: every checkpoint on the
held-out cases of the cohort (by default the split stored in the checkpoint), one line per case,
then a summary table (means with 95 % bootstrap intervals over cases). ``DIR`` receives
``cases.csv``, ``summary.csv``, ``reliability.csv``, ``reliability.png`` and ``evaluation.json``.
Errors are printed as one ``error: …`` line with exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from .core._validation import exception_text

__all__ = ["SUMMARY_METRICS", "evaluate_main", "summary_table"]

#: The metrics the printed summary shows (the CSV holds them all): per class, then per case.
SUMMARY_METRICS = (
    "dice",
    "surface_dice",
    "hd95",
    "ece_reference_volume",
    "tace_reference_volume",
    "nll_reference_volume",
    "brier_reference_volume",
    "ece_reference_box",
    "entropy_mae_volume",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty evaluate",
        description="Evaluate checkpoints on the held-out cases of a cohort: per-case metrics, the pooled "
        "reliability diagram and means with 95 % bootstrap intervals over cases.",
    )
    parser.add_argument("checkpoint", nargs="+", help="last.pt or best.pt files written by 'train'")
    parser.add_argument(
        "--cohort", required=True, metavar="SRC", help="the cohort: a folder of cases, a .npz or a manifest"
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "val", "train"],
        help="which cases of each checkpoint's stored split to evaluate (default test)",
    )
    parser.add_argument(
        "--split-file",
        metavar="JSON",
        help="a split.json ({train: [...], val: [...], test: [...]}, case ids) instead of the checkpoints' own "
        "stored splits; a case that trained a checkpoint is still refused",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR",
        help="output folder (cases.csv, summary.csv, reliability.*, evaluation.json)",
    )
    parser.add_argument(
        "--reference",
        default="majority",
        choices=["majority", "staple", "mean"],
        help="fused reference of the overlap and calibration metrics (default majority)",
    )
    parser.add_argument("--tolerance-mm", type=float, default=1.0, help="surface Dice tolerance in mm (default 1)")
    parser.add_argument("--bins", type=int, default=15, help="reliability / ECE bins (default 15)")
    parser.add_argument("--samples", type=int, help="SSN samples / MC-dropout passes (default: the checkpoint's)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling and the bootstrap (default 0)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier evaluation")
    return parser


def _interval(mean: float, low: float, high: float) -> str:
    if not math.isfinite(mean):
        return "—"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.4g}"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def summary_table(result: Any, *, metrics: Sequence[str] = SUMMARY_METRICS) -> list[str]:
    """The printed summary: one line per (metric, class), one column per candidate (mean [low, high]).

    Parameters
    ----------
    result : EvaluationResult
        What :func:`~napari_seg_uncertainty.workflow.evaluation.evaluate_checkpoints` returned.
    metrics : sequence of str
        Metric names to show, in this order (those the rows do not hold are skipped).

    Returns
    -------
    list of str
        The header line and one line per shown (metric, class).
    """
    entries = {
        c.name: {(s.metric, s.class_name): s for s in c.summary} for c in result.candidates
    }
    keys: list[tuple[str, str]] = []
    for metric in metrics:
        for candidate in result.candidates:
            for s in candidate.summary:
                if s.metric == metric and (s.metric, s.class_name) not in keys:
                    keys.append((s.metric, s.class_name))
    cells = [
        [metric, class_name]
        + [
            _interval(e.mean, e.low, e.high) if (e := entries[c.name].get((metric, class_name))) else "—"
            for c in result.candidates
        ]
        for metric, class_name in keys
    ]
    header = ["metric", "class", *[c.name for c in result.candidates]]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in [header, *cells]]


def _read_split(path: str) -> Any:
    """The split of a ``split.json`` file (ValueError naming the file when it is not JSON)."""
    import json

    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--split-file {path!r} is not JSON ({exc}); expected {{train: [...], test: [...]}}.") from exc


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``napari-seg-uncertainty evaluate CHECKPOINT… --cohort SRC --out DIR [options]``; the exit status."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from .workflow.evaluation import evaluate_checkpoints

    try:
        split_spec = None if args.split_file is None else _read_split(args.split_file)
        gen = evaluate_checkpoints(
            args.checkpoint,
            args.cohort,
            split=args.split,
            split_spec=split_spec,
            out_dir=args.out,
            reference=args.reference,
            tolerance_mm=args.tolerance_mm,
            num_bins=args.bins,
            num_samples=args.samples,
            num_resamples=args.resamples,
            seed=args.seed,
            device=args.device,
            overwrite=args.overwrite,
        )
        while True:
            print(next(gen).text(), flush=True)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        print("interrupted: nothing was written.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, MemoryError) as exc:
        message = exception_text(exc).replace("pass overwrite=True", "pass --overwrite")
        message = message.replace("allow overwriting it", "pass --overwrite")
        print(f"error: {message}", file=sys.stderr)
        return 2
    cases = {len(c.case_ids) for c in result.candidates}
    count = cases.pop() if len(cases) == 1 else "the"
    print(f"\nsummary: mean [95% bootstrap CI] over {count} {result.split} cases, reference {result.reference}; "
          f"every metric in {args.out}/summary.csv")
    for line in summary_table(result):
        print(line)
    for path in result.files:
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(evaluate_main())
