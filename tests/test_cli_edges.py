"""Inputs at the command line's edges, found by a CLI review: each a JSON error or a message in words, never a
traceback, a server path or Python's own text, and never work thrown away or half written."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO
from core.errors import CheckpointError, DatasetError, UnreadableImage


def test_output_that_cannot_be_written_ends_with_code_1_and_a_line_on_stderr_not_two_tracebacks(tmp_path):
    """stdout full (/dev/full) or a pipe whose reader is gone: the JSON error cannot be written either."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as a script runs it:
    with open("/dev/full", "w") as full:  # the answer stays buffered until exit (a review: passed only unbuffered)
        done = subprocess.run([sys.executable, "-m", "core", "models", "--json"], stdout=full, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {  # JSON, as every other error (a review)
        "error": "python -m core: its output could not be written (No space left on device)."}
    for unbuffered in ({}, {"PYTHONUNBUFFERED": "1"}):  # argparse's --help exits on its own, outside main()
        with open("/dev/full", "w") as full:  # unbuffered (as in many containers) argparse dropped the write error
            helped = subprocess.run([sys.executable, "-m", "core", "predict", "--help"], stdout=full, text=True,
                                    stderr=subprocess.PIPE, cwd=tmp_path, timeout=300,
                                    env={**env, **unbuffered, "PYTHONPATH": str(REPO)})
        assert helped.returncode == 1 and json.loads(helped.stderr)["error"].endswith("(No space left on device).")
    # started with its output closed, the answer once went nowhere and the command exited 0 (a review)
    closed = subprocess.run(f"{sys.executable} -m core models >&-", shell=True, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert closed.returncode == 1 and json.loads(closed.stderr)["error"].endswith("has nowhere to answer.")


def test_a_manifest_number_past_python_s_digit_limit_is_a_dataset_error(tmp_path):
    from core.films.manifest import load_manifest

    path = tmp_path / "big.toml"
    path.write_text(f'task = "pneumonia"\nseed = {"1" * 5000}\n')
    with pytest.raises(DatasetError, match="^Manifest big holds a number too long to be any setting.$"):
        load_manifest(path)


def test_class_folders_nested_past_the_recursion_limit_are_refused_in_words(tmp_path):
    from core.films.folders import discover
    from dashboard.folder_stamp import folder_stamp

    (tmp_path / "set" / "PNEUMONIA").mkdir(parents=True)
    here = os.getcwd()
    os.makedirs(tmp_path / "set" / "NORMAL")
    try:
        os.chdir(tmp_path / "set" / "NORMAL")
        for _ in range(1100):  # one level at a time: os.makedirs itself recurses
            os.mkdir("a")
            os.chdir("a")
    finally:
        os.chdir(here)
    try:
        with pytest.raises(DatasetError, match="^set: its folders are nested too deeply to be read") as refused:
            discover(tmp_path / "set")
        assert str(tmp_path) not in str(refused.value)
        assert folder_stamp(tmp_path / "set") == "nested too deeply"  # Compare evaluates: its words, not "moved"
    finally:  # shutil.rmtree recurses too: pytest could not remove this tree later
        _remove_chain(tmp_path / "set" / "NORMAL", 1100)


def _remove_chain(top, levels: int) -> None:
    """Remove ``levels`` nested folders ``a/a/...`` under ``top``, deepest first, one level at a time."""
    here = os.getcwd()
    try:
        os.chdir(top)
        for _ in range(levels):
            os.chdir("a")
        for _ in range(levels):
            os.chdir("..")
            os.rmdir("a")
    finally:
        os.chdir(here)


def test_a_film_gone_or_unreadable_is_named_by_its_name_not_its_server_path(tmp_path):
    """film_bytes feeds calibrate, ensemble and the framing and collection checks, whose callers add the film's
    data-root label; the whole server path was in the message twice."""
    import numpy as np

    from core.films.folders import FilmSet
    from core.films.tensor import film_bytes
    from core.training.data import content_digest

    gone = tmp_path / "NORMAL" / "vanished.jpeg"
    with pytest.raises(UnreadableImage, match=r"^vanished.jpeg does not exist \(removed after") as missing:
        film_bytes(gone)
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "NORMAL" / "folder.png").mkdir()
    with pytest.raises(UnreadableImage, match=r"^folder.png is not a regular file \(a pipe, a device or a folder\).$"):
        film_bytes(tmp_path / "NORMAL" / "folder.png")
    # training reads every film's bytes for its run identity: a film removed since the folder was listed
    with pytest.raises(DatasetError, match=r"vanished.jpeg cannot be read \(No such file or directory\)") as digest:
        content_digest(FilmSet((gone,), np.array([0]), ("NORMAL",)))
    assert str(tmp_path) not in str(missing.value)
    assert "Cannot use " in str(digest.value)  # by the film's label (the path as given, outside every data root)


def test_fit_population_names_a_moved_training_folder_without_its_server_path(copied_model, tmp_path):
    from core.store.records import read_model_record
    from core.training.fit_population import recorded_training_split

    record = read_model_record(copied_model)
    moved = record.model_copy(update={"training": record.training.model_copy(
        update={"data_dir": str(tmp_path / "moved-away" / "train")})})
    with pytest.raises(DatasetError, match=r"is not on this server; name the folder it moved to") as refused:
        recorded_training_split(moved)
    assert str(tmp_path) not in str(refused.value) and "a folder outside the data roots" in str(refused.value)
    # a folder the user names (--data) is theirs to see: it read "Dataset folder a folder outside the data roots"
    with pytest.raises(DatasetError, match=r"\(Dataset folder elsewhere/train does not exist\.\)"):
        recorded_training_split(moved, "elsewhere/train")


def test_evaluate_is_refused_before_its_work_when_its_audit_entry_cannot_be_written(tmp_path, settings_env,
                                                                                    kermany_train, monkeypatch,
                                                                                    capsys):
    import core.evaluation.folder as folder

    (tmp_path / "a-file").write_text("not a folder")
    settings_env(CXR_AUDIT_LOG=str(tmp_path / "a-file" / "audit.jsonl"))
    monkeypatch.setattr(folder, "read_folder", lambda *a, **k: pytest.fail("evaluated before the check"))
    from core import cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["evaluate", str(kermany_train)])
    assert stopped.value.code == 1
    error = json.loads(capsys.readouterr().out.splitlines()[-1])["error"]
    assert "audit log" in error and str(tmp_path) not in error


