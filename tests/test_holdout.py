"""Another batch held out of training (#13): the rule, the split it makes, and the reports a run stores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import limits
from core.errors import DatasetError
from core.evaluation.metrics import evaluate_probabilities
from core.evaluation.framing import framed_tighter
from core.films.folders import FilmSet, discover
from core.films.tensor import load_tensors
from core.models.efficientnet_lite import efficientnet_lite0
from core.models.inference import probabilities_in_batches
from core.store.checkpoints import load_checkpoint
from core.store.records import DataRecord, TrainConfig
from core.training.data import fingerprint, patient_id, with_patients_of
from core.training.holdout import RULES, split_holdout
from core.store.reports import WITHDRAWN
from core.training.other_reports import OTHER_COLLECTION, OTHER_COLLECTION_FRAMED, OUT_OF_BATCH, TIGHTER_FRAMING
from core.training.train import split_films, train


@pytest.fixture(scope="module")
def kermany_films(kermany_train):
    return discover(kermany_train)


def test_the_cli_offers_exactly_the_rules_that_exist():
    assert set(limits.HOLDOUTS) == set(RULES)


def test_kermany_batch_holds_out_the_late_im_series_and_late_pneumonia_patients(kermany_films):
    kept, held = split_holdout(kermany_films, "kermany-batch")
    assert len(kept) + len(held) == len(kermany_films) == 5216
    assert held.class_counts() == [394, 760]  # IM-0400.. normals; person1400.. pneumonia
    names = [p.name for p in held.paths]
    assert all(n.startswith("IM-") and int(n[3:7]) >= 400 or int(n[6:n.index("_")]) >= 1400 for n in names)
    assert not any(n.startswith("NORMAL2-") for n in names)
    # no patient on both sides
    assert not {patient_id(p) for p in kept.paths} & {patient_id(p) for p in held.paths}


def test_a_holdout_that_finds_no_other_batch_is_refused(films_dir):
    with pytest.raises(DatasetError, match="every class on both sides"):
        split_holdout(discover(films_dir), "kermany-batch")  # the 16 val films: no IM-04xx normals held out


def test_unknown_rule_is_a_clear_error(kermany_films):
    with pytest.raises(DatasetError, match="Unknown holdout 'x'"):
        split_holdout(kermany_films, "x")


def test_another_collections_copy_of_a_held_out_film_is_kept_out_of_training(kermany_train, data_dir, tmp_path):
    # covid-3class's Normal/010.jpeg is IM-0466-0001 at another contrast and crop; IM-0466 is held out
    normal, pneumonia = kermany_train / "NORMAL", kermany_train / "PNEUMONIA"
    copy, other = data_dir / "covid-3class/train/Normal/010.jpeg", data_dir / "covid-3class/train/Normal/01.jpeg"
    spec = {"NORMAL": sorted(normal.glob("NORMAL2-IM-*"))[:10] + [normal / "IM-0466-0001.jpeg", copy, other]
            + sorted(normal.glob("IM-047*"))[:3],
            "PNEUMONIA": sorted(pneumonia.glob("person1_*"))[:2] + sorted(pneumonia.glob("person2*"))[:9]
            + sorted(pneumonia.glob("person15*"))[:4]}
    for folder, films in spec.items():
        (tmp_path / folder).mkdir()
        for film in films:
            (tmp_path / folder / film.name).symlink_to(film)
    notes: list[str] = []
    films, train_set, val_set, held = split_films(tmp_path, TrainConfig(arch="logistic", holdout="kermany-batch"),
                                                  notes)
    names = {p.name for p in train_set.paths + val_set.paths}
    assert "IM-0466-0001.jpeg" in {p.name for p in held.paths} and held.class_counts() == [4, 4]
    assert "010.jpeg" not in names and "01.jpeg" in names  # the copy left out; another collection's film kept
    assert len(train_set) + len(val_set) == len(films) - len(held) - 1
    assert "another batch: 1 film of the folder left out of training and validation as copies of held-out " \
           "films" in notes


HOLDOUT = TrainConfig(arch="logistic", holdout="kermany-batch")


def _split_tree_with_val(kermany_train, tmp_path):
    """train/ and val/ of Kermany films: two pneumonia patients with films on both sides, and a val/ pneumonia
    of the batch the kermany-batch rule holds out; (those patients' films, that batch's films)."""
    normal, pneumonia = kermany_train / "NORMAL", kermany_train / "PNEUMONIA"
    shared = [sorted(pneumonia.glob(f"person{n}_*")) for n in (1, 12)]  # two films or more each
    late_pneumonia = sorted(p for p in pneumonia.glob("person1[4-9][0-9][0-9]_*"))[:6]  # the held-out batch
    spec = {"train/NORMAL": sorted(normal.glob("NORMAL2-IM-*"))[:12] + sorted(normal.glob("IM-047*"))[:4],
            "train/PNEUMONIA": [f for films in shared for f in films[1:]] + sorted(pneumonia.glob("person2*"))[:12]
            + late_pneumonia[1:],
            "val/NORMAL": sorted(normal.glob("NORMAL2-IM-*"))[12:14],
            "val/PNEUMONIA": [films[0] for films in shared] + late_pneumonia[:1]}
    for folder, films in spec.items():
        (tmp_path / folder).mkdir(parents=True)
        for film in films:
            (tmp_path / folder / film.name).symlink_to(film)
    return shared, late_pneumonia


def test_a_val_folder_takes_its_patients_along_and_leaves_the_held_out_batch_to_it(kermany_train, tmp_path):
    """Found by a review: val/ joined validation after the split, unchecked, so a patient with films in both
    train/ and val/ was trained on and validated on; and a val/ film of the held-out batch validated the run."""
    shared, late_pneumonia = _split_tree_with_val(kermany_train, tmp_path)
    notes: list[str] = []
    _, train_set, val_set, held = split_films(tmp_path, HOLDOUT, notes)
    trained, validated = {p.name for p in train_set.paths}, {p.name for p in val_set.paths}
    theirs = {f.name for films in shared for f in films}
    assert not theirs & trained and theirs <= validated
    assert late_pneumonia[0].name in {p.name for p in held.paths} and late_pneumonia[0].name not in validated
    assert any(note.startswith("validation: the 4 films of val/") and "films of their patients from train/" in note
               for note in notes), notes  # the held-out one went to its batch


def test_a_version_trained_by_the_earlier_val_rule_is_rebuilt_as_it_ran(kermany_train, tmp_path, monkeypatch):
    """Its recorded split still rebuilds (calibrate, fit-population and ensemble check the fingerprint), and a
    new run, with no record to follow, uses the patient rule."""
    import core.training.train as train_module

    _split_tree_with_val(kermany_train, tmp_path)
    with monkeypatch.context() as patched:  # the rule before 2026-12-05: val/ joined as it was
        patched.setattr(train_module, "with_patients_of", lambda films, _: (films, films.subset(np.arange(0))))
        _, old_train, old_val, _ = split_films(tmp_path, TrainConfig(arch="logistic"))
    recorded = DataRecord(train=fingerprint(old_train), validation=fingerprint(old_val))
    _, new_train, new_val, _ = split_films(tmp_path, TrainConfig(arch="logistic"))
    assert new_val.paths != old_val.paths
    _, rebuilt_train, rebuilt_val, _ = split_films(tmp_path, TrainConfig(arch="logistic"), recorded=recorded)
    assert (rebuilt_train.paths, rebuilt_val.paths) == (old_train.paths, old_val.paths)


def test_only_names_that_carry_a_patient_take_train_films_along():
    """Per-split numbering (train/Normal/01.jpeg, val/Normal/01.png) names two films, not one patient."""
    train_films = FilmSet((Path("train/Normal/01.jpeg"), Path("train/PNEUMONIA/person3_virus_1.jpeg")),
                          np.array([0, 1]), ("NORMAL", "PNEUMONIA"))
    val_films = FilmSet((Path("val/Normal/01.png"), Path("val/PNEUMONIA/person3_virus_2.jpeg")), np.array([0, 1]),
                        ("NORMAL", "PNEUMONIA"))
    kept, moved = with_patients_of(train_films, val_films)
    assert [p.name for p in kept.paths] == ["01.jpeg"] and [p.name for p in moved.paths] == ["person3_virus_1.jpeg"]


def test_split_seed_fixes_validation_whatever_the_training_seed(kermany_train):
    config = TrainConfig(arch="logistic", max_films=400, holdout="kermany-batch", split_seed=3)
    _, _, val_a, held_a = split_films(kermany_train, config.model_copy(update={"seed": 0}))
    _, _, val_b, held_b = split_films(kermany_train, config.model_copy(update={"seed": 5}))
    _, _, val_c, _ = split_films(kermany_train, config.model_copy(update={"seed": 5, "split_seed": None}))
    assert val_a.paths == val_b.paths and held_a.paths == held_b.paths
    assert val_c.paths != val_a.paths  # without a split seed the training seed draws the split, as before
    assert not set(val_a.paths) & set(held_a.paths)


def test_a_run_with_a_holdout_stores_the_out_of_batch_report_and_nothing_withdrawn(kermany_train, tmp_path):
    config = TrainConfig(arch="logistic", epochs=2, image_size=64, augment=False, max_films=600,
                         holdout="kermany-batch", split_seed=0)
    record = train(kermany_train, config, name="held", directory=tmp_path)
    loaded = load_checkpoint(tmp_path / f"{record.name}.json")
    reports = loaded.record.other_reports
    # the held-out batch, plain and framed tighter: the withdrawn "adults" report (noise textures of
    # shared-data/tb/train) is gone
    assert set(reports) == {OUT_OF_BATCH, TIGHTER_FRAMING, OTHER_COLLECTION, OTHER_COLLECTION_FRAMED}
    assert not WITHDRAWN & set(reports)
    # the stored out-of-batch figures are the model's own on exactly the held-out films, at its threshold
    _, _, _, held = split_films(kermany_train, config.resolved())
    probs = probabilities_in_batches(loaded.model, load_tensors(held, 64))
    again = evaluate_probabilities(held.labels, probs, held.classes, loaded.operating_point)
    assert reports[OUT_OF_BATCH].n == len(held) and reports[OUT_OF_BATCH].class_counts == held.class_counts()
    assert reports[OUT_OF_BATCH].auc == pytest.approx(again.auc, abs=1e-6)
    assert reports[OUT_OF_BATCH].specificity == pytest.approx(again.specificity)
    lo, hi = reports[OUT_OF_BATCH].at_operating_point.specificity_ci
    assert lo <= reports[OUT_OF_BATCH].specificity <= hi
    framed = probabilities_in_batches(loaded.model, framed_tighter(load_tensors(held, 64)))
    framed_again = evaluate_probabilities(held.labels, framed, held.classes, loaded.operating_point)
    assert reports[TIGHTER_FRAMING].n == len(held)
    assert reports[TIGHTER_FRAMING].auc == pytest.approx(framed_again.auc, abs=1e-6)
    assert reports[TIGHTER_FRAMING].specificity == pytest.approx(framed_again.specificity)
    assert f"the {len(held)} films of another batch" in reports[TIGHTER_FRAMING].split
    assert "after holding out another batch" in loaded.record.report.split
    json.loads((tmp_path / f"{record.name}.json").read_text())  # strict JSON: no NaN


def test_efficientnet_head_starts_small_not_saturated():
    torch.manual_seed(0)
    net = efficientnet_lite0(num_classes=2)
    assert float(net.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert float(net.fc.bias.detach().abs().max()) == 0.0
    gaps = net.eval()(torch.rand(4, 3, 96, 96)).detach().numpy()
    assert np.all(np.abs(gaps[:, 0] - gaps[:, 1]) < 1.0)


def test_copies_of_val_films_neither_train_nor_stay_beside_the_held_out_batch(kermany_train, data_dir, tmp_path):
    """Found by a review: near-duplicates were grouped within train/ only, so a val/ film whose twin sat in train/
    under a name carrying no patient validated a film the run trained on; and a copy of a held-out val/ film
    stayed in training (its copies were looked for before val/'s held-out films joined their batch)."""
    covid = data_dir / "covid-3class/train"
    plain = tmp_path / "plain"
    for cls in ("Normal", "Covid"):
        (plain / "train" / cls).mkdir(parents=True)
        (plain / "val" / cls).mkdir(parents=True)
        for film in sorted((covid / cls).glob("*"))[:25]:
            (plain / "train" / cls / film.name).symlink_to(film)
        (plain / "val" / cls / "copy_of_first.jpeg").symlink_to(sorted((covid / cls).glob("*"))[0])
    _, train_set, val_set, _ = split_films(plain, TrainConfig(arch="logistic"))
    twins = {sorted((covid / cls).glob("*"))[0] for cls in ("Normal", "Covid")}  # each in train/ and, copied, val/
    assert not {p.resolve() for p in train_set.paths} & twins
    shared, late_pneumonia = _split_tree_with_val(kermany_train, tmp_path / "kermany")
    (tmp_path / "kermany/train/PNEUMONIA/scan_0001.jpeg").symlink_to(late_pneumonia[0])  # a copy of a val/ film
    notes: list[str] = []
    _, train_set, val_set, held = split_films(tmp_path / "kermany", HOLDOUT, notes)
    assert "scan_0001.jpeg" not in {p.name for p in train_set.paths + val_set.paths}
    assert any(note.startswith("another batch: 1 film of the folder left out") for note in notes), notes
    # the other way round: a val/ film with no patient in its name copying a named train/ film (found by a review)
    named = next((tmp_path / "kermany/train/PNEUMONIA").glob("person2*"))
    (tmp_path / "kermany/val/PNEUMONIA/01.jpeg").symlink_to(named.resolve())
    _, train_set, val_set, _ = split_films(tmp_path / "kermany", TrainConfig(arch="logistic"))
    assert named.name not in {p.name for p in train_set.paths} and "01.jpeg" in {p.name for p in val_set.paths}
