"""Resumable training: a run's state is saved at the end of every epoch, so an interrupted run (a crash, a
restart of the machine or the app, a job's time limit, Cancel) continues from its last finished epoch with
``core train ... --resume`` or the Retrain page's Resume.

A run is named by its **key**: a hash of the resolved TrainConfig, the data folder, the fingerprints of its
training and validation films and the number of training processes. Its state is ``RUNS/<key>.pt``, with
``RUNS/<key>.json`` beside it (core.training.saved_runs: the runs folder beside the site models, 0700/0600,
and what a run is, readable without torch).

- **Saved** after every epoch's validation, atomically (a temporary, then ``os.replace``), by rank 0; under torchrun
  the other ranks hand it their random-number states. The state: model, optimiser, LR schedule, every rank's
  batch-order/augmentation generator and torch's global RNG (dropout), the history, the best weights (stored once
  when the epoch just saved is the best) and AUC, the epochs without a gain, whether training is over, where its
  epochs ran, what decoded its films (refused once that changed). Its SHA-256 goes into the ``.json`` (written first,
  listing the previous state's digest too, so a writer killed between the two leaves a state that matches).
- **Checked** before anything of it is used: never through a symbolic link, its digest against the ``.json``
  (a state saved before digests were recorded has none to check), loaded with ``weights_only=True``, then
  every entry's type, the epoch against the history, and the weights, optimiser and schedule against the
  fresh model's. Any fault is :class:`ResumeRefused`, naming no file: start a new run, which replaces it
  (``IF_SAVED`` does so by itself, saying why in the run's notes).
- **Restored** before the first epoch to run: the next epoch runs as it would have without the interruption
  (on the CPU in fp32 the resumed weights equal an uninterrupted run's bit for bit, tests/test_resume.py).
- **Locked**: the process that opens a run (rank 0) holds an exclusive ``flock`` on ``RUNS/<key>.lock``
  until the run ships, is cancelled, or the process ends (the kernel drops it however it ends), so a job and
  a command never train one run at once; the second is refused at once. One process trains one run at a
  time, so a process that opens its own run again (a test, a retry) keeps the lock it holds.
- **Kept** until the run ships its model, which records the run's id (a process killed in between leaves a finished
  state whose resume registers nothing again); a fresh run of the same key (no ``--resume``) replaces it; states
  untouched for ``CXR_JOB_MAX_AGE_DAYS`` are pruned, as job folders are.
- **Refused** (:class:`ResumeRefused`): resuming with no state for the key; when the same folder has an
  interrupted run with other settings or films, the message says what differs.
"""
from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import clock
from core.errors import ResumeRefused
from core.films.manifest import find_manifest
from core.films.tensor import cache_namespace
from core.store.records import EpochRecord, Fingerprint, TrainConfig
from core.training.data import content_digest, fingerprint
from core.training.distributed import Hardware
from core.training import run_lock
from core.training.saved_state import (DIGESTS, FORMAT, RUN_ID, check_optimiser, check_schedule, damaged,
                                       load_state, misfit)
from core.training.saved_runs import (SavedRun, discard_saved_run, nothing_to_resume, on_rank_0, open_runs_folder,
                                      runs_dir, runs_written, said, write_private)

IF_SAVED = "if-saved"  # open_run's resume: continue the saved state if there is one, else start afresh
SPLIT_SETTINGS = ("seed", "split_seed", "val_fraction", "max_films", "holdout")  # another split: other fingerprints
BUSY = ("This run is being trained by another process (a training job, or a train command with these settings "
        "on these films); wait for it to end, or cancel it, then resume it.")


