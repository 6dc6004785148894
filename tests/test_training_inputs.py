"""A training run reads its films long after their folder was listed (found by a review): a film swapped since for
a FIFO hung the run, for a link to /dev/zero filled memory; and its near-duplicate thumbnails decoded large films
without waiting for a decoding place, four at once."""
from __future__ import annotations

import contextlib
import os

import pytest

from core.errors import DatasetError, UnreadableImage
from core.films import copies
from core.films.folders import FilmSet
from core.films.read import read_film
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

    monkeypatch.setattr(copies, "decode_place", place)
    assert copies.film_grey(normal_film_path) is not None
    from PIL import Image

    with Image.open(normal_film_path) as image:
        assert asked == [image.width * image.height * len(image.getbands())]


def test_a_film_swapped_for_a_link_out_of_the_data_roots_after_listing_is_not_read(tmp_path, settings_env, data_dir,
                                                                                   normal_film_path):
    root, outside = tmp_path / "site-films", tmp_path / "secret"
    (root / "ds" / "NORMAL").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.jpeg").write_bytes(normal_film_path.read_bytes())
    config = tmp_path / "config" / "cxr-triage"
    config.mkdir(parents=True)
    (config / "data-roots.toml").write_text(f'[roots]\nsite = "{root}"\n')
    settings_env(XDG_CONFIG_HOME=str(tmp_path / "config"), CXR_DATA=str(data_dir))
    film = root / "ds" / "NORMAL" / "a.jpeg"
    film.write_bytes(normal_film_path.read_bytes())
    assert film_bytes(film) == normal_film_path.read_bytes()  # listed and read as a plain file
    film.unlink()
    film.symlink_to(normal_film_path)  # into the shared root: read
    assert film_bytes(film) == normal_film_path.read_bytes()
    film.unlink()
    film.symlink_to(outside / "x.jpeg")  # out of every root, swapped in after the listing: refused
    with pytest.raises(UnreadableImage, match="a.jpeg is a link leading outside the data roots"):
        film_bytes(film)
    with pytest.raises(UnreadableImage, match="a.jpeg is a link leading outside the data roots"):
        read_film(film)  # the folder evaluation's reader (a review of the day's diff: only film_bytes checked)
    assert copies.film_grey(film) is None  # the near-duplicate thumbnail
    with pytest.raises(DatasetError, match="a.jpeg is a link leading outside the data roots"):
        data.content_digest(FilmSet((film,), [0], ("NORMAL",)))
    film.unlink()
    (root / "ds" / "NORMAL").rename(root / "ds" / "listed")  # the class folder itself swapped for a link out
    (root / "ds" / "NORMAL").symlink_to(outside)
    with pytest.raises(UnreadableImage, match="x.jpeg is a link leading outside the data roots"):
        read_film(root / "ds" / "NORMAL" / "x.jpeg")  # a review: its folder's real place was outside too, so read
    (root / "ds" / "NORMAL").unlink()
    (root / "ds" / "listed").rename(root / "ds" / "NORMAL")
    film.symlink_to(outside / "x.jpeg")
    (config / "data-roots.toml").write_text("[roots\n")  # unreadable: the listing decided, by the run's folder
    assert film_bytes(film) == normal_film_path.read_bytes()
    operator = tmp_path / "operator" / "a.jpeg"  # a folder outside every root (the command line) reads its links
    operator.parent.mkdir()
    operator.symlink_to(outside / "x.jpeg")
    assert film_bytes(operator) == normal_film_path.read_bytes()


def test_a_film_is_read_into_what_it_holds_not_into_the_size_limit(normal_film_path, tmp_path):
    """read(limit + 1) set aside 200 MB for every film, however small (found timing the copies search), in
    four threads at once; a file over the limit is still refused."""
    import tracemalloc

    from core.films.film import MAX_FILE_BYTES

    tracemalloc.start()
    try:
        assert film_bytes(normal_film_path) == normal_film_path.read_bytes()
        assert tracemalloc.get_traced_memory()[1] < 2 * normal_film_path.stat().st_size + 2 ** 20
    finally:
        tracemalloc.stop()
    huge = tmp_path / "huge.png"
    with huge.open("wb") as sparse:
        sparse.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(UnreadableImage, match="huge.png is over the 200 MB limit for one film"):
        film_bytes(huge)
