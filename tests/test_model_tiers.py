"""Two tiers of models (issue 12, item 7): shipped ones, checked against the checksum manifest and never
written by the app, and site-trained ones in their own folder, where new versions and the site's default
pointers go. Model names are file names, never paths."""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch

from core import config
from core.errors import CheckpointError, InvalidModelName, ModelNotFound, SettingOutOfRange
from core.models.build import build_model
from core.store import manifest
from core.store.checkpoints import load_checkpoint, save_checkpoint
from core.store.class_default import find_default_for_classes
from core.store.names import check_model_name
from core.store.records import ModelArgs, ModelRecord
from core.store.registry import (REGISTRY_FILE, SHIPPED, SITE, ensure_default, find_model, list_models,
                                 read_registry, set_default)
from core.store.versions import next_version_name
from core.store.reports import OperatingPoint
from core.tasks import find_normal_index, task_name
from core.training.shipping import ship_version

PNEUMONIA = ("NORMAL", "PNEUMONIA")
TUBERCULOSIS = ("NORMAL", "TUBERCULOSIS")


def record_for(name: str, classes=PNEUMONIA, threshold: float = 0.4) -> ModelRecord:
    return ModelRecord(name=name, task=task_name(classes), arch="logistic", classes=classes,
                       model_args=ModelArgs(num_classes=len(classes), image_size=32),
                       operating_point=OperatingPoint(classes=classes, normal_index=find_normal_index(classes),
                                                      threshold=threshold))


def save(folder: Path, name: str, classes=PNEUMONIA) -> Path:
    torch.manual_seed(len(name))
    model, _ = build_model("logistic", len(classes), 32)
    save_checkpoint(folder, model, record_for(name, classes))
    return folder / f"{name}.json"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tiers(tmp_path, settings_env) -> tuple[Path, Path]:
    """A shipped folder (a pneumonia and a tuberculosis default, a spare, the manifest) and an empty site folder."""
    shipped, site = tmp_path / "shipped", tmp_path / "site"
    for name, classes in (("ship-pneu-v1", PNEUMONIA), ("ship-pneu-v2", PNEUMONIA), ("ship-tb-v1", TUBERCULOSIS)):
        save(shipped, name, classes)
    (shipped / REGISTRY_FILE).write_text(json.dumps({"task_defaults": {"pneumonia": "ship-pneu-v1",
                                                                       "tuberculosis": "ship-tb-v1"}}))
    manifest.write_manifest(shipped)
    settings_env(CXR_CHECKPOINTS=str(shipped), CXR_MODELS=str(site))
    return shipped, site


# --- where things are -------------------------------------------------------------------------------------


def test_the_site_folder_defaults_to_the_users_data_folder_outside_the_code_tree(tmp_path):
    try:
        chosen = config.reload({"XDG_DATA_HOME": str(tmp_path / "data")}).models
        assert chosen == (tmp_path / "data" / "cxr-triage" / "models").resolve()
        assert config.REPO_ROOT not in chosen.parents
        assert config.reload({"CXR_MODELS": str(tmp_path / "elsewhere")}).models == (tmp_path / "elsewhere").resolve()
        for inside in ("", "site"):  # site models never mix with the shipped ones
            with pytest.raises(SettingOutOfRange, match="CXR_MODELS"):
                config.reload({"CXR_CHECKPOINTS": str(tmp_path / "ckpt"),
                               "CXR_MODELS": str(tmp_path / "ckpt" / inside)})
    finally:
        config.reload()


def test_both_tiers_are_listed_each_saying_its_tier(tiers):
    shipped, site = tiers
    save(site, "site-pneu-v1")
    entries, problems = list_models()
    assert problems == []
    assert {e.name: (e.tier, e.is_default) for e in entries} == {
        "ship-pneu-v1": (SHIPPED, True), "ship-pneu-v2": (SHIPPED, False), "ship-tb-v1": (SHIPPED, True),
        "site-pneu-v1": (SITE, False)}
    assert find_model("site-pneu-v1").json_path == site / "site-pneu-v1.json"
    assert find_model(None, task="pneumonia").name == "ship-pneu-v1"  # no site pointer yet: the shipped default


