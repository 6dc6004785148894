"""Evaluating a registered model on a class-folder tree, through the same path the app uses."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.checkpoints import LoadedModel
from core.data import discover
from core.errors import DatasetError, TriageError
from core.films import read_film
from core.inference import probabilities
from core.metrics import evaluate_probabilities
from core.preprocess import film_to_tensor


def evaluate_folder(loaded: LoadedModel, folder: str | Path, batch_size: int = 32,
                    on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Metrics of ``loaded`` on every film under ``folder/CLASS/``; unreadable films are listed, not fatal."""
    films = discover(folder)
    lookup = {c.lower(): i for i, c in enumerate(loaded.classes)}
    unknown = [c for c in films.classes if c.lower() not in lookup]
    if unknown:
        raise DatasetError(
            f"{folder} has class folder(s) {', '.join(unknown)} that model {loaded.name} does not know "
            f"(it knows {', '.join(loaded.classes)})."
        )
    mapping = np.array([lookup[c.lower()] for c in films.classes])
    labels, probs, skipped, pending = [], [], [], []

    def flush() -> None:
        if pending:
            batch = torch.stack([t for t, _ in pending])
            probs.append(probabilities(loaded.model, batch))
            labels.extend(label for _, label in pending)
            pending.clear()

    for done, (path, label) in enumerate(zip(films.paths, films.labels), 1):
        try:
            pending.append((film_to_tensor(read_film(path).pixels, loaded.image_size), int(mapping[label])))
        except TriageError as exc:
            skipped.append({"file": str(path), "error": str(exc)})
        if len(pending) == batch_size:
            flush()
        if on_progress:
            on_progress(done, len(films))
    flush()
    if not labels:
        raise DatasetError(f"No readable film in {folder}.")
    report = evaluate_probabilities(np.asarray(labels), np.concatenate(probs), loaded.classes,
                                    loaded.operating_point)
    report.update({"model": loaded.name, "split": f"folder {folder}", "skipped": skipped})
    return report
