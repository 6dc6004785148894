"""The command-line contract other tools script against: JSON lines, exit codes, never a traceback.

Every test runs ``python -m core`` in a fresh process (``sys.executable``), from an unrelated working
directory, with ``CXR_MODELS`` pointing at a temporary site models folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.evaluation.folder import evaluate_folder
from core.films.read import read_film
from core.store.checkpoints import load_checkpoint
from e2e_support import ROOT as REPO

PREDICTION_KEYS = {"file", "model", "probabilities", "label", "priority", "warnings"}
EXTRA_KEYS = {"abnormal_score", "threshold",  # also emitted today; allowed by the contract
              "population_warning", "population_checked",  # the model's population check (issue 14)
              "atypical"}  # a routine call on a film unlike what the model reads
EVALUATE_KEYS = {"n", "accuracy", "auc", "sensitivity", "specificity", "threshold", "per_class", "confusion_matrix"}


def no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.fixture(scope="module")
def predicted(run_cli, trained_model, films_dir, dicom_dir):
    """One CLI run over three real films and a DICOM; reused by the contract tests below."""
    paths = [films_dir / "NORMAL" / "NORMAL2-IM-1430-0001.jpeg",
             films_dir / "PNEUMONIA" / "person1946_bacteria_4874.jpeg",
             films_dir / "PNEUMONIA" / "person1952_bacteria_4883.jpeg",
             dicom_dir / "RG1_UNCI.dcm"]
    return paths, run_cli("predict", *paths, "--json", checkpoints=trained_model.directory)


def test_predict_json_is_one_object_per_film(predicted, trained_model):
    paths, result = predicted
    assert result.returncode == 0, result.stdout + result.stderr
    no_traceback(result)
    lines = result.json_lines()
    assert [line["file"] for line in lines] == [str(p) for p in paths]
    for line in lines:
        assert PREDICTION_KEYS <= set(line) <= PREDICTION_KEYS | EXTRA_KEYS
        assert line["model"] == trained_model.name
        assert line["priority"] in ("urgent", "routine", None)
        assert line["label"] in ("NORMAL", "PNEUMONIA")
        assert sum(line["probabilities"].values()) == pytest.approx(1.0, abs=2e-6)
        assert isinstance(line["warnings"], list)


def test_cli_and_library_agree(predicted, predictor):
    paths, result = predicted
    for path, line in zip(paths, result.json_lines(), strict=True):  # one line per film, in order
        library = predictor.predict(read_film(path))
        for name, p in library.probabilities.items():
            assert line["probabilities"][name] == pytest.approx(p, abs=1e-6)
        assert (line["label"], line["priority"]) == (library.label, library.priority)


def test_failed_films_are_reported_and_exit_1(run_cli, trained_model, normal_film_path, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a film")
    files = [normal_film_path, tmp_path / "empty.png", tmp_path / "missing.jpg", tmp_path / "notes.txt"]
    result = run_cli("predict", *files, "--json", checkpoints=trained_model.directory)
    assert result.returncode == 1
    no_traceback(result)
    lines = result.json_lines()
    assert [line["file"] for line in lines] == [str(f) for f in files]  # the good film is still triaged
    assert "probabilities" in lines[0]
    for line, reason in zip(lines[1:], ("empty", "does not exist", "not an image")):
        assert set(line) == {"file", "error"}
        assert reason in line["error"]


def _in_process(tmp_path, *args, models=None) -> tuple[int, list[dict], bool]:
    """``core.cli.main(args)`` in a fresh interpreter (site models folder ``models``, else the empty ``tmp_path``):
    exit code, JSON lines, and whether torch was imported."""
    script = ("import json, sys\nfrom core.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
              "except SystemExit as exc:\n    code = exc.code\n"
              "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "CXR_MODELS": str(models or tmp_path),
                                                       "PYTHONPATH": str(REPO)})
    assert "Traceback" not in done.stderr, done.stderr
    *lines, last = [json.loads(line) for line in done.stdout.splitlines()]
    return last["code"], lines, last["torch"]


def test_predict_refuses_paths_it_cannot_open_before_loading_a_model(tmp_path):
    (tmp_path / "folder.png").mkdir()
    missing = tmp_path / "typo" / "nope.jpeg"
    code, lines, torch_imported = _in_process(tmp_path, "predict", missing, tmp_path / "folder.png", "--json")
    assert code == 1 and not torch_imported
    assert lines == [
        {"file": str(missing), "error": "nope.jpeg does not exist or is not a file. Check the path."},
        {"file": str(tmp_path / "folder.png"), "error": "folder.png is a folder, not a film: name the films in it."},
    ]
    code, lines, torch_imported = _in_process(tmp_path, "predict", missing, missing, "--json")  # named twice
    assert code == 1 and not torch_imported and [line["file"] for line in lines] == [str(missing)]
    code, lines, _ = _in_process(tmp_path, "predict", "/dev/null", "--json")  # it exists: no "does not exist"
    assert code == 1 and lines == [{"file": "/dev/null", "error": "null is not a regular file (a pipe, a device or "
                                                                   "a socket)."}]


def test_evaluate_refuses_a_missing_folder_before_loading_a_model(tmp_path):
    code, lines, torch_imported = _in_process(tmp_path, "evaluate", tmp_path / "nope", "--json")
    assert code == 1 and not torch_imported
    assert len(lines) == 1 and "does not exist" in lines[0]["error"]


@pytest.mark.parametrize("command", [
    ["calibrate", "nope-v1", "--target-sensitivity", "0.9"], ["ensemble", "nope-v1", "nope-v2", "--name", "x"],
    ["set-default", "nope-v1"], ["other-batch", "nope-v1", "--from", "nope-v2"], ["fit-population", "nope-v1"],
    ["framing-check", "nope-v1"], ["collection-check", "nope-v1"], ["predict", "--model", "nope-v1", "x.png"],
    ["evaluate", ".", "--model", "nope-v1"], ["predict", "--task", "nope-v1", str(REPO / "README.md")],  # was late
])
def test_a_mistyped_model_name_is_refused_before_torch_is_imported(tmp_path, trained_model, command):
    code, lines, torch_imported = _in_process(tmp_path, *command, models=trained_model.directory)
    assert code == 1 and not torch_imported
    assert lines == [{"error": lines[0]["error"]}] and lines[0]["error"].startswith(("No model named 'nope-v1'",
                                                                                  "No model for task 'nope-v1'"))


def test_measured_elsewhere_refuses_a_bad_file_before_torch_is_imported(tmp_path):
    (tmp_path / "figures.json").write_text('{"films": "the official test"}')
    for name, words in (("missing.json", "cannot be read"), ("figures.json", "is not a valid")):
        code, lines, torch_imported = _in_process(tmp_path, "measured-elsewhere", tmp_path / name)
        assert code == 1 and not torch_imported
        assert len(lines) == 1 and lines[0]["error"].startswith(f"Measurements file {name} {words}")


def test_predict_plain_text_names_file_and_label(run_cli, trained_model, pneumonia_film_path, predictor):
    result = run_cli("predict", pneumonia_film_path, checkpoints=trained_model.directory)
    assert result.returncode == 0
    label = predictor.predict(read_film(pneumonia_film_path)).label
    assert result.stdout.startswith(f"{pneumonia_film_path}: {label} [")


def test_evaluate_json_on_the_real_films(run_cli, trained_model, films_dir):
    result = run_cli("evaluate", films_dir, "--json", checkpoints=trained_model.directory)
    assert result.returncode == 0, result.stdout + result.stderr
    no_traceback(result)
    (report,) = result.json_lines()
    assert EVALUATE_KEYS <= set(report)
    assert report["n"] == 16
    assert sum(map(sum, report["confusion_matrix"])) == 16
    assert set(report["per_class"]) == {"NORMAL", "PNEUMONIA"}
    assert all(report["per_class"][c]["support"] == 8 for c in report["per_class"])
    assert report["threshold"] == trained_model.record.operating_point.threshold
    assert set(report["at_0.5"]) >= {"accuracy", "confusion_matrix", "per_class"}  # the schema's 0.5 reading
    library = evaluate_folder(load_checkpoint(trained_model.json_path), films_dir)
    assert (report["accuracy"], report["auc"]) == pytest.approx((library.accuracy, library.auc))
    assert set(report) == set(library.to_json()) | {"cautions"}  # the report's own JSON layout, and what to heed
    assert report["skipped"] == [] and report["cautions"] == []  # films the model never learned from


def test_evaluate_on_the_films_a_model_learned_from_says_its_figures_overstate(run_cli, copied_model, films_dir):
    """Found by a review: Compare warned, the CLI printed near-perfect training-set figures without a word."""
    record = json.loads(copied_model.read_text())
    record["training"]["data_dir"] = str(films_dir)  # as if trained on these very films
    copied_model.write_text(json.dumps(record))
    result = run_cli("evaluate", films_dir, "--json", "--model", record["name"], checkpoints=copied_model.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    (caution,) = result.json_lines()[0]["cautions"]
    assert caution.startswith(f"{record['name']} learned from films in this folder") and "overstate" in caution
    text = run_cli("evaluate", films_dir, "--model", record["name"], checkpoints=copied_model.parent).stdout.splitlines()
    assert text[-1] == f"  caution: {caution}"


def test_evaluate_text_on_one_class_says_why_there_is_no_auc(run_cli, trained_model, films_dir, tmp_path):
    (tmp_path / "NORMAL").mkdir()
    for film in sorted((films_dir / "NORMAL").iterdir()):
        (tmp_path / "NORMAL" / film.name).symlink_to(film)
    result = run_cli("evaluate", tmp_path, checkpoints=trained_model.directory)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on 8 films (8 NORMAL, 0 PNEUMONIA): accuracy" in result.stdout
    assert "AUC — (needs films of every class)" in result.stdout and "nan" not in result.stdout
    assert "sensitivity — (no abnormal films here), specificity " in result.stdout  # said, not dropped (a review)


def test_models_json_lists_the_registry(run_cli, trained_model):
    result = run_cli("models", "--json", checkpoints=trained_model.directory)
    assert result.returncode == 0
    listing = json.loads(result.stdout)
    assert listing["problems"] == []
    (row,) = listing["models"]
    assert (row["name"], row["arch"], row["default"], row["image_size"]) == (trained_model.name, "cnn5", True, 64)
    assert row["classes"] == ["NORMAL", "PNEUMONIA"]
    assert row["metrics"]["auc"] == pytest.approx(trained_model.record.report.auc)
    assert set(row) == {"name", "tier", "task", "task_title", "arch", "classes", "default", "is_default",
                        "image_size", "metrics", "other_metrics", "site_range", "holdout_run", "measured_elsewhere",
                        "parameters", "created"}
    assert row["holdout_run"] is None  # its other-batch figures, if any, would be its own
    assert row["measured_elsewhere"] == []
    assert (row["task"], row["task_title"], row["is_default"]) == ("pneumonia", "Pneumonia", True)
    stored = trained_model.record.other_reports
    assert set(row["other_metrics"]) == set(stored)
    for key, figures in row["other_metrics"].items():
        assert figures["n"] == stored[key].n and figures["specificity"] == pytest.approx(stored[key].specificity)
        assert figures["specificity_ci"] == pytest.approx(list(stored[key].specificity_ci))
    readings = [stored["other-collection"], stored["other-collection-framed"]]  # the range at a new site spans both
    for name in ("auc", "sensitivity", "specificity"):
        intervals = [getattr(report, f"{name}_ci") for report in readings]
        assert row["site_range"][name] == pytest.approx([min(i[0] for i in intervals), max(i[1] for i in intervals)])
    assert row["tier"] == "site"  # the session's shipped folder is empty
    assert set(row["metrics"]) == {"n", "auc", "accuracy", "sensitivity", "specificity", "threshold", "auc_ci",
                                   "sensitivity_ci", "specificity_ci", "class_counts", "split"}  # as other_metrics
    assert row["metrics"]["specificity_ci"] == pytest.approx(list(trained_model.record.report.specificity_ci))
    assert row["task"] == "pneumonia" and row["created"] == trained_model.record.created


def test_models_json_on_an_empty_registry(run_cli, tmp_path):
    result = run_cli("models", "--json", checkpoints=tmp_path / "none-yet")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"models": [], "problems": []}


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "invalid choice"),
    ([], "required"),
    (["predict"], "required"),
    (["predict", "--json"], "required"),
    (["evaluate"], "required"),
    (["train", "somewhere"], "--arch"),
    (["train", "somewhere", "--arch", "cnn5", "--epochs", "many"], "invalid int"),
    (["predict", "x.png", "--bogus-flag"], "unrecognized"),
], ids=["unknown-command", "no-command", "predict-no-file", "predict-only-flag", "evaluate-no-dir",
        "train-no-arch", "train-bad-int", "unknown-flag"])
def test_bad_arguments_are_json_errors(run_cli, tmp_path, args, message):
    result = run_cli(*args, checkpoints=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    (line,) = result.json_lines()
    assert set(line) == {"error"} and message in line["error"]


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_unknown_model_is_a_json_error(run_cli, trained_model, films_dir, normal_film_path, command):
    target = normal_film_path if command == "predict" else films_dir
    result = run_cli(command, target, "--model", "no-such-model", "--json", checkpoints=trained_model.directory)
    assert result.returncode == 1
    no_traceback(result)
    (line,) = result.json_lines()
    assert "no-such-model" in line["error"] and trained_model.name in line["error"]


def test_predict_without_any_model_says_train_first(run_cli, normal_film_path, tmp_path):
    result = run_cli("predict", normal_film_path, "--json", checkpoints=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    assert "Train one first" in result.json_lines()[0]["error"]


@pytest.mark.parametrize("folder, words", [("missing", "does not exist"), ("one-class", "No film in"),
                                           ("a-file.png", "is a file; name the dataset folder")])
def test_evaluate_bad_folder_is_a_json_error(run_cli, trained_model, tmp_path, folder, words):
    if folder == "one-class":
        (tmp_path / folder / "NORMAL").mkdir(parents=True)
        (tmp_path / folder / "NORMAL" / "a.png").write_bytes(b"x")
    if folder == "a-file.png":
        (tmp_path / folder).write_bytes(b"x")
    result = run_cli("evaluate", tmp_path / folder, "--json", checkpoints=trained_model.directory)
    assert result.returncode == 1
    no_traceback(result)
    error = result.json_lines()[0]["error"]
    assert str(tmp_path / folder) in error and words in error


@pytest.mark.parametrize("args, message", [
    (["--arch", "vgg99"], "unknown architecture"),
    (["--arch", "cnn5", "--epochs", "0"], "Epochs must be between 1 and 200"),
    (["--arch", "cnn5", "--epochs", "201"], "Epochs must be between 1 and 200"),
    (["--arch", "cnn5", "--image-size", "16"], "Image size must be between 32 and 512"),
    (["--arch", "cnn5", "--target-sensitivity", "0.3"], "between 0.5 and 0.999"),
    (["--arch", "cnn5", "--target-sensitivity", "nan"], "The sensitivity target must be between 0.5 and 0.999; nan"),
    (["--arch", "cnn5", "--image-size", "0"], "Image size must be between 32 and 512 pixels; 0 was asked for"),
    (["--arch", "cnn5", "--lr", "0"], "The learning rate must be between 1e-06 and 1; 0.0 was asked for"),
    (["--arch", "cnn5", "--lr", "-1"], "The learning rate must be between"),
    (["--arch", "cnn5", "--lr", "inf"], "The learning rate must be between"),
    (["--arch", "cnn5", "--seed", "-1"], "A seed must be between 0 and 4294967295; -1 was asked for"),
    (["--arch", "cnn5", "--split-seed", "99999999999999999999999"], "A seed must be between 0 and 4294967295"),
    (["--arch", "cnn5", "--override-floor"], "--override-floor only applies together with --set-default"),
], ids=["unknown-arch", "zero-epochs", "too-many-epochs", "tiny-image", "low-target", "nan-target", "zero-image",
        "zero-lr", "negative-lr", "infinite-lr", "negative-seed", "huge-split-seed", "override-alone"])
def test_train_refuses_bad_settings(run_cli, tmp_path, kermany_train, args, message):
    result = run_cli("train", kermany_train, *args, checkpoints=tmp_path / "models")
    assert result.returncode == 1
    no_traceback(result)
    assert message in result.json_lines()[0]["error"]
    assert "epoch" not in result.stderr  # refused before a progress bar is drawn
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").glob("*.pt"))


def test_a_training_folder_too_small_to_split_says_so(run_cli, tmp_path, kermany_train):
    """Two films a class cannot give every fold of a patient-disjoint fifth a film of each class."""
    for name in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "small" / name).mkdir(parents=True)
        for film in sorted((kermany_train / name).iterdir())[:2]:
            (tmp_path / "small" / name / film.name).symlink_to(film)
    result = run_cli("train", tmp_path / "small", "--arch", "mlp", "--epochs", "1", checkpoints=tmp_path / "models")
    assert result.returncode == 1
    no_traceback(result)
    assert result.json_lines()[-1]["error"].startswith("Class NORMAL has only 2 films; a patient-disjoint validation "
                                                       "part of 1/5 needs at least 5 films of every class")


def test_a_folder_name_the_system_cannot_look_up_is_a_json_error(run_cli, trained_model, tmp_path):
    """Python's Path.is_dir() raises for a name longer than the file system allows: said in JSON, not a traceback."""
    too_long = tmp_path / ("a" * 300)
    for command in (["evaluate", too_long, "--json"], ["train", too_long, "--arch", "mlp"]):
        result = run_cli(*command, checkpoints=trained_model.directory)
        assert result.returncode == 1, command
        no_traceback(result)
        assert "cannot be read (File name too long)" in result.json_lines()[-1]["error"], command


