"""The promotion floor (core/store/promotion.py): a version becomes its task's default only with enough
validation films of each class and an operating point that promises, and reaches, the configured
sensitivity. Refusals say why; overrides and refusals are in the audit log; the shipped models clear it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from core import config
from core.admin.audit import cli_user, read_actions
from core.errors import AuditLogUnavailable, PromotionRefused, SettingOutOfRange
from core.store.promotion import check_promotion, floor_for, promote, promote_first, refusal
from core.store.records import read_model_record
from core.store.registry import REGISTRY_FILE, ModelEntry, find_model, list_models, read_registry, set_default
from core.training.calibrate import calibrate

SHIPPED = REPO / "checkpoints"
REAL_FLOOR = dict(CXR_PROMOTION_MIN_FILMS="20", CXR_PROMOTION_MIN_SENSITIVITY="0.95")


def _entry(json_path: Path) -> ModelEntry:
    return ModelEntry(read_model_record(json_path), False, json_path)


def _default(directory: Path) -> str | None:
    return next((e.name for e in list_models(directory)[0] if e.is_default), None)


def test_every_shipped_model_clears_the_real_floor_and_the_default_is_one_of_them(settings_env):
    settings_env(**REAL_FLOOR)
    shipped = sorted(p for p in SHIPPED.glob("*.json") if p.name != REGISTRY_FILE)
    assert len(shipped) == 11  # nine pneumonia models, two COVID-19 models
    for json_path in shipped:
        entry = _entry(json_path)
        assert check_promotion(entry) == [], json_path.name
        floor = {"pneumonia": 20, "covid": 12}[entry.task]  # the COVID set's own floor (core.limits)
        assert min(entry.record.report.class_counts) >= floor_for(entry.task).min_films == floor
    default = json.loads((SHIPPED / REGISTRY_FILE).read_text())["task_defaults"]["pneumonia"]
    assert check_promotion(_entry(SHIPPED / f"{default}.json")) == []


@pytest.mark.parametrize("floor, words", [
    ({"CXR_PROMOTION_MIN_FILMS": "1000"}, ["its validation holds only {NORMAL} NORMAL films and {PNEUMONIA} "
                                           "PNEUMONIA films; a default needs at least 1000 of each class"]),
    ({"CXR_PROMOTION_MIN_SENSITIVITY": "0.999"}, ["its operating point was chosen for 95 % sensitivity; a default "
                                                  "must promise at least 99.9 %",
                                                  "it reached {sensitivity} sensitivity on its validation films; a "
                                                  "default needs at least 99.9 %"]),
    ({"CXR_PROMOTION_MIN_FILMS": "1000", "CXR_PROMOTION_MIN_FILMS_BY_TASK": "pneumonia=5"}, []),
    ({"CXR_PROMOTION_MIN_FILMS": "20", "CXR_PROMOTION_MIN_SENSITIVITY": "0.95"}, []),
])
def test_the_floor_says_why_in_words(trained_model, settings_env, floor, words):
    settings_env(**floor)
    entry = _entry(trained_model.json_path)
    report = entry.record.report
    counts = dict(zip(report.classes, report.class_counts))
    assert 20 <= counts["NORMAL"] < counts["PNEUMONIA"] < 100  # the session model's validation films
    assert 0.95 <= report.sensitivity < 0.999
    sensitivity = f"{report.sensitivity * 100:.2f}".rstrip("0").rstrip(".") + " %"
    assert check_promotion(entry) == [w.format(sensitivity=sensitivity, **counts) for w in words]


def test_a_version_that_does_not_reach_the_floor_in_validation_is_refused(trained_model, settings_env):
    """The achieved sensitivity counts too, not only the promise: a report below the floor is refused."""
    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.95")
    record = trained_model.record
    low = record.report.at_operating_point.model_copy(update={"sensitivity": 0.9496})
    weak = record.model_copy(update={"report": record.report.model_copy(update={"at_operating_point": low})})
    reasons = check_promotion(ModelEntry(weak, False, trained_model.json_path))
    assert reasons == ["it reached 94.96 % sensitivity on its validation films; a default needs at least 95 %"]
    no_report = ModelEntry(record.model_copy(update={"report": None}), False, trained_model.json_path)
    assert check_promotion(no_report) == ["it has no validation report, so nothing shows how it performs"]


def test_a_site_calibrated_version_is_held_to_the_floor_on_its_site_films(trained_model, settings_env):
    """Found by a review: a version recalibrated on 55 site films, 95.8 % sensitivity on them, was refused for its
    internal validation's 94.57 % at the site's threshold, with "Train with a higher sensitivity target"; its
    threshold promises the site's films, and so does the floor."""
    from core.store.promotion import SITE_REPORT
    from core.store.promotion import figures as promotion_figures
    from core.store.records import Calibration

    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.95", CXR_PROMOTION_MIN_FILMS="20")
    record = trained_model.record
    low = record.report.at_operating_point.model_copy(update={"sensitivity": 0.9457})
    site = record.report.model_copy(update={"class_counts": [20, 35]})
    calibrated = record.model_copy(update={
        "report": record.report.model_copy(update={"at_operating_point": low}), "other_reports": {SITE_REPORT: site},
        "calibration": Calibration.model_validate({"from": record.name, "target_sensitivity": 0.95,
                                                   "source": "site folder", "folder": "ward-7/ward"})})
    assert check_promotion(ModelEntry(calibrated, False, trained_model.json_path)) == []
    logged = promotion_figures(ModelEntry(calibrated, False, trained_model.json_path))  # what the floor read
    assert logged["films"] == "site films" and logged["class_counts"] == {"NORMAL": 20, "PNEUMONIA": 35}
    few = calibrated.model_copy(update={"other_reports": {SITE_REPORT: site.model_copy(update={
        "class_counts": [12, 35], "at_operating_point": low})}})
    reasons, advice = refusal(ModelEntry(few, False, trained_model.json_path))
    assert reasons == ["its site folder holds only 12 NORMAL films; a default needs at least 20 of each class",
                       "it reached 94.57 % sensitivity on its site films; a default needs at least 95 %"]
    assert advice == "Calibrate again on more site films and for a higher sensitivity target, and try again."


