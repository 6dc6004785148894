"""Figures others measured on films not held here (#13): the project's official-test figures on the shipped
models' cards, tied to the weights they describe, with intervals from the figures and films per class."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO
from core.errors import CommandRefused
from core.evaluation.reported import hanley_mcneil_interval, wilson_interval
from core.store.records import read_model_record
from core.training.measured_elsewhere import record_measurements
from dashboard.components.reports import threshold_value
from dashboard.components.travel_notes import elsewhere_films
from dashboard.components.travel import (elsewhere_summaries, elsewhere_thresholds, travel_comparison,
                                         travel_points, travel_table)

PROJECT_FILE = REPO / "docs" / "project-measurements" / "kermany-official-test.json"


def test_wilson_and_hanley_mcneil_give_the_textbook_intervals():
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)  # never past 1, never empty
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    low, high = hanley_mcneil_interval(0.9, 50, 50)  # Hanley & McNeil 1982: SE 0.032 for A 0.9, 50 + 50
    assert (high - low) / 2 / 1.96 == pytest.approx(0.0321, abs=2e-4) and (low + high) / 2 == pytest.approx(0.9)
    # a perfect AUC on a handful of films is not certain: the error is taken half a discordant pair below 1
    low, high = hanley_mcneil_interval(1.0, 10, 10)
    assert high == 1.0 and low == pytest.approx(0.968, abs=2e-3)
    assert hanley_mcneil_interval(1.0, 400, 400)[0] > 0.999  # and shrinks as the films grow
    assert hanley_mcneil_interval(0.0, 10, 10)[1] == pytest.approx(0.032, abs=2e-3)
    with pytest.raises(ValueError):
        wilson_interval(0.5, 0)


def _file(tmp_path: Path, record, **figures) -> Path:
    data = {"title": "Test site", "films": "200 films of a test site", "measured_by": "a tester",
            "class_counts": {"NORMAL": 80, "PNEUMONIA": 120},
            "models": [{"model": record.name, "weights_sha256": record.weights_sha256, "threshold": 0.5,
                        "auc": 0.9, "accuracy": 0.86, "sensitivity": 0.9, "specificity": 0.8, **figures}]}
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def model_here(copied_model, settings_env):
    settings_env(CXR_MODELS=str(copied_model.parent))
    return read_model_record(copied_model)


def test_the_figures_are_recorded_with_intervals_and_shown_on_the_card(model_here, tmp_path, isolated_audit_log):
    recorded = record_measurements(_file(tmp_path, model_here))
    (stored,) = recorded.stored
    assert recorded.skipped == []
    (measured,) = read_model_record(tmp_path / f"{model_here.name}.json").measured_elsewhere
    assert stored.measured_elsewhere == (measured,)
    assert (measured.n, measured.auc, measured.sensitivity, measured.specificity) == (200, 0.9, 0.9, 0.8)
    assert measured.sensitivity_ci == pytest.approx(wilson_interval(0.9, 120))  # pneumonia films
    assert measured.specificity_ci == pytest.approx(wilson_interval(0.8, 80))  # normal films
    assert measured.auc_ci == pytest.approx(hanley_mcneil_interval(0.9, 120, 80))
    assert (stored.weights_sha256, stored.operating_point, stored.report) == (
        model_here.weights_sha256, model_here.operating_point, model_here.report)  # nothing else changed
    assert elsewhere_summaries(stored) == [
        f"**Test site** (200 films, read at threshold 0.500; this version's is now "
        f"{threshold_value(stored.operating_point.threshold)}): AUC 0.900 (0.858–0.942); sensitivity 90.0 % (83.3–94.2); "
        "specificity 80.0 % (70.0–87.3)."]
    assert list(travel_table(stored).columns) == ["Validation", "Other batch"]  # no third column in the sidebar
    assert elsewhere_films([stored]) == ["Test site: 200 films of a test site; measured by a tester. Its intervals "
                                         "are computed from the reported figures and films per class (Wilson; "
                                         "Hanley–McNeil for the AUC)."]
    assert elsewhere_thresholds(stored) == [f"Test site: read at threshold 0.500 (this version's is now "
                                            f"{threshold_value(stored.operating_point.threshold)})."]
    audit = json.loads(isolated_audit_log.read_text().splitlines()[-1])
    assert (audit["action"], audit["model"], audit["details"]["n"]) == ("measured-elsewhere", stored.name, 200)
    # recording the same films again replaces the figures instead of adding a second column
    (again,) = record_measurements(_file(tmp_path, model_here, specificity=0.7, accuracy=0.82)).stored
    assert [m.specificity for m in again.measured_elsewhere] == [0.7]


def test_figures_titled_as_the_products_own_rows_stand_apart_and_one_title_is_kept_once(model_here, tmp_path,
                                                                                         isolated_audit_log):
    """Found by a review: titled "Another batch", they replaced the product's own other-batch row on Compare; kept
    twice under one title (the films' words edited), they showed as one row with two points."""
    from core.store.registry import ModelEntry

    path = _file(tmp_path, model_here)
    for films in ("624 films of the official test", "the official Kermany test, 624 films"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "title": "Another batch", "films": films}))
        (stored,) = record_measurements(path).stored
    assert [m.films for m in stored.measured_elsewhere] == ["the official Kermany test, 624 films"]
    table = travel_comparison([ModelEntry(stored, False, tmp_path / f"{stored.name}.json", "site")])
    assert table.loc["Another batch: films", stored.name] == "not measured"  # the product's own row, as it was
    assert table.loc["Another batch, measured elsewhere: films", stored.name] == "200"
    assert elsewhere_summaries(stored)[0].startswith("**Another batch, measured elsewhere** (200 films")
    data = json.loads(path.read_text())  # the same title from someone else: refused, the first measurer's kept
    path.write_text(json.dumps({**data, "measured_by": "another site"}))
    with pytest.raises(CommandRefused, match="already carries figures titled 'Another batch' that someone else"):
        record_measurements(path)
    assert read_model_record(tmp_path / f"{stored.name}.json").measured_elsewhere == stored.measured_elsewhere


