"""The other-collection check (#13): Kermany-type films another dataset gathered and re-encoded at 640 px
(shared-data/covid-3class/train, Normal and Viral Pneumonia), minus copies of the training folder's films; training
reports it as collected and framed 15 % tighter, ``collection-check`` adds the same reports to a version trained
before it (tested with ``framing-check`` in tests/test_framing.py), on the shipped models it still separates recipes
that the held-out batch rates alike, and the range between its two readings holds the official test's figures."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

from core.films.folders import FilmSet, discover
from core.store.checkpoints import load_checkpoint
from core.store.records import read_model_record
from core.films.copies import copies_of
from core.evaluation.site_range import site_range
from core.training.other_collection import CLASSES, collection_films
from core.training.other_reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, collection_reports

from conftest import REPO, differences


@pytest.fixture(scope="module")
def kermany_folder(kermany_train) -> FilmSet:
    return discover(kermany_train)


def test_the_collection_is_its_normal_and_viral_films_without_the_copies_of_kermany_training_films(
        kermany_folder, data_dir):
    films, copies, repeats = collection_films(kermany_folder)
    assert films.classes == CLASSES == ("NORMAL", "PNEUMONIA")
    # 5 of its 70 normals are Kermany training films; it holds 2 normals and 1 viral film twice, byte for byte
    assert (copies, repeats) == (5, 3) and films.class_counts() == [63, 69]
    names = {(p.parent.name, p.name) for p in films.paths}
    assert ("Normal", "055.jpeg") not in names and ("Normal", "02.jpeg") in names  # 055: NORMAL2-IM-0869-0001
    assert {("Normal", "019.jpeg"), ("Normal", "093.jpeg"), ("Viral Pneumonia", "019.jpeg")} <= names  # the first
    assert not {("Normal", "020.jpeg"), ("Normal", "094.jpeg"), ("Viral Pneumonia", "020.jpeg")} & names  # kept
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in films.paths]
    assert len(set(digests)) == len(digests)  # no film counted twice
    assert {p.parent.name for p in films.paths} == {"Normal", "Viral Pneumonia"}  # never its COVID-19 films
    collection = (data_dir / "covid-3class" / "train").resolve()  # the shared folder may be reached by a link
    assert all(p.resolve().is_relative_to(collection) for p in films.paths)


def test_a_re_encoded_copy_of_a_training_film_is_found_and_another_film_is_not(kermany_folder, tmp_path):
    original = kermany_folder.paths[0]
    copy = tmp_path / "copy.jpeg"  # what a collection does to a film: larger, another contrast, re-encoded
    with Image.open(original) as image:
        ImageOps.autocontrast(image.convert("L").resize((640, 640)), cutoff=2).save(copy, quality=80)
    other = kermany_folder.paths[-1]
    films = FilmSet((copy, other), np.array([0, 1]), CLASSES)
    assert list(copies_of(films, kermany_folder.subset(np.arange(50)))) == [True, False]


def test_no_collection_on_the_server_means_no_report(settings_env, tmp_path, kermany_folder):
    settings_env(CXR_DATA=str(tmp_path))
    assert collection_films(kermany_folder) is None


def test_the_shipped_reports_are_what_the_shipped_weights_give_on_those_films(kermany_folder):
    """Recomputed here on the real films, the logistic regression's stored reports, to float rounding."""
    loaded = load_checkpoint(REPO / "checkpoints" / "pneumonia-logistic-v1.json")
    again = collection_reports(loaded.model, kermany_folder, loaded.image_size, loaded.record.operating_point,
                               loaded.record.training.config.seed)
    assert set(again) == {OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    for key, report in again.items():
        assert differences(report.to_json(), loaded.record.other_reports[key].to_json(), where=key) == []
    stored, framed = loaded.record.other_reports[OTHER_COLLECTION], loaded.record.other_reports[OTHER_COLLECTION_FRAMED]
    assert (stored.n, stored.class_counts) == (framed.n, framed.class_counts) == (132, [63, 69])
    # framed tighter, a linear template on pixels calls most normals pneumonia (the official test's way, further)
    assert framed.specificity < 0.2 < 0.5 < stored.specificity and framed.sensitivity >= stored.sensitivity
    assert framed.split.startswith("other-collection-framed: 132 Kermany-type") and "15 % larger" in framed.split
    assert stored.split.startswith("other-collection: 132 Kermany-type paediatric films from another collection "
                                   "(shared-data/covid-3class/train: 63 normal, 69 viral pneumonia")
    assert "5 copies of training-folder films left out, 3 films it holds twice counted once" in stored.split
    assert "/work" not in stored.split and str(REPO.parent) not in stored.split  # a data-root label, not a path


def test_on_the_shipped_models_it_separates_the_recipes_the_held_out_batch_cannot():
    """Two ResNet-18 recipes both score AUC 0.998 or more on the held-out batch; on these real films the
    wide-framing ensemble is ahead, and the logistic regression trails every CNN, as on the official Kermany test."""
    stored = {name: read_model_record(REPO / "checkpoints" / f"{name}.json").other_reports
              for name in ("pneumonia-resnet18-aug-v1", "pneumonia-resnet18-224-wide-ensemble-v1",
                           "pneumonia-logistic-v1", "pneumonia-cnn5-v1", "pneumonia-efficientnet_lite0-v2")}
    plain, wide = stored["pneumonia-resnet18-aug-v1"], stored["pneumonia-resnet18-224-wide-ensemble-v1"]
    assert plain["out-of-batch"].auc > 0.997 and wide["out-of-batch"].auc > 0.998
    assert wide[OTHER_COLLECTION].auc > plain[OTHER_COLLECTION].auc + 0.03
    assert max(reports[OTHER_COLLECTION].auc for reports in stored.values()) < 0.97  # resolution left
    assert all(stored["pneumonia-logistic-v1"][OTHER_COLLECTION].auc < reports[OTHER_COLLECTION].auc - 0.05
               for name, reports in stored.items() if name != "pneumonia-logistic-v1")


def test_collection_check_refuses_a_model_of_other_classes_and_a_missing_collection_as_json(
        run_cli, trained_model, tmp_path, settings_env):
    settings_env(CXR_CHECKPOINTS=str(REPO / "checkpoints"))
    covid = run_cli("collection-check", "covid-cnn5-v1", checkpoints=tmp_path / "site")
    assert covid.returncode == 1 and "does not read NORMAL and PNEUMONIA" in covid.json_lines()[-1]["error"]
    settings_env(CXR_DATA=str(tmp_path))
    missing = run_cli("collection-check", trained_model.name, checkpoints=trained_model.directory)
    assert missing.returncode == 1 and "not on this server" in missing.json_lines()[-1]["error"]
    assert "Traceback" not in covid.stderr + missing.stderr + covid.stdout + missing.stdout


def test_its_auc_intervals_contain_what_the_project_measured_on_the_official_test():
    """Issue 13 asks for model cards whose other-batch intervals contain the hidden figures. The held-out batch's
    never did (every model above 0.98 there, 0.885-0.966 on the official test); the other collection's AUC
    intervals contain the project's AUC for every shipped model it measured. Its sensitivity and specificity do not
    (its pneumonias are all viral), so only the AUC is claimed."""
    project = json.loads((REPO / "docs" / "project-measurements" / "kermany-official-test.json").read_text())
    shipped = [f for f in project["models"] if (REPO / "checkpoints" / f"{f['model']}.json").exists()]
    assert len(shipped) == 5
    for figures in shipped:
        reports = read_model_record(REPO / "checkpoints" / f"{figures['model']}.json").other_reports
        low, high = reports[OTHER_COLLECTION].auc_ci
        assert low <= figures["auc"] <= high, figures["model"]
        batch_low, _ = reports["out-of-batch"].auc_ci
        assert figures["auc"] < batch_low, figures["model"]  # the held-out batch overstates it


def test_the_range_at_a_new_site_holds_every_official_test_figure_the_project_measured():
    """The card's range at a new site (the other collection as collected and framed tighter, 95 % bounds) holds the
    project's official-test AUC, sensitivity and specificity for all five shipped models it measured; neither
    reading's own interval holds the specificity for four of them (as collected 80-94 %, framed 9-60 %, hidden 42-74 %)."""
    project = json.loads((REPO / "docs" / "project-measurements" / "kermany-official-test.json").read_text())
    shipped = [f for f in project["models"] if (REPO / "checkpoints" / f"{f['model']}.json").exists()]
    assert len(shipped) == 5
    outside_either = 0
    for figures in shipped:
        reports = read_model_record(REPO / "checkpoints" / f"{figures['model']}.json").other_reports
        as_collected, framed = reports[OTHER_COLLECTION], reports[OTHER_COLLECTION_FRAMED]
        spans = site_range(as_collected, framed)
        for name in ("auc", "sensitivity", "specificity"):
            low, high = getattr(spans, name)
            assert low <= figures[name] <= high, (figures["model"], name)
        assert spans.specificity == (min(as_collected.specificity_ci[0], framed.specificity_ci[0]),
                                     max(as_collected.specificity_ci[1], framed.specificity_ci[1]))
        outside_either += not any(r.specificity_ci[0] <= figures["specificity"] <= r.specificity_ci[1]
                                  for r in (as_collected, framed))
    assert outside_either == 4  # the range, not either reading alone, is what holds them


def test_an_unreadable_film_in_the_collection_skips_the_check_instead_of_failing_the_run(
        settings_env, tmp_path, data_dir, kermany_folder):
    """The check runs after training: a damaged file there must not cost a finished run."""
    source = data_dir / "covid-3class" / "train"
    for folder in ("Normal", "Viral Pneumonia"):
        (tmp_path / "covid-3class" / "train" / folder).mkdir(parents=True)
        for name in sorted(p.name for p in (source / folder).iterdir())[20:23]:  # no repeats
            shutil.copy(source / folder / name, tmp_path / "covid-3class" / "train" / folder / name)
    settings_env(CXR_DATA=str(tmp_path))
    loaded = load_checkpoint(REPO / "checkpoints" / "pneumonia-logistic-v1.json")
    args = (loaded.model, kermany_folder, loaded.image_size, loaded.record.operating_point)
    assert {key: r.n for key, r in collection_reports(*args).items()} == {OTHER_COLLECTION: 6,
                                                                           OTHER_COLLECTION_FRAMED: 6}  # 3 + 3 films
    (tmp_path / "covid-3class" / "train" / "Normal" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 not a film")
    assert collection_reports(*args) == {}


def test_reports_agree_to_float_rounding_and_not_beyond():
    """The comparison the stored-report tests use forgives another CPU's summation order, nothing more."""
    stored = {"n": 135, "auc": 0.9123456, "confusion_matrix": [[44, 21], [5, 65]], "roc": {"thresholds": [0.788382]},
              "split": "other-collection", "at_argmax": None}
    assert differences(json.loads(json.dumps(stored)), stored) == []
    assert differences({**stored, "auc": 0.9123457, "roc": {"thresholds": [0.788383]}}, stored) == []
    assert differences({**stored, "auc": 0.9124}, stored) == [".auc: 0.9124 != 0.9123456"]
    assert differences({**stored, "confusion_matrix": [[45, 20], [5, 65]]}, stored) == \
        [".confusion_matrix[0][0]: 45 != 44", ".confusion_matrix[0][1]: 20 != 21"]
    assert differences({**stored, "roc": {"thresholds": [0.788382, 0.5]}}, stored) == [".roc.thresholds: 2 items != 1"]
    assert differences({**stored, "at_argmax": 0.0}, stored) == [".at_argmax: 0.0 != None"]
    assert differences({**stored, "split": "framed"}, stored) == [".split: 'framed' != 'other-collection'"]


def test_collection_check_refuses_a_version_calibrated_on_a_site_s_films(tmp_path, settings_env):
    """Found by a review: calibrate leaves the other-collection reports out when the site folder holds that
    collection's films (they would be read on the films the threshold was chosen on); collection-check brought
    them back, with the range at a new site built on them."""
    from core.errors import CommandRefused
    from core.store.descriptions import update_record
    from core.store.records import Calibration
    from core.training.late_checks import add_collection_report

    site = tmp_path / "site"
    site.mkdir()
    for suffix in (".json", ".pt", ".population.pt"):  # the suite's shipped folder is empty: a site version here
        shutil.copy(REPO / "checkpoints" / f"pneumonia-logistic-v1{suffix}", site)
    settings_env(CXR_MODELS=str(site), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    update_record(site / "pneumonia-logistic-v1.json", lambda record: {"calibration": Calibration.model_validate(
        {"from": "pneumonia-logistic-v0", "target_sensitivity": 0.95, "source": "site folder", "folder": "films"})})
    with pytest.raises(CommandRefused, match=r"^pneumonia-logistic-v1's threshold was chosen on a site's films.*"
                                             r"calibrated from \(pneumonia-logistic-v0\)\.$"):
        add_collection_report("pneumonia-logistic-v1")