def test_a_promise_or_a_figure_that_is_not_a_number_never_clears_the_floor(trained_model, settings_env):
    """NaN compares false with everything, so "below the floor" must not be asked as "< floor" alone: a version
    whose target or validation sensitivity is NaN (a hand-edited record, a bug upstream) is refused."""
    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.95")
    record = trained_model.record
    point = record.operating_point.model_copy(update={"target_sensitivity": float("nan")})
    figures = record.report.at_operating_point.model_copy(update={"sensitivity": float("nan")})
    odd = record.model_copy(update={"operating_point": point,
                                    "report": record.report.model_copy(update={"at_operating_point": figures})})
    assert check_promotion(ModelEntry(odd, False, trained_model.json_path)) == [
        "its operating point was chosen for no stated sensitivity; a default must promise at least 95 %",
        "it reached an unknown sensitivity on its validation films; a default needs at least 95 %"]


def test_a_refused_promotion_changes_nothing_and_is_recorded(trained_model, registry, settings_env, audit):
    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="admin:carol")
    settings_env(CXR_PROMOTION_MIN_FILMS="1000")
    before = (registry / REGISTRY_FILE).read_bytes()
    with pytest.raises(PromotionRefused) as refused:
        promote(calibrated.name, who="admin:carol", directory=registry)
    message = str(refused.value)
    assert message.startswith(f"{calibrated.name} cannot become the default model for pneumonia: its validation "
                              "holds only ") and "a default needs at least 1000 of each class" in message
    assert message.endswith("Train on more films, and try again.")  # not 'a higher sensitivity target': it has one
    assert (registry / REGISTRY_FILE).read_bytes() == before and _default(registry) == trained_model.name
    refusal, calibration = read_actions()
    assert (refusal.action, refusal.who, refusal.model) == ("default.refused", "admin:carol", calibrated.name)
    assert len(refusal.details["reasons"]) == 1 and refusal.details["sensitivity"] >= 0.96  # both classes in one
    assert (calibration.action, calibration.model, calibration.who) == ("calibrate", calibrated.name, "admin:carol")
    assert calibration.details["target_sensitivity"] == 0.96
    assert calibration.details["from_model"] == trained_model.name
    assert calibration.details["threshold"] == calibrated.operating_point.threshold


