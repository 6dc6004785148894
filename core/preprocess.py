"""The one preprocessing path: film pixels -> model input. Training, evaluation, CLI and app all call it.

Pixel contract for every model: a float tensor N x 1 x S x S in [0, 1] (grey, bone bright). Models do
their own normalisation (and channel replication for ImageNet weights) inside ``forward``.

Geometry: the whole film is resized to a square, as the 224-px Kermany training copy was squashed, so
full-resolution uploads reach the model with the same geometry as the training films.

Reference form: that copy is also 8-bit JPEG at quality 75, and its block noise is texture a CNN learns. A
full-resolution film downscaled straight to the model's size is cleaner, and the shipped EfficientNet scored
such films systematically lower (a pneumonia film 0.76 instead of 0.91). So every film that is not already
224 x 224 is first brought to the training films' form: squashed to 224 x 224, 8-bit, JPEG quality 75
(``reference_form``). Training films pass through unchanged; an upload then differs from a training film
only in what it shows. All architectures read at most 224 px, so no detail a model could use is lost.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


REFERENCE_SIZE = 224
REFERENCE_JPEG_QUALITY = 75


def reference_form(pixels: np.ndarray) -> np.ndarray:
    """Float HxW in [0, 1] -> the training copy's form: 224 x 224, 8-bit, JPEG quality 75 (as float)."""
    if pixels.shape == (REFERENCE_SIZE, REFERENCE_SIZE):
        return pixels
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    image = image.resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.Resampling.BILINEAR)
    eight_bit = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(eight_bit, mode="L").save(buffer, format="JPEG", quality=REFERENCE_JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L"), dtype=np.float32) / 255.0


def film_to_tensor(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """Float HxW pixels in [0, 1] -> 1 x S x S tensor in [0, 1], by way of ``reference_form``."""
    if pixels.ndim != 2:
        raise ValueError(f"film pixels must be 2-D grey, got shape {pixels.shape}")
    if pixels.size == 0 or float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0:
        raise ValueError("film pixels must lie in [0, 1]; read films with core.films.read_film")
    image = Image.fromarray(reference_form(np.asarray(pixels, dtype=np.float32)), mode="F")
    if image.size != (image_size, image_size):
        # Pillow's resize filters with a support scaled to the reduction: an anti-aliased downscale.
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return torch.from_numpy(array.copy()).unsqueeze(0)


def check_pixel_contract(batch: torch.Tensor) -> None:
    """Raise ValueError unless ``batch`` is N x 1 x S x S in [0, 1]."""
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"model input must be N x 1 x S x S, got {tuple(batch.shape)}")
    if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
        raise ValueError("model input must lie in [0, 1]")


class TrainingAugmentation:
    """Training-only augmentation on a batch N x 1 x S x S: random affine and brightness/contrast.

    Horizontal flip is off by default: it moves the heart to the wrong side, which a real film never does.
    """

    def __init__(
        self,
        rotation_deg: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        translate: float = 0.06,
        brightness: float = 0.1,
        contrast: float = 0.15,
        hflip: bool = False,
    ):
        self.rotation_deg, self.scale, self.translate = rotation_deg, scale, translate
        self.brightness, self.contrast, self.hflip = brightness, contrast, hflip

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n = batch.shape[0]

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) * (hi - lo) + lo

        angle = uniform(-self.rotation_deg, self.rotation_deg) * math.pi / 180.0
        scale = uniform(*self.scale)
        shift = torch.stack([uniform(-self.translate, self.translate) for _ in range(2)], dim=1) * 2
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip else torch.ones(n)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gain = uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1)
        bias = uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
        mean = out.mean(dim=(2, 3), keepdim=True)
        return ((out - mean) * gain + mean + bias).clamp(0.0, 1.0)
