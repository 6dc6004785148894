"""A run whose loss turns NaN stops at once with words that say what to change, and registers nothing.

Found by a review: the NaN loss was sent on as progress the Retrain page could not read (its JSON says null),
so the page froze, and the run then failed in the validation AUC as an "unexpected error (ValueError)"."""
from __future__ import annotations

import json

import pytest

from core.errors import TrainingDiverged
from core.store.records import TrainConfig
from core.training import loop
from core.training.train import train


@pytest.fixture
def nan_from_the_third_step(monkeypatch):
    """The real optimiser step, whose loss reads NaN from the third step on (what an overflow gives)."""
    real, steps = loop._Trainer.step, []

    def step(self, films, labels):
        loss = real(self, films, labels)
        steps.append(loss)
        return float("nan") if len(steps) >= 3 else loss

    monkeypatch.setattr(loop._Trainer, "step", step)
    return steps


def test_a_diverging_run_stops_at_the_step_and_registers_nothing(kermany_train, tmp_path, nan_from_the_third_step):
    events: list = []
    config = TrainConfig(arch="logistic", epochs=2, image_size=64, max_films=160, lr=0.5, precision="fp32")
    with pytest.raises(TrainingDiverged) as caught:
        train(kermany_train, config, directory=tmp_path / "models", on_progress=events.append)
    message = str(caught.value)
    assert message.startswith("Training diverged in epoch 1 of 2: the loss became nan")
    assert "lower learning rate (this run's was 0.5; --lr on the command line)" in message
    assert "fp32 precision" not in message  # it trained in fp32 already
    assert len(nan_from_the_third_step) == 3  # not a step more
    assert [e.step for e in events if e.phase == "train"] == [1, 2]  # every progress event sent was a number
    assert not list((tmp_path / "models").glob("*.json"))
    for event in events:
        assert "null" not in json.dumps(event.model_dump(mode="json", exclude={"time", "message", "done", "total"}))


def test_weights_gone_nan_on_an_epoch_s_last_step_are_a_divergence_not_a_broken_model(kermany_train, tmp_path,
                                                                                      monkeypatch):
    """Found by a review of the day's diff: the loss of the step that broke the weights was still a number, and
    validation's refusal of outputs that are not numbers spoke of choosing another model."""
    import torch

    real, taken = loop._Trainer.step, []

    def step(self, films, labels):  # the real step; the epoch's last one leaves the weights NaN
        loss = real(self, films, labels)
        taken.append(loss)
        if len(taken) == self.steps:
            with torch.no_grad():
                for parameter in self.network.parameters():
                    parameter.fill_(float("nan"))
        return loss

    monkeypatch.setattr(loop._Trainer, "step", step)
    config = TrainConfig(arch="logistic", epochs=2, image_size=64, max_films=160, lr=0.5, precision="bf16")
    with pytest.raises(TrainingDiverged, match=r"^Training diverged in epoch 1 of 2: its outputs stopped being "
                                               r"numbers, .* or in fp32 precision \(the Retrain form"):
        train(kermany_train, config, directory=tmp_path / "models")
