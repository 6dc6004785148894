"""Running a model on preprocessed films: probabilities in batches, without gradients."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.preprocess import check_pixel_contract


def as_float(films_uint8: torch.Tensor) -> torch.Tensor:
    """Cached uint8 films -> the float [0, 1] pixel contract."""
    return films_uint8.to(torch.float32) / 255.0


@torch.inference_mode()
def probabilities(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """N x 1 x S x S float in [0, 1] -> N x C softmax probabilities (model must be in eval mode)."""
    check_pixel_contract(batch)
    return torch.softmax(model(batch).float(), dim=1).numpy().astype(np.float64)


def probabilities_in_batches(model: nn.Module, films_uint8: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        parts = [probabilities(model, as_float(films_uint8[i : i + batch_size]))
                 for i in range(0, len(films_uint8), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0))
