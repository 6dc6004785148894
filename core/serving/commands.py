"""``python -m core predict FILE...``: triage films from the command line, one line (or JSON object) per film.

core.cli parses the arguments and turns a TriageError raised here into its JSON error and exit code 1. torch
and the model come only once at least one path names a file that can be opened: a mistyped path is answered
at once.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import CommandRefused, TriageError
from core.wording import json_line, one_line


def run_predict(args) -> int:
    from core.films.read import check_film_path

    unopenable = {}
    for file in args.files:
        try:
            check_film_path(file)
        except TriageError as exc:
            unopenable[file] = exc
    if all(file in unopenable for file in args.files):  # nothing to triage: said now, not after seconds of loading
        for file, exc in unopenable.items():
            _film_failed(args, file, exc)
        return 1

    name = _model_for_task(args.model, args.task)  # an unknown task, without torch (a review: after 1.7 s of it)
    from core.films.decode_pool import start_worker_early
    from core.films.read import read_film
    from core.models.device import resolve_device
    from core.serving.predict import Predictor

    resolve_device(args.device)  # an unavailable device is refused before the model loads
    start_worker_early(args.files)  # a DICOM's decoding worker starts while the model loads (none for PNG/JPEG)
    predictor = Predictor.from_registry(name, device=args.device)
    failures = 0
    for file in args.files:
        try:
            prediction = predictor.predict(read_film(Path(file)))
        except TriageError as exc:
            failures += 1
            _film_failed(args, file, exc)
            continue
        print(json_line({"file": file, **prediction.to_dict()}) if args.json else _describe(file, prediction),
              flush=True)
    return 1 if failures else 0


def _film_failed(args, file: str, exc: TriageError) -> None:
    said = exc.on_the_command_line()  # an out-of-memory film's own step too (--device cpu)
    text = f"{one_line(file)}: ERROR {one_line(said)}"  # a name's newline cannot start a line of its own
    print(json_line({"file": file, "error": said}) if args.json else text, flush=True)


def _describe(file: str, prediction) -> str:
    probs = ", ".join(f"{c} {p:.3f}" for c, p in prediction.probabilities.items())
    priority = f"{prediction.priority}, atypical film" if prediction.priority == "routine" and prediction.atypical \
        else prediction.priority  # as the worklist says it: no confident routine call
    text = (f"{one_line(file)}: {prediction.label} [{priority}] ({probs})" if prediction.priority else
            f"{one_line(file)}: not triaged (the model's output, not a reading: {probs})")  # no label: no call
    warnings = prediction.warnings + ([prediction.population_warning] if prediction.population_warning else [])
    return text + "".join(f"\n  warning: {one_line(w)}" for w in warnings)


def _model_for_task(model: str | None, task: str | None) -> str:
    """The model predict uses: the one named, else the default of ``task`` (core.store.registry.find_model)."""
    from core.store.registry import find_model

    entry = find_model(model, task=None if model else task)
    if model and task and entry.task != task:
        raise CommandRefused(f"Model {entry.name} is of task {entry.task}, not {task}; name one of them only.")
    return entry.name
