"""Command line: ``python -m core {predict,evaluate,train,calibrate,ensemble,set-default,fit-population,
other-batch,framing-check,collection-check,measured-elsewhere,models}``: tools script against it.

Every failure is a JSON object with an ``error`` message and exit code 1, never a traceback. ``predict`` reports
films it could not read one per line beside the others (a JSON object each with ``--json``) and exits 1.
"""
from __future__ import annotations

import argparse
import re
import sys

from core import config, limits
from core.errors import CommandRefused, TriageError
from core.films.folders import SPLITS, refuse_unknown_homes
from core.stop_signals import interrupt_on_stop_signals
from core.wording import json_line

class _Parser(argparse.ArgumentParser):
    # argparse takes "-1e-3" and "-inf" for options ("--lr: expected one argument", a CLI review): its pattern of a
    # negative number has no exponent. With this one the value reaches the command's own range check.
    NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER

    def error(self, message: str):  # argparse would print usage and exit 2
        _fail(f"{self.prog}: {message}")

    def print_help(self, file=None):  # argparse drops a write error: unbuffered, --help > /dev/full exited 0
        (file or sys.stdout).write(self.format_help())


def _fail(message: str, **details) -> None:
    """Print the error (and ``details``) as JSON and exit 1; under torchrun the line names the failing process."""
    try:
        world = config.distributed_environment()
    except TriageError:  # a malformed RANK or WORLD_SIZE: that error is reported by whoever read it first
        world = config.DistributedEnvironment()
    rank = {"rank": world.rank} if world.is_distributed else {}
    print(json_line({"error": message, **details, **rank}), flush=True)
    sys.exit(1)


