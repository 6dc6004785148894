"""Recalibration on a site's own labelled films (#13): the threshold is chosen on them, the version says so,
and every other report is read again at the new threshold."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import corpus
from core.admin.audit import read_actions
from core.errors import DatasetError, FolderNotAllowed
from core.evaluation.framing import TIGHTER_FRAMING
from core.training.other_reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, OUT_OF_BATCH
from core.films.folders import FilmSet, discover
from core.films.tensor import load_tensors
from core.limits import THRESHOLD_MARGIN
from core.models.inference import probabilities_in_batches
from core.store.atomic import atomic_write_json
from core.store.checkpoints import load_checkpoint
from core.store.promotion import check_promotion
from core.store.records import TrainConfig
from core.store.registry import list_models, read_registry
from core.training.calibrate import SITE, calibrate
from core.training.data import fingerprint
from core.store.reports import WITHDRAWN
from core.training.train import split_films, train
from dashboard.components.calibrate_view import outcome_lines
from e2e_support import ROOT

SITE_LABEL = "shared-data/films"  # the 16 full-resolution Kermany val films: 8 NORMAL, 8 PNEUMONIA
TARGET = 0.85  # 7 of the 8 pneumonia films: the rule has a real choice to make


@pytest.fixture
def registry(trained_model, tmp_path):
    """A private registry holding a copy of the session model, its task's default (calibrate adds versions)."""
    return corpus.copy_registry(trained_model.directory, tmp_path / "models")


@pytest.fixture(scope="module")
def held_model(kermany_train, tmp_path_factory):
    """A tiny model trained with another batch held out, so it carries an out-of-batch report."""
    directory = tmp_path_factory.mktemp("held")
    config = TrainConfig(arch="logistic", epochs=2, image_size=64, augment=False, max_films=600,
                         holdout="kermany-batch", split_seed=0)
    return train(kermany_train, config, name="held", directory=directory), directory


def _abnormal_scores(json_path, films: FilmSet) -> np.ndarray:
    """The stored model's abnormality scores on ``films``, computed here, not by calibrate."""
    loaded = load_checkpoint(json_path)
    probs = probabilities_in_batches(loaded.model, load_tensors(films, loaded.image_size))
    return loaded.record.operating_point.abnormal_scores(probs)