def test_nothing_changes_where_the_change_cannot_be_recorded(trained_model, registry, settings_env, audit, tmp_path):
    """The audit log is checked before a default changes or a version is registered, not after: an unwritable log
    stops the action, and the person is told nothing was changed."""
    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="admin:carol")
    before = sorted(p.name for p in registry.iterdir())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings_env(CXR_AUDIT_LOG=str(blocker / "audit.jsonl"), CXR_PROMOTION_MIN_FILMS="1")
    for act in (lambda: promote(calibrated.name, who="admin:carol", override=True, directory=registry),
                lambda: calibrate(trained_model.name, 0.97, directory=registry, who="admin:carol")):
        with pytest.raises(AuditLogUnavailable, match="audit log cannot be written .* Nothing was changed"):
            act()
    assert read_registry(registry).task_defaults == {"pneumonia": trained_model.name}
    assert sorted(p.name for p in registry.iterdir()) == before


def test_an_override_promotes_and_the_log_says_so_with_who_and_figures(trained_model, registry, settings_env,
                                                                      audit):
    calibrated = calibrate(trained_model.name, 0.97, directory=registry)
    settings_env(CXR_PROMOTION_MIN_FILMS="1000")
    promote(calibrated.name, who="cli:shipper", override=True, directory=registry)
    assert _default(registry) == calibrated.name
    change = read_actions()[0]
    assert (change.action, change.who, change.model) == ("default.change", "cli:shipper", calibrated.name)
    assert change.details["override"] is True and change.details["previous"] == trained_model.name
    assert len(change.details["floor_not_met"]) == 1
    report = calibrated.report
    assert (change.details["auc"], change.details["sensitivity"], change.details["specificity"]) == (
        report.auc, report.sensitivity, report.specificity)
    assert change.details["class_counts"] == dict(zip(report.classes, report.class_counts))
    settings_env(CXR_PROMOTION_MIN_FILMS="2")  # within the floor: promoted, no override recorded
    promote(trained_model.name, who="admin:dan", directory=registry)
    back = read_actions()[0]
    assert back.details["override"] is False and "floor_not_met" not in back.details
    assert _default(registry) == trained_model.name


def test_making_a_default_while_calibrating_goes_through_the_floor(trained_model, registry, settings_env, audit):
    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.99")
    with pytest.raises(PromotionRefused, match="chosen for 98 % sensitivity; a default must promise at least 99 %"
                                               ".*Recalibrate it for a higher sensitivity target, and try "
                                               "again"):  # its weights are not in question (a messages review)
        calibrate(trained_model.name, 0.98, directory=registry, make_default=True)
    assert _default(registry) == trained_model.name  # the new version is registered, not the default
    assert find_model(f"{trained_model.name.rsplit('-v', 1)[0]}-v2", registry).is_default is False


