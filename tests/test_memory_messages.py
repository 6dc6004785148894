"""Out-of-memory messages as each edge can act on them (a messages review): the words a film's card showed a
clinician ended with the command line's own steps, "(nvidia-smi shows which) ... (--device cpu)", which the page
offers no way to take; the command line still gives them."""
from __future__ import annotations

import json

import pytest
import torch

from core.models.device import place_model
from core.models.inference import out_of_memory


def test_a_page_gets_the_words_and_the_command_line_its_own_steps_too(monkeypatch, capsys):
    said = out_of_memory("reading films", 1, torch.device("cuda"))
    assert "--device" not in str(said) and "nvidia-smi" not in str(said) and "try again once it is free" in str(said)
    assert "--device cpu" in said.command_step and "nvidia-smi" in said.command_step
    import core.cli as cli
    import core.serving.commands as serving

    def full(args):
        raise said

    monkeypatch.setattr(serving, "run_predict", full)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["predict", "film.png"])
    assert stopped.value.code == 1
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["error"] == f"{said} {said.command_step}"


def test_a_model_with_no_room_is_said_without_command_line_steps(monkeypatch):
    from core.errors import DeviceOutOfMemory

    class Full(torch.nn.Module):
        def to(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceOutOfMemory) as refused:
        place_model(Full(), torch.device("cpu"))
    assert "--device" not in str(refused.value) and "--device cpu" in refused.value.command_step


def test_predict_says_a_film_s_out_of_memory_with_the_command_line_s_step(monkeypatch, capsys, normal_film_path):
    """A re-read of the change: predict printed each film's failure without its command-line step."""
    import argparse

    from core.serving import commands

    said = out_of_memory("reading films", 1, torch.device("cuda"))
    commands._film_failed(argparse.Namespace(json=True), str(normal_film_path), said)
    assert json.loads(capsys.readouterr().out)["error"] == f"{said} {said.command_step}"


def test_training_out_of_memory_offers_a_page_only_what_its_form_has(monkeypatch, kermany_train, tmp_path):
    """A review: a job's failure on the Retrain page said "try a smaller --batch-size", which its form does not
    offer, and on a CPU run told the user to check that no other job used the GPU."""
    from core.errors import DeviceOutOfMemory
    from core.store.records import TrainConfig
    from core.training import train as train_module

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(train_module, "fit", out_of_memory)
    config = TrainConfig(arch="cnn5", epochs=1, image_size=32, max_films=40, batch_size=256, device="cpu")
    with pytest.raises(DeviceOutOfMemory) as refused:
        train_module.train(kermany_train, config, directory=tmp_path)
    words = str(refused.value)
    assert words.startswith("This computer ran out of memory training cnn5 at 32 px with batch size 256; try a "
                            "smaller image size") and words.endswith("No model was registered.")
    assert "--batch-size" not in words and "GPU" not in words and "nvidia-smi" not in words
    assert "--batch-size" in refused.value.command_step
