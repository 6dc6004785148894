"""Inference timing stored with each model: milliseconds for one film on this CPU."""
from __future__ import annotations

import time

import torch
from torch import nn


@torch.inference_mode()
def inference_ms_per_film(model: nn.Module, image_size: int, repeats: int = 10) -> float:
    """Fastest of ``repeats`` single-film forward passes: the least disturbed by other load."""
    was_training = model.training
    model.eval()
    film = torch.rand(1, 1, image_size, image_size)
    model(film)  # warm-up: first call allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(film)
        times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return round(min(times), 2)
