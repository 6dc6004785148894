"""The model registry, in two tiers, each a folder of ``NAME.json`` + ``NAME.pt`` pairs with a ``registry.json``
naming one default model per task and recording every promotion:

- **shipped**: the repository's ``checkpoints`` (``CXR_CHECKPOINTS``), read-only to the app and the CLI,
  written only by the shipping path (``train --shipped``, i.e. ``make models``); every file checked against
  the checksum manifest (core.store.manifest);
- **site**: site-trained versions (``CXR_MODELS``, default ``~/.local/share/cxr-triage/models``), where ``train``,
  ``calibrate`` and jobs write, and where the site's default pointers live (a task without one: the shipped one).

Every function's ``directory`` names the site folder (default: the configured one); the shipped folder is
always the configured one, and when ``directory`` *is* the shipped folder there is just the one tier (the
shipping path). Writes happen under a file lock and atomically, so a killed training job can never leave a
half-written registry or change a default. Imports no torch: pages list models before any model loads."""
from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from core import clock
from core.config import settings
from core.errors import CheckpointError, ModelNotFound
from core.store import manifest
from core.store.atomic import json_bytes
from core.store.lock import registry_lock
from core.store.manifest import REGISTRY_FILE, shipped_dir
from core.store.names import check_model_name, is_model_name
from core.store.records import ModelRecord, read_model_record
from core.store.registry_file import Promotion, RegistryFile, read_registry, shipped_registry
from core.tasks import DEFAULT_TASK, task_title

SHIPPED, SITE = "shipped", "site"
__all__ = ["REGISTRY_FILE", "SHIPPED", "SITE", "ModelEntry", "Tier", "checkpoint_dir", "ensure_default", "Listing",
           "find_model", "list_models", "listing", "pick", "read_registry", "registry_lock", "set_default",
           "shipped_dir", "site_dir", "tiers"]


def site_dir() -> Path:
    """The site-trained models' folder (``CXR_MODELS``, see core.config)."""
    return settings().models


def checkpoint_dir() -> Path:
    """Where new versions are written and defaults are changed: the site folder, never the shipped one."""
    return site_dir()


@dataclass(frozen=True)
class Tier:
    name: str  # SHIPPED or SITE
    folder: Path


def tiers(directory: Path | None = None) -> list[Tier]:
    """The shipped tier, then the site tier (``directory`` or the configured site folder); one tier when
    ``directory`` is the shipped folder itself."""
    shipped, site = shipped_dir(), directory or site_dir()
    return [Tier(SHIPPED, shipped)] + ([] if site.resolve() == shipped.resolve() else [Tier(SITE, site)])


@dataclass(frozen=True)
class ModelEntry:
    record: ModelRecord
    is_default: bool  # the default of its task (the site's pointer, else the shipped one)
    json_path: Path
    tier: str = SITE  # SHIPPED or SITE

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def arch(self) -> str:
        return self.record.arch

    @property
    def classes(self) -> tuple[str, ...]:
        return self.record.classes

    @property
    def population_missing(self) -> bool:  # a population check named whose file is not beside it: served unchecked
        return _population_missing(self.record, self.json_path.parent)


class Listing(NamedTuple):
    entries: list[ModelEntry]  # the readable models (the last promoted default first, then by name)
    problems: list[str]  # a message per broken one
    # task -> (its default, why it cannot be used) where the task's pointer (the site's, else the shipped one)
    # names a model whose files are there but unusable: nothing may quietly serve another model in its place
    broken_defaults: dict[str, tuple[str, str]]


def list_models(directory: Path | None = None) -> tuple[list[ModelEntry], list[str]]:
    """All readable models of both tiers and a message per broken one (:func:`listing`)."""
    return listing(directory)[:2]


def listing(directory: Path | None = None) -> Listing:
    """Both tiers read once: the models, the problems, and the defaults that cannot be used. A shipped
    description that fails the checksum manifest is a problem, not a model."""
    found: list[tuple[ModelRecord, Path, str]] = []
    problems: list[str] = []
    shadowed: set[str] = set()  # site models named like shipped ones: ignored, and so is a site pointer to one
    for tier in tiers(directory):
        for record, json_path in _read_tier(tier, problems):
            if any(record.name == other.name for other, _, _ in found):
                problems.append(f"{json_path.name} in the site folder has the name of a shipped model; ignored.")
                shadowed.add(record.name)
                continue
            found.append((record, json_path, tier.name))
    defaults, latest, pointers, blocked = _defaults(tiers(directory), {r.name: r.task for r, _, _ in found}, shadowed,
                                                    problems)
    broken = {task: (name, problem) for task, name in pointers.items()
              if (name not in {record.name for record, _, _ in found} or task in blocked)
              and (problem := _problem_of(name, problems)) is not None}
    defaults = {task: name for task, name in defaults.items() if task not in broken}  # nothing stands in (a review)
    entries = [ModelEntry(record, defaults.get(record.task) == record.name, json_path, tier)
               for record, json_path, tier in found]
    entries.sort(key=lambda e: (not (e.name == latest and e.is_default), not e.is_default, e.name))  # not a stand-in
    for task, (name, _) in broken.items():
        problems.append(f"{name}, the default model of the {task} task, cannot be used (see above), and no other "
                        "model stands in for it: name a model, or repair it or make another one the default.")
    return Listing(entries, problems, broken)