def test_the_threshold_is_chosen_on_the_site_films_and_the_version_says_where(trained_model, registry, films_dir):
    old = trained_model.record
    new = calibrate(old.name, TARGET, directory=registry, site_folder=SITE_LABEL)
    point, calibration = new.operating_point, new.calibration
    assert calibration.source == "site folder" and calibration.folder == SITE_LABEL
    site_films = discover(films_dir)
    assert calibration.films.n == 16 and calibration.films.class_counts == {"NORMAL": 8, "PNEUMONIA": 8}
    assert calibration.films.sha256 == fingerprint(site_films).sha256
    assert calibration.from_model == old.name and calibration.previous_threshold == old.operating_point.threshold
    # the rule, checked on the site films directly: the highest threshold that finds >= 85 % of the sick films
    scores = _abnormal_scores(registry / f"{new.name}.json", site_films)
    sick = site_films.labels == 1
    found = np.mean(scores[sick] >= point.threshold)
    film = scores[scores >= point.threshold].min()  # the site film that set it, a hair above (THRESHOLD_MARGIN)
    assert found >= TARGET and film - THRESHOLD_MARGIN <= point.threshold < film
    higher = scores[scores > film]
    assert higher.size == 0 or np.mean(scores[sick] >= higher.min()) < TARGET
    site = new.other_reports[SITE]
    assert site.n == 16 and site.sensitivity == pytest.approx(found) and site.threshold == point.threshold
    assert site.specificity == pytest.approx(np.mean(scores[~sick] < point.threshold))
    assert SITE_LABEL in site.split and SITE_LABEL in point.policy and point.validation_sensitivity == found
    # the card's report stays internal validation, re-read at the new threshold
    assert new.report.threshold == point.threshold and new.report.n == old.report.n
    assert new.report.auc == pytest.approx(old.report.auc, abs=1e-6)
    # no holdout in the session model: the site films and its validation films framed tighter, at the new threshold
    assert set(new.other_reports) == {SITE, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    assert new.other_reports[TIGHTER_FRAMING].threshold == point.threshold
    assert new.other_reports[TIGHTER_FRAMING].n == old.report.n
    text = (registry / f"{new.name}.json").read_text()
    assert str(films_dir) not in text and json.loads(text)["calibration"]["folder"] == SITE_LABEL
    audit = read_actions(limit=5)[0]
    assert (audit.action, audit.model, audit.details["source"], audit.details["site_folder"]) == \
        ("calibrate", new.name, "site folder", SITE_LABEL)
    assert audit.details["site_class_counts"] == {"NORMAL": 8, "PNEUMONIA": 8}
    assert read_registry(registry).task_defaults == {old.task: old.name}  # not made the default


def test_other_reports_are_read_again_at_the_new_threshold(held_model, kermany_train):
    old, directory = held_model
    assert set(old.other_reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    new = calibrate(old.name, 0.995, directory=directory)
    threshold = new.operating_point.threshold
    assert new.calibration.source == "validation" and threshold != old.operating_point.threshold
    assert set(new.other_reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    assert new.other_reports[TIGHTER_FRAMING].threshold == new.other_reports[OTHER_COLLECTION].threshold == threshold
    _, _, _, held = split_films(kermany_train, old.training.config.resolved())
    scores = _abnormal_scores(directory / f"{new.name}.json", held)
    normal = held.labels == 0
    out_of_batch = new.other_reports[OUT_OF_BATCH]
    assert out_of_batch.n == len(held) and out_of_batch.threshold == threshold
    assert out_of_batch.specificity == pytest.approx(np.mean(scores[normal] < threshold))
    assert out_of_batch.sensitivity == pytest.approx(np.mean(scores[~normal] >= threshold))
    # on a site folder the site report joins them; a later validation calibration drops it (old threshold)
    on_site = calibrate(new.name, TARGET, directory=directory, site_folder=SITE_LABEL)
    assert set(on_site.other_reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED,
                                          SITE}
    assert {r.threshold for r in on_site.other_reports.values()} == {on_site.operating_point.threshold}
    again = calibrate(on_site.name, 0.99, directory=directory)
    assert set(again.other_reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED} and \
        again.calibration.source == "validation"


def test_a_recalibrated_version_drops_the_withdrawn_adults_report(trained_model, registry):
    """A version written before the withdrawal still stores "adults" (shared-data/tb/train/Normal, noise textures):
    it loads as it is, and its recalibrated version no longer carries it."""
    path = registry / f"{trained_model.name}.json"
    stored = json.loads(path.read_text())
    stored["other_reports"]["adults"] = stored["report"]  # any stored report: only its key matters here
    atomic_write_json(path, stored)
    assert set(load_checkpoint(path).record.other_reports) == {"adults", TIGHTER_FRAMING, OTHER_COLLECTION,
                                                               OTHER_COLLECTION_FRAMED} and \
        "adults" in WITHDRAWN
    new = calibrate(trained_model.name, 0.9, directory=registry)
    assert set(new.other_reports) == {TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}  # computed again
    assert "adults" not in json.loads((registry / f"{new.name}.json").read_text())["other_reports"]


def test_class_folders_that_are_not_the_models_classes_are_refused(trained_model, registry):
    # shared-data/tb/train holds noise textures, not films; it serves here only as a folder of other class names
    with pytest.raises(DatasetError, match=r"class folders of shared-data/tb/train \(NORMAL, TUBERCULOSIS\) are "
                                           r"not the model's classes \(NORMAL, PNEUMONIA\)"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="shared-data/tb/train")
    assert [e.name for e in list_models(registry)[0]] == [trained_model.name]  # nothing registered


def test_too_few_films_per_class_are_refused_with_the_counts(trained_model, registry, settings_env):
    settings_env(CXR_PROMOTION_MIN_FILMS="10")
    with pytest.raises(DatasetError, match=r"shared-data/films holds 8 NORMAL, 8 PNEUMONIA films; .* at least 10 "
                                           r"of each class"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder=SITE_LABEL)
    assert [e.name for e in list_models(registry)[0]] == [trained_model.name]


def test_a_site_root_in_any_case_is_read_in_the_models_classes(trained_model, registry, films_dir, tmp_path,
                                                               settings_env):
    site = tmp_path / "site-root" / "ward"
    for source, target in (("NORMAL", "normal"), ("PNEUMONIA", "Pneumonia")):
        (site / target).mkdir(parents=True)
        for film in sorted((films_dir / source).iterdir())[:3]:
            shutil.copy(film, site / target)
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    new = calibrate(trained_model.name, TARGET, directory=registry, site_folder=site)  # a server path inside a root
    assert new.calibration.folder == "ward-7/ward"
    assert new.calibration.films.class_counts == {"NORMAL": 3, "PNEUMONIA": 3}
    assert str(tmp_path) not in (registry / f"{new.name}.json").read_text()
    (site / "Pneumonia" / "broken.jpeg").write_bytes(b"not a film")
    with pytest.raises(DatasetError) as refused:
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert "ward-7/ward/Pneumonia/broken.jpeg" in str(refused.value) and str(tmp_path) not in str(refused.value)
    with pytest.raises(FolderNotAllowed):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder=tmp_path)  # outside every root


def test_cli_calibrates_on_a_site_folder_and_fails_as_json(trained_model, registry, run_cli, settings_env):
    done = run_cli("calibrate", trained_model.name, "--target-sensitivity", TARGET, "--site-folder", SITE_LABEL,
                   checkpoints=registry)
    assert done.returncode == 0, done.stderr
    out = done.json_lines()[0]
    assert set(out) == {"name", "from", "default", "previous_threshold", "source", "validation", "site"}
    assert out["default"] is False and out["site"]["sensitivity_ci"][0] < 0.9  # 16 films: with its interval (a review)
    # a task without one takes its first version over the floor: said, not silent (a review)
    registry_file = registry / "registry.json"
    registry_file.write_text(json.dumps({**json.loads(registry_file.read_text()), "task_defaults": {},
                                         "default": None}))
    settings_env(CXR_PROMOTION_MIN_SENSITIVITY="0.5")  # a floor this tiny model's version clears
    again = run_cli("calibrate", trained_model.name, "--target-sensitivity", TARGET, "--site-folder", SITE_LABEL,
                    checkpoints=registry)
    assert again.returncode == 0 and again.json_lines()[0]["default"] is True, again.stderr
    assert out["source"] == "site folder" and out["site"]["folder"] == SITE_LABEL and out["site"]["n"] == 16
    assert out["site"]["sensitivity"] >= TARGET and out["site"]["threshold"] == out["validation"]["threshold"]
    bad = run_cli("calibrate", trained_model.name, "--target-sensitivity", TARGET, "--site-folder", "/etc",
                  checkpoints=registry)
    assert bad.returncode == 1 and bad.json_lines() == [{"error": f"{FolderNotAllowed.MESSAGE} {FolderNotAllowed.STEP}"
                                                         }]  # with how to name one on the command line (a review)


def _ward(tmp_path: Path, films_dir: Path, per_class: int) -> tuple[Path, Path]:
    """A site folder ``ward-7/ward`` of the first ``per_class`` real films of each class (copies), and the data-roots
    file that names its root: (the folder, the roots file)."""
    site = tmp_path / "site-root" / "ward"
    for name in ("NORMAL", "PNEUMONIA"):
        (site / name).mkdir(parents=True)
        for film in sorted((films_dir / name).iterdir())[:per_class]:
            shutil.copy(film, site / name)
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    return site, roots


def _retrain_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.switch_page("views/retrain.py")
    at.run()
    assert not at.exception
    return at


def test_the_retrain_page_calibrates_on_a_site_folder(trained_model, registry, settings_env, films_dir,
                                                      tmp_path):
    settings_env(CXR_MODELS=str(registry), CXR_JOBS=str(tmp_path / "jobs"))
    at = _retrain_page()
    assert at.selectbox(key="calibrate-model").value == trained_model.name
    at.radio(key="calibrate-source").set_value("site folder").run()
    at.selectbox(key="calibrate-site-folder-shared-data").set_value("films").run()
    at.number_input(key="calibrate-target").set_value(TARGET * 100).run()
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception and not at.error
    new = next(e.record for e in list_models(registry)[0] if e.name != trained_model.name)
    assert new.calibration.source == "site folder" and new.calibration.folder == SITE_LABEL
    message = at.success[0].value
    assert f"{new.name} is registered" in message and f"chosen on the site folder `{SITE_LABEL}`" in message
    assert f"Site films: sensitivity {new.other_reports[SITE].sensitivity * 100:.1f} % (" in message  # its interval
    assert "chosen on these films, so their sensitivity meets the target by construction" in message  # a review
    assert f"Read on the site folder {SITE_LABEL}: {new.other_reports[SITE].n} films (" in message  # and left out
    reasons = check_promotion(next(e for e in list_models(registry)[0] if e.name == new.name))  # 16 films: too few
    refused = f"It is not the default, and cannot become it: {'; '.join(reasons)}."  # before: "...before making it one"
    assert reasons and refused in [c.value for c in at.caption]
    shown = "\n".join(str(e.value) for kind in ("markdown", "caption", "success", "info") for e in at.get(kind))
    assert str(films_dir) not in shown
    assert any(a.action == "calibrate" and a.details["source"] == "site folder" and a.who == "local"
               for a in read_actions(limit=5))


def test_the_page_refuses_a_mismatched_folder_in_words(trained_model, registry, settings_env, tmp_path):
    for name in ("NORMAL", "[Session expired, sign in again](https:evil.example)"):
        (tmp_path / "ward" / "batch" / name).mkdir(parents=True)
    (tmp_path / "roots.toml").write_text(f'[roots]\nward = "{tmp_path / "ward"}"\n')
    settings_env(CXR_MODELS=str(registry), CXR_JOBS=str(tmp_path / "jobs"), CXR_DATA_ROOTS=str(tmp_path / "roots.toml"))
    at = _retrain_page()
    at.radio(key="calibrate-source").set_value("site folder").run()
    # tb/train: noise textures, not films, used only for its class folders (NORMAL, TUBERCULOSIS)
    at.selectbox(key="calibrate-site-folder-shared-data").set_value("tb/train").run()
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("The model was not recalibrated. The class folders of shared-data/tb/train")
    assert [e.name for e in list_models(registry)[0]] == [trained_model.name]
    at.selectbox(key="calibrate-site-root").set_value("ward").run()
    at.selectbox(key="calibrate-site-folder-ward").set_value("batch").run()
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert "\\[Session expired, sign in again\\](https" in at.error[0].value  # a folder's names, plain (a review)


def test_a_site_folder_holding_the_models_own_films_is_refused_before_any_work(trained_model, registry, tmp_path,
                                                                              settings_env):
    """A threshold chosen on films the model trained or was validated on would be read again on them as if they
    were unseen (its validation and other-batch reports): copies of its own validation films, or the training
    tree itself, are refused, and nothing is registered."""
    from core.errors import CalibrationError
    from core.store.records import read_model_record
    from core.training.calibrate import recorded_split

    val_set = recorded_split(read_model_record(trained_model.json_path))[0]
    site = tmp_path / "site-root" / "ward"
    for label, name in enumerate(val_set.classes):
        (site / name).mkdir(parents=True)
        for film in [p for p, y in zip(val_set.paths, val_set.labels) if y == label][:3]:
            shutil.copy(film, site / name / f"renamed-{film.name}")  # another name, the same film
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root"),
                                           "shared-data": str(ROOT.parent / "shared" / "data")}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    before = sorted(p.name for p in registry.iterdir())
    with pytest.raises(CalibrationError, match=r"^6 of the 6 films in ward-7/ward are .*'s own training, "
                                               "validation or held-out films") as refused:
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    first = f": ward-7/ward/{val_set.classes[0]}/{sorted((site / val_set.classes[0]).iterdir())[0].name}, "
    assert first in str(refused.value) and str(tmp_path) not in str(refused.value)  # named, to be found (a review)
    with pytest.raises(CalibrationError, match="films in shared-data/kermany-224/train are"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="shared-data/kermany-224/train")
    # a folder of split folders was read from train/ alone, the rest left out unsaid (a review): refused in words
    with pytest.raises(DatasetError, match=r"^shared-data/kermany-224 holds split folders \(train\): .* Name one "
                                           r"of them \(e.g. shared-data/kermany-224/train\)"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="shared-data/kermany-224")
    assert sorted(p.name for p in registry.iterdir()) == before


def test_a_site_folder_of_the_models_films_at_another_contrast_and_size_is_refused(trained_model, registry,
                                                                                  tmp_path, settings_env):
    """Near-duplicates, not byte copies: the model's validation films re-saved brighter, smaller and at another
    JPEG quality (as another archive would export them) are still its own films."""
    from PIL import Image, ImageEnhance

    from core.errors import CalibrationError
    from core.store.records import read_model_record
    from core.training.calibrate import recorded_split

    val_set = recorded_split(read_model_record(trained_model.json_path))[0]
    site = tmp_path / "site-root" / "ward"
    for label, name in enumerate(val_set.classes):
        (site / name).mkdir(parents=True)
        for film in [p for p, y in zip(val_set.paths, val_set.labels) if y == label][:3]:
            with Image.open(film) as image:
                other = ImageEnhance.Contrast(image.convert("L")).enhance(1.3).resize((200, 200))
            other.save(site / name / f"export-{film.stem}.jpg", quality=70)
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    before = sorted(p.name for p in registry.iterdir())
    with pytest.raises(CalibrationError, match=r"^6 of the 6 films in ward-7/ward are .*'s own training, "
                                               r"validation or held-out films \(or copies of them\)"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert sorted(p.name for p in registry.iterdir()) == before


def test_copies_of_a_film_in_the_site_folder_count_once(trained_model, registry, tmp_path, settings_env, films_dir):
    """Found by a review: twenty copies of four films met the floor as twenty films and gave a sensitivity
    interval as if from twenty. Copies (renamed, re-saved brighter and smaller) now count once; a copy filed
    under two classes is refused, and so is a class that has too few films once its copies go."""
    from PIL import Image, ImageEnhance

    site, roots = _ward(tmp_path, films_dir, 3)
    first = sorted((films_dir / "NORMAL").iterdir())[0]
    shutil.copy(first, site / "NORMAL" / "zz-renamed.jpeg")
    with Image.open(first) as image:
        ImageEnhance.Contrast(image.convert("L")).enhance(1.3).resize((300, 300)).save(site / "NORMAL" / "zz-x.jpg")
    settings_env(CXR_DATA_ROOTS=str(roots))
    new = calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert new.calibration.films.class_counts == {"NORMAL": 3, "PNEUMONIA": 3}
    site_report = new.other_reports[SITE]
    assert site_report.n == 6 and "2 copies of other films in it left out" in site_report.split
    assert "2 copies of other films in it left out" in outcome_lines(new)[-1]  # on the page too (a browser review)
    shutil.copy(first, site / "PNEUMONIA" / "misfiled.jpeg")
    with pytest.raises(DatasetError, match=r"^ward-7/ward holds the same film under two classes \(copies of a film "
                                           r"filed under more than one class folder: ward-7/ward/NORMAL/\S+, "
                                           r"ward-7/ward/NORMAL/zz-renamed.jpeg, ward-7/ward/NORMAL/zz-x.jpg and "
                                           r"ward-7/ward/PNEUMONIA/misfiled.jpeg\); correct the labels"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    (site / "PNEUMONIA" / "misfiled.jpeg").unlink()
    for film in sorted((site / "NORMAL").iterdir())[1:3]:
        film.unlink()  # one NORMAL film and its two copies left
    with pytest.raises(DatasetError, match=r"^ward-7/ward holds 1 NORMAL, 3 PNEUMONIA films once 2 copies of other "
                                           r"films in it are left out; .* needs at least 2 of each class"):
        calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")


def test_a_site_folder_drawn_from_the_other_collection_gets_no_other_collection_report(trained_model, registry,
                                                                                      tmp_path, settings_env,
                                                                                      data_dir):
    """Found by a review: a site folder of the other collection's films had its site report and its
    other-collection report read on the same films, and the card's range at a new site came from them."""
    site = tmp_path / "site-root" / "ward"
    for name, folder in (("NORMAL", "Normal"), ("PNEUMONIA", "Viral Pneumonia")):
        (site / name).mkdir(parents=True)
        for film in sorted((data_dir / "covid-3class" / "train" / folder).iterdir())[10:13]:
            shutil.copy(film, site / name / f"ward-{film.name}")
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward-7": str(tmp_path / "site-root")}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    new = calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert set(new.other_reports) == {SITE, TIGHTER_FRAMING}  # its own validation's framing stays


def test_films_triage_would_not_triage_are_left_out_of_the_choice(trained_model, registry, tmp_path, settings_env,
                                                                  films_dir):
    """Found by a review: a CT, an MR and noise textures in a site folder chose the threshold (0.0004, specificity
    17 %) with nothing said. Films Triage leaves untriaged never meet the threshold: they are left out, counted."""
    from PIL import Image
    site, roots = _ward(tmp_path, films_dir, 3)
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    Image.fromarray(noise).save(site / "PNEUMONIA" / "noise.png")  # the chest-film check's to find
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(site / "NORMAL" / "tiny.png")  # image statistics'
    settings_env(CXR_DATA_ROOTS=str(roots))
    new = calibrate(trained_model.name, TARGET, directory=registry, site_folder="ward-7/ward")
    assert new.calibration.films.class_counts == {"NORMAL": 3, "PNEUMONIA": 3} and new.other_reports[SITE].n == 6
    assert "2 films Triage would not triage (not usable chest films) left out" in new.other_reports[SITE].split
