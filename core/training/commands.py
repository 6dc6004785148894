"""The command-line subcommands that change models: ``train``, ``calibrate``, ``ensemble``, ``set-default``,
``other-batch``, ``framing-check``, ``collection-check``, ``measured-elsewhere``.

core.cli parses the arguments and turns every TriageError raised here into its JSON error and exit code 1.
Heavy imports (torch, the training loop) happen inside each command, so ``python -m core models`` stays light.
"""
from __future__ import annotations

import sys
from pathlib import Path

from core import config
from core.errors import CommandRefused, DeviceOutOfMemory, PromotionRefused, TriageError
from core.stop_signals import held_through
from core.wording import json_line

def run_train(args) -> int:
    from tqdm import tqdm

    from core.store.records import TrainConfig
    from core.store.names import check_base_name
    from core.store.registry import checkpoint_dir, shipped_dir
    from core.training.events import EpochEvent, LoadingEvent, NoteEvent, StepEvent
    from core.training.resume import IF_SAVED
    from core.training.train import train

    try:
        request = TrainConfig(arch=args.arch, epochs=args.epochs, image_size=args.image_size,
                              augment=args.augment, hflip=args.hflip, wide_framing=args.wide_framing,
                              pretrained=args.pretrained,
                              batch_size=args.batch_size, lr=args.lr, max_films=args.max_films, seed=args.seed,
                              split_seed=args.split_seed, holdout=args.holdout, patience=args.patience,
                              target_sensitivity=args.target_sensitivity, device=args.device,
                              precision=args.precision, layout=args.layout).resolved()
    except ValueError as exc:  # the limits of core.config, the same the Retrain page and jobs apply
        raise CommandRefused(str(exc)) from exc
    asked = [flag for flag, on in (("--hflip", args.hflip), ("--wide-framing", args.wide_framing)) if on]
    if asked and not args.augment:  # a review: trained without them, yet recorded as if they had been used
        raise CommandRefused(f"{' and '.join(asked)} {'are' if len(asked) > 1 else 'is'} part of the augmentation, "
                             "which --no-augment turns off: leave out one or the other.")
    if args.name is not None:
        check_base_name(args.name)  # before minutes of training: `--name ../x` must never name a path
    _check_override(args)  # refused before anything is drawn: no progress bar for a run that never starts
    directory = shipped_dir() if args.shipped else checkpoint_dir()
    main_process = config.distributed_environment().is_main  # under torchrun only rank 0 reports
    bars: list[tqdm] = []  # drawn at the run's first news: a folder refused at once gets its error alone

    def the_bar() -> tqdm:
        if not bars:
            bars.append(tqdm(total=request.epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True,
                             disable=not main_process))
        return bars[0]

    def on_progress(event) -> None:
        bar = the_bar()
        if isinstance(event, StepEvent):
            bar.n = round(event.progress * request.epochs, 2)
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False)
            bar.refresh()
        elif isinstance(event, EpochEvent):
            bar.write(f"epoch {event.epoch}: train loss {event.train_loss:.4f}, "
                      f"validation AUC {event.val_auc:.4f}, {event.seconds:.0f} s", file=sys.stderr)
        elif isinstance(event, (NoteEvent, LoadingEvent)) and event.message:
            bar.write(event.message, file=sys.stderr)  # stdout holds the JSON answer alone

    try:
        record = train(args.dir, request, name=args.name, directory=directory, on_progress=on_progress, who=_who(),
                       resume=IF_SAVED if args.resume_if_saved else args.resume,
                       floor_first=args.set_default and not args.override_floor)
    except KeyboardInterrupt:
        raise CommandRefused("interrupted; if an epoch had finished, the same command with --resume continues after "
                             "the last one") from None
    except DeviceOutOfMemory as exc:  # its epochs saved so far are kept, as after Ctrl+C (a review)
        raise DeviceOutOfMemory(f"{exc} If an epoch had finished, the same command with --resume continues after "
                                "the last one once the memory is free (another --batch-size starts a new "
                                "run).", command_step=exc.command_step) from None  # its step kept (a re-read)
    finally:
        for bar in bars:
            bar.close()
    if record is None:  # another rank of a torchrun launch: rank 0 wrote the model and prints it
        return 0
    if args.set_default:  # here, not inside train(): a refusal must not leave torchrun's other ranks waiting
        _make_default(record.name, args.override_floor, directory)
    print(json_line({"name": record.name, "checkpoint": str(directory / f"{record.name}.pt"),
                      "validation": record.report.summary(), "seconds": record.training.seconds}))
    return 0


