"""Evaluating a registered model on a class-folder tree, through the same path the app uses."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import torch

from core.errors import DatasetError, TriageError, TryAgainLater
from core.evaluation.metrics import evaluate_probabilities
from core.evaluation.paired import FilmScores
from core.films.copies import decoded_signature, groups_of, repeats_in_detail, stacked
from core.films.read import read_film_file, shown_name
from core.films.tensor import as_float, film_to_tensor
from core.models.device import inference_batch_size, model_device
from core.models.inference import probabilities
from core.serving.film_checks import REVERSED_LEFT_OUT, FilmChecks
from core.serving.population import ModelPopulation
from core.store.checkpoints import LoadedModel
from core.store.reports import Report, SkippedFilm
from core.films.folders import FilmSet, discover, evaluation_split
from core.tasks import canonical_class
from core.wording import threshold_value, with_interval


class _Decoded(NamedTuple):
    path: Path
    tensor: torch.Tensor  # the model's input, uint8
    feature_input: torch.Tensor | None  # the learned film checks' (core.serving.film_checks), when they run
    digest: str  # the SHA-256 of its bytes: which files are one film
    label: int = -1
    why: str | None = None  # why Triage would not triage it
    atypical: bool = False  # unlike the films the model learnt from: its population check warns, as Triage does
    signature: tuple | None = None  # which films are one film at another size or contrast (core.films.copies)


@dataclass(frozen=True)
class FolderReading:
    report: Report
    films: FilmScores | None  # film by film, for a paired comparison (core.evaluation.paired); None: no normal class
    atypical: int = 0  # films scored that the model's population check warns on (Triage keeps their priority)
    population: str | None = None  # the population it learnt from, in words; None: the version has no check
    unscreened: bool = False  # the chest-film check could not be read: image statistics alone left films out

    def cautions(self, who: str | None = None) -> list[str]:
        """What the figures owe to films unlike those the model (``who``: the models) learnt from (a browser review:
        adult films in a paediatric model's folder lowered its specificity without a word, while Triage warns on
        each), and to a chest-film check that could not run (a re-read: only the server log said so)."""
        said = [] if not self.atypical else [
            f"{self.atypical} of the {self.report.n} films scored are unlike the films {who or self.report.model} "
            f"learnt from ({self.population}): Triage warns on such films and keeps their priority, and the figures "
            "here may not hold for them."]
        return said + (["The chest-film check could not be loaded (the server log says why), so images that are not "
                        "chest films may be counted in these figures."] if self.unscreened else [])


def evaluate_folder(loaded: LoadedModel, folder: str | Path, batch_size: int | None = None,
                    on_progress: Callable[[int, int], None] | None = None, workers: int = 2,
                    split: str | None = None) -> Report:
    """Metrics of ``loaded`` on every film under ``folder/CLASS/`` (:func:`read_folder`'s report)."""
    return read_folder(loaded, folder, batch_size, on_progress, workers, split).report


def read_folder(loaded: LoadedModel, folder: str | Path, batch_size: int | None = None,
                on_progress: Callable[[int, int], None] | None = None, workers: int = 2,
                split: str | None = None) -> FolderReading:
    """Metrics of ``loaded`` on every film under ``folder/CLASS/``, and its reading film by film. Films that cannot
    be read, and films Triage would leave untriaged (its film checks, core.serving.film_checks), are listed and
    left out, not fatal (a review: a blank 7000x7000 PNG and a CT in a PNEUMONIA folder were scored as routine
    misses, and sensitivity fell from 1.000 to 0.929 without a word); the films its population check warns on are
    counted (:attr:`FolderReading.atypical`).

    A folder with split folders (``train/``, ``val/``, ``test/``) is read at ``split``, by default ``test/``:
    evaluating on training films would say nothing. Class folders may be any subset of the model's classes,
    in any spelling of the alias table (core.tasks). Runs where ``loaded.model`` is (core.models.device), in
    fp32 like the operating point; films are decoded by ``workers`` threads while the model works on the
    batch before.
    """
    split = evaluation_split(folder, split)
    films = discover(folder, split, min_classes=1)
    lookup = check_classes(loaded.name, loaded.classes, films.classes, folder)
    mapping = np.array([lookup[c] for c in films.classes])
    batch_size = batch_size or inference_batch_size(model_device(loaded.model))
    labels, probs, skipped, pending, keys, digests, signatures = [], [], [], [], [], [], []
    checks = FilmChecks(population=ModelPopulation.of(loaded))  # as the app reads films
    atypical: list[str] = []

    def flush() -> None:
        to_check = [i for i, item in enumerate(pending) if item.feature_input is not None]
        if to_check:  # the film checks' features, one batch
            verdicts = checks.learned([None] * len(to_check), [pending[i].feature_input for i in to_check])
            for i, verdict in zip(to_check, verdicts):
                pending[i] = pending[i]._replace(why=verdict.why, atypical=verdict.population_warning is not None)
        skipped.extend(SkippedFilm(file=str(item.path), error=left_out(item.path, item.why))
                       for item in pending if item.why)
        kept = [item for item in pending if not item.why]
        if kept:
            probs.append(probabilities(loaded.model, as_float(torch.stack([item.tensor for item in kept]))))
            labels.extend(item.label for item in kept)
            keys.extend(item.path.as_posix() for item in kept)
            digests.extend(item.digest for item in kept)
            signatures.extend(item.signature for item in kept)
            atypical.extend(item.path.as_posix() for item in kept if item.atypical)
        pending.clear()

    def decode(path: Path) -> _Decoded | SkippedFilm:
        try:
            film, digest = read_film_file(path)
        except TryAgainLater:  # says nothing about the film: the whole evaluation is to be tried again
            raise
        except TriageError as exc:
            return SkippedFilm(file=str(path), error=str(exc))
        why = checks.in_a_folder(film)
        if why:
            return SkippedFilm(file=str(path), error=left_out(path, why))
        tensor = film_to_tensor(film, loaded.image_size)
        check = checks.feature_input(film, tensor, loaded.image_size) if checks.needs_features else None
        return _Decoded(path, tensor, check, digest, signature=decoded_signature(film))

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        decoded = _in_order(pool, decode, films.paths, ahead=workers + 2 * batch_size)
        for done, (path, label, result) in enumerate(zip(films.paths, films.labels, decoded), 1):
            if isinstance(result, SkippedFilm):
                skipped.append(result)
            else:
                pending.append(result._replace(label=int(mapping[label])))
            if len(pending) == batch_size:
                flush()
            if on_progress:
                on_progress(done, len(films))  # may raise to stop: pending decodes are dropped below
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    flush()
    kept, copies = _one_of_each(keys, labels, digests)
    kept, near = _one_film_each(keys, labels, signatures, kept)
    order = {str(path): i for i, path in enumerate(films.paths)}  # the folder's order: the chest-film check's
    skipped.sort(key=lambda film: order.get(film.file, -1))  # refusals come a batch late
    skipped += copies + near + [SkippedFilm(file=str(path), error=f"{shown_name(path.name)} is a link leading "
                                            "outside the data roots, which are never read.")
                                for path in films.links_out]
    keys, labels = [keys[i] for i in kept], [labels[i] for i in kept]
    probs = [np.concatenate(probs)[kept]] if kept else []
    if not labels:  # with why, as a folder with some readable films lists its others (a CLI review)
        # each names its film; by its class folder too, as two folders may hold the same name (a CLI review)
        why = "; ".join(f"{shown_name(Path(film.file).parent.name)}: {film.error.rstrip('.')}" for film in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise DatasetError(f"No film in {folder} can be scored: {why}{more}." if skipped else f"No film in {folder}.")
    labels, probs, point = np.asarray(labels), np.concatenate(probs).astype(np.float64), loaded.operating_point
    report = evaluate_probabilities(labels, probs, loaded.classes, point,
                                    split=f"folder {Path(folder) / split if split else folder}")
    films_read = None
    if point.normal_index is not None:
        scores = point.abnormal_scores(probs)
        films_read = FilmScores(keys=tuple(keys), positive=tuple((labels != point.normal_index).tolist()),
                                scores=tuple(scores.tolist()), called=tuple((scores >= point.threshold).tolist()))
    counted = set(keys)  # less the copies left out
    population = checks.population if not checks.features_missing else None
    return FolderReading(report.model_copy(update={"model": loaded.name, "skipped": skipped}), films_read,
                         sum(key in counted for key in atypical), population.check.population if population else None,
                         checks.unscreened)


def left_out(path: Path, why: str) -> str:
    """A film's line among the skipped: its name, that it is out of the figures, and why."""
    if why == REVERSED_LEFT_OUT:  # Triage may still call it urgent
        return f"{shown_name(path.name)} is left out of the figures: {why}"
    return f"{shown_name(path.name)} would not be triaged, so it is left out of the figures: {why}"


def _one_of_each(keys: list[str], labels: list[int], digests: list[str]) -> tuple[list[int], list[SkippedFilm]]:
    """(indices of the films to count, the copies left out): of files that are one file byte for byte, the first
    is counted where all are filed under one class, none where they are filed under two (its label is in doubt).
    A review: a copy of a normal film filed under PNEUMONIA was counted as a miss, and sensitivity fell without a
    word (a link to one film from two class folders is refused when the folder is listed)."""
    firsts: dict[str, dict[int, int]] = {}  # digest -> class -> its first film of that content
    for i, (digest, label) in enumerate(zip(digests, labels)):
        firsts.setdefault(digest, {}).setdefault(label, i)
    kept, copies = [], []
    for i, digest in enumerate(digests):
        name, first = shown_name(Path(keys[i]).name), firsts[digest][labels[i]]
        other = next((j for label, j in firsts[digest].items() if label != labels[i]), None)
        if other is not None:
            copies.append(SkippedFilm(file=keys[i], error=f"{name} is the same file, byte for byte, as "
                                      f"{_named(keys[other])}, filed under another class, so neither is counted: "
                                      "correct the label."))
        elif first != i:
            copies.append(SkippedFilm(file=keys[i], error=f"{name} is a copy, byte for byte, of {_named(keys[first])}, "
                                      "so it is counted once."))
        else:
            kept.append(i)
    return kept, copies


def _one_film_each(keys: list[str], labels: list[int], signatures: list, kept: list[int]
                   ) -> tuple[list[int], list[SkippedFilm]]:
    """(of ``kept``, the films to count; the films left out): of films that are one film at another size, contrast
    or crop (the split's rule, confirmed in detail: core.films.copies), the first is counted where all are filed
    under one class, none where they are filed under two. A review: the adult DICOM exported twice (uncompressed
    and JPEG 2000) was counted twice, as were the COVID set's copies of its own films."""
    films = FilmSet(tuple(Path(keys[i]) for i in kept), np.zeros(len(kept), dtype=np.int64), ("film",))
    pairs = repeats_in_detail(films, stacked([signatures[i] for i in kept]))
    if not len(pairs):
        return kept, []
    # by group, as the split joins them (a re-read: pair by pair, A~B~C across two classes still counted A)
    out: dict[int, str] = {}
    for members in groups_of(len(kept), pairs):
        first, others = kept[members[0]], [kept[m] for m in members[1:]]
        if len({labels[kept[m]] for m in members}) > 1:
            for one in (first, *others):
                out[one] = (f"{shown_name(Path(keys[one]).name)} is the same film as "
                            f"{_named(keys[others[0] if one == first else first])} at another size, contrast or crop, "
                            "and its copies are filed under two classes, so none is counted: correct the label.")
        else:
            for one in others:
                out[one] = (f"{shown_name(Path(keys[one]).name)} is the same film as {_named(keys[first])} at another "
                            "size, contrast or crop, so it is counted once.")
    return [i for i in kept if i not in out], [SkippedFilm(file=keys[i], error=out[i]) for i in sorted(out)]


def _named(key: str) -> str:
    """A film by its class folder and name, as messages give it."""
    path = Path(key)
    return f"{shown_name(path.parent.name)}/{shown_name(path.name)}"


def check_classes(name: str, classes, film_classes, folder) -> dict[str, int]:
    """Each of the model's classes by its canonical name (older models' own spellings too), once every class folder
    of ``folder`` is one of them; DatasetError naming those that are not."""
    lookup = {canonical_class(c) or c: i for i, c in enumerate(classes)}
    unknown = [c for c in film_classes if c not in lookup]
    if unknown:
        raise DatasetError(
            f"{folder} has class folder(s) of {', '.join(unknown)}, which model {name} does not know "
            f"(it knows {', '.join(classes)}); choose a model of that task or move those folders out."
        )
    return lookup


def _in_order(pool: ThreadPoolExecutor, work: Callable, items, ahead: int) -> Iterator:
    """``work(item)`` for each item, in order, never more than ``ahead`` of them started and not yet taken: a
    review found ``pool.map`` decoding a whole folder ahead of the model (100,000 films: about 5 GB held)."""
    started: deque = deque()
    for item in items:
        started.append(pool.submit(work, item))
        if len(started) >= ahead:
            yield started.popleft().result()
    while started:
        yield started.popleft().result()


def report_line(name: str, report: Report) -> str:
    """``evaluate``'s one line for a person: each figure that exists, with its 95 % interval, never rounded up to
    1 or down to 0, and why one is missing (a review: on a folder of one kind every figure after the AUC was
    dropped without a word, a multi-class AUC was not called macro, and 0.9997 printed as 1.000)."""
    def figure(label: str, value: float | None, interval, missing: str) -> str:
        absent = value is None or value != value
        return f"{label} " + (f"— ({missing})" if absent else with_interval(value, interval, as_percent=False))

    counts = ", ".join(f"{k} {c}" for c, k in zip(report.classes, report.class_counts))
    parts = [figure("accuracy", report.accuracy, report.accuracy_ci, ""),
             figure("AUC (macro, one-vs-rest)" if len(report.classes) > 2 else "AUC", report.auc, report.auc_ci,
                    "needs films of every class")]
    if report.operating_point.normal_index is not None:
        parts += [figure("sensitivity", report.sensitivity, report.sensitivity_ci, "no abnormal films here"),
                  figure("specificity", report.specificity, report.specificity_ci, "no normal films here")
                  + f" at threshold {threshold_value(report.threshold)}"]
    return f"{name} on {report.n} films ({counts}): " + ", ".join(parts)
