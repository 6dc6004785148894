"""Training on several processes (issue 11): ``torchrun ... -m core train`` runs DistributedDataParallel.

Checked for real on CPU with gloo: two processes on localhost train one epoch on a small real subset and
only rank 0 writes (one model, one registry promotion, one JSON line); rank 0's early-stopping decision
reaches the other rank, so neither waits for ever; the shards split the training films without overlap; a
resumed run gives each rank back its own random state.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from e2e_support import run_ranks

from core.config import DistributedEnvironment, distributed_environment
from core.errors import SettingOutOfRange, TrainingCancelled
from core.films.folders import FilmSet
from core.models.build import build_model
from core.models.device import FP32
from core.store.records import EpochRecord, Fingerprint, TrainConfig, read_model_record
from core.training import loop, train as train_module
from core.training.distributed import Hardware, prepare_hardware
from core.training.resume import RunIdentity, open_run

REPO = Path(__file__).resolve().parent.parent


def _hardware(rank: int, world: int) -> Hardware:
    return Hardware(torch.device("cpu"), FP32, DistributedEnvironment(rank, world, rank, world))


def _films(n: int, classes: int = 2) -> FilmSet:
    labels = np.arange(n) % classes
    return FilmSet(tuple(Path(f"{c}/{i}.png") for i, c in enumerate(labels)), labels,
                   tuple(f"C{c}" for c in range(classes)))


# --- the environment and the split of work --------------------------------------------------------------


def test_the_environment_says_where_this_process_stands():
    assert distributed_environment({}) == DistributedEnvironment(0, 1, 0, 1)
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500"}
    launched = distributed_environment(torchrun)
    assert (launched.rank, launched.world_size, launched.local_rank, launched.local_world_size) == (3, 4, 1, 2)
    assert launched.is_distributed and not launched.is_main
    with pytest.raises(SettingOutOfRange, match="WORLD_SIZE"):
        distributed_environment({"WORLD_SIZE": "two"})
    # a place no launch can fill, or no address to meet at, is refused at once: init_process_group waited half
    # an hour for it, deaf to Ctrl-C (a review)
    for wrong in ({"RANK": "4"}, {"WORLD_SIZE": "-3", "LOCAL_WORLD_SIZE": "1", "RANK": "0"}, {"LOCAL_RANK": "2"},
                  {"LOCAL_WORLD_SIZE": "5"}, {"MASTER_PORT": ""}):
        with pytest.raises(SettingOutOfRange, match="let torchrun set these"):
            distributed_environment({**torchrun, **wrong})
    with pytest.raises(SettingOutOfRange, match="without MASTER_ADDR and MASTER_PORT"):
        distributed_environment({"RANK": "1", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("world", [2, 3])
def test_shards_split_the_training_films_without_overlap(world):
    films = _films(101)
    shards = [_hardware(rank, world).shard(films, seed=0) for rank in range(world)]
    paths = [set(s.paths) for s in shards]
    assert set().union(*paths) == set(films.paths) and sum(map(len, paths)) == len(films)
    assert max(map(len, shards)) - min(map(len, shards)) <= 2  # one film per class at most
    for shard in shards:  # each keeps the class balance
        assert abs(shard.class_counts()[0] - shard.class_counts()[1]) <= 1
    assert _hardware(0, world).shard(films, seed=0).paths == shards[0].paths  # the same on every call
    assert _hardware(0, 1).shard(films, seed=0) is films


def test_the_batch_is_global_and_every_rank_takes_the_same_number_of_steps():
    one, two = _hardware(0, 1), _hardware(1, 2)
    assert (one.rank_batch_size(32, 320), two.rank_batch_size(32, 320)) == (32, 16)
    assert one.steps_per_epoch(32, 320) == two.steps_per_epoch(32, 320) == 10
    assert _hardware(0, 2).steps_per_epoch(32, 321) == two.steps_per_epoch(32, 321)


@pytest.mark.parametrize("films, classes, world, batch", [(102, 2, 2, 2), (103, 4, 4, 4), (1606, 2, 4, 44)])
def test_no_rank_runs_past_its_own_shard(films, classes, world, batch):
    """Found by a review: steps came from the films / processes, but dealing each class out in turn leaves some
    shards smaller, so their last batch came up short (harmless), or empty (a loss of nothing, NaN) when each rank's
    batch is a film or two."""
    films = _films(films, classes)
    shards = [_hardware(rank, world).shard(films, seed=0) for rank in range(world)]
    for rank in range(world):
        hardware = _hardware(rank, world)
        steps = hardware.steps_per_epoch(batch, len(films), hardware.smallest_shard(films))
        assert (steps - 1) * hardware.rank_batch_size(batch, len(films)) < min(map(len, shards))  # none empty
        uncapped = hardware.steps_per_epoch(batch, len(films))
        assert steps == uncapped if batch != world else steps <= uncapped  # capped only where a rank could run dry


def test_a_global_batch_smaller_than_the_processes_is_refused():
    config = TrainConfig(arch="cnn5", batch_size=2, device="cpu").resolved()
    with pytest.raises(SettingOutOfRange, match="global batch; with 4 processes"):
        prepare_hardware(config, DistributedEnvironment(0, 4, 0, 4))


# --- two real gloo processes ----------------------------------------------------------------------------


def _falling_auc(model, x_val, val_set, weight, epoch, train_loss, started, hardware, steps_seconds,
                 training_batch) -> EpochRecord:
    """Validation that only gets worse after epoch 1: early stopping must end the run after epoch 2."""
    return EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=1.0, val_auc=1.0 / epoch, seconds=0.0)


def _rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        hardware = _hardware(rank, world)
        collectives = [hardware.from_main(rank == 0), hardware.from_main(rank == 1), hardware.on_any(rank == 1),
                       hardware.mean(float(rank))]
        loop._validate = _falling_auc
        torch.manual_seed(0)
        model = build_model("logistic", 2, 32)[0]
        films = loop.TrainingFilms(films=torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8),
                                   labels=torch.arange(40) % 2, class_weight=torch.ones(2), total=80)
        config = TrainConfig(arch="logistic", epochs=6, image_size=32, batch_size=8, patience=1,
                             augment=False).resolved()
        state, history = loop.fit(model, films, None, _films(8), config, hardware, lambda event: None, None)
        Path(results, f"{rank}.json").write_text(json.dumps({
            "collectives": collectives, "epochs": [h.epoch for h in history], "state": state is not None}))
        dist.barrier()  # as core.training.distributed.leave does after a completed run
    finally:
        dist.destroy_process_group()


def _answer(rank: int, world: int, rendezvous: str, results: str, action) -> None:
    """``action()`` in this rank's gloo group; "done", or the TriageError it raised in words, written for the test."""
    from core.errors import TriageError

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        try:
            action()
            answer = "done"
        except TriageError as exc:
            answer = f"{type(exc).__name__}: {exc}"
        Path(results, f"{rank}.json").write_text(json.dumps(answer))
        dist.barrier()  # as core.training.distributed.leave does: no rank tears gloo down under another
    finally:
        dist.destroy_process_group()


