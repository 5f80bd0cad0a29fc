"""``napari-seg-uncertainty study STUDY.yaml [--out DIR]``: train, evaluate and compare the candidates of a study.

Runs :func:`~napari_seg_uncertainty.workflow.study.run_study`: every run (candidate × seed) without a
finished checkpoint is trained (an interrupted one resumes from its ``last.pt``; a finished one is never
retrained), every run is evaluated on the cohort's test split, and the study table (``study.md``,
``study.csv``, ``study.png``) and the quality-control plot are written. ``--dry-run`` prints the plan
(each run finished, to resume or new) and changes nothing. ``--example NAME`` runs one of the packaged
example studies (``--list-examples`` names them). Errors are printed as one ``error: …`` line with exit
status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yaml import YAMLError

from .core._validation import exception_text

if TYPE_CHECKING:
    from .workflow.study import StudySpec

__all__ = ["plan_lines", "study_main"]

#: What the plan says of a run, by :attr:`StudyRun.status`.
PLAN_WORDS = {
    "finished": "finished (kept, not retrained)",
    "resume": "interrupted (resumes from last.pt)",
    "new": "new (trains from scratch)",
}


def _parser() -> argparse.ArgumentParser:
    from .workflow.study import LAUNCHERS

    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty study",
        description="Train every candidate of a study that has no finished run, evaluate all runs on the "
        "cohort's test split and write the study table (means with 95 % bootstrap intervals, paired tests "
        "with Holm correction). Run it again after an interruption: finished runs are kept.",
    )
    parser.add_argument("study", nargs="?", metavar="STUDY.yaml", help="the study file")
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (default: the study file's 'out_dir', else a folder named after the study file)",
    )
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="local: one run after another (default); parallel: --jobs runs at once on this machine; "
        "slurm: one SLURM job per run through submitit (settings from the study file's 'slurm' section)",
    )
    parser.add_argument("--jobs", type=int, metavar="N", help="runs at once (parallel) or SLURM array width")
    parser.add_argument("--device", default="auto", help="training and inference device: auto, cpu, cuda:N, mps")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (each run: finished, resume or new) and exit"
    )
    parser.add_argument("--example", metavar="NAME", help="run a packaged example study (see --list-examples)")
    parser.add_argument("--list-examples", action="store_true", help="list the packaged example studies and exit")
    return parser


def plan_lines(runs: Sequence[Any]) -> list[str]:
    """The printed plan: one line per run (its id, status and folder), then the counts.

    Parameters
    ----------
    runs : sequence of StudyRun
        What :func:`~napari_seg_uncertainty.workflow.study.plan_study` returned.

    Returns
    -------
    list of str
        One line per run and a last line such as ``"3 runs: 1 finished, 0 to resume, 2 new"``.

    Examples
    --------
    >>> from types import SimpleNamespace as Run
    >>> for line in plan_lines([Run(run_id="svls/seed0", status="new", folder="out/runs/svls/seed0")]):
    ...     print(line)
    svls/seed0  new (trains from scratch)  out/runs/svls/seed0
    1 run: 0 finished, 0 to resume, 1 new
    """
    width = max((len(run.run_id) for run in runs), default=0)
    status_width = max((len(PLAN_WORDS.get(run.status, run.status)) for run in runs), default=0)
    lines = [
        f"{run.run_id.ljust(width)}  {PLAN_WORDS.get(run.status, run.status).ljust(status_width)}  {run.folder}"
        for run in runs
    ]
    counts = {status: sum(run.status == status for run in runs) for status in PLAN_WORDS}
    lines.append(
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}: {counts['finished']} finished, "
        f"{counts['resume']} to resume, {counts['new']} new"
    )
    return lines


def _list_examples(write: Callable[[str], None]) -> int:
    from .workflow.study import example_studies, load_study

    for name, path in sorted(example_studies().items()):
        write(f"{name:<18} {load_study(path).description}".rstrip())
        write(f"{'':<18} {path}")
    return 0


def _study_source(args: argparse.Namespace) -> Path:
    """The study file named on the command line or by ``--example``."""
    if args.example is not None and args.study is not None:
        raise ValueError(f"give a study file or --example, not both (got {args.study!r} and --example {args.example}).")
    if args.example is not None:
        from .workflow.study import example_studies

        examples = example_studies()
        if args.example not in examples:
            raise ValueError(
                f"--example {args.example!r} is not a packaged study; choose from {', '.join(sorted(examples))}."
            )
        return Path(examples[args.example])
    if args.study is None:
        raise ValueError("give a study file (STUDY.yaml), --example NAME or --list-examples.")
    path = Path(args.study)
    if not path.is_file():
        raise FileNotFoundError(f"study file {str(path)!r} does not exist.")
    return path


def _out_dir(args: argparse.Namespace, source: Path, spec: StudySpec) -> Path:
    """``--out``, else the study file's own output folder, else ``<study file name>/`` beside the file."""
    if args.out is not None:
        return Path(args.out)
    if args.example is not None:
        raise ValueError(f"--example {args.example} needs --out DIR (the folder to write the study to).")
    return Path(spec.out_dir) if spec.out_dir else source.with_suffix("")


def _run(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    from .workflow.study import load_study, plan_study, run_study

    source = _study_source(args)
    spec = load_study(source)
    out_dir = _out_dir(args, source, spec)
    runs = plan_study(spec, out_dir)
    gen = None
    if not args.dry_run:  # its options are checked (an error line) before the plan is printed
        gen = run_study(spec, out_dir=out_dir, launcher=args.launcher, jobs=args.jobs, device=args.device, runs=runs)
    write(f"study {spec.name}: {len(runs)} run{'s' if len(runs) != 1 else ''} into {out_dir}")
    for line in plan_lines(runs):
        write(f"  {line}")
    if gen is None:
        write("dry run: nothing was trained or written.")
        return 0
    with warnings.catch_warnings(record=True) as caught:  # shown once, as lines of their own, after the table
        warnings.simplefilter("always", UserWarning)
        try:
            while True:
                progress = next(gen)
                write(str(progress))
        except StopIteration as stop:
            result = stop.value
    table = Path(result.out_dir) / "study.md"
    write("")
    write(f"study table ({table}):")
    write(table.read_text(encoding="utf-8").rstrip())
    write("")
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        write(f"note: {message}")
    write(f"{len(result.trained)} run(s) trained, {len(result.skipped)} finished run(s) kept.")
    for path in result.files:
        write(f"wrote {path}")
    return 0


def _message(exc: BaseException) -> str:
    """One line for an error, with the Python keyword replaced by the command's option."""
    message = " ".join(exception_text(exc).split())
    return message.replace("pass overwrite=True", "choose another --out folder")


def study_main(argv: Sequence[str] | None = None) -> int:
    """``napari-seg-uncertainty study STUDY.yaml [options]``; the exit status (0, 2 on an error, 130 interrupted)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))

    def write(line: str) -> None:
        print(line, flush=True)

    try:
        if args.list_examples:
            return _list_examples(write)
        return _run(args, write)
    except KeyboardInterrupt:
        print(
            "interrupted: finished runs are kept; run the same command again to resume the others.",
            file=sys.stderr,
        )
        return 130
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, MemoryError, ImportError, YAMLError) as exc:
        print(f"error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(study_main())
