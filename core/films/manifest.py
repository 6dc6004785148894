"""Training sets assembled from several data-root folders by a small TOML manifest, never by copying films.

A manifest names its task (core.tasks) and which folders feed which class, each from a named source::

    task = "four-class"
    description = "why these folders, and any cap"
    [[folder]]
    root = "shared-data/covid-3class/train/Covid"   # a data-root label (core.films.roots), never a server path
    class = "COVID-19"                               # any spelling of the alias table
    source = "covid-3class"                          # figures per source are reported under this name
    max_films = 1500                                 # optional: a fixed, seeded subset of a large folder

Shipped manifests live in ``core/films/manifests`` and are named by their file's stem (``four-class``).
Wherever training takes a class-folder tree it takes a manifest's name or file too (:func:`training_films`).
Messages name a manifest by its name and folders by their labels, never by server paths.
"""
from __future__ import annotations

import errno
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from core.config import REPO_ROOT, settings
from core.errors import DatasetError, FolderNotAllowed
from core.films.folders import FilmSet, discover, films_under, refuse_unnamed, split_folders
from core.films.roots import data_roots, inside_roots, resolve_label
from core.store.base import read_regular_file
from core.tasks import TASKS, Task, canonical_class

MANIFESTS = Path(__file__).resolve().parent / "manifests"


class _FolderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    root: str
    class_name: str = Field(alias="class")
    source: str | None = None  # default: the label's first folder inside its root (``covid-3class``)
    max_films: PositiveInt | None = None


class _ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    description: str = ""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # draws the max_films subsets (NumPy takes no negative seed)
    folder: list[_FolderEntry] = Field(min_length=1)


@dataclass(frozen=True)
class ManifestFolder:
    label: str  # root-name/relative
    class_name: str  # canonical
    source: str
    max_films: int | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    task: Task
    description: str
    folders: tuple[ManifestFolder, ...]
    seed: int = 0


def shipped_manifests() -> dict[str, Path]:
    """The manifests shipped with the code, by name."""
    return {path.stem: path for path in sorted(MANIFESTS.glob("*.toml"))}


def find_manifest(source: str | Path) -> Path | None:
    """The manifest ``source`` names (a shipped manifest's name or a ``.toml`` file), or None when it names
    something else (a class-folder tree). An existing folder is always a folder, whatever its name."""
    text = str(source).strip()
    path = Path(text).expanduser()
    try:
        if path.is_dir():
            return None
    except OSError:  # a name too long to look up: not a folder; whoever reads it next says so
        pass
    shipped = shipped_manifests()
    if text in shipped:
        return shipped[text]
    if path.suffix.lower() == ".toml":
        try:  # Python 3.11 raises for a name too long, or a folder above it that cannot be searched
            is_file = path.is_file()
        except OSError as exc:
            raise DatasetError(f"Manifest {path.name} cannot be read ({exc.strerror or type(exc).__name__}).") from None
        if not is_file:
            raise DatasetError(f"Manifest {path.name} does not exist; the shipped manifests are "
                               f"{', '.join(shipped) or 'none'}.")
        return path
    return None


SHARED_DATA = ("..", "shared", "data")  # the shared films, as the shipped records name them from the project root


def recorded_source(source: str | Path) -> str:
    """A training source as a model's record stores it (``training.data_dir``, a report's split), made
    independent of the directory a program was started in: a relative folder or manifest file is read from the
    project root, where the shipped models were trained (``../shared/data/...``: the shared films, read where
    ``CXR_DATA`` puts them now, or a copy elsewhere passed for films they never saw); a shipped manifest's name and
    an absolute path stay as they are."""
    text = str(source).strip()
    if not text or Path(text).expanduser().is_absolute():
        return text
    if Path(text).parts[:3] == SHARED_DATA:
        return str(settings().data.joinpath(*Path(text).parts[3:]))
    from_root = REPO_ROOT / text
    if not from_root.is_dir() and text in shipped_manifests():
        return text
    return str(from_root)


MAX_MANIFEST_BYTES = 2**20  # a manifest lists a few folders: a file this size is not one


