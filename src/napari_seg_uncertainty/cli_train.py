"""``napari-seg-uncertainty train CONFIG`` and ``napari-seg-uncertainty predict CHECKPOINT IMAGE --out DIR``.

The config file (YAML or JSON) holds the :class:`~napari_seg_uncertainty.core.training.TrainConfig`
settings at the top level and a ``data`` section::

    data:
      image: case01/image.nii.gz        # or .npy; paths are relative to the config file
      raters: case01/                   # folder, glob, list of files, .npz or an (R, *S) .npy
      spacing: [2.5, 1.0, 1.0]          # optional, overrides the files
      class_names: [background, organ]  # optional
    head: ssn
    loss: ssn
    target: random_rater
    epochs: 50
    output_dir: runs/ssn                # relative to the config file

or a cohort of cases streamed from disk (a folder of case folders, a LIDC-style ``.npz`` or a
manifest ``.csv``/``.yaml``), split by case::

    data:
      cohort: cohort/cohort.csv         # relative to the config file
      split: {val: 0.2, test: 0.2}      # or {folds: 5, fold: 0, test: 0.2}, manifest,
                                        # or {train: [..], val: [..], test: [..]} (case ids)
      on_error: skip                    # raise (default) | skip: leave out bad cases (listed)
      class_names: [background, lesion]  # optional
      target_spacing: [1.0, 1.0, 1.0]   # optional resampling on load
      task: 1                           # optional, QUBIQ task number

The resolved split is written as ``split.json`` beside the checkpoints.

Several GPUs or nodes: ``torchrun --nproc_per_node=N -m napari_seg_uncertainty.cli_train train CONFIG``
(DistributedDataParallel; NCCL on CUDA, gloo on CPU). Rank 0 prints progress and writes checkpoints;
at the end every rank prints a digest of its weights, which agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core._validation import exception_text

__all__ = ["load_cohort_section", "load_training_data", "main", "predict_main", "train_main"]

#: Keys of a ``data`` section with a cohort.
COHORT_KEYS = ("cohort", "split", "on_error", "class_names", "target_spacing", "task")
#: Keys a ``split`` mapping may hold.
SPLIT_KEYS = ("val", "test", "folds", "fold", "train")


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, str):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)
    if isinstance(value, (list, tuple)):
        return [_resolve(base, v) for v in value]
    return value


def _read_array(path: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    array, meta = _read_with_meta(path)
    return array, None if meta is None else meta.spacing


def _read_with_meta(path: str) -> tuple[np.ndarray, Any]:
    """The array of an image file and its ``ImageMeta`` (spacing, origin, direction); None for ``.npy``."""
    if path.lower().endswith(".npy"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file {path!r} does not exist.")
        return np.load(path, allow_pickle=False), None
    from .core.io import read_image

    return read_image(path)


def load_cohort_section(section: dict[str, Any], *, base: Path, seed: int = 0) -> tuple[Any, dict[str, list[str]]]:
    """The cohort and its resolved case-level split from a config's ``data`` section with ``cohort``.

    Parameters
    ----------
    section : dict
        ``cohort`` (a folder, ``.npz`` or manifest, relative to ``base``) and optionally ``split``,
        ``on_error``, ``class_names``, ``target_spacing`` and ``task``.
    base : Path
        The config file's folder.
    seed : int
        Seed of a random split (the config's ``seed``).

    Returns
    -------
    cohort : Cohort
    split : dict
        ``{"train": [...], "val": [...], "test": [...]}`` (case ids).
    """
    from .core.cohort import load_cohort

    unknown = sorted(set(section) - set(COHORT_KEYS))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the config's 'data' section with a cohort; known: {', '.join(COHORT_KEYS)} "
            "(image/raters describe a single case instead of a cohort)."
        )
    source = section["cohort"]
    if not isinstance(source, str) or not source.strip():
        raise ValueError(
            f"the config's data.cohort must be a path (a folder, .npz or manifest), got {source!r}."
        )
    split = section.get("split")
    if isinstance(split, dict):
        bad = sorted(set(split) - set(SPLIT_KEYS))
        if bad:
            raise ValueError(
                f"unknown key(s) {bad} in data.split; use {{val: 0.2, test: 0.2}}, "
                "{folds: 5, fold: 0, test: 0.2}, 'manifest' or {train: [...], val: [...], test: [...]}."
            )
    elif split is not None and split != "manifest":
        raise ValueError(
            f"data.split must be a mapping or 'manifest', got {split!r}; e.g. {{val: 0.2, test: 0.2}}."
        )
    cohort = load_cohort(
        _resolve(base, source),
        on_error=section.get("on_error", "raise"),
        class_names=section.get("class_names"),
        task=section.get("task"),
        target_spacing=section.get("target_spacing"),
    )
    resolved = cohort.resolve_split(split, seed=seed)
    return cohort, {name: list(resolved.get(name, [])) for name in ("train", "val", "test")}


def cohort_summary(cohort: Any, split: dict[str, list[str]]) -> list[str]:
    """The lines printed before cohort training: source, cases, split sizes, skipped cases."""
    lines = [
        f"cohort {cohort.source}: {len(cohort)} cases ({cohort.ndim}-D, {cohort.channels} image channel(s), "
        f"up to {cohort.num_raters} raters)",
        "split: " + ", ".join(f"{name} {len(split[name])}" for name in ("train", "val", "test")),
    ]
    problems = list(getattr(cohort, "problems", ()))
    if problems:
        lines.append(f"skipped {len(problems)} case(s):")
        lines += [f"  {problem}" for problem in problems]
    return lines


def write_split(output_dir: str | os.PathLike, split: dict[str, list[str]], *, replace: bool) -> Path:
    """Write ``split.json`` into ``output_dir`` atomically; refuse to replace a different split.

    An identical file is left as it is. A different one raises :class:`FileExistsError` unless
    ``replace`` (resuming, or ``--overwrite``).
    """
    from .core._atomic import atomic_write

    path = Path(output_dir) / "split.json"
    _check_split(path, split, replace=replace)
    if path.exists() and _read_json(path) == split:
        return path
    with atomic_write(path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(split, indent=2) + "\n")
    return path


def load_training_data(section: dict[str, Any], *, base: Path) -> Any:
    """Build :class:`~napari_seg_uncertainty.core.training.TrainingData` from a config's ``data`` section."""
    from .core.training import TrainingData

    if not isinstance(section, dict):
        raise ValueError(
            "the config's 'data' section must be a mapping with 'image' and 'raters' (one case) or "
            f"'cohort' (many cases), got {section!r}."
        )
    unknown = sorted(set(section) - {"image", "raters", "spacing", "class_names", "num_classes"})
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the config's 'data' section; "
            "known: image, raters, spacing, class_names, num_classes."
        )
    if "raters" not in section:
        raise ValueError("the config's 'data' section needs 'raters' (a folder, files, .npz or .npy).")
    raters_source = _resolve(base, section["raters"])
    spacing = section.get("spacing")
    class_names = section.get("class_names")
    image = None
    image_spacing = None
    if section.get("image") is not None:
        image, image_spacing = _read_array(_resolve(base, section["image"]))
    if isinstance(raters_source, str) and raters_source.lower().endswith(".npy"):
        raters: Any = _read_array(raters_source)[0]
    else:
        from .core.raters import load_raters

        raters = load_raters(raters_source, spacing=spacing, class_names=class_names)
        if image is None:
            image = raters.image
    if image is None:
        raise ValueError("the config's 'data' section needs 'image' (the raters' source holds none).")
    return TrainingData.from_arrays(
        image,
        raters,
        num_classes=section.get("num_classes"),
        class_names=class_names,
        spacing=spacing or image_spacing,
    )


