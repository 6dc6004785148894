"""Version names: ``base-vN``, never given to two models (core.training.shipping names every new version here)."""
from __future__ import annotations

import re
from pathlib import Path

from core.errors import CheckpointError
from core.store.names import check_model_name
from core.store.registry import read_registry, tiers


def next_version_name(base: str, directory: Path | None = None) -> str:
    """``base-vN`` with N one past the highest version either tier (those of ``directory`` and the configured
    ones) has held; call under ``registry_lock`` of ``directory`` (the other tier's folder is read without its
    lock: a site job and a ``--shipped`` run naming one base at the same moment could still meet).
    Deleted versions count too (a stray weights file, a default pointer, a promotion): a name is never given
    to a second model, which would inherit the first one's default and its history in the audit log."""
    check_model_name(base)
    pattern = re.compile(rf"^{re.escape(base)}-v(\d+)$")
    # the configured tiers too: naming into the shipped folder saw that folder alone, so a shipped version could take
    # a site version's name, which then hid the site's (and its task's default: found by a review)
    folders = {tier.folder.resolve() for tier in [*tiers(directory), *tiers()]}
    names = [n for folder in sorted(folders) if folder.exists() for n in _names_held(folder, base)]
    versions = [int(m.group(1)) for name in names if (m := pattern.match(name))]
    return check_model_name(f"{base}-v{max(versions, default=0) + 1}")


def _names_held(folder: Path, base: str) -> list[str]:
    names = [p.name.removesuffix(".json").removesuffix(".pt") for p in folder.glob(f"{base}-v*")]
    try:
        registry = read_registry(folder)
    except CheckpointError:  # a damaged registry names nothing: its files still count
        return names
    promoted = [name for p in registry.promotions for name in (p.name, p.previous) if name]
    return names + list(registry.task_defaults.values()) + promoted
