"""``python -m core other-batch NAME --from RUN``: how far the recipe of a version trained on every film travels.

A version trained with ``--holdout`` measures itself on the batch it never saw (core.training.other_reports).
One trained on every film cannot: that batch is in its training films. Issue 13 asks every model's card for the
figure anyway, from "the run that held the batch out", and for the card to say when the shipped weights are not
that run's. So RUN, a registered version of the **same recipe** trained with ``--holdout``, lends NAME its
other-batch report (read at RUN's own threshold, chosen by the same rule and target on RUN's own validation
films), and NAME records where it came from (``ModelRecord.holdout_run``). NAME's weights, threshold and
validation report are unchanged; a shipped version's checksum manifest is re-signed.

An ensemble lends and borrows the same way: NAME an ensemble whose members were trained on every film, RUN one
whose members held the batch out, member K of one a run of member K's recipe of the other (each member's recipe
and precision are stored in the ensemble's record), both read at their own operating points.

The same recipe means: every training setting equal (architecture, size, epochs, batch, learning rate, weight
decay, augmentation, ImageNet start as it resolves here, patience, seeds, validation fraction, subset), the same
precision and training folder, the same sensitivity target, and the same films in all (RUN's training,
validation and held-out films add up to NAME's training and validation films, class by class). Anything else
is refused with the differences named.
"""
from __future__ import annotations

from pathlib import Path

from core.admin.audit import ensure_writable, record_action
from core.errors import CommandRefused
from core.films.manifest import recorded_source
from core.store.descriptions import attach_holdout_run
from core.store.records import HoldoutRun, ModelRecord, TrainConfig, read_model_record
from core.store.registry import find_model
from core.store.reports import OUT_OF_BATCH

# TrainConfig fields that make a recipe (holdout, device, precision as asked and the sensitivity target are
# compared otherwise or not at all: the device changes no figure beyond float noise)
RECIPE = ("arch", "epochs", "image_size", "batch_size", "lr", "weight_decay", "augment", "hflip", "wide_framing",
          "pretrained", "val_fraction", "patience", "seed", "split_seed", "max_films")


def adopt_holdout_run(name: str, run_name: str, who: str = "cli") -> ModelRecord:
    """Give version ``name`` the other-batch report of ``run_name`` (same recipe, trained with a holdout) and
    the record of where it came from; returns ``name``'s record as stored. CommandRefused names what differs."""
    entry, run_entry = find_model(name), find_model(run_name)
    ensure_writable()
    record, run = read_model_record(entry.json_path), read_model_record(run_entry.json_path)
    _check_version(record)
    out_of_batch = _check_run(run)
    differences = recipe_differences(record, run, out_of_batch.class_counts)
    if differences:
        raise CommandRefused(f"{run.name} is not a run of {record.name}'s recipe: " + "; ".join(differences) + ".")
    training = run.training
    lent = HoldoutRun(
        name=run.name, rule=training.config.holdout, threshold=run.operating_point.threshold,
        target_sensitivity=run.operating_point.target_sensitivity,
        validation_auc=run.report.auc if run.report else None, validation_films=run.report.n if run.report else 0,
        epochs=len(training.history), best_epoch=training.best_epoch, seconds=training.seconds,
        device=training.device, precision=training.precision, created=run.created, members=len(run.members))
    def audit(stored: ModelRecord) -> None:  # with the figures, a stop held between (StoppedAfter after both)
        record_action("other-batch", who, model=stored.name, task=stored.task, run=run.name, rule=lent.rule,
                      threshold=lent.threshold, auc=out_of_batch.auc, sensitivity=out_of_batch.sensitivity,
                      specificity=out_of_batch.specificity, n=out_of_batch.n)

    return attach_holdout_run(entry.json_path, out_of_batch, lent, then=audit)  # re-signs a shipped version


def _check_version(record: ModelRecord) -> None:
    if record.training is None or record.data is None:
        raise CommandRefused(f"{record.name} has no training record, so its recipe is unknown.")
    if record.training.config.holdout:
        raise CommandRefused(f"{record.name} was trained with another batch held out "
                             f"({record.training.config.holdout}); its other-batch figures are its own.")
    if record.calibration is not None and record.calibration.source != "validation":
        raise CommandRefused(f"{record.name}'s threshold was chosen on a site's films, which a run of its recipe "
                             f"cannot repeat; measure {record.calibration.from_model} instead.")


