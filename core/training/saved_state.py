"""Reading a saved training state (core.training.resume) as untrusted input: never through a symbolic link nor
from anything but a plain file, its SHA-256 against the one the run's description recorded, loaded with
``weights_only=True``, then every entry's type, the epoch against the history, and the weights, optimiser and
learning-rate schedule against the fresh model's. Any fault is :class:`ResumeRefused` naming no file: a
damaged state is never half-restored.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Protocol

import torch

from core.errors import ResumeRefused
from core.films.tensor import cache_namespace
from core.store.records import EpochRecord, TrainConfig


class Identity(Protocol):
    """What a state is checked against (core.training.resume.RunIdentity; not imported: resume imports this)."""

    key: str
    world_size: int
    config: TrainConfig


FORMAT = 1
DIGESTS = "state_sha256"  # in RUNS/<key>.json: the state's SHA-256 (and the one saved before it)
RUN_ID = "run_id"  # in the state: one run's id across its resumes (older states: none; a new one is drawn)
STATE_TYPES = {"epoch": int, "finished": bool, "seconds": (int, float), "best_auc": (int, float), "stale": int,
               "history": list, "model": dict, "best_state": dict, "optimiser": dict, "schedule": dict,
               "generators": torch.Tensor, "rng": torch.Tensor}


def damaged(reason: str, lasting: bool = True) -> ResumeRefused:
    """Lasting unless said otherwise: asking again reads the same bytes, so the page offers no Resume again (every
    click started another job refused the same way: a review)."""
    return ResumeRefused(f"The saved state of this run cannot be read: {reason}. It cannot be resumed; start a new "
                         "run with the same settings instead (without --resume), which replaces it.",
                         reason=f"cannot be read: {reason}", lasting=lasting)


def _another_run() -> ResumeRefused:
    return ResumeRefused("The saved state of this run was written for another run or by another version; "
                         "start a new run instead (without --resume).",
                         reason="written for another run or by another version", lasting=True)


def _read_regular(path: Path) -> bytes:
    """The file's bytes, never through a link nor from anything but a plain file (a FIFO would block)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise damaged("it is a link, not a file the run saved") from exc
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise damaged("it is not a file the run saved")
        return handle.read()


def _recorded_digests(description: Path, identity: Identity) -> list[str] | None:
    """The digests the run's description lists; None for a state saved before digests were recorded."""
    try:
        data = json.loads(_read_regular(description))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise damaged(f"its description is damaged ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise damaged("its description is damaged")
    if data.get("key") != identity.key:
        raise _another_run()
    digests = data.get(DIGESTS)
    if digests is not None and not (isinstance(digests, list) and digests
                                    and all(isinstance(d, str) and len(d) == 64 for d in digests)):
        raise damaged("its description is damaged (checksum)")
    return digests


def load_state(path: Path, identity: Identity) -> tuple[dict, str]:
    """The checked state and its SHA-256; ResumeRefused, naming no file, whatever is wrong with it."""
    expected = _recorded_digests(path.with_suffix(".json"), identity)
    try:
        data = _read_regular(path)
    except OSError as exc:
        raise damaged(f"the file cannot be opened ({type(exc).__name__})", lasting=False) from exc  # permissions
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest not in expected:
        raise damaged("its checksum differs from the one recorded when it was saved, so it has changed since")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file can make the unpickler raise anything at all
        raise damaged(f"it is damaged ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("key") != identity.key:
        raise _another_run()
    _check_state(payload, identity)
    return payload, digest


def _check_state(state: dict, identity: Identity) -> None:
    """Every entry of the right type, and the epochs consistent with each other and with the settings."""
    for name, kind in STATE_TYPES.items():
        value = state.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise damaged(f"its entry {name!r} is missing or of the wrong kind")
    for name in ("model", "best_state"):
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state[name].items()):
            raise damaged(f"its entry {name!r} holds something other than weights")
    for name in ("generators", "rng", "device_rng"):
        value = state.get(name)
        if value is not None and not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8
                                      and value.dim() == 2 and len(value) == identity.world_size):
            raise damaged(f"its random-number states ({name}) do not fit {identity.world_size} process(es)")
    decoding = state.get("decoding")  # states saved before it was recorded carry none
    if decoding is not None and decoding != cache_namespace():
        raise ResumeRefused("The saved state of this run was trained on films decoded by other code (another version "
                            "of this program's preprocessing, of Pillow or of pydicom): its next epochs would learn "
                            "from differently decoded films. It cannot be resumed; start a new run with the same "
                            "settings instead (without --resume), which replaces it.",
                            reason="its films were decoded by other code since", lasting=True)
    try:
        history = [EpochRecord.model_validate(h) for h in state["history"]]
    except ValueError as exc:
        raise damaged("its history is damaged") from exc
    epoch, epochs = state["epoch"], identity.config.epochs
    if not 1 <= epoch <= epochs or [h.epoch for h in history] != list(range(1, epoch + 1)):
        raise damaged(f"it says epoch {epoch} of {epochs} but holds the history of {len(history)} epoch(s)")
    if not (state["finished"] or epoch < epochs) or not 0 <= state["stale"] <= epoch \
            or not math.isfinite(state["seconds"]) or state["seconds"] < 0:
        raise damaged("its progress is inconsistent")


def misfit(saved: dict, fresh: dict) -> str | None:
    """How saved tensors differ from a fresh state's (names, shapes, kinds); None when they fit."""
    if saved.keys() != fresh.keys():
        return f"{len(saved.keys() ^ fresh.keys())} names differ"
    for name, tensor in fresh.items():
        if not isinstance(saved[name], torch.Tensor) or saved[name].shape != tensor.shape \
                or saved[name].dtype != tensor.dtype:
            return f"{name} differs"
    return None


def _same_kind(saved: dict, fresh: dict) -> bool:
    """No entry the fresh one lacks (a schedule's would become attributes), each of the same type (numbers
    alike); one missing keeps its fresh value (a state from an older torch)."""
    def kind(value: Any) -> Any:
        return float if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)
    return saved.keys() <= fresh.keys() and all(kind(value) is kind(fresh[k]) for k, value in saved.items())


def check_optimiser(saved: Any, optimiser: torch.optim.Optimizer) -> None:
    fresh = optimiser.state_dict()
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or len(groups) != len(fresh["param_groups"]) \
            or not all(isinstance(g, dict) and _same_kind(g, f) and g.get("params") == f["params"]
                       for g, f in zip(groups, fresh["param_groups"])):
        raise damaged("its optimiser does not fit this model")
    params = {index: param for f, group in zip(fresh["param_groups"], optimiser.param_groups)
              for index, param in zip(f["params"], group["params"])}
    state = saved.get("state")
    if not isinstance(state, dict) or not all(
            index in params and isinstance(entry, dict) and all(
                isinstance(v, torch.Tensor) and (v.dim() == 0 or v.shape == params[index].shape)
                for v in entry.values()) for index, entry in state.items()):
        raise damaged("its optimiser state does not fit this model")


def check_schedule(saved: Any, fresh: dict, epoch: int, epochs: int) -> None:
    if not isinstance(saved, dict) or not _same_kind(saved, fresh):
        raise damaged("its learning-rate schedule does not fit this run")
    if "total_steps" in fresh and (saved.get("total_steps") != fresh["total_steps"]
                                   or saved.get("last_epoch") != epoch * fresh["total_steps"] // epochs):
        raise damaged("its learning-rate schedule does not match its epoch")
