"""Images that are not usable chest films are flagged (a warning and priority None) or refused; real films are not.

The issue's targets: >= 95 % of non-chest images flagged, <= 1 % of real chest films flagged, from every source
(paediatric and adult: issue 14 refitted the detector on all of them). Every image goes through ONE
``python -m core predict --json`` process and through the triage page's own path
(``dashboard.state.triage_uploads``, uploads in memory), and an AppTest run draws a few on the page.
Non-chest images come from tests/corpus.py (photos, maps, MR/CT/ultrasound test DICOMs, synthetic patterns)
plus unusable versions of a real film (blank, saturated, tiny, strip-shaped), and the images of
shared-data/tb/train, which are smoothed noise textures, not the adult films its README says. Real chest films:
the 16 full-resolution films, both DICOMs, Kermany films and the COVID set's adult COVID-19 films.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import corpus
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.films.folders import discover
from core.serving.chest_check import ChestFilmDetector
from core.training.data import patient_split
from dashboard.state import Upload, triage_uploads

REPO = Path(__file__).resolve().parent.parent
NON_CHEST_TARGET = 0.95
CHEST_FLAG_LIMIT = 0.01
SAMPLE_SIZE, SAMPLE_SEED = 200, 0
ADULT_SAMPLE = 30  # adult COVID-19 films of the COVID set (ieee8023 collection)
ADULT_FOLDER = "covid-3class/train/Covid"
TEXTURE_SAMPLE = 10  # from each folder of shared-data/tb/train: noise textures, not films
TEXTURE_FOLDERS = ("tb/train/Normal", "tb/train/Tuberculosis")
SOURCES = {"kermany-224", "covid-3class", "films", "dicom"}  # every chest-film source the detector knows
NOT_TRIAGED = ("Not triaged: the image does not look like a usable chest film. A reader must look at it; if it is a "
               "chest film, export it again (frontal, upright, the whole chest in the frame) and triage that.")

# Unusable versions of a real film -> the sentence its warning must contain.
UNUSABLE = {
    "blank.png": "almost uniform (blank)",
    "saturated.png": "saturated",
    "tiny.png": "only 40x40 pixels",
    "strip.png": "strip-shaped (1600x200)",
}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def unusable_versions(film: Image.Image) -> dict[str, bytes]:
    pixels = np.asarray(film)
    w, h = film.size
    return {
        "blank.png": _png(Image.new("L", film.size, int(pixels.mean()))),
        "saturated.png": _png(Image.fromarray(np.where(pixels > np.median(pixels), 255, 0).astype(np.uint8))),
        "tiny.png": _png(film.crop((w // 2 - 20, h // 2 - 20, w // 2 + 20, h // 2 + 20))),
        "strip.png": _png(film.resize((1600, 200), Image.Resampling.BILINEAR)),
    }


def chest_sample(kermany_train: Path) -> list[Path]:
    """200 Kermany films (fixed seed), from a patient-disjoint 20 % of kermany-224/train.

    core/serving/fit_chest_check.py fits the shipped detector on every chest film we have, these included, so
    they check the app's path end to end; the honest flag rate of unseen films is the cross-validated one the
    detector records per source (test_the_detector_records_its_cross_validated_flag_rate_per_source).
    """
    _, held_out = patient_split(discover(kermany_train), 0.2, seed=0)
    index = np.random.default_rng(SAMPLE_SEED).choice(len(held_out), SAMPLE_SIZE, replace=False)
    return [held_out.paths[i] for i in sorted(index)]


def sample_of(folder: Path, n: int) -> list[Path]:
    """``n`` files of ``folder`` (fixed seed)."""
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    return [paths[i] for i in sorted(np.random.default_rng(SAMPLE_SEED).choice(len(paths), n, replace=False))]


@pytest.fixture(scope="module")
def cases(normal_film_path, films_dir, dicom_dir, kermany_train, data_dir) -> dict[str, dict[str, bytes]]:
    """Groups of (name -> bytes). Names are unique across groups and are the CLI's file names."""
    with Image.open(normal_film_path) as image:
        film = image.convert("L")
    real = {p.name: p.read_bytes() for p in sorted(films_dir.glob("*/*.jpeg")) + sorted(dicom_dir.glob("*.dcm"))}
    groups = {"non_chest": dict(corpus.non_chest_images()), "unusable": unusable_versions(film), "real": real,
              "sample": {p.name: p.read_bytes() for p in chest_sample(kermany_train)},
              "adult": {f"covid-{p.name}": p.read_bytes() for p in sample_of(data_dir / ADULT_FOLDER, ADULT_SAMPLE)},
              "textures": {p.name: p.read_bytes() for folder in TEXTURE_FOLDERS
                           for p in sample_of(data_dir / folder, TEXTURE_SAMPLE)}}
    names = [name for group in groups.values() for name in group]
    assert len(names) == len(set(names)), "file names must be unique across the groups"
    assert len(groups["real"]) == 18 and len(groups["sample"]) == SAMPLE_SIZE
    assert len(groups["adult"]) == ADULT_SAMPLE and len(groups["textures"]) == TEXTURE_SAMPLE * len(TEXTURE_FOLDERS)
    return groups


