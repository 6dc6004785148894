"""A short real training run (the session model: cnn5, 3 epochs, 64 px, 400 Kermany films) learns something.

Measured with seed 0 on CPU: validation AUC 0.96 (epochs 0.80 / 0.88 / 0.96); on the 16 full-resolution
films it never saw, AUC 0.80 and accuracy 11/16 at the operating point. Thresholds leave a wide margin.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.checkpoints import load_checkpoint
from core.evaluate import evaluate_folder
from core.operating_point import DEFAULT_TARGET_SENSITIVITY
from core.train import TrainConfig, TrainingCancelled, train


def test_validation_auc_is_well_above_chance(trained_model):
    report = trained_model.metadata["report"]
    assert report["auc"] > 0.85
    low, high = report["auc_ci"]
    assert low <= report["auc"] <= high and low > 0.7
    assert report["accuracy"] > 0.7


def test_operating_point_reaches_the_target_sensitivity_on_validation(trained_model):
    point = trained_model.metadata["operating_point"]
    assert point["target_sensitivity"] == DEFAULT_TARGET_SENSITIVITY == 0.95
    assert point["validation_sensitivity"] >= 0.95
    assert point["normal_class"] == "NORMAL"
    assert trained_model.metadata["report"]["sensitivity"] == pytest.approx(point["validation_sensitivity"])


def test_unseen_full_resolution_films_beat_chance(trained_model, films_dir):
    report = evaluate_folder(load_checkpoint(trained_model.json_path), films_dir)
    assert report["n"] == 16 and report["skipped"] == []
    assert report["auc"] > 0.65
    assert report["accuracy"] > 0.5
    assert report["sensitivity"] >= 0.75  # an urgent-first triage must not miss most pneumonias


def test_metadata_describes_the_run(trained_model, kermany_train):
    meta = trained_model.metadata
    assert meta["name"] == "pneumonia-cnn5-v1" and meta["task"] == "pneumonia"
    assert (meta["arch"], meta["classes"]) == ("cnn5", ["NORMAL", "PNEUMONIA"])
    assert meta["model_args"] == {"num_classes": 2, "image_size": 64}
    assert meta["input"]["pixel_range"] == [0.0, 1.0] and meta["input"]["channels"] == 1
    history = meta["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert meta["training"]["best_epoch"] == int(np.argmax([h["val_auc"] for h in history])) + 1
    # the report is the best epoch's weights, rounded to their float16 storage
    assert meta["report"]["auc"] == pytest.approx(max(h["val_auc"] for h in history), abs=0.01)
    train_n, val_n = meta["data"]["train"]["n"], meta["data"]["validation"]["n"]
    assert train_n + val_n == 400 and val_n == meta["report"]["n"]
    assert val_n / 400 == pytest.approx(0.2, abs=0.05)
    assert meta["parameters"] > 0 and meta["inference_ms_per_film"] > 0
    json.dumps(meta)  # plain JSON all the way down


def test_progress_events_cover_the_run(trained_model):
    phases = [e["phase"] for e in trained_model.events]
    assert phases[-1] == "done"
    assert phases.count("epoch") == 3
    train_events = [e for e in trained_model.events if e["phase"] == "train"]
    progress = [e["progress"] for e in train_events]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    assert all(np.isfinite(e["loss"]) for e in train_events)


def test_session_model_is_registered_as_default(trained_model):
    registry = json.loads((trained_model.directory / "registry.json").read_text())
    assert registry["default"] == trained_model.name
    assert registry["task_defaults"] == {"pneumonia": trained_model.name}


@pytest.mark.slow
def test_cancelled_training_writes_nothing(tmp_path, kermany_train):
    config = TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40, augment=False)
    with pytest.raises(TrainingCancelled):
        train(kermany_train, config, directory=tmp_path, should_stop=lambda: True)
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.pt"))


def test_config_resolves_architecture_defaults():
    scratch = TrainConfig(arch="cnn5").resolved()
    assert (scratch.image_size, scratch.pretrained, scratch.lr) == (128, False, 1e-3)
    pretrained = TrainConfig(arch="resnet18").resolved()
    assert (pretrained.image_size, pretrained.pretrained, pretrained.lr) == (224, True, 3e-4)
    assert TrainConfig(arch="mlp", image_size=48, lr=0.01).resolved().lr == 0.01
    with pytest.raises(ValueError):
        TrainConfig(arch="vgg99").resolved()
