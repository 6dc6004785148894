"""The decode cache: decoded films reused across runs by content, bit for bit, private, capped, and whole.

Real films: four 224-px Kermany training films and two full-resolution films, copied into a temporary
class-folder tree so a test can change one in place. Decodes are counted by wrapping ``film_to_tensor``.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core import config, limits
from core.errors import DatasetError, SettingOutOfRange
from core.films import tensor
from core.films.decode_cache import DecodeCache
from core.films.folders import discover
from core.films.read import read_film
from core.films.tensor import film_to_tensor, load_tensors

REPO = Path(__file__).resolve().parent.parent
SIZE = 64
HEADER_BYTES = 48
ENTRY = re.compile(r"[0-9a-f]{64}\.u8")


@pytest.fixture
def films(tmp_path, kermany_train, films_dir):
    """A class-folder tree of six real films: two full-resolution, four from the 224-px training copy."""
    picks = {"NORMAL": [films_dir / "NORMAL" / "NORMAL2-IM-1430-0001.jpeg",
                        *sorted((kermany_train / "NORMAL").iterdir())[:2]],
             "PNEUMONIA": [films_dir / "PNEUMONIA" / "person1946_bacteria_4874.jpeg",
                           *sorted((kermany_train / "PNEUMONIA").iterdir())[:2]]}
    for label, paths in picks.items():
        (tmp_path / "films" / label).mkdir(parents=True)
        for path in paths:
            target = tmp_path / "films" / label / path.name
            shutil.copyfile(path, target)
            target.chmod(0o644)
    return discover(tmp_path / "films")


@pytest.fixture
def cache_dir(tmp_path, settings_env) -> Path:
    folder = tmp_path / "cache" / "decoded"
    settings_env(CXR_DECODE_CACHE=str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch) -> list:
    """Every film ``load_tensors`` decodes (the source ``read_film`` was given), in the order decoded."""
    seen, lock, real = [], threading.Lock(), tensor.read_film

    def counting(source, name=None):
        with lock:
            seen.append(source)
        return real(source, name)

    monkeypatch.setattr(tensor, "read_film", counting)
    return seen


def reference(films, size=SIZE) -> torch.Tensor:
    """The films decoded straight through the preprocessing path, no cache involved."""
    return torch.stack([film_to_tensor(read_film(path), size) for path in films.paths])


def entries(folder: Path) -> list[Path]:  # beside the entries only the note of the cap last pruned to
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "pruned-to")


def test_the_second_load_comes_from_the_cache_bit_for_bit(films, cache_dir, decodes):
    expected = reference(films)
    first = load_tensors(films, SIZE)
    assert len(decodes) == len(films) == 6
    assert all(isinstance(source, bytes) for source in decodes)  # each file read once, decoded from memory
    assert len(entries(cache_dir)) == 6
    decodes.clear()
    second = load_tensors(films, SIZE)
    assert decodes == []  # nothing decoded: every film came from the cache
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert second.dtype == torch.uint8 and second.shape == (6, 1, SIZE, SIZE)
    assert len({bytes(film.numpy()) for film in second}) == 6  # six films, not one entry served six times


def test_the_same_content_reuses_one_entry_and_each_size_has_its_own(films, cache_dir, decodes, tmp_path):
    load_tensors(films, SIZE)
    copy = tmp_path / "copy" / "NORMAL"
    copy.mkdir(parents=True)
    (tmp_path / "copy" / "PNEUMONIA").mkdir()
    shutil.copyfile(films.paths[0], copy / "renamed.jpeg")
    shutil.copyfile(films.paths[3], tmp_path / "copy" / "PNEUMONIA" / "other-name.jpeg")
    decodes.clear()
    renamed = load_tensors(discover(tmp_path / "copy"), SIZE)
    assert decodes == []  # same bytes under another name: found by content
    assert torch.equal(renamed[0], reference(films)[0])
    smaller = load_tensors(films, 32)
    assert len(decodes) == 6 and torch.equal(smaller, reference(films, 32))
    assert {p.parent.parent.name for p in entries(cache_dir)} == {"32px", f"{SIZE}px"}


def test_a_film_changed_in_place_is_decoded_again(films, cache_dir, decodes, kermany_train):
    load_tensors(films, SIZE)
    changed = films.paths[4]  # a 224-px PNEUMONIA film, replaced by another real film's bytes
    changed.write_bytes(films.paths[1].read_bytes())
    decodes.clear()
    again = load_tensors(films, SIZE)
    assert len(decodes) == 0  # its new content is a film the cache already holds
    assert torch.equal(again[4], film_to_tensor(read_film(films.paths[1]), SIZE))
    changed.write_bytes(sorted((kermany_train / "NORMAL").iterdir())[5].read_bytes())  # a film never seen
    new_pixels = film_to_tensor(read_film(changed), SIZE)
    decodes.clear()
    again = load_tensors(films, SIZE)
    assert len(decodes) == 1
    assert torch.equal(again[4], new_pixels) and torch.equal(again[:4], reference(films)[:4])


def test_a_film_replaced_by_another_of_the_same_size_and_time_is_decoded_again(films, cache_dir, decodes,
                                                                               kermany_train):
    """Names, sizes and times alike (what a listing shows): only the content tells the two apart."""
    load_tensors(films, SIZE)
    changed = films.paths[4]
    size, times = changed.stat().st_size, changed.stat()
    other = next(p for p in sorted((kermany_train / "NORMAL").iterdir())[5:] if p.stat().st_size < size)
    changed.write_bytes(other.read_bytes().ljust(size, b"\0"))  # a decoder stops at the image's end
    os.utime(changed, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert changed.stat().st_size == size and changed.stat().st_mtime_ns == times.st_mtime_ns
    decodes.clear()
    again = load_tensors(films, SIZE)
    assert len(decodes) == 1
    assert torch.equal(again[4], film_to_tensor(read_film(other), SIZE))

def test_a_new_preprocessing_version_misses_old_entries(films, cache_dir, decodes, monkeypatch):
    load_tensors(films, SIZE)
    monkeypatch.setattr(tensor, "PREPROCESSING_VERSION", tensor.PREPROCESSING_VERSION + 1)
    decodes.clear()
    assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(decodes) == 6 and len(entries(cache_dir)) == 12


@pytest.mark.parametrize("damage", [
    lambda blob: blob[: len(blob) // 2],  # truncated
    lambda blob: b"",  # empty
    lambda blob: blob + b"\0",  # longer than an entry
    lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),  # one pixel flipped: the CRC catches it
    lambda blob: b"\x80\x04" + blob[2:],  # not our header (a pickle's opening bytes)
    lambda blob: blob[:12] + bytes([blob[12] ^ 1]) + blob[13:],  # header's CRC field damaged
], ids=["truncated", "empty", "too-long", "pixel-flipped", "foreign-header", "crc-field"])
def test_a_damaged_entry_is_a_miss_and_is_replaced(films, cache_dir, decodes, damage):
    load_tensors(films, SIZE)
    victim = entries(cache_dir)[0]
    victim.write_bytes(damage(victim.read_bytes()))
    decodes.clear()
    assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(decodes) == 1  # only the damaged film decoded again
    assert victim.stat().st_size == HEADER_BYTES + SIZE * SIZE  # and written back whole
    decodes.clear()
    load_tensors(films, SIZE)
    assert decodes == []


def test_an_entry_under_another_films_name_is_a_miss(films, cache_dir, decodes):
    load_tensors(films, SIZE)
    first, second = entries(cache_dir)[:2]
    shutil.copyfile(second, first)  # a whole, valid entry, but for a different key
    decodes.clear()
    assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(decodes) == 1


def _pixels(films, count, size=SIZE):
    return [film_to_tensor(read_film(path), size)[0].numpy() for path in films.paths[:count]]


def test_the_cap_prunes_least_recently_used_entries_first(films, tmp_path):
    entry = HEADER_BYTES + SIZE * SIZE
    cache = DecodeCache(tmp_path / "lru", max_bytes=3 * entry, namespace="test")
    pixels = _pixels(films, 4)
    keys = [cache.key(path.read_bytes(), SIZE) for path in films.paths[:4]]
    now = time.time()
    for age, key, film in zip((300, 200, 100), keys, pixels):
        cache.put(key, SIZE, film)
        os.utime(cache.path(key, SIZE), (now - age, now - age))
    assert np.array_equal(cache.get(keys[0], SIZE), pixels[0])  # the oldest entry is used: now the newest
    cache.put(keys[3], SIZE, pixels[3])  # a writer prunes as it goes
    assert cache.size() == 3 * entry and cache.prune() == 0
    assert cache.get(keys[1], SIZE) is None  # the least recently used one went
    for kept in (0, 2, 3):
        assert np.array_equal(cache.get(keys[kept], SIZE), pixels[kept])
    assert cache.prune() == 0


def test_load_tensors_keeps_the_cache_within_its_configured_cap(films, tmp_path, settings_env, decodes):
    entry = HEADER_BYTES + SIZE * SIZE
    settings_env(CXR_DECODE_CACHE=str(tmp_path / "capped"), CXR_DECODE_CACHE_MAX_BYTES=str(4 * entry))
    assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(entries(tmp_path / "capped")) == 4
    decodes.clear()  # six films through four places, pruned as they are written: what this run reads next may go
    assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert 2 <= len(decodes) <= 6 and len(entries(tmp_path / "capped")) == 4


def test_the_cache_is_private_and_names_no_film(films, cache_dir):
    cache_dir.parent.mkdir(mode=0o755)  # an existing, wider parent is left alone; what we make is 0700
    previous = os.umask(0)  # a permissive umask must not widen anything
    try:
        load_tensors(films, SIZE)
    finally:
        os.umask(previous)
    folders = [cache_dir, *(p for p in cache_dir.rglob("*") if p.is_dir())]
    assert len(folders) == 1 + 1 + len({p.parent for p in entries(cache_dir)})  # root, 64px, shards
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o700}
    assert {stat.S_IMODE(p.stat().st_mode) for p in cache_dir.rglob("*") if p.is_file()} == {0o600}
    assert all(ENTRY.fullmatch(p.name) for p in entries(cache_dir))
    names = {p.stem for p in films.paths}
    stored = b"".join(p.read_bytes() for p in entries(cache_dir))
    assert not any(name.encode() in stored or name in str(p) for name in names for p in entries(cache_dir))


def test_an_existing_wider_cache_folder_is_narrowed(films, cache_dir):
    cache_dir.mkdir(parents=True, mode=0o755)
    cache_dir.chmod(0o755)
    load_tensors(films, SIZE)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700


def test_a_folder_anyone_may_write_is_not_used(films, cache_dir, decodes):
    cache_dir.mkdir(parents=True)
    cache_dir.chmod(0o777)
    for _ in range(2):
        assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(decodes) == 12 and entries(cache_dir) == []  # decoded every time, nothing stored there
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o777  # and the folder is left as it was


def test_the_cache_folder_follows_the_setting_and_can_be_switched_off(films, tmp_path, settings_env, decodes):
    settings_env(CXR_DECODE_CACHE="off")
    assert config.settings().decode_cache is None
    for _ in range(2):
        assert torch.equal(load_tensors(films, SIZE), reference(films))
    assert len(decodes) == 12  # decoded every time
    settings_env(CXR_DECODE_CACHE=str(tmp_path / "elsewhere"))
    load_tensors(films, SIZE)
    assert len(entries(tmp_path / "elsewhere")) == 6


def test_the_default_cache_folder_is_the_users_not_the_code_tree(tmp_path):
    try:
        assert config.reload({"XDG_CACHE_HOME": str(tmp_path)}).decode_cache == tmp_path / "cxr-triage" / "decoded"
        default = config.reload({}).decode_cache
        assert default == Path.home() / ".cache" / "cxr-triage" / "decoded"
        assert REPO not in default.parents
        assert config.reload({}).decode_cache_max_bytes == limits.DECODE_CACHE_MAX_BYTES == 2 * 2**30
        assert config.reload({"CXR_DECODE_CACHE_MAX_BYTES": "1000"}).decode_cache_max_bytes == 1000
        for wrong in ("lots", "-1"):
            with pytest.raises(SettingOutOfRange, match="decode cache|CXR_DECODE_CACHE_MAX_BYTES"):
                config.reload({"CXR_DECODE_CACHE_MAX_BYTES": wrong})
        for inside in (REPO, REPO / "decoded", REPO / "checkpoints" / ".." / "cache"):  # patient images, never here
            with pytest.raises(SettingOutOfRange, match="CXR_DECODE_CACHE must name a folder outside the code tree"):
                config.reload({"CXR_DECODE_CACHE": str(inside)})
        with pytest.raises(SettingOutOfRange, match="XDG_CACHE_HOME must name a folder outside the code tree"):
            config.reload({"XDG_CACHE_HOME": str(REPO / "checkpoints")})  # the default's base too (a review)
    finally:
        config.reload()


def test_an_unreadable_film_is_still_named(films, cache_dir):
    films.paths[2].write_bytes(b"not a film")
    with pytest.raises(DatasetError, match=films.paths[2].name):
        load_tensors(films, SIZE)
    films.paths[2].unlink()
    with pytest.raises(DatasetError, match="does not exist"):
        load_tensors(films, SIZE)


def _repeat_together(jobs, caches, seconds: float = 1.5) -> None:
    """Each job (one step on a cache) repeated in a thread of its own for each cache, all at once, for ``seconds``."""
    stop = threading.Event()

    def repeat(job, cache):
        while not stop.is_set():
            job(cache)

    workers = [threading.Thread(target=repeat, args=(job, cache)) for job in jobs for cache in caches]
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()


def test_concurrent_writers_readers_and_pruners_never_see_a_torn_entry(films, tmp_path):
    size = 224  # 50 KB entries: a write in place would be seen half done
    pixels = _pixels(films, 2, size)
    caches = [DecodeCache(tmp_path / "shared", 2**30, "test") for _ in range(2)]  # two "ranks"
    key = caches[0].key(films.paths[0].read_bytes(), size)
    caches[0].put(key, size, pixels[0])
    seen = []

    def read(cache):
        got = cache.get(key, size)
        seen.append(got is not None and np.array_equal(got, pixels[0]))

    _repeat_together((lambda cache: cache.put(key, size, pixels[0]), read, DecodeCache.prune), caches)
    assert len(seen) > 100 and all(seen)  # every read found the whole entry: never absent, never torn
    assert entries(tmp_path / "shared") == [caches[0].path(key, size)]  # no temporary file left behind


def test_pruning_under_writers_and_readers_drops_whole_entries_only(films, tmp_path):
    """A cap of one entry and two films written over and over: the pruners really delete, under the readers'
    feet. A read may then miss (its caller decodes again) but never returns a torn entry or another film's."""
    size = 224
    pixels = _pixels(films, 2, size)
    caches = [DecodeCache(tmp_path / "shared", HEADER_BYTES + size * size, "test") for _ in range(2)]
    keys = [caches[0].key(path.read_bytes(), size) for path in films.paths[:2]]
    reads, freed = [], []

    def write(cache):
        for key, film in zip(keys, pixels):
            cache.put(key, size, film)

    def read(cache):
        for key, film in zip(keys, pixels):
            got = cache.get(key, size)
            reads.append(None if got is None else np.array_equal(got, film))

    _repeat_together((write, read, lambda cache: freed.append(cache.prune())), caches)
    hits = [same for same in reads if same is not None]
    assert sum(freed) > 0  # entries were deleted while the others ran
    assert len(hits) > 10 and all(hits)  # what was found was whole, and the right film's
    assert not [path for path in entries(tmp_path / "shared") if path.name.endswith(".tmp")]  # no temporary file left