@pytest.fixture(scope="module")
def cli_answers(cases, trained_model, tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("chest-check")
    paths = []
    for group in cases.values():
        for name, data in group.items():
            (folder / name).write_bytes(data)
            paths.append(folder / name)
    env = {**os.environ, "CXR_MODELS": str(trained_model.directory), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "core", "predict", *map(str, paths), "--json"],
                          check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert [Path(line["file"]).name for line in lines] == [p.name for p in paths]
    return {Path(line["file"]).name: line for line in lines}


@pytest.fixture(scope="module")
def app_answers(cases, predictor) -> dict[str, dict]:
    uploads = [Upload.of(corpus.Upload(name, data)) for group in cases.values() for name, data in group.items()]
    return {r.file: {"error": r.error} if r.error else r.prediction.to_dict()
            for r in triage_uploads(predictor, uploads)}


@pytest.fixture(params=["cli", "app"])
def answers(request) -> dict[str, dict]:
    return request.getfixturevalue(f"{request.param}_answers")


def flagged(answer: dict) -> bool:
    """Refused with an error, or answered without a priority and with the reason and 'Not triaged'."""
    if "error" in answer:
        return True
    return answer["priority"] is None and NOT_TRIAGED in answer["warnings"] and len(answer["warnings"]) >= 2


def test_non_chest_images_are_flagged_or_refused(answers, cases):
    names = list(cases["non_chest"])
    missed = [name for name in names if not flagged(answers[name])]
    rate = 1 - len(missed) / len(names)
    assert rate >= NON_CHEST_TARGET, f"{rate:.1%} of {len(names)} flagged; missed: {missed}"  # measured: 100 %


def test_a_flagged_image_still_shows_its_probabilities(answers, cases):
    read = [answers[name] for name in cases["non_chest"] if "error" not in answers[name] and flagged(answers[name])]
    assert read, "every non-chest image was refused outright, so none shows how a flagged one reads"
    for answer in read:  # flagged, not triaged, and its probabilities still there (a test review)
        assert answer["priority"] is None and set(answer["probabilities"]) == {"NORMAL", "PNEUMONIA"}
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", UNUSABLE)
def test_an_unusable_film_gets_no_priority_and_says_why(answers, name):
    answer = answers[name]
    assert "error" not in answer, answer["error"]
    assert answer["priority"] is None
    assert any(UNUSABLE[name] in w for w in answer["warnings"]), answer["warnings"]
    assert NOT_TRIAGED in answer["warnings"]


def test_every_real_film_and_both_dicoms_get_a_priority(answers, cases):
    untriaged = {name: answers[name].get("error") or answers[name]["warnings"] for name in cases["real"]
                 if answers[name].get("priority") is None}
    assert untriaged == {}
    assert all(answers[name]["warnings"] == [] for name in cases["real"])


def test_adult_chest_films_get_a_priority(answers, cases):
    """The COVID set's adult films (a quarter of held-out ones were flagged before issue 14's refit)."""
    refused = {name: answers[name].get("error") or answers[name]["warnings"] for name in cases["adult"]
               if flagged(answers[name])}
    # These took part in the fit (measured: highest score 51.1 against the threshold 68.2); held out, 2 of the
    # set's 251 films are flagged. Before the refit a quarter of held-out adult films were; and with a PCA
    # Mahalanobis that ignored what lies outside its axes, 3 of these 30 were although fitted on.
    assert refused == {}
    assert all(answers[name]["priority"] in ("urgent", "routine") for name in cases["adult"])


def test_noise_textures_labelled_as_films_are_flagged(answers, cases):
    """shared-data/tb/train holds smoothed noise textures, not chest films: none may get a priority."""
    missed = [name for name in cases["textures"] if not flagged(answers[name])]
    assert missed == []


def test_the_detector_records_its_cross_validated_flag_rate_per_source():
    """The shipped detector's own record: held-out films of every source, cross-validated over all pooled."""
    detector = ChestFilmDetector.load(REPO / "checkpoints" / "detector")
    cross_validated = detector.calibration["cross_validated"]
    per_source = cross_validated["per_source"]
    assert set(per_source) == SOURCES
    assert sum(row["films"] for row in per_source.values()) == detector.calibration["fitted_on"] == 5485
    assert cross_validated["flag_rate"] <= CHEST_FLAG_LIMIT
    for source in ("kermany-224", "covid-3class"):  # the sources with enough films for a rate: <= 1 % each
        assert per_source[source]["flag_rate"] <= CHEST_FLAG_LIMIT, (source, per_source[source])
    assert per_source["dicom"]["flagged"] == per_source["films"]["flagged"] == 0
    textures = detector.calibration["not_films"]["tb/train"]
    assert textures["flagged"] == textures["images"] == 300


def test_at_most_one_percent_of_real_chest_films_are_flagged(answers, cases):
    """See chest_sample(): Kermany films of a patient-disjoint 20 % (measured: 0 of 200 flagged, the highest
    detector score 65.4 against the threshold 68.2)."""
    names = list(cases["sample"])
    hits = {name: answers[name].get("warnings") or answers[name].get("error") for name in names
            if flagged(answers[name])}
    assert len(hits) / len(names) <= CHEST_FLAG_LIMIT, hits


def test_cli_and_app_agree_on_every_image(cli_answers, app_answers):
    for name, line in cli_answers.items():
        app = app_answers[name]
        assert ("error" in line) == ("error" in app), name
        if "error" not in line:
            assert (line["priority"], line["label"]) == (app["priority"], app["label"]), name
            assert line["warnings"] == app["warnings"], name


def test_the_triage_page_shows_non_chest_uploads_as_not_triaged(cases, trained_model, tmp_path, settings_env):
    folder = corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    real = next(iter(cases["real"]))
    chosen = {"grace_hopper.jpg": cases["non_chest"]["grace_hopper.jpg"],
              "CT_small.dcm": cases["non_chest"]["CT_small.dcm"],
              "tiny.png": cases["unusable"]["tiny.png"], "strip.png": cases["unusable"]["strip.png"],
              "blank.png": cases["unusable"]["blank.png"], real: cases["real"][real]}
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.file_uploader(key="films").set_value([(n, d, "application/octet-stream") for n, d in chosen.items()])
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("File")
    assert table.loc[real, "Priority"] in ("Urgent", "Routine")
    others = [name for name in chosen if name != real]
    assert list(table.loc[others, "Priority"]) == ["Not triaged"] * len(others)
    assert all("Not triaged" in table.loc[name, "Warnings"] for name in others)
    assert "does not look like a chest film" in table.loc["grace_hopper.jpg", "Warnings"]
    ct = table.loc["CT_small.dcm", "Warnings"]  # no reading given, none said to "mean nothing" (a browser review)
    assert "modality as CT, not projection radiography: the model reads chest radiographs only." in ct
    assert "may mean nothing" not in ct
    for name in ("tiny.png", "strip.png", "blank.png"):
        assert UNUSABLE[name] in table.loc[name, "Warnings"]
    assert {m.label: m.value for m in at.metric}["Not triaged"] == str(len(others))
    assert sum(NOT_TRIAGED in w.value for w in at.warning) == len(others)  # one per film card
    # and no reading or map that looks like one: the model's output only folded away (found in a browser audit)
    assert sum(e.label == "The model's output, which is not a reading" for e in at.expander) == len(others)
    assert sum("No explanation map: the image was not triaged" in c.value for c in at.caption) == len(others)
    # the one triaged film's card says the score its priority came from; the others, having none, say none
    (line,) = [c.value for c in at.caption if c.value.startswith("Abnormal score")]
    assert float(line.split()[2]) == pytest.approx(table.loc[real, "Abnormal score"], abs=6e-4)
    assert ("at or above the urgent" in line) == (table.loc[real, "Priority"] == "Urgent")
    assert len([box for box in at.selectbox if box.label == "Explain class"]) <= 1  # the real film's, if any


@pytest.mark.parametrize("damage", ["threshold NaN", "threshold inf", "threshold null", "a JSON list",
                                    "weights not a torch file", "weights empty", "NaN in the score"])
def test_a_damaged_detector_is_refused_as_unavailable_never_passing_every_film(tmp_path, damage):
    """Found by a review: a detector outside the checksum manifest (CXR_DETECTOR_DIR) with a threshold of NaN or
    infinity, or NaN in its score, passed every film; a null threshold, a JSON list or weights that are not a
    torch file stopped the model being served at all. Each is now the check's 'unavailable' refusal."""
    import shutil

    import torch

    from core.errors import CheckpointError

    copy = tmp_path / "detector"
    shutil.copytree(REPO / "checkpoints" / "detector", copy)
    meta = json.loads((copy / "chest-film-detector.json").read_text())
    if damage.startswith("threshold"):
        value = {"threshold NaN": "NaN", "threshold inf": "Infinity", "threshold null": "null"}[damage]
        (copy / "chest-film-detector.json").write_text(json.dumps(meta).replace(
            json.dumps(meta["threshold"]), value, 1))
    elif damage == "a JSON list":
        (copy / "chest-film-detector.json").write_text("[1, 2]")
    elif damage == "weights not a torch file":
        (copy / "chest-film-detector.pt").write_bytes(b"\x80\x04not a pickle")
    elif damage == "weights empty":  # torch.load's EOFError (a review of the day's change)
        (copy / "chest-film-detector.pt").write_bytes(b"")
    else:
        tensors = torch.load(copy / "chest-film-detector.pt", weights_only=True)
        first = next(iter(tensors))
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        torch.save(tensors, copy / "chest-film-detector.pt")
    with pytest.raises(CheckpointError, match="^The chest-film detector in .* cannot be loaded"):
        ChestFilmDetector.load(copy)
    assert ChestFilmDetector.load(REPO / "checkpoints" / "detector").threshold > 0  # the shipped one loads
