"""The one preprocessing path: Film -> model input. Training, evaluation, the CLI and the app all call it.

Pixel contract for every model: a float tensor N x 1 x S x S in [0, 1] (grey, bone bright). Models do their
own normalisation (and channel replication for ImageNet weights) inside ``forward``.

``film_to_tensor`` gives the film at the model's size as 8-bit values: the whole film in its reference form
(:mod:`core.films.reference`) resized to a square, as the training copy was squashed, then rounded to 8 bits.
Training stores exactly these tensors (uint8 keeps a large training set small) and inference feeds the same
values, so a film reaches the model with identical pixels wherever it comes from.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from core.errors import DatasetError, TriageError, UnreadableImage
from core.films.decode_cache import DecodeCache
from core.films.film import MAX_FILE_BYTES, Film
from core.films.folders import FilmSet
from core.films.read import read_film
from core.films.roots import film_label, open_inside_roots
from core.wording import megabytes_over
from core.store.base import NotARegularFile

# Bump when anything between a film's bytes and ``film_to_tensor``'s output changes (decoding, the reference
# form, the resize, the rounding): decoded films cached by an older path then miss instead of being reused.
PREPROCESSING_VERSION = 4  # 2: DICOM padding, 8-bit range, palette, INVERSE; 3: 16-bit PNG bits, 224-px PNG;
# 4: VOI LUTs of any depth looked up without wrapping, 12-bit modality LUTs, signed 8-bit DICOM's range,
# multi-picture JPEGs read as JPEG


# compressed DICOM is decoded by these (an upgrade could change what the app reads from a cached film: a review)
DECODERS = ("pydicom", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg")


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


MOST_NAMED = 10  # films one refusal names; the rest are counted


def load_tensors(films: FilmSet, image_size: int, workers: int = 2, on_progress=None) -> torch.Tensor:
    """Decode every film once through the app's own path (``film_to_tensor``) into N x 1 x S x S uint8.

    uint8 is what ``film_to_tensor`` gives and a quarter of float32's memory. Films decoded before at this
    size with the same content come from the decode cache (:mod:`core.films.decode_cache`), bit for bit what
    decoding gives; each film's file is read once either way. Unreadable films raise one DatasetError naming them.
    """
    out = torch.empty((len(films), 1, image_size, image_size), dtype=torch.uint8)
    cache = DecodeCache.from_settings(cache_namespace())
    failed: list[tuple[int, str, str]] = []  # every film that cannot be decoded, named at once (a CLI review: one a
    # run, so four bad films took four runs of the whole folder to find)

    def decode(i: int) -> None:
        try:
            out[i] = _decoded(films.paths[i], image_size, cache)
        except TriageError as exc:
            failed.append((i, film_label(films.paths[i]), str(exc)))

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for done, _ in enumerate(pool.map(decode, range(len(films))), 1):
            if on_progress and (done % 200 == 0 or done == len(films)):
                on_progress(done, len(films))  # may raise to cancel: pending decodes are dropped below
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if cache is not None and cache.wrote:
            cache.prune()
    if failed:
        raise _unusable(sorted(failed))
    return out


def _unusable(failed: list[tuple[int, str, str]]) -> DatasetError:
    """One film's refusal as it always was; several named in one (the first ``MOST_NAMED``, then a count)."""
    if len(failed) == 1:
        return DatasetError(f"Cannot use {failed[0][1]}: {failed[0][2]}")
    named = "; ".join(f"{label} ({why.rstrip('.')})" for _, label, why in failed[:MOST_NAMED])
    more = f"; and {len(failed) - MOST_NAMED} more" if len(failed) > MOST_NAMED else ""
    return DatasetError(f"{len(failed)} films cannot be used: {named}{more}. Take them out of their folder, or "
                        "replace them, and try again.")


def cache_namespace() -> str:
    """What the decode cache's keys name besides each film's content and size: this path and its decoders."""
    decoders = ";".join(f"{name}={_installed(name)}" for name in DECODERS)
    return f"preprocessing={PREPROCESSING_VERSION};pillow={PIL.__version__};{decoders}"


@cache
def _installed(package: str) -> str:
    """An installed package's version, read from its metadata: importing pydicom for it would cost every process
    that reads films a third of a second, and DICOM pixels are decoded in worker processes anyway. A package
    that is not installed keys its own namespace (its films could not be decoded here anyway)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _decoded(path: Path, image_size: int, cache: DecodeCache | None) -> torch.Tensor:
    """One film's 1 x S x S uint8 input: from the cache when its content was decoded at this size before."""
    path = Path(path)
    content = film_bytes(path)
    if cache is None:
        return film_to_tensor(read_film(content, name=path.name), image_size)
    key = cache.key(content, image_size)
    pixels = cache.get(key, image_size)
    if pixels is not None:
        return torch.from_numpy(pixels).unsqueeze(0)
    tensor = film_to_tensor(read_film(content, name=path.name), image_size)
    cache.put(key, image_size, tensor[0].numpy())
    return tensor


def check_film_sizes(films: FilmSet) -> None:
    """DatasetError naming the first film over the size limit for one film, from the folder listing alone: a
    training run refuses it at once, before its copies are looked for or its content hashed, rather than after
    reading gigabytes (found by a CLI audit: a 3 GB file took 38 s and 7 GB of memory to be refused)."""
    for path in films.paths:
        try:
            size = path.stat().st_size
        except OSError:
            continue  # decoding says what is wrong with it, by name
        if size > MAX_FILE_BYTES:
            raise DatasetError(f"Cannot use {film_label(path)}: {path.name} is "
                               f"{megabytes_over(size / 2**20, MAX_FILE_BYTES // 2**20)} MB, over the "
                               f"{MAX_FILE_BYTES // 2**20} MB limit for one film. Take it out of the folder.")


def film_bytes(path: Path) -> bytes:
    """A film file's bytes, read once: they are hashed for the cache and decoded from memory. A regular file only,
    read no further than the limit: the folder was listed long before (FIFOs and devices left out then), and a film
    swapped since for a FIFO hung the run, for a link to /dev/zero filled memory, for a link out of the data roots was
    read (found by a review)."""
    try:
        with open_inside_roots(path) as handle:
            # read(n) sets aside n bytes first: 200 MB for each 30-kB film (virtual, but counted under strict
            # overcommit and by tracemalloc); so the size it has now, then anything it grew by since
            expected = min(os.fstat(handle.fileno()).st_size, MAX_FILE_BYTES)
            data = handle.read(expected + 1)
            if len(data) > expected:
                data += handle.read(MAX_FILE_BYTES + 1 - len(data))
        if len(data) > MAX_FILE_BYTES:
            raise UnreadableImage(f"{path.name} is over the {MAX_FILE_BYTES // 2**20} MB limit for one film.")
        return data
    except NotARegularFile as exc:
        raise UnreadableImage(f"{path.name} is not a regular file (a pipe, a device or a folder).") from exc
    except FileNotFoundError as exc:  # by name: callers add the film's label, never its server path
        raise UnreadableImage(f"{path.name} does not exist (removed after its folder was read?).") from exc
    except IsADirectoryError as exc:
        raise UnreadableImage(f"{path.name} is not a file.") from exc
    except OSError as exc:
        raise UnreadableImage(f"Cannot read {path.name} ({exc.strerror or type(exc).__name__}).") from exc

