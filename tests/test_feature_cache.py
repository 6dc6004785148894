"""The feature cache: a training run's population check reads each film's ImageNet features from the decode
cache when the same content was seen before, bit for bit what the extractor computes; a changed film, other
weights or a damaged entry miss. Real films: four 224-px Kermany training films copied into a temporary
folder so a test can change one in place. Extractions are counted by wrapping ``FeatureExtractor.tensors``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from core.films.folders import FilmSet
from core.models.features import FEATURE_FOLDER, FEATURE_LENGTH, FeatureExtractor, FilmFeatures, cached_features
from e2e_support import ROOT


@pytest.fixture
def films(tmp_path, kermany_train) -> list[Path]:
    picks = sorted((kermany_train / "NORMAL").iterdir())[:2] + sorted((kermany_train / "PNEUMONIA").iterdir())[:2]
    folder = tmp_path / "films"
    folder.mkdir()
    copies = []
    for path in picks:
        shutil.copy(path, folder / path.name)
        copies.append(folder / path.name)
    return copies


@pytest.fixture
def cache_dir(tmp_path, settings_env) -> Path:
    folder = tmp_path / "cache"
    settings_env(CXR_DECODE_CACHE=str(folder))
    return folder


class Counting:
    """Wraps the shared extractor's ``tensors``: how many films it was asked for."""

    def __init__(self):
        self.films = 0
        self.real = FeatureExtractor.shared().tensors

    def __call__(self, films_uint8, on_batch=None):
        self.films += len(films_uint8)
        return self.real(films_uint8, on_batch)


def _extract(paths: list[Path]) -> tuple[dict[Path, np.ndarray], int]:
    counting = Counting()
    with mock.patch.object(FeatureExtractor.shared(), "tensors", counting):
        return cached_features(paths), counting.films


def _entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / FEATURE_FOLDER).rglob("*.u8"))


def test_features_come_back_bit_for_bit_without_extracting_again(films, cache_dir):
    first, extracted = _extract(films)
    assert extracted == 4 and len(_entries(cache_dir)) == 4
    again, extracted = _extract(films)
    assert extracted == 0
    for path in films:
        assert again[path].dtype == np.float64 and again[path].shape == (FEATURE_LENGTH,)
        assert np.array_equal(again[path], first[path])
    # and they are what a fresh FilmFeatures (training's entry point) gives, in the films' order
    assert np.array_equal(FilmFeatures()(FilmSet(tuple(films[::-1]), np.zeros(4, np.int64), ("f",))),
                          np.stack([first[p] for p in films[::-1]]))


def test_a_film_changed_in_place_is_a_miss(films, cache_dir):
    before, _ = _extract(films)
    shutil.copy(films[3], films[0])  # a normal film's file now holds a pneumonia film
    after, extracted = _extract(films)
    assert extracted == 0  # its content was seen before: the pneumonia film's entry
    assert np.array_equal(after[films[0]], before[films[3]]) and not np.array_equal(after[films[0]], before[films[0]])
    films[1].write_bytes(films[1].read_bytes() + b"after the image")  # new bytes, the same picture
    _, extracted = _extract(films[1:2])
    assert extracted == 1


def test_a_film_replaced_while_its_features_are_computed_is_not_stored_under_its_old_content(films, cache_dir):
    """The cache key comes from one read of the film and the features from the decoding after it; a film replaced
    in between (a folder being synced) must not leave the new film's features filed under the old content."""
    import core.models.features

    original = films[0].read_bytes()
    real = core.models.features.load_tensors

    def replaced_first(film_set, size):
        shutil.copy(films[3], films[0])  # after keying, before decoding: the normal film's file becomes another
        return real(film_set, size)

    with mock.patch.object(core.models.features, "load_tensors", replaced_first):
        cached_features(films[:1])
    assert _entries(cache_dir) == []  # nothing filed: the key no longer names what is in the file
    films[0].write_bytes(original)
    again, extracted = _extract(films[:1])
    assert extracted == 1 and not np.array_equal(again[films[0]], _extract(films[3:])[0][films[3]])


def test_a_damaged_entry_is_a_miss_and_is_replaced(films, cache_dir):
    first, _ = _extract(films[:1])
    (entry,) = _entries(cache_dir)
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 0xFF
    entry.write_bytes(bytes(blob))
    again, extracted = _extract(films[:1])
    assert extracted == 1 and np.array_equal(again[films[0]], first[films[0]])
    assert entry.read_bytes() != bytes(blob)  # rewritten whole


def test_other_weights_miss(films, cache_dir):
    _extract(films[:2])
    with mock.patch.dict(vars(FeatureExtractor.shared()), {"identity": "lite0-features;weights=other"}):
        _, extracted = _extract(films[:2])
    assert extracted == 2 and len(_entries(cache_dir)) == 4


def test_without_the_cache_every_film_is_extracted(films, settings_env, tmp_path):
    settings_env(CXR_DECODE_CACHE="off")
    _, extracted = _extract(films)
    assert extracted == 4
    _, extracted = _extract(films)
    assert extracted == 4


def test_a_films_features_do_not_depend_on_the_films_beside_it(films):
    """What makes the cache's bits what any run computes: a lone film (another kernel for a batch of one) and a
    film among others give the same features, bit for bit; so a training that finds some films cached and a
    later refit that finds none fit the same population check."""
    from core.films.tensor import load_tensors
    from core.models.features import FEATURE_SIZE

    tensors = load_tensors(FilmSet(tuple(films), np.zeros(4, np.int64), ("f",)), FEATURE_SIZE)
    extractor = FeatureExtractor.shared()
    together = extractor.tensors(tensors)
    alone = np.concatenate([extractor.tensors(tensors[i:i + 1]) for i in range(4)])
    assert together.shape == (4, FEATURE_LENGTH) and np.array_equal(alone, together)
    assert np.array_equal(extractor.tensors(tensors[1:3]), together[1:3])


def test_another_process_finds_the_features_this_one_stored(films, cache_dir):
    """The cache's point is across processes (a retraining, the chest-film detector's refit). Its key named the
    extractor's weights including its classifier, which nothing loads and every process initialised at random,
    so only a process repeating another's random-number history (the same training seed and recipe) hit its
    entries. Two fresh extractors stand for two processes; a real second process then reads this one's entries."""
    assert FeatureExtractor().identity == FeatureExtractor().identity
    first, extracted = _extract(films[:2])
    assert extracted == 2
    script = ("import sys, json; from pathlib import Path; import numpy as np\n"
              "from core.models.features import FeatureExtractor, cached_features\n"
              "FeatureExtractor.tensors = lambda *a, **k: sys.exit('computed features instead of reading them')\n"
              "found = cached_features([Path(p) for p in sys.argv[1:]])\n"
              "print(json.dumps([found[Path(p)].tolist() for p in sys.argv[1:]]))\n")
    done = subprocess.run([sys.executable, "-c", script, *map(str, films[:2])], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "CXR_DECODE_CACHE": str(cache_dir)}, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert np.array_equal(np.array(json.loads(done.stdout)), np.stack([first[p] for p in films[:2]]))