def _format(record: Any) -> str:
    parts = [f"epoch {record.epoch}/{record.epochs}", f"step {record.global_step}/{record.total_steps}"]
    if record.loss is not None:
        parts.append(f"loss {record.loss:.4f}")
    if record.val_nll is not None:
        parts.append(f"val_nll {record.val_nll:.4f}")
    if record.val_dice is not None:
        parts.append(f"val_dice {record.val_dice:.4f}")
    cases_seen = getattr(record, "cases_seen", None)
    if cases_seen is not None:
        parts.append(f"cases seen {cases_seen}")
    if cases_seen is not None and record.throughput is not None:
        parts.append(f"{record.throughput:.1f} patches/s")
    data_wait = getattr(record, "data_wait", None)
    if data_wait is not None:
        parts.append(f"data wait {100 * data_wait:.0f}%")
    if record.checkpoint:
        parts.append(f"checkpoint {record.checkpoint}")
    return "  ".join(parts)


def _init_distributed(device: str) -> tuple[int, int, str]:
    """Join the torchrun process group when WORLD_SIZE > 1; returns (rank, world, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty train",
        description="Train a segmentation model (soft targets, SoftSeg, SSN, ensembles, MC dropout) from a "
        "YAML/JSON config with a 'data' section. Works under torchrun for several GPUs/nodes.",
    )
    parser.add_argument("config", help="YAML or JSON file: TrainConfig settings plus a 'data' section")
    parser.add_argument("--output-dir", help="folder for last.pt / best.pt (overrides the config)")
    parser.add_argument("--epochs", type=int, help="number of epochs (overrides the config)")
    parser.add_argument(
        "--steps-per-epoch", type=int, help="optimisation steps per epoch (overrides the config)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides the config)")
    parser.add_argument("--seed", type=int, help="random seed (overrides the config)")
    parser.add_argument("--resume", help="continue from this checkpoint")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an output folder that holds an earlier run (its last.pt, best.pt, split.json)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--jsonl", action="store_true", help="print every progress record as a JSON line")
    return parser


@dataclasses.dataclass
class _Run:
    """What ``train`` runs: the config, the data, a cohort's split (None for one case), rank and world."""

    config: Any
    data: Any
    split: dict[str, list[str]] | None
    rank: int
    world: int