def test_a_site_default_overrides_the_shipped_one_for_its_task_only(tiers):
    shipped, site = tiers
    before = snapshot(shipped)
    save(site, "site-pneu-v1")
    set_default("site-pneu-v1")
    assert find_model(None, task="pneumonia").name == "site-pneu-v1"
    assert find_model(None, task="tuberculosis").name == "ship-tb-v1"  # no site pointer: falls back
    assert find_model(None).name == "site-pneu-v1"  # no task named: the pneumonia task's default
    registry = read_registry(site)
    assert registry.task_defaults == {"pneumonia": "site-pneu-v1"}
    assert [(p.name, p.previous) for p in registry.promotions] == [("site-pneu-v1", "ship-pneu-v1")]
    set_default("ship-pneu-v2")  # a shipped model can be the site's choice too
    assert find_model(None, task="pneumonia").name == "ship-pneu-v2"
    assert snapshot(shipped) == before  # the pointers live in the site folder; the shipped folder is untouched


def test_a_site_pointer_to_a_model_that_is_gone_falls_back_to_the_shipped_default(tiers):
    shipped, site = tiers
    save(site, "site-pneu-v1")
    set_default("site-pneu-v1")
    for suffix in (".json", ".pt"):
        (site / f"site-pneu-v1{suffix}").unlink()
    assert find_model(None, task="pneumonia").name == "ship-pneu-v1"
    assert [e.name for e in list_models()[0] if e.is_default] == ["ship-pneu-v1", "ship-tb-v1"]


def test_a_task_with_models_but_no_default_serves_none_of_them_unasked(tiers):
    shipped, site = tiers
    save(site, "site-effusion-v1", ("EFFUSION", "NORMAL"))  # a first model the promotion floor kept out
    with pytest.raises(ModelNotFound, match=r"The effusion task has no default model: none of its models "
                                            r"\(site-effusion-v1\) has cleared the promotion floor"):
        find_model(None, task="effusion")
    assert find_model("site-effusion-v1").name == "site-effusion-v1"  # named, it is used


def test_a_new_version_goes_to_the_site_folder_numbered_past_both_tiers(tiers):
    shipped, site = tiers
    before = snapshot(shipped)
    assert next_version_name("ship-pneu") == "ship-pneu-v3"
    model, _ = build_model("logistic", 2, 32)
    stored = ship_version(model, record_for(""), "ship-pneu")
    assert stored.name == "ship-pneu-v3" and (site / "ship-pneu-v3.pt").is_file()
    assert snapshot(shipped) == before
    assert find_model(None, task="pneumonia").name == "ship-pneu-v1"  # the task had a default: kept
    assert not (site / REGISTRY_FILE).exists()
    assert load_checkpoint(site / "ship-pneu-v3.json").name == "ship-pneu-v3"  # site: the JSON's hash suffices


def test_a_site_model_named_like_a_shipped_one_is_ignored(tiers):
    shipped, site = tiers
    save(site, "ship-pneu-v1")
    entries, problems = list_models()
    assert find_model("ship-pneu-v1").tier == SHIPPED and len(entries) == 3
    assert problems == ["ship-pneu-v1.json in the site folder has the name of a shipped model; ignored."]


def test_a_site_default_whose_name_a_shipped_model_took_is_broken_not_bound_to_the_shipped_model(tiers):
    """The site's default ship-pneu-v2 was its own model; a new shipped set brings one of that name. Serving the
    shipped model as the site's default would silently change what the site triages with (found by a review)."""
    shipped, site = tiers
    save(site, "ship-pneu-v2")
    (site / REGISTRY_FILE).write_text(json.dumps({"task_defaults": {"pneumonia": "ship-pneu-v2"}}))
    entries, problems = list_models()
    assert not next(e for e in entries if e.name == "ship-pneu-v2").is_default
    assert problems[-1].startswith("ship-pneu-v2, the default model of the pneumonia task, cannot be used")
    with pytest.raises(ModelNotFound, match="name of a shipped model"):
        find_model(None, task="pneumonia")
    assert find_model("ship-pneu-v2").tier == SHIPPED  # asked for by name, the shipped one is what that name means
    with pytest.raises(CheckpointError, match="holds a model of its own named ship-pneu-v2"):
        set_default("ship-pneu-v2")  # would change nothing while the site's own copy is there
    save(site, "ship-pneu-v1")  # also when the shipped default itself has the site default's name (a review)
    (site / REGISTRY_FILE).write_text(json.dumps({"task_defaults": {"pneumonia": "ship-pneu-v1"}}))
    with pytest.raises(ModelNotFound, match="name of a shipped model"):
        find_model(None, task="pneumonia")
    for name in ("ship-pneu-v1", "ship-pneu-v2"):
        (site / f"{name}.json").unlink()  # the site's own copy gone: its pointer means the shipped model
    assert find_model(None, task="pneumonia").name == "ship-pneu-v1"
    set_default("ship-pneu-v2")
    assert find_model(None, task="pneumonia").name == "ship-pneu-v2"


