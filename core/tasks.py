"""Tasks: which classes a model reads, which one is normal, and how class-folder names map onto the classes.

A task is known by its class set, so models of the same task are grouped, compared and defaulted together.
Three tasks are named (``TASKS``); any other class set still trains, under a name made from its classes.
Folder names reach the classes through one alias table (case, spacing, ``_``/``-`` and the public sets' own
spellings, the Kaggle 4-class set's ``TURBERCULOSIS`` included), so ``Covid``, ``COVID19`` and ``covid-19``
all train and evaluate the class ``COVID-19``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

COVID, NORMAL, PNEUMONIA, TUBERCULOSIS, VIRAL_PNEUMONIA = (
    "COVID-19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS", "VIRAL PNEUMONIA")


@dataclass(frozen=True)
class Task:
    name: str  # what records, the registry's defaults and the CLI's --task use
    title: str  # what people read
    classes: tuple[str, ...]  # canonical names, in the model's (alphabetical) order
    normal: str  # the class whose absence of the others triage looks for


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("pneumonia", "Pneumonia", (NORMAL, PNEUMONIA), NORMAL),
    Task("covid", "COVID-19", (COVID, NORMAL, VIRAL_PNEUMONIA), NORMAL),
    Task("four-class", "Four classes (with tuberculosis)", (COVID, NORMAL, PNEUMONIA, TUBERCULOSIS), NORMAL),
)}

# Folder spellings met in the public sets and from users, keyed without case, spaces, "_" or "-".
# Kept to known spellings: a folder that is not here is refused by name rather than guessed at.
_ALIASES = {
    "covid": COVID, "covid19": COVID,
    "normal": NORMAL,
    "pneumonia": PNEUMONIA,
    "viralpneumonia": VIRAL_PNEUMONIA,
    "tuberculosis": TUBERCULOSIS, "turberculosis": TUBERCULOSIS, "tb": TUBERCULOSIS,
}
KNOWN_CLASSES: tuple[str, ...] = tuple(sorted(set(_ALIASES.values())))
DEFAULT_TASK = "pneumonia"  # served when no task is named: the product's first task keeps its default

_SEPARATORS = re.compile(r"[\s_\-]+")
_NORMAL_NAME = re.compile(r"^(normal|no[ _-]?finding|healthy)$", re.IGNORECASE)


def canonical_class(folder_name: str) -> str | None:
    """The class a folder named ``folder_name`` holds (``"TURBERCULOSIS"`` -> ``"TUBERCULOSIS"``), or None."""
    return _ALIASES.get(_SEPARATORS.sub("", folder_name).lower())


def find_normal_index(classes: list[str] | tuple[str, ...]) -> int | None:
    """The index of the one class named like "normal", or None (no triage without a normal class)."""
    matches = [i for i, name in enumerate(classes) if _NORMAL_NAME.match(name.strip())]
    return matches[0] if len(matches) == 1 else None


def task_of(classes: tuple[str, ...] | list[str]) -> Task | None:
    """The named task whose classes these are (any order, any known spelling), or None."""
    canonical = [canonical_class(c) for c in classes]
    if None in canonical or len(set(canonical)) != len(canonical):
        return None
    return next((task for task in TASKS.values() if set(task.classes) == set(canonical)), None)


def task_name(classes: tuple[str, ...] | list[str]) -> str:
    """A named task's name (``("NORMAL", "PNEUMONIA")`` -> ``pneumonia``); for other sets, normal plus one
    class -> that class (``tuberculosis``), else the names joined, lower case."""
    task = task_of(classes)
    if task is not None:
        return task.name
    normal = find_normal_index(classes)
    abnormal = [c for i, c in enumerate(classes) if i != normal]
    if normal is not None and len(abnormal) == 1:
        return abnormal[0].lower().replace(" ", "-")
    return "-".join(c.lower().replace(" ", "-") for c in classes)


def task_title(name: str) -> str:
    """What people read for a task name: a named task's title, else the name in words."""
    task = TASKS.get(name)
    return task.title if task is not None else name.replace("-", " ").capitalize()