@dataclass
class RunProgress:
    """Where a run stands at the end of an epoch: what the loop carries from one epoch to the next."""

    epoch: int = 0  # epochs finished
    history: list[EpochRecord] = field(default_factory=list)
    best_auc: float = -1.0
    best_state: dict | None = None
    stale: int = 0  # epochs since the last validation AUC gain
    seconds: float = 0.0  # training time so far, over every process that trained this run
    finished: bool = False


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: their key is a hash of exactly this."""

    config: TrainConfig
    data_dir: str
    train: Fingerprint
    validation: Fingerprint
    world_size: int = 1
    content: str = ""  # core.training.data.content_digest of the training and validation films ("" unknown)

    @property
    def key(self) -> str:
        text = json.dumps({"config": self.config.to_json(), "data_dir": self.data_dir, "train": self.train.to_json(),
                           "validation": self.validation.to_json(), "world_size": self.world_size,
                           **({"content": self.content} if self.content else {})}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def differences(self, other: SavedRun) -> list[str]:
        """How an interrupted run of the same folder differs from this one, in words."""
        ours, theirs = self.config.to_json(), other.config.to_json()
        words = [f"{name.replace('_', ' ')} {said(name, theirs.get(name))} (here {said(name, value)})"
                 for name, value in ours.items() if theirs.get(name) != value]
        same_split = all(ours.get(name) == theirs.get(name) for name in SPLIT_SETTINGS)
        if same_split and (other.train, other.validation) != (self.train, self.validation):
            words.append("other films (the folder's films have changed since)")
        elif same_split and other.content and self.content and other.content != self.content:
            words.append("other film contents (a film was replaced since, by one of the same name and size)")
        if other.world_size != self.world_size:
            words.append(f"{other.world_size} training processes (here {self.world_size})")
        return words


class RunCheckpoint:
    """One run's saved state: restored by :meth:`restore`, written by :meth:`save`, removed by :meth:`forget`."""

    def __init__(self, identity: RunIdentity, hardware: Hardware, folder: Path, job_id: str | None = None,
                 payload: dict | None = None, digests: tuple[str, ...] = (), set_aside: str = "",
                 if_saved: bool = False):
        self.identity, self.hardware, self.folder, self.job_id = identity, hardware, folder, job_id
        self.set_aside = set_aside  # why a saved state was not resumed (open_run with IF_SAVED)
        self.if_saved = if_saved  # IF_SAVED: a state that does not fit the fresh model is set aside, not refused
        self.payload = payload  # the state to resume from (None: a fresh run)
        self.run_id = str((payload or {}).get(RUN_ID) or uuid.uuid4().hex)  # recorded with the version it ships
        self.digests = digests  # of the state file now on disk, as the .json lists them
        self.on_disk = (self.resumed_after, bool(payload and payload.get("finished")))  # its epoch, and finished
        self.earlier_seconds = 0.0  # restored: the training time of the processes before this one
        self.path, self.lock = folder / f"{identity.key}.pt", folder / f"{identity.key}.lock"

    @property
    def resumed_after(self) -> int:
        return int(self.payload["epoch"]) if self.payload else 0

    @property
    def here(self) -> str:
        return f"the {'GPU' if self.hardware.device.type == 'cuda' else 'CPU'} in {self.hardware.precision}"

    @property
    def trained_on(self) -> list[str]:
        """Where the saved epochs ran (older states do not say: [])."""
        earlier = (self.payload or {}).get("hardware")
        return sorted({h for h in earlier if isinstance(h, str)}) if isinstance(earlier, list) else []

    @property
    def notes(self) -> list[str]:
        if self.set_aside:
            return [f"started afresh, the saved state of these settings set aside ({self.set_aside})"]
        if not self.payload:
            return []
        moved = (f", whose epochs so far ran on {' and '.join(self.trained_on)} (from here on {self.here})"
                 if self.trained_on and self.trained_on != [self.here] else "")
        return [f"resumed after epoch {self.resumed_after} of {self.identity.config.epochs} from its saved state"
                + moved]

    def restore(self, model: nn.Module, optimiser: torch.optim.Optimizer, schedule: Any,
                generator: torch.Generator) -> RunProgress:
        """Put the saved state into the fresh model, optimiser, schedule and generator; a fresh progress when
        there is nothing to resume. ResumeRefused when it does not fit them."""
        state, refusal = self.payload, None
        if state is None:
            return RunProgress()
        try:
            self._check(state, model, optimiser, schedule)
        except (ResumeRefused, RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            refusal = exc if isinstance(exc, ResumeRefused) else damaged(f"it does not fit ({type(exc).__name__})")
        if self.hardware.on_any(refusal is not None):  # nothing loaded yet: every rank goes on, or none
            refusal = refusal or damaged("it does not fit another training process's model", lasting=False)
            if self.if_saved:  # a fresh model, optimiser and schedule: as if there had been no state
                self.payload, self.set_aside, self.run_id = None, refusal.reason, uuid.uuid4().hex
                self.on_disk, self.digests = (0, False), ()  # never named as the state kept (a review)
                return RunProgress()
            run_lock.release(self.lock)  # nothing of this run will be written: another process may start it over
            raise refusal
        try:
            self._load(state, model, optimiser, schedule, generator)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            run_lock.release(self.lock)
            raise damaged(f"it does not fit this run ({type(exc).__name__})") from exc  # a fault the checks missed
        main = self.hardware.is_main  # only rank 0 validates: the others carry no history and no best weights
        progress = RunProgress(epoch=int(state["epoch"]), history=[EpochRecord(**h) for h in state["history"]] if main
                               else [], best_auc=float(state["best_auc"]),
                               best_state=state["best_state"] if main else None, stale=int(state["stale"]),
                               seconds=float(state["seconds"]), finished=bool(state["finished"]))
        self.earlier_seconds = progress.seconds
        return progress

    def _check(self, state: dict, model: nn.Module, optimiser: torch.optim.Optimizer, schedule: Any) -> None:
        fresh = model.state_dict()
        for what, weights in (("weights", state["model"]), ("best weights", state["best_state"])):
            if (problem := misfit(weights, fresh)) is not None:
                raise damaged(f"its {what} do not fit this model ({problem})")
        check_optimiser(state["optimiser"], optimiser)
        check_schedule(state["schedule"], schedule.state_dict(), int(state["epoch"]), self.identity.config.epochs)

    def _load(self, state: dict, model: nn.Module, optimiser: torch.optim.Optimizer, schedule: Any,
              generator: torch.Generator) -> None:
        rank = self.hardware.world.rank
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generators"][rank].clone())
        torch.set_rng_state(state["rng"][rank].clone())
        if state.get("device_rng") is not None and self.hardware.device.type == "cuda":
            torch.cuda.set_rng_state(state["device_rng"][rank].clone(), self.hardware.device)

    def save(self, progress: RunProgress, model: nn.Module, optimiser: torch.optim.Optimizer, schedule: Any,
             generator: torch.Generator) -> None:
        """Call on every rank at the end of an epoch (the random-number states are gathered); rank 0 writes."""
        hardware = self.hardware
        rngs = {"generators": hardware.gathered(generator.get_state()), "rng": hardware.gathered(torch.get_rng_state()),
                "device_rng": hardware.gathered(torch.cuda.get_rng_state(hardware.device))
                if hardware.device.type == "cuda" else None}
        if not hardware.is_main:
            return
        weights = model.state_dict()
        # The epoch just judged the best (no epoch since without a gain) left the best weights equal to these:
        # the same dict twice is pickled once and loads as one, a quarter of the bytes less to write each time.
        best = weights if progress.stale == 0 else progress.best_state
        payload = {"format": FORMAT, "key": self.identity.key, "epoch": progress.epoch,
                   "finished": progress.finished, "seconds": progress.seconds, "best_auc": progress.best_auc,
                   "stale": progress.stale, "history": [h.model_dump() for h in progress.history],
                   "model": weights, "best_state": best,
                   "optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                   "hardware": sorted({*self.trained_on, self.here}), "decoding": cache_namespace(), **rngs,
                   RUN_ID: self.run_id}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        state = buffer.getbuffer()
        # The description first, naming this state and the one still on disk (whose epoch it keeps saying): killed
        # between the writes, the run resumes from the previous epoch instead of being refused; then the new one.
        # A fresh run removes a former run's description instead: "epoch 0" refused its state for good (a review).
        self.digests = (hashlib.sha256(state).hexdigest(), *self.digests[:1])
        with runs_written(self.on_disk[0], self.identity.config.epochs):  # a full disk: the state on disk stays
            self.describe(*self.on_disk) if self.on_disk[0] else self.path.with_suffix(".json").unlink(missing_ok=True)
            write_private(self.path, lambda handle: handle.write(state))
        self.digests, self.on_disk = self.digests[:1], (progress.epoch, progress.finished)
        with runs_written(progress.epoch, self.identity.config.epochs):  # the new state is on disk, and named
            self.describe(*self.on_disk)

    def describe(self, epoch: int, finished: bool) -> None:
        """Write (rank 0) the run's description beside its state."""
        run = SavedRun(key=self.identity.key, data_dir=self.identity.data_dir, config=self.identity.config,
                       world_size=self.identity.world_size, train=self.identity.train,
                       validation=self.identity.validation, content=self.identity.content, epoch=epoch,
                       finished=finished, job_id=self.job_id, saved=clock.iso())
        text = (json.dumps({**run.to_json(), DIGESTS: list(self.digests)}, indent=1, sort_keys=True) + "\n").encode()
        write_private(self.folder / f"{self.identity.key}.json", lambda handle: handle.write(text))

    def forget(self) -> None:
        """The run has shipped its model: its state goes (rank 0), and with it the run's lock."""
        if self.hardware.is_main:
            discard_saved_run(self.identity.key, self.folder)
            run_lock.release(self.lock)


def run_identity(config: TrainConfig, data_dir: str | Path, train_set: Any, val_set: Any,
                 world_size: int = 1) -> RunIdentity:
    """The identity of a run of ``config`` on this split of ``data_dir`` (FilmSets) by ``world_size`` processes;
    a manifest is known by its file, whether named by its name or its path."""
    source = (find_manifest(data_dir) or Path(data_dir).expanduser()).resolve()
    return RunIdentity(config=config, data_dir=str(source), train=fingerprint(train_set),
                       validation=fingerprint(val_set), world_size=world_size,
                       content=content_digest(train_set, val_set))


def open_run(identity: RunIdentity, hardware: Hardware, resume: bool | str, job_id: str | None = None,
             folder: Path | None = None) -> RunCheckpoint:
    """The run's checkpoint, its lock taken (rank 0); with ``resume`` its saved state loaded and checked (on
    every rank, from the same file), else a fresh one; ``resume=IF_SAVED`` starts afresh when no rank finds a
    saved state, or when the state cannot be read (saying why in the run's notes). ResumeRefused, on every rank
    alike, when another process trains this run or there is nothing usable to resume."""
    folder = folder or runs_dir()
    lock = folder / f"{identity.key}.lock"
    if hardware.on_any(not on_rank_0(hardware, lambda: open_runs_folder(folder, lock), True)):
        raise ResumeRefused(BUSY)
    if not resume:
        return RunCheckpoint(identity, hardware, folder, job_id)
    path = folder / f"{identity.key}.pt"
    missing = not (path.is_file() or path.is_symlink())  # a link is refused below, not taken for nothing
    if resume == IF_SAVED and not hardware.on_any(not missing):
        return RunCheckpoint(identity, hardware, folder, job_id)
    if hardware.on_any(missing):  # every rank refuses together: none waits for the others in a collective
        run_lock.release(lock)
        if missing and hardware.is_main:
            raise nothing_to_resume(identity, folder)
        raise ResumeRefused("Not every training process finds this run's saved state: all of them read it from "
                            "the runs folder beside CXR_MODELS, which must be the same (shared) folder.")
    try:
        payload, digest, refusal = *load_state(path, identity), None
    except ResumeRefused as exc:
        payload, digest, refusal = None, "", exc
    if hardware.on_any(refusal is not None):
        refusal = refusal or damaged("another training process could not read it", lasting=False)
        if resume == IF_SAVED:  # a script run again (make models) goes on; the fresh run replaces the state
            return RunCheckpoint(identity, hardware, folder, job_id, set_aside=refusal.reason, if_saved=True)
        run_lock.release(lock)
        raise refusal
    checkpoint = RunCheckpoint(identity, hardware, folder, job_id, payload, (digest,), if_saved=resume == IF_SAVED)
    on_rank_0(hardware, lambda: checkpoint.describe(*checkpoint.on_disk),  # the resuming job owns the run from now
              guard=runs_written(checkpoint.resumed_after, identity.config.epochs))  # on (its Resume, its messages)
    return checkpoint


