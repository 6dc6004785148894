"""Decoded films shared across runs: each film's 8-bit model input at one image size, found by its content
(and, under the same rules, arrays derived from a film: its image features for the population check).

Decoding dominates the fixed cost of a training run, and every run (every rank of a distributed one) decodes
the same films again. This cache keeps each film's ``film_to_tensor`` output on disk, keyed by a SHA-256 of
the film's bytes mixed with the image size and a namespace that names the preprocessing (its version and the
decoder libraries), so the same content at the same size is decoded once and a film changed in place, or a
change to the preprocessing, simply misses.

It holds patient images, so it is treated like them: its folder is private to the user (0700), entries are
0600, nothing in it names a film (file names are keys), and it lives outside the code tree (``core.config``
says where, or that it is off). Entries are raw uint8 pixels behind a small header carrying the key, the size
and a CRC of the pixels, never pickles; anything that does not check out is a miss and is deleted. Writers
write a private temporary file and ``os.replace`` it into place, so any number of processes can fill the same
entries and a reader sees a whole entry or none. The cache is capped and pruned least recently used first (as
writers fill it, and at once when its cap was lowered), by modification times it sets itself on every hit
(access times are often not kept by the filesystem).
Any failure of the cache itself (full disk, unwritable folder, a configured folder that is not ours, that
anyone may write into or that holds other files) costs only speed: the film is decoded.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from core import config

_MAGIC = b"CXRDEC\x01\x00"
_ARRAY_MAGIC = b"CXRARR\x01\x00"  # other arrays derived from a film (its image features), same header
_HEADER = struct.Struct("<8sII32s")  # magic, image size, CRC-32 of the pixels, key digest
_SUFFIX = ".u8"
_TEMP_SUFFIX = ".tmp"
_STALE_TEMP_SECONDS = 3600  # a temporary file this old belongs to a writer that died
_CAP_FILE = "pruned-to"  # the cap the folder was last pruned to: a lower one set since is pruned to at once
_PRUNE_EVERY = 10  # a writer prunes each time it has written a tenth of the cap
FEATURE_FOLDER = "features"  # the film features' folder (core.models.features), beside the {size}px ones
# What the cache itself names (a review: a folder of other files, named as the cache, was narrowed and pruned):
_ENTRY = re.compile(r"[0-9a-f]{64}\.u8")
_TEMP = re.compile(r"\.(?:[0-9a-f]{64}|" + _CAP_FILE + r")\.\d+\.\d+\.tmp")
_TOP = re.compile(r"\d+px|" + FEATURE_FOLDER + "|" + _CAP_FILE)


class DecodeCache:
    """One cache folder; ``namespace`` names the preprocessing whose output it stores (part of every key)."""

    def __init__(self, root: Path, max_bytes: int, namespace: str):
        self.root = Path(root)
        self.max_bytes = int(max_bytes)
        self.namespace = namespace.encode()
        self.wrote = False  # set once anything was written: only then is pruning worth a scan
        self._unpruned = 0  # bytes this object wrote since it last pruned
        self._pruning = threading.Lock()

    @classmethod
    def from_settings(cls, namespace: str) -> "DecodeCache | None":
        """The configured cache, or None when it is switched off or its folder is not fit for patient images."""
        current = config.settings()
        if current.decode_cache is None:
            return None
        cache = cls(current.decode_cache, current.decode_cache_max_bytes, namespace)
        if not cache.prepare():
            return None
        if cache.max_bytes < cache._last_cap():  # a run whose films are all cached writes nothing and so never
            cache.prune()  # prunes: a cap lowered since would never be met (a review)
        return cache

    def prepare(self) -> bool:
        """Create the folder (0700 on every level made here) or narrow our own to 0700; False when it is not
        ours, others may write into it (a shared folder such as /tmp is no place for patient images), or it holds
        anything but the cache's own entries (a folder of other files is neither narrowed nor pruned)."""
        try:
            if self.root.exists() or self.root.is_symlink():
                info = self.root.lstat()
                if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or \
                        info.st_mode & (stat.S_IWOTH | stat.S_IWGRP):  # a group's too: what it holds may be planted
                    return False
                if not all(_TOP.fullmatch(name) or _TEMP.fullmatch(name) for name in os.listdir(self.root)):
                    return False
            _private_folder(self.root)
        except OSError:
            return False
        return True

    def key(self, content: bytes, image_size: int) -> str:
        """The entry name for a film's bytes at one size: content hash + size + namespace, hashed again."""
        digest = hashlib.sha256(content).digest()
        return hashlib.sha256(self.namespace + b"|%d|" % image_size + digest).hexdigest()

    def path(self, key: str, image_size: int) -> Path:
        return self.root / f"{image_size}px" / key[:2] / (key + _SUFFIX)

    def get(self, key: str, image_size: int) -> np.ndarray | None:
        """The S x S uint8 pixels stored under ``key``, or None (missing or damaged: a damaged one is deleted)."""
        payload = self._read(self.path(key, image_size), key, _MAGIC, image_size, image_size * image_size)
        return None if payload is None else np.frombuffer(payload, dtype=np.uint8).reshape(image_size, image_size)

    def put(self, key: str, image_size: int, pixels: np.ndarray) -> None:
        """Store S x S uint8 pixels atomically; a failure to write only loses the saving."""
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if pixels.shape != (image_size, image_size):
            raise ValueError(f"a decoded film at {image_size} px must be {image_size} x {image_size}")
        self._write(self.path(key, image_size), key, _MAGIC, image_size, pixels.tobytes())

    def _read(self, path: Path, key: str, magic: bytes, size: int, nbytes: int) -> bytearray | None:
        """The ``nbytes`` payload of the entry at ``path`` if its header (magic, size field, key) and CRC check
        out; None when missing, and a damaged entry is deleted. A hit counts as a use (pruning order)."""
        try:  # our own folders and file, no link (found by a review: a planted link's entry was served)
            if not (_own_folder(path.parent) and _own_folder(path.parent.parent)):
                return None
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK), "rb") as entry:
                info = os.fstat(entry.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
                    return None
                blob = entry.read(_HEADER.size + nbytes + 1)
        except OSError:
            return None
        payload = _payload(blob, key, magic, size, nbytes)
        if payload is None:
            _remove(path)
            return None
        try:
            os.utime(path)  # the least recently used entries are pruned first
        except OSError:
            pass  # pruned by another process since we read it: the payload we hold is still whole
        return payload

    def _write(self, path: Path, key: str, magic: bytes, size: int, payload: bytes) -> None:
        blob = _HEADER.pack(magic, size, zlib.crc32(payload), bytes.fromhex(key)) + payload
        temp = path.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}{_TEMP_SUFFIX}")
        try:
            _private_folder(path.parent)
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                out.write(blob)
            os.replace(temp, path)  # readers see the old entry or this whole one, never a part
        except OSError:
            _remove(temp)
            return
        self.wrote = True
        with self._pruning:  # pruned as it fills, not only at a run's end: a large run once wrote far past the cap
            self._unpruned += len(blob)
            due = self._unpruned * _PRUNE_EVERY >= self.max_bytes
            if due:
                self._unpruned = 0
        if due:
            self.prune()

    def array_path(self, key: str, folder: str) -> Path:
        return self.root / folder / key[:2] / (key + _SUFFIX)

    def get_array(self, key: str, folder: str, length: int) -> np.ndarray | None:
        """The ``length`` float32 values stored under ``key`` in ``folder`` (an array derived from a film, such
        as its features: the same keys, header, checks and pruning as pixels), or None."""
        payload = self._read(self.array_path(key, folder), key, _ARRAY_MAGIC, 4 * length, 4 * length)
        return None if payload is None else np.frombuffer(payload, dtype=np.float32)

    def put_array(self, key: str, folder: str, values: np.ndarray) -> None:
        """Store a one-dimensional float32 array atomically; a failure to write only loses the saving."""
        payload = np.ascontiguousarray(values, dtype=np.float32).ravel().tobytes()
        self._write(self.array_path(key, folder), key, _ARRAY_MAGIC, len(payload), payload)

    def entries(self) -> list[tuple[int, str, int, Path]]:
        """(last use in ns, name, bytes, path) of every whole entry, oldest first; stale temporaries are removed."""
        found, stale = [], time.time() - _STALE_TEMP_SECONDS
        for folder, _, names in os.walk(self.root):
            depth = len(Path(folder).relative_to(self.root).parts)  # entries lie in {folder}/{key[:2]}/
            for name in names:
                path = Path(folder) / name
                entry = depth == 2 and _ENTRY.fullmatch(name) and name[:2] == path.parent.name
                if not (entry or depth in (0, 2) and _TEMP.fullmatch(name)):
                    continue  # not the cache's: never counted, never removed
                try:
                    info = path.stat()
                except OSError:
                    continue  # pruned or replaced by another process meanwhile
                if entry:
                    found.append((info.st_mtime_ns, name, info.st_size, path))
                elif info.st_mtime < stale:
                    _remove(path)
        return sorted(found)

    def size(self) -> int:
        return sum(entry[2] for entry in self.entries())

    def prune(self) -> int:
        """Delete least recently used entries until the cache fits its cap; returns the bytes freed.

        Several processes may prune at once: an entry another one deleted first is simply skipped."""
        entries = self.entries()
        total = sum(entry[2] for entry in entries)
        freed = 0
        for _, _, nbytes, path in entries:
            if total - freed <= self.max_bytes:
                break
            _remove(path)
            freed += nbytes
        self._record_cap()
        return freed

    def _last_cap(self) -> int:
        """The cap this folder was last pruned to (larger than any cap when it never was or cannot be read)."""
        try:
            with os.fdopen(os.open(self.root / _CAP_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)) as stamp:
                return int(stamp.read(32))
        except (OSError, ValueError):
            return 2**63

    def _record_cap(self) -> None:
        temp = self.root / f".{_CAP_FILE}.{os.getpid()}.{threading.get_ident()}{_TEMP_SUFFIX}"
        try:
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(str(self.max_bytes))
            os.replace(temp, self.root / _CAP_FILE)
        except OSError:
            _remove(temp)  # the next run prunes again: only a scan lost


def _payload(blob: bytes, key: str, magic: bytes, size: int, nbytes: int) -> bytearray | None:
    """An entry's payload (a writable copy) if ``blob`` is whole: the header's magic, size field (image size for
    pixels, byte length for arrays) and key match, and the CRC of the payload does."""
    if len(blob) != _HEADER.size + nbytes:
        return None
    found_magic, found_size, crc, digest = _HEADER.unpack_from(blob)
    payload = bytearray(memoryview(blob)[_HEADER.size:])
    if found_magic != magic or found_size != size or digest != bytes.fromhex(key) or zlib.crc32(payload) != crc:
        return None
    return payload


def _private_folder(folder: Path) -> None:
    """Make ``folder`` and any missing parents with mode 0700; narrow the folder itself to 0700 if it is wider."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=0o700)
        except FileExistsError:
            pass  # made by another process meanwhile
    leaf = missing[0] if missing else folder
    if stat.S_IMODE(leaf.stat().st_mode) & 0o077:
        os.chmod(leaf, 0o700)


def _own_folder(path: Path) -> bool:
    """A real folder (not a link) of ours."""
    info = path.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # already gone (another process pruned it) or not ours: nothing to do