def _answers(folder: Path) -> tuple[str, str]:
    """What rank 0 and rank 1 answered (:func:`_answer`)."""
    return tuple(json.loads((folder / f"{rank}.json").read_text()) for rank in (0, 1))


def _failing_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    from core.errors import CheckpointError

    def outputs_not_numbers(*args, **kwargs):
        raise CheckpointError("its outputs are not numbers")

    def trains() -> None:
        loop._validate = outputs_not_numbers  # rank 0 alone validates: the failure is its own
        torch.manual_seed(0)
        films = loop.TrainingFilms(films=torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8),
                                   labels=torch.arange(40) % 2, class_weight=torch.ones(2), total=80)
        config = TrainConfig(arch="logistic", epochs=3, image_size=32, batch_size=8, augment=False).resolved()
        loop.fit(build_model("logistic", 2, 32)[0], films, None, _films(8), config, _hardware(rank, world),
                 lambda event: None, None)

    _answer(rank, world, rendezvous, results, trains)


@pytest.mark.slow
def test_a_failure_of_rank_0_alone_stops_every_rank_in_words(tmp_path):
    """Found by a review: rank 0 validating into NaN outputs raised there alone, and rank 1 waited in the next
    collective until torchrun tore it down ("unexpected error")."""
    run_ranks(_failing_rank, 2, tmp_path, timeout=120)
    main, other = _answers(tmp_path)
    assert main.startswith("TrainingDiverged: Training diverged in epoch 1 of 3: its outputs stopped being numbers")
    assert other == ("TrainingStopped: Training stopped: the main training process (rank 0) failed; its message "
                     "says why.")