def test_a_tasks_first_version_becomes_its_default_only_if_it_clears_the_floor(trained_model, tmp_path,
                                                                                settings_env, audit):
    """No default yet: a first version below the floor stays without one; the first that clears it gets it."""
    models = tmp_path / "models"
    models.mkdir()
    for suffix in (".json", ".pt", ".population.pt"):  # the version's files, its population check included
        source = trained_model.json_path.with_name(trained_model.json_path.stem + suffix)
        if source.exists():
            (models / source.name).write_bytes(source.read_bytes())
    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.97")
    assert promote_first(trained_model.name, who="job", directory=models) is False
    assert _default(models) is None and read_actions() == []
    calibrated = calibrate(trained_model.name, 0.98, directory=models, who="admin:erin")  # ships: first to clear
    assert _default(models) == calibrated.name
    first, calibration = read_actions()[:2]  # newest first: recorded as it shipped, then made the first default
    assert (first.action, first.who, first.details["first_of_its_task"]) == ("default.change", "admin:erin", True)
    assert calibration.action == "calibrate"
    assert promote_first(trained_model.name, who="job", directory=models) is False  # the task has one now
    # two viewers settling one finished job both saw it without a default (a concurrency review): the second,
    # under the lock, finds the first's change and records nothing of its own
    import core.store.promotion as promotion

    real_find, stale = promotion.find_model, [ModelEntry(calibrated, False, models / f"{calibrated.name}.json")]
    promotion.find_model = lambda name, directory=None: stale.pop() if stale else real_find(name, directory)
    try:  # as read before the other's change landed, then as it is
        assert promote_first(calibrated.name, who="job", directory=models) is False
    finally:
        promotion.find_model = real_find
    assert len(read_actions()) == 2


def test_per_task_floors_are_read_from_the_environment(settings_env):
    settings_env(CXR_PROMOTION_MIN_FILMS="30", CXR_PROMOTION_MIN_FILMS_BY_TASK="tuberculosis=25, pneumonia=40")
    assert floor_for("tuberculosis").min_films == 25 and floor_for("pneumonia").min_films == 40
    assert floor_for("covid").min_films == 12  # the COVID set's default stays
    assert floor_for("anything-else").min_films == 30 and floor_for("pneumonia").min_sensitivity == 0.95
    for bad, words in [({"CXR_PROMOTION_MIN_FILMS_BY_TASK": "pneumonia"}, "task=number pairs"),
                       ({"CXR_PROMOTION_MIN_FILMS_BY_TASK": "pneumonia=x"}, "task=number pairs"),
                       ({"CXR_PROMOTION_MIN_FILMS": "0"}, "at least 1"),
                       ({"CXR_PROMOTION_MIN_SENSITIVITY": "0.3"}, "between 0.5 and 0.999"),
                       ({"CXR_PROMOTION_MIN_SENSITIVITY": "high"}, "must be a number")]:
        with pytest.raises(SettingOutOfRange, match=words):
            config.reload({**REAL_FLOOR, **bad})
    config.reload()


def test_the_cli_sets_a_default_through_the_floor_and_records_who(trained_model, registry, run_cli,
                                                                  settings_env, audit):
    settings_env(CXR_PROMOTION_MIN_FILMS="1000")
    refused = run_cli("set-default", trained_model.name, checkpoints=registry)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error = refused.json_lines()[0]["error"]
    assert "cannot become the default model for pneumonia" in error and "at least 1000 of each class" in error
    assert "the default is unchanged" in error
    assert (read_actions()[0].action, read_actions()[0].who) == ("default.refused", cli_user())
    forced = run_cli("set-default", trained_model.name, "--override-floor", checkpoints=registry)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert forced.json_lines() == [{"default": trained_model.name, "task": "pneumonia", "override_floor": True}]
    change = read_actions()[0]
    assert (change.action, change.who, change.details["override"]) == ("default.change", cli_user(), True)
    alone = run_cli("calibrate", trained_model.name, "--target-sensitivity", "0.97", "--override-floor",
                    checkpoints=registry)
    assert alone.returncode == 1 and "only applies together with --set-default" in alone.json_lines()[0]["error"]


def test_a_default_whose_change_cannot_be_recorded_is_put_back(trained_model, registry, settings_env, audit,
                                                               monkeypatch):
    """Found by a review: the log was writable when checked, then its disk filled; the default had changed, no line
    said so, and the person was told it could not be changed."""
    import core.store.promotion

    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="admin:carol")
    before = (registry / REGISTRY_FILE).read_bytes()

    def full(*args, **kwargs):
        raise AuditLogUnavailable("The audit log cannot be written (No space left on device).")

    monkeypatch.setattr(core.store.promotion, "record_action", full)
    settings_env(CXR_PROMOTION_MIN_FILMS="1")
    with pytest.raises(AuditLogUnavailable, match="the default is unchanged"):
        promote(calibrated.name, who="admin:carol", directory=registry)
    assert (registry / REGISTRY_FILE).read_bytes() == before and _default(registry) == trained_model.name


