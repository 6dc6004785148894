"""A run's saved state is checked before it is used, and one process at a time trains a run
(core/training/resume.py): a damaged, altered or hostile state is refused with a message that names no file and
says to start a new run; the state's SHA-256 in its description catches changed bytes; ``RUNS/<key>.lock``
keeps a second process (a job, a command) off a run that another is training.

Real films: one tiny run (logistic, 32 px, 40 Kermany films) interrupted after its first epoch, for the whole
module; each test damages its own copy of that state.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import REPO, environment

from core.errors import ResumeRefused, TrainingCancelled
from core.models.device import FP32
from core.store.records import Fingerprint, TrainConfig
from core.training.distributed import Hardware
from core.training.events import EpochEvent
from core.training.resume import RunIdentity, RunProgress, open_run, run_identity
from core.training.saved_state import DIGESTS
from core.training.saved_runs import SavedRun, runs_dir, saved_runs
from core.training.train import split_films, train

CONFIG = TrainConfig(arch="logistic", epochs=3, image_size=32, augment=False, device="cpu", precision="fp32")
CLI_ARGS = ["--arch", "logistic", "--epochs", "3", "--image-size", "32", "--no-augment", "--device", "cpu",
            "--precision", "fp32", "--resume"]  # the same run as CONFIG
CPU = Hardware(torch.device("cpu"), FP32)


@dataclass(frozen=True)
class Saved:
    films: Path  # the run's 40 films
    identity: RunIdentity
    state: bytes  # RUNS/<key>.pt after epoch 1
    description: bytes  # RUNS/<key>.json


def _stop_after(epoch: int, events: list):
    return lambda: any(isinstance(e, EpochEvent) and e.epoch >= epoch for e in events)


@pytest.fixture(scope="module")
def saved(kermany_train, tmp_path_factory) -> Saved:
    root = tmp_path_factory.mktemp("resume-state")
    films = root / "films"
    for cls in ("NORMAL", "PNEUMONIA"):
        (films / cls).mkdir(parents=True)
        for path in sorted((kermany_train / cls).iterdir())[:20]:
            shutil.copyfile(path, films / cls / path.name)
    with environment(CXR_MODELS=str(root / "models")):
        events: list = []
        with pytest.raises(TrainingCancelled):
            train(films, CONFIG, on_progress=events.append, should_stop=_stop_after(1, events))
        _, train_set, val_set, _ = split_films(films, CONFIG.resolved())
        identity = run_identity(CONFIG.resolved(), films, train_set, val_set)
        state = runs_dir() / f"{identity.key}.pt"
        return Saved(films, identity, state.read_bytes(), state.with_suffix(".json").read_bytes())


@pytest.fixture
def site(saved, tmp_path, settings_env) -> Path:
    """This test's site models folder, with a copy of the interrupted run in the runs folder beside it."""
    settings_env(CXR_MODELS=str(tmp_path / "models"))
    runs_dir().mkdir(mode=0o700)
    _state(saved).write_bytes(saved.state)
    _state(saved).with_suffix(".json").write_bytes(saved.description)
    return tmp_path / "models"


def _state(saved: Saved) -> Path:
    return runs_dir() / f"{saved.identity.key}.pt"


def _description(saved: Saved) -> dict:
    return json.loads(_state(saved).with_suffix(".json").read_text())


def _record_digest(saved: Saved, recorded: bool) -> None:
    """Make the description list the state's present digest (someone rewrote both), or none (an older state)."""
    description = _description(saved)
    description.pop(DIGESTS, None)
    if recorded:
        description[DIGESTS] = [hashlib.sha256(_state(saved).read_bytes()).hexdigest()]
    _state(saved).with_suffix(".json").write_text(json.dumps(description))


def _rewritten(saved: Saved, change) -> bytes:
    payload = torch.load(io.BytesIO(saved.state), weights_only=True)
    change(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _complete_claim(payload: dict) -> None:
    payload.update(epoch=3, finished=True)  # "3 of 3 epochs done": only shipping left, from 1 epoch's weights


def _wider(payload: dict) -> None:
    payload["model"] = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in payload["model"].items()}


def _optimiser_state_wider(payload: dict) -> None:
    for entry in payload["optimiser"]["state"].values():
        entry["exp_avg"] = torch.zeros(entry["exp_avg"].numel() + 3)


def _schedule_ahead(payload: dict) -> None:
    payload["schedule"]["last_epoch"] += 10**6  # past its total steps: OneCycleLR would raise mid-training


