"""Recalibrating a model: a new version, same weights, a threshold for another sensitivity target."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from core import clock
import corpus
from core.errors import CalibrationError, DatasetError
from core.models.inference import probabilities_in_batches
from core.store.checkpoints import load_checkpoint
from core.store.descriptions import attach_measured_elsewhere
from core.store.records import MeasuredElsewhere, ModelRecord, read_model_record
from core.store.registry import list_models, read_registry
from core.training.calibrate import calibrate
from core.films.folders import discover
from core.films.tensor import load_tensors
from core.training.data import patient_split
from core.training.train import maybe_subset
from dashboard.components.reports import threshold_value
from dashboard.components.travel import elsewhere_summaries


@pytest.fixture
def registry(trained_model, tmp_path):
    """A private registry holding a copy of the session model, its task's default (calibrate adds versions)."""
    return corpus.copy_registry(trained_model.directory, tmp_path / "models")


def test_new_version_reaches_the_new_target_with_the_same_weights(trained_model, registry, kermany_train):
    old = trained_model.record
    new = calibrate(old.name, 0.995, directory=registry)
    assert isinstance(new, ModelRecord)
    assert new.name == old.name.rsplit("-v", 1)[0] + "-v2"
    assert read_model_record(registry / f"{new.name}.json") == new  # returned as stored
    point = new.operating_point
    assert point.target_sensitivity == 0.995 and point.validation_sensitivity >= 0.995
    assert point.threshold <= old.operating_point.threshold  # higher target, lower threshold
    assert new.report.sensitivity == pytest.approx(point.validation_sensitivity)
    assert new.report.auc == pytest.approx(old.report.auc, abs=1e-6)  # same weights, same films
    stored = json.loads((registry / f"{new.name}.json").read_text())
    assert stored["calibration"] == {"from": old.name, "previous_threshold": old.operating_point.threshold,
                                     "previous_policy": old.operating_point.policy, "target_sensitivity": 0.995,
                                     "source": "validation", "folder": None, "films": None}
    assert new.training == old.training and new.data == old.data
    assert new.inference_ms_per_film > 0  # measured again for the new version
    assert new.created.endswith("Z") and clock.parse(new.created) >= clock.parse(old.created)  # UTC
    before, after = load_checkpoint(trained_model.json_path).model, load_checkpoint(registry / f"{new.name}.json").model
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    # Recompute the validation scores independently: the shipped threshold is the one the rule picks.
    films = discover(kermany_train)
    _, val = patient_split(maybe_subset(films, old.training.config), 0.2, 0)
    loaded = load_checkpoint(registry / f"{new.name}.json")
    scores = point.abnormal_scores(probabilities_in_batches(loaded.model, load_tensors(val, loaded.image_size)))
    sick = val.labels == 1
    assert np.mean(scores[sick] >= point.threshold) >= 0.995
    film = np.min(scores[scores >= point.threshold])  # the film that set it, a hair above (THRESHOLD_MARGIN)
    assert np.mean(scores[sick] >= np.min(scores[scores > film])) < 0.995  # next one up misses
    assert [e.name for e in list_models(registry)[0]].count(new.name) == 1
    # without --set-default the task keeps its default
    assert read_registry(registry).task_defaults == {old.task: old.name}


def test_refuses_a_target_outside_the_sensible_range(trained_model, registry):
    for target in (0.3, 1.0, 1.5):
        with pytest.raises(CalibrationError, match="between 0.5 and 0.999"):
            calibrate(trained_model.name, target, directory=registry)


def test_refuses_films_that_are_not_the_validation_films(trained_model, registry, films_dir):
    with pytest.raises(DatasetError, match="not the ones .* was validated on"):
        calibrate(trained_model.name, 0.98, data_dir=films_dir, directory=registry)
    # nothing registered
    assert sorted(p.name for p in registry.glob("*.json")) == [trained_model.json_path.name, "registry.json"]
    assert len(read_registry(registry).promotions) == 1


def test_another_tasks_folder_is_refused_for_its_classes(trained_model, registry, data_dir):
    """A CLI review: a COVID-19 folder given for a pneumonia model was said to hold "files added, removed or
    changed"; its classes are what is wrong."""
    with pytest.raises(DatasetError) as refused:
        calibrate(trained_model.name, 0.98, data_dir=data_dir / "covid-3class", directory=registry)
    assert str(refused.value) == (f"The classes in shared-data/covid-3class are COVID-19, NORMAL, VIRAL PNEUMONIA, not "
                                  f"{trained_model.name}'s (NORMAL, PNEUMONIA): another task's folder; name "
                                  f"{trained_model.name}'s training folder as it was.")


def test_cli_reports_the_new_version_and_fails_as_json(trained_model, registry, run_cli, kermany_train):
    name = trained_model.name
    done = run_cli("calibrate", name, "--target-sensitivity", "0.99", "--data", kermany_train,
                   "--set-default", checkpoints=registry)
    assert done.returncode == 0, done.stderr
    out = done.json_lines()[0]
    assert set(out) == {"name", "from", "default", "previous_threshold", "source", "validation"}  # the CLI's schema
    assert out["default"] is True  # --set-default
    assert out["source"] == "validation"
    assert set(out["validation"]) == {"n", "auc", "accuracy", "sensitivity", "specificity", "threshold"}
    assert out["from"] == name and out["validation"]["sensitivity"] >= 0.99
    assert out["previous_threshold"] == trained_model.record.operating_point.threshold
    stored = json.loads((registry / "registry.json").read_text())
    assert stored["default"] == out["name"] and stored["task_defaults"] == {trained_model.record.task: out["name"]}
    assert (stored["promotions"][-1]["name"], stored["promotions"][-1]["previous"]) == (out["name"], name)
    bad = run_cli("calibrate", "no-such-model", "--target-sensitivity", "0.99", checkpoints=registry)
    assert bad.returncode == 1 and "No model named 'no-such-model'" in bad.json_lines()[0]["error"]