def _problem_of(name: str, problems: list[str]) -> str | None:
    """The first problem that names model ``name``'s files."""
    files = re.compile(rf"(^|[\s'\"]){re.escape(name)}\.(json|pt)\b")
    return next((problem for problem in problems if files.search(problem)), None)


def _read_tier(tier: Tier, problems: list[str]) -> list[tuple[ModelRecord, Path]]:
    if not tier.folder.exists():  # a site folder is made by its first version; a shipped one always exists
        if tier.name == SHIPPED:  # CXR_CHECKPOINTS mistyped: no shipped model was offered, and nothing said why
            problems.append(f"{manifest.SHIPPED_FOLDER_MISSING}, so no shipped model is offered: unset "
                            "CXR_CHECKPOINTS, or set it to a checkpoints folder of this repository.")
        return []
    readable = []
    for json_path in sorted(tier.folder.glob("*.json")):
        if json_path.name == REGISTRY_FILE:
            continue
        try:
            # the description carries the operating point: a shipped one is parsed from the bytes just verified
            verified = manifest.read_verified(json_path, tier.folder) if tier.name == SHIPPED else None
            record = read_model_record(json_path, verified)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if not is_model_name(record.name):
            problems.append(f"{json_path.name} gives its model a name that is not allowed; it is ignored.")
        elif not json_path.with_suffix(".pt").exists():
            problems.append(f"{json_path.name} has no weights file beside it.")
        elif tier.name == SHIPPED and _population_missing(record, tier.folder):  # loading refuses it: not listed
            problems.append(f"{json_path.name} names population-check file {record.population_check.file}, which "
                            "is missing, so the model cannot be used: a shipped version must have every file its "
                            "checksum manifest lists. Restore the checkpoints folder from the repository.")
        else:
            readable.append((record, json_path))
            check = record.population_check
            if _population_missing(record, tier.folder):  # a site copy: served, but say it is unchecked
                problems.append(f"{record.name} triages without its population check ({check.file} is missing): "
                                "no film is flagged as unlike its training films. Copy the file back, or fit the "
                                f"check again (python -m core fit-population {record.name}).")
    return readable


def _population_missing(record: ModelRecord, folder: Path) -> bool:
    return record.population_check is not None and not (folder / record.population_check.file).exists()


def _defaults(tier_list: list[Tier], tasks: dict[str, str], shadowed: set[str],
              problems: list[str]) -> tuple[dict[str, str], str | None, dict[str, str], set[str]]:
    """Each task's default (a site pointer overrides the shipped one; a pointer to a model that is not
    there counts as none, and so does a site pointer to a ``shadowed`` name: it meant the site's own model, not
    the shipped one that took its name), the most recently promoted default (the site's, else the shipped one),
    every task's pointer as written, whether its model is there or not, and the tasks whose site pointer names
    a shadowed model; a damaged shipped registry, said in ``problems``, points at nothing."""
    defaults: dict[str, str] = {}
    pointers: dict[str, str] = {}
    promoted, blocked = [], set()
    for tier in tier_list:  # shipped first: the site's pointers, read second, override
        registry = shipped_registry(tier.folder, problems) if tier.name == SHIPPED else read_registry(tier.folder)
        written = _pointers(registry, tasks)
        pointers.update(written)
        for task, name in written.items():
            if tier.name == SITE and name in shadowed:  # even when the shipped default has that name too
                blocked.add(task)
            elif tasks.get(name) == task:
                defaults[task] = name
        promoted.append(registry.default)
    latest = next((name for name in reversed(promoted) if name in tasks and defaults.get(tasks[name]) == name), None)
    return defaults, latest, pointers, blocked


def _pointers(registry: RegistryFile, tasks: dict[str, str]) -> dict[str, str]:
    """A registry's default per task; one written before defaults were kept per task holds only ``default``,
    which counts as the default of its model's task (``tasks``: model name -> task) unless the task has one."""
    pointers = dict(registry.task_defaults)
    legacy = registry.legacy_default
    if legacy in tasks and tasks[legacy] not in pointers:
        pointers[tasks[legacy]] = legacy
    return pointers


