"""Training the runs of a study: here one after another, as local processes, or as SLURM jobs.

Every run folder holds a ``run.json`` (its full training configuration, the cohort it reads and the
case-level split) written by the runner, so a run is a job that needs nothing but its folder:
:func:`train_run` reads it, resumes from ``last.pt`` when an earlier attempt stopped early (a
``"periodic"``, ``"cancelled"`` or ``"error"`` checkpoint) and does nothing when ``last.pt`` is
``"final"``. An interrupted run (Ctrl-C, a killed or timed-out job) keeps its last checkpoint, so the
next start of the study continues it.

The launchers (:data:`~napari_seg_uncertainty.workflow.study.spec.LAUNCHERS`):

``local``
    One run after another in this process (:func:`train_steps`), with a progress record per epoch.
``parallel``
    ``jobs`` runs at a time, each its own process through ``submitit.LocalExecutor``; a job is
    submitted once an earlier one has finished. With CUDA devices the jobs take them in turn. Ctrl-C
    (or closing the generator) cancels the jobs (``job.cancel()``): each writes a ``"cancelled"``
    ``last.pt``; the controllers' own output goes to ``OUT/parallel/controller.log``, not the terminal.
``slurm``
    ``submitit.AutoExecutor(cluster="slurm")``: one job per run, or one job array with
    ``slurm_array_parallelism = jobs``; the logs and submission files go to ``OUT/slurm``.

submitit does all process and cluster work (starting, signals, logs, timeouts, arrays); nothing here
schedules beyond waiting for a job before submitting past ``jobs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core._validation import describe
from .spec import LAUNCHERS, LauncherSettings

__all__ = [
    "PHASES",
    "RUN_FILE",
    "StudyProgress",
    "launch_runs",
    "make_executor",
    "read_run_file",
    "train_run",
    "train_steps",
    "write_run_file",
]

#: What a study is doing when it reports progress.
PHASES = ("cohort", "train", "evaluate", "table")
#: The file in each run folder that makes the run a self-contained job.
RUN_FILE = "run.json"
#: The output of the ``parallel`` launcher's submitit controllers, in its submitit folder.
CONTROLLER_LOG = "controller.log"
#: Seconds between two looks at running jobs.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class StudyProgress:
    """One step of a study, for a log line or a progress bar.

    Attributes
    ----------
    phase : {"cohort", "train", "evaluate", "table"}
        What the study is doing.
    run_id : str or None
        The run concerned (``"svls/seed0"``), None for the study as a whole.
    text : str
        One line for a log.
    fraction : float or None
        Share of the phase done, when known.
    """

    phase: str
    run_id: str | None
    text: str
    fraction: float | None = None

    def __str__(self) -> str:
        return f"[{self.phase}] {self.text}"


# ---------------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------------
def write_run_file(
    folder: str | os.PathLike, *, run_id: str, config: Mapping[str, Any], cohort: str,
    cohort_options: Mapping[str, Any], split: Mapping[str, Sequence[str]],
) -> Path:  # fmt: skip
    """Write ``run.json`` into a run folder (atomically, replacing an earlier one); returns its path."""
    from ...core._atomic import atomic_write

    path = Path(folder) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "version": 1, "run_id": run_id, "config": dict(config), "cohort": str(cohort),
        "cohort_options": dict(cohort_options), "split": {k: list(v) for k, v in split.items()},
    }  # fmt: skip
    with atomic_write(path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def read_run_file(folder: str | os.PathLike) -> dict[str, Any]:
    """The content of a run folder's ``run.json``.

    Raises
    ------
    FileNotFoundError
        The folder has no ``run.json`` (it was not prepared by a study).
    """
    path = Path(folder) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; a run folder is prepared by run_study.")
    return json.loads(path.read_text())


def checkpoint_reason(path: str | os.PathLike) -> str | None:
    """Why ``last.pt`` was written (``"final"``, ``"periodic"``, ``"cancelled"``, ``"error"``), None without one."""
    if not os.path.isfile(path):
        return None
    from ...core.checkpoint import load_checkpoint

    return str(load_checkpoint(path).get("reason"))


def train_steps(folder: str | os.PathLike, *, cohort: Any = None) -> Generator[Any, None, str]:
    """Train (or continue) the run in ``folder``, yielding the training's progress records.

    Parameters
    ----------
    folder : path
        A run folder with its ``run.json``.
    cohort : Cohort, optional
        The study's cohort, when already loaded in this process (else loaded from ``run.json``).

    Returns
    -------
    str
        The run's ``last.pt`` (the generator's return value).

    Notes
    -----
    A ``"final"`` ``last.pt`` means the run is finished: nothing is trained. Any other ``last.pt`` is
    resumed. Closing the generator (or Ctrl-C) makes training write ``last.pt`` with the reason
    ``"cancelled"``.
    """
    from ...core.cohort import load_cohort
    from ...core.training import TrainConfig, train

    folder = Path(folder)
    info = read_run_file(folder)
    last = folder / "last.pt"
    reason = checkpoint_reason(last)
    if reason == "final":
        return str(last)
    config = TrainConfig.from_dict({**info["config"], "output_dir": str(folder), "overwrite": reason is None})
    if cohort is None:
        cohort = load_cohort(info["cohort"], **info.get("cohort_options", {}))
    gen = train(config, cohort, resume=None if reason is None else str(last), split=info["split"])
    try:
        yield from gen
    finally:
        gen.close()
    return str(last)


def _interrupt_once(signum: int, frame: Any) -> None:
    """Raise ``KeyboardInterrupt`` on the first SIGINT and ignore the next ones, so the checkpoint of the
    interrupted run is written even when a second SIGINT follows (Ctrl-C reaches a job and its submitit
    controller, which forwards it again)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def train_run(run_folder: str | os.PathLike) -> str:
    """Train the run in ``run_folder`` to its end (a submitit job); returns its ``last.pt``.

    A top-level function so that submitit can pickle it by reference: the job needs only the folder.
    SIGINT (Ctrl-C, ``job.cancel()``) stops it with a ``"cancelled"`` ``last.pt``.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupt_once) if main else None
    try:
        gen = train_steps(run_folder)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------
def make_executor(settings: LauncherSettings, folder: str | os.PathLike, *, visible_gpus: int = 0) -> Any:
    """The submitit executor of a ``parallel`` or ``slurm`` launcher, its parameters set.

    Parameters
    ----------
    settings : LauncherSettings
        ``kind`` ``"parallel"`` (``submitit.LocalExecutor``) or ``"slurm"`` (``submitit.AutoExecutor``).
    folder : path
        submitit's folder: submission files, pickled jobs and logs.
    visible_gpus : int
        CUDA devices of this machine (``parallel`` only): each job gets one of them.
    """
    try:
        import submitit
    except ImportError as exc:
        raise ImportError(
            f"the {settings.kind!r} launcher runs jobs through submitit, which is not installed; install it with "
            "pip install 'napari-seg-uncertainty[cluster]' (or use the 'local' launcher)."
        ) from exc
    if settings.kind == "parallel":
        executor = submitit.LocalExecutor(folder=os.fspath(folder))
        executor.update_parameters(timeout_min=settings.timeout_min, gpus_per_node=1 if visible_gpus else 0)
        return executor
    if settings.kind != "slurm":
        raise ValueError(f"launcher kind {settings.kind!r} has no executor; expected 'parallel' or 'slurm'.")
    slurm = settings.slurm
    executor = submitit.AutoExecutor(folder=os.fspath(folder), cluster="slurm")
    optional = {
        "slurm_partition": slurm.partition, "cpus_per_task": slurm.cpus_per_task, "mem_gb": slurm.mem_gb,
        "slurm_account": slurm.account, "slurm_qos": slurm.qos, "slurm_constraint": slurm.constraint,
        "slurm_setup": list(slurm.setup) or None,
    }  # fmt: skip
    executor.update_parameters(
        name="napari-seg-uncertainty", timeout_min=slurm.timeout_min, gpus_per_node=slurm.gpus_per_node,
        nodes=1, tasks_per_node=1, slurm_array_parallelism=settings.jobs,
        **{k: v for k, v in optional.items() if v is not None},
    )  # fmt: skip
    return executor


def launch_runs(
    runs: Sequence[Any], settings: LauncherSettings, *, out_dir: str | os.PathLike, cohort: Any = None
) -> Generator[StudyProgress, None, tuple[str, ...]]:
    """Train ``runs`` (each with ``run_id`` and a prepared ``folder``) with the launcher ``settings``.

    Yields
    ------
    StudyProgress
        ``"train"`` records: an epoch of a local run, a job submitted, started or ended.

    Returns
    -------
    tuple of str
        The ids of the runs trained to their end.

    Raises
    ------
    RuntimeError
        A job failed (after every other job has ended); the message names the runs and their logs.
    """
    if not isinstance(settings, LauncherSettings):
        raise TypeError(f"settings must be LauncherSettings, got {describe(settings)}.")
    if settings.kind not in LAUNCHERS:  # pragma: no cover - LauncherSettings checks it
        raise ValueError(f"unknown launcher {settings.kind!r}.")
    if not runs:
        return ()
    if settings.kind == "local":
        return (yield from _launch_local(runs, cohort))
    folder = Path(out_dir) / settings.kind
    if settings.kind == "parallel":
        return (yield from _launch_parallel(runs, settings, folder))
    return (yield from _launch_slurm(runs, settings, folder))


def _launch_local(runs: Sequence[Any], cohort: Any) -> Generator[StudyProgress, None, tuple[str, ...]]:
    from ..training import progress_text

    done = []
    for index, run in enumerate(runs):
        yield StudyProgress("train", run.run_id, f"{run.run_id}: training in {run.folder}", index / len(runs))
        for record in train_steps(run.folder, cohort=cohort):
            if record.kind in ("epoch", "cancelled"):
                fraction = (index + record.global_step / max(record.total_steps, 1)) / len(runs)
                yield StudyProgress("train", run.run_id, f"{run.run_id}: {progress_text(record)}", fraction)
        done.append(run.run_id)
        yield StudyProgress("train", run.run_id, f"{run.run_id}: finished", (index + 1) / len(runs))
    return tuple(done)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _launch_parallel(
    runs: Sequence[Any], settings: LauncherSettings, folder: Path
) -> Generator[StudyProgress, None, tuple[str, ...]]:
    """At most ``settings.jobs`` local processes at once; the next job is submitted when one ends."""
    gpus = _cuda_devices()
    executor = make_executor(settings, folder, visible_gpus=gpus)
    pending, active, done, failed = list(runs), {}, [], []
    submitted = 0
    try:
        while pending or active:
            while pending and len(active) < settings.jobs:
                run = pending.pop(0)
                if gpus:
                    executor.update_parameters(visible_gpus=(submitted % gpus,))
                with _stderr_into(folder / CONTROLLER_LOG):
                    job = executor.submit(train_run, str(run.folder))
                submitted += 1
                active[run.run_id] = job
                yield StudyProgress("train", run.run_id, f"{run.run_id}: started as process {job.job_id}")
            yield from _collect(active, done, failed, total=len(runs))
            if active:
                time.sleep(POLL_SECONDS)
    finally:
        for job in active.values():  # interrupted: the jobs save a "cancelled" last.pt on SIGINT
            job.cancel(check=False)
    _raise_failures(failed)
    return tuple(done)


@contextlib.contextmanager
def _stderr_into(path: Path) -> Generator[None, None, None]:
    """Point this process's file descriptor 2 at ``path`` while a job is submitted.

    A ``submitit.LocalExecutor`` job is run by a controller process that inherits descriptor 2 and,
    when interrupted (Ctrl-C, ``job.cancel()``), prints a ``KeyboardInterrupt`` traceback there;
    submitit has no option for the controller's output, so it goes to ``path`` instead of the
    terminal. The jobs' own output goes to submitit's per-job logs as before.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _launch_slurm(
    runs: Sequence[Any], settings: LauncherSettings, folder: Path
) -> Generator[StudyProgress, None, tuple[str, ...]]:
    """Submit every run as a SLURM job (or one array) and wait for them."""
    executor = make_executor(settings, folder)
    if settings.slurm.array:
        with executor.batch():
            jobs = [executor.submit(train_run, str(run.folder)) for run in runs]
    else:
        jobs = [executor.submit(train_run, str(run.folder)) for run in runs]
    active = {run.run_id: job for run, job in zip(runs, jobs, strict=True)}
    for run_id, job in active.items():
        yield StudyProgress("train", run_id, f"{run_id}: submitted as SLURM job {job.job_id}")
    done: list[str] = []
    failed: list[tuple[str, Any, BaseException]] = []
    while active:
        yield from _collect(active, done, failed, total=len(runs))
        if active:
            time.sleep(POLL_SECONDS * 30)
    _raise_failures(failed)
    return tuple(done)


def _collect(
    active: dict[str, Any], done: list[str], failed: list, *, total: int
) -> Generator[StudyProgress, None, None]:
    """Move ended jobs out of ``active`` into ``done`` or ``failed``, with a record each."""
    for run_id in [r for r, job in active.items() if job.done()]:
        job = active.pop(run_id)
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - submitit wraps the job's exception; reported with its log
            failed.append((run_id, job, exc))
            yield StudyProgress("train", run_id, f"{run_id}: failed (log {job.paths.stderr})")
            continue
        done.append(run_id)
        yield StudyProgress("train", run_id, f"{run_id}: finished", (len(done) + len(failed)) / total)


def _raise_failures(failed: list[tuple[str, Any, BaseException]]) -> None:
    if failed:
        lines = [f"{run_id}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__} "
                 f"(log {job.paths.stderr})" for run_id, job, exc in failed]
        raise RuntimeError(
            f"{len(failed)} run(s) failed; their last.pt (if any) resumes on the next start:\n  " + "\n  ".join(lines)
        )