def _add_device(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--device", choices=limits.DEVICES, default="auto",
                        help=f"where to {what}: auto (a CUDA GPU when present, else the CPU), cpu or cuda")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Chest X-ray triage: predict, evaluate, train, list models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("predict", help="triage one or more films")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="registered model name (default: the default model of --task)")
    p.add_argument("--task", help="the task whose default model reads the films (pneumonia, covid, four-class, ...; "
                   "default: pneumonia when it has a default model, else the one task that has one)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per film")
    _add_device(p, "run the model")
    p = sub.add_parser("evaluate", help="metrics on a class-folder tree DIR/CLASS/* (or DIR/SPLIT/CLASS/*)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--model", help="registered model name (default: the default model of the task whose classes "
                   "cover DIR's class folders, the smallest such task)")
    p.add_argument("--split", choices=SPLITS, help="which split of a DIR with train/, val/ and test/ folders "
                   "(default: test)")
    p.add_argument("--against", action="append", metavar="MODEL", help="another registered model to read on the "
                   "same films and compare with film by film (paired differences, McNemar's test); may be repeated")
    p.add_argument("--json", action="store_true")
    _add_device(p, "run the models")
    p = sub.add_parser("train", help="train and register a new model version")
    p.add_argument("dir", metavar="DIR", help="a class-folder tree (DIR/CLASS/*, or DIR/train/CLASS/* whose val/ "
                   "joins validation), a manifest file (.toml) or a shipped manifest's name (four-class)")
    p.add_argument("--arch", required=True)
    p.add_argument("--epochs", type=int, default=limits.DEFAULT_EPOCHS, help="at most this many (default %(default)s; "
                   "early stopping may end sooner)")
    p.add_argument("--image-size", type=int, help="input size in pixels (default: the architecture's own)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="training-only augmentation: small rotations, shifts, scale, brightness and contrast (on by "
                        "default)")
    p.add_argument("--hflip", action="store_true", help="also flip horizontally (moves the heart; off by default)")
    p.add_argument("--wide-framing", action="store_true", help="augmentation also varies the framing widely: scale "
                   "0.8-1.25, width against height up to 15 %%, shifts up to 8 %% (off by default)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="ignore local ImageNet weights")
    p.add_argument("--batch-size", type=int, default=limits.DEFAULT_BATCH_SIZE, help="films per step, over all "
                   "processes (default %(default)s)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 1e-3 from scratch, 3e-4 from ImageNet "
                   "weights)")
    p.add_argument("--max-films", type=int, help="train on a random subset of at least 20 films that keeps "
                   "each class's share of the folder (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=limits.DEFAULT_PATIENCE,
                   help="stop after this many epochs without a validation AUC gain (default %(default)s)")
    p.add_argument("--split-seed", type=int, help="seed of the validation split (default: --seed); ensemble members "
                   "share one")
    p.add_argument("--holdout", choices=limits.HOLDOUTS, help="keep another batch out of training and report "
                   "on it beside validation (kermany-batch: see core/training/holdout.py)")
    p.add_argument("--target-sensitivity", type=float, default=limits.DEFAULT_TARGET_SENSITIVITY,
                   help="the operating point reaches this sensitivity on validation (default %(default)s)")
    p.add_argument("--name", help="base name; a version suffix -vN is added")
    p.add_argument("--shipped", action="store_true",
                   help="write to the shipped checkpoints folder and its checksum manifest (make models only); "
                        "without it new versions go to the site models folder (CXR_MODELS)")
    p.add_argument("--set-default", action="store_true", help="make the new model the default")
    p.add_argument("--override-floor", action="store_true",
                   help="with --set-default: promote even below the promotion floor (recorded in the audit log)")
    _add_device(p, "train (one GPU per process under torchrun)")
    p.add_argument("--precision", choices=limits.PRECISIONS, default="auto",
                   help="training precision: auto (bf16 autocast where the hardware has it), bf16 or fp32; "
                        "validation and the threshold are always fp32")
    p.add_argument("--layout", choices=("auto", "contiguous"), default="auto", help="training's memory layout: auto "
                   "(channels_last for convolutional networks) or contiguous (as before 2026-11-30; make models)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the interrupted run of the same DIR and "
                        "settings from its last finished epoch (states are kept in runs/ beside the site models until "
                        "the run ships); when there is none, a JSON error and nothing is trained. Without it a run "
                        "starts afresh and replaces the saved state of the same settings at its first epoch")
    resume.add_argument("--resume-if-saved", action="store_true", help="as --resume when the run has a saved "
                        "state, else start afresh (scripts run again after an interruption: make models)")
    p = sub.add_parser("calibrate", help="new version of a model with a threshold for another sensitivity target")
    p.add_argument("model", metavar="NAME")
    p.add_argument("--target-sensitivity", type=float, required=True, help="e.g. 0.98 (on validation or site films)")
    p.add_argument("--data", metavar="DIR", help="the training folder, if it moved since training")
    p.add_argument("--site-folder", metavar="ROOT/FOLDER", help="choose the threshold on this site's labelled films: "
                   "one sub-folder per class, inside a data root (a label such as shared-data/films, or its path)")
    p.add_argument("--set-default", action="store_true", help="make the new version the default")
    p.add_argument("--override-floor", action="store_true",
                   help="with --set-default: promote even below the promotion floor (recorded in the audit log)")
    _add_device(p, "run the model on the validation films")
    p = sub.add_parser("set-default", help="make a registered version its task's default (promotion floor applies)")
    p.add_argument("model", metavar="NAME")
    p.add_argument("--override-floor", action="store_true", help="promote even below the promotion floor (audit log)")
    p = sub.add_parser("ensemble", help="register several models as one ensemble version (mean probabilities)")
    p.add_argument("members", nargs="+", metavar="NAME", help="registered models sharing one validation split; an "
                   "ensemble among them brings its members")
    p.add_argument("--name", required=True, help="base name; a version suffix -vN is added")
    p.add_argument("--target-sensitivity", type=float, default=limits.DEFAULT_TARGET_SENSITIVITY,
                   help="the operating point reaches this sensitivity on validation (default %(default)s)")
    p.add_argument("--data", metavar="DIR", help="the members' training folder, if it moved since training")
    p.add_argument("--shipped", action="store_true", help="write to the shipped folder and its manifest (make models)")
    p.add_argument("--set-default", action="store_true", help="make the ensemble the default")
    p.add_argument("--override-floor", action="store_true",
                   help="with --set-default: promote even below the promotion floor (recorded in the audit log)")
    _add_device(p, "run the models on the validation films")
    p = sub.add_parser("fit-population", help="fit a registered model's population check on its recorded "
                       "training films (administrators; versions trained before the check existed)")
    p.add_argument("models", nargs="+", metavar="NAME", help="registered versions (same films: features shared)")
    p.add_argument("--refit", action="store_true", help="replace the check of a version that has one (its file there)")
    p.add_argument("--data", metavar="DIR", help="the training folder or manifest, if it moved since training")
    p = sub.add_parser("other-batch", help="give a model trained on every film the other-batch figures of a run of "
                       "its recipe that held that batch out (administrators)")
    p.add_argument("model", metavar="NAME", help="the registered version, trained without --holdout (or an "
                   "ensemble of such versions)")
    p.add_argument("--from", dest="run", metavar="RUN", required=True,
                   help="a registered version of the same recipe trained with --holdout (for an ensemble: an "
                   "ensemble of runs of its members' recipes)")
    p = sub.add_parser("framing-check", help="add the tighter-framing report (the films shown 15 %% larger, a "
                       "synthetic shift) to versions trained before it existed (administrators)")
    p.add_argument("models", nargs="+", metavar="NAME", help="registered versions")
    p.add_argument("--data", metavar="DIR", help="the training folder or manifest, if it moved since training")
    _add_device(p, "run the models on the films")
    p = sub.add_parser("collection-check", help="add the other-collection report (Kermany-type films another dataset "
                       "collected, copies of training films left out) to versions trained before it existed "
                       "(administrators)")
    p.add_argument("models", nargs="+", metavar="NAME", help="registered versions of a task with NORMAL and PNEUMONIA")
    p.add_argument("--data", metavar="DIR", help="the training folder or manifest, if it moved since training")
    _add_device(p, "run the models on the films")
    p = sub.add_parser("measured-elsewhere", help="record figures others measured on films not held here (e.g. the "
                       "project's official-test figures) on the versions they describe (administrators)")
    p.add_argument("file", metavar="FILE", help="JSON: films, measured_by, class_counts and, per version, model, "
                   "weights_sha256 and its figures (README)")
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a file name that is not valid UTF-8 prints escaped, never crashes
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    if isinstance(getattr(args, "models", None), list):  # a version named twice is checked once, not twice
        args.models = list(dict.fromkeys(args.models))
    from core.evaluation.commands import run_evaluate
    from core.serving.commands import run_predict
    from core.training import commands  # the commands that change models

    restore_signals = interrupt_on_stop_signals()  # SIGTERM and SIGHUP answer as Ctrl+C does
    try:
        _refuse_early(args)
        run = {"predict": run_predict, "evaluate": run_evaluate, "models": _models, "fit-population": _fit_population,
               "train": commands.run_train, "calibrate": commands.run_calibrate, "ensemble": commands.run_ensemble,
               "set-default": commands.run_set_default, "other-batch": commands.run_other_batch,
               "framing-check": commands.run_framing_check, "collection-check": commands.run_collection_check,
               "measured-elsewhere": commands.run_measured_elsewhere}
        return run[args.command](args)
    except TriageError as exc:
        _fail(exc.on_the_command_line(), **exc.details)
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:  # noqa: BLE001 - the process edge: a failure nobody foresaw still answers in JSON
        said = f": {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else ""  # other text may name paths
        _fail(f"{args.command} stopped with an unexpected error ({type(exc).__name__}{said}). This is a fault in "
              "the program, not in what you asked; please report it with the command you ran.")
    finally:
        restore_signals()
    return 1


# The arguments that name registered models, per command.
_MODEL_ARGUMENTS = {"predict": ("model",), "evaluate": ("model", "against"), "calibrate": ("model",),
                    "set-default": ("model",), "other-batch": ("model", "run"), "ensemble": ("members",),
                    "fit-population": ("models",), "framing-check": ("models",), "collection-check": ("models",)}


_PATH_ARGUMENTS = {"files": "file name", "file": "file name", "data": "--data folder", "site_folder": "--site-folder"}
# (an empty DIR is refused in the dataset's words, core.films.folders.refuse_unnamed)


def _refuse_early(args) -> None:
    """What can be refused before seconds of torch imports and model loading, in the command's own words: a ``~user``
    path of an unknown user, ``--device cuda`` without a GPU (the one device choice that can fail; it needs torch
    anyway), then every model name that is not registered (core.store.registry.find_model)."""
    from core.store.registry import find_model

    refuse_unknown_homes(vars(args).values())
    for argument, what in _PATH_ARGUMENTS.items():  # "" (an unset shell variable) read as "." was "the file is a
        value = getattr(args, argument, None)  # folder" (a CLI review)
        if any(not str(v).strip() for v in ([value] if isinstance(value, str) else value or ())):
            raise CommandRefused(f"An empty {what} was given (an unset shell variable?): name the one meant.")
    if getattr(args, "device", None) == "cuda":
        from core.models.device import resolve_device

        resolve_device(args.device)
    for argument in _MODEL_ARGUMENTS.get(args.command, ()):
        value = getattr(args, argument, None)
        for name in [value] if isinstance(value, str) else value or ():
            find_model(name)


def _fit_population(args) -> int:
    from core.admin.audit import cli_user
    from core.training.fit_population import fit_for_registered

    for record in fit_for_registered(args.models, args.data, who=cli_user(), refit=args.refit):
        print(json_line({"name": record.name, "population_check": record.population_check.to_json()}))
    return 0


def _models(args) -> int:
    from core.store.registry import list_models
    from core.tasks import task_title
    from core.evaluation.site_range import site_range_json
    from core.store.reports import shown_reports

    entries, problems = list_models()
    rows = [{"name": e.name, "tier": e.tier, "task": e.task, "task_title": task_title(e.task), "arch": e.arch,
             "classes": list(e.classes), "default": e.is_default, "is_default": e.is_default,  # of its task
             "image_size": e.record.image_size,
             "metrics": e.record.report.summary_with_intervals() if e.record.report else _NO_METRICS,
             "other_metrics": {key: r.summary_with_intervals()  # beside validation: another batch, a site's films
                               for key, r in shown_reports(e.record.other_reports).items()},  # withdrawn left out
             # low and high of AUC, sensitivity and specificity over the other collection's two readings
             "site_range": site_range_json(e.record.other_reports),
             # set when the other-batch figures are another run's of the same recipe (python -m core other-batch)
             "holdout_run": e.record.holdout_run.to_json() if e.record.holdout_run else None,
             # figures others measured on films not held here (python -m core measured-elsewhere)
             "measured_elsewhere": [m.to_json() for m in e.record.measured_elsewhere],
             "parameters": e.record.parameters, "created": e.record.created} for e in entries]
    if args.json:
        print(json_line({"models": rows, "problems": problems}))
        return 0
    for entry in entries:
        report = entry.record.report  # none, no AUC or NaN: a dash, not "0.000"; 4 decimals: 0.99967 is not 1.000
        auc, accuracy = (f"{v:.4f}" if v is not None and v == v else "—" for v in (report and report.auc,
                                                                                   report and report.accuracy))
        print(f"{'*' if entry.is_default else ' '} {entry.name:40s} {entry.tier:8s} {entry.arch:18s} "
              f"val AUC {auc} acc {accuracy}")
    for problem in problems:
        print(f"! {problem}")
    return 0


_NO_METRICS = dict.fromkeys(("n", "auc", "accuracy", "sensitivity", "specificity", "threshold", "auc_ci",
                              "sensitivity_ci", "specificity_ci", "class_counts", "split"))
