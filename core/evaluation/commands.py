"""The ``evaluate`` subcommand: one model's figures on a class-folder tree, and with ``--against`` its paired
differences from other models read on the same films (core.evaluation.paired), as Compare shows them.

core.cli parses the arguments and turns every TriageError raised here into its JSON error and exit code 1.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from core.errors import CommandRefused
from core.wording import json_line, one_line, signed_difference


def run_evaluate(args) -> int:
    folder = evaluation_folder(args.dir, args.split)  # a mistyped folder is refused before torch is imported

    from core.admin.audit import cli_user, ensure_writable, record_action
    from core.evaluation.folder import check_classes, read_folder, report_line
    from core.evaluation.overlap import overlap_notes
    from core.models.device import place_model, resolve_device
    from core.store.checkpoints import load_checkpoint
    from core.store.class_default import find_default_for_classes
    from core.store.registry import find_model

    ensure_writable()  # an evaluation is recorded: refused before minutes of work, not after them
    entry = find_model(args.model) if args.model else find_default_for_classes(folder.classes)
    entries = [entry, *_others(entry.name, args.against or (), find_model)]
    for each in entries:  # every model fits the folder before any of them reads a film or is recorded
        check_classes(each.name, each.record.classes, folder.classes, args.dir)
        if len(entries) > 1 and each.record.operating_point.normal_index is None:
            raise CommandRefused(f"{each.name} has no normal class, so it cannot be compared abnormal against normal "
                                 "film by film; leave out --against, or compare models of a task with a normal class.")
    device = resolve_device(args.device)
    readings, cautions = {}, {}
    for each in entries:
        loaded = load_checkpoint(each.json_path)
        loaded.model = place_model(loaded.model, device)
        readings[each.name] = read_folder(loaded, args.dir, split=args.split)
        record_action("evaluate", cli_user(), model=each.name, folder=Path(args.dir).name,
                      **readings[each.name].report.summary())
        cautions[each.name] = overlap_notes(loaded.record, args.dir, args.split)  # Compare said so, not the CLI
        cautions[each.name] += readings[each.name].cautions()  # films Triage would warn on, counted here
    from core.evaluation.paired import paired_difference, verdict

    paired = {each.name: paired_difference(readings[entry.name].films, readings[each.name].films)
              for each in entries[1:]}
    if args.json:
        print(json_line({**readings[entry.name].report.to_json(), "cautions": cautions[entry.name]} | (
            {"against": [_against_json(name, readings[name].report, cautions[name], difference,
                                       verdict(difference, entry.name, name) if difference else None)
                         for name, difference in paired.items()]} if args.against else {})))
        return 0
    for name, reading in readings.items():
        print(report_line(name, reading.report))
        lines = [f"skipped {one_line(f.file)}: {one_line(f.error)}" for f in reading.report.skipped]  # no name starts
        print("".join(f"  {line}\n" for line in lines + [f"caution: {caution}" for caution in cautions[name]]), end="")
    for name, difference in paired.items():
        print(paired_line(entry.name, name, difference))
    return 0


def _others(name: str, against, find_model) -> list:
    """The ``--against`` models, each once; the evaluated model itself is refused (compared with itself, it was
    dropped without a word and the JSON had no ``against``: a review)."""
    if name in against:
        raise CommandRefused(f"--against names {name}, the model evaluated; name other models to compare it with.")
    return [find_model(other) for other in dict.fromkeys(against)]


def evaluation_folder(folder: str, split: str | None):
    """The films ``evaluate`` will read (as core.evaluation.folder lists them), listed without torch."""
    from core.films.folders import discover, evaluation_split

    return discover(folder, evaluation_split(folder, split), min_classes=1)


def _against_json(name: str, report, cautions: list[str], difference, words: str | None) -> dict:
    """An ``--against`` model in the JSON: its own figures and cautions, as the text's line gives them, then the
    paired difference and its verdict (``n`` 0 and no difference when the two read no film in common)."""
    return {"model": name, "figures": report.summary_with_intervals(), "cautions": cautions,
            **(asdict(difference) if difference is not None else {"n": 0}), "verdict": words}


def paired_line(first: str, second: str, diff) -> str:
    """``a − b on 16 films both read: AUC +0.016 (−0.05 to +0.09), sensitivity ..., specificity ...; only a right 1,
    only b right 1 (McNemar p = 1); no difference shown ...``."""
    from core.evaluation.paired import verdict

    if diff is None:
        return f"{first} − {second}: no film read by both"
    return (f"{first} − {second} on {diff.n} films both read: "
            f"AUC {signed_difference(diff.auc, diff.auc_ci, points=False)}, "
            f"sensitivity {_share(diff.sensitivity, diff.sensitivity_ci, diff.sensitivity_p)}, "
            f"specificity {_share(diff.specificity, diff.specificity_ci, diff.specificity_p)}; "
            f"only {first} right on {diff.first_only_right} film(s), only {second} on {diff.second_only_right} "
            f"(McNemar p = {diff.p_value:.2g}, all films); "
            f"{verdict(diff, first, second).replace('No difference', 'no difference')}")


def _share(value, interval, p_value) -> str:
    """A paired share's difference with its interval and the exact test the verdict follows (a statistics review:
    an interval leaving out 0 beside "no difference" needs its p to be understood)."""
    exact = f" (McNemar p = {p_value:.2g})" if p_value is not None else ""
    return signed_difference(value, interval, points=True) + exact
