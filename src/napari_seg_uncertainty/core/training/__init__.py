"""Training and inference: one generator used by the Train widget, the command line and the tests.

:func:`train` takes a :class:`TrainConfig` and the data (an image and its raters, or a
:class:`~napari_seg_uncertainty.core.cohort.Cohort` streamed from disk) and yields a
:class:`TrainProgress` record after every optimization step and every epoch. The caller decides
what to do with them (update a progress bar, print a line, collect a history). Sending
``"cancel"`` into the generator (``gen.send("cancel")``, or ``worker.send("cancel")`` for a napari
worker) saves a checkpoint of the current state and ends the run; ``gen.close()`` does the same
without the last record. :func:`predict` and :func:`predict_ssn_distribution` run a checkpoint.

Modules
-------
``config``
    :class:`TrainConfig` and reading it from YAML or JSON.
``data``
    :class:`TrainingData`, fused targets, the train/validation split and the patch sampler.
``loop``
    :func:`train`: the optimization step, the end of an epoch, the losses and validation.
``session``
    Setting a run up: model, optimizer, the data (arrays or a streamed cohort), a resumed state.
``checkpointer``
    :class:`Checkpointer`, which writes ``last.pt`` (also on cancel and on an error) and ``best.pt``,
    and refuses to replace an earlier run's checkpoints unless resuming or ``overwrite``.
``records``
    :class:`TrainProgress` and :class:`TrainResult`.
``budget``
    Memory checks made before the first step (absurd ``batch_size``).
``inference``
    :class:`TrainedModel`, :func:`predict` (a :class:`Prediction`) and
    :func:`predict_ssn_distribution` (a ``LowRankLogits``).
``device``
    The torch device and the rank and world size of a ``torchrun`` job.
``normalization``
    The three image normalizations (``"dataset"``, ``"zscore"``, ``"percentile"``), stored in
    every checkpoint so that :func:`predict` normalizes a new case as in training.
``target_cache``
    Soft targets of cohort cases cached on disk (``.npy``, keyed by a SHA-256 of the settings and
    the case's files).
``streaming``
    Cohort training: MONAI transform chains, a byte-bounded memory cache of prepared cases, a
    torch ``Sampler`` of ``(case, seed)`` keys and :class:`CohortPatchLoader` (a ``DataLoader``).

Data handling
-------------
- 3-D volumes: a 3-D U-Net trained on random patches (half of them centred on a voxel that some
  rater labelled foreground, by default) with sliding-window inference (MONAI) for validation and
  prediction.
- 2-D images, or ``spatial_dims=2`` on a volume: a 2-D U-Net on (patches of) 2-D slices.
- Cohorts: split by case (``split``, or ``val_fraction`` / ``test_fraction``); training patches
  come from the training cases only, read by DataLoader workers (``num_workers``) and kept in a
  memory cache of ``cache_mb``; a patch depends only on its ``(case, seed)`` key, so the weights
  do not depend on the number of workers and a resumed run continues mid-epoch exactly.
- Validation: the last ``val_fraction`` of the cases (or slices), or with a single 2-D image the
  last rows (a cohort: its ``"val"`` cases, read one at a time); metrics are the NLL against the
  raters' mean one-hot map and the mean foreground Dice of the prediction against the raters'
  majority.
- Targets: any fused soft label from :mod:`~napari_seg_uncertainty.core.labels`
  (``"mean"``, ``"msvls"``, ``"svls"``, ``"label_smoothing"``, ``"onehot"``, ``"staple"``), or
  ``"random_rater"``: one randomly chosen rater per patch and step.

Devices: ``"auto"`` picks CUDA, then MPS, then CPU. Mixed precision runs on CUDA (bfloat16 where
supported, else float16 with loss scaling). With ``torchrun`` (``torch.distributed`` initialized)
the model is wrapped in ``DistributedDataParallel``: every rank draws its own patches, gradients
are averaged, and rank 0 validates and writes checkpoints. With a fixed ``seed`` a CPU run is
reproducible, also across an interruption and ``resume``.
"""

from ..models import weights_digest
from .config import BACKGROUND_MASKS, BEST_METRICS, NORMALIZATIONS, TARGETS, TrainConfig, read_config_file
from .data import TrainingData, as_training_data
from .device import distributed_rank_world, resolve_device
from .inference import Prediction, TrainedModel, load_trained_model, predict
from .loop import Checkpointer, TrainProgress, TrainResult, train
from .normalization import normalization_parameters, normalize_image
from .ssn_inference import predict_ssn_distribution, predict_ssn_distribution_lazy
from .streaming import CohortPatchLoader
from .target_cache import TargetCache

__all__ = [
    "BACKGROUND_MASKS",
    "BEST_METRICS",
    "NORMALIZATIONS",
    "TARGETS",
    "TargetCache",
    "Checkpointer",
    "CohortPatchLoader",
    "Prediction",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainedModel",
    "TrainingData",
    "as_training_data",
    "distributed_rank_world",
    "load_trained_model",
    "normalization_parameters",
    "normalize_image",
    "predict",
    "predict_ssn_distribution",
    "predict_ssn_distribution_lazy",
    "read_config_file",
    "resolve_device",
    "train",
    "weights_digest",
]
