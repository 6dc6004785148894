"""Tasks: which class is normal, and the task name derived from the class names, so models of the same
task are grouped, compared and defaulted together."""
from __future__ import annotations

import re

_NORMAL_NAME = re.compile(r"^(normal|no[ _-]?finding|healthy)$", re.IGNORECASE)


def find_normal_index(classes: list[str] | tuple[str, ...]) -> int | None:
    """The index of the one class named like "normal", or None (no triage without a normal class)."""
    matches = [i for i, name in enumerate(classes) if _NORMAL_NAME.match(name.strip())]
    return matches[0] if len(matches) == 1 else None


def task_name(classes: tuple[str, ...] | list[str]) -> str:
    """``("NORMAL", "PNEUMONIA")`` -> ``pneumonia``; other sets -> their names joined, lower case."""
    normal = find_normal_index(classes)
    abnormal = [c for i, c in enumerate(classes) if i != normal]
    if normal is not None and len(abnormal) == 1:
        return abnormal[0].lower().replace(" ", "-")
    return "-".join(c.lower().replace(" ", "-") for c in classes)
