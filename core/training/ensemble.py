"""Registering an ensemble of registered models as one new version (#13): ``python -m core ensemble``.

The members must have been validated on the very same films (the same validation fingerprint: train them with
one ``--split-seed`` on one folder) and kept the same batch out (``--holdout``), so the ensemble can be judged
on films none of its members trained on. A registered ensemble named as a member brings its own members (one more
seed folded into a shipped ensemble: ``ensemble ENSEMBLE NEW``); a network named twice is refused. Its operating
point is chosen by the usual rule on that validation split, from the averaged probabilities; its reports (validation, out-of-batch) are computed by the
ensemble exactly as it is stored and served (core.models.ensemble). Each member's out-of-batch figures are
set beside the ensemble's, so a person sees whether it beats its best member before making it a default.
It ships like any version (core.training.shipping): the promotion floor and the audit log apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from core import limits
from core.admin.audit import ensure_writable, record_action
from core.errors import EnsembleRefused
from core.films.folders import FilmSet
from core.films.manifest import recorded_source
from core.films.tensor import load_tensors
from core.models.catalog import ENSEMBLE
from core.models.device import place_model, resolve_device, to_device
from core.models.ensemble import Ensemble, MemberSpec
from core.models.features import GaussianScore
from core.store.checkpoints import LoadedModel, load_checkpoint, network_digest
from core.store.names import check_base_name
from core.store.promotion import promote
from core.store.records import (DataRecord, InputSpec, Member, ModelArgs, ModelRecord, PopulationCheck, TrainConfig,
                                TrainingRecord)
from core.store.registry import checkpoint_dir, find_model, shipped_dir
from core.store.writable import ensure_models_writable
from core.store.reports import Report
from core.training.calibrate import recorded_validation_split
from core.training.data import fingerprint
from core.training.holdout import holdout_rule
from core.training.other_reports import OUT_OF_BATCH, other_reports, report_on
from core.training.population import try_fit_population_check
from core.training.shipping import ship_version
from core.training.train import split_films, validate_for_shipping
from core.wording import and_list, fixed, interval_text


@dataclass(frozen=True)
class Standing:
    """One model's figures in the comparison: validation, and the out-of-batch check when there is one."""

    name: str
    target_sensitivity: float | None
    validation: Report | None
    out_of_batch: Report | None

    def to_json(self) -> dict:
        return {"name": self.name, "target_sensitivity": self.target_sensitivity,
                "validation": self.validation.summary() if self.validation else None,
                "out_of_batch": self.out_of_batch.summary_with_intervals() if self.out_of_batch else None}


@dataclass(frozen=True)
class EnsembleResult:
    record: ModelRecord  # the ensemble as stored
    members: tuple[Standing, ...]

    @property
    def ensemble(self) -> Standing:
        return _standing(self.record.name, self.record)

    @property
    def beats_best_member(self) -> bool | None:
        """Whether the ensemble's out-of-batch AUC is above every member's (None without that check)."""
        ours = self.ensemble.out_of_batch
        theirs = [m.out_of_batch.auc if m.out_of_batch else None for m in self.members]
        if ours is None or ours.auc is None or None in theirs:
            return None
        return ours.auc > max(theirs)

    def to_json(self) -> dict:
        """What the CLI prints: the new version, each member's and its own figures, and the verdict."""
        return {"name": self.record.name, "members": [m.to_json() for m in self.members],
                "ensemble": self.ensemble.to_json(), "beats_best_member": self.beats_best_member}

    def lines(self) -> list[str]:
        """The comparison as text, one model a line, the ensemble last."""
        rows = [f"{'model':44s} {'target':>6s} {'val AUC':>7s} {'out-of-batch AUC (95% CI)':>26s} "
                f"{'sens':>6s} {'spec':>6s}"]
        rows += [_line(standing) for standing in (*self.members, self.ensemble)]
        verdict = {True: "beats", False: "does NOT beat", None: "cannot be compared with"}[self.beats_best_member]
        rows.append(f"{self.record.name} {verdict} its best member on the out-of-batch check"
                    + ("" if self.beats_best_member is not None else " (no out-of-batch batch: train with --holdout)"))
        return rows