CONTENT_DAMAGE = {  # name: (new state bytes, what the refusal says once the content itself is read)
    "text": (lambda saved: b"hello world\n", r"it is damaged \(KeyError\)"),
    "no weights": (lambda saved: _rewritten(saved, lambda p: p.pop("model")), "entry 'model' is missing"),
    "epoch beyond its history": (lambda saved: _rewritten(saved, _complete_claim),
                                 "says epoch 3 of 3 but holds the history of 1 epoch"),
    "weights of another shape": (lambda saved: _rewritten(saved, _wider), "weights do not fit this model"),
    "optimiser of another shape": (lambda saved: _rewritten(saved, _optimiser_state_wider),
                                   "optimiser state does not fit"),
    "schedule past its end": (lambda saved: _rewritten(saved, _schedule_ahead), "schedule does not match its epoch"),
}


def _refused(saved: Saved, site: Path, words: str) -> str:
    with pytest.raises(ResumeRefused, match=words) as refused:
        train(saved.films, CONFIG, directory=site, resume=True)
    message = str(refused.value)
    assert "/" not in message and str(site.parent) not in message  # no server path
    assert "start a new run" in message
    assert not site.exists()  # nothing registered
    return message


@pytest.mark.parametrize("recorded", [True, False], ids=["digest recorded", "saved before digests"])
@pytest.mark.parametrize("damage", CONTENT_DAMAGE)
def test_a_damaged_or_hostile_state_is_refused_naming_no_file(saved, site, damage, recorded):
    make, words = CONTENT_DAMAGE[damage]
    _state(saved).write_bytes(make(saved))
    _record_digest(saved, recorded)  # recorded: someone rewrote the digest too, so the content checks must catch it
    _refused(saved, site, words)
    assert _state(saved).is_file()  # kept: a new run replaces it


def test_a_state_whose_films_were_decoded_by_other_code_is_refused_or_set_aside(saved, site, monkeypatch):
    """After an upgrade of Pillow or pydicom, or of the preprocessing, the next epochs would learn from films
    decoded otherwise than the first ones: the run is refused (IF_SAVED, as make models runs: started afresh)."""
    from core.training import saved_state
    from core.training.resume import IF_SAVED

    assert torch.load(io.BytesIO(saved.state), weights_only=True)["decoding"] == saved_state.cache_namespace()
    monkeypatch.setattr(saved_state, "cache_namespace", lambda: "preprocessing=2;pillow=99.0;pydicom=9")
    _refused(saved, site, "trained on films decoded by other code")
    run = open_run(saved.identity, CPU, resume=IF_SAVED)
    assert run.payload is None and run.notes == [
        "started afresh, the saved state of these settings set aside (its films were decoded by other code since)"]
    run.forget()


def test_a_state_that_changed_since_it_was_saved_is_caught_by_its_digest(saved, site):
    assert _description(saved)[DIGESTS] == [hashlib.sha256(saved.state).hexdigest()]
    flipped = bytearray(saved.state)
    middle = len(flipped) // 2
    flipped[middle:middle + 64] = bytes(b ^ 0xFF for b in flipped[middle:middle + 64])
    _state(saved).write_bytes(bytes(flipped))
    _refused(saved, site, "checksum differs from the one recorded when it was saved")
    _state(saved).write_bytes(b"hello world\n")
    _refused(saved, site, "checksum differs")


def test_a_link_in_place_of_the_state_is_never_followed(saved, site):
    _state(saved).unlink()
    _state(saved).symlink_to("/etc/passwd")
    message = _refused(saved, site, "it is a link")
    assert "passwd" not in message


class Killed(BaseException):
    """The process dies here (nothing in the program catches it)."""


def test_a_writer_killed_between_description_and_state_leaves_a_run_that_resumes(saved, site, monkeypatch):
    """Epoch 2's description is written first, naming both states but still the epoch on disk; the process dies
    before its state is: the run resumes after epoch 1, and its description says so."""
    from core.training import resume

    write = resume.write_private

    def dies_writing_the_state(path, writer):
        if path.suffix == ".pt":
            raise Killed
        write(path, writer)

    monkeypatch.setattr(resume, "write_private", dies_writing_the_state)
    with pytest.raises(Killed):
        train(saved.films, CONFIG, directory=site, resume=True)
    monkeypatch.undo()
    described = _description(saved)
    assert described["epoch"] == 1 and not described["finished"] and _state(saved).read_bytes() == saved.state
    assert len(described[DIGESTS]) == 2 and described[DIGESTS][1] == hashlib.sha256(saved.state).hexdigest()
    run = open_run(saved.identity, CPU, resume=True)
    assert run.resumed_after == 1
    run.forget()


