"""The one preprocessing path: Film -> model input. Training, evaluation, the CLI and the app all call it.

Pixel contract for every model: a float tensor N x 1 x S x S in [0, 1] (grey, bone bright). Models do their
own normalisation (and channel replication for ImageNet weights) inside ``forward``.

``film_to_tensor`` gives the film at the model's size as 8-bit values: the whole film in its reference form
(:mod:`core.films.reference`) resized to a square, as the training copy was squashed, then rounded to 8 bits.
Training stores exactly these tensors (uint8 keeps a large training set small) and inference feeds the same
values, so a film reaches the model with identical pixels wherever it comes from.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from core.errors import DatasetError, TriageError
from core.films.film import Film
from core.films.folders import FilmSet
from core.films.read import read_film


def film_to_tensor(film: Film, image_size: int) -> torch.Tensor:
    """A film -> its 1 x S x S uint8 model input (``as_float`` turns a batch of them into the contract)."""
    pixels = film.model_pixels  # checks the pixel contract (ValueError) once per film
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    if image.size != (image_size, image_size):
        # Pillow's resize filters with a support scaled to the reduction: an anti-aliased downscale.
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    eight_bit = np.clip(np.rint(np.asarray(image, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(eight_bit).unsqueeze(0)


def as_float(films_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 model input -> the float [0, 1] pixel contract."""
    return films_uint8.to(torch.float32) / 255.0


def check_pixel_contract(batch: torch.Tensor) -> None:
    """Raise ValueError unless ``batch`` is N x 1 x S x S in [0, 1]."""
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"model input must be N x 1 x S x S, got {tuple(batch.shape)}")
    if batch.numel() and (float(batch.min()) < 0.0 or float(batch.max()) > 1.0):
        raise ValueError("model input must lie in [0, 1]")


def load_tensors(films: FilmSet, image_size: int, workers: int = 2, on_progress=None) -> torch.Tensor:
    """Decode every film once through the app's own path (``film_to_tensor``) into N x 1 x S x S uint8.

    uint8 is what ``film_to_tensor`` gives and a quarter of float32's memory. Unreadable films raise
    DatasetError naming the file.
    """
    out = torch.empty((len(films), 1, image_size, image_size), dtype=torch.uint8)

    def decode(i: int) -> None:
        try:
            out[i] = film_to_tensor(read_film(films.paths[i]), image_size)
        except TriageError as exc:
            raise DatasetError(f"Cannot use {films.paths[i]}: {exc}") from exc

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, _ in enumerate(pool.map(decode, range(len(films))), 1):
            if on_progress and (done % 200 == 0 or done == len(films)):
                on_progress(done, len(films))  # may raise to cancel: pending decodes are dropped below
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out