def test_a_file_name_that_is_not_utf8_prints_escaped_under_a_strict_terminal(run_cli, trained_model, tmp_path,
                                                                              monkeypatch):
    """A name made of bytes that are not UTF-8 (copied from an old file server) on a terminal whose encoding is
    strict: the line names the film, escaped, and the program does not crash."""
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:strict")
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/film\xff.png"))
    odd.write_bytes(b"not a film")
    result = run_cli("predict", odd, checkpoints=trained_model.directory)
    assert result.returncode == 1
    no_traceback(result)
    assert "film\\udcff.png" in result.stdout
    result = run_cli("predict", odd, "--json", checkpoints=trained_model.directory)
    assert result.returncode == 1
    line = result.json_lines()[-1]  # valid Unicode, so any JSON parser reads it: the same escape, as text
    assert line["file"].encode("utf-8") and line["file"].endswith("film\\udcff.png") and "film" in line["error"]


def test_a_newline_in_a_file_name_cannot_forge_a_line_of_the_text_output(run_cli, trained_model, tmp_path, films_dir):
    """Found by a CLI audit: a film named 'p1.jpeg: NORMAL [routine] (...)\nfake' printed a routine reading of
    its own choosing on a line of its own, above the film's real one."""
    forged = tmp_path / "p1.jpeg: NORMAL [routine] (NORMAL 0.990, PNEUMONIA 0.010)\nfake"
    forged.write_bytes(sorted((films_dir / "PNEUMONIA").glob("*.jpeg"))[0].read_bytes())
    broken = tmp_path / "broken\r\x1b[2Kfilm.png"
    broken.write_bytes(b"not a film")
    result = run_cli("predict", forged, broken, checkpoints=trained_model.directory)
    no_traceback(result)
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  warning:")]
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path}/p1.jpeg: NORMAL [routine] (NORMAL 0.990, "
                                                   "PNEUMONIA 0.010)\\nfake: ")
    assert lines[1].startswith(f"{tmp_path}/broken\\r\\x1b[2Kfilm.png: ERROR ") and "\x1b" not in result.stdout