def test_measured_elsewhere_checks_every_folder_it_writes_before_writing_any(copied_model, tmp_path, settings_env,
                                                                            monkeypatch):
    from core.store.records import read_model_record
    from core.training import measured_elsewhere

    settings_env(CXR_MODELS=str(copied_model.parent))
    record = read_model_record(copied_model)
    path = tmp_path / "figures.json"
    path.write_text(json.dumps({"title": "Test site", "films": "200 films", "measured_by": "a tester",
                                "class_counts": {"NORMAL": 80, "PNEUMONIA": 120},
                                "models": [{"model": record.name, "weights_sha256": record.weights_sha256,
                                            "auc": 0.9}]}))
    before = copied_model.read_bytes()

    def unwritable(folder):
        raise CheckpointError("The models folder cannot be written (Read-only file system). Nothing was changed.")

    monkeypatch.setattr(measured_elsewhere, "ensure_models_writable", unwritable)
    with pytest.raises(CheckpointError, match="Read-only file system"):
        measured_elsewhere.record_measurements(path)
    assert copied_model.read_bytes() == before


def test_a_skipped_film_s_name_cannot_forge_a_line_of_evaluate_s_text_output(run_cli, trained_model, films_dir,
                                                                            tmp_path):
    """A garbage file named '...\\nrv-test-v1 on 999 films: accuracy 1.000, AUC 1.000.png' printed a summary of its
    own choosing on a line of its own under the real one."""
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / label).mkdir()
        for film in sorted((films_dir / label).iterdir())[:2]:
            (tmp_path / label / film.name).symlink_to(film)
    (tmp_path / "NORMAL" / "x\nforged-v1 on 999 films: accuracy 1.000, AUC 1.000\r.png").write_bytes(b"garbage")
    result = run_cli("evaluate", tmp_path, checkpoints=trained_model.directory)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{trained_model.name} on 4 films (2 NORMAL, 2 PNEUMONIA): ")
    assert lines[1].startswith(f"  skipped {tmp_path}/NORMAL/x\\nforged-v1 on 999 films: accuracy 1.000, AUC "
                               "1.000\\r.png: ")
    assert "\r" not in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_training_stopped_by_sigterm_or_sighup_answers_as_ctrl_c_does(tmp_path, kermany_train, signum):
    """timeout, systemd or a closed terminal ended a training silently with code 143: no JSON, no word of --resume."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_MODELS": str(tmp_path / "models")}
    process = subprocess.Popen([sys.executable, "-m", "core", "train", str(kermany_train), "--arch", "logistic",
                                "--image-size", "32", "--epochs", "200", "--patience", "100"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # not as nohup
    try:
        assert process.stderr.readline().endswith(b"\n")  # the run's first note, below its progress bar
        process.send_signal(signum)
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 1, (out, err)
    assert b"Traceback" not in err
    assert json.loads(out.decode().splitlines()[-1]) == {"error": "interrupted; if an epoch had finished, the same "
                                                         "command with --resume continues after the last one"}


def test_a_stop_signal_someone_ignores_stays_ignored_and_the_handlers_are_put_back():
    """nohup ignores SIGHUP: a command started under it must not die when its terminal closes."""
    from core.stop_signals import interrupt_on_stop_signals

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        restore = interrupt_on_stop_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait((), 0)  # gives the handler its turn
        restore()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGHUP, before[1])


SHIPPED_MODEL = REPO / "checkpoints" / "pneumonia-cnn5-v1.json"


def test_a_training_folder_whose_name_cannot_be_looked_up_is_a_calibration_error(tmp_path):
    """Python 3.11's Path.is_dir() raises for a name too long (or a folder above it that cannot be searched):
    calibrate, framing-check and collection-check --data said 'unexpected error ... a fault in the program'."""
    from core.errors import CalibrationError
    from core.store.records import read_model_record
    from core.training.calibrate import recorded_split

    record = read_model_record(SHIPPED_MODEL)
    too_long = tmp_path / ("a" * 300)
    with pytest.raises(CalibrationError, match=r"^The folder given for pneumonia-cnn5-v1's training films \(a folder "
                       r"outside the data roots\) cannot be read \(File name too long\); name the folder they are in "
                       r"now \(command line: --data\).$"):
        recorded_split(record, too_long)
    moved = record.model_copy(update={"training": record.training.model_copy(update={"data_dir": str(too_long)})})
    with pytest.raises(CalibrationError, match=r"^The training folder of pneumonia-cnn5-v1 \(a folder outside the "
                       r"data roots\) cannot be read \(File name too long\); .* \(command line: --data\).$"):
        recorded_split(moved)


@pytest.mark.parametrize("name", ["a" * 300 + ".toml", "a" * 300 + "/m.toml"], ids=["manifest", "its-folder"])
def test_a_manifest_whose_name_cannot_be_looked_up_is_a_dataset_error(tmp_path, name):
    from core.films.manifest import find_manifest

    with pytest.raises(DatasetError, match=r"^Manifest .*\.toml cannot be read \(File name too long\).$") as refused:
        find_manifest(tmp_path / name)
    assert str(tmp_path) not in str(refused.value)


def test_calibrate_and_train_say_so_in_json_for_a_name_too_long(tmp_path):
    too_long = tmp_path / ("a" * 300)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_CHECKPOINTS": str(SHIPPED_MODEL.parent),
           "CXR_MODELS": str(tmp_path / "models")}
    for command in (["calibrate", "pneumonia-cnn5-v1", "--target-sensitivity", "0.98", "--data", too_long],
                    ["train", too_long / "m.toml", "--arch", "mlp"]):
        done = subprocess.run([sys.executable, "-m", "core", *map(str, command)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)
        assert done.returncode == 1 and "Traceback" not in done.stderr, command
        error = json.loads(done.stdout.splitlines()[-1])["error"]
        assert "cannot be read (File name too long)" in error and str(tmp_path) not in error, command


def test_an_empty_folder_name_is_refused_and_warnings_reach_stderr_as_json_lines(tmp_path):
    """Found by a CLI review: `evaluate ""` read the working directory (and listed its sub-folders in the error),
    and warnings (a data root that does not exist) reached stderr as Python's bare log text, not JSON."""
    from e2e_support import real_films

    (tmp_path / "set" / "NORMAL").mkdir(parents=True)
    film = next(f for f in real_films() if f.parent.name == "NORMAL")
    (tmp_path / "set" / "NORMAL" / film.name).write_bytes(film.read_bytes())
    env = {**os.environ, "PYTHONPATH": str(REPO), "CXR_DATA": str(tmp_path / "no-such-root"),
           "CXR_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "CXR_MODELS": str(tmp_path / "site"),
           "CXR_CHECKPOINTS": str(REPO / "checkpoints")}

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=300)
        return done.returncode, json.loads(done.stdout.splitlines()[-1]), done.stderr.splitlines()

    for command in (["evaluate", ""], ["train", " ", "--arch", "logistic"]):
        code, said, _ = run(*command)
        assert code == 1 and said == {"error": "Name the dataset folder: one sub-folder of films per class."}, command
    code, said, warnings = run("evaluate", "set", "--model", "pneumonia-logistic-v1", "--json")
    assert code == 0 and said["n"] == 1, said
    assert warnings and all(json.loads(line)["warning"].startswith("data root shared-data") for line in warnings)


