"""Datasets: class-folder discovery, patient ids from Kermany names, the patient-disjoint split."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import DatasetError
from core.films.read import read_film
from core.store.records import Fingerprint
from core.films.folders import discover
from core.films.tensor import film_to_tensor, load_tensors
from core.training.data import class_weights, fingerprint, patient_id, patient_split

from conftest import REPO


@pytest.mark.parametrize("name, patient", [
    ("person1946_bacteria_4874.jpeg", "PERSON1946"),
    ("person1946_bacteria_4875.jpeg", "PERSON1946"),
    ("person447_virus_921_1.jpeg", "PERSON447"),
    ("person3_virus_17.jpeg", "PERSON3"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0429-0001-0002.jpeg", "IM-0429"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("NORMAL2-IM-0395-0001-0001.jpeg", "NORMAL2-IM-0395"),
])
def test_patient_id_parses_kermany_names(name, patient):
    assert patient_id(Path("NORMAL") / name) == patient


def test_person_numbers_are_not_prefixes_of_each_other():
    assert patient_id(Path("person1_virus_1.jpeg")) != patient_id(Path("person12_virus_1.jpeg"))
    assert patient_id(Path("IM-0001-0001.jpeg")) != patient_id(Path("IM-00011-0001.jpeg"))


def test_unrecognised_names_are_their_own_patient():
    a, b = patient_id(Path("Covid/01.jpeg")), patient_id(Path("Covid/02.jpeg"))
    assert a != b
    assert patient_id(Path("Normal/01.jpeg")) != a  # same stem in another class is another film


def test_every_real_kermany_name_has_a_patient_pattern(kermany_train):
    films = discover(kermany_train)
    own = [p.name for p in films.paths if "/" in patient_id(p)]
    assert own == []


@pytest.fixture(scope="module")
def kermany_films(kermany_train):
    return discover(kermany_train)


def test_discover_reads_the_class_folders(kermany_films, films_dir):
    assert kermany_films.classes == ("NORMAL", "PNEUMONIA")
    assert kermany_films.class_counts() == [1341, 3875]
    films = discover(films_dir)
    assert films.class_counts() == [8, 8]
    assert all(films.classes[label] == path.parent.name for path, label in zip(films.paths, films.labels))


def test_discover_finds_the_train_split_below_a_dataset_root(kermany_train):
    assert discover(kermany_train.parent).class_counts() == [1341, 3875]
    assert len(discover(kermany_train.parent, split="train")) == 5216


def test_hidden_files_are_no_films_and_a_film_reached_twice_is_read_once_under_one_class(films_dir, tmp_path):
    """A review: ._x.jpeg and .thumbs/ files were counted as films, and a film reached from two class folders
    through a link was read under both labels (a class folder linking to its parent read every film twice)."""
    normal, pneumonia = sorted((films_dir / "NORMAL").iterdir())[:3], sorted((films_dir / "PNEUMONIA").iterdir())[:2]
    root = tmp_path / "ward"
    for folder, films in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
        (root / folder / ".thumbs").mkdir(parents=True)
        for film in films:
            (root / folder / film.name).write_bytes(film.read_bytes())
        (root / folder / ".thumbs" / "t.jpeg").write_bytes(films[0].read_bytes())
        (root / folder / f"._{films[0].name}").write_bytes(b"\x00\x05\x16\x07")  # a macOS resource fork
    (root / "NORMAL" / "again.jpeg").symlink_to(root / "NORMAL" / normal[0].name)
    assert discover(root).class_counts() == [3, 2]
    (tmp_path / "dicoms" / "NORMAL").mkdir(parents=True)
    (tmp_path / "dicoms" / "NORMAL" / "IM0001").write_bytes(b"\0" * 128 + b"DICM")  # a review: no word of why
    with pytest.raises(DatasetError, match="a DICOM without a suffix is not looked at"):
        discover(tmp_path / "dicoms", min_classes=1)
    (root / "PNEUMONIA" / "linked.jpeg").symlink_to(root / "NORMAL" / normal[1].name)
    with pytest.raises(DatasetError, match="reaches the same film from class folders NORMAL and PNEUMONIA"):
        discover(root)


@pytest.mark.parametrize("seed", [0, 1])
def test_patient_split_keeps_patients_apart(kermany_films, seed):
    train, val = patient_split(kermany_films, 0.2, seed)
    train_patients = {patient_id(p) for p in train.paths}
    val_patients = {patient_id(p) for p in val.paths}
    assert train_patients.isdisjoint(val_patients)
    assert sorted(train.paths + val.paths) == sorted(kermany_films.paths)  # every film once
    assert len(val) / len(kermany_films) == pytest.approx(0.2, abs=0.03)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.25, 1 / 3])
def test_patient_split_honours_the_fraction(kermany_films, fraction):
    """The validation share is what was asked for (train.py writes it into every report's "split" line)."""
    _, val = patient_split(kermany_films, fraction, 0)
    assert len(val) / len(kermany_films) == pytest.approx(fraction, abs=0.03)


@pytest.mark.parametrize("fraction", [0.4, 0.3, 0.0, 0.6, 0.49])  # 0.49: two folds, against "k >= 3" (a review)
def test_patient_split_refuses_fractions_it_cannot_honour(kermany_films, fraction):
    """Group folds give 1/k; 0.4 would silently have become a 50 % split."""
    with pytest.raises(ValueError, match="1/k"):
        patient_split(kermany_films, fraction, 0)


def test_patient_split_is_stratified(kermany_films):
    train, val = patient_split(kermany_films, 0.2, 0)
    share = lambda films: films.class_counts()[1] / len(films)  # noqa: E731
    assert share(val) == pytest.approx(share(kermany_films), abs=0.03)
    assert share(train) == pytest.approx(share(kermany_films), abs=0.03)


def test_patient_split_is_reproducible(kermany_films):
    a, _ = patient_split(kermany_films, 0.2, 3)
    b, _ = patient_split(kermany_films, 0.2, 3)
    c, _ = patient_split(kermany_films, 0.2, 4)
    assert a.paths == b.paths
    assert a.paths != c.paths


def test_patient_split_rejects_a_silly_fraction(kermany_films):
    for fraction in (0.0, 0.5, 0.9):
        with pytest.raises(ValueError, match="must be 1/k"):
            patient_split(kermany_films, fraction)


def test_class_weights_balance_the_classes(kermany_films):
    weights = class_weights(kermany_films)
    counts = np.asarray(kermany_films.class_counts(), dtype=np.float64)
    expected = len(kermany_films) / (2 * counts)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    assert float((weights.double() * torch.tensor(counts)).sum()) == pytest.approx(len(kermany_films))


def test_fingerprint_identifies_the_data(films_dir):
    films = discover(films_dir)
    first = fingerprint(films)
    assert isinstance(first, Fingerprint)
    assert first == fingerprint(discover(films_dir))
    assert first.n == 16 and first.class_counts == {"NORMAL": 8, "PNEUMONIA": 8}
    assert re.fullmatch("[0-9a-f]{64}", first.sha256)  # a SHA-256 hex digest
    relabelled = type(films)(films.paths, 1 - films.labels, films.classes)
    assert fingerprint(relabelled).sha256 != first.sha256
    assert Fingerprint.model_validate(first.to_json()) == first  # stored in the model's JSON and read back


def test_a_film_name_that_is_not_utf8_has_a_fingerprint(films_dir, tmp_path):
    """Found by a CLI review: one such name in a training folder stopped `train` with a UnicodeEncodeError."""
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / label).mkdir()
        for i, film in enumerate(sorted((films_dir / label).iterdir())[:2]):
            name = os.fsdecode(b"film\xff%d.jpeg" % i)  # the bytes a Latin-1 system wrote
            (tmp_path / label / name).write_bytes(film.read_bytes())
    odd = fingerprint(discover(tmp_path))
    assert odd.n == 4 and re.fullmatch("[0-9a-f]{64}", odd.sha256)
    assert odd.sha256 != fingerprint(discover(films_dir)).sha256