def test_a_saved_epoch_is_described_once_its_state_is_written(saved, site):
    events: list = []
    with pytest.raises(TrainingCancelled):
        train(saved.films, CONFIG, directory=site, resume=True, on_progress=events.append,
              should_stop=_stop_after(2, events))
    described = _description(saved)
    assert described["epoch"] == 2 and described[DIGESTS] == [hashlib.sha256(_state(saved).read_bytes()).hexdigest()]


def test_the_best_weights_are_written_once_when_the_epoch_saved_is_the_best(saved, site):
    payload = torch.load(io.BytesIO(saved.state), weights_only=True)
    assert payload["stale"] == 0 and payload["best_state"] is payload["model"]  # epoch 1, the best so far: once
    run = open_run(saved.identity, CPU, resume=False)
    model = torch.nn.Linear(4, 2)
    optimiser = torch.optim.AdamW(model.parameters())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 1e-3, total_steps=3)
    older = {name: torch.zeros_like(value) for name, value in model.state_dict().items()}
    run.save(RunProgress(epoch=2, best_auc=0.9, best_state=older, stale=1), model, optimiser, schedule,
             torch.Generator())  # no gain this epoch: the best weights are an earlier epoch's, written apart
    payload = torch.load(_state(saved), weights_only=True)
    assert payload["best_state"] is not payload["model"]
    assert all(torch.equal(payload["best_state"][k], older[k]) for k in older)
    assert all(torch.equal(payload["model"][k], v) for k, v in model.state_dict().items())
    run.forget()


def test_the_command_line_refuses_a_damaged_state_in_json_naming_no_file(saved, site, run_cli):
    _state(saved).write_bytes(b"hello world\n")
    done = run_cli("train", saved.films, *CLI_ARGS, checkpoints=site)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (error,) = done.json_lines()
    assert error["error"].startswith("The saved state of this run cannot be read: its checksum differs")
    assert "unexpected error" not in error["error"] and "/" not in error["error"]
    assert not site.exists()


# --- one process at a time -------------------------------------------------------------------------------------

HOLDER = """
import json, sys
from pathlib import Path
import torch
from core.errors import ResumeRefused
from core.models.device import FP32
from core.store.records import Fingerprint, TrainConfig
from core.training.distributed import Hardware
from core.training.resume import RunIdentity, open_run
spec = json.loads(sys.argv[1])
identity = RunIdentity(TrainConfig.model_validate(spec["config"]), spec["data_dir"],
                       Fingerprint.model_validate(spec["train"]), Fingerprint.model_validate(spec["validation"]),
                       content=spec["content"])
assert identity.key == spec["key"]
try:
    run = open_run(identity, Hardware(torch.device("cpu"), FP32), spec["resume"], folder=Path(spec["folder"]))
except ResumeRefused as exc:
    print(json.dumps({"refused": str(exc)}), flush=True)
    sys.exit(0)
print(json.dumps({"holds": run.resumed_after}), flush=True)
sys.stdin.readline()
"""


def _other_process(saved: Saved, resume: bool = True) -> tuple[subprocess.Popen, dict]:
    """Another process opening the run: it answers whether it holds it (then waits for a line) or was refused."""
    identity = saved.identity
    spec = {"config": identity.config.to_json(), "data_dir": identity.data_dir, "train": identity.train.to_json(),
            "validation": identity.validation.to_json(), "content": identity.content, "key": identity.key,
            "resume": resume,
            "folder": str(runs_dir())}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(spec)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = process.stdout.readline()
    assert line, f"the other process ended with {process.wait(timeout=60)}"
    return process, json.loads(line)