def _manifest_text(path: Path) -> str:
    """A manifest's text: a regular file only (a FIFO would wait for ever), no larger than any manifest is."""
    raw = read_regular_file(path, MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_MANIFEST_BYTES // 2**10} KiB, which no manifest is")
    return raw.decode("utf-8")


def load_manifest(path: str | Path) -> Manifest:
    """The manifest in ``path``, checked: a known task, known classes, every class of the task fed."""
    path = Path(path)
    name = path.stem
    try:
        parsed = _ManifestFile.model_validate(tomllib.loads(_manifest_text(path)))
    except OSError as exc:
        raise DatasetError(f"Manifest {name} cannot be read ({exc.strerror or 'unreadable'}).") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Manifest {name} is not valid TOML ({exc}).") from None
    except RecursionError:
        raise DatasetError(f"Manifest {name} is not a manifest: its values are nested too deeply.") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DatasetError(f"Manifest {name}: {where}: {first['msg']}. A manifest has task, description and "
                           "[[folder]] tables of root, class, source and optionally max_films.") from None
    except ValueError:  # Python's own limit on digits in an integer (4300), which tomllib does not convert
        raise DatasetError(f"Manifest {name} holds a number too long to be any setting.") from None
    task = TASKS.get(parsed.task)
    if task is None:
        raise DatasetError(f"Manifest {name} names task '{parsed.task}'; the tasks are {', '.join(TASKS)}.")
    folders = tuple(_folder(name, task, entry) for entry in parsed.folder)
    unfed = [c for c in task.classes if not any(f.class_name == c for f in folders)]
    if unfed:
        raise DatasetError(f"Manifest {name} gives no folder for class(es) {', '.join(unfed)} of task {task.name}; "
                           "training needs every class of its task.")
    return Manifest(name, task, parsed.description.strip(), folders, parsed.seed)


def _folder(name: str, task: Task, entry: _FolderEntry) -> ManifestFolder:
    label = entry.root.strip().strip("/")
    canonical = canonical_class(entry.class_name)
    if canonical not in task.classes:
        raise DatasetError(f"Manifest {name}: folder {label} is given class '{entry.class_name}', which is not a "
                           f"class of task {task.name} ({', '.join(task.classes)}).")
    parts = label.split("/")
    source = (entry.source or (parts[1] if len(parts) > 1 else parts[0])).strip()
    return ManifestFolder(label, canonical, source, entry.max_films)


def manifest_films(manifest: Manifest) -> FilmSet:
    """Every film the manifest's folders hold (or each folder's fixed subset), labelled in the task's
    classes, with its source."""
    paths: list[Path] = []
    labels: list[int] = []
    sources: list[str] = []
    for entry in manifest.folders:
        films = _folder_films(manifest, entry)
        paths += films
        labels += [manifest.task.classes.index(entry.class_name)] * len(films)
        sources += [entry.source] * len(films)
    if len(set(paths)) != len(paths):
        raise DatasetError(f"Manifest {manifest.name} reaches some films through two of its folders; each "
                           "folder may appear once.")
    return FilmSet(tuple(paths), np.asarray(labels, dtype=np.int64), manifest.task.classes, tuple(sources))


def _why_not(label: str) -> str:
    """Why a manifest's folder label does not resolve, in words an administrator can act on (root names only:
    whether a folder exists inside a root is not told, as for any typed folder)."""
    root = (label or "").strip().partition("/")[0]  # as resolve_label reads it
    known = [r.name for r in data_roots()]
    if root not in known:
        return (f"this server has no data root named {root} (it has {', '.join(known) or 'none'}). An administrator "
                "adds it to data-roots.toml in the configuration folder (README, Data roots).")
    return f"{root} has no such folder, or it leads outside the root. Check the manifest's folder names."


def _folder_films(manifest: Manifest, entry: ManifestFolder) -> list[Path]:
    try:
        folder = resolve_label(entry.label)
    except FolderNotAllowed:
        raise DatasetError(f"Manifest {manifest.name}: {entry.label} is not a folder inside a configured data "
                           f"root: {_why_not(entry.label)}") from None
    try:
        films = inside_roots(folder, films_under(folder))
    except RecursionError:  # Path.rglob recurses (Python 3.11)
        raise DatasetError(f"Manifest {manifest.name}: {entry.label} is nested too deeply to be read (1000 levels "
                           "or more).") from None
    if not films:
        raise DatasetError(f"Manifest {manifest.name}: {entry.label} holds no films (PNG, JPEG or DICOM).")
    if entry.max_films and len(films) > entry.max_films:
        # The subset depends on the manifest's seed and the folder's label only: the same films every time,
        # whatever order the folders are listed in.
        rng = np.random.default_rng([manifest.seed, zlib.crc32(entry.label.encode())])
        films = [films[i] for i in np.sort(rng.choice(len(films), entry.max_films, replace=False))]
    return films


def training_films(source: str | Path) -> tuple[FilmSet, FilmSet | None]:
    """What a training source holds: (the films to split into training and validation, the films that join
    validation only or None). A source is a shipped manifest's name, a manifest file, or a class-folder tree;
    a tree with split folders trains on ``train/``, and its ``val/`` (Kaggle's, too small alone) joins the
    validation side, never training. ``test/`` is never read here."""
    refuse_unnamed(source)
    manifest = find_manifest(source)
    if manifest is not None:
        return manifest_films(load_manifest(manifest)), None
    root = Path(source).expanduser()
    films = discover(root)
    if "val" not in split_folders(root):
        return films, None
    extra = discover(root, "val", min_classes=1)
    stray = [c for c in extra.classes if c not in films.classes]
    if stray:
        raise DatasetError(f"{root / 'val'} holds class(es) {', '.join(stray)} that {root / 'train'} does not; "
                           "training needs every class in train/.")
    return films, extra.in_classes(films.classes)