def test_load_tensors_goes_through_the_app_path(films_dir):
    films = discover(films_dir).subset(np.array([0, 15]))
    tensors = load_tensors(films, 48)
    assert tensors.shape == (2, 1, 48, 48) and tensors.dtype == torch.uint8
    for i, path in enumerate(films.paths):
        expected = film_to_tensor(read_film(path), 48)
        assert expected.dtype == torch.uint8
        assert torch.equal(tensors[i], expected)
    assert not torch.equal(tensors[0], tensors[1])  # two different films, not one decoded twice


def _tree(root: Path, spec: dict[str, list[str]]) -> Path:
    for folder, names in spec.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).write_bytes(b"not really a film")
    return root


def test_load_tensors_names_every_unreadable_film_at_once(tmp_path, films_dir):
    """A CLI review: each run named the first unreadable film alone, so four took four runs of the whole folder."""
    names = {"NORMAL": [f"n{k}.png" for k in range(7)], "PNEUMONIA": [f"p{k}.png" for k in range(5)] + ["good.jpeg"]}
    root = _tree(tmp_path, names)
    (root / "PNEUMONIA" / "good.jpeg").write_bytes(next((films_dir / "PNEUMONIA").iterdir()).read_bytes())
    with pytest.raises(DatasetError) as refused:
        load_tensors(discover(root), 32)
    said = str(refused.value)
    assert said.startswith(f"12 films cannot be used: {root / 'NORMAL' / 'n0.png'} (n0.png is ")
    assert said.endswith("; and 2 more. Take them out of their folder, or replace them, and try again.")
    assert said.count(" is not an image we can read") == 10 and "good.jpeg" not in said and "p3.png" not in said
    (root / "NORMAL" / "n0.png").write_bytes((root / "PNEUMONIA" / "good.jpeg").read_bytes())
    for path in [*(root / "NORMAL").glob("n[1-6].png"), *(root / "PNEUMONIA").glob("p*.png")]:
        path.unlink()
    (root / "PNEUMONIA" / "p0.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"^Cannot use .*p0\.png: p0\.png is "):  # one film: as it always was
        load_tensors(discover(root), 32)


@pytest.mark.parametrize("spec, message", [
    ({"NORMAL": ["a.png"]}, "at least two"),
    ({"NORMAL": ["a.png"], "PNEUMONIA": ["notes.txt"]}, "PNEUMONIA"),
    ({}, "at least two"),
])
def test_discover_refuses_what_is_not_a_class_tree(tmp_path, spec, message):
    root = _tree(tmp_path / "data", spec) if spec else (tmp_path / "data")
    root.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=message):
        discover(root)


