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

Several GPUs or nodes: ``torchrun --nproc_per_node=N -m napari_seg_uncertainty.cli_train train CONFIG``
(DistributedDataParallel; NCCL on CUDA, gloo on CPU). Rank 0 prints progress and writes checkpoints;
at the end every rank prints a digest of its weights, which agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "predict_main", "train_main"]


def _resolve(base: Path, value: Any) -> Any:
    if isinstance(value, str):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)
    if isinstance(value, (list, tuple)):
        return [_resolve(base, v) for v in value]
    return value


def _read_array(path: str) -> tuple[np.ndarray, tuple[float, ...] | None]:
    if path.lower().endswith(".npy"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"file {path!r} does not exist.")
        return np.load(path, allow_pickle=False), None
    from .core.io import read_image

    array, meta = read_image(path)
    return array, meta.spacing


def load_training_data(section: dict[str, Any], *, base: Path) -> Any:
    """Build :class:`~napari_seg_uncertainty.core.training.TrainingData` from a config's ``data`` section."""
    from .core.training import TrainingData

    if not isinstance(section, dict):
        raise ValueError(
            f"the config's 'data' section must be a mapping with 'image' and 'raters', got {section!r}."
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
    parser.add_argument("--threads", type=int, help="torch CPU threads per process")
    parser.add_argument("--jsonl", action="store_true", help="print every progress record as a JSON line")
    return parser


def _config_and_data(args: argparse.Namespace) -> tuple[Any, Any, int, int]:
    """The TrainConfig (file + command-line overrides), the training data, and the rank and world size."""
    import torch

    from .core.training import TrainConfig, read_config_file

    values = read_config_file(args.config)
    base = Path(args.config).resolve().parent
    data_section = values.pop("data", None)
    if data_section is None:
        raise ValueError(f"config file {args.config!r} has no 'data' section (image and raters).")
    overrides = {
        "output_dir": args.output_dir,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "device": args.device,
        "seed": args.seed,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("output_dir") and args.output_dir is None:
        values["output_dir"] = _resolve(base, values["output_dir"])
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _init_distributed(str(values.get("device", "auto")))
    if world > 1:
        values["device"] = device
    return TrainConfig.from_dict(values), load_training_data(data_section, base=base), rank, world


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
        config, data, rank, world = _config_and_data(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    is_main = rank == 0
    gen = train(config, data, resume=args.resume)
    result = None
    try:
        while True:
            record = next(gen)
            if is_main:
                _print_record(record, jsonl=args.jsonl)
    except StopIteration as stop:
        result = stop.value
    except KeyboardInterrupt:
        print("interrupted: the current state was saved to last.pt in the output folder.", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
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


def predict_main(argv: Sequence[str] | None = None) -> int:
    """``napari-seg-uncertainty predict CHECKPOINT IMAGE --out DIR``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="napari-seg-uncertainty predict",
        description="Run a trained checkpoint on an image and write probabilities, labels and entropy.",
    )
    parser.add_argument("checkpoint", help="last.pt or best.pt written by 'train'")
    parser.add_argument("image", help="image file (.nii.gz, .nrrd, .mha, .tif, .png or .npy)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument(
        "--samples", type=int, help="SSN samples / MC-dropout passes (default: from the config)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
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
        image, spacing = _read_array(args.image)
        trained = load_trained_model(args.checkpoint, device=args.device)
        result = predict(trained, image, num_samples=args.samples)
        suffix = args.format or file_suffix(args.image)
        if suffix == ".png":
            suffix = ".nii.gz"
        if not suffix.startswith("."):
            suffix = "." + suffix
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        spacing = spacing or result.spacing
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
                write_image(path, array, spacing=spacing, channel_axis=channel_axis, overwrite=args.overwrite)
            print(f"wrote {path}", flush=True)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
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
