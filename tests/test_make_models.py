"""`make models` and its trial. Read through `make -n` (nothing runs): every training line takes the trial's flags
after its own, and the new set replaces checkpoints/ only at the end. Run: `make models-trial` trains every line
for real on 300 films for one epoch (13 minutes here), under CI only; see docs/measurements.md; and the logistic
line at full size reproduces its shipped model."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_support import IN_CI, ROOT

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
    first = next(line for line in lines if line.startswith("rm -rf"))
    assert "/tmp/staged" in first.split()  # a run starts from an empty stage
    swap = next(i for i, line in enumerate(lines) if line.startswith("rm -rf /tmp/shipped"))
    assert lines[swap] == "rm -rf /tmp/shipped && mv /tmp/staged /tmp/shipped"
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
