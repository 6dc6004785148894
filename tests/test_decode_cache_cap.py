"""The decode cache keeps to its cap while a run fills it and after the cap is lowered (core.films.decode_cache).

A review found it pruned only at the end of a run that wrote something: a large run wrote far past the cap
before pruning, and a cap lowered afterwards was never met by runs whose films were all cached already."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from core.films.decode_cache import DecodeCache

SIZE = 32
ENTRY = 48 + SIZE * SIZE  # header + pixels


def _fill(cache: DecodeCache, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        pixels = np.full((SIZE, SIZE), i % 256, dtype=np.uint8)
        cache.put(hashlib.sha256(str(i).encode()).hexdigest(), SIZE, pixels)


def test_a_writer_keeps_the_cache_near_its_cap_while_it_fills_it(tmp_path):
    cache = DecodeCache(tmp_path / "c", max_bytes=20 * ENTRY, namespace="test")
    assert cache.prepare()
    _fill(cache, 200)  # ten times the cap, never pruned by hand
    # pruned each time a tenth of the cap was written: never more than that over it
    assert 18 * ENTRY <= cache.size() <= 22 * ENTRY
    newest = hashlib.sha256(b"199").hexdigest()
    assert cache.get(newest, SIZE) is not None and cache.get(hashlib.sha256(b"0").hexdigest(), SIZE) is None


def test_a_lowered_cap_is_met_when_the_cache_is_next_opened(tmp_path, settings_env):
    folder = tmp_path / "cache"
    settings_env(CXR_DECODE_CACHE=str(folder), CXR_DECODE_CACHE_MAX_BYTES=str(100 * ENTRY))
    cache = DecodeCache.from_settings("test")
    _fill(cache, 60)
    assert cache.size() == 60 * ENTRY
    settings_env(CXR_DECODE_CACHE=str(folder), CXR_DECODE_CACHE_MAX_BYTES=str(30 * ENTRY))
    assert DecodeCache.from_settings("test").size() == 30 * ENTRY  # nothing written: pruned on opening
    _fill(DecodeCache.from_settings("test"), 1, start=60)
    assert DecodeCache.from_settings("test").size() == 31 * ENTRY  # the same cap again: no scan, no prune
    assert sorted(p.name for p in Path(folder).iterdir()) == [f"{SIZE}px", "pruned-to"]
    assert (Path(folder) / "pruned-to").stat().st_mode & 0o077 == 0


def test_a_folder_of_other_files_is_neither_narrowed_nor_pruned(tmp_path, settings_env):
    """A review: CXR_DECODE_CACHE naming a folder of other files narrowed it to 0700, and pruning deleted its old
    *.tmp files and, at a cap of 0, every *.u8 file in it; only the cache's own names are its to touch."""
    import os
    import time

    folder = tmp_path / "work"
    (folder / "exports").mkdir(parents=True)
    folder.chmod(0o750)
    notes, draft = folder / "exports" / "scan-notes.u8", folder / "exports" / "draft.tmp"
    for path in (notes, draft):
        path.write_bytes(b"mine")
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    settings_env(CXR_DECODE_CACHE=str(folder), CXR_DECODE_CACHE_MAX_BYTES="0")
    assert DecodeCache.from_settings("test") is None  # the cache is off there: decoding costs only speed
    assert oct(folder.stat().st_mode & 0o777) == "0o750" and notes.exists() and draft.exists()
    cache = DecodeCache(tmp_path / "cache", max_bytes=0, namespace="test")  # the cache's own folder
    assert cache.prepare()
    _fill(cache, 2)
    odd = next((tmp_path / "cache" / f"{SIZE}px").iterdir()) / "notes.u8"  # in its layout, not its name
    odd.write_bytes(b"mine")
    cache.prune()
    assert odd.exists() and cache.size() == 0
