"""Training and inference: one generator used by the Train widget, the command line and the tests.

:func:`train` takes a :class:`TrainConfig` and the data (an image and its raters) and yields a
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
    :func:`train`, the :class:`Checkpointer`, progress records and validation.
``inference``
    :class:`TrainedModel`, :func:`predict` (a :class:`Prediction`) and
    :func:`predict_ssn_distribution` (a ``LowRankLogits``).
``device``
    The torch device and the rank and world size of a ``torchrun`` job.

Data handling
-------------
- 3-D volumes: a 3-D U-Net trained on random patches (half of them centred on a voxel that some
  rater labelled foreground, by default) with sliding-window inference (MONAI) for validation and
  prediction.
- 2-D images, or ``spatial_dims=2`` on a volume: a 2-D U-Net on (patches of) 2-D slices.
- Validation: the last ``val_fraction`` of the cases (or slices), or with a single 2-D image the
  last rows; metrics are the NLL against the raters' mean one-hot map and the mean foreground Dice
  of the prediction against the raters' majority.
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
from .config import BACKGROUND_MASKS, BEST_METRICS, TARGETS, TrainConfig, read_config_file
from .data import TrainingData, as_training_data
from .device import distributed_rank_world, resolve_device
from .inference import Prediction, TrainedModel, load_trained_model, predict, predict_ssn_distribution
from .loop import Checkpointer, TrainProgress, TrainResult, train

__all__ = [
    "BACKGROUND_MASKS",
    "BEST_METRICS",
    "TARGETS",
    "Checkpointer",
    "Prediction",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainedModel",
    "TrainingData",
    "as_training_data",
    "distributed_rank_world",
    "load_trained_model",
    "predict",
    "predict_ssn_distribution",
    "read_config_file",
    "resolve_device",
    "train",
    "weights_digest",
]
