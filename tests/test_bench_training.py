"""The GPU session's benches: the default's recipe as the Makefile ships it, its sum, the cuDNN experiment."""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import default_recipe as training  # noqa: E402


def _makefile_variable(name: str) -> list[str]:
    """The words of ``name := ...`` after ``core train $(DATA)``, continuation lines joined, comment dropped."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = re.search(rf"^{name} := (.*)$", text, re.MULTILINE).group(1).split("#")[0]
    words = shlex.split(line)
    return words[words.index("$(DATA)") + 1:]


def _options(words) -> dict[str, str | None]:
    """``--flag value`` pairs and bare ``--flag``s, without the epoch counts the target run sets itself."""
    options, words = {}, list(words)
    for i, word in enumerate(words):
        if word.startswith("--"):
            following = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else None
            options[word] = following
    return {k: v for k, v in options.items() if k not in ("--epochs", "--patience")}


def test_the_gpu_target_run_trains_the_default_recipe_the_makefile_ships():
    assert _options(training.WIDE_RECIPE) == _options(_makefile_variable("WIDE"))
    assert _options(training.LITE1_RECIPE) | {"--seed": "3"} == _options(_makefile_variable("LITE1"))
    shipped = (ROOT / "Makefile").read_text()
    for _, flags in training.DEFAULT_MEMBERS:
        options = _options(flags)
        if options["--arch"] == "resnet18":  # the two ResNet-18s shipped in the default, by seed
            assert f"$(WIDE) --seed {options['--seed']} $(TRIAL) --name pneumonia-resnet18-224-wide-all" in shipped
    assert [_options(flags)["--arch"] for _, flags in training.DEFAULT_MEMBERS] == [
        "resnet18", "resnet18", "efficientnet_lite1"]
    assert re.search(rf"ENSEMBLE_TARGET \?= {re.escape(training.ENSEMBLE_TARGET)}\b", shipped)


def test_the_target_run_sums_every_step_and_says_whether_it_met_the_target():
    runs = [training.Run("member", wall=100.0), training.Run("ensemble", wall=79.0)]
    lines = training.default_recipe_lines(runs, "a GPU")
    assert lines[-1] == "- in all 179.0 s (target < 180 s: met)"
    runs[1].wall = 81.0
    assert training.default_recipe_lines(runs, "a GPU")[-1] == "- in all 181.0 s (target < 180 s: not met)"


def test_a_failed_step_is_shown_with_its_reason_and_no_total():
    runs = [training.Run("member", wall=40.0),
            training.Run("lite1", wall=2.0, problem="efficientnet_lite1 needs its ImageNet weights")]
    lines = training.default_recipe_lines(runs, "a GPU")
    assert lines[-1] == "- lite1: failed: efficientnet_lite1 needs its ImageNet weights"
    assert not any("in all" in line for line in lines)


def test_the_cudnn_experiment_changes_only_benchmark_mode_and_prints_each_epoch(monkeypatch):
    """bench/cudnn_choice.py: `core train` as the product runs it, but with benchmark mode as asked after
    prepare_hardware set it (here a CPU run, where the product leaves the flag alone)."""
    import torch

    from bench import cudnn_choice
    from core import cli
    from core.store.records import TrainConfig
    from core.training import train

    seen = []
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after
    monkeypatch.setattr(train, "prepare_hardware", train.prepare_hardware)  # the experiment replaces it
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(
        (argv, train.prepare_hardware(TrainConfig(arch="cnn5", device="cpu").resolved()).device.type,
         torch.backends.cudnn.benchmark)) or 0)
    for mode in cudnn_choice.MODES:
        assert cudnn_choice.train_with_benchmark(mode, ["DIR", "--epochs", "3"]) == 0
    assert seen == [(["train", "DIR", "--epochs", "3"], "cpu", True), (["train", "DIR", "--epochs", "3"], "cpu", False)]
    record = {"training": {"seconds": 9.0, "checks_seconds": {"validation report": 1.0}, "history": [
        {"epoch": 1, "seconds": 5.0, "steps_seconds": 4.0, "validation_seconds": 0.5},
        {"epoch": 2, "seconds": 6.5, "steps_seconds": 1.2, "validation_seconds": 0.1}]}}
    lines = cudnn_choice.history_lines("off", training.Run("x", wall=12.0), record)
    assert lines[0].startswith("benchmark mode off: 12.0 s process wall, core train's own 9.0 s")
    assert lines[-2:] == ["| 1 | 4.0 | 0.5 | 5.0 |", "| 2 | 1.2 | 0.1 | 1.5 |"]


def test_the_cpu_targets_say_what_2_5x_leaves_for_everything_but_the_training_phase():
    from bench.training_runs import Run, targets
    seed = Run("seed", wall=81.5, phase_seconds=78.3, phase_films=1200)
    best = Run("core train --precision bf16", wall=44.9, phase_seconds=28.6, phase_films=896)
    lines = targets(seed, best, bare_bf16=35.9, bare_fp32=18.0, title="Targets")
    assert "- `core train --precision bf16` end to end: 1.82x the seed-style loop (target >= 2.5x)" in lines
    (leaves,) = [line for line in lines if line.startswith("- what 2.5x leaves")]
    assert leaves == ("- what 2.5x leaves: 32.6 s for the whole process, so with its training phase as measured "
                      "(28.6 s) 4.0 s for everything else (start-up, decoding, the checks after the last epoch), "
                      "which took 16.3 s; with nothing but the training phase the run would be 2.85x, and with "
                      "nothing but bare steps 3.27x")