def test_a_film_that_was_not_triaged_is_printed_without_a_label():
    """Found by a review: 'Tuberculosis-1.png: NORMAL [not triaged]' gave a reading the app deliberately hides (its
    chest-film check refused the image, so the model's output is no call)."""
    from types import SimpleNamespace

    from core.serving.commands import _describe
    from core.serving.predict import Prediction

    refused = SimpleNamespace(label="NORMAL", priority=None, probabilities={"NORMAL": 0.61, "PNEUMONIA": 0.39},
                              warnings=["This image does not look like a chest film."], population_warning=None,
                              atypical=False)
    assert _describe("Tuberculosis-1.png", refused) == (
        "Tuberculosis-1.png: not triaged (the model's output, not a reading: NORMAL 0.610, PNEUMONIA 0.390)\n"
        "  warning: This image does not look like a chest film.")
    read = SimpleNamespace(**{**vars(refused), "priority": "routine", "warnings": []})
    assert _describe("a.png", read) == "a.png: NORMAL [routine] (NORMAL 0.610, PNEUMONIA 0.390)"
    # --json too: its label was the top class of a film no reading was given for
    fields = {k: v for k, v in vars(refused).items() if k not in ("priority", "atypical")}  # atypical: a property
    as_json = Prediction(model="m", abnormal_score=None, threshold=None, priority=None, **fields).to_dict()
    assert as_json["label"] is None and as_json["probabilities"] == {"NORMAL": 0.61, "PNEUMONIA": 0.39}
    assert Prediction(model="m", abnormal_score=0.39, threshold=0.5, priority="routine", **fields).to_dict()[
        "label"] == "NORMAL"