def _measured(title: str, threshold: float | None) -> MeasuredElsewhere:
    return MeasuredElsewhere(title=title, films=f"{title}'s films", measured_by="a tester",
                             class_counts={"NORMAL": 80, "PNEUMONIA": 120}, threshold=threshold, auc=0.9,
                             sensitivity=0.9, specificity=0.8)


def test_figures_measured_elsewhere_stay_at_the_threshold_they_were_read_at(trained_model, registry):
    """The same weights keep others' figures, each at the threshold it was read at (the previous one where none
    was reported), so the card says they are not at the new threshold; rounded weights drop them."""
    old = trained_model.record
    attach_measured_elsewhere(registry / f"{old.name}.json", _measured("Site A", 0.5))
    attach_measured_elsewhere(registry / f"{old.name}.json", _measured("Site B", None))
    new = calibrate(old.name, 0.995, directory=registry)
    was, now = old.operating_point.threshold, new.operating_point.threshold
    assert [(m.title, m.threshold, m.sensitivity) for m in new.measured_elsewhere] == [
        ("Site A", 0.5, 0.9), ("Site B", was, 0.9)]
    assert elsewhere_summaries(new)[1].startswith(f"**Site B** (200 films, read at threshold {was:.3f}; this "
                                                  f"version's is now {threshold_value(now, was)}): AUC 0.900")
    # weights stored before float16 storage (float32, not representable in float16) are rounded when stored again:
    # other weights than the ones measured
    weights = registry / f"{old.name}.pt"
    payload = torch.load(weights, weights_only=True)
    payload["model"] = {k: v.float() * (1 + 1e-5) if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, weights)
    stored = json.loads((registry / f"{old.name}.json").read_text())
    stored["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (registry / f"{old.name}.json").write_text(json.dumps(stored))
    assert calibrate(old.name, 0.99, directory=registry).measured_elsewhere == ()


def test_a_device_out_of_memory_is_a_message_and_registers_nothing(trained_model, registry, monkeypatch):
    """Found by a review: a GPU filled by a training job raised torch's OutOfMemoryError through the Retrain page's
    calibration, which catches only the program's own errors: a traceback."""
    import torch

    import core.training.calibrate as calibration
    from core.errors import DeviceOutOfMemory

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(calibration, "validate_for_shipping", full)
    before = sorted(p.name for p in registry.iterdir())
    with pytest.raises(DeviceOutOfMemory, match="^This computer ran out of memory while calibrating; .* Nothing was "
                                                "registered"):
        calibration.calibrate(trained_model.name, 0.97, directory=registry)
    assert sorted(p.name for p in registry.iterdir()) == before


def test_a_copy_without_its_population_file_calibrates_and_one_without_a_normal_class_is_refused(trained_model,
                                                                                                  registry):
    """Found by a review: a version copied without NAME.population.pt loads without its check, and calibrating it
    then failed after all the work (a ValueError, a traceback on the page); the CLI registered a copy of a model
    with no normal class, whose reading no threshold changes, with an audit line for a target nothing met."""
    from core.models.build import build_model
    from core.store.checkpoints import save_checkpoint
    from core.store.records import ModelArgs
    from core.store.reports import OperatingPoint

    (registry / f"{trained_model.name}.population.pt").unlink()
    stored = calibrate(trained_model.name, 0.97, directory=registry)
    assert stored.population_check is None and stored.operating_point.target_sensitivity == 0.97
    classes = ("COVID-19", "TUBERCULOSIS")  # no normal class: every film read by its most probable class
    point = OperatingPoint(classes=classes, normal_index=None, threshold=0.5)
    save_checkpoint(registry, build_model("logistic", 2, 32)[0], ModelRecord(
        name="abnormal-v1", task="covid-19-tuberculosis", arch="logistic", classes=classes,
        model_args=ModelArgs(num_classes=2, image_size=32), operating_point=point))
    before = sorted(p.name for p in registry.iterdir())
    with pytest.raises(CalibrationError, match="^abnormal-v1 has no normal class, so it has no threshold"):
        calibrate("abnormal-v1", 0.98, directory=registry)
    assert sorted(p.name for p in registry.iterdir()) == before


def test_a_moved_training_folder_is_named_by_its_label_and_the_command_s_own_need(trained_model, tmp_path):
    """A CLI review: fit-population said "Dataset folder a folder outside the data roots does not exist", and
    framing-check that the films were needed "to re-read its report at the new threshold" (it sets none)."""
    from core.training.calibrate import recorded_split
    from core.training.fit_population import recorded_training_split

    training = trained_model.record.training.model_copy(update={"data_dir": str(tmp_path / "moved" / "ds")})
    record = trained_model.record.model_copy(update={"training": training})
    with pytest.raises(DatasetError) as refused:
        recorded_training_split(record)
    assert str(refused.value) == (f"The training folder of {record.name} (a folder outside the data roots) is not on "
                                  "this server; name the folder it moved to (command line: --data).")
    with pytest.raises(CalibrationError) as refused:
        recorded_split(record)
    assert "its films are needed to rebuild its validation split" in str(refused.value)
    assert "threshold" not in str(refused.value) and str(tmp_path) not in str(refused.value)