def _unreadable_film_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    from core.errors import DatasetError

    def unreadable(*args, **kwargs):
        raise DatasetError("Cannot use NORMAL/broken.jpeg: it is not an image we can read")

    if rank == 1:  # the film is in rank 1's shard alone
        loop.load_tensors = unreadable
    config = TrainConfig(arch="logistic", epochs=1, image_size=32, batch_size=8, augment=False).resolved()
    _answer(rank, world, rendezvous, results, lambda: loop.decode_for_training(
        _films(0), _films(0), config, _hardware(rank, world), lambda event: None, None))


@pytest.mark.slow
def test_a_film_one_rank_cannot_read_stops_every_rank_in_words(tmp_path):
    """A review: the rank that could not read a film stopped, and the others went on into DDP's set-up and waited
    there until torchrun tore them down ("interrupted")."""
    run_ranks(_unreadable_film_rank, 2, tmp_path, timeout=120)
    main, other = _answers(tmp_path)
    assert other == "DatasetError: Cannot use NORMAL/broken.jpeg: it is not an image we can read"
    assert main == ("TrainingStopped: Training stopped: another training process stopped while decoding its films; "
                    "its message says why.")


def _unwritable_runs_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    blocked = Path(results) / "runs-is-a-file"
    blocked.touch()
    identity = RunIdentity(config=TrainConfig(arch="logistic").resolved(), data_dir="d", train=Fingerprint(
        n=1, class_counts={}, sha256="a"), validation=Fingerprint(n=1, class_counts={}, sha256="b"), world_size=2)
    _answer(rank, world, rendezvous, results,
            lambda: open_run(identity, _hardware(rank, world), False, folder=blocked / "runs"))


@pytest.mark.slow
def test_a_runs_folder_rank_0_cannot_write_stops_every_rank_in_words(tmp_path):
    """A review: rank 0 raised its refusal before the collective the others waited in, and rank 1 ended with "an
    unexpected error (RuntimeError). This is a fault in the program"."""
    run_ranks(_unwritable_runs_rank, 2, tmp_path, timeout=120)
    main, other = _answers(tmp_path)
    assert main.startswith("ResumeRefused: The runs folder beside the models folder cannot be written")
    assert other == ("ResumeRefused: The main training process (rank 0) could not use the runs folder beside the "
                     "models folder; its message says why.")


def _failing_to_ship_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    from core.errors import CheckpointError

    def full_disk(*args, **kwargs):
        raise CheckpointError("The models folder cannot be written (No space left on device).")

    train_module.prepare_hardware = lambda config: _hardware(rank, world)
    train_module.leave = lambda hardware, completed: None  # the process group is _answer's
    train_module.ship_version = full_disk
    os.environ.update(CXR_MODELS=str(Path(results) / "models"), CXR_AUDIT_LOG=str(Path(results) / "audit.jsonl"),
                      CXR_DECODE_CACHE="off")
    config = TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40, augment=False, batch_size=8)
    _answer(rank, world, rendezvous, results, lambda: train_module.train(
        Path(results, "films.txt").read_text(), config, directory=Path(results) / "models"))