def test_a_run_another_process_trains_is_refused_until_it_lets_go(saved, site):
    # This process interrupted the run in the module's fixture (a cancel lets go at once): another may take it.
    holder, answer = _other_process(saved)
    assert answer == {"holds": 1}
    lock = _state(saved).with_suffix(".lock")
    assert lock.is_file()
    for resume in (True, False):  # neither resuming it nor starting it over may touch its state
        with pytest.raises(ResumeRefused, match=r"^This run is being trained by another process") as refused:
            open_run(saved.identity, CPU, resume=resume)
        assert "/" not in str(refused.value)
    assert _state(saved).read_bytes() == saved.state

    holder.send_signal(signal.SIGKILL)  # however it ends, the kernel lets go of its lock
    holder.wait(timeout=60)
    run = open_run(saved.identity, CPU, resume=True)
    assert run.resumed_after == 1
    assert open_run(saved.identity, CPU, resume=True).resumed_after == 1  # this process, again: still its own

    other, answer = _other_process(saved, resume=False)  # now this process holds it
    assert answer["refused"].startswith("This run is being trained by another process")
    other.wait(timeout=60)
    run.forget()  # shipped: state, description and lock go
    assert not lock.exists() and saved_runs() == [] and not _state(saved).exists()
    fresh, answer = _other_process(saved, resume=False)
    assert answer == {"holds": 0}
    fresh.communicate("\n", timeout=60)


def test_a_refused_resume_lets_go_of_the_run(saved, site):
    _state(saved).write_bytes(b"hello world\n")
    with pytest.raises(ResumeRefused, match="checksum differs"):
        open_run(saved.identity, CPU, resume=True)
    assert not _state(saved).with_suffix(".lock").exists()
    other, answer = _other_process(saved, resume=False)  # a new run may start at once and replace it
    assert answer == {"holds": 0}
    other.communicate("\n", timeout=60)


# --- a runs folder that cannot be written ----------------------------------------------------------------------


def _disk_full_writing_states(monkeypatch) -> None:
    from core.training import resume

    write = resume.write_private

    def full(path, writer):
        if path.suffix == ".pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, writer)

    monkeypatch.setattr(resume, "write_private", full)


def test_a_full_disk_saving_an_epoch_keeps_the_last_state_and_says_how_to_go_on(saved, site, monkeypatch, capsys):
    """It said 'unexpected error (OSError: No space left on device). This is a fault in the program'."""
    from core import cli

    _disk_full_writing_states(monkeypatch)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", str(saved.films), *CLI_ARGS])
    assert stopped.value.code == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"error": (
        "The runs folder beside the models folder cannot be written (No space left on device); this run's state "
        "after epoch 1 of 3 is kept: once the folder can be written, continue from there (Resume on the Retrain "
        "page, or the same train command with --resume).")}
    monkeypatch.undo()
    assert _state(saved).read_bytes() == saved.state and not site.exists()
    run = open_run(saved.identity, CPU, resume=True)  # as the message says
    assert run.resumed_after == 1
    run.forget()


def test_a_full_disk_saving_a_fresh_run_s_first_epoch_says_nothing_is_saved(saved, site, monkeypatch):
    _disk_full_writing_states(monkeypatch)
    with pytest.raises(ResumeRefused, match=r"^The runs folder beside the models folder cannot be written \(No space "
                       r"left on device\); no epoch of this run is saved: once the folder can be written, start the "
                       r"training again.$"):
        train(saved.films, CONFIG, directory=site)
    monkeypatch.undo()
    assert not _state(saved).with_suffix(".json").exists()  # nothing says "epoch 0 is kept" (a review)
    run = open_run(saved.identity, CPU, resume=True)  # the older state, still whole, resumes (it was refused for good)
    assert run.resumed_after == 1
    run.forget()


def test_a_runs_folder_that_cannot_be_made_refuses_the_run_before_it_trains(saved, tmp_path, settings_env):
    settings_env(CXR_MODELS=str(tmp_path / "models"))
    runs_dir().write_text("a file where the runs folder goes")
    events: list = []
    with pytest.raises(ResumeRefused, match=r"^The runs folder beside the models folder cannot be written \(File "
                       r"exists\): a run's state is saved there after every epoch, so nothing was trained. Make room "
                       r"or make it writable, then start the training again.$"):
        train(saved.films, CONFIG, directory=tmp_path / "models", on_progress=events.append)
    assert not any(isinstance(e, EpochEvent) for e in events)


def test_a_setting_left_unset_is_said_in_words_when_a_resume_differs():
    """Found by a CLI review: resuming with --max-films 20 a run of every film said "had max films None"."""
    films = Fingerprint(n=40, class_counts={"NORMAL": 20, "PNEUMONIA": 20}, sha256="0" * 64)
    ours = RunIdentity(config=CONFIG.model_copy(update={"max_films": 20}), data_dir="x", train=films, validation=films)
    theirs = SavedRun(key="k", data_dir="x", config=CONFIG.model_copy(update={"split_seed": 3}), train=films,
                      validation=films)
    assert ours.differences(theirs) == ["split seed 3 (here as --seed)", "max films no limit (here 20)"]