def _config_and_data(args: argparse.Namespace) -> _Run:
    """The TrainConfig (file + command-line overrides), the training data, and the rank and world size."""
    import torch

    from .core.training import TrainConfig, read_config_file

    values = read_config_file(args.config)
    base = Path(args.config).resolve().parent
    data_section = values.pop("data", None)
    if data_section is None:
        raise ValueError(
            f"config file {args.config!r} has no 'data' section (image and raters, or a cohort)."
        )
    overrides = {
        "output_dir": args.output_dir,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "device": args.device,
        "seed": args.seed,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    if args.overwrite:
        values["overwrite"] = True
    if values.get("output_dir") and args.output_dir is None:
        values["output_dir"] = _resolve(base, values["output_dir"])
    if values.get("target_cache_dir"):
        values["target_cache_dir"] = _resolve(base, values["target_cache_dir"])
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _init_distributed(str(values.get("device", "auto")))
    if world > 1:
        values["device"] = device
    config = TrainConfig.from_dict(values)
    if isinstance(data_section, dict) and "cohort" in data_section:
        cohort, split = load_cohort_section(data_section, base=base, seed=config.seed)
        return _Run(config, cohort, split, rank, world)
    return _Run(config, load_training_data(data_section, base=base), None, rank, world)


def _print_record(record: Any, *, jsonl: bool) -> None:
    if jsonl:
        print(json.dumps(record.to_dict()), flush=True)
    elif record.kind == "start":
        print(record.message, flush=True)
    elif record.kind == "epoch":
        print(_format(record), flush=True)
    elif record.kind in ("done", "cancelled"):
        print(f"{record.message} after {record.global_step} steps ({record.elapsed:.1f} s)", flush=True)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``napari-seg-uncertainty train CONFIG [options]``; returns the exit status."""
    args = _train_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from .core.training import train

    try:
        run = _config_and_data(args)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        print(f"error: {exception_text(exc)}", file=sys.stderr)
        return 2
    config, rank, world = run.config, run.rank, run.world
    is_main = rank == 0
    split_path = None
    if run.split is not None and is_main:
        for line in cohort_summary(run.data, run.split):
            print(line, flush=True)
        if config.output_dir:  # refuse a different earlier split before training starts
            split_path = Path(config.output_dir) / "split.json"
            try:
                _check_split(split_path, run.split, replace=bool(args.resume) or args.overwrite)
            except FileExistsError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2

    if run.split is None:
        gen = train(config, run.data, resume=args.resume)
    else:
        gen = train(config, run.data, resume=args.resume, split=run.split)
    result = None
    throughput = None
    try:
        while True:
            record = next(gen)
            if split_path is not None and record.kind == "start":  # train() accepted the folder
                write_split(config.output_dir, run.split, replace=True)
                print(f"split written to {split_path}", flush=True)
            if record.kind == "step" and record.throughput is not None:
                throughput = record.throughput
            elif record.kind == "epoch" and record.throughput is None and throughput is not None:
                record = dataclasses.replace(record, throughput=throughput)  # the loader's last rate
            if is_main:
                _print_record(record, jsonl=args.jsonl)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        print("interrupted: the current state was saved to last.pt in the output folder.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, FloatingPointError, MemoryError) as exc:
        print(f"error: {exception_text(exc)}", file=sys.stderr)
        return 2
    if world > 1:
        print(f"rank {rank}/{world} weights sha256 {result.weights_digest}", flush=True)
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if is_main and result is not None:
        print(f"checkpoint: {result.checkpoint}", flush=True)
        if result.best_checkpoint:
            print(f"best checkpoint: {result.best_checkpoint}", flush=True)
    return 0


def _check_split(path: Path, split: dict[str, list[str]], *, replace: bool) -> None:
    """Raise FileExistsError when ``path`` holds a different split and ``replace`` is False."""
    if replace or not path.exists():
        return
    if _read_json(path) != split:
        raise FileExistsError(
            f"{str(path)!r} holds a different split from an earlier run; pass --overwrite to replace the run, "
            "--resume to continue it, or choose another --output-dir."
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``napari-seg-uncertainty predict CHECKPOINT IMAGE --out DIR``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty predict",
        description="Run a trained checkpoint on an image and write probabilities, labels and entropy.",
    )
    parser.add_argument("checkpoint", help="last.pt or best.pt written by 'train'")
    parser.add_argument(
        "image",
        nargs="+",
        help="image file (.nii.gz, .nrrd, .mha, .tif, .png or .npy); several files are the channels of a "
        "multi-channel model, in the order it was trained with (e.g. a manifest's image column)",
    )
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--samples", type=int, help="SSN samples / MC-dropout passes (default: from the config)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float16"),
        default="float32",
        help="dtype of the probabilities and entropy (float16 halves their memory; for large scans)",
    )
    parser.add_argument(
        "--format",
        default=None,
        help="output suffix: .nii.gz, .nrrd, .mha, .tif or .npy (default: the image's, .nii.gz for .png)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))

    from .core.io import file_suffix, write_image
    from .core.training import load_trained_model, predict

    try:
        read = [_read_with_meta(path) for path in args.image]
        image, meta = read[0]
        if len(read) > 1:
            shapes = {tuple(np.shape(a)) for a, _ in read}
            if len(shapes) > 1:
                raise ValueError(
                    f"the image files {args.image} have different shapes {sorted(shapes)}; the channels of "
                    "a case must share one grid."
                )
            image = np.stack([a for a, _ in read])
        trained = load_trained_model(args.checkpoint, device=args.device)
        result = predict(trained, image, num_samples=args.samples, dtype=args.dtype)
        suffix = args.format or file_suffix(args.image[0])
        if suffix == ".png":
            suffix = ".nii.gz"
        if not suffix.startswith("."):
            suffix = "." + suffix
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        # the outputs lie where the image lies: its spacing, origin and direction (the checkpoint's
        # spacing only for an .npy image, which carries none)
        geometry = {
            "spacing": (meta.spacing if meta is not None else None) or result.spacing,
            "origin": None if meta is None else meta.origin,
            "direction": None if meta is None else meta.direction,
        }
        outputs = {
            "probabilities": (result.probabilities, 0),
            "labels": (result.labels, None),
            "entropy": (result.entropy, None),
        }
        for name, (array, channel_axis) in outputs.items():
            path = out / f"{name}{suffix}"
            if suffix == ".npy":
                if path.exists() and not args.overwrite:
                    raise FileExistsError(f"{str(path)!r} already exists; pass --overwrite to replace it.")
                np.save(path, array)
            else:
                write_image(path, array, channel_axis=channel_axis, overwrite=args.overwrite, **geometry)
            print(f"wrote {path}", flush=True)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {str(exc).replace('pass overwrite=True', 'pass --overwrite')}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m napari_seg_uncertainty.cli_train train|predict ...`` (also used under torchrun)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        return train_main(argv[1:])
    if argv and argv[0] == "predict":
        return predict_main(argv[1:])
    print(
        "usage: python -m napari_seg_uncertainty.cli_train "
        "{train CONFIG | predict CHECKPOINT IMAGE --out DIR} [options]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
