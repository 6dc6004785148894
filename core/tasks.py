"""Task names derived from class names, so models of the same task are grouped and defaulted together."""
from __future__ import annotations

from core.operating_point import find_normal_index


def task_name(classes: tuple[str, ...] | list[str]) -> str:
    """``("NORMAL", "PNEUMONIA")`` -> ``pneumonia``; other sets -> their names joined, lower case."""
    normal = find_normal_index(classes)
    abnormal = [c for i, c in enumerate(classes) if i != normal]
    if normal is not None and len(abnormal) == 1:
        return abnormal[0].lower().replace(" ", "-")
    return "-".join(c.lower().replace(" ", "-") for c in classes)