def _check_run(run: ModelRecord):
    if run.training is None or run.data is None or not run.training.config.holdout:
        raise CommandRefused(f"{run.name} was not trained with another batch held out; train one with --holdout.")
    report = run.other_reports.get(OUT_OF_BATCH)
    if report is None:
        raise CommandRefused(f"{run.name} has no other-batch report.")
    if run.holdout_run is not None:
        raise CommandRefused(f"{run.name}'s own other-batch figures were lent by {run.holdout_run.name}; "
                             f"name that run instead.")
    if run.calibration is not None and run.calibration.source != "validation":  # its batch read at a site's threshold
        raise CommandRefused(f"{run.name}'s threshold was chosen on a site's films, not by the recipe's rule on its "
                             f"own validation films; name the run it was calibrated from "
                             f"({run.calibration.from_model}).")
    return report


def recipe_differences(record: ModelRecord, run: ModelRecord, held_out_counts) -> list[str]:
    """What keeps ``run`` (trained with a holdout, whose held-out batch has ``held_out_counts`` films per class)
    from being a run of ``record``'s recipe, in words; empty when it is one."""
    differences = _network_differences(record, run)
    if run.operating_point.target_sensitivity != record.operating_point.target_sensitivity:
        differences.append(f"sensitivity target {run.operating_point.target_sensitivity * 100:g}% "
                           f"(not {record.operating_point.target_sensitivity * 100:g}%)")
    if _folder(run.training.data_dir) != _folder(record.training.data_dir):
        differences.append("another training folder")
    if run.classes != record.classes:
        differences.append(f"classes {', '.join(run.classes)} (not {', '.join(record.classes)})")
    else:
        all_films = [a + b + c for a, b, c in zip(_counts(run, "train"), _counts(run, "validation"), held_out_counts)]
        version_films = [a + b for a, b in zip(_counts(record, "train"), _counts(record, "validation"))]
        if all_films != version_films:
            differences.append(f"{sum(all_films)} films in all (not {sum(version_films)})")
    return differences


def _network_differences(record: ModelRecord, run: ModelRecord) -> list[str]:
    """How the networks of ``run`` were trained otherwise than those of ``record``: one network's recipe and
    precision, or member by member for two ensembles."""
    if not record.members and not run.members:
        return _recipe_differences(record.training.config, record.training.precision,
                                   run.training.config, run.training.precision)
    if len(run.members) != len(record.members):
        return [f"{_networks(run)} (not {_networks(record)})"]
    unknown = [r.name for r in (record, run) if any(m.config is None or m.precision is None for m in r.members)]
    if unknown:
        return [f"{' and '.join(unknown)} do{'es' * (len(unknown) == 1)} not record each member's recipe "
                "(registered before ensembles stored them)"]
    return [f"member {k} {difference}" for k, (mine, theirs) in enumerate(zip(record.members, run.members), 1)
            for difference in _recipe_differences(mine.config, mine.precision, theirs.config, theirs.precision)]


def _networks(record: ModelRecord) -> str:
    return f"an ensemble of {len(record.members)}" if record.members else "a single network"


def _recipe_differences(mine: TrainConfig, my_precision: str, theirs: TrainConfig, their_precision: str) -> list[str]:
    mine, theirs = _as_run_here(mine), _as_run_here(theirs)
    differences = [f"{field} {getattr(theirs, field)} (not {getattr(mine, field)})" for field in RECIPE
                   if getattr(mine, field) != getattr(theirs, field)]
    if their_precision != my_precision:
        differences.append(f"precision {their_precision} (not {my_precision})")
    return differences


def _as_run_here(config: TrainConfig) -> TrainConfig:
    """The recipe with its defaults filled in as they resolve here; as stored when it no longer resolves. Its
    ImageNet start as stored: records say what happened when they trained, while resolving here turned it off
    wherever the weights file is missing, so on such a machine a from-scratch run passed for a fine-tune's recipe
    and lent it its figures (a review). The one shipped record that stored its config as asked rather than as
    resolved (pneumonia-resnet18-aug-v1) was corrected on 2026-12-06."""
    try:
        return config.resolved().model_copy(update={"pretrained": config.pretrained})
    except ValueError:
        return config


def _folder(data_dir: str) -> Path:
    """The training folder a record names, as every reader takes it (a relative one from the project root), so the
    comparison does not depend on the directory the command runs in."""
    return Path(recorded_source(data_dir)).expanduser().resolve()


def _counts(record: ModelRecord, part: str) -> list[int]:
    fingerprint = getattr(record.data, part)
    return [fingerprint.class_counts.get(name, 0) for name in record.classes]
