"""`make models` and its trial. Read through `make -n` (nothing runs): every training line takes the trial's flags
after its own, and the new set replaces checkpoints/ only at the end. Run with every command replaced by a
stand-in (minutes of training each otherwise): a second `make models` continues an interrupted one, its finished
lines not run again, the training line cut short resumed (``core train --resume-if-saved``, tried on real films).
Run for real: `make models-trial` trains every line on 300 films for one epoch (13 minutes here), under CI only;
see docs/measurements.md; and the logistic line at full size reproduces its shipped model."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import IN_CI, ROOT
from test_resume import TINY, _interrupt

from core.training.resume import IF_SAVED
from core.training.saved_runs import runs_dir
from core.training.train import train

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _dry_run(*arguments: str) -> str:
    """The commands `make -n` prints, one per line (a recipe line continued with a backslash joined)."""
    return subprocess.run(["make", "-n", *arguments], cwd=ROOT, capture_output=True, text=True, check=True,
                          timeout=60).stdout.replace("\\\n", " ")


def test_every_training_line_takes_the_trials_flags_last():
    """The trial shortens each run through $(TRIAL), placed after the recipe's own flags (the last one wins); a
    line without it would train for hours inside the trial, one with it in front would not be shortened."""
    trainings = re.findall(r"-m core train [^|)\n]*", _dry_run("models", "TRIAL=--max-films 7 --epochs 1"))
    assert len(trainings) >= 20  # baselines and their held-out runs, six members, COVID, the site lineup
    for command in trainings:
        assert "--max-films 7 --epochs 1" in command, command
        after = command.split("--max-films 7 --epochs 1", 1)[1]
        assert not re.search(r"--(epochs|max-films|patience)\b", after), command


def test_the_new_set_replaces_checkpoints_only_at_the_end():
    lines = _dry_run("models", "SHIP_TO=/tmp/shipped", "STAGE=/tmp/staged").splitlines()
    start = next(i for i, line in enumerate(lines) if "core train" in line)
    assert any("else rm -rf build/holdout-runs /tmp/staged build/members &&" in line  # a new run: an empty stage
               for line in lines[:start])
    # the swap, only while the stage is there: continued after a kill between the mv and its step file, the run
    # must not remove the set it has just shipped
    swap = next(i for i, line in enumerate(lines)
                if "( if [ -d /tmp/staged ]; then rm -rf /tmp/shipped && mv /tmp/staged /tmp/shipped; else" in line)
    assert not any("core train" in line or "core ensemble" in line for line in lines[swap:])
    assert any("core.store.manifest" in line for line in lines[:swap])  # signed before it is moved


def test_the_pneumonia_default_is_promoted_last():
    """The shipped registry lists the last promoted default first; as shipped, that is the pneumonia task's."""
    promotions = [line for line in _dry_run("models").splitlines() if "--set-default" in line]
    assert len(promotions) == 2  # the COVID-19 task's default, then the pneumonia default ensemble
    assert "--name covid-" in promotions[0] and "--name pneumonia-" in promotions[-1]


