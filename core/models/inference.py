"""Running a model on model input: probabilities in batches without gradients, and its speed.

Every batch goes to the device the model's weights are on (core.models.device) and runs in fp32, the
precision operating points are chosen at; probabilities come back to the CPU as float64.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError, DeviceOutOfMemory
from core.films.tensor import as_float, check_pixel_contract
from core.models.device import FP32, inference_batch_size, inference_kernels, model_device, to_device


def probabilities(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """N x 1 x S x S float in [0, 1] -> N x C softmax probabilities (model must be in eval mode)."""
    check_pixel_contract(batch)
    return _softmax(model, batch)


@torch.inference_mode()
def _softmax(model: nn.Module, batch: torch.Tensor, precision: str = FP32) -> np.ndarray:
    device = model_device(model)
    try:
        with inference_kernels(device, precision):
            logits = model(to_device(batch, device).float())
    except torch.OutOfMemoryError as exc:
        raise out_of_memory("reading films", len(batch), device) from exc
    if not bool(torch.isfinite(logits).all()):  # NaN >= threshold is False: every film would have read routine
        raise CheckpointError("The model's outputs are not numbers (NaN or infinite), so it cannot read films: its "
                              "weights are damaged or out of range. Choose another model; nothing was triaged with it.")
    return torch.softmax(logits.float(), dim=1).cpu().numpy().astype(np.float64)


def out_of_memory(doing: str, films: int, device: torch.device) -> DeviceOutOfMemory:
    """Inference (or Grad-CAM) ran out of device memory: in words, never a traceback."""
    where = "The GPU" if device.type == "cuda" else "This computer"
    return DeviceOutOfMemory(f"{where} ran out of memory {doing} ({films} film(s) at once); another job may be using "
                             "it. Nothing was lost: try again once it is free.",
                             command_step="nvidia-smi shows which job; or run on the CPU (--device cpu).")


def probabilities_in_batches(model: nn.Module, films_uint8: torch.Tensor, batch_size: int | None = None,
                             precision: str = FP32) -> np.ndarray:
    """N x 1 x S x S uint8 model input (from ``film_to_tensor``, on any device) -> N x C probabilities.

    Runs in eval and inference mode at the device's inference batch (core.models.device.inference_batch_size:
    large on a GPU, a few films on a CPU); restores the mode.
    uint8 / 255 lies in [0, 1] by construction, so only the shape is checked. ``precision`` stays fp32 for
    everything a threshold or report is computed from; training's per-epoch monitoring may pass bf16.
    """
    if films_uint8.dtype != torch.uint8 or films_uint8.ndim != 4 or films_uint8.shape[1] != 1:
        raise ValueError(f"expected N x 1 x S x S uint8 films, got {films_uint8.dtype} {tuple(films_uint8.shape)}")
    device = model_device(model)
    batch_size = batch_size or inference_batch_size(device)
    was_training = model.training
    model.eval()
    try:
        parts = [_softmax(model, as_float(to_device(films_uint8[i : i + batch_size], device)), precision)
                 for i in range(0, len(films_uint8), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0))


@torch.inference_mode()
def inference_ms_per_film(model: nn.Module, image_size: int, repeats: int = 10) -> float:
    """Fastest of ``repeats`` single-film forward passes on the model's device: the least disturbed by load."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    film = torch.rand(1, 1, image_size, image_size, device=device)
    model(film)  # warm-up: first call allocates
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(film)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    model.train(was_training)
    return round(min(times), 2)
