"""The tighter-framing check (#13): films shown 15 % larger about their centre, a synthetic shift computed from films
we hold; training reports it, and ``framing-check`` adds the same report to a version trained before it existed
(as ``collection-check`` does the other collection's, tests/test_other_collection.py)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from core.evaluation.framing import FRAMING_ZOOM, TIGHTER_FRAMING, framed_tighter
from core.evaluation.metrics import evaluate_probabilities
from core.films.tensor import load_tensors
from core.models.inference import probabilities_in_batches
from core.store import manifest
from core.store.checkpoints import load_checkpoint, population_file
from core.store.records import read_model_record
from core.training.calibrate import recorded_split
from core.training.other_collection import OTHER_COLLECTION


def _square(size: int, side: int) -> torch.Tensor:
    film = torch.zeros(1, 1, size, size, dtype=torch.uint8)
    start = (size - side) // 2
    film[..., start : start + side, start : start + side] = 200
    return film


def _bright_width(film: torch.Tensor) -> int:
    return int((film[0, 0, film.shape[-1] // 2] >= 100).sum())


def test_a_film_framed_tighter_shows_its_centre_15_percent_larger():
    film = _square(128, 40)
    framed = framed_tighter(film)
    assert framed.dtype == torch.uint8 and framed.shape == film.shape
    assert _bright_width(film) == 40 and _bright_width(framed) == round(40 * FRAMING_ZOOM)  # 46 px
    # the centre stays where it was; a mark at the edge falls outside the tighter frame
    edged = film.clone()
    edged[..., :4, :] = 255
    assert int(framed_tighter(edged)[..., :4, :].max()) < 255
    assert torch.equal(framed_tighter(film, zoom=1.0), film)  # no zoom: the same pixels


@pytest.mark.parametrize("bad", [torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                                 torch.zeros(8, 8, dtype=torch.uint8)])
def test_framing_takes_only_model_input(bad):
    with pytest.raises(ValueError, match="N x 1 x S x S uint8"):
        framed_tighter(bad)


def test_framing_never_zooms_out():
    with pytest.raises(ValueError, match="at least 1"):
        framed_tighter(_square(16, 4), zoom=0.9)


def test_training_reports_the_model_on_its_validation_films_framed_tighter(trained_model):
    """A run without a held-out batch: the report is the model's own on its validation films shown 15 % larger,
    at its threshold (recomputed here: a review found this test compared the figure only with its own interval);
    on these real films tighter framing makes the normal films look less normal, as on the official test."""
    loaded = load_checkpoint(trained_model.json_path)
    report = loaded.record.other_reports[TIGHTER_FRAMING]
    val_set, held_out, _ = recorded_split(loaded.record)
    assert held_out is None
    x = load_tensors(val_set, loaded.image_size)
    plain = probabilities_in_batches(loaded.model, x)
    framed = probabilities_in_batches(loaded.model, framed_tighter(x))
    normal = loaded.operating_point.normal_index
    assert report.n == len(val_set) and report.class_counts == loaded.record.report.class_counts
    assert report.threshold == loaded.operating_point.threshold
    assert report.split.startswith(f"{TIGHTER_FRAMING}: the {len(val_set)} validation films, each shown 15 % larger")
    normals = [i for i, label in enumerate(val_set.labels) if label == normal]
    assert (1 - framed[normals, normal]).mean() > (1 - plain[normals, normal]).mean()  # normals look less normal
    again = evaluate_probabilities(val_set.labels, framed, val_set.classes, loaded.operating_point)
    assert report.auc == pytest.approx(again.auc, abs=1e-6)
    assert report.specificity == pytest.approx(again.specificity)
    assert report.confusion_matrix == again.confusion_matrix


@pytest.mark.parametrize("command, key", [("framing-check", TIGHTER_FRAMING), ("collection-check", OTHER_COLLECTION)])
def test_a_check_command_adds_the_report_training_computes_and_re_signs_the_manifest(
        run_cli, trained_model, tmp_path, settings_env, isolated_audit_log, command, key):
    """A shipped version from before the check gains exactly the report training computes (same films, same
    threshold); nothing else in it changes, and the manifest covers the new JSON. The other collection's films
    are the same too: their copies of training films are found again from the rebuilt training folder."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for path in (trained_model.json_path, trained_model.json_path.with_suffix(".pt"),
                 population_file(trained_model.json_path)):
        shutil.copy(path, shipped / path.name)
    json_path = shipped / trained_model.json_path.name
    description = json.loads(json_path.read_text())
    expected = description["other_reports"].pop(key)
    json_path.write_text(json.dumps(description))
    manifest.write_manifest(shipped)
    settings_env(CXR_CHECKPOINTS=str(shipped))
    # named twice (found by a CLI audit: checked, written and audited twice): once
    result = run_cli(command, trained_model.name, trained_model.name, checkpoints=tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    (line,) = result.json_lines()
    assert line["name"] == trained_model.name
    assert line[key]["n"] == expected["n"] and line[key]["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    again = read_model_record(json_path)
    assert again.other_reports[key].to_json() == expected  # what training computed, to the last digit
    assert again == trained_model.record
    assert manifest.check(shipped) == []
    audit = [json.loads(row) for row in isolated_audit_log.read_text().splitlines()]
    assert any(row.get("action") == command and row.get("model") == trained_model.name for row in audit)


def test_framing_check_of_an_unknown_model_is_a_json_error(run_cli, trained_model):
    result = run_cli("framing-check", "no-such-model", checkpoints=trained_model.directory)
    assert result.returncode == 1 and "Traceback" not in result.stderr + result.stdout
    (line,) = result.json_lines()
    assert set(line) == {"error"} and "no-such-model" in line["error"]