@pytest.mark.parametrize("change, message", [
    (dict(weights_sha256="0" * 64), "measured on other weights"),
    (dict(accuracy=0.95), r"accuracy reported for .* \(0.950\) does not follow .* \(0.860\)"),
    (dict(specificity=1.5), "models.0.specificity: Input should be less than or equal to 1"),
    (dict(threshold=float("nan")), "models.0.threshold: it should be a number, not NaN"),
    (dict(threshold=float("inf")), "models.0.threshold: Input should be"),
    (dict(model="no-such-model"), "no-such-model"),
    (dict(auc=True), r"models.0.auc: Input should be a valid number \(it is true\)\."),  # a CLI audit: kept as 1.0
    (dict(auc="0.9"), r"models.0.auc: Input should be a valid number\. What"),  # a string is never echoed
])
def test_figures_that_cannot_describe_the_version_are_refused_and_nothing_is_written(model_here, tmp_path, change,
                                                                                     message):
    before = (tmp_path / f"{model_here.name}.json").read_bytes()
    with pytest.raises(CommandRefused, match=message):
        record_measurements(_file(tmp_path, model_here, **change))
    assert (tmp_path / f"{model_here.name}.json").read_bytes() == before


def test_entries_for_versions_not_here_are_skipped_and_said_so_while_the_others_are_recorded(
        model_here, tmp_path, isolated_audit_log, run_cli):
    """A project file covers every model the project shipped; a site may not have them all (a seed-lineup model
    that make models retrains has other weights), and that must not keep the others' figures off their cards."""
    path = _file(tmp_path, model_here)
    data = json.loads(path.read_text())
    data["models"] += [{**data["models"][0], "model": "pneumonia-gone-v1"},
                       {**data["models"][0], "weights_sha256": "0" * 64}]  # the same version, retrained weights
    path.write_text(json.dumps(data))
    recorded = record_measurements(path)
    assert [r.name for r in recorded.stored] == [model_here.name]
    assert [m for m, _ in recorded.skipped] == ["pneumonia-gone-v1", model_here.name]
    assert "No version named pneumonia-gone-v1 is registered here" in recorded.skipped[0][1]
    assert "measured on other weights" in recorded.skipped[1][1]
    assert read_model_record(tmp_path / f"{model_here.name}.json").measured_elsewhere[0].auc == 0.9
    done = run_cli("measured-elsewhere", path, checkpoints=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [s["model"] for s in done.json_lines()[-1]["skipped"]] == ["pneumonia-gone-v1", model_here.name]
    # a file with nothing for this install is refused, and says why
    data["models"] = data["models"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(CommandRefused, match="pneumonia-gone-v1 is registered here.*other weights"):
        record_measurements(path)


def test_other_class_names_and_an_unreadable_file_are_refused(model_here, tmp_path):
    path = _file(tmp_path, model_here)
    data = json.loads(path.read_text())
    data["class_counts"] = {"NORMAL": 80, "COVID-19": 120}
    path.write_text(json.dumps(data))
    with pytest.raises(CommandRefused, match="must name each of .* classes"):
        record_measurements(path)
    path.write_text("not json")
    with pytest.raises(CommandRefused, match="figures.json cannot be read"):
        record_measurements(path)
    with pytest.raises(CommandRefused, match="cannot be read"):
        record_measurements(tmp_path / "missing.json")
    path.write_text("[" * 100_000 + "]" * 100_000)  # deeper than the JSON parser recurses
    with pytest.raises(CommandRefused, match="nested too deeply"):
        record_measurements(path)


@pytest.mark.parametrize("content, said", [
    ("[1, 2]", "is not a valid MeasurementsFile: the top level: it should be a JSON object ({...}), not a list."),
    (None, "is not a valid MeasurementsFile: models.0.auc: it should be a number, not NaN."),
    ("\udcff", "cannot be read (not JSON: not text in UTF-8, UTF-16 or UTF-32)."),
], ids=["a list", "NaN", "not text"])
def test_a_file_that_does_not_hold_figures_is_refused_in_words_with_what_it_should_hold(model_here, tmp_path, content,
                                                                                        said):
    """A CLI review: the refusals quoted the validation library ("a valid dictionary or instance of ...", an AUC of
    NaN "less than or equal to 1") or the codec, and none said what the file should hold."""
    path = _file(tmp_path, model_here)
    if content is None:
        data = json.loads(path.read_text())
        data["models"][0]["auc"] = float("nan")  # json.dumps writes NaN, which Python's parser reads back
        path.write_text(json.dumps(data))
    else:
        path.write_bytes(content.encode(errors="surrogateescape"))
    with pytest.raises(CommandRefused) as refused:
        record_measurements(path)
    assert str(refused.value) == (f"Measurements file figures.json {said} What the file holds is in the README "
                                  "(measured-elsewhere); docs/project-measurements/kermany-official-test.json is an "
                                  "example to copy.")


def test_a_version_named_twice_or_a_number_of_thousands_of_digits_is_refused_naming_the_file(model_here, tmp_path):
    """Found by a CLI audit: two entries for one version both printed success and the last won; a 5000-digit
    number gave Python's advice to raise its digit limit, naming no file."""
    path = _file(tmp_path, model_here)
    data = json.loads(path.read_text())
    data["models"].append({**data["models"][0], "auc": 0.5})
    path.write_text(json.dumps(data))
    before = (tmp_path / f"{model_here.name}.json").read_bytes()
    with pytest.raises(CommandRefused, match=f"gives figures for {model_here.name} more than once"):
        record_measurements(path)
    path.write_text(json.dumps(data).replace('"auc": 0.5', '"auc": ' + "9" * 5000))
    with pytest.raises(CommandRefused, match=r"^Measurements file figures.json cannot be read \(it holds a number"):
        record_measurements(path)
    assert (tmp_path / f"{model_here.name}.json").read_bytes() == before


def test_film_counts_beyond_any_test_set_are_refused_before_any_arithmetic(model_here, tmp_path):
    """An interval is computed from the counts as floats: 10**400 films would overflow it (OverflowError)."""
    path = _file(tmp_path, model_here)
    data = json.loads(path.read_text())
    data["class_counts"] = {"NORMAL": 10**400, "PNEUMONIA": 120}
    path.write_text(json.dumps(data))
    with pytest.raises(CommandRefused, match="class_counts.NORMAL: Input should be less than or equal to 10000000"):
        record_measurements(path)


def test_an_oversized_record_file_is_refused_before_it_is_parsed(model_here, tmp_path, monkeypatch):
    from core.store import base

    path = _file(tmp_path, model_here)
    monkeypatch.setattr(base, "MAX_RECORD_BYTES", path.stat().st_size - 1)
    with pytest.raises(CommandRefused, match="larger than"):
        record_measurements(path)


def test_the_command_line_prints_json_and_fails_as_json(model_here, tmp_path, run_cli):
    done = run_cli("measured-elsewhere", _file(tmp_path, model_here), checkpoints=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.json_lines()[-1]["measured_elsewhere"][0]["title"] == "Test site"
    failed = run_cli("measured-elsewhere", tmp_path / "missing.json", checkpoints=tmp_path)
    assert failed.returncode == 1 and "cannot be read" in failed.json_lines()[-1]["error"]
    assert "Traceback" not in failed.stdout + failed.stderr and str(tmp_path) not in failed.stdout


def test_the_shipped_models_carry_the_projects_official_test_figures_from_the_tracked_file():
    project = json.loads(PROJECT_FILE.read_text())
    assert len(project["models"]) == 6
    # the seed lineup's ResNet-18 without augmentation was measured, then left to make models (size budget)
    shipped = [f for f in project["models"] if (REPO / "checkpoints" / f"{f['model']}.json").exists()]
    assert {f["model"] for f in project["models"]} - {f["model"] for f in shipped} == {"pneumonia-resnet18-noaug-v1"}
    for figures in shipped:
        record = read_model_record(REPO / "checkpoints" / f"{figures['model']}.json")
        assert record.weights_sha256 == figures["weights_sha256"]  # the very weights the project measured
        (measured,) = record.measured_elsewhere
        assert (measured.title, measured.n, measured.class_counts) == (project["title"], 624,
                                                                       {"NORMAL": 234, "PNEUMONIA": 390})
        assert (measured.auc, measured.sensitivity, measured.specificity) == (
            figures["auc"], figures["sensitivity"], figures["specificity"])
    logistic = read_model_record(REPO / "checkpoints" / "pneumonia-logistic-v1.json")
    assert "specificity 41.5 % (35.4–47.9)" in elsewhere_summaries(logistic)[0]
    default = read_model_record(REPO / "checkpoints" / "pneumonia-resnet18-lite1-224-wide-all-ensemble-v1.json")
    assert default.measured_elsewhere == ()  # not measured there yet: no column, nothing invented


def test_compare_shows_the_figures_as_rows_and_points_beside_the_other_sets():
    from core.store.registry import ModelEntry

    records = [read_model_record(REPO / "checkpoints" / f"{name}.json")
               for name in ("pneumonia-logistic-v1", "pneumonia-resnet18-lite1-224-wide-all-ensemble-v1")]
    entries = [ModelEntry(r, False, REPO / "checkpoints" / f"{r.name}.json", "shipped") for r in records]
    table = travel_comparison(entries)
    assert table.loc["Kermany test (project): AUC", "pneumonia-logistic-v1"] == "0.885 (0.860–0.910)"
    assert table.loc["Kermany test (project): AUC", "pneumonia-resnet18-lite1-224-wide-all-ensemble-v1"] == "not measured"
    points = [p for p in travel_points(entries) if p.films == "Kermany test (project)"]
    assert [(p.model, p.figure, p.value) for p in points] == [("pneumonia-logistic-v1", "Sensitivity", 0.974),
                                                             ("pneumonia-logistic-v1", "Specificity", 0.415)]


def test_a_model_of_three_classes_gets_its_class_level_accuracy_and_no_auc_interval(tmp_path, settings_env):
    """With more than two classes, accuracy counts an abnormal film right only in its own class, so it is at most
    what sensitivity and specificity imply (refused above it); the macro one-vs-rest AUC has no interval from
    counts alone, and the card's note says so."""
    from task_models import COVID, task_site

    site = task_site(tmp_path, settings_env)
    record = read_model_record(site / f"{COVID}.json")
    counts = {"COVID-19": 100, "NORMAL": 100, "VIRAL PNEUMONIA": 100}  # implied: (0.95 * 200 + 0.9 * 100) / 300
    path = tmp_path / "figures.json"

    def write(accuracy: float) -> Path:
        path.write_text(json.dumps({"title": "Test site", "films": "300 films", "measured_by": "a tester",
                                    "class_counts": counts,
                                    "models": [{"model": COVID, "weights_sha256": record.weights_sha256,
                                                "auc": 0.97, "accuracy": accuracy, "sensitivity": 0.95,
                                                "specificity": 0.9}]}))
        return path

    with pytest.raises(CommandRefused, match=r"\(0.950\) is more than the normal-or-abnormal accuracy .* \(0.933\)"):
        record_measurements(write(0.95))
    (stored,) = record_measurements(write(0.85)).stored
    (measured,) = stored.measured_elsewhere
    assert measured.accuracy_ci == pytest.approx(wilson_interval(0.85, 300))
    assert measured.sensitivity_ci == pytest.approx(wilson_interval(0.95, 200))  # COVID-19 and viral pneumonia
    assert measured.auc == 0.97 and measured.auc_ci is None
    assert elsewhere_films([stored])[0].endswith("(Wilson; Hanley–McNeil for the AUC of two classes, none for a "
                                                 "macro AUC of more).")


def test_each_version_is_reported_as_it_is_stored_so_a_later_failure_leaves_no_change_unsaid(model_here, tmp_path,
                                                                                             monkeypatch):
    """Found by a CLI review: the versions stored were printed only after the last, so a failure on the second
    answered with its error alone while the first already carried the figures."""
    import core.store.descriptions as descriptions
    from core.errors import CheckpointError

    second = model_here.model_copy(update={"name": "pneumonia-second-v1"})
    (tmp_path / "pneumonia-second-v1.json").write_text(json.dumps(second.to_json()))
    (tmp_path / "pneumonia-second-v1.pt").write_bytes((tmp_path / f"{model_here.name}.pt").read_bytes())
    path = _file(tmp_path, model_here)
    data = json.loads(path.read_text())
    data["models"].append({**data["models"][0], "model": "pneumonia-second-v1"})
    path.write_text(json.dumps(data))
    attach, calls = descriptions.attach_measured_elsewhere, []

    def busy_second_time(json_path, measured, then):
        calls.append(json_path.stem)
        if len(calls) == 2:
            raise CheckpointError("The model registry is busy; try again in a moment.")
        return attach(json_path, measured, then=then)

    monkeypatch.setattr(descriptions, "attach_measured_elsewhere", busy_second_time)
    heard = []
    with pytest.raises(CheckpointError):
        record_measurements(path, on_stored=lambda record: heard.append(record.name))
    assert heard == calls[:1] and len(calls) == 2
    import core.training.measured_elsewhere as measuring
    from core.errors import AuditLogUnavailable

    monkeypatch.setattr(descriptions, "attach_measured_elsewhere", attach)
    monkeypatch.setattr(measuring, "record_action", lambda *a, **k: (_ for _ in ()).throw(AuditLogUnavailable("full")))
    heard.clear()
    with pytest.raises(AuditLogUnavailable, match=f"full {model_here.name} was changed without its audit line"):
        record_measurements(path, on_stored=lambda record: heard.append(record.name))  # stored, said so


def test_a_stop_while_figures_are_stored_lands_after_their_audit_line_and_their_report(model_here, tmp_path,
                                                                                       isolated_audit_log, monkeypatch):
    """Found by reviews of the day's diff: a held stop was swallowed, then raised before the audit line and the
    version's report, so the answer was "interrupted" alone with the figures stored."""
    import os
    import signal

    import core.store.descriptions as descriptions

    attach, heard = descriptions.attach_measured_elsewhere, []

    def stopped_inside(json_path, measured, then):
        def stop_then_audit(record):
            os.kill(os.getpid(), signal.SIGINT)  # held until the audit line is written
            then(record)
        return attach(json_path, measured, then=stop_then_audit)

    monkeypatch.setattr(descriptions, "attach_measured_elsewhere", stopped_inside)
    with pytest.raises(KeyboardInterrupt):
        record_measurements(_file(tmp_path, model_here), on_stored=lambda record: heard.append(record.name))
    assert heard == [model_here.name]
    assert json.loads(isolated_audit_log.read_text().splitlines()[-1])["action"] == "measured-elsewhere"


def test_a_share_no_count_of_films_gives_and_control_characters_in_the_words_are_refused(model_here, tmp_path):
    """A CLI review stored a sensitivity of 0.9 for one abnormal film (consistency was checked only when all three
    figures were given), and an escape sequence and a NUL in the words a card shows."""
    before = (tmp_path / f"{model_here.name}.json").read_bytes()
    path = _file(tmp_path, model_here, accuracy=None, specificity=None)
    data = {**json.loads(path.read_text()), "class_counts": {"NORMAL": 1, "PNEUMONIA": 1}}
    path.write_text(json.dumps(data))
    with pytest.raises(CommandRefused, match=r"sensitivity reported for .* \(0.900\) is no share of its 1 film;"):
        record_measurements(path)
    for field, text in (("title", "t\u001b[31mred"), ("films", "a\nb\u0000c"), ("measured_by", "a\u202eb")):
        path.write_text(json.dumps({**json.loads(_file(tmp_path, model_here).read_text()), field: text}))
        with pytest.raises(CommandRefused, match=f"{field}: Value error, must be plain text: no control characters"):
            record_measurements(path)
    assert (tmp_path / f"{model_here.name}.json").read_bytes() == before
    # a whole percent of a small class is a share of it (37 of 40 is 0.925: 0.93 and 0.92 are honest roundings)
    path.write_text(json.dumps({**json.loads(_file(tmp_path, model_here, accuracy=None, sensitivity=0.93,
                                                   specificity=0.63).read_text()),
                                "class_counts": {"NORMAL": 40, "PNEUMONIA": 40}}))
    record_measurements(path)


def test_a_threshold_no_stored_score_can_fall_between_is_not_called_another(model_here):
    """A review: figures read at a threshold a hair from this version's (re-chosen 4e-7 away) read "read at threshold
    0.470980 (this version's is now 0.470980)". Scores are stored to 6 decimals, so the two read every film alike."""
    from dashboard.components.travel import _read_at

    record = model_here.model_copy(update={"operating_point": model_here.operating_point.model_copy(
        update={"threshold": 0.4709802})})
    assert _read_at(record, 0.4709798) == threshold_value(0.4709802) == "0.47098"
    assert _read_at(record, 0.470982) == "0.470982 (this version's is now 0.47098)"
