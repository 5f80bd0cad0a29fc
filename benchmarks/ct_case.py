"""A generated CT-size case for the CT-scale benchmarks and tests: 300x512x512, 4 raters, 3 classes.

The image is a smooth CT-like volume (air around a body ellipse, soft tissue and two organs) in
Hounsfield-like units, float32; the raters are nested ellipsoids (a large organ and a lesion inside it)
whose boundaries each rater moves by a smooth random field, uint8. Spacing is anisotropic
(2.5, 0.7, 0.7) mm and the origin non-zero, as a chest or abdominal CT. Built plane by plane so that
making it never needs more than the outputs themselves (about 0.4 GB at full size).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

CT_SHAPE = (300, 512, 512)
CT_SPACING = (2.5, 0.7, 0.7)
CT_ORIGIN = (-370.0, -180.0, -175.5)


@dataclass(frozen=True)
class CTCase:
    image: np.ndarray  # (Z, Y, X) float32
    raters: np.ndarray  # (R, Z, Y, X) uint8, values 0..num_classes-1
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    num_classes: int


def make_ct_case(
    shape: tuple[int, int, int] = CT_SHAPE, *, num_raters: int = 4, num_classes: int = 3, seed: int = 0
) -> CTCase:
    """The generated case; ``shape`` smaller for tests, the same structure at every size."""
    if num_classes < 2:
        raise ValueError("num_classes must be at least 2.")
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zc, yc, xc = (s / 2 for s in shape)
    z = (np.arange(nz, dtype=np.float32) - zc) / (0.42 * nz)
    y = (np.arange(ny, dtype=np.float32)[:, None] - yc) / (0.40 * ny)
    x = (np.arange(nx, dtype=np.float32)[None, :] - xc) / (0.45 * nx)
    image = np.empty(shape, dtype=np.float32)
    raters = np.zeros((num_raters,) + tuple(shape), dtype=np.uint8)
    # Each rater's boundary offset: a few low-frequency cosines (smooth, cheap at any size).
    waves = rng.normal(0.0, 0.04, size=(num_raters, num_classes - 1, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(num_raters, num_classes - 1, 3))
    noise = rng.standard_normal((ny, nx)).astype(np.float32) * 12.0
    for k in range(nz):
        body = (y * 0.95) ** 2 + x**2 + (z[k] * 0.5) ** 2
        plane = np.where(body < 1.0, 40.0, -1000.0).astype(np.float32)
        organ = ((y - 0.1) / 0.55) ** 2 + ((x + 0.2) / 0.45) ** 2 + (z[k] / 0.8) ** 2
        lesion = ((y - 0.15) / 0.2) ** 2 + ((x + 0.25) / 0.18) ** 2 + (z[k] / 0.3) ** 2
        plane += np.where(organ < 1.0, 60.0, 0.0) + np.where(lesion < 1.0, 45.0, 0.0)
        image[k] = plane + np.roll(noise, k * 7, axis=1)
        for r in range(num_raters):
            label = np.zeros((ny, nx), dtype=np.uint8)
            for c, shape_field in enumerate((organ, lesion)[: num_classes - 1]):
                a, p = waves[r, c], phases[r, c]
                offset = a[0] * np.cos(3 * y + p[0]) + a[1] * np.cos(3 * x + p[1]) + a[2] * np.cos(2 * z[k] + p[2])
                label[shape_field < 1.0 + offset] = c + 1
            raters[r, k] = label
    return CTCase(image, raters, CT_SPACING, CT_ORIGIN, num_classes)


def train_checkpoint(folder: str, crop: tuple[int, int, int], **config: Any) -> str:
    """A checkpoint of the given ``TrainConfig`` options trained for one step on a ``crop``-sized generated case
    (the weights do not change what the benchmarks measure: time and memory)."""
    from napari_seg_uncertainty.core.training import TrainConfig, train

    case = make_ct_case(crop)
    settings = dict(epochs=1, steps_per_epoch=1, batch_size=1, val_fraction=0.0, device="cpu", num_workers=0,
                    output_dir=folder)
    generator = train(TrainConfig(**{**settings, **config}), (case.image, case.raters))
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return str(stop.value.checkpoint)


def save_ct_image(folder: str, shape: tuple[int, int, int]) -> str:
    """The generated case's image saved as ``folder/image.npy`` (its path), for benchmark subprocesses."""
    path = os.path.join(folder, "image.npy")
    np.save(path, make_ct_case(shape, num_raters=1).image)
    return path