def build_ensemble_version(
    names: list[str], base_name: str, target_sensitivity: float = limits.DEFAULT_TARGET_SENSITIVITY,
    data_dir: str | Path | None = None, directory: Path | None = None, make_default: bool = False,
    device: str = "auto", who: str = "cli",
) -> EnsembleResult:
    """Register ``base_name-vN``: the registered models ``names`` averaged, with an operating point for
    ``target_sensitivity`` on their shared validation films (rebuilt from the first member's training record,
    from ``data_dir`` when the folder moved). Written to ``directory`` (default: the site folder) and the audit
    log as done by ``who``; ``make_default`` goes through the promotion floor."""
    check_base_name(base_name)  # before any work: a name must never name a path, and must take its version
    ensure_writable()  # and a version is registered only where that can be recorded
    directory, where = directory or checkpoint_dir(), resolve_device(device)
    ensure_models_writable(directory)
    loaded = _members(names, directory)
    first = loaded[0].record
    config = _config(first, target_sensitivity)
    val_set = recorded_validation_split(first, data_dir)
    networks = _networks(loaded)
    ensemble = place_model(Ensemble([net for net, _, _ in networks], [spec for _, spec, _ in networks]), where)
    x_val = to_device(load_tensors(val_set, ensemble.image_size), where)
    split = first.report.split if first.report else f"validation: {len(val_set)} films"
    point, report = validate_for_shipping(ensemble, x_val, val_set, config, split)
    data_dir = Path(data_dir or recorded_source(first.training.data_dir))
    films, train_set, _, held_out = split_films(data_dir, config, recorded=first.data)
    others = other_reports(ensemble, held_out, holdout_rule(config.holdout).description if held_out else "",
                           ensemble.image_size, point, config.seed, validation=val_set, training_folder=films)
    notes: list[str] = []  # why it has no population check, when it has none
    population, check = _population(loaded, train_set, val_set, data_dir, config.seed, notes)
    members = tuple(member for _, _, member in networks)
    record = _record(loaded, members, config, data_dir, point, report, others, ensemble, where.type, notes)
    standing = tuple(_member_standing(m, held_out, others, config.seed) for m in loaded)
    stored = ship_version(  # no audit entry, no version
        ensemble, record.model_copy(update={"population_check": check}), base_name, directory, who=who,
        population=population, after_save=lambda stored: record_action(
            "ensemble", who, model=stored.name, members=[m.name for m in loaded], task=stored.task,
            threshold=point.threshold, sensitivity=report.sensitivity, specificity=report.specificity, n=report.n,
            beats_best_member=EnsembleResult(stored, standing).beats_best_member))
    result = EnsembleResult(stored, standing)
    if make_default:  # PromotionRefused: the ensemble stays registered, not the default
        promote(stored.name, who=who, directory=directory)
    return result


def _members(names: list[str], directory: Path) -> list[LoadedModel]:
    """The named models, loaded and checked to form one ensemble (EnsembleRefused says why not)."""
    if len(names) < 2 or len(set(names)) != len(names):
        raise EnsembleRefused("An ensemble needs at least two different registered models; name each once.")
    # Members come from both tiers, even when the ensemble itself is shipped: it carries their weights.
    site = None if directory.resolve() == shipped_dir().resolve() else directory
    loaded = [load_checkpoint(find_model(name, site).json_path) for name in names]
    first = loaded[0].record
    for member in loaded:
        record = member.record
        if record.training is None or record.data is None:
            raise EnsembleRefused(f"{record.name} has no training record, so its validation films are unknown.")
        if record.classes != first.classes:
            raise EnsembleRefused(f"{record.name} has classes {', '.join(record.classes)} and {first.name} has "
                                  f"{', '.join(first.classes)}; members must share their classes.")
        if record.data.validation.sha256 != first.data.validation.sha256:
            raise EnsembleRefused(
                f"{record.name} and {first.name} were validated on different films, so no operating point can be "
                "chosen for both; train the members on one folder with the same --split-seed, --max-films and "
                "--holdout.")
        if record.training.config.holdout != first.training.config.holdout:
            raise EnsembleRefused(f"{record.name} and {first.name} held out different batches "
                                  "(--holdout); members must keep the same batch out of training.")
    return loaded


