"""Training-only augmentation, applied to batches of model input; the one difference between training and
every other use of a film."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class TrainingAugmentation:
    """Training-only augmentation on a batch N x 1 x S x S: random affine and brightness/contrast.

    Horizontal flip is off by default: it moves the heart to the wrong side, which a real film never does.
    :meth:`wide_framing` also varies how tightly the chest is framed, and its width against its height, far more
    (the one change of acquisition found to move every model the way another batch did: core.evaluation.framing).
    """

    def __init__(
        self,
        rotation_deg: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        translate: float = 0.06,
        brightness: float = 0.1,
        contrast: float = 0.15,
        hflip: bool = False,
        aspect: float = 0.0,
        log_scale: bool = False,
    ):
        self.rotation_deg, self.scale, self.translate = rotation_deg, scale, translate
        self.brightness, self.contrast, self.hflip = brightness, contrast, hflip
        self.aspect, self.log_scale = aspect, log_scale  # width/height varied up to (1 + aspect) either way

    @classmethod
    def wide_framing(cls, hflip: bool = False) -> "TrainingAugmentation":
        """Scale 0.8-1.25 (log-uniform: as likely tighter as wider), width against height up to 15 % either way,
        shifts up to 8 %; rotation and brightness/contrast as usual."""
        return cls(scale=(0.8, 1.25), translate=0.08, hflip=hflip, aspect=0.15, log_scale=True)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` on any device; ``generator`` a CPU generator, so a seed draws the same augmentation on
        every device (the few random numbers per film are drawn on the CPU and moved with the batch)."""
        n, device = batch.shape[0], batch.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * (hi - lo) + lo).to(device, non_blocking=True)

        angle = uniform(-self.rotation_deg, self.rotation_deg) * math.pi / 180.0
        if self.log_scale:
            scale = torch.exp(uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        else:
            scale = uniform(*self.scale)
        scale_x = scale_y = scale
        if self.aspect:
            aspect = torch.exp(uniform(-math.log1p(self.aspect), math.log1p(self.aspect))).sqrt()
            scale_x, scale_y = scale * aspect, scale / aspect
        shift = torch.stack([uniform(-self.translate, self.translate) for _ in range(2)], dim=1) * 2
        flip = (torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.hflip
                else torch.ones(n)).to(device)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack([torch.stack([cos * flip / scale_x, -sin / scale_y, shift[:, 0]], 1),
                             torch.stack([sin * flip / scale_x, cos / scale_y, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
        out = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gain = uniform(1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1)
        bias = uniform(-self.brightness, self.brightness).view(n, 1, 1, 1)
        mean = out.mean(dim=(2, 3), keepdim=True)
        return ((out - mean) * gain + mean + bias).clamp(0.0, 1.0)