def test_the_first_site_model_of_a_new_task_becomes_its_default(tiers):
    shipped, site = tiers
    save(site, "site-effusion-v1", ("EFFUSION", "NORMAL"))
    ensure_default("site-effusion-v1")
    assert find_model(None, task="effusion").name == "site-effusion-v1"
    assert read_registry(site).task_defaults == {"effusion": "site-effusion-v1"}


def test_the_shipping_path_writes_the_shipped_folder_and_its_manifest(tiers):
    shipped, site = tiers
    model, _ = build_model("logistic", 2, 32)
    stored = ship_version(model, record_for(""), "ship-pneu", directory=shipped)
    assert stored.name == "ship-pneu-v3" and not site.exists()
    listed = manifest.read_manifest(shipped)
    assert listed["ship-pneu-v3.pt"] == hashlib.sha256((shipped / "ship-pneu-v3.pt").read_bytes()).hexdigest()
    assert {"ship-pneu-v1.pt", "ship-tb-v1.json"} <= set(listed)  # the other entries are kept
    assert find_model("ship-pneu-v3").tier == SHIPPED and load_checkpoint(shipped / "ship-pneu-v3.json")


# --- the checksum manifest ----------------------------------------------------------------------------------


def test_shipped_weights_replaced_together_with_their_json_hash_are_refused(tiers):
    shipped, _ = tiers
    json_path = shipped / "ship-pneu-v2.json"
    model, _ = build_model("logistic", 2, 32)  # other weights, a consistent JSON: only the manifest can tell
    buffer = io.BytesIO()
    torch.save({"model": {k: v.half() for k, v in model.state_dict().items()},
                "identity": record_for("ship-pneu-v2").identity()}, buffer)
    json_path.with_suffix(".pt").write_bytes(buffer.getvalue())
    description = json.loads(json_path.read_text())
    description["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    json_path.write_text(json.dumps(description))
    entries, problems = list_models()
    assert "ship-pneu-v2" not in {e.name for e in entries}
    assert problems and "does not match the checksum manifest" in problems[0]
    with pytest.raises(CheckpointError, match="ship-pneu-v2.json does not match the checksum manifest"):
        load_checkpoint(json_path)


def test_shipped_weights_alone_replaced_are_refused_at_load(tiers):
    shipped, _ = tiers
    weights = shipped / "ship-pneu-v2.pt"
    weights.write_bytes((shipped / "ship-pneu-v1.pt").read_bytes())
    assert "ship-pneu-v2" in {e.name for e in list_models()[0]}  # its description is intact
    with pytest.raises(CheckpointError, match="ship-pneu-v2.pt does not match the checksum manifest"):
        load_checkpoint(shipped / "ship-pneu-v2.json")


def test_a_changed_operating_point_in_a_shipped_description_is_refused(tiers):
    shipped, _ = tiers
    json_path = shipped / "ship-pneu-v1.json"
    description = json.loads(json_path.read_text())
    description["operating_point"]["threshold"] = 0.99  # every film routine
    json_path.write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match="checksum manifest"):
        load_checkpoint(json_path)
    with pytest.raises(ModelNotFound, match="The default model of the pneumonia task, ship-pneu-v1, cannot be used"):
        find_model(None, task="pneumonia")  # refused: not read by the spare version or by another task's model


