"""Recalibrating a model: a new version, same weights, a threshold for another sensitivity target."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.calibrate import CalibrationError, calibrate
from core.checkpoints import load_checkpoint
from core.data import discover, load_tensors, patient_split
from core.errors import DatasetError
from core.inference import probabilities_in_batches
from core.operating_point import abnormal_scores
from core.registry import list_models


@pytest.fixture
def registry(trained_model, tmp_path):
    """A private registry holding a copy of the session model (calibrate adds versions to it)."""
    for suffix in (".json", ".pt"):
        shutil.copy(trained_model.json_path.with_suffix(suffix), tmp_path)
    return tmp_path


def test_new_version_reaches_the_new_target_with_the_same_weights(trained_model, registry, kermany_train):
    old = trained_model.metadata
    new_path = calibrate(old["name"], 0.995, directory=registry)
    new = json.loads(new_path.read_text())
    assert new["name"] == old["name"].rsplit("-v", 1)[0] + "-v2"
    point = new["operating_point"]
    assert point["target_sensitivity"] == 0.995 and point["validation_sensitivity"] >= 0.995
    assert point["threshold"] <= old["operating_point"]["threshold"]  # higher target, lower threshold
    assert new["report"]["sensitivity"] == pytest.approx(point["validation_sensitivity"])
    assert new["report"]["auc"] == pytest.approx(old["report"]["auc"], abs=1e-6)  # same weights, same films
    assert new["calibration"] == {"from": old["name"], "previous_threshold": old["operating_point"]["threshold"],
                                  "previous_policy": old["operating_point"]["policy"], "target_sensitivity": 0.995}
    assert new["training"] == old["training"] and new["data"] == old["data"]
    assert new["inference_ms_per_film"] > 0  # measured again for the new version
    # Recompute the validation scores independently: the shipped threshold is the one the rule picks.
    films = discover(kermany_train)
    from core.train import TrainConfig, maybe_subset
    _, val = patient_split(maybe_subset(films, TrainConfig(**old["training"]["config"])), 0.2, 0)
    loaded = load_checkpoint(new_path)
    scores = abnormal_scores(probabilities_in_batches(loaded.model, load_tensors(val, loaded.image_size)), 0)
    sick = val.labels == 1
    assert np.mean(scores[sick] >= point["threshold"]) >= 0.995
    assert np.mean(scores[sick] >= np.min(scores[scores > point["threshold"]])) < 0.995  # next one up misses
    assert [e.name for e in list_models(registry)[0]].count(new["name"]) == 1


def test_refuses_a_target_outside_the_sensible_range(trained_model, registry):
    for target in (0.3, 1.0, 1.5):
        with pytest.raises(CalibrationError, match="between 0.5 and 0.999"):
            calibrate(trained_model.metadata["name"], target, directory=registry)


def test_refuses_films_that_are_not_the_validation_films(trained_model, registry, films_dir):
    with pytest.raises(DatasetError, match="not the ones .* was validated on"):
        calibrate(trained_model.metadata["name"], 0.98, data_dir=films_dir, directory=registry)
    assert len(list(registry.glob("*.json"))) == 1  # nothing registered


def test_cli_reports_the_new_version_and_fails_as_json(trained_model, registry, run_cli, kermany_train):
    name = trained_model.metadata["name"]
    done = run_cli("calibrate", name, "--target-sensitivity", "0.99", "--data", kermany_train,
                   "--set-default", checkpoints=registry)
    assert done.returncode == 0, done.stderr
    out = done.json_lines()[0]
    assert out["from"] == name and out["validation"]["sensitivity"] >= 0.99
    assert json.loads((registry / "registry.json").read_text())["default"] == out["name"]
    bad = run_cli("calibrate", "no-such-model", "--target-sensitivity", "0.99", checkpoints=registry)
    assert bad.returncode == 1 and "No model named 'no-such-model'" in bad.json_lines()[0]["error"]
