"""DICOM decoding in worker processes with memory and time limits: the general guard against bombs.

Header checks (:mod:`core.films.bounds`) refuse the bombs we know how to spot; a deflated data set, an RLE
segment or a decoder's own weakness can still ask for gigabytes or minutes. So pydicom runs only in
:mod:`core.films.decode_worker` processes, each capped at ``decode_memory_mb`` of address space beyond what
it holds idle; a film whose header takes longer than ``decode_seconds`` to read, or whose pixels take longer
than that plus ``decode_seconds_per_megapixel`` per megapixel to decode, has its worker killed. Either way
the film is refused with a message naming it, and the app and the CLI carry on.

Workers are kept and reused (starting one costs ~0.3 s of imports; a film then costs a pipe transfer of its
pixels); at most ``decode_workers`` films decode at once, the rest wait their turn. A worker that ran out of
memory, timed out or died is replaced by a fresh one for the next film. A process that expects DICOMs (the
dashboard's server, ``predict`` given one) starts a worker ahead of the first film: :func:`start_worker_early`.
"""
from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterable

from multiprocessing.connection import Connection

import numpy as np

from core.config import REPO_ROOT, decode_worker_environment, settings
from core.errors import DecodingTimedOut, DecodingUnavailable, UnreadableImage
from core.films.film import Film

STARTUP_SECONDS = 120.0  # importing numpy and pydicom on a machine busy training
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
_DICOM_MAGIC = (128, b"DICM")  # the same test as core.films.read: "DICM" after the 128-byte preamble


class _Lost(Exception):
    """The worker is gone or must go: ``reason`` says why, for the film's message."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Worker:
    """One decoding process and the two pipes to it."""

    def __init__(self, memory_bytes: int):
        to_worker_read, to_worker_write = os.pipe()
        from_worker_read, from_worker_write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "core.films.decode_worker", str(to_worker_read), str(from_worker_write),
                 str(memory_bytes)],
                pass_fds=(to_worker_read, from_worker_write), env=decode_worker_environment(), cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except BaseException:
            for fd in (to_worker_write, from_worker_read):
                os.close(fd)
            raise
        finally:
            os.close(to_worker_read)
            os.close(from_worker_write)
        self.requests = Connection(to_worker_write, readable=False)
        self.answers = Connection(from_worker_read, writable=False)
        try:
            ready = self._receive(STARTUP_SECONDS) == {"ready": True}
        except _Lost:
            ready = False
        if not ready:
            self.close()
            raise _Lost("start")

    def decode(self, data: bytes, label: str, headerless: bool, limits: "DecodePool") -> dict:
        """The worker's answer header; with ``"film"`` its ``"pixels"`` are added, read from the pipe.

        Reading the header gets ``limits.seconds``; decoding the pixels that much again plus
        ``limits.seconds_per_megapixel`` for each megapixel the header passed (a large film is slower)."""
        try:
            self.requests.send_bytes(json.dumps({"label": label, "headerless": headerless}).encode())
            self.requests.send_bytes(data)
        except OSError:
            raise _Lost("died") from None
        answer = self._receive(limits.seconds)
        if "decoding" in answer:
            megapixels = max(int(answer["decoding"]), 0) / 1e6
            answer = self._receive(limits.seconds + megapixels * limits.seconds_per_megapixel)
        if "film" in answer:
            shape = tuple(answer["film"]["shape"])
            pixels = np.empty(shape, dtype=np.float32)
            try:
                self.answers.recv_bytes_into(memoryview(pixels).cast("B"))
            except (EOFError, OSError):
                raise _Lost("died") from None
            answer["pixels"] = pixels
        return answer

    def _receive(self, seconds: float) -> dict:
        try:
            if not self.answers.poll(seconds):
                raise _Lost("time")
            return json.loads(self.answers.recv_bytes())
        except (EOFError, OSError, ValueError):
            raise _Lost("died") from None

    def close(self) -> None:
        """Stop the process (it may be stuck in a decoder: kill, do not ask) and release its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.requests.close()
        self.answers.close()


