"""A training run reads its films long after their folder was listed (found by a review): a film swapped since for
a FIFO hung the run, for a link to /dev/zero filled memory; and its near-duplicate thumbnails decoded large films
without waiting for a decoding place, four at once."""
from __future__ import annotations

import contextlib
import os

import pytest

from core.errors import DatasetError, UnreadableImage
from core.films.folders import FilmSet
from core.films.tensor import film_bytes
from core.training import data


def test_a_film_swapped_for_a_pipe_or_a_device_is_refused_not_waited_on(tmp_path):
    fifo, zero = tmp_path / "fifo.jpeg", tmp_path / "zero.jpeg"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        with pytest.raises(UnreadableImage, match="is not a regular file"):
            film_bytes(path)
    with pytest.raises(DatasetError, match="fifo.jpeg cannot be read"):
        data.content_digest(FilmSet((fifo,), [0], ("NORMAL",)))


def test_near_duplicate_thumbnails_wait_for_a_decoding_place(normal_film_path, monkeypatch):
    asked = []

    def place(samples):
        asked.append(samples)
        return contextlib.nullcontext()

    monkeypatch.setattr(data, "decode_place", place)
    assert data._grey(normal_film_path) is not None
    from PIL import Image

    with Image.open(normal_film_path) as image:
        assert asked == [image.width * image.height * len(image.getbands())]