@pytest.mark.slow
def test_train_registers_a_model_and_prints_json(run_cli, tmp_path, kermany_train):
    models = tmp_path / "models"
    result = run_cli("train", kermany_train, "--arch", "logistic", "--epochs", "1", "--image-size", "32",
                     "--max-films", "100", "--no-augment", "--name", "cli", checkpoints=models)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["name"] == "cli-v1"
    assert (models / "cli-v1.pt").is_file() and (models / "cli-v1.json").is_file()
    assert set(summary["validation"]) == {"n", "auc", "accuracy", "sensitivity", "specificity", "threshold"}
    assert set(summary) == {"name", "checkpoint", "validation", "seconds"}
    assert summary["checkpoint"] == str((models / "cli-v1.pt").resolve())
    listing = json.loads(run_cli("models", "--json", checkpoints=models).stdout)
    assert [(m["name"], m["default"]) for m in listing["models"]] == [("cli-v1", True)]

    # --set-default makes the new version its task's default as part of training (one promotion each)
    again = run_cli("train", kermany_train, "--arch", "logistic", "--epochs", "1", "--image-size", "32",
                    "--max-films", "100", "--no-augment", "--name", "cli", "--set-default", checkpoints=models)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["name"] == "cli-v2"
    listing = json.loads(run_cli("models", "--json", checkpoints=models).stdout)
    assert [(m["name"], m["default"]) for m in listing["models"]] == [("cli-v2", True), ("cli-v1", False)]
    registry = json.loads((models / "registry.json").read_text())
    assert registry["task_defaults"] == {"pneumonia": "cli-v2"} and registry["default"] == "cli-v2"
    assert [(p["name"], p["previous"]) for p in registry["promotions"]] == [("cli-v1", None), ("cli-v2", "cli-v1")]


def test_a_training_folder_refused_at_once_gets_its_error_and_no_progress_bar(run_cli, tmp_path):
    empty = tmp_path / "no-classes"
    empty.mkdir()
    refused = run_cli("train", empty, "--arch", "cnn5", checkpoints=tmp_path / "models")
    assert refused.returncode == 1 and refused.stderr == ""
    (line,) = refused.json_lines()
    assert "is not a class-folder tree" in line["error"]


@pytest.mark.parametrize("command", [["train", "~no-such-user-here/films", "--arch", "cnn5"],
                                     ["evaluate", "~no-such-user-here/films"],
                                     ["calibrate", "m", "--target-sensitivity", "0.95", "--data", "~no-such-user-here/x"]])
def test_a_home_folder_of_an_unknown_user_is_refused_in_words(run_cli, tmp_path, command):
    result = run_cli(*command, checkpoints=tmp_path)
    assert result.returncode == 1
    no_traceback(result)
    assert json.loads(result.stdout) == {"error": "~no-such-user-here is the home folder of a user this computer "
                                                  "does not know, so the path cannot be read; give the folder's "
                                                  "full path."}