def find_model(name: str | None, directory: Path | None = None, task: str | None = None) -> ModelEntry:
    """The named model; without a name, the default of ``task`` (without a task: of the pneumonia task when
    it has one, else of the one task that has a default; ModelNotFound listing the tasks otherwise). Making
    another task's model a default never changes what is served when no task is named."""
    if name is not None:
        check_model_name(name)
    entries, problems, broken = listing(directory)
    broken = broken if name is None else {}
    if name is None and task is None and entries:
        task = _default_task(entries, set(broken))
    if task in broken:
        default, problem = broken[task]
        raise ModelNotFound(f"The default model of the {task} task, {default}, cannot be used: {problem} Name "
                            "another model, or ask an administrator to repair it or to make another the default.")
    return pick(entries, problems, name, task)


def _default_task(entries: list[ModelEntry], broken: set[str]) -> str:
    """Pneumonia, or the one task with a default; a task whose default is broken still has one."""
    with_default = sorted({e.task for e in entries if e.is_default} | broken) or sorted({e.task for e in entries})
    if DEFAULT_TASK in with_default:
        return DEFAULT_TASK
    if len(with_default) == 1:
        return with_default[0]
    tasks = ", ".join(f"{t} ({task_title(t)})" for t in with_default)
    raise ModelNotFound(f"Several tasks have a default model: {tasks}; name the task (predict --task NAME) or "
                        "the model.")


def pick(entries: list[ModelEntry], problems: list[str], name: str | None, task: str | None) -> ModelEntry:
    if name is not None and all(entry.name != name for entry in entries):
        broken = _problem_of(name, problems)
        if broken:  # it is there, but cannot be used: say why rather than that it does not exist
            raise ModelNotFound(f"Model '{name}' cannot be used: {broken}")
    if not entries:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise ModelNotFound(f"No usable model in the shipped or site models folders{detail}. Train one first.")
    if name is None:
        wanted = [e for e in entries if task is None or e.task == task]
        if not wanted:
            raise ModelNotFound(f"No model for task '{task}'. Tasks with models: "
                                f"{', '.join(sorted({e.task for e in entries}))}.")
        default = next((e for e in wanted if e.is_default), None)  # list_models puts the last promoted first
        if default is None:  # never a model that did not clear the floor, unasked; a damaged shipped registry: none
            why = next((p for p in problems if REGISTRY_FILE in p and SHIPPED in {e.tier for e in wanted}), None) or (
                f"none of its models ({', '.join(e.name for e in wanted)}) has cleared the promotion floor to be it.")
            raise ModelNotFound(f"The {task} task has no default model: {why} Name one to use it anyway (--model), or "
                                "make one the default (set-default).")
        return default
    for entry in entries:
        if entry.name == name:
            return entry
    raise ModelNotFound(f"No model named '{name}'. Available: {', '.join(e.name for e in entries)}.")


def set_default(name: str, directory: Path | None = None, held: bool = False) -> None:
    """Make ``name`` (of either tier) the default of its task in the site folder, and record the promotion.
    ``held``: the caller holds the folder's registry lock (core.store.promotion: the change and its audit line)."""
    name, directory = check_model_name(name), directory or site_dir()
    with nullcontext() if held else registry_lock(directory):
        entries, problems = list_models(directory)
        entry = pick(entries, problems, name, None)
        if entry.tier == SHIPPED and len(tiers(directory)) == 2 and (directory / f"{name}.json").exists():
            raise CheckpointError(f"The site folder holds a model of its own named {name}, hidden by the shipped "
                                  f"one of that name; move the site's {name}.json and .pt away first.")
        _promote(entry, entries, directory)


def ensure_default(name: str, directory: Path | None = None, held: bool = False) -> None:
    """Make ``name`` its task's default only when the task has none yet in either tier (its first model)."""
    name, directory = check_model_name(name), directory or site_dir()
    with nullcontext() if held else registry_lock(directory):  # check and write under one lock: no race
        entries, problems, broken = listing(directory)
        entry = pick(entries, problems, name, None)
        if not any(e.is_default and e.task == entry.task for e in entries) and entry.task not in broken:
            _promote(entry, entries, directory)


def _promote(entry: ModelEntry, entries: list[ModelEntry], directory: Path) -> None:
    registry = read_registry(directory)
    previous = next((e.name for e in entries if e.is_default and e.task == entry.task), None)
    promotion = Promotion(task=entry.task, name=entry.name, previous=previous, at=clock.iso())
    kept = _pointers(registry, {e.name: e.task for e in entries})  # an old registry's one default is kept, per task
    updated = registry.model_copy(update={"task_defaults": {**kept, entry.task: entry.name},
                                          "promotions": [*registry.promotions, promotion]})
    try:
        manifest.write_signed(directory / REGISTRY_FILE, json_bytes(updated.to_json()))
    except OSError as exc:  # a full disk, a read-only folder: the default stays as it was
        raise CheckpointError(f"{REGISTRY_FILE} could not be written ({exc.strerror or type(exc).__name__}); "
                              f"the default is unchanged.") from exc