@pytest.mark.slow
def test_rank_0_failing_to_ship_stops_every_rank_in_words(kermany_train, tmp_path):
    """A review: the other ranks waited at the final barrier while rank 0 shipped; its failure left them to end as
    "a fault in the program" (gloo) or waiting until torchrun tore them down."""
    (tmp_path / "films.txt").write_text(str(kermany_train))  # spawned ranks have no fixtures
    run_ranks(_failing_to_ship_rank, 2, tmp_path, timeout=180)
    main, other = _answers(tmp_path)
    assert main == "CheckpointError: The models folder cannot be written (No space left on device)."
    assert other == ("TrainingStopped: Training stopped: the main training process (rank 0) failed after the last "
                     "epoch, before its model was registered; its message says why.")


@pytest.mark.slow
def test_rank_0_decides_early_stopping_for_every_rank(tmp_path):
    run_ranks(_rank, 2, tmp_path)
    main, other = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert main["collectives"] == other["collectives"] == [True, False, True, 0.5]
    assert main["epochs"] == [1, 2] and main["state"]  # stopped after one epoch without gain, of six
    assert other["epochs"] == [] and not other["state"]  # rank 1 neither validates nor keeps a state


@pytest.mark.slow
def test_torchrun_trains_on_two_gloo_processes_and_only_rank_0_writes(kermany_train, tmp_path):
    checkpoints, site = tmp_path / "checkpoints", tmp_path / "site"
    site.mkdir()  # Python's teardown, if a rank runs it, leaves a file (sitecustomize: the first exit step, run last)
    (site / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        "atexit.register(lambda: os.environ.get('RANK') and pathlib.Path(f'teardown-{os.environ[\"RANK\"]}').touch())\n")
    env = {**os.environ, "CXR_MODELS": str(checkpoints), "PYTHONPATH": os.pathsep.join((str(site), str(REPO)))}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "core", "train", str(kermany_train), "--arch", "cnn5", "--epochs", "1", "--image-size", "32",
               "--max-films", "200", "--batch-size", "32", "--device", "cpu", "--name", "ddp"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr + done.stdout
    assert not list(tmp_path.glob("teardown-*"))  # no rank tore gloo's threads down with the interpreter (a CI abort)
    (line,) = [json.loads(text) for text in done.stdout.splitlines() if text.startswith("{")]  # rank 0 only
    assert line["name"] == "ddp-v1" and line["validation"]["n"] > 0
    models = sorted(p.name for p in checkpoints.iterdir() if p.suffix in (".json", ".pt") and p.stem != "registry")
    assert models == ["ddp-v1.json", "ddp-v1.population.pt", "ddp-v1.pt"]  # one version: rank 1 wrote nothing
    registry = json.loads((checkpoints / "registry.json").read_text())
    assert [p["name"] for p in registry["promotions"]] == ["ddp-v1"]
    record = read_model_record(checkpoints / "ddp-v1.json")
    training = record.training
    assert (training.world_size, training.device, training.config.batch_size) == (2, "cpu", 32)
    assert training.precision in ("bf16", "fp32") and [h.epoch for h in training.history] == [1]
    assert record.data.train.n + record.data.validation.n == 200  # every training film trained, on some rank
    # the report (fp32, stored weights) describes the epoch's model: after one epoch at 32 px its 40 validation
    # scores lie close, so the epoch's bf16 pass may order a few pairs otherwise (one pair: 0.003 of AUC)
    assert record.report.auc == pytest.approx(training.history[0].val_auc, abs=0.02)


