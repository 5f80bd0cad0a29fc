"""Running a study: an interrupted study resumes without retraining finished runs; launchers through submitit."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_seg_uncertainty.core.checkpoint import load_checkpoint
from napari_seg_uncertainty.workflow.study import example_studies, load_study, plan_study, run_study
from napari_seg_uncertainty.workflow.study import launch as launch_module
from napari_seg_uncertainty.workflow.study.launch import StudyProgress, launch_runs, make_executor, train_run
from napari_seg_uncertainty.workflow.study.spec import LauncherSettings, SlurmSettings

# the tiny cohorts hold 2 test cases, too few for a Wilcoxon test to reach alpha (the table warns so)
pytestmark = pytest.mark.filterwarnings("ignore:with 2 test cases:UserWarning")

TINY = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "channels": [4, 8], "strides": [2],
        "num_workers": 0, "device": "cpu", "patches_per_case": 1}  # fmt: skip


def _study(**changes):
    study = {
        "name": "tiny",
        "cohort": {"phantom": {"n_cases": 6, "ndim": 2, "shape": [16, 16], "num_classes": 2}},
        "split": {"val": 0.2, "test": 0.4, "seed": 0},
        "base": dict(TINY),
        "candidates": [{"name": "a", "config": {"target": "onehot"}}, {"name": "b", "config": {"target": "svls"}}],
        "evaluate": {"num_resamples": 200},
        "table": {"metrics": ["organ:dice", "all:ece_reference_volume"], "reference": "a"},
    }
    study.update(changes)
    return study


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _finish(gen):
    records = []
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            return stop.value, records


def test_an_interrupted_study_resumes_without_retraining_finished_runs(tmp_path):
    out = tmp_path / "study"
    gen = run_study(_study(), out_dir=out)
    records = []
    for record in gen:  # stop the second run after its first epoch, as Ctrl-C in a front end would
        assert isinstance(record, StudyProgress)
        records.append(record)
        if record.run_id == "b/seed0" and "epoch 1/2" in record.text:
            gen.close()
            break
    assert {r.phase for r in records} == {"cohort", "train"}
    a_last, b_last = out / "runs/a/seed0/last.pt", out / "runs/b/seed0/last.pt"
    assert load_checkpoint(a_last)["reason"] == "final"
    interrupted = load_checkpoint(b_last)
    assert interrupted["reason"] == "cancelled" and interrupted["global_step"] == 2
    assert not (out / "study.csv").exists()
    a_sha, a_mtime = _sha(a_last), os.stat(a_last).st_mtime_ns
    assert [(r.run_id, r.status) for r in plan_study(_study(), out)] == [("a/seed0", "finished"), ("b/seed0", "resume")]

    result, records = _finish(run_study(_study(), out_dir=out))
    assert (result.trained, result.skipped) == (("b/seed0",), ("a/seed0",))
    assert not any(r.run_id == "a/seed0" for r in records if r.phase == "train")
    assert (_sha(a_last), os.stat(a_last).st_mtime_ns) == (a_sha, a_mtime)  # never touched
    finished = load_checkpoint(b_last)
    assert finished["reason"] == "final" and finished["global_step"] == 4
    for name in ("study.yaml", "study.csv", "study.md", "study.png", "study_cases.csv", "qc.csv", "qc.png",
                 "evaluation/cases.csv", "evaluation/summary.csv", "evaluation/checkpoints.json"):
        assert (out / name).is_file(), name
    assert result.table.candidates == ("a", "b")
    assert load_study(out / "study.yaml").to_dict() == load_study(_study()).to_dict()
    record = json.loads((out / "evaluation/checkpoints.json").read_text())
    assert {k: v["sha256"] for k, v in record["checkpoints"].items()} == {"a/seed0": a_sha, "b/seed0": _sha(b_last)}

    # the resumed run is the run an uninterrupted one would have been
    alone, _ = _finish(run_study(_study(candidates=[{"name": "b", "config": {"target": "svls"}}],
                                        table={"metrics": ["organ:dice"]}), out_dir=tmp_path / "alone"))
    weights = load_checkpoint(tmp_path / "alone/runs/b/seed0/last.pt")["state_dict"]
    assert all(torch.equal(weights[k], finished["state_dict"][k]) for k in weights)

    # the table's means are the means of the per-case values of cases.csv
    with open(out / "evaluation/cases.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for i, run in enumerate(("a/seed0", "b/seed0")):
        dice = [float(r["value"]) for r in rows if (r["candidate"], r["class"], r["metric"]) == (run, "organ", "dice")]
        ece = [float(r["value"]) for r in rows
               if (r["candidate"], r["class"], r["metric"]) == (run, "all", "ece_reference_volume")]
        assert len(dice) == len(result.table.case_ids) >= 2
        np.testing.assert_allclose(result.table.mean[i], [np.mean(dice), np.mean(ece)], rtol=1e-12)

    # a third start trains nothing and reads the evaluation back: no checkpoint changed
    cases_mtime = os.stat(out / "evaluation/cases.csv").st_mtime_ns
    again, records = _finish(run_study(_study(), out_dir=out))
    assert (again.trained, again.skipped) == ((), ("a/seed0", "b/seed0"))
    assert any("checkpoints unchanged" in r.text for r in records)
    assert os.stat(out / "evaluation/cases.csv").st_mtime_ns == cases_mtime
    np.testing.assert_array_equal(again.table.mean, result.table.mean)

    # a reviewer keeps an annotation of a test case: its reference changed, so the evaluation is redone
    from napari_seg_uncertainty.workflow.review import ReviewSession

    review = ReviewSession.open(out)
    case_id = result.table.case_ids[0]
    labels = review.load_case(case_id, "a/seed0").raters[0].copy()
    labels[:4] = 1 - labels[:4]
    review.save_annotation(case_id, labels, kind="edited")
    grown, records = _finish(run_study(_study(), out_dir=out))
    assert grown.trained == () and not any("checkpoints unchanged" in r.text for r in records)
    assert os.stat(out / "evaluation/cases.csv").st_mtime_ns != cases_mtime


def test_a_finished_run_trained_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "study"
    _finish(run_study(_study(candidates=[{"name": "a", "config": {"target": "onehot"}}],
                             table={"metrics": ["organ:dice"]}), out_dir=out))
    changed = _study(candidates=[{"name": "a", "config": {"target": "onehot", "loss": "dice"}}])
    with pytest.raises(ValueError, match=r"run a/seed0 .*loss: 'ce' -> 'dice'"):
        plan_study(changed, out)
    with pytest.raises(ValueError, match=r"loss: 'ce' -> 'dice'"):
        run_study(changed, out_dir=out)
    # another cohort in the same folder is refused too: its runs saw other cases
    other = _study(candidates=[{"name": "a", "config": {"target": "onehot"}}],
                   cohort={"phantom": {"n_cases": 7, "ndim": 2, "shape": [16, 16]}})
    with pytest.raises(ValueError, match="another cohort"):
        run_study(other, out_dir=out)
    with pytest.raises(ValueError, match="another cohort"):
        plan_study(other, out)  # the plan (a dry run) says so too
    # the device does not change what a run learns
    moved = _study(candidates=[{"name": "a", "config": {"target": "onehot", "device": "auto"}}])
    assert [r.status for r in plan_study(moved, out)] == ["finished"]
    # other evaluation settings evaluate the same runs again, here on the checkpoints chosen on validation
    best = _study(candidates=[{"name": "a", "config": {"target": "onehot"}}], table={"metrics": ["organ:dice"]},
                  evaluate={"num_resamples": 200, "checkpoint": "best"})
    result, _ = _finish(run_study(best, out_dir=out))
    assert result.trained == () and result.evaluation.candidates[0].checkpoint == str(out / "runs/a/seed0/best.pt")


def test_the_parallel_launcher_trains_two_runs_as_submitit_processes(tmp_path):
    out = tmp_path / "study"
    result, records = _finish(run_study(_study(), out_dir=out, launcher="parallel", jobs=2))
    assert sorted(result.trained) == ["a/seed0", "b/seed0"]
    started = [r for r in records if r.phase == "train" and "started as process" in r.text]
    assert len(started) == 2
    for run in ("a", "b"):
        assert load_checkpoint(out / f"runs/{run}/seed0/last.pt")["reason"] == "final"
    assert list((out / "parallel").glob("*_result.pkl"))  # submitit's own job files
    assert (out / "study.csv").is_file()


class _FakeJob:
    """A job that ends after a few looks (a stand-in for submitit's LocalJob)."""

    def __init__(self, log, folder, polls=2):
        self.job_id, self.folder, self.log, self.polls = str(len(log)), folder, log, polls

    def done(self):
        self.polls -= 1
        if self.polls <= 0:
            self.log.append(("end", self.folder))
        return self.polls <= 0

    def result(self):
        return os.path.join(self.folder, "last.pt")

    def cancel(self, check=True):
        self.log.append(("cancel", self.folder))


class _FakeExecutor:
    def __init__(self, log):
        self.log = log

    def update_parameters(self, **kwargs):
        self.log.append(("parameters", kwargs))

    def submit(self, function, folder):
        assert function is train_run
        self.log.append(("submit", folder))
        return _FakeJob(self.log, folder)


def test_the_parallel_launcher_submits_past_jobs_only_once_a_job_has_ended(tmp_path, monkeypatch):
    log = []
    monkeypatch.setattr(launch_module, "make_executor", lambda *a, **k: _FakeExecutor(log))
    monkeypatch.setattr(launch_module, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(launch_module, "_cuda_devices", lambda: 0)
    runs = [type("Run", (), {"run_id": f"r{i}/seed0", "folder": f"f{i}"})() for i in range(3)]
    gen = launch_runs(runs, LauncherSettings(kind="parallel", jobs=2), out_dir=tmp_path)
    done, _ = _finish(gen)
    assert sorted(done) == ["r0/seed0", "r1/seed0", "r2/seed0"]
    assert log[:2] == [("submit", "f0"), ("submit", "f1")]
    third = log.index(("submit", "f2"))
    assert ("end", "f0") in log[:third] or ("end", "f1") in log[:third]
    running = 0
    for event, _ in log:
        running += {"submit": 1, "end": -1}.get(event, 0)
        assert running <= 2


def test_parallel_jobs_take_the_cuda_devices_in_turn(tmp_path, monkeypatch):
    log = []
    monkeypatch.setattr(launch_module, "make_executor", lambda *a, **k: _FakeExecutor(log))
    monkeypatch.setattr(launch_module, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(launch_module, "_cuda_devices", lambda: 2)
    runs = [type("Run", (), {"run_id": f"r{i}/seed0", "folder": f"f{i}"})() for i in range(3)]
    _finish(launch_runs(runs, LauncherSettings(kind="parallel", jobs=3), out_dir=tmp_path))
    assigned = [(log[i][1]["visible_gpus"], log[i + 1][1]) for i, (event, _) in enumerate(log) if event == "parameters"]
    assert assigned == [((0,), "f0"), ((1,), "f1"), ((0,), "f2")]


@pytest.fixture
def slurm_available(monkeypatch):
    """SLURM's ``srun`` as seen by submitit, without a cluster (only the submission is inspected)."""
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    return slurm


def test_the_slurm_executor_gets_the_study_settings(tmp_path, slurm_available):
    settings = LauncherSettings(kind="slurm", jobs=3, slurm=SlurmSettings(
        partition="gpu", timeout_min=120, gpus_per_node=1, cpus_per_task=4, mem_gb=16, account="lab",
        setup=["module load cuda"],
    ))  # fmt: skip
    executor = make_executor(settings, tmp_path / "slurm")
    parameters = executor._executor.parameters
    assert {k: parameters[k] for k in ("partition", "time", "gpus_per_node", "cpus_per_task", "mem", "account",
                                       "array_parallelism", "setup")} == {
        "partition": "gpu", "time": 120, "gpus_per_node": 1, "cpus_per_task": 4, "mem": "16GB", "account": "lab",
        "array_parallelism": 3, "setup": ["module load cuda"],
    }  # fmt: skip
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --account=lab", "module load cuda"):
        assert line in script.splitlines(), line


def test_slurm_runs_are_submitted_as_one_array_of_train_run_jobs(tmp_path, slurm_available, monkeypatch):
    from submitit.core.utils import DelayedSubmission

    submitted = []

    def fake_submit(self, command):  # what sbatch would receive, instead of calling it
        submitted.append(self._make_submission_file_text(command, "uid"))
        return slurm_available.SlurmJob(folder=self.folder, job_id="4242", tasks=[0])

    monkeypatch.setattr(slurm_available.SlurmExecutor, "_submit_command", fake_submit)
    runs = [type("Run", (), {"run_id": f"r{i}/seed0", "folder": str(tmp_path / f"r{i}")})() for i in range(4)]
    settings = LauncherSettings(kind="slurm", jobs=2, slurm=SlurmSettings(partition="gpu"))
    gen = launch_runs(runs, settings, out_dir=tmp_path)
    records = [next(gen) for _ in runs]
    gen.close()
    assert [r.text for r in records] == [f"r{i}/seed0: submitted as SLURM job 4242_{i}" for i in range(4)]
    assert len(submitted) == 1
    assert "#SBATCH --array=0-3%2" in submitted[0].splitlines()
    pickles = sorted((tmp_path / "slurm").glob("4242_*_submitted.pkl"))
    assert len(pickles) == 4
    jobs = [DelayedSubmission.load(p) for p in pickles]
    assert all(job.function is train_run for job in jobs)
    assert sorted(job.args for job in jobs) == [(str(tmp_path / f"r{i}"),) for i in range(4)]


def test_a_tiny_version_of_the_mehrtash_example_runs_to_its_table(tmp_path):
    import yaml

    study = yaml.safe_load(example_studies()["mehrtash"].read_text())
    study["base"].update({k: v for k, v in TINY.items() if k != "epochs"}, epochs=1)
    study["cohort"]["phantom"].update(n_cases=6, shape=[16, 16])
    study["evaluate"].update(num_resamples=200)
    result, _ = _finish(run_study(study, out_dir=tmp_path / "mehrtash"))
    assert result.table.candidates == ("ce", "dice", "ce-ensemble", "ce-mc-dropout")
    assert result.table.metrics == tuple(study["table"]["metrics"])
    assert np.isfinite(result.table.mean).all()
    assert result.evaluation.candidates[2].name == "ce-ensemble/seed0"
    assert {item.structure for item in result.quality} == {"organ"}
    assert "ECE (reference, volume) %" in (tmp_path / "mehrtash/study.md").read_text()


def test_the_parallel_executor_is_submitits_local_executor_with_the_study_timeout(tmp_path):
    import submitit

    executor = make_executor(LauncherSettings(kind="parallel", jobs=2, timeout_min=30), tmp_path, visible_gpus=0)
    assert isinstance(executor, submitit.LocalExecutor)
    assert executor.parameters == {"timeout_min": 30, "gpus_per_node": 0}
    with pytest.raises(ValueError, match="no executor"):
        make_executor(LauncherSettings(kind="local"), tmp_path)


class _FailingJob(_FakeJob):
    paths = type("Paths", (), {"stderr": "logs/7_0_log.err"})()

    def result(self):
        raise RuntimeError("Job (task=0) failed\nFloatingPointError: the loss diverged")


def test_a_failed_job_is_reported_with_its_log_after_the_other_jobs_end(tmp_path, monkeypatch):
    log = []

    class Executor(_FakeExecutor):
        def submit(self, function, folder):
            self.log.append(("submit", folder))
            return (_FailingJob if folder == "f0" else _FakeJob)(self.log, folder)

    monkeypatch.setattr(launch_module, "make_executor", lambda *a, **k: Executor(log))
    monkeypatch.setattr(launch_module, "POLL_SECONDS", 0.0)
    monkeypatch.setattr(launch_module, "_cuda_devices", lambda: 0)
    runs = [type("Run", (), {"run_id": f"r{i}/seed0", "folder": f"f{i}"})() for i in range(2)]
    gen = launch_runs(runs, LauncherSettings(kind="parallel", jobs=1), out_dir=tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)1 run\(s\) failed.*r0/seed0: FloatingPointError: the loss diverged "
                                           r"\(log logs/7_0_log.err\)"):
        _finish(gen)
    assert ("end", "f1") in log  # the other job still ran to its end


def test_a_study_on_a_cohort_on_disk_uses_its_manifest_split(tmp_path):
    from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort

    small = make_phantom_cohort(6, tmp_path / "small", ndim=2, shape=(16, 16), layout="manifest", seed=4)
    study = _study(cohort=os.path.relpath(small, tmp_path), split="manifest",
                   cohort_options={"class_names": ["background", "organ"]},
                   candidates=[{"name": "a", "config": {"target": "mean"}}], table={"metrics": ["organ:dice"]})
    with pytest.raises(ValueError, match="leaves 1 test case"):  # before anything is trained
        _finish(run_study(load_study(study, base=tmp_path), out_dir=tmp_path / "small_out"))
    assert not (tmp_path / "small_out").exists()
    source = make_phantom_cohort(10, tmp_path / "cohort", ndim=2, shape=(16, 16), layout="manifest", seed=4)
    study["cohort"] = os.path.relpath(source, tmp_path)
    result, _ = _finish(run_study(load_study(study, base=tmp_path), out_dir=tmp_path / "out"))
    split = load_cohort(source).manifest_split()
    assert result.table.case_ids == tuple(split["test"])
    assert not (tmp_path / "out" / "cohort").exists()
    assert load_study(tmp_path / "out" / "study.yaml").cohort == source


@pytest.mark.parametrize(("reason", "status"),
                         [("periodic", "resume"), ("cancelled", "resume"), ("error", "resume"), ("final", "finished")])
def test_a_runs_status_follows_the_reason_its_last_checkpoint_was_written(tmp_path, reason, status):
    from napari_seg_uncertainty.core.checkpoint import save_checkpoint

    run = plan_study(_study(), tmp_path)[1]
    assert run.status == "new"
    save_checkpoint(run.checkpoint, {"config": run.config.to_dict(), "reason": reason})  # a killed job's last write
    assert [r.status for r in plan_study(_study(), tmp_path)] == ["new", status]


def test_files_are_hashed_block_by_block_as_hashlib_hashes_their_bytes(tmp_path):
    """``file_sha256`` and the cohort's case digest (sizes and bytes of its files) against hashlib on whole files."""
    from napari_seg_uncertainty.core._file_checks import file_sha256
    from napari_seg_uncertainty.core.cohort import load_cohort, make_phantom_cohort

    for size in (0, 3, (5 << 20) // 2):  # empty, short, and two and a half blocks
        path = tmp_path / f"{size}.bin"
        path.write_bytes(np.random.default_rng(size).bytes(size))
        assert file_sha256(path) == _sha(path)
    cohort = load_cohort(make_phantom_cohort(2, tmp_path / "cohort", ndim=2, shape=(16, 16), seed=1))
    info = cohort[0]
    digest = hashlib.sha256()
    for f in (*info.image_files, *info.rater_files):
        digest.update(os.path.getsize(f).to_bytes(8, "little") + Path(f).read_bytes())
    assert cohort.content_digest(0) == digest.hexdigest()


def test_only_an_unreadable_saved_evaluation_is_evaluated_again(tmp_path, monkeypatch):
    """A garbled or missing file means evaluate again; a programming error is not hidden behind that."""
    from napari_seg_uncertainty.workflow import evaluation
    from napari_seg_uncertainty.workflow.study.runner import CHECKPOINTS_FILE, _saved_evaluation

    record = {"version": 1, "checkpoints": {}}
    (tmp_path / CHECKPOINTS_FILE).write_text(json.dumps(record))
    (tmp_path / "cases.csv").write_text("candidate\n")
    saved = object()
    monkeypatch.setattr(evaluation, "read_evaluation", lambda folder: saved)
    assert _saved_evaluation(tmp_path, record, ("cases.csv",)) is saved
    assert _saved_evaluation(tmp_path, {**record, "version": 2}, ("cases.csv",)) is None
    assert _saved_evaluation(tmp_path, record, ("cases.csv", "summary.csv")) is None
    for error in (ValueError("line 2: could not convert"), FileNotFoundError("summary.csv")):
        monkeypatch.setattr(evaluation, "read_evaluation", lambda folder, error=error: (_ for _ in ()).throw(error))
        assert _saved_evaluation(tmp_path, record, ("cases.csv",)) is None
    monkeypatch.setattr(evaluation, "read_evaluation", lambda folder: {}["split"])
    with pytest.raises(KeyError, match="split"):
        _saved_evaluation(tmp_path, record, ("cases.csv",))
    (tmp_path / CHECKPOINTS_FILE).write_text("{not json")
    assert _saved_evaluation(tmp_path, record, ("cases.csv",)) is None


def test_a_plan_is_taken_only_for_the_study_and_folder_it_was_made_for(tmp_path):
    runs = plan_study(_study(), tmp_path / "a")
    with pytest.raises(ValueError, match="planned for another study or output folder"):
        run_study(_study(), out_dir=tmp_path / "b", runs=runs)
    with pytest.raises(ValueError, match="planned for another study or output folder"):
        run_study(_study(seeds=[0, 1]), out_dir=tmp_path / "a", runs=runs)
    with pytest.raises(TypeError, match="runs must be the StudyRun tuple"):
        run_study(_study(), out_dir=tmp_path / "a", runs=["a/seed0"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_ctrl_c_on_the_parallel_launcher_cancels_its_jobs_quietly_and_they_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import yaml

    study = _study(base={**TINY, "epochs": 500})  # far longer than the test waits
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "napari_seg_uncertainty.cli", "study", str(tmp_path / "study.yaml"),
               "--out", str(out), "--launcher", "parallel", "--jobs", "2"]  # fmt: skip
    # its own session: the signal goes to its whole process group, as Ctrl-C in a terminal does
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    checkpoints = [out / "runs" / name / "seed0" / "last.pt" for name in ("a", "b")]
    deadline = time.monotonic() + 240
    while not all(p.is_file() for p in checkpoints) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # both jobs have written the checkpoint of their first epoch
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "Traceback" not in stderr and stderr.strip().startswith("interrupted:"), stderr
    assert stdout.count("started as process") == 2
    assert "Traceback" in (out / "parallel" / "controller.log").read_text()  # submitit's controllers, kept aside
    time.sleep(2.0)  # a job may still be writing its checkpoint after its controller ended
    assert {load_checkpoint(p)["reason"] for p in checkpoints} <= {"cancelled", "periodic"}
    assert [r.status for r in plan_study(load_study(study), out)] == ["resume", "resume"]
    plan = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0 and plan.stdout.count("interrupted (resumes from last.pt)") == 2, plan.stdout