def run_calibrate(args) -> int:
    from core.training.calibrate import SITE, SITE_FOLDER, calibrate

    _check_override(args)
    if args.set_default and not args.override_floor:
        from core.store.promotion import check_before_calibrating
        from core.store.registry import find_model

        check_before_calibrating(find_model(args.model).record, args.target_sensitivity, args.site_folder is not None)
    record = calibrate(args.model, args.target_sensitivity, args.data, device=args.device, who=_who(),
                       site_folder=args.site_folder)
    if args.set_default:
        _make_default(record.name, args.override_floor)
    calibration = record.calibration
    site = record.other_reports.get(SITE) if calibration.source == SITE_FOLDER else None
    from core.store.registry import find_model  # a task without a default takes its first version over the floor

    print(json_line({"name": record.name, "from": calibration.from_model, "default": find_model(record.name).is_default,
                      "previous_threshold": calibration.previous_threshold, "source": calibration.source,
                      "validation": record.report.summary(),
                      # with its intervals: a site folder may hold as few films as the floor (a review)
                      **({"site": {"folder": calibration.folder, **site.summary_with_intervals()}} if site else {})}))
    return 0


def run_set_default(args) -> int:
    from core.store.registry import find_model

    _make_default(args.model, args.override_floor)
    entry = find_model(args.model)
    print(json_line({"default": entry.name, "task": entry.task, "override_floor": args.override_floor}))
    return 0


def _who() -> str:
    from core.admin.audit import cli_user

    return cli_user()


def _check_override(args) -> None:
    if args.override_floor and not args.set_default:
        raise CommandRefused("--override-floor only applies together with --set-default.")


def _make_default(name: str, override: bool, directory: Path | None = None) -> None:
    """Through the promotion floor; a new version whose promotion fails (refused, the audit log full, ...) stays
    registered, and the error says so and gives its ``name``."""
    from core.store.promotion import promote

    try:
        promote(name, who=_who(), override=override, directory=directory)
    except TriageError as exc:
        unchanged = "; the default is unchanged" if isinstance(exc, PromotionRefused) else ""
        exc.args, exc.details = (f"{exc} {name} stays registered{unchanged}.",), {**exc.details, "name": name}
        raise


def run_ensemble(args) -> int:
    from core.store.registry import checkpoint_dir, shipped_dir
    from core.training.ensemble import build_ensemble_version

    _check_override(args)
    directory = shipped_dir() if args.shipped else checkpoint_dir()
    result = build_ensemble_version(args.members, args.name, args.target_sensitivity, args.data, directory,
                                    device=args.device, who=_who())
    print("\n".join(result.lines()), file=sys.stderr, flush=True)  # for a person; the JSON line is for scripts
    if args.set_default:
        _make_default(result.record.name, args.override_floor, directory)
    print(json_line({**result.to_json(), "checkpoint": str(directory / f"{result.record.name}.pt")}))
    return 0


def run_other_batch(args) -> int:
    from core.store.reports import OUT_OF_BATCH
    from core.training.holdout_run import adopt_holdout_run

    record, stopped = held_through(lambda: adopt_holdout_run(args.model, args.run, who=_who()))
    print(json_line({"name": record.name, "holdout_run": record.holdout_run.to_json(),
                      "other_batch": record.other_reports[OUT_OF_BATCH].summary_with_intervals()}), flush=True)
    if stopped:
        raise KeyboardInterrupt
    return 0


def run_framing_check(args) -> int:
    from core.training.late_checks import add_framing_report
    from core.training.other_reports import TIGHTER_FRAMING

    return _late_check(args, add_framing_report, (TIGHTER_FRAMING,))


def run_collection_check(args) -> int:
    from core.training.late_checks import add_collection_report
    from core.training.other_reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED

    return _late_check(args, add_collection_report, (OTHER_COLLECTION, OTHER_COLLECTION_FRAMED))


def _late_check(args, add, keys: tuple[str, ...]) -> int:
    """Add a check's reports to each named version; one JSON line per version with the figures stored."""
    for name in args.models:
        record, stopped = held_through(lambda: add(name, args.data, device=args.device, who=_who()))
        print(json_line({"name": record.name, **{key: record.other_reports[key].summary_with_intervals()
                                                  for key in keys}}), flush=True)
        if stopped:
            raise KeyboardInterrupt
    return 0


def run_measured_elsewhere(args) -> int:
    from core.training.measured_elsewhere import record_measurements

    def stored(record) -> None:  # as each is stored: a later failure's error follows the versions already changed
        print(json_line({"name": record.name, "measured_elsewhere": [m.to_json() for m in record.measured_elsewhere]}),
              flush=True)

    recorded = record_measurements(Path(args.file), who=_who(), on_stored=stored)
    if recorded.skipped:  # entries for versions this install does not have (or has other weights of)
        print(json_line({"skipped": [{"model": model, "reason": reason} for model, reason in recorded.skipped]}))
    return 0
