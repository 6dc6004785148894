"""Running a model on model input: probabilities in batches without gradients, and its speed on this CPU."""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from core.films.tensor import as_float, check_pixel_contract


@torch.inference_mode()
def probabilities(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """N x 1 x S x S float in [0, 1] -> N x C softmax probabilities (model must be in eval mode)."""
    check_pixel_contract(batch)
    return torch.softmax(model(batch).float(), dim=1).numpy().astype(np.float64)


def probabilities_in_batches(model: nn.Module, films_uint8: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """N x 1 x S x S uint8 model input (from ``film_to_tensor``) -> N x C probabilities, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        parts = [probabilities(model, as_float(films_uint8[i : i + batch_size]))
                 for i in range(0, len(films_uint8), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0))


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