def test_discover_refuses_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        discover(tmp_path / "nowhere")


def test_a_split_is_called_patient_disjoint_only_as_far_as_names_carry_a_patient(data_dir):
    """Found by a review: the COVID set's names carry no patient (follow-up films of one patient sat on both sides
    of its split), yet its validation was called patient-disjoint; the shipped COVID models now say so too."""
    from core.store.records import read_model_record
    from core.training.data import split_words

    kermany = [Path("person1_bacteria_1.jpeg"), Path("IM-0001-0001.jpeg"), Path("NORMAL2-IM-0002-0001.jpeg")]
    covid = sorted((data_dir / "covid-3class/train/Covid").iterdir())[:3]
    assert split_words(kermany, "20%", "k") == "a patient-disjoint 20% of k"
    assert split_words(covid, "20%", "c") == ("a 20% of c split film by film (its names carry no patient; copies of "
                                              "a film together)")
    assert split_words(kermany + covid, "20%", "both") == (
        "a 20% of both, patient-disjoint for the 3 of 6 films whose names carry a patient, film by film for the rest")
    for name in ("covid-cnn5-v1", "covid-efficientnet_lite0-v1"):
        record = read_model_record(REPO / "checkpoints" / f"{name}.json")
        assert "split film by film" in record.report.split and "patient-disjoint" not in record.report.split


def test_a_split_with_no_validation_film_of_a_class_says_why(normal_film_path, tmp_path):
    """A browser review: one film filed 12 times under NORMAL and 12 times under PNEUMONIA (one group of copies,
    kept whole on one side) was told "add films or use a larger fraction", on a page with no fraction to set."""
    import shutil

    for k in range(12):
        for cls in ("NORMAL", "PNEUMONIA"):
            (tmp_path / cls).mkdir(exist_ok=True)
            shutil.copy(normal_film_path, tmp_path / cls / f"{cls[0].lower()}{k:02d}.jpeg")
    with pytest.raises(DatasetError) as refused:
        patient_split(discover(tmp_path), 0.2)
    assert str(refused.value) == (
        "The validation part would hold no NORMAL film: its 12 films belong to 1 patient(s) or group(s) of copies of "
        "a film, each kept whole on one side of the split; 1 of them holds films filed under more than one class "
        "(the same film or patient under two labels: NORMAL/n00.jpeg and PNEUMONIA/p00.jpeg, say). Add films of "
        "other patients to that class folder, and correct any film filed under two classes.")