def _agreeing_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    from core.errors import DatasetError, TriageError
    from core.training.train import _same_run_on_every_rank

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        films = Fingerprint(n=80, class_counts={"C0": 40, "C1": 40}, sha256="0" * 64)
        base = RunIdentity(config=TrainConfig(arch="cnn5").resolved(), data_dir="/films", train=films,
                           validation=films)
        mine = {"same": (base, None), "settings": (replace(base, config=base.config.model_copy(
                    update={"lr": 3e-4 if rank else 1e-3})), None),
                "films": (replace(base, content=str(rank)), None),
                "one refuses": (None, DatasetError("No films in DIR.")) if rank else (base, None)}
        answers = {}
        for case, (identity, refusal) in mine.items():
            try:
                _same_run_on_every_rank(identity, _hardware(rank, world), refusal)
                answers[case] = "trains"
            except TriageError as exc:
                answers[case] = str(exc)
        Path(results, f"{rank}.json").write_text(json.dumps(answers))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_processes_that_differ_in_settings_films_or_a_refusal_all_refuse_together(tmp_path):
    """Found by a review: nothing compared the ranks, so an ImageNet weights file on one machine gave it another
    learning rate (averaged in silently), and a refusal on one rank left the others waiting in a collective."""
    run_ranks(_agreeing_rank, 2, tmp_path, timeout=120)
    main, other = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert main["same"] == other["same"] == "trains"
    assert main["settings"] == other["settings"] and "resolved different settings" in main["settings"]
    assert main["films"] == other["films"] and "found different films" in main["films"]
    assert other["one refuses"] == "No films in DIR." and "Another training process" in main["one refuses"]


# --- a resumed run under torchrun ----------------------------------------------------------------------------------------


def _rising_auc(model, x_val, val_set, weight, epoch, train_loss, started, hardware, steps_seconds,
                training_batch) -> EpochRecord:
    """Validation without films: every epoch is the best so far, so no run stops early."""
    return EpochRecord(epoch=epoch, train_loss=train_loss, val_loss=1.0, val_auc=epoch / 10, seconds=0.0)


def _resume_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    torch.set_num_threads(1)  # two processes share the CPU cores
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        hardware = Hardware(torch.device("cpu"), FP32, DistributedEnvironment(rank, world, rank, world))
        loop._validate = _rising_auc
        config = TrainConfig(arch="mlp", epochs=2, image_size=32, batch_size=8).resolved()  # dropout, augmentation
        shard = torch.Generator().manual_seed(rank)
        films = loop.TrainingFilms(films=torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8, generator=shard),
                                   labels=torch.arange(40) % 2, class_weight=torch.ones(2), total=80)
        fingerprint = Fingerprint(n=80, class_counts={"C0": 40, "C1": 40}, sha256="0" * 64)
        identity = RunIdentity(config, "synthetic", fingerprint, fingerprint, world)
        val_set = FilmSet(tuple(Path(f"{i}.png") for i in range(8)), np.arange(8) % 2, ("C0", "C1"))

        def run(folder: str, resume: bool, stop_after_steps: int | None = None) -> dict | None:
            torch.manual_seed(0)
            model = build_model("mlp", 2, 32)[0]
            checkpoint = open_run(identity, hardware, resume, folder=Path(results, folder))
            steps = iter(range(10**6))
            stop = (lambda: next(steps) >= stop_after_steps) if stop_after_steps else None
            try:
                loop.fit(model, films, None, val_set, config, hardware, lambda event: None, stop, checkpoint)
            except TrainingCancelled:
                return None
            return model.state_dict()

        whole = run("whole", False)
        assert run("cut", False, stop_after_steps=10) is None  # 10 steps an epoch: cancelled at epoch 2's first
        resumed = run("cut", True)
        saved = torch.load(next(Path(results, "whole").glob("*.pt")), weights_only=True)
        Path(results, f"{rank}.json").write_text(json.dumps({
            "equal": all(torch.equal(whole[k], resumed[k]) for k in whole),
            "generators_differ": not torch.equal(saved["generators"][0], saved["generators"][1]),
            "rows": [len(saved["generators"]), len(saved["rng"])]}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_resume_each_from_its_own_random_state(tmp_path):
    run_ranks(_resume_rank, 2, tmp_path)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"{rank}.json").read_text())
        assert result == {"equal": True, "generators_differ": True, "rows": [2, 2]}, rank
