"""Films the split's rule calls one film are confirmed in detail before a site's films are refused or dropped
(core/films/copies.py), on real films: two children's films that the split's rule joins are two films,
and the copies the project knows of (another collection's re-encoded Kermany films) are still copies."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.errors import CalibrationError, DatasetError
from core.films.folders import FilmSet
from core.training.calibrate import _refuse_own_films
from core.films.copies import copies_in_detail, copies_of, first_of_each, groups_of, repeats_in_detail
from core.training.site_folder import SiteFolder, distinct_films

# pairs of different children that pass the split's rule (found by a review; 32-px correlation 0.962-0.975)
TWO_CHILDREN = [("PNEUMONIA/person1565_bacteria_4095.jpeg", "PNEUMONIA/person1637_bacteria_4339.jpeg"),
                ("NORMAL/NORMAL2-IM-0815-0001.jpeg", "PNEUMONIA/person1183_bacteria_3131.jpeg"),
                ("NORMAL/IM-0119-0001.jpeg", "PNEUMONIA/person706_virus_1304.jpeg")]
# the other collection's re-encoded copies of Kermany training films (core.training.other_collection)
COPIES = [("Normal/01.jpeg", "NORMAL/IM-0240-0001.jpeg"), ("Normal/04.jpeg", "NORMAL/NORMAL2-IM-1179-0001.jpeg")]


def _films(paths: list[Path]) -> FilmSet:
    classes = ("NORMAL", "PNEUMONIA")
    return FilmSet(tuple(paths), np.array([classes.index(p.parent.name.upper()) if p.parent.name.upper() in classes
                                           else 0 for p in paths], dtype=np.int64), classes)


@pytest.fixture
def site_copies(kermany_train, tmp_path) -> list[Path]:
    """The first film of each pair copied into a site folder, under its own class."""
    copied = []
    for first, _ in TWO_CHILDREN:
        target = tmp_path / "site" / first
        target.parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copyfile(kermany_train / first, target)))
    return copied


def test_two_childrens_films_are_not_one_film_in_detail(kermany_train, site_copies, tmp_path):
    others = _films([kermany_train / second for _, second in TWO_CHILDREN])
    assert copies_of(_films(site_copies), others).all()  # the split's rule joins every pair
    assert not copies_in_detail(_films(site_copies), others).any()
    site = SiteFolder("ward-7/films", tmp_path / "site", _films(site_copies))
    _refuse_own_films(site, "pneumonia-x-v1", others)  # before: refused as the model's own films
    both = _films([kermany_train / name for pair in TWO_CHILDREN for name in pair])
    assert len(repeats_in_detail(both)) == 0  # before: "the same film under two classes"
    assert distinct_films(SiteFolder("ward-7/films", tmp_path, both), "pneumonia").films == both


def test_known_copies_are_still_copies(kermany_train, data_dir, tmp_path):
    collection = data_dir / "covid-3class" / "train"
    copies = _films([collection / copy for copy, _ in COPIES])
    originals = _films([kermany_train / original for _, original in COPIES])
    assert copies_in_detail(copies, originals).all()
    with pytest.raises(CalibrationError, match="2 of the 2 films in ward-7/films are pneumonia-x-v1's own"):
        _refuse_own_films(SiteFolder("ward-7/films", tmp_path, copies), "pneumonia-x-v1", originals)
    repeated = _films([collection / "Normal/019.jpeg", collection / "Normal/020.jpeg", *copies.paths])
    assert repeats_in_detail(repeated).tolist() == [[0, 1]]  # the collection holds 019 twice


def test_many_copies_of_one_film_are_joined_by_a_few_pairs_and_count_once(kermany_train, tmp_path):
    """A folder of many copies of one film (a re-read: 3,000 of them gave 4.5 M pairs, each confirmed on its own:
    31 s and 1.1 GB). The pairs kept join every copy, one pair a copy; the first of the group is the film kept."""
    from PIL import Image, ImageEnhance

    first = kermany_train / "NORMAL/IM-0115-0001.jpeg"
    with Image.open(first) as image:
        grey = image.convert("L")
        for i, (contrast, size) in enumerate([(1.0, 224), (1.2, 300), (0.9, 200), (1.1, 256), (1.3, 180)]):
            ImageEnhance.Contrast(grey).enhance(contrast).resize((size, size)).save(tmp_path / f"copy-{i}.png")
    other = kermany_train / "PNEUMONIA/person1565_bacteria_4095.jpeg"
    films = _films([other, *sorted(tmp_path.glob("copy-*.png"))])
    pairs = repeats_in_detail(films)
    assert len(pairs) == 4 and set(pairs.ravel().tolist()) == {1, 2, 3, 4, 5}  # before: all 10 pairs
    assert [g.tolist() for g in groups_of(len(films), pairs)] == [[1, 2, 3, 4, 5]]
    assert first_of_each(len(films), pairs).tolist() == [0, 1]


def test_the_first_of_a_group_is_kept_however_its_pairs_run():
    """A~C and B~C: the later film of each pair alone would keep A and B, two copies of one film."""
    pairs = np.array([[0, 2], [1, 2], [3, 4]])
    assert first_of_each(6, pairs).tolist() == [0, 3, 5]
    assert [g.tolist() for g in groups_of(6, pairs)] == [[0, 1, 2], [3, 4]]
    assert first_of_each(2, np.zeros((0, 2), dtype=np.int64)).tolist() == [0, 1]


def test_a_site_folder_with_many_misfiled_films_counts_the_rest_by_group(kermany_train, tmp_path):
    """A re-read: past the three named, the rest were counted as "more such films" while they were groups."""
    names = ["NORMAL/IM-0115-0001.jpeg", "NORMAL/IM-0117-0001.jpeg", "PNEUMONIA/person1565_bacteria_4095.jpeg",
             "PNEUMONIA/person1637_bacteria_4339.jpeg"]
    paths, labels = [], []
    for k, name in enumerate(names):
        for label, cls in enumerate(("NORMAL", "PNEUMONIA")):
            (tmp_path / cls).mkdir(exist_ok=True)
            paths.append(Path(shutil.copyfile(kermany_train / name, tmp_path / cls / f"film-{k}.jpeg")))
            labels.append(label)
    films = FilmSet(tuple(paths), np.array(labels, dtype=np.int64), ("NORMAL", "PNEUMONIA"))
    with pytest.raises(DatasetError, match=r"ward-7/films/PNEUMONIA/film-2.jpeg; and 1 more such group of copies\)"):
        distinct_films(SiteFolder("ward-7/films", tmp_path, films), "pneumonia")


def test_one_copy_left_out_is_said_in_the_singular(tmp_path):
    films = FilmSet((tmp_path / "a.png", tmp_path / "b.png"), np.array([0, 1]), ("NORMAL", "PNEUMONIA"))
    site = SiteFolder("ward-7/films", tmp_path, films, copies=1)
    assert site.counts_text() == "1 NORMAL, 1 PNEUMONIA; 1 copy of another film in it left out"  # "1 copies of other"
    assert site.floor_text() == "1 NORMAL, 1 PNEUMONIA films once 1 copy of another film in it is left out"