@pytest.mark.slow
@pytest.mark.skipif(not IN_CI, reason="about 15 minutes on 2 cores: runs under CI (.ci/run); run `make models-trial`")
def test_the_trial_runs_every_line_and_ships_the_same_set(tmp_path, data_dir):
    """What `make models` would ship, made for real at trial size: the same models by name as checkpoints/
    (versions start again at v1), both tasks' defaults with the pneumonia one promoted last, a manifest that
    checks, the detector beside them and the re-measured table; nothing written into the repository."""
    trial = tmp_path / "trial"
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    done = subprocess.run(["make", "models-trial", f"TRIAL_DIR={trial}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    shipped = trial / "checkpoints"

    def bases(folder: Path) -> set[str]:
        return {re.sub(r"-v\d+$", "", p.stem) for p in folder.glob("*.json") if p.name != "registry.json"}

    assert bases(shipped) == bases(ROOT / "checkpoints") and len(bases(shipped)) >= 11
    registry = json.loads((shipped / "registry.json").read_text())
    assert set(registry["task_defaults"]) == {"pneumonia", "covid"}
    assert registry["default"] == registry["task_defaults"]["pneumonia"]
    assert (shipped / "detector" / "chest-film-detector.pt").is_file() and not (trial / "checkpoints-next").exists()
    check = subprocess.run([sys.executable, "-m", "core.store.manifest", "--check"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "CXR_CHECKPOINTS": str(shipped),
                                "CXR_DETECTOR_DIR": str(shipped / "detector")})
    assert json.loads(check.stdout.splitlines()[-1])["problems"] == []
    assert "<!-- begin models -->" in (trial / "measurements.md").read_text()
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before  # checkpoints/ and docs/ untouched


@pytest.mark.slow
def test_the_logistic_line_reproduces_the_shipped_model(tmp_path, data_dir):
    """`make models` reproduces what it shipped, not just something of the same name: its logistic-regression
    line, run for real, draws the same films, follows the same validation curve epoch by epoch and ends at the
    shipped weights, report and operating point (20 s of training; 2-5 minutes in all, as the test's empty caches
    make it decode every film and compute its population check's features afresh). The model was shipped on
    2026-11-21, so any change since to reading, preprocessing, splitting or the training loop that would change
    what the line makes fails here. The tolerances only absorb another CPU's floating-point noise: here the
    weights come out bit for bit (the shipped threshold, stored by an older rule, differs in the 7th decimal)."""
    import torch

    from core.store.records import ModelRecord

    line = re.search(r"-m core train (\S+) ([^|]*?) --name pneumonia-logistic ",
                     _dry_run("models", f"DATA={data_dir / 'kermany-224' / 'train'}"))
    assert line, "make models has no pneumonia-logistic line"
    env = {**os.environ, "CXR_CHECKPOINTS": str(tmp_path / "stage"), "CXR_MODELS": str(tmp_path / "site"),
           "CXR_JOBS": str(tmp_path / "jobs"), "CXR_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    done = subprocess.run([sys.executable, "-m", "core", "train", line[1], *line[2].split(), "--name",
                           "pneumonia-logistic"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    made_path = Path(json.loads(done.stdout.splitlines()[-1])["checkpoint"])
    made = ModelRecord.model_validate_json(made_path.with_suffix(".json").read_text())
    shipped = ModelRecord.model_validate_json((ROOT / "checkpoints" / "pneumonia-logistic-v1.json").read_text())
    assert made.name == shipped.name == "pneumonia-logistic-v1"
    assert (made.data.train, made.data.validation) == (shipped.data.train, shipped.data.validation)
    assert made.training.config.model_copy(update={"precision": "auto"}) == shipped.training.config
    assert made.training.precision == shipped.training.precision == "fp32"
    assert made.training.best_epoch == shipped.training.best_epoch
    assert [h.val_auc for h in made.training.history] == pytest.approx(
        [h.val_auc for h in shipped.training.history], abs=1e-4)
    assert made.report.auc == pytest.approx(shipped.report.auc, abs=1e-4)
    assert made.operating_point.threshold == pytest.approx(shipped.operating_point.threshold, abs=1e-4)
    files = [torch.load(path, map_location="cpu", weights_only=True)
             for path in (made_path, ROOT / "checkpoints" / "pneumonia-logistic-v1.pt")]
    assert files[0]["identity"] == files[1]["identity"]
    weights = [f["model"] for f in files]
    assert weights[0].keys() == weights[1].keys() == {"net.2.weight", "net.2.bias"}
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-2, atol=1e-4)


# --- make models continues an interrupted run ------------------------------------------------------------

# Stands in for .venv/bin/python: writes its arguments down, answers as each command does on stdout (the JSON
# line naming the version), registers a shipped version as a file, and stops at $FAIL_AT's --name as an
# interrupted or failed command does. The Makefile's own `python -c` (reading the answer) runs for real.
STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["-c"]:
    os.execv({python!r}, [{python!r}, *args])
with open(os.environ["STAND_IN_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == [os.environ.get("FAIL_AT")]:  # a script (bench/models.py) that fails
    sys.exit(1)
if args[:2] == ["-m", "core"]:
    name = args[args.index("--name") + 1] if "--name" in args else args[3]
    if name == os.environ.get("FAIL_AT"):
        print(json.dumps({{"error": "interrupted"}}))
        sys.exit(1)
    version = name if args[2] == "other-batch" else name + "-v1"
    if "--shipped" in args:
        os.makedirs(os.environ["CXR_CHECKPOINTS"], exist_ok=True)
        open(os.path.join(os.environ["CXR_CHECKPOINTS"], version + ".json"), "w").close()
    print(json.dumps({{"name": version}}))
"""


def _make_models(tmp_path: Path, fail_at: str = "") -> subprocess.CompletedProcess:
    python = tmp_path / "python"
    python.write_text(STAND_IN.format(python=sys.executable))
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    paths = {name: tmp_path / name.lower() for name in ("SHIP_TO", "STAGE", "MEMBERS", "HOLDOUT_RUNS")}
    env = {**os.environ, "STAND_IN_LOG": str(tmp_path / "log.jsonl"), "FAIL_AT": fail_at,
           "CXR_MODELS": str(tmp_path / "site")}
    return subprocess.run(["make", "-C", str(ROOT), "--no-print-directory", "-o", "setup", "models",
                           f"PY={python}", *(f"{k}={v}" for k, v in paths.items())],
                          env=env, capture_output=True, text=True, timeout=300)


def _commands(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "log.jsonl"
    commands = [json.loads(line) for line in log.read_text().splitlines()]
    log.unlink()
    return commands


def _named(commands: list[list[str]]) -> list[str]:
    """What each `python -m core` command trained (its --name), else the command up to its options."""
    return [c[c.index("--name") + 1] if c[2] == "train" else " ".join(c[2:c.index("--name") if "--name" in c else None])
            for c in commands if c[:2] == ["-m", "core"]]


def test_a_second_make_models_continues_where_the_first_stopped(tmp_path):
    first = _make_models(tmp_path, fail_at="pneumonia-mlp-holdout")
    assert first.returncode != 0 and "the command above failed, so the run stops here" in first.stderr
    assert _named(_commands(tmp_path)) == [
        "pneumonia-efficientnet_lite0", "pneumonia-efficientnet_lite0-holdout",
        "other-batch pneumonia-efficientnet_lite0-v1 --from pneumonia-efficientnet_lite0-holdout-v1",
        "pneumonia-logistic", "pneumonia-logistic-holdout",
        "other-batch pneumonia-logistic-v1 --from pneumonia-logistic-holdout-v1",
        "pneumonia-mlp", "pneumonia-mlp-holdout"]
    assert not (tmp_path / "ship_to").exists()  # the shipped models stay as they were

    second = _make_models(tmp_path, fail_at="docs/project-measurements/kermany-official-test.json")
    assert second.returncode == 0, second.stderr  # no measured weights came out again: the run goes on
    assert "make models: no version came out with the weights the project measured" in second.stderr
    assert "make models: continuing the run interrupted before (lines done: 7)" in second.stderr
    commands = _commands(tmp_path)
    named = _named(commands)
    assert named[:3] == ["pneumonia-mlp-holdout", "other-batch pneumonia-mlp-v1 --from pneumonia-mlp-holdout-v1",
                         "pneumonia-logistic_body-wide"]  # nothing that finished is run again
    assert "pneumonia-logistic" not in named and "pneumonia-mlp" not in named
    trains = [c for c in commands if c[:3] == ["-m", "core", "train"]]
    assert len(trains) == 21 and all("--resume-if-saved" in c for c in trains)
    assert named[-4:] == ["pneumonia-resnet18-224-s0", "pneumonia-resnet18-224-s1",
                          "ensemble pneumonia-resnet18-224-s0-v1 pneumonia-resnet18-224-s1-v1",
                          "measured-elsewhere docs/project-measurements/kermany-official-test.json"]
    assert "other-batch pneumonia-resnet18-lite1-224-wide-all-ensemble-v1 --from " \
           "pneumonia-resnet18-lite1-224-wide-ensemble-v1" in named
    assert [c[1] for c in commands if c[:1] == ["-m"] and c[1] != "core"] == [
        "core.serving.fit_chest_check", "core.store.manifest"]
    assert commands[-1] == ["bench/models.py"]
    shipped = sorted(p.name for p in (tmp_path / "ship_to").iterdir())
    assert "pneumonia-mlp-v1.json" in shipped and "pneumonia-resnet18-lite1-224-wide-all-ensemble-v1.json" in shipped
    assert not (tmp_path / "stage").exists() and not (tmp_path / "stage.steps").exists()

    third = _make_models(tmp_path, fail_at="pneumonia-efficientnet_lite0")  # finished: the next run starts over
    assert third.returncode != 0 and "continuing" not in third.stderr
    assert _named(_commands(tmp_path)) == ["pneumonia-efficientnet_lite0"]
    assert (tmp_path / "ship_to" / "pneumonia-mlp-v1.json").exists()


@pytest.mark.slow
def test_resume_if_saved_starts_afresh_or_continues_and_sets_a_damaged_state_aside(kermany_train, tmp_path,
                                                                                   settings_env):
    site = tmp_path / "models"
    settings_env(CXR_MODELS=str(site), CXR_JOBS=str(tmp_path / "jobs"))
    fresh = train(kermany_train, TINY, directory=site, resume=IF_SAVED)  # nothing saved: a run from the start
    assert [h.epoch for h in fresh.training.history] == [1, 2]
    assert not any("resumed" in note or "afresh" in note for note in fresh.training.notes)

    _interrupt(kermany_train, TINY, site)
    resumed = train(kermany_train, TINY, directory=site, resume=IF_SAVED)
    assert "resumed after epoch 1 of 2 from its saved state" in resumed.training.notes
    assert [h.epoch for h in resumed.training.history] == [1, 2]

    _interrupt(kermany_train, TINY, site)
    (state,) = runs_dir().glob("*.pt")
    state.write_bytes(b"not a state")
    afresh = train(kermany_train, TINY, directory=site, resume=IF_SAVED)
    (note,) = [note for note in afresh.training.notes if "afresh" in note]
    assert note.startswith("started afresh, the saved state of these settings set aside (cannot be read: ")
    assert str(tmp_path) not in note and [h.epoch for h in afresh.training.history] == [1, 2]
    assert not list(runs_dir().glob("*.pt"))  # shipped: the run's state is gone


@pytest.mark.slow
def test_resume_if_saved_sets_aside_a_state_that_reads_but_no_longer_fits_the_model(kermany_train, tmp_path,
                                                                                    settings_env, monkeypatch):
    """A state that reads but does not fit the model built today (the code or torch changed between two runs of
    make models) is set aside before any of it is loaded: the run is a fresh one, weight for weight, where
    --resume refuses it. A state that fits says where its epochs ran."""
    import torch

    from core.errors import ResumeRefused
    from core.training import resume
    from core.training.resume import RunCheckpoint

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_JOBS=str(tmp_path / "jobs"))
    fresh = train(kermany_train, TINY, directory=tmp_path / "fresh", resume=IF_SAVED)
    _interrupt(kermany_train, TINY, tmp_path / "models")
    (state,) = runs_dir().glob("*.pt")
    assert torch.load(state, weights_only=True)["hardware"] == ["the CPU in fp32"]
    monkeypatch.setattr(resume, "misfit", lambda weights, fresh: "a layer of another shape")
    with pytest.raises(ResumeRefused, match="its weights do not fit this model"):
        train(kermany_train, TINY, directory=tmp_path / "models", resume=True)
    described, describe = [], RunCheckpoint.describe  # (epoch, states named) of each description written
    monkeypatch.setattr(RunCheckpoint, "describe", lambda run, epoch, finished: (
        described.append((epoch, len(run.digests))), describe(run, epoch, finished)))
    afresh = train(kermany_train, TINY, directory=tmp_path / "models", resume=IF_SAVED)
    assert described[:2] == [(1, 1), (1, 1)]  # as opened; then the fresh run's first saved epoch, named alone: the
    # set-aside state's description went before its state was replaced (reviews: a disk full advised resuming it)
    assert [note for note in afresh.training.notes if "afresh" in note or "resumed" in note] == [
        "started afresh, the saved state of these settings set aside (cannot be read: its weights do not fit this "
        "model (a layer of another shape))"]
    assert [h.epoch for h in afresh.training.history] == [1, 2]
    assert afresh.weights_sha256 == fresh.weights_sha256  # nothing of the state reached the model

    moved = RunCheckpoint(resume.RunIdentity(TINY, "films", *[fresh.data.train] * 2), _cpu(),
                          tmp_path, payload={"epoch": 1, "hardware": ["the GPU in bf16"]})
    assert moved.notes == ["resumed after epoch 1 of 2 from its saved state, whose epochs so far ran on the GPU in "
                           "bf16 (from here on the CPU in fp32)"]
    moved.payload["hardware"] = ["the CPU in fp32"]
    assert moved.notes == ["resumed after epoch 1 of 2 from its saved state"]


def _cpu():
    import torch

    from core.models.device import FP32
    from core.training.distributed import Hardware

    return Hardware(torch.device("cpu"), FP32)


def test_resume_and_resume_if_saved_are_one_or_the_other(run_cli, kermany_train, tmp_path):
    both = run_cli("train", kermany_train, "--resume", "--resume-if-saved", checkpoints=tmp_path / "models")
    assert both.returncode == 1 and "Traceback" not in both.stderr
    (error,) = both.json_lines()
    assert "not allowed with argument" in error["error"]


def test_a_run_killed_after_its_swap_keeps_the_set_it_shipped(tmp_path):
    """Killed between moving the stage into place and writing the step that says so, a run continued later
    finds its stage gone: it must leave the shipped set where it is, not remove it and fail on the move."""
    first = _make_models(tmp_path, fail_at="bench/models.py")  # every line ran and shipped, then a failure
    assert first.returncode != 0 and (tmp_path / "ship_to" / "pneumonia-mlp-v1.json").exists()
    (tmp_path / "stage.steps" / "ship").unlink()  # as if killed before the step file was written
    _commands(tmp_path)
    second = _make_models(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "stage is gone: it shipped before this run went on" in second.stderr
    assert (tmp_path / "ship_to" / "pneumonia-mlp-v1.json").exists()
    assert _commands(tmp_path)[-1] == ["bench/models.py"] and not (tmp_path / "stage.steps").exists()
