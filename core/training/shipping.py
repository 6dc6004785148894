"""Shipping a version: measure its speed, stamp it, write its checkpoint under the next free ``-vN`` name
and register it, making it its task's default when asked (or when its task has none yet). Training,
calibration and (later) ensembles all ship through here; versions are immutable once written."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from core import clock
from core.models.inference import inference_ms_per_film
from core.store.atomic import remove_stale_temporaries
from core.store.checkpoints import save_checkpoint
from core.store.records import ModelRecord
from core.store.registry import ensure_default, next_version_name, registry_lock, set_default


def ship_version(model: nn.Module, record: ModelRecord, base_name: str, directory: Path,
                 make_default: bool = False) -> ModelRecord:
    """Write ``model`` with ``record`` as ``base_name-vN``; returns the record as stored.

    The model is moved to the CPU in the memory layout :func:`load_checkpoint` gives, so its recorded speed
    compares with every other version's, whatever device it was trained on.
    """
    model.to("cpu").to(memory_format=torch.contiguous_format)
    record = record.model_copy(update={"inference_ms_per_film": inference_ms_per_film(model, record.image_size),
                                       "created": clock.iso()})
    with registry_lock(directory):
        remove_stale_temporaries(directory)
        named = record.model_copy(update={"name": next_version_name(base_name, directory)})
        stored = save_checkpoint(directory, model, named)
    if make_default:
        set_default(stored.name, directory)
    else:
        ensure_default(stored.name, directory)
    return stored
