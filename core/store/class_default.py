"""Which model reads a folder when none is named: the default of the task whose classes cover the folder's
(``evaluate DIR``). Imports no torch."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

from core.errors import ModelNotFound
from core.store.registry import ModelEntry, listing, pick
from core.tasks import TASKS, canonical_class, task_name


def find_default_for_classes(classes: tuple[str, ...] | list[str], directory: Path | None = None) -> ModelEntry:
    """The default model of the task whose classes cover ``classes`` (a folder's, canonical names), the task
    with the fewest classes when several do; ModelNotFound naming the candidates when none or several fit, and
    saying why when that task's default cannot be used (no other task's model stands in for it)."""
    entries, problems, broken = listing(directory)
    wanted = set(classes)
    covering = [e for e in entries if wanted <= {canonical_class(c) or c for c in e.classes}]
    defaults = [e for e in covering if e.is_default]
    broken_classes = {task: _classes_of(task, entries, wanted) for task in broken}
    broken = {task: found for task, found in broken.items() if wanted <= broken_classes[task]}
    shown = ", ".join(sorted(wanted))
    # the smallest task with any version that reads them, default or not: a larger task's default never stands
    # in for one whose versions have not cleared the floor (a CLI review), as predict refuses such a task
    sizes = [len(e.classes) for e in covering] + [len(broken_classes[task]) for task in broken]
    if sizes:
        fewest = min(sizes)
        unusable = [(task, *found) for task, found in sorted(broken.items()) if len(broken_classes[task]) == fewest]
        if unusable:
            task, name, problem = unusable[0]
            raise ModelNotFound(f"The default model of the {task} task, {name}, which reads {shown}, cannot be used: "
                                f"{problem} Choose a model with --model, or ask an administrator to repair it or to "
                                "make another the default.")
        best = [e for e in defaults if len(e.classes) == fewest]
        if len(best) == 1:
            return best[0]
        if best:
            raise ModelNotFound(f"The default models of several tasks read {shown}: "
                                f"{', '.join(f'{e.name} ({e.task})' for e in best)}; choose one with --model.")
        smallest = [e for e in covering if len(e.classes) == fewest]
        raise ModelNotFound(f"The {' and '.join(sorted({e.task for e in smallest}))} task, whose models read "
                            f"{', '.join(sorted({c for e in smallest for c in e.classes}))}, has no default model "
                            f"(none of its versions has cleared the promotion floor); its models: "
                            f"{', '.join(e.name for e in smallest)}. Choose one with --model.")
    if not entries:
        return pick(entries, problems, None, None)  # no usable model at all: says so, and why
    tasks = sorted({f"{e.task} ({', '.join(e.classes)})" for e in entries})
    raise ModelNotFound(f"No registered model reads {shown}; the models' tasks are {'; '.join(tasks)}.")


def _classes_of(task: str, entries: list[ModelEntry], wanted: set[str]) -> set[str]:
    """The classes of a task whose default cannot be read: a named task's, else those of a readable version of
    it, else the set of known classes whose name it is (a site's own task, its only version damaged; a folder may
    hold some of them only: a review)."""
    if task in TASKS:
        return set(TASKS[task].classes)
    readable = next((e for e in entries if e.task == task), None)
    if readable is not None:
        return {canonical_class(c) or c for c in readable.classes}
    known = sorted(c for c in wanted | {c for named in TASKS.values() for c in named.classes}
                   | {canonical_class(c) or c for e in entries for c in e.classes}
                   if c.lower().replace(" ", "-") in task or c == "NORMAL")  # a name is made of its classes'
    return next((set(combo) for size in range(2, len(known) + 1) for combo in combinations(known, size)
                 if task_name(combo) == task), set())