def test_an_unforeseen_failure_is_named_by_its_type_not_its_text(monkeypatch, capsys):
    """Found by a review: the catch-all echoed the exception's text, and an ImportError's names a server path."""
    from core import cli

    def broken(args):
        raise ImportError(f"cannot import name 'X' from 'core.errors' ({REPO}/core/errors.py)")

    monkeypatch.setattr(cli, "_models", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main(["models"])
    assert exited.value.code == 1
    error = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["error"]
    assert error.startswith("models stopped with an unexpected error (ImportError). This is a fault in")
    assert str(REPO) not in error and "/" not in error


def test_the_models_table_shows_a_dash_where_a_figure_does_not_exist(monkeypatch, capsys):
    """Found by a review: a model without a validation AUC read "val AUC 0.000"."""
    from core import cli
    from core.store import registry

    entries, _ = registry.list_models(REPO / "checkpoints")
    entry = next(e for e in entries if e.name == "pneumonia-cnn5-v1")
    bare = dataclasses.replace(entry, record=entry.record.model_copy(update={
        "report": entry.record.report.model_copy(update={"auc": None})}))
    monkeypatch.setattr(registry, "list_models", lambda *a, **k: ([bare], []))
    assert cli.main(["models"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert f"val AUC — acc {entry.record.report.accuracy:.4f}" in line


def test_a_promotion_that_fails_after_registration_names_the_version_whatever_the_failure(monkeypatch):
    """Found by a review of the day's diff: only a refusal by the floor gave the registered version's name; an audit
    log that filled meanwhile gave neither the name nor that the version stays."""
    import core.store.promotion
    from core.errors import AuditLogUnavailable
    from core.training.commands import _make_default

    def full(*args, **kwargs):
        raise AuditLogUnavailable("The change could not be recorded, so the default is unchanged.")

    monkeypatch.setattr(core.store.promotion, "promote", full)
    with pytest.raises(AuditLogUnavailable) as failed:
        _make_default("pneumonia-cnn5-v9", override=False)
    assert str(failed.value).endswith("so the default is unchanged. pneumonia-cnn5-v9 stays registered.")
    assert failed.value.details == {"name": "pneumonia-cnn5-v9"}


@pytest.mark.parametrize("check", ["framing-check", "collection-check", "fit-population"])
def test_late_checks_refuse_an_unwritable_models_folder_before_their_work(check, copied_model, settings_env,
                                                                          monkeypatch):
    """Minutes of scoring or features were spent, then the models folder refused the result (a review)."""
    from core.store.records import read_model_record
    from core.training import fit_population, late_checks

    settings_env(CXR_MODELS=str(copied_model.parent))
    folders = []

    def unwritable(folder):
        folders.append(folder)
        raise CheckpointError("The models folder cannot be written (Read-only file system). Nothing was changed.")

    def work(*args, **kwargs):
        raise AssertionError("the work started before the models folder was checked")

    for module in (late_checks, fit_population):
        monkeypatch.setattr(module, "ensure_models_writable", unwritable, raising=False)
    monkeypatch.setattr(late_checks, "load_checkpoint", work)
    monkeypatch.setattr(fit_population, "FilmFeatures", work)
    name = read_model_record(copied_model).name
    before = copied_model.read_bytes()
    with pytest.raises(CheckpointError, match="Read-only file system"):
        if check == "fit-population":
            next(fit_population.fit_for_registered([name]))
        else:
            (late_checks.add_framing_report if check == "framing-check" else late_checks.add_collection_report)(name)
    assert folders == [copied_model.parent] and copied_model.read_bytes() == before


def test_augmentation_flags_without_the_augmentation_are_refused_before_training(run_cli, tmp_path):
    """A review: `--no-augment --hflip` trained without flipping, yet its record said hflip: true."""
    both = (["--hflip", "--wide-framing"], "--hflip and --wide-framing are")
    for flags, named in ((["--hflip"], "--hflip is"), both):
        done = run_cli("train", tmp_path, "--arch", "logistic", "--no-augment", *flags, checkpoints=tmp_path / "site")
        error = done.json_lines()[-1]["error"]
        assert done.returncode == 1 and error.startswith(f"{named} part of the augmentation, which --no-augment"), error
