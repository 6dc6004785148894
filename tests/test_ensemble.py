"""Ensembles as one registered model (#13): two small real members of different input sizes (so the ensemble
takes films at the 224-px reference form and resizes for each), built, stored, loaded, served and explained
through the public functions, on real films of ../shared/data."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.evaluation.metrics import evaluate_probabilities
from core.films.read import read_film
from core.films.tensor import as_float, film_to_tensor, load_tensors
from core.models.ensemble import Ensemble, ensemble_input_size
from core.models.inference import probabilities, probabilities_in_batches
from core.serving.explain import mean_heat_map
from core.serving.predict import Predictor
from core.store import manifest
from core.store.checkpoints import load_checkpoint, member_digest
from core.store.records import TrainConfig
from core.store.registry import list_models, set_default
from core.training.calibrate import calibrate, recorded_validation_split
from core.errors import EnsembleRefused
from core.training.ensemble import build_ensemble_version
from core.training.other_reports import OUT_OF_BATCH
from core.training.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # trains its members

MEMBERS = ((0, 64), (1, 48))  # (seed, image size): one validation split (split seed 0), two input sizes
MEMBER_CONFIG = dict(arch="cnn5", epochs=1, max_films=240, split_seed=0, holdout="kermany-batch")


@pytest.fixture(scope="module")
def members(tmp_path_factory, kermany_train):
    """Two cnn5 members trained on the same real subset and validation split; their folder and records."""
    folder = tmp_path_factory.mktemp("ensemble-members")
    records = [train(kermany_train, TrainConfig(seed=seed, image_size=size, **MEMBER_CONFIG), directory=folder,
                     name=f"member-s{seed}") for seed, size in MEMBERS]
    return folder, records


@pytest.fixture(scope="module")
def built(members):
    folder, records = members
    return build_ensemble_version([r.name for r in records], "pneumonia-ensemble", 0.95, directory=folder)


@pytest.fixture(scope="module")
def loaded(members, built):
    folder, records = members
    return (load_checkpoint(folder / f"{built.record.name}.json"),
            [load_checkpoint(folder / f"{r.name}.json") for r in records])


def _input(film, size: int) -> torch.Tensor:
    return as_float(film_to_tensor(film, size).unsqueeze(0))


def test_the_ensemble_takes_the_common_size_or_the_reference_form():
    assert ensemble_input_size([64, 64]) == 64 and ensemble_input_size([64, 48]) == 224
    with pytest.raises(ValueError):
        Ensemble([torch.nn.Identity()], [])


def test_probabilities_are_the_mean_of_the_members_on_real_films(loaded, films_dir):
    ensemble, parts = loaded
    assert isinstance(ensemble.model, Ensemble) and ensemble.image_size == 224
    films = [read_film(p) for p in sorted(films_dir.glob("*/*.jpeg"))]  # 16 full-resolution films
    ours = np.concatenate([probabilities(ensemble.model, _input(f, 224)) for f in films])
    theirs = [np.concatenate([probabilities(m.model, _input(f, m.image_size)) for f in films]) for m in parts]
    assert np.abs(theirs[0] - theirs[1]).max() > 1e-3  # the members disagree: the mean is neither of them
    np.testing.assert_allclose(ours, (theirs[0] + theirs[1]) / 2, atol=1e-5)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-6)


def test_each_member_reads_exactly_what_the_preprocessing_path_gives_it(loaded, films_dir):
    ensemble, parts = loaded
    film = read_film(sorted(films_dir.glob("PNEUMONIA/*.jpeg"))[0])
    for index, member in enumerate(parts):
        assert torch.equal(ensemble.model.member_input(_input(film, 224), index), _input(film, member.image_size))
    with pytest.raises(ValueError, match="224-px input"):
        ensemble.model.member_input(_input(film, 100), 0)


def test_the_stored_report_is_the_mean_of_the_members_on_their_validation_films(built, loaded):
    record, (_, parts) = built.record, loaded
    val_set = recorded_validation_split(record)
    assert record.data.validation.sha256 == parts[0].record.data.validation.sha256
    mean = np.mean([probabilities_in_batches(m.model, load_tensors(val_set, m.image_size)) for m in parts], axis=0)
    report = evaluate_probabilities(val_set.labels, mean, val_set.classes, record.operating_point, seed=0)
    assert record.report.n == len(val_set) == report.n
    assert record.report.auc == pytest.approx(report.auc, abs=1e-9)
    assert record.report.confusion_matrix == report.confusion_matrix
    assert record.operating_point.target_sensitivity == 0.95 and record.report.sensitivity >= 0.95


def test_the_record_is_one_model_with_its_members_reports_and_speed(built, members):
    folder, records = members
    record = built.record
    assert (record.arch, record.classes, record.image_size) == ("ensemble", records[0].classes, 224)
    assert [(m.arch, m.image_size) for m in record.members] == [("cnn5", 64), ("cnn5", 48)]
    # the precision its networks were trained in, as each member records it (the averaging itself is fp32)
    assert [m.precision for m in record.members] == [r.training.precision for r in records]
    assert record.training.precision == (records[0].training.precision
                                         if len({r.training.precision for r in records}) == 1 else "mixed")
    assert record.inference_ms_per_film > 0 and record.parameters == sum(r.parameters for r in records)
    out_of_batch = record.other_reports[OUT_OF_BATCH]
    assert out_of_batch.n == records[0].other_reports[OUT_OF_BATCH].n and out_of_batch.auc is not None
    assert [s.name for s in built.members] == [r.name for r in records]
    best = max(s.out_of_batch.auc for s in built.members)
    assert built.beats_best_member == (out_of_batch.auc > best)
    assert any(record.name in line and "best member" in line for line in built.lines())
    entries, problems = list_models(folder)
    assert not problems and [e.arch for e in entries if e.name == record.name] == ["ensemble"]


def test_grad_cam_is_the_mean_of_the_members_maps(loaded, pneumonia_film_path):
    ensemble, parts = loaded
    film = read_film(pneumonia_film_path)
    ours = Predictor(ensemble)
    assert ours.can_explain
    maps = [Predictor(m).explain(film, "PNEUMONIA").heat_map for m in parts]
    assert [m.shape for m in maps] == [(64, 64), (48, 48)]
    shares = [Predictor(m).predict(film).probabilities["PNEUMONIA"] for m in parts]
    explanation = ours.explain(film, "PNEUMONIA")
    assert explanation.heat_map.shape == (224, 224) and explanation.heat_map.max() > 0.0
    # each member's map counts by its share of the ensemble's probability, its own probability for the class
    np.testing.assert_allclose(explanation.heat_map, mean_heat_map(maps, 224, shares), atol=1e-5)
    # (how members combine: test_a_member_weighs_by_its_probability...; the mean is scaled to its peak, and the
    # second member's map of this film is empty, so weighted, equal and first-member-only means coincide here)
    assert shares[0] != shares[1] and explanation.heat_map.max() == pytest.approx(1.0)
    assert explanation.overlay.shape == (*film.pixels.shape, 3)
    for member in ours.loaded.model.members:  # every hook released
        assert not any(m._forward_hooks or m._backward_hooks for m in member.modules())


def test_a_member_weighs_by_its_probability_and_no_weight_at_all_falls_back_to_equal():
    left, right = np.zeros((4, 4), np.float32), np.zeros((2, 2), np.float32)
    left[0, 0], right[:] = 1.0, 0.5
    mostly_left = mean_heat_map([left, right], 4, [0.99, 0.01])
    # scaled to its own peak, as each member's map is, so the top colour is the most evidence in the film (a review:
    # the default ensemble's mean of four normal films peaked at 0.49-0.93, green under a caption saying red)
    assert mostly_left[0, 0] == pytest.approx(1.0) and mostly_left[3, 3] == pytest.approx(0.005 / 0.995)
    np.testing.assert_allclose(mean_heat_map([left, right], 4, [0.0, 0.0]), mean_heat_map([left, right], 4))
    assert mean_heat_map([left, right], 4)[3, 3] == pytest.approx(0.25 / 0.75)
    assert mean_heat_map([np.zeros((4, 4), np.float32)] * 2, 4).max() == 0.0  # nothing to point at stays nothing


def test_the_predictor_serves_an_ensemble_like_any_model(loaded, normal_film_path):
    ensemble, parts = loaded
    film = read_film(normal_film_path)
    prediction = Predictor(ensemble).predict(film)
    expected = np.mean([list(Predictor(m).predict(film).probabilities.values()) for m in parts], axis=0)
    np.testing.assert_allclose(list(prediction.probabilities.values()), expected, atol=1e-5)
    assert prediction.threshold == ensemble.record.operating_point.threshold
    assert prediction.priority in ("urgent", "routine")


def test_each_member_is_stored_in_float16_and_traceable_to_its_model(members, built):
    folder, records = members
    payload = torch.load(folder / f"{built.record.name}.pt", weights_only=True)
    assert {t.dtype for t in payload["model"].values() if t.is_floating_point()} == {torch.float16}
    for index, (member, record) in enumerate(zip(built.record.members, records)):
        own = torch.load(folder / f"{record.name}.pt", weights_only=True)["model"]
        assert member.weights_file == f"{built.record.name}.pt"
        assert member.weights_sha256 == member_digest(payload["model"], index) == member_digest(own, None)


def _copy(folder, name, destination):
    for path in folder.glob(f"{name}.*"):  # weights, description, population check
        shutil.copy(path, destination / path.name)
    return destination / f"{name}.json"


def test_a_tampered_member_is_refused_even_with_a_matching_file_hash(members, built, tmp_path):
    json_path = _copy(members[0], built.record.name, tmp_path)
    weights = json_path.with_suffix(".pt")
    payload = torch.load(weights, weights_only=True)
    key = next(k for k in payload["model"] if k.startswith("members.1.") and payload["model"][k].is_floating_point())
    payload["model"][key] = payload["model"][key] + 0.5
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    weights.write_bytes(buffer.getvalue())
    with pytest.raises(CheckpointError, match="Weights file .* does not match its description"):
        load_checkpoint(json_path)  # the file's own hash no longer matches
    meta = json.loads(json_path.read_text())
    meta["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="Member 2 .cnn5. .* does not match"):
        load_checkpoint(json_path)  # the member's own digest still catches it


def test_an_ensemble_recalibrates_like_any_model(members, built):
    folder, _ = members
    calibrated = calibrate(built.record.name, 0.9, directory=folder)
    assert calibrated.arch == "ensemble" and calibrated.calibration.from_model == built.record.name
    assert [m.weights_sha256 for m in calibrated.members] == [m.weights_sha256 for m in built.record.members]
    assert calibrated.operating_point.target_sensitivity == 0.9 and calibrated.report.sensitivity >= 0.9
    assert isinstance(load_checkpoint(folder / f"{calibrated.name}.json").model, Ensemble)


def test_members_validated_on_other_films_are_refused(members, kermany_train):
    folder, records = members
    other = train(kermany_train, TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=120, seed=0,
                                             split_seed=1), directory=folder, name="other")
    with pytest.raises(EnsembleRefused, match="validated on different films"):
        build_ensemble_version([records[0].name, other.name], "mixed", directory=folder)


def test_a_registered_ensemble_named_as_a_member_brings_its_members(members, built, kermany_train, films_dir):
    folder, records = members
    third = train(kermany_train, TrainConfig(seed=2, image_size=64, **MEMBER_CONFIG), directory=folder,
                  name="member-s2")
    grown = build_ensemble_version([built.record.name, third.name], "pneumonia-ensemble-grown", 0.95,
                                   directory=folder)
    record = grown.record
    assert [(m.arch, m.image_size) for m in record.members] == [("cnn5", 64), ("cnn5", 48), ("cnn5", 64)]
    assert [m.weights_sha256 for m in record.members[:2]] == [m.weights_sha256 for m in built.record.members]
    # it serves the mean of the three networks, exactly as an ensemble of the three models would
    parts = [load_checkpoint(folder / f"{name}.json") for name in (records[0].name, records[1].name, third.name)]
    film = read_film(next((films_dir / "PNEUMONIA").iterdir()))
    served = probabilities(load_checkpoint(folder / f"{record.name}.json").model, _input(film, 224))
    mean = np.mean([probabilities(p.model, _input(film, p.image_size)) for p in parts], axis=0)
    assert served == pytest.approx(mean, abs=1e-5)
    # one sentence per network, the nested ensemble's taken from its own notes
    notes = record.training.notes
    assert notes[0].startswith(f"Ensemble of 3 networks (the 2 members of {built.record.name} and {third.name}): ")
    assert [n.split(":")[0] for n in notes[1:]] == [f"Member {r.name}" for r in (*records, third)]
    # compared with what it grew from: the two-member ensemble and the new network
    assert [s.name for s in grown.members] == [built.record.name, third.name]


def test_an_ensemble_naming_one_network_twice_or_one_model_is_refused(members, built):
    folder, records = members
    with pytest.raises(EnsembleRefused, match="in the ensemble twice") as refused:
        build_ensemble_version([built.record.name, records[0].name], "nested", directory=folder)
    assert built.record.name in str(refused.value) and records[0].name in str(refused.value)
    with pytest.raises(EnsembleRefused, match="at least two different"):
        build_ensemble_version([records[0].name, records[0].name], "twice", directory=folder)


def test_cli_ships_an_ensemble_into_the_manifest_and_lists_it_as_one_model(members, built, tmp_path):
    folder, records = members
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    env = {**os.environ, "CXR_MODELS": str(folder), "CXR_CHECKPOINTS": str(shipped), "PYTHONPATH": REPO}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)

    done = cli("ensemble", records[0].name, records[1].name, "--name", "pneumonia-ens", "--target-sensitivity",
               "0.95", "--shipped")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["name"] == "pneumonia-ens-v1" and [m["name"] for m in answer["members"]] == [r.name for r in records]
    assert answer["ensemble"]["out_of_batch"]["n"] == built.record.other_reports[OUT_OF_BATCH].n
    assert built.beats_best_member is not None and answer["beats_best_member"] == built.beats_best_member
    assert all(r.name in done.stderr for r in records) and "out-of-batch" in done.stderr
    assert {"pneumonia-ens-v1.pt", "pneumonia-ens-v1.json"} <= set(manifest.read_manifest(shipped))
    assert not manifest.check(shipped)
    listed = json.loads(cli("models", "--json").stdout)["models"]
    assert [(m["tier"], m["arch"]) for m in listed if m["name"] == "pneumonia-ens-v1"] == [("shipped", "ensemble")]
    refused = cli("ensemble", records[0].name, "--name", "alone")
    assert refused.returncode == 1 and "at least two" in json.loads(refused.stdout)["error"]


def test_the_triage_page_predicts_with_an_ensemble_as_the_default(members, built, tmp_path, settings_env,
                                                                  films_dir):
    from streamlit.testing.v1 import AppTest

    folder, records = members
    site = tmp_path / "site"
    site.mkdir()
    for name in (built.record.name, *(r.name for r in records)):
        _copy(folder, name, site)
    settings_env(CXR_MODELS=str(site), CXR_JOBS=str(tmp_path / "jobs"))
    set_default(built.record.name, site)
    path = sorted(films_dir.glob("PNEUMONIA/*.jpeg"))[0]
    expected = Predictor(load_checkpoint(site / f"{built.record.name}.json")).predict(read_film(path))

    at = AppTest.from_file(os.path.join(REPO, "dashboard", "app.py"), default_timeout=180)
    at.run()
    assert not at.exception and at.sidebar.selectbox[0].value == built.record.name
    at.file_uploader(key="films").set_value([(path.name, path.read_bytes(), "application/octet-stream")])
    at.run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["File"]) == [path.name]
    assert table["Abnormal score"].iloc[0] == pytest.approx(expected.abnormal_score, abs=1e-6)
    captions = [c for image in at.get("image") for c in image.captions]
    assert any(c.startswith("Grad-CAM for") for c in captions)


@pytest.mark.parametrize("precisions, recorded", [(["bf16", "bf16"], "bf16"), (["bf16", "fp32"], "mixed"),
                                                  (["fp32", None], "unknown")])
def test_an_ensemble_records_its_networks_training_precision(precisions, recorded):
    from types import SimpleNamespace

    from core.training.ensemble import members_precision

    assert members_precision(tuple(SimpleNamespace(precision=p) for p in precisions)) == recorded