class DecodePool:
    """Reusable decoding workers, at most ``size`` busy at once."""

    def __init__(self, size: int, memory_mb: int, seconds: float, seconds_per_megapixel: float):
        self.size, self.memory_mb = size, memory_mb
        self.seconds, self.seconds_per_megapixel = seconds, seconds_per_megapixel
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._starting: threading.Event | None = None  # set when a worker started ahead of time is ready (or failed)

    @property
    def limits(self) -> tuple[int, int, float, float]:
        return self.size, self.memory_mb, self.seconds, self.seconds_per_megapixel

    def decode(self, data: bytes, label: str, headerless: bool = False) -> Film | None:
        """The film in DICOM ``data`` (None: headerless bytes that are no DICOM image), or UnreadableImage."""
        with self._slots:
            worker = self._take()
            try:
                answer = worker.decode(data, label, headerless, self)
            except _Lost as lost:
                worker.close()
                refused = DecodingTimedOut if lost.reason == "time" else UnreadableImage
                raise refused(self._message(lost.reason, label)) from None
            if answer.get("memory"):
                worker.close()
                raise UnreadableImage(self._message("memory", label))
            if answer.get("retiring"):  # it came near its memory limit and exits: the next film gets a fresh one
                worker.close()
            else:
                self._give_back(worker)
        if "film" in answer:
            film = answer["film"]
            return Film(answer["pixels"], film["source_format"], tuple(film["original_size"]), film["bit_depth"],
                        film["metadata"], tuple(film["warnings"]))
        if answer.get("not_dicom"):
            return None
        if isinstance(answer.get("error"), str):
            raise UnreadableImage(answer["error"])
        raise UnreadableImage(self._message("failed", label))

    def start_worker(self) -> threading.Thread | None:
        """Start one worker in the background unless one is idle or already starting, so that the first film
        finds it ready instead of waiting for its imports. The worker is the same as any other (same limits);
        one that fails to start is forgotten, and the first film starts its own and reports any problem."""
        with self._lock:
            if self._idle or self._starting is not None or self._closed:
                return None
            self._starting = threading.Event()
        thread = threading.Thread(target=self._start_ahead, name="decode-worker-start", daemon=True)
        thread.start()
        return thread

    def _start_ahead(self) -> None:
        try:
            worker: _Worker | None = _Worker(self.memory_mb * 2**20)
        except (_Lost, OSError):
            worker = None
        with self._lock:
            starting, self._starting = self._starting, None
            if worker is not None and not self._closed:
                self._idle.append(worker)
                worker = None
        if worker is not None:
            worker.close()
        if starting is not None:
            starting.set()

    def _take(self) -> _Worker:
        with self._lock:
            self._drop_exited()
            if self._idle:
                return self._idle.pop()
            starting = self._starting
        if starting is not None:  # a worker already on its way is ready sooner than a new one
            starting.wait(STARTUP_SECONDS)
            with self._lock:
                if self._idle:
                    return self._idle.pop()
        try:
            return _Worker(self.memory_mb * 2**20)
        except (_Lost, OSError) as exc:
            raise DecodingUnavailable("DICOM films cannot be decoded right now: the decoding process did not start. "
                                  "Try again; if it persists, the server needs attention.") from exc

    def _drop_exited(self) -> None:
        """Forget idle workers that are gone (killed meanwhile, e.g. by the kernel's OOM killer): a film sent to
        one would be refused as damaged. Called with the lock held."""
        for worker in [w for w in self._idle if w.process.poll() is not None]:
            self._idle.remove(worker)
            worker.close()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.close()  # the pool was replaced while this film decoded

    def _message(self, reason: str, label: str) -> str:
        if reason == "time":
            return (f"{label} took longer than the time limit for its size to decode ({self.seconds:g} s, plus "
                    f"{self.seconds_per_megapixel:g} s per megapixel) and was stopped: the server may be busy, or "
                    "the file damaged or built to exhaust it. Try again in a moment; if it is stopped again, export "
                    "the film again.")
        if reason == "memory":
            return (f"{label} is too large to decode safely: decoding it needs more than the {self.memory_mb} MB "
                    "memory limit for one film. Export the film at a lower resolution.")
        return f"{label} could not be decoded: the file is damaged. Export the film again."

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        if os.getpid() == self._pid:  # a forked child must not kill its parent's workers
            for worker in idle:
                worker.close()


_pool: DecodePool | None = None
_pool_lock = threading.Lock()


def decode_pool() -> DecodePool:
    """This process's pool, made anew when the limits in the settings change or after a fork."""
    global _pool
    current = settings()
    limits = (current.decode_workers, current.decode_memory_mb, current.decode_seconds,
              current.decode_seconds_per_megapixel)
    with _pool_lock:
        if _pool is None or _pool._pid != os.getpid() or _pool.limits != limits:
            if _pool is not None:
                _pool.close()
            _pool = DecodePool(*limits)
        return _pool


def start_worker_early(paths: Iterable[str | Path] | None = None) -> bool:
    """Start a decoding worker in the background when DICOMs are coming: always without ``paths`` (a server
    whose uploads may be DICOMs), else only when one of ``paths`` is a DICOM by its name or its first bytes,
    so a run on PNG or JPEG files starts nothing. True when a worker is starting or ready."""
    if paths is not None and not any(_looks_like_dicom(Path(path)) for path in paths):
        return False
    pool = decode_pool()
    pool.start_worker()
    with pool._lock:
        return bool(pool._idle) or pool._starting is not None


def _looks_like_dicom(path: Path) -> bool:
    offset, magic = _DICOM_MAGIC
    try:
        if not path.is_file():  # nor a pipe or device, which opening could block on
            return False
        if path.suffix.lower() in DICOM_SUFFIXES:
            return True
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(len(magic)) == magic
    except OSError:  # missing or unreadable: reading the film says so later
        return False


@atexit.register
def _close_pool() -> None:
    if _pool is not None:
        _pool.close()
