"""Training-only augmentation, applied to batches of model input; the one difference between training and
every other use of a film."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
        """``batch`` on any device; ``generator`` a CPU generator, so a seed draws the same augmentation on
        every device (the few random numbers per film are drawn on the CPU and moved with the batch)."""
        n, device = batch.shape[0], batch.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(device, non_blocking=True)

        angle = uniform(-self.rotation_deg, self.rotation_deg) * math.pi / 180.0
        scale = uniform(*self.scale)
        shift = torch.stack([uniform(-self.translate, self.translate) for _ in range(2)], dim=1) * 2
        flip = (torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip
                else torch.ones(n)).to(device)
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