def test_ctrl_c_between_the_change_and_its_audit_line_waits_for_both(trained_model, registry, settings_env, audit,
                                                                    monkeypatch):
    """`train --set-default` promotes after its registration's hold (a review): a Ctrl+C right after the registry
    changed left the default changed with no audit line."""
    import os
    import signal

    import core.store.promotion

    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="cli:shipper")
    changed = core.store.promotion.set_default

    def then_stopped(*args, **kwargs):
        changed(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # Python raises KeyboardInterrupt at the next bytecode, unless held

    monkeypatch.setattr(core.store.promotion, "set_default", then_stopped)
    settings_env(CXR_PROMOTION_MIN_FILMS="1")
    promote(calibrated.name, who="cli:shipper", directory=registry)
    assert _default(registry) == calibrated.name
    assert (read_actions()[0].action, read_actions()[0].model) == ("default.change", calibrated.name)


def test_a_version_whose_weights_cannot_be_loaded_never_becomes_the_default(trained_model, registry, settings_env,
                                                                            audit):
    """Found by a review: set-default took a version whose weights file was damaged (only its description was
    read); every film of the task was then refused until an administrator noticed."""
    from core.errors import CheckpointError

    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="admin:carol")
    (registry / f"{calibrated.name}.pt").write_bytes(b"not the weights")
    settings_env(CXR_PROMOTION_MIN_FILMS="1")
    with pytest.raises(CheckpointError, match="does not match its description"):
        promote(calibrated.name, who="admin:carol", directory=registry)
    assert _default(registry) == trained_model.name
    assert [a.action for a in read_actions()] == ["calibrate"]


def test_another_promotion_waits_for_a_put_back_and_a_first_default_is_put_back_too(
        trained_model, registry, settings_env, audit, monkeypatch):
    """From reviews of the put-back: another promotion landing between this one's change and its failed audit line
    was undone with it (its registry was read outside the lock); now the lock is held from reading the registry to
    putting it back, so the other waits and lands after. And a task's first default, set without any promotion, is
    put back like the others."""
    import threading

    import core.store.promotion

    calibrated = calibrate(trained_model.name, 0.96, directory=registry, who="admin:carol")
    other = calibrate(trained_model.name, 0.97, directory=registry, who="admin:dan")
    settings_env(CXR_PROMOTION_MIN_FILMS="1")
    meanwhile = threading.Thread(target=set_default, args=(other.name, registry))

    def full_while_another_promotes(*args, **kwargs):
        meanwhile.start()
        meanwhile.join(timeout=1.0)
        assert meanwhile.is_alive()  # it waits for the registry: nothing lands in between
        raise AuditLogUnavailable("The audit log cannot be written (No space left on device).")

    monkeypatch.setattr(core.store.promotion, "record_action", full_while_another_promotes)
    with pytest.raises(AuditLogUnavailable, match="The change could not be recorded, so the default is unchanged"):
        promote(calibrated.name, who="admin:carol", directory=registry)
    meanwhile.join(timeout=30)
    assert _default(registry) == other.name  # the other promotion landed after the put-back, not undone by it
    (registry / REGISTRY_FILE).unlink()  # no default at all: the next version would be its task's first
    monkeypatch.setattr(core.store.promotion, "record_action", lambda *a, **k: (_ for _ in ()).throw(
        AuditLogUnavailable("The audit log cannot be written (No space left on device).")))
    with pytest.raises(AuditLogUnavailable, match="the default is unchanged"):
        promote_first(calibrated.name, who="admin:carol", directory=registry)
    assert not (registry / REGISTRY_FILE).exists()
