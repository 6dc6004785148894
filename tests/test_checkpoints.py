"""Checkpoints and the registry: round trips, refusal of anything unsafe or inconsistent, versions, defaults."""
from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from core import clock
from core.errors import CheckpointError, ModelNotFound
from core.models.build import build_model
from core.store.checkpoints import load_checkpoint, round_to_storage, save_checkpoint
from core.store.records import ModelArgs, ModelRecord
from core.store.registry import (REGISTRY_FILE, checkpoint_dir, find_model, list_models,
                                 read_registry, set_default, shipped_dir, site_dir)
from core.store.versions import next_version_name
from core.store.reports import OperatingPoint
from core.tasks import task_name

CLASSES = ("NORMAL", "PNEUMONIA")


def record_for(name: str, arch: str = "cnn5", image_size: int = 32, classes=CLASSES) -> ModelRecord:
    classes = tuple(classes)
    return ModelRecord(name=name, task=task_name(classes), arch=arch, classes=classes,
                       model_args=ModelArgs(num_classes=len(classes), image_size=image_size),
                       operating_point=OperatingPoint(classes=classes, normal_index=0, threshold=0.4))


def films(n=3, size=32, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def rewrite_weights(json_path: Path, payload) -> None:
    """Replace NAME.pt with ``payload`` and update the JSON's hash, so only the content check can refuse it."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    json_path.with_suffix(".pt").write_bytes(data)
    _update_json(json_path, weights_sha256=hashlib.sha256(data).hexdigest(), weights_bytes=len(data))


def _update_json(json_path: Path, **changes) -> None:
    metadata = json.loads(json_path.read_text())
    metadata.update(changes)
    json_path.write_text(json.dumps(metadata))


@pytest.mark.parametrize("arch", ["logistic", "cnn5", "resnet18", "efficientnet_lite0"])
def test_round_trip_gives_identical_predictions(tmp_path, arch):
    """Bit for bit, also for the ImageNet backbones whose input normalisation is rebuilt on loading rather
    than stored (rounding it before the final evaluation made validation differ from the app)."""
    torch.manual_seed(0)
    model, _ = build_model(arch, 2, 32, pretrained=False)
    model.eval()
    round_to_storage(model)  # what training does before its final evaluation: weights as they will be stored
    stored = save_checkpoint(tmp_path, model, record_for(f"{arch}-v1", arch))
    loaded = load_checkpoint(tmp_path / f"{stored.name}.json")
    with torch.no_grad():
        assert torch.equal(loaded.model(films()), model(films()))
    assert not loaded.model.training
    assert (loaded.name, loaded.classes, loaded.image_size) == (f"{arch}-v1", list(CLASSES), 32)
    assert loaded.operating_point.threshold == 0.4
    assert loaded.record == stored  # the record as written is the record read back


def test_storage_precision_changes_predictions_only_slightly(tmp_path):
    torch.manual_seed(0)
    model, _ = build_model("cnn5", 2, 32)
    model.eval()
    save_checkpoint(tmp_path, model, record_for("unrounded-v1"))
    loaded = load_checkpoint(tmp_path / "unrounded-v1.json")
    with torch.no_grad():
        before, after = torch.softmax(model(films()), 1), torch.softmax(loaded.model(films()), 1)
    torch.testing.assert_close(after, before, atol=5e-3, rtol=0)
    # saving the loaded model again changes nothing: storage rounding is idempotent
    (tmp_path / "again").mkdir()
    save_checkpoint(tmp_path / "again", loaded.model, record_for("unrounded-v1"))
    again = load_checkpoint(tmp_path / "again" / "unrounded-v1.json")
    with torch.no_grad():
        assert torch.equal(again.model(films()), loaded.model(films()))


def test_session_model_round_trips(trained_model, predictor, normal_film_path):
    from core.films.read import read_film
    from core.serving.predict import Predictor

    again = Predictor(load_checkpoint(trained_model.json_path))
    film = read_film(normal_film_path)
    assert again.predict(film).probabilities == predictor.predict(film).probabilities
    record = trained_model.record
    weights = trained_model.weights_path.read_bytes()
    assert record.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert record.weights_bytes == len(weights)
    assert again.loaded.record == record  # what train() returned is exactly what is stored


def test_weights_file_holds_only_tensors_and_plain_identity(trained_model):
    payload = torch.load(trained_model.weights_path, map_location="cpu", weights_only=True)
    assert set(payload) == {"model", "identity"}
    assert all(isinstance(v, torch.Tensor) for v in payload["model"].values())
    floats = {v.dtype for v in payload["model"].values() if v.is_floating_point()}
    assert floats == {torch.float16}  # half precision keeps the shipped lineup small
    assert payload["identity"]["name"] == trained_model.name


def test_save_leaves_no_temporary_files(tmp_path):
    model, _ = build_model("logistic", 2, 32)
    save_checkpoint(tmp_path, model, record_for("m-v1", "logistic"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-v1.json", "m-v1.pt"]


def test_a_record_that_is_not_json_is_refused_before_writing(tmp_path):
    with pytest.raises(pydantic.ValidationError):  # typed records refuse it where they are made
        ModelRecord.model_validate({**record_for("m-v1", "logistic").to_json(), "parameters": object()})
    # model_copy does not validate: save_checkpoint must still refuse it before writing anything
    model, _ = build_model("logistic", 2, 32)
    smuggled = record_for("m-v1", "logistic").model_copy(update={"parameters": object()})
    with pytest.raises((TypeError, ValueError)):
        save_checkpoint(tmp_path, model, smuggled)
    assert list(tmp_path.iterdir()) == []


class Payload:
    """Stands in for any object an attacker could pickle into a weights file."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("extra", [Payload(), os.system, print], ids=["class-instance", "os.system", "builtin"])
def test_pickled_objects_are_refused(copied_model, extra):
    payload = torch.load(copied_model.with_suffix(".pt"), weights_only=True)
    payload["extra"] = extra
    rewrite_weights(copied_model, payload)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(copied_model)


def test_a_pickled_object_as_the_whole_file_is_refused(copied_model):
    rewrite_weights(copied_model, Payload())
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(copied_model)


def test_a_bare_state_dict_is_not_a_checkpoint(copied_model):
    payload = torch.load(copied_model.with_suffix(".pt"), weights_only=True)
    rewrite_weights(copied_model, payload["model"])
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(copied_model)


def test_truncated_weights_are_refused(copied_model):
    weights = copied_model.with_suffix(".pt")
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(copied_model)
    # even when the JSON's hash is made to agree, the half file is not loaded
    _update_json(copied_model, weights_sha256=hashlib.sha256(data[: len(data) // 2]).hexdigest())
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(copied_model)


def test_missing_weights_are_refused(copied_model):
    copied_model.with_suffix(".pt").unlink()
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(copied_model)


@pytest.mark.parametrize("field, value", [
    ("name", "someone-else-v1"),
    ("arch", "mlp"),
    ("classes", ["PNEUMONIA", "NORMAL"]),
    ("model_args", {"num_classes": 2, "image_size": 128}),
])
def test_json_that_disagrees_with_the_weights_is_refused(copied_model, field, value):
    changes = {field: value}
    if field == "classes":  # the operating point reads the same classes, or the description itself is refused
        point = json.loads(copied_model.read_text())["operating_point"]
        changes["operating_point"] = {**point, "classes": value, "normal_index": value.index("NORMAL")}
    _update_json(copied_model, **changes)
    with pytest.raises(CheckpointError, match="disagree"):
        load_checkpoint(copied_model)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    model, _ = build_model("logistic", 2, 32)
    save_checkpoint(tmp_path, model, record_for("m-v1", "logistic", image_size=32))
    json_path = tmp_path / "m-v1.json"
    payload = torch.load(json_path.with_suffix(".pt"), weights_only=True)
    args = {"num_classes": 2, "image_size": 48}  # consistent pair, but 32x32 weights for a 48x48 model
    payload["identity"]["model_args"] = args
    _update_json(json_path, model_args=args)
    rewrite_weights(json_path, payload)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(json_path)


@pytest.mark.parametrize("text, message", [
    ("{not json", "x.json cannot be read"),
    ('{"name": "x"}', "x.json is not a valid ModelRecord: task"),
])
def test_broken_description_is_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "x.json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "x.json")


def test_a_description_without_the_weights_hash_is_refused(copied_model):
    _drop_json_key(copied_model, "weights_sha256")
    with pytest.raises(CheckpointError, match="lacks weights_sha256"):
        load_checkpoint(copied_model)


def test_old_descriptions_keep_loading(copied_model):
    """JSON written before the typed records: unknown keys are ignored, new fields take their defaults."""
    for key in ("members", "population_check", "other_reports", "input"):
        _drop_json_key(copied_model, key)
    _update_json(copied_model, some_retired_field={"x": 1})
    loaded = load_checkpoint(copied_model)
    assert loaded.record.members == () and loaded.record.other_reports == {}
    assert loaded.record.population_check is None


def _drop_json_key(json_path: Path, key: str) -> None:
    data = json.loads(json_path.read_text())
    del data[key]
    json_path.write_text(json.dumps(data))


# --- registry -------------------------------------------------------------------------------------------


def test_registry_folders_come_from_the_environment(isolated_checkpoints, isolated_site_models, settings_env,
                                                    tmp_path):
    # the suite never touches the repo's folder nor the user's data folder
    assert shipped_dir() == isolated_checkpoints.resolve()
    assert checkpoint_dir() == site_dir() == isolated_site_models.resolve()
    settings_env(CXR_CHECKPOINTS=str(tmp_path / "shipped"), CXR_MODELS=str(tmp_path / "site"))
    assert (shipped_dir(), checkpoint_dir()) == ((tmp_path / "shipped").resolve(), (tmp_path / "site").resolve())


def test_next_version_is_one_past_the_highest(tmp_path):
    for name in ("base-v1.json", "base-v3.json", "base-v2x.json", "other-v9.json", "base-extra-v7.json"):
        (tmp_path / name).write_text("{}")
    assert next_version_name("base", tmp_path) == "base-v4"
    assert next_version_name("fresh", tmp_path) == "fresh-v1"


@pytest.mark.slow
def test_training_twice_adds_versions_and_keeps_the_default(tmp_path, kermany_train):
    from core.store.records import TrainConfig
    from core.training.train import train

    config = TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=100, augment=False)
    first = train(kermany_train, config, name="quick", directory=tmp_path)
    second = train(kermany_train, config, name="quick", directory=tmp_path)
    assert (first.name, second.name) == ("quick-v1", "quick-v2")
    assert isinstance(first, ModelRecord) and (tmp_path / "quick-v2.json").exists()
    entries, problems = list_models(tmp_path)
    assert problems == []
    assert [(e.name, e.is_default) for e in entries] == [("quick-v1", True), ("quick-v2", False)]
    assert find_model(None, tmp_path).name == "quick-v1"
    registry = json.loads((tmp_path / REGISTRY_FILE).read_text())
    assert registry["task_defaults"] == {"pneumonia": "quick-v1"} and registry["default"] == "quick-v1"
    assert [(p["name"], p["previous"]) for p in registry["promotions"]] == [("quick-v1", None)]

    set_default("quick-v2", tmp_path)
    assert find_model(None, tmp_path).name == "quick-v2"
    registry = json.loads((tmp_path / REGISTRY_FILE).read_text())
    assert registry["task_defaults"] == {"pneumonia": "quick-v2"} and registry["default"] == "quick-v2"
    assert [(p["name"], p["previous"]) for p in registry["promotions"]] == [("quick-v1", None),
                                                                           ("quick-v2", "quick-v1")]
    third = train(kermany_train, config, name="quick", directory=tmp_path)
    assert third.name == "quick-v3" and find_model(None, tmp_path).name == "quick-v2"


def test_broken_models_are_listed_as_problems_not_fatal(trained_model, tmp_path):
    for source in trained_model.directory.glob(f"{trained_model.name}.*"):  # weights, description, population
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "half-v1.json").write_text("{")
    lone = json.loads(trained_model.json_path.read_text())
    (tmp_path / "lonely-v1.json").write_text(json.dumps({**lone, "name": "lonely-v1"}))
    entries, problems = list_models(tmp_path)
    assert [e.name for e in entries] == [trained_model.name]
    assert len(problems) == 2
    assert any("half-v1.json" in p for p in problems) and any("lonely-v1.json" in p for p in problems)


def test_unknown_model_names_the_available_ones(trained_model):
    with pytest.raises(ModelNotFound, match=trained_model.name):
        find_model("no-such-model", trained_model.directory)


def test_empty_registry_says_train_first(tmp_path):
    with pytest.raises(ModelNotFound, match="Train one first"):
        find_model(None, tmp_path)


def test_session_model_is_the_default_of_its_folder(trained_model):
    entry = find_model(None, trained_model.directory)
    assert entry.name == trained_model.name and entry.is_default
    assert np.isclose(entry.record.report.auc, trained_model.record.report.auc)
    assert read_registry(trained_model.directory).task_defaults == {entry.task: entry.name}


def test_promoting_in_a_second_task_keeps_the_first_tasks_default(tmp_path):
    """One default per task: a promotion in one task leaves the others alone, and each is recorded (UTC)."""
    model, _ = build_model("logistic", 2, 32)
    for name, classes in (("pneu-a-v1", CLASSES), ("pneu-b-v1", CLASSES), ("tb-v1", ("NORMAL", "TUBERCULOSIS"))):
        save_checkpoint(tmp_path, model, record_for(name, "logistic", classes=classes))
    before = datetime.now(timezone.utc).replace(microsecond=0)
    set_default("pneu-a-v1", tmp_path)
    set_default("tb-v1", tmp_path)
    after = datetime.now(timezone.utc)

    registry = read_registry(tmp_path)
    assert registry.task_defaults == {"pneumonia": "pneu-a-v1", "tuberculosis": "tb-v1"}
    assert [(p.task, p.name, p.previous) for p in registry.promotions] == [
        ("pneumonia", "pneu-a-v1", None), ("tuberculosis", "tb-v1", None)]
    for promotion in registry.promotions:
        assert promotion.at.endswith("Z")  # UTC, ISO 8601
        assert before <= clock.parse(promotion.at) <= after + timedelta(seconds=1)
    assert registry.default == "tb-v1"  # the last promoted (the older global pointer, still written)
    stored = json.loads((tmp_path / REGISTRY_FILE).read_text())
    assert stored["default"] == "tb-v1" and len(stored["promotions"]) == 2

    assert find_model(None, tmp_path, task="pneumonia").name == "pneu-a-v1"
    assert find_model(None, tmp_path, task="tuberculosis").name == "tb-v1"
    assert find_model(None, tmp_path).name == "pneu-a-v1"  # no task named: pneumonia's, whoever was promoted last
    entries, _ = list_models(tmp_path)
    assert {e.name for e in entries if e.is_default} == {"pneu-a-v1", "tb-v1"}
    assert entries[0].name == "tb-v1"

    set_default("pneu-b-v1", tmp_path)  # a second promotion in the first task replaces only its default
    registry = read_registry(tmp_path)
    assert registry.task_defaults == {"pneumonia": "pneu-b-v1", "tuberculosis": "tb-v1"}
    assert (registry.promotions[-1].task, registry.promotions[-1].previous) == ("pneumonia", "pneu-a-v1")
    assert len(registry.promotions) == 3
    with pytest.raises(ModelNotFound, match="tuberculosis"):
        find_model(None, tmp_path, task="effusion")


def test_a_registry_with_only_the_old_global_default_keeps_loading(tmp_path):
    """A registry from before defaults were kept per task holds one ``default``: it stays its task's default,
    also after a model of another task is promoted (the file is then rewritten in the per-task form)."""
    model, _ = build_model("logistic", 2, 32)
    for name, classes in (("old-v1", CLASSES), ("old-v2", CLASSES), ("tb-v1", ("NORMAL", "TUBERCULOSIS"))):
        save_checkpoint(tmp_path, model, record_for(name, "logistic", classes=classes))
    (tmp_path / REGISTRY_FILE).write_text(json.dumps({"default": "old-v2"}))
    assert read_registry(tmp_path).default == "old-v2"
    assert find_model(None, tmp_path).name == "old-v2"
    entries, _ = list_models(tmp_path)
    assert {e.name for e in entries if e.is_default} == {"old-v2"}

    set_default("tb-v1", tmp_path)
    assert read_registry(tmp_path).task_defaults == {"pneumonia": "old-v2", "tuberculosis": "tb-v1"}
    assert find_model(None, tmp_path, task="pneumonia").name == "old-v2"
    assert find_model(None, tmp_path).name == "old-v2"  # no task named: still pneumonia's



def test_a_load_that_spans_a_rewrite_of_the_versions_files_is_tried_again(copied_model, monkeypatch):
    """Found by a review: a load spanning fit-population's rewrite refused the model as corrupt. A refusal while the
    files changed is tried again; one while nothing changed is not (a damaged model is refused at once)."""
    from core.store import checkpoints

    real, calls = checkpoints._load_checkpoint, []

    def rewritten_meanwhile(json_path):
        calls.append(json_path)
        if len(calls) == 1:
            json_path.write_text(json_path.read_text() + "\n")  # the description rewritten during the load
            raise CheckpointError("Weights file x.pt does not match its description (truncated, replaced or corrupt).")
        return real(json_path)

    monkeypatch.setattr(checkpoints, "_load_checkpoint", rewritten_meanwhile)
    assert load_checkpoint(copied_model).name == copied_model.stem and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(checkpoints, "_load_checkpoint", lambda p: calls.append(p) or real(p))
    copied_model.with_suffix(".pt").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match="does not match its description"):
        load_checkpoint(copied_model)
    assert len(calls) == 1