def test_a_damaged_default_is_refused_never_replaced_by_another_model_or_task(tiers):
    """Found by a CLI audit: with the pneumonia default damaged, predict went on with the COVID model (the one
    task left with a default) and said nothing; a damaged site default gave the shipped one, another threshold."""
    shipped, site = tiers
    with (shipped / "ship-pneu-v1.json").open("a") as description:
        description.write("x")
    for task in (None, "pneumonia"):
        with pytest.raises(ModelNotFound, match="The default model of the pneumonia task, ship-pneu-v1, cannot be "
                                                "used: .*ship-pneu-v1.json.* Name another model"):
            find_model(None, task=task)
    with pytest.raises(ModelNotFound, match="the pneumonia task, ship-pneu-v1, which reads NORMAL, PNEUMONIA"):
        find_default_for_classes(("NORMAL", "PNEUMONIA"))
    assert find_model(None, task="tuberculosis").name == "ship-tb-v1"  # other tasks are served as before
    assert find_model("ship-pneu-v2").name == "ship-pneu-v2"  # and a model named is used
    assert list_models()[1][-1].startswith("ship-pneu-v1, the default model of the pneumonia task, cannot be used")
    save(site, "site-pneu-v1")
    ensure_default("site-pneu-v1")  # a new model does not take the place of a default chosen on purpose
    assert not (site / REGISTRY_FILE).exists()
    set_default("site-pneu-v1")  # choosing another one does
    assert find_model(None).name == "site-pneu-v1" and find_default_for_classes(PNEUMONIA).name == "site-pneu-v1"
    (site / "site-pneu-v1.json").write_text("{bad")  # the site's own choice damaged: not the shipped one instead
    with pytest.raises(ModelNotFound, match="The default model of the pneumonia task, site-pneu-v1, cannot be"):
        find_model(None)


def test_a_shipped_description_swapped_just_after_its_check_is_not_what_gets_used(tiers, monkeypatch):
    """The bytes checked against the manifest are the bytes parsed: a description replaced between the check and
    the read (threshold 0.99: every film routine) never reaches a page."""
    shipped, _ = tiers
    json_path = shipped / "ship-pneu-v1.json"
    original = load_checkpoint(json_path).record.operating_point.threshold
    verify = manifest.read_verified

    def then_swap(path, directory=None):
        data = verify(path, directory)
        if path.suffix == ".json":
            description = json.loads(data)
            description["operating_point"]["threshold"] = 0.99
            path.write_text(json.dumps(description))
        return data

    shipped_bytes = json_path.read_bytes()
    monkeypatch.setattr(manifest, "read_verified", then_swap)
    assert load_checkpoint(json_path).record.operating_point.threshold == original != 0.99
    json_path.write_bytes(shipped_bytes)  # and again, while the registry lists the models
    entries, _ = list_models()
    assert next(e for e in entries if e.name == "ship-pneu-v1").record.operating_point.threshold == original


def test_a_shipped_model_missing_from_the_manifest_is_refused(tiers):
    shipped, _ = tiers
    json_path = save(shipped, "smuggled-v1")
    with pytest.raises(CheckpointError, match="not in its checksum manifest"):
        load_checkpoint(json_path)
    assert any("smuggled-v1.json" in p for p in list_models()[1])


@pytest.mark.parametrize("damage", ["missing", "malformed"])
def test_without_a_sound_manifest_no_shipped_model_loads(tiers, damage):
    shipped, site = tiers
    if damage == "missing":
        (shipped / manifest.MANIFEST_FILE).unlink()
    else:
        (shipped / manifest.MANIFEST_FILE).write_text("not a checksum line\n")
    save(site, "site-pneu-v1")
    entries, problems = list_models()
    assert [e.name for e in entries] == ["site-pneu-v1"] and len(problems) == 5
    assert all(manifest.MANIFEST_FILE in p for p in problems[:3])
    assert all("the default model of the" in p for p in problems[3:])  # both tasks' defaults are unusable
    with pytest.raises(CheckpointError, match=manifest.MANIFEST_FILE):
        load_checkpoint(shipped / "ship-pneu-v1.json")
    assert load_checkpoint(site / "site-pneu-v1.json").name == "site-pneu-v1"