def _networks(loaded: list[LoadedModel]) -> list[tuple[nn.Module, MemberSpec, Member]]:
    """Every network of the new ensemble with its architecture and input size, and its record (its recipe and
    precision; the weights are filled in by save_checkpoint): a single model, or each member of a registered
    ensemble. EnsembleRefused when one network (the same stored weights) would be in it twice."""
    networks, seen = [], {}
    for member in loaded:
        record = member.record
        parts = (list(zip(member.model.members, member.model.specs,
                          [(m.config, m.precision) for m in record.members]))
                 if isinstance(member.model, Ensemble)
                 else [(member.model, _spec(record), (record.training.config, record.training.precision))])
        for net, spec, (config, precision) in parts:
            digest = network_digest(net)
            if digest in seen:
                where = {seen[digest], member.name}
                raise EnsembleRefused(
                    f"The same network would be in the ensemble twice ({' and '.join(sorted(where))} share one); "
                    "name each network once: an ensemble named as a member brings its own members.")
            seen[digest] = member.name
            networks.append((net, spec, Member(arch=spec.arch, image_size=spec.image_size, weights_file="",
                                               weights_sha256="", config=config, precision=precision)))
    return networks


def _population(loaded: list[LoadedModel], train_set: FilmSet, val_set: FilmSet, data_dir: Path, seed: int,
                notes: list[str]) -> tuple[GaussianScore | None, PopulationCheck | None]:
    """The population check, fitted on the ensemble's training films (its first member's: the members share their
    folder and validation split) when they are the films that member recorded; else a member's own check. Why
    fitting failed goes to ``notes`` when no member's check stands in."""
    failed: list[str] = []
    if fingerprint(train_set).sha256 == loaded[0].record.data.train.sha256:
        score, check = try_fit_population_check(train_set, val_set, data_dir, seed, lambda message: None, failed)
        if score is not None:
            return score, check
    member = next((m for m in loaded if m.population is not None), None)
    notes += [] if member else failed
    return (member.population, member.record.population_check) if member else (None, None)


def _config(first: ModelRecord, target_sensitivity: float) -> TrainConfig:
    try:
        stored = first.training.config  # resolved when it was trained: what it was trained with stays
        return stored.model_copy(update={"target_sensitivity": target_sensitivity}).resolved().model_copy(
            update={"pretrained": stored.pretrained})
    except ValueError as exc:  # the limits of core.limits, e.g. a sensitivity target out of range
        raise EnsembleRefused(str(exc)) from exc


def members_precision(members: tuple[Member, ...]) -> str:
    """The precision an ensemble's networks were trained in: theirs when they share one, "mixed" when not,
    "unknown" for members registered before they recorded it (the ensemble itself only averages, in fp32)."""
    found = {m.precision for m in members}
    return "unknown" if None in found or not found else found.pop() if len(found) == 1 else "mixed"


def _spec(record: ModelRecord) -> MemberSpec:
    return MemberSpec(record.arch, record.image_size)


