"""The demo's two short trainings: an mSVLS U-Net and an SSN, and the SSN sample settings shown after.

The headless demo trains both on a cohort (:mod:`.cohort`: generated cases split by case, the shown
case held out for testing); the Guide trains them on the open layers.

References
----------
.. [1] M. Islam, B. Glocker, "Spatially varying label smoothing: capturing uncertainty from expert
   annotations", IPMI 2021 (SVLS, the U-Net's target).
.. [2] M. Monteiro et al., "Stochastic segmentation networks: modelling spatially correlated
   aleatoric uncertainty", NeurIPS 2020 (SSN, low-rank logits).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...core.raters import RaterSet

if TYPE_CHECKING:
    from ...core.cohort import Cohort
    from ...core.training import TrainConfig, TrainResult

__all__ = ["MODELS", "NUM_SSN_SAMPLES", "SSN_SETTINGS", "DemoTraining", "train_demo_model"]

#: The two models the workflow trains: key -> (label, head, loss, target).
MODELS = {
    "svls": ("mSVLS U-Net", "softmax", "ce", "msvls"),
    "ssn": ("SSN", "ssn", "ssn", "random_rater"),
}
#: SSN sample settings of the headless workflow:
#: (file stem, title, class index, that class's noise scale, temperature).
#: ``None`` as class index leaves every class at scale 1; class 2 is the phantom's lesion.
SSN_SETTINGS = (
    ("samples", "as trained (T = 1)", None, 1.0, 1.0),
    ("samples_T0", "temperature 0 (mean)", None, 1.0, 0.0),
    ("samples_T2", "temperature 2", None, 1.0, 2.0),
    ("samples_class2_x3", "class 2 noise × 3", 2, 3.0, 1.0),
)
#: Samples drawn per SSN setting.
NUM_SSN_SAMPLES = 8


@dataclass(frozen=True)
class DemoTraining:
    """Settings of the demo's two short training runs (shared by the headless demo and the Guide).

    The defaults train each model in about 10 to 30 seconds on two CPU cores: a tiny U-Net
    (8-16-32 channels) on 2-D patches, 8 epochs of 20 steps of 8 patches. On a cohort (the headless
    demo) the patches come from the training cases, ``patches_per_case`` each time a case is read,
    in the main process (``num_workers`` 0: the cases are small and a worker's start would cost
    more than it saves).

    Attributes
    ----------
    epochs, steps_per_epoch, batch_size : int
        Run length; ``steps_per_epoch * batch_size`` patches per epoch.
    channels : tuple of int
        U-Net channels per level (strides of 2 between levels).
    learning_rate : float
        Adam learning rate (higher than the usual 1e-3 so that the short run converges).
    ssn_rank, ssn_samples : int
        Rank of the SSN covariance factor and Monte-Carlo samples per step (even).
    predict_samples : int
        SSN logit samples averaged for the SSN's probabilities.
    patches_per_case, num_workers : int
        Cohort training: patches drawn from a case each time it is read, DataLoader worker processes.
    normalization : str
        Image normalization (``TrainConfig.normalization``): ``"zscore"``, per case over the body,
        so that the shown case, whose intensities lie on another scale than the generated cases',
        is prepared like them.

    Examples
    --------
    >>> settings = DemoTraining(epochs=2)
    >>> config = settings.config("ssn", output_dir=None)
    >>> config.head, config.target, config.epochs
    ('ssn', 'random_rater', 2)
    """

    epochs: int = 8
    steps_per_epoch: int = 20
    batch_size: int = 8
    channels: tuple[int, ...] = (8, 16, 32)
    learning_rate: float = 5e-3
    ssn_rank: int = 4
    ssn_samples: int = 8
    predict_samples: int = 20
    patches_per_case: int = 4
    num_workers: int = 0
    normalization: str = "zscore"

    def config(
        self, model: str, *, output_dir: str | os.PathLike | None, device: str = "auto", seed: int = 0
    ) -> TrainConfig:
        """The :class:`~napari_seg_uncertainty.core.training.TrainConfig` of ``model``.

        Parameters
        ----------
        model : {"svls", "ssn"}
            Which of the two demo models.
        output_dir : path or None
            Folder for ``last.pt`` and ``best.pt`` (None writes no checkpoint).
        device : str
            ``"auto"``, ``"cpu"``, ``"cuda:0"`` ...
        seed : int
            Seed of weights, patches and SSN noise.

        Returns
        -------
        TrainConfig
            2-D training (a volume trains on its slices), patch size chosen to fit the data.

        Examples
        --------
        >>> DemoTraining().config("svls", output_dir=None).target
        'msvls'
        """
        from ...core.training import TrainConfig

        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}.")
        _, head, loss, target = MODELS[model]
        return TrainConfig(
            head=head,
            loss=loss,
            target=target,
            spatial_dims=2,
            channels=self.channels,
            strides=(2,) * (len(self.channels) - 1),
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            ssn_rank=self.ssn_rank,
            ssn_samples=self.ssn_samples,
            predict_samples=self.predict_samples,
            patches_per_case=self.patches_per_case,
            num_workers=self.num_workers,
            normalization=self.normalization,
            device=device,
            seed=seed,
            output_dir=None if output_dir is None else str(output_dir),
        )


def train_demo_model(
    key: str,
    image: np.ndarray,
    raters: RaterSet,
    *,
    training: DemoTraining,
    output_dir: str | os.PathLike,
    device: str,
    seed: int,
    log: Callable[[str], None],
    cohort: Cohort | None = None,
    split: dict[str, list[str]] | None = None,
) -> TrainResult:
    """Train demo model ``key`` (a key of :data:`MODELS`) on ``image`` and its raters, or on a cohort.

    Parameters
    ----------
    key : {"svls", "ssn"}
        Which model.
    image : numpy.ndarray
        The image ``(*spatial)``.
    raters : RaterSet
        Its raters (the training targets), class names and spacing.
    training : DemoTraining
        Run settings.
    output_dir : path
        Folder of ``last.pt`` and ``best.pt``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:0"`` ...
    seed : int
        Seed of weights, patches and SSN noise.
    log : callable
        Receives one line per epoch.
    cohort : Cohort, optional
        Train on these cases instead of ``image`` (patches from ``split["train"]``, validation on
        ``split["val"]``).
    split : dict, optional
        The cohort's case-level split.

    Returns
    -------
    TrainResult
        What :func:`~napari_seg_uncertainty.core.training.train` returns (checkpoint, history …).
    """
    from ...core.training import TrainingData, train

    label = MODELS[key][0]
    config = training.config(key, output_dir=output_dir, device=device, seed=seed)
    if cohort is not None:
        generator = train(config, cohort, split=split)
    else:
        data = TrainingData.from_arrays(
            image, raters.labels, class_names=raters.class_names, spacing=raters.spacing
        )
        generator = train(config, data)
    while True:
        try:
            record = next(generator)
        except StopIteration as stop:
            return stop.value
        if record.kind == "epoch":
            extra = (
                ""
                if record.val_dice is None
                else (f", val NLL {record.val_nll:.3f}, val Dice {record.val_dice:.3f}")
            )
            cases = getattr(record, "cases_seen", None)
            if cases is not None:
                extra += f", {cases} cases seen"
            if cases is not None and record.throughput is not None:
                extra += f", {record.throughput:.0f} patches/s"
            log(f"train {label}: epoch {record.epoch}/{record.epochs} loss {record.loss:.4f}{extra}")
