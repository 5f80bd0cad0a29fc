"""Running a study: plan the runs, train those not finished, evaluate every run, write the table.

:func:`plan_study` says what each run (candidate × seed) needs, from its folder
``OUT/runs/<candidate>/seed<k>``: a ``last.pt`` written at the end of training (reason ``"final"``)
makes it *finished* and it is never trained again; any other ``last.pt`` (``"periodic"``,
``"cancelled"``, ``"error"``) makes it *resume*; no ``last.pt``, *new*. A run whose stored
configuration differs from the study's is refused with the differing fields named, so a result is
never silently reused for other settings.

:func:`run_study` is a generator of :class:`~napari_seg_uncertainty.workflow.study.launch.StudyProgress`
records: it writes the generated cohort (if the study asks for one) and ``OUT/study.yaml`` (the
resolved study: a study file with every candidate's full configuration; each run folder's
``run.json`` and ``split.json`` hold the cohort and the case-level split), trains through the
study's launcher, evaluates every run on the held-out split (``OUT/evaluation``, only again when a
checkpoint, the evaluation settings or a test case's files changed: the checkpoints' SHA-256 and the
files' sizes and times are kept in ``OUT/evaluation/checkpoints.json``), and writes the
study table and the quality control. It
returns a :class:`StudyResult`.

References
----------
.. [1] A. Mehrtash, W. M. Wells, C. M. Tempany, P. Abolmaesumi, T. Kapur, "Confidence Calibration and
   Predictive Uncertainty Estimation for Deep Medical Image Segmentation", IEEE TMI 39(12), 2020.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...core._file_checks import file_sha256
from ...core._validation import check_int, describe
from .launch import StudyProgress, launch_runs, write_run_file
from .spec import LAUNCHERS, PhantomCohort, StudySpec, check_metric_classes, load_study

__all__ = ["COMPARED_IGNORED", "STUDY_FILE", "StudyResult", "StudyRun", "plan_study", "run_study"]

#: The resolved study in the output folder.
STUDY_FILE = "study.yaml"
#: The SHA-256 of the evaluated checkpoints, beside the evaluation's files.
CHECKPOINTS_FILE = "checkpoints.json"
#: Settings that do not change what a run learns: a run trained with other values is still the study's run.
COMPARED_IGNORED = ("output_dir", "overwrite", "device", "num_workers", "cache_mb", "target_cache_dir")


@dataclass(frozen=True)
class StudyRun:
    """One training run of a study.

    Attributes
    ----------
    run_id : str
        ``"<candidate>/seed<k>"`` (the candidate's name in the evaluation and the table).
    candidate : str
        The candidate's name.
    seed : int
        The run's seed.
    folder : str
        ``OUT/runs/<candidate>/seed<k>`` (absolute).
    config : TrainConfig
        The run's training configuration.
    status : {"finished", "resume", "new"}
        From the folder's ``last.pt``, when planned.
    """

    run_id: str
    candidate: str
    seed: int
    folder: str
    config: Any = dataclasses.field(repr=False)
    status: str

    @property
    def checkpoint(self) -> str:
        """The run's ``last.pt``."""
        return os.path.join(self.folder, "last.pt")


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run_study` returns.

    Attributes
    ----------
    out_dir : str
        The study folder.
    runs : tuple of StudyRun
        Every run, as planned at the start.
    trained, skipped : tuple of str
        Run ids trained (or continued) now, and finished runs kept as they were.
    evaluation : EvaluationResult or SavedEvaluation
        The evaluation of every run (read back from ``OUT/evaluation`` when no checkpoint changed).
    table : StudyTable
        The study table.
    quality : tuple of QualityControl
        Entropy against Dice per candidate and structure.
    files : tuple of str
        The files written by this call.
    """

    out_dir: str
    runs: tuple[StudyRun, ...]
    trained: tuple[str, ...]
    skipped: tuple[str, ...]
    evaluation: Any
    table: Any
    quality: tuple[Any, ...]
    files: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------------
def config_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``"field: stored -> wanted"`` for every training setting that differs (ignoring :data:`COMPARED_IGNORED`).

    Examples
    --------
    >>> config_differences({"loss": "ce", "epochs": 2, "device": "cpu"},
    ...                    {"loss": "dice", "epochs": 2, "device": "cuda"})
    ["loss: 'ce' -> 'dice'"]
    """
    fields = sorted((set(stored) | set(wanted)) - set(COMPARED_IGNORED))
    return [
        f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in fields if _plain(stored.get(k)) != _plain(wanted.get(k))
    ]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _run_status(run_id: str, folder: Path, config: Any) -> str:
    last = folder / "last.pt"
    if not last.is_file():
        return "new"
    from ...core.checkpoint import load_checkpoint

    payload = load_checkpoint(last)
    differences = config_differences(payload.get("config") or {}, config.to_dict())
    if differences:
        raise ValueError(
            f"run {run_id} in {str(folder)!r} was trained with other settings than the study now gives "
            f"({'; '.join(differences)}); its results would not be the study's. Restore the study's settings, "
            "or remove that run folder (or choose another output folder) to train it again."
        )
    return "finished" if payload.get("reason") == "final" else "resume"


def plan_study(
    spec: StudySpec | str | os.PathLike | Mapping[str, Any], out_dir: str | os.PathLike
) -> tuple[StudyRun, ...]:
    """Every run of a study with its status, read from ``out_dir`` (nothing is written).

    Parameters
    ----------
    spec : StudySpec, path or mapping
        The study (see :func:`~napari_seg_uncertainty.workflow.study.spec.load_study`).
    out_dir : path
        The study folder.

    Returns
    -------
    tuple of StudyRun
        Candidates in the study's order, seeds within.

    Raises
    ------
    ValueError
        A run folder holds a checkpoint trained with other settings (the fields are named), or the folder
        holds a study of another cohort or split.
    """
    spec = load_study(spec)
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path, got {describe(out_dir)}.")
    root = Path(os.path.abspath(os.fspath(out_dir)))
    _check_earlier_study(spec, root)  # a dry run says it too, not only the run
    known = cohort_options(spec).get("class_names")
    if known:  # a generated cohort's or the study's class names: checked before the cohort exists
        check_metric_classes(spec.table, known)
    return _study_runs(spec, root, _run_status)


def _study_runs(spec: StudySpec, root: Path, status: Any) -> tuple[StudyRun, ...]:
    """Every run of ``spec`` in ``root``, each with ``status(run_id, folder, config)``."""
    runs = []
    for candidate in spec.candidates:
        for seed in spec.seeds:
            run_id = f"{candidate.name}/seed{seed}"
            folder = root / "runs" / candidate.name / f"seed{seed}"
            config = candidate.run_config(seed=seed, output_dir=folder)
            runs.append(StudyRun(run_id, candidate.name, seed, str(folder), config, status(run_id, folder, config)))
    return tuple(runs)


def _check_planned(runs: Any, spec: StudySpec, root: Path) -> tuple[StudyRun, ...]:
    """``runs`` when they are :func:`plan_study`'s runs of ``spec`` in ``root`` (ids, folders and settings)."""
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence) or not all(
        isinstance(run, StudyRun) for run in runs
    ):
        raise TypeError(f"runs must be the StudyRun tuple that plan_study returns, got {describe(runs)}.")
    expected = _study_runs(spec, root, lambda *_: None)
    if [(r.run_id, r.folder, r.config.to_dict()) for r in runs] != [
        (r.run_id, r.folder, r.config.to_dict()) for r in expected
    ]:
        raise ValueError(
            f"runs were planned for another study or output folder than {str(root)!r}; "
            "pass plan_study(spec, out_dir) of the same study and out_dir, or leave runs out."
        )
    return tuple(runs)


# ---------------------------------------------------------------------------------------------------
# the study
# ---------------------------------------------------------------------------------------------------
def run_study(
    spec: StudySpec | str | os.PathLike | Mapping[str, Any],
    *,
    out_dir: str | os.PathLike | None = None,
    launcher: str | None = None,
    jobs: int | None = None,
    device: str = "auto",
    runs: Sequence[StudyRun] | None = None,
) -> Generator[StudyProgress, None, StudyResult]:
    """Train, evaluate and compare the candidates of a study, resuming whatever an earlier call left.

    Parameters
    ----------
    spec : StudySpec, path or mapping
        The study.
    out_dir : path, optional
        The study folder; default the study file's ``out_dir``.
    launcher : {"local", "parallel", "slurm"}, optional
        Overrides the study's ``launcher.kind``.
    jobs : int, optional
        Overrides the study's ``launcher.jobs`` (runs at a time; the SLURM array's parallelism).
    device : str
        Training and inference device; ``"auto"`` keeps each configuration's own ``device``.
    runs : sequence of StudyRun, optional
        :func:`plan_study`'s plan of this study in ``out_dir``, when already made (each checkpoint is then
        not read again); default: planned here.

    Yields
    ------
    StudyProgress
        ``"cohort"``, ``"train"``, ``"evaluate"`` and ``"table"`` records.

    Returns
    -------
    StudyResult
        The generator's return value (``StopIteration.value``).

    Raises
    ------
    ValueError, TypeError
        A bad study or argument, a run trained with other settings, a study folder holding another cohort
        or split — all before anything is trained.
    RuntimeError
        A ``parallel`` or ``slurm`` job failed (after the others ended).

    Notes
    -----
    Closing the generator (or Ctrl-C) while a run trains makes it write ``last.pt`` with the reason
    ``"cancelled"``; the next call continues it and keeps every finished run.

    Examples
    --------
    >>> gen = run_study("svls.yaml", out_dir="results/svls")  # doctest: +SKIP
    >>> for progress in gen:  # doctest: +SKIP
    ...     print(progress.text)
    """
    spec = load_study(spec)
    if out_dir is None:
        if spec.out_dir is None:
            raise ValueError("out_dir is needed: the study file names no out_dir.")
        out_dir = spec.out_dir
    settings = _launcher_settings(spec, launcher, jobs)
    if not isinstance(device, str) or not device:
        raise TypeError(f"device must be a str such as 'auto', 'cpu' or 'cuda:0', got {describe(device)}.")
    root = Path(os.path.abspath(os.fspath(out_dir)))
    if runs is None:
        runs = plan_study(spec, root)  # refuses runs of other settings before anything is written
    else:
        runs = _check_planned(runs, spec, root)
    _check_earlier_study(spec, root)
    return _run(spec, root, runs, settings, device)


def _launcher_settings(spec: StudySpec, launcher: str | None, jobs: int | None) -> Any:
    changes: dict[str, Any] = {}
    if launcher is not None:
        if launcher not in LAUNCHERS:
            raise ValueError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}.")
        changes["kind"] = launcher
    if jobs is not None:
        changes["jobs"] = check_int(jobs, name="jobs", minimum=1)
    return dataclasses.replace(spec.launcher, **changes)


def _read_yaml(path: Path) -> dict[str, Any] | None:
    import yaml

    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text())


def _check_earlier_study(spec: StudySpec, root: Path) -> None:
    """Refuse a study folder whose ``study.yaml`` has another cohort or split (its runs saw other cases)."""
    earlier = _read_yaml(root / STUDY_FILE)
    if not earlier:
        return
    now = spec.to_dict()
    for key in ("cohort", "cohort_options", "split"):
        if earlier.get(key) != now[key]:
            raise ValueError(
                f"the study folder {str(root)!r} holds a study with another {key} ({earlier.get(key)!r}, now "
                f"{now[key]!r}); its runs were trained on other cases. Choose another output folder."
            )


def _run(spec: StudySpec, root: Path, runs: tuple[StudyRun, ...], settings: Any, device: str
         ) -> Generator[StudyProgress, None, StudyResult]:
    import yaml

    from ...core._atomic import atomic_write

    source, cohort = yield from _prepare_cohort(spec, root)
    if spec.table.metrics or spec.table.percent:
        check_metric_classes(spec.table, _class_names(cohort))
    split = _resolved_split(spec, cohort)
    for run in runs:
        _check_run_split(run, split)
    with atomic_write(root / STUDY_FILE, overwrite=True) as temporary:  # a study file that load_study reads
        temporary.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    files = [str(root / STUDY_FILE)]
    pending = [run for run in runs if run.status != "finished"]
    for run in pending:
        config = run.config.to_dict()
        if device != "auto":
            config["device"] = device
        write_run_file(run.folder, run_id=run.run_id, config=config, cohort=source,
                       cohort_options=cohort_options(spec), split=split)
    trained = yield from launch_runs(pending, settings, out_dir=root, cohort=cohort)
    final = {run.run_id for run in runs if run.status == "finished"} | set(trained)
    evaluation, rows, evaluated = yield from _evaluate(spec, root, runs, final, cohort, split, device)
    files += evaluated
    table, quality, written = _compare(spec, root, rows)
    files += written
    yield StudyProgress("table", None, f"wrote the study table ({root / 'study.md'}) and quality control", 1.0)
    skipped = tuple(run.run_id for run in runs if run.status == "finished")
    return StudyResult(str(root), runs, tuple(trained), skipped, evaluation, table, quality, tuple(files))


def _prepare_cohort(spec: StudySpec, root: Path) -> Generator[StudyProgress, None, tuple[str, Any]]:
    """The cohort's source (generated into ``OUT/cohort`` on the first call) and the loaded cohort."""
    from ...core.cohort import load_cohort

    if isinstance(spec.cohort, PhantomCohort):
        folder = root / "cohort"
        source = spec.cohort.source(folder)
        if not os.path.exists(source):
            from ...core.cohort import make_phantom_cohort

            yield StudyProgress("cohort", None, f"generating {spec.cohort.n_cases} phantom cases into {folder}")
            settings = spec.cohort.to_dict()
            source = make_phantom_cohort(settings.pop("n_cases"), folder, **settings)
    else:
        source = spec.cohort
    cohort = load_cohort(source, **cohort_options(spec))
    yield StudyProgress("cohort", None, f"cohort {source}: {len(cohort)} cases")
    return source, cohort


def cohort_options(spec: StudySpec) -> dict[str, Any]:
    """The ``load_cohort`` keywords of a study; a generated cohort's class names unless the study gives its own."""
    if isinstance(spec.cohort, PhantomCohort) and "class_names" not in spec.cohort_options:
        from ...core.cohort.phantom import phantom_class_names

        return {"class_names": phantom_class_names(spec.cohort.num_classes), **spec.cohort_options}
    return dict(spec.cohort_options)


def _class_names(cohort: Any) -> list[str]:
    """The class names the evaluation's rows carry: the cohort's, else those training gives (``class k``)."""
    if cohort.class_names:
        return list(cohort.class_names)
    return ["background", *(f"class {k}" for k in range(1, cohort.num_classes()))]


def _resolved_split(spec: StudySpec, cohort: Any) -> dict[str, list[str]]:
    from ...core.cohort.splits import SPLIT_KEYS

    seed = spec.split.get("seed", 0) if isinstance(spec.split, Mapping) else 0
    resolved = cohort.resolve_split(spec.split, seed=seed)
    split = {k: list(resolved.get(k, [])) for k in SPLIT_KEYS}
    if len(split[spec.evaluate.split]) < 2:  # means, intervals and paired tests are over cases
        raise ValueError(
            f"the study's split leaves {len(split[spec.evaluate.split])} {spec.evaluate.split} case(s) of the "
            f"{len(cohort)} cases; the study table needs at least 2. Raise its share (e.g. split: "
            "{val: 0.2, test: 0.3}) or use a larger cohort."
        )
    return split


def _check_run_split(run: StudyRun, split: dict[str, list[str]]) -> None:
    path = Path(run.folder) / "split.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if {k: list(v) for k, v in stored.items()} != split:
            raise ValueError(
                f"run {run.run_id} in {run.folder!r} was trained on another case split than the study's; "
                "remove that run folder to train it again on the study's split."
            )


def _evaluated_checkpoint(run: StudyRun, which: str, final: set[str]) -> str:
    """The run's ``last.pt`` (``"final"`` once training is over) or, for ``which="best"``, its ``best.pt``.

    ``final`` holds the ids of the runs whose ``last.pt`` is ``"final"``: planned finished, or trained now.
    """
    if run.run_id not in final:
        raise RuntimeError(
            f"run {run.run_id} has no finished checkpoint ({run.checkpoint!r} was {run.status} and not trained "
            "to its end); run the study again to continue it."
        )
    if which == "last":
        return run.checkpoint
    best = os.path.join(run.folder, "best.pt")
    if not os.path.isfile(best):
        raise ValueError(
            f"run {run.run_id} has no best.pt (it had no validation case to choose one); evaluate its last.pt "
            "(evaluate: {checkpoint: last}) or give the split validation cases."
        )
    return best


def _evaluate(spec: StudySpec, root: Path, runs: tuple[StudyRun, ...], final: set[str], cohort: Any,
              split: dict[str, list[str]], device: str
              ) -> Generator[StudyProgress, None, tuple[Any, list[dict[str, Any]], list[str]]]:
    """Evaluate every run on the held-out split, unless the same checkpoints were evaluated with the same settings."""
    from ...core._atomic import atomic_write
    from ..evaluation import EVALUATION_FILES, evaluate_checkpoints

    folder = root / "evaluation"
    checkpoints = {run.run_id: _evaluated_checkpoint(run, spec.evaluate.checkpoint, final) for run in runs}
    record = {
        "version": 1, "evaluate": dataclasses.asdict(spec.evaluate), "split": split,
        "checkpoints": {run_id: {"path": path, "sha256": file_sha256(path)} for run_id, path in checkpoints.items()},
        "cases": _case_files(cohort, split.get(spec.evaluate.split, [])),
    }  # fmt: skip
    saved = _saved_evaluation(folder, record, EVALUATION_FILES)
    if saved is not None:
        yield StudyProgress("evaluate", None, f"checkpoints unchanged: evaluation read from {folder}", 1.0)
        return saved, [dict(row) for row in saved.rows], []
    e = spec.evaluate
    gen = evaluate_checkpoints(
        checkpoints, cohort, split=e.split, split_spec=split, out_dir=folder, reference=e.reference,
        tolerance_mm=e.tolerance_mm, num_bins=e.num_bins, num_samples=e.num_samples,
        num_resamples=e.num_resamples, seed=e.seed, device=device, overwrite=True,
    )  # fmt: skip
    while True:
        try:
            progress = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        yield StudyProgress("evaluate", progress.candidate, progress.text(), progress.fraction)
    with atomic_write(folder / CHECKPOINTS_FILE, overwrite=True) as temporary:
        temporary.write_text(json.dumps(record, indent=2) + "\n")
    return result, result.case_rows(), [*result.files, str(folder / CHECKPOINTS_FILE)]


def _case_files(cohort: Any, case_ids: list[str]) -> dict[str, list[list[Any]]]:
    """Per evaluated case, its image and rater files with their sizes and modification times.

    A reviewer who keeps an annotation adds a rater file to a case: the fused reference changes, so the
    saved evaluation no longer describes the cohort and is redone.
    """
    files: dict[str, list[list[Any]]] = {}
    for case_id in case_ids:
        info = cohort[case_id]
        entries = []
        for path in (*info.image_files, *info.rater_files):
            try:
                stat = os.stat(path)
                entries.append([str(path), stat.st_size, stat.st_mtime_ns])
            except OSError:
                entries.append([str(path), None, None])
        files[case_id] = entries
    return files


def _saved_evaluation(folder: Path, record: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The saved evaluation when it is of exactly these checkpoints and settings, else None."""
    from ..evaluation import read_evaluation

    path = folder / CHECKPOINTS_FILE
    if not path.is_file() or any(not (folder / name).is_file() for name in names):
        return None
    try:
        if json.loads(path.read_text()) != record:
            return None
        return read_evaluation(folder)
    except (ValueError, OSError):  # unreadable or incomplete (JSON and decoding errors are ValueErrors): evaluate again
        return None


def default_metrics(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The Dice of every class with a finite value, then ``all:ece_reference_volume``, in the rows' order.

    Examples
    --------
    >>> default_metrics([{"class": "background", "metric": "dice", "value": float("nan")},
    ...                  {"class": "organ", "metric": "dice", "value": 0.9}])
    ('organ:dice', 'all:ece_reference_volume')
    """
    classes = dict.fromkeys(
        row["class"] for row in rows if row["metric"] == "dice" and float(row["value"]) == float(row["value"])
    )
    return (*(f"{name}:dice" for name in classes), "all:ece_reference_volume")


def _compare(spec: StudySpec, root: Path, rows: list[dict[str, Any]]) -> tuple[Any, tuple[Any, ...], list[str]]:
    """The study table and the quality control, written into ``root``."""
    from .quality import quality_control, write_quality_control
    from .table import study_table, write_study_table

    t = spec.table
    table = study_table(
        rows, metrics=list(t.metrics or default_metrics(rows)), candidates=[c.name for c in spec.candidates],
        reference=t.reference, test=t.test, alpha=t.alpha, num_resamples=spec.evaluate.num_resamples,
        seed=spec.evaluate.seed,
    )  # fmt: skip
    files = list(write_study_table(table, root, overwrite=True, percent=list(t.percent)))
    quality = tuple(quality_control(rows, review_fraction=spec.quality.review_fraction))
    files += list(write_quality_control(quality, root, overwrite=True))
    return table, quality, files