def _record(loaded: list[LoadedModel], members: tuple[Member, ...], config: TrainConfig, data_dir: Path, point,
            report: Report, others: dict[str, Report], ensemble: Ensemble, device: str,
            population_notes: list[str]) -> ModelRecord:
    first = loaded[0].record
    parts = [f"the {len(m.record.members)} members of {m.name}" if m.record.members else m.name for m in loaded]
    networks = sum(len(m.record.members) or 1 for m in loaded)
    recipe = f"{first.name}'s first member's" if first.members else f"{first.name}'s"
    notes = [f"Ensemble of {networks} networks ({and_list(parts)}): the mean of their probabilities, one operating "
             f"point chosen on their shared validation films. The recipe above is {recipe}; each member's is below."]
    notes += [note for m in loaded for note in _member_notes(m.record)] + population_notes
    return ModelRecord(
        name="", task=first.task, arch=ENSEMBLE, classes=first.classes,
        model_args=ModelArgs(num_classes=len(first.classes), image_size=ensemble.image_size),
        input=InputSpec(image_size=ensemble.image_size), operating_point=point, report=report,
        other_reports=others,
        training=TrainingRecord(config=config, data_dir=str(data_dir), notes=notes, device=device,
                                precision=members_precision(members)),
        data=DataRecord(train=first.data.train, validation=first.data.validation),
        parameters=int(sum(p.numel() for p in ensemble.parameters())),
        members=members,
    )


def _member_standing(member: LoadedModel, held_out: FilmSet | None, ensemble_reports: dict[str, Report],
                     seed: int) -> Standing:
    """A member's figures as its record holds them (at its own operating point), less other-batch figures another
    run lent it (these weights trained on that batch); its out-of-batch report is computed here only when the
    record lacks one the ensemble has."""
    record = member.record
    lent = record.holdout_run is not None
    out_of_batch = None if lent else record.other_reports.get(OUT_OF_BATCH)
    if out_of_batch is None and not lent and held_out is not None and OUT_OF_BATCH in ensemble_reports:
        out_of_batch = report_on(member.model, held_out, record.image_size, record.operating_point,
                                 ensemble_reports[OUT_OF_BATCH].split, seed)
    return Standing(record.name, record.operating_point.target_sensitivity, record.report, out_of_batch)


def _standing(name: str, record: ModelRecord) -> Standing:
    return Standing(name, record.operating_point.target_sensitivity, record.report,
                    record.other_reports.get(OUT_OF_BATCH))


def _line(standing: Standing) -> str:
    def number(value: float | None) -> str:  # 0.99967 is no "1.000" (a review): core.wording.fixed
        return "  -   " if value is None else f"{fixed(value, 3):>6s}"

    target = "-" if standing.target_sensitivity is None else f"{standing.target_sensitivity:.2f}"
    validation = standing.validation.auc if standing.validation else None
    oob = standing.out_of_batch
    interval = f" ({interval_text(oob.auc_ci, as_percent=False)})" if oob and oob.auc_ci else ""
    auc = f"{number(oob.auc if oob else None).strip()}{interval}"
    return (f"{standing.name:44s} {target:>6s} {number(validation):>7s} {auc:>26s} "
            f"{number(oob.sensitivity if oob else None)} {number(oob.specificity if oob else None)}")


MEMBER_NOTE = "Member "  # how each member's sentence in an ensemble's notes begins


def _member_notes(record: ModelRecord) -> list[str]:
    """The sentences on the networks ``record`` brings: its own recipe, or an ensemble's sentence per member."""
    if record.members:
        return [note for note in record.training.notes if note.startswith(MEMBER_NOTE)]
    return [_member_note(record)]


def _member_note(record: ModelRecord) -> str:
    """One member's recipe in a sentence: the members' own records need not ship with the ensemble."""
    training = record.training
    config = training.config
    best = f", best epoch {training.best_epoch}" if training.best_epoch else ""
    auc = f", validation AUC {record.report.auc:.4f}" if record.report and record.report.auc is not None else ""
    augmentation = ("no augmentation" if not config.augment
                    else "wide-framing augmentation" if config.wide_framing else "augmentation")
    notes = f"; notes: {' '.join(training.notes)}" if training.notes else ""
    return (f"{MEMBER_NOTE}{record.name}: {config.arch} at {config.image_size} px, {len(training.history)} of "
            f"{config.epochs} epochs{best}, seed {config.seed}, split seed {config.split_seed}, "
            f"{augmentation}, {training.precision} on the {training.device}, {training.seconds or 0:.0f} s{auc}{notes}")