def test_the_shipped_chest_film_detector_is_checked_against_the_manifest(tiers, settings_env):
    from core.serving.chest_check import DETECTOR_NAME, ChestFilmDetector

    shipped, _ = tiers
    real = Path(__file__).resolve().parent.parent / "checkpoints" / "detector"
    (shipped / "detector").mkdir()
    for suffix in (".json", ".pt"):
        name = f"{DETECTOR_NAME}{suffix}"
        (shipped / "detector" / name).write_bytes((real / name).read_bytes())
    manifest.write_manifest(shipped)
    settings_env(CXR_DETECTOR_DIR=str(shipped / "detector"))
    threshold = ChestFilmDetector.load().threshold
    assert threshold > 0
    description = json.loads((shipped / "detector" / f"{DETECTOR_NAME}.json").read_text())
    description["threshold"] = threshold * 1000  # nothing would ever be flagged
    (shipped / "detector" / f"{DETECTOR_NAME}.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match=f"{DETECTOR_NAME}.json does not match the checksum manifest"):
        ChestFilmDetector.load()


# --- names ----------------------------------------------------------------------------------------------------

BAD_NAMES = ["../escaped", "a/b", "/etc/passwd", ".hidden", "", "x" * 65, "two words", "glob*", "br[ack]et",
             "na\u00efve", "a\\b", "line\nbreak", "trailing\n"]


@pytest.mark.parametrize("name", ["a", "pneumonia-cnn5-v1", "x" * 64, "A.b_c-9", "v..1"])
def test_plain_names_are_accepted(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", [None, 7, b"bytes", Path("x")], ids=repr)
def test_a_name_must_be_text(name):
    with pytest.raises(InvalidModelName):
        check_model_name(name)


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_names_that_could_be_paths_are_refused_everywhere(tiers, name):
    shipped, site = tiers
    with pytest.raises(InvalidModelName, match="letters, digits"):
        check_model_name(name)
    with pytest.raises(InvalidModelName):
        find_model(name)
    with pytest.raises(InvalidModelName):
        set_default(name)
    model, _ = build_model("logistic", 2, 32)
    with pytest.raises(InvalidModelName):
        ship_version(model, record_for(""), name)
    assert not site.exists() or not any(site.iterdir())


def test_a_name_whose_version_suffix_would_pass_64_characters_is_refused(tiers):
    with pytest.raises(InvalidModelName):
        next_version_name("x" * 62)


def test_cli_train_and_calibrate_refuse_a_path_as_a_name(run_cli, kermany_train, tmp_path):
    site = tmp_path / "models"
    result = run_cli("train", kermany_train, "--arch", "cnn5", "--epochs", "1", "--name", "../escaped",
                     checkpoints=site)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.json_lines()
    assert "letters, digits" in line["error"] and "../escaped" not in line["error"]
    assert not site.exists() and not (tmp_path / "escaped-v1.json").exists()
    refused = run_cli("calibrate", "../../etc/x", "--target-sensitivity", "0.97", checkpoints=site)
    assert refused.returncode == 1 and "letters, digits" in refused.json_lines()[0]["error"]


def test_a_background_job_refuses_a_path_as_a_name_before_it_starts(tiers, kermany_train, tmp_path):
    from core.jobs.jobs import start_job
    from core.store.records import TrainConfig

    with pytest.raises(InvalidModelName):
        start_job(kermany_train, TrainConfig(arch="mlp", epochs=1, image_size=32, max_films=40), name="../escaped",
                  root=tmp_path / "jobs")
    assert not (tmp_path / "jobs").exists() or not any((tmp_path / "jobs").iterdir())


@pytest.mark.slow
def test_training_without_a_folder_writes_to_the_site_tier(tiers, kermany_train):
    from core.store.records import TrainConfig
    from core.training.train import train

    shipped, site = tiers
    before = snapshot(shipped)
    record = train(kermany_train, TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=100,
                                              augment=False), name="tiered")
    assert record.name == "tiered-v1" and (site / "tiered-v1.pt").is_file() and (site / "tiered-v1.json").is_file()
    assert snapshot(shipped) == before
    assert find_model("tiered-v1").tier == SITE and find_model(None, task="pneumonia").name == "ship-pneu-v1"