WORKER = """
import hashlib, sys
from core.films.folders import discover
from core.films.tensor import load_tensors
print(hashlib.sha256(load_tensors(discover(sys.argv[1]), int(sys.argv[2])).numpy().tobytes()).hexdigest())
"""


def test_two_processes_filling_one_cache_leave_whole_entries(films, cache_dir, tmp_path):
    expected = hashlib.sha256(reference(films).numpy().tobytes()).hexdigest()
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_DECODE_CACHE": str(cache_dir)}
    ranks = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "films"), str(SIZE)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [rank.communicate(timeout=300) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], results
    assert [out.strip() for out, _ in results] == [expected, expected]
    cache = DecodeCache.from_settings(tensor.cache_namespace())
    stored = entries(cache_dir)
    assert len(stored) == 6 and all(p.stat().st_size == HEADER_BYTES + SIZE * SIZE for p in stored)
    keys = [cache.key(path.read_bytes(), SIZE) for path in films.paths]
    assert sorted(cache.path(key, SIZE) for key in keys) == stored
    assert all(cache.get(key, SIZE) is not None for key in keys)


def test_a_decoder_package_that_is_not_installed_keys_its_own_namespace_rather_than_stopping_training(monkeypatch):
    """Seen on a GPU machine without pydicom: `core train` stopped with PackageNotFoundError before decoding a
    single (JPEG) film. The namespace now says the package is absent, so the cache cannot mix such entries
    with those of a machine that has it."""
    with_it = tensor.cache_namespace()
    tensor._installed.cache_clear()
    monkeypatch.setattr(tensor, "version", lambda package: (_ for _ in ()).throw(
        tensor.PackageNotFoundError(package)))
    try:
        without = tensor.cache_namespace()
    finally:
        tensor._installed.cache_clear()
    assert "pydicom=not installed;pylibjpeg-libjpeg=not installed;pylibjpeg-openjpeg=not" in without != with_it


def test_a_planted_link_or_a_folder_others_may_write_to_is_not_trusted(tmp_path):
    """Found by a review: a link planted in the cache (to a folder or an entry of someone else's) was served, and a
    group-writable folder (whose contents anyone in the group may have planted) was accepted."""
    cache, elsewhere = (DecodeCache(tmp_path / name, 10**9, "ns") for name in ("cache", "elsewhere"))
    assert cache.prepare() and elsewhere.prepare()
    key, pixels = cache.key(b"film", 8), np.arange(64, dtype=np.uint8).reshape(8, 8)
    elsewhere.put(key, 8, pixels)
    assert np.array_equal(elsewhere.get(key, 8), pixels)
    (tmp_path / "cache" / "8px").symlink_to(tmp_path / "elsewhere" / "8px")  # a folder linked elsewhere
    assert cache.get(key, 8) is None
    (tmp_path / "cache" / "8px").unlink()
    cache.path(key, 8).parent.mkdir(parents=True)
    cache.path(key, 8).symlink_to(elsewhere.path(key, 8))  # an entry linked elsewhere
    assert cache.get(key, 8) is None
    os.chmod(tmp_path / "cache", 0o770)
    assert not DecodeCache(tmp_path / "cache", 10**9, "ns").prepare()
