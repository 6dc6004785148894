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
    from core.evaluation.folder import read_folder, report_line
    from core.evaluation.overlap import overlap_notes
    from core.models.device import place_model, resolve_device
    from core.store.checkpoints import load_checkpoint
    from core.store.class_default import find_default_for_classes
    from core.store.registry import find_model

    ensure_writable()  # an evaluation is recorded: refused before minutes of work, not after them
    entry = find_model(args.model) if args.model else find_default_for_classes(folder.classes)
    others = [name for name in dict.fromkeys(args.against or ()) if name != entry.name]
    device = resolve_device(args.device)
    readings, cautions = {}, {}
    for name, json_path in [(entry.name, entry.json_path), *((n, find_model(n).json_path) for n in others)]:
        loaded = load_checkpoint(json_path)
        if others and loaded.record.operating_point.normal_index is None:
            raise CommandRefused(f"{name} has no normal class, so it cannot be compared abnormal against normal "
                                 "film by film; leave out --against, or compare models of a task with a normal class.")
        loaded.model = place_model(loaded.model, device)
        readings[name] = read_folder(loaded, args.dir, split=args.split)
        record_action("evaluate", cli_user(), model=name, folder=Path(args.dir).name,
                      **readings[name].report.summary())
        cautions[name] = overlap_notes(loaded.record, args.dir, args.split)  # a review: Compare said so, the CLI not
    report = readings[entry.name].report
    from core.evaluation.paired import paired_difference

    paired = {name: paired_difference(readings[entry.name].films, readings[name].films) for name in others}
    if args.json:
        against = [{"model": name, **(asdict(d) if d is not None else {"n": 0})} for name, d in paired.items()]
        print(json_line({**report.to_json(), "cautions": cautions[entry.name]} | ({"against": against} if others else {})))
        return 0
    for name in readings:
        report = readings[name].report
        print(report_line(name, report))
        lines = [f"skipped {one_line(f.file)}: {one_line(f.error)}" for f in report.skipped]  # a name starts no line
        print("".join(f"  {line}\n" for line in lines + [f"caution: {caution}" for caution in cautions[name]]), end="")
    for name, difference in paired.items():
        print(paired_line(entry.name, name, difference))
    return 0


def evaluation_folder(folder: str, split: str | None):
    """The films ``evaluate`` will read (as core.evaluation.folder lists them), listed without torch."""
    from core.films.folders import discover, evaluation_split

    return discover(folder, evaluation_split(folder, split), min_classes=1)


def paired_line(first: str, second: str, diff) -> str:
    """``a − b on 16 films both read: AUC +0.016 (0.000 to +0.094), sensitivity ..., specificity ...; right where
    the other was wrong 1 and 1 (McNemar p = 1); no difference shown on these films``."""
    from core.evaluation.paired import verdict

    if diff is None:
        return f"{first} − {second}: no film read by both"
    return (f"{first} − {second} on {diff.n} films both read: "
            f"AUC {signed_difference(diff.auc, diff.auc_ci, points=False)}, "
            f"sensitivity {signed_difference(diff.sensitivity, diff.sensitivity_ci, points=True)}, "
            f"specificity {signed_difference(diff.specificity, diff.specificity_ci, points=True)}; right where the "
            f"other was wrong {diff.first_only_right} and {diff.second_only_right} (McNemar p = {diff.p_value:.3g}); "
            f"{verdict(diff, first, second).replace('No difference', 'no difference')}")
