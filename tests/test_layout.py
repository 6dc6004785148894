"""The architecture's promises (issue 10), each checked on the real code and the real shipped files:
records and the registry load without torch; the environment is read in core/config.py alone; the shipped
model descriptions still load, losing nothing; the CLI's report JSON keeps its keys; and training and
inference feed a model identical pixels.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.evaluation.metrics import evaluate_probabilities
from core.films.read import read_film
from core.films.tensor import as_float, film_to_tensor
from core.store.records import ModelRecord, read_model_record
from core.store.registry_file import RegistryFile
from core.store.reports import OperatingPoint, Report
from core.films.folders import FilmSet
from core.films.tensor import load_tensors

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p for p in (REPO / "checkpoints").glob("*.json") if p.name != "registry.json")

# --- (1) what pages import before a model loads needs no torch ----------------------------------------


@pytest.mark.parametrize("module", ["core.store.records", "core.store.registry", "core.models.catalog"])
def test_records_registry_and_catalog_import_without_torch(module, tmp_path):
    code = (f"import sys, {module}\n"
            "print('imported', 'torch' in sys.modules, any(m.startswith('torch.') for m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["imported", "False", "False"], f"{module} pulls in torch"


def test_the_torch_check_can_tell(tmp_path):
    """The same probe does see torch when a module needs it (so a passing check above means something)."""
    code = "import sys, core.store.checkpoints\nprint('imported', 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["imported", "True"], done.stderr[-2000:]


# --- (2) one module reads the environment -------------------------------------------------------------

ENVIRONMENT_READ = re.compile(r"os\s*\.\s*(environ|getenv|putenv|unsetenv)\b"
                              r"|from\s+os\s+import\s+[^\n]*\b(environ|getenv)\b")


def _python_files() -> list[Path]:
    return sorted(p for folder in ("core", "dashboard") for p in (REPO / folder).rglob("*.py"))


def test_only_core_config_reads_the_environment():
    files = _python_files()
    assert REPO / "core" / "config.py" in files and len(files) > 30  # the scan really covers the code
    assert ENVIRONMENT_READ.search((REPO / "core" / "config.py").read_text())  # and really finds a read
    readers = [str(p.relative_to(REPO)) for p in files
               if p != REPO / "core" / "config.py" and ENVIRONMENT_READ.search(p.read_text())]
    assert readers == [], f"only core/config.py may read the environment; also: {readers}"


# --- (3) the shipped model descriptions still load, and nothing they say is lost ----------------------


def test_there_are_shipped_models_to_check():
    assert len(SHIPPED) >= 6, SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_description_parses_and_round_trips(path):
    record = read_model_record(path)  # the one place a model's JSON is read
    assert isinstance(record, ModelRecord)
    assert record.name == path.stem and record.weights_sha256
    assert record == ModelRecord.model_validate(json.loads(path.read_text()))
    again = ModelRecord.model_validate(record.to_json())
    assert again == record
    assert again.to_json() == record.to_json()


def _lost(old, new, where: str = "") -> list[str]:
    """Keys or values of ``old`` that ``new`` no longer carries (``new`` may carry more)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where or 'top'}: no longer an object"]
        return [problem for key, value in old.items()
                for problem in (_lost(value, new[key], f"{where}.{key}") if key in new else [f"{where}.{key}: gone"])]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [problem for i, (a, b) in enumerate(zip(old, new)) for problem in _lost(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where}: {old!r} became {new!r}"[:200]]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_nothing_a_shipped_description_says_is_lost(path):
    """A typed record ignores keys it does not know: a misspelt field would silently drop stored data."""
    assert _lost(json.loads(path.read_text()), read_model_record(path).to_json()) == []


def test_the_shipped_registry_parses_with_its_default():
    old = json.loads((REPO / "checkpoints" / "registry.json").read_text())
    registry = RegistryFile.model_validate(old)
    assert registry.default == old["default"] and registry.task_defaults == old["task_defaults"]
    assert (REPO / "checkpoints" / f"{registry.default}.json").exists()


# --- (4) the CLI's report JSON keeps its schema -------------------------------------------------------

OLD_REPORT_KEYS = {"auc", "auc_ci", "accuracy", "accuracy_ci", "sensitivity", "specificity", "threshold",
                   "per_class", "confusion_matrix", "at_operating_point", "at_0.5", "roc", "split", "n", "classes",
                   "class_counts", "operating_point"}


@pytest.fixture(scope="module")
def report() -> Report:
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.6, 0.2, 0.9, 0.4, 0.7, 0.8])
    point = OperatingPoint(classes=("NORMAL", "PNEUMONIA"), normal_index=0, threshold=0.35)
    return evaluate_probabilities(truth, np.stack([1 - scores, scores], 1), ["NORMAL", "PNEUMONIA"], point,
                                  split="eight films")


def test_report_json_keeps_the_cli_keys(report):
    data = report.to_json()
    assert OLD_REPORT_KEYS <= set(data), OLD_REPORT_KEYS - set(data)
    json.dumps(data)  # plain JSON, as the CLI prints it
    # the top-level figures are those at the operating point; "at_0.5" is the naive reading
    assert data["threshold"] == 0.35 and data["split"] == "eight films" and data["n"] == 8
    assert data["confusion_matrix"] == data["at_operating_point"]["confusion_matrix"] == [[3, 1], [0, 4]]
    assert data["at_0.5"]["confusion_matrix"] == [[3, 1], [1, 3]]
    assert data["accuracy"] == data["at_operating_point"]["accuracy"] == pytest.approx(7 / 8)
    assert set(data["roc"]) == {"fpr", "tpr", "thresholds"}
    assert Report.model_validate(data) == report


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_shipped_report_keeps_its_keys_and_values(path):
    old = json.loads(path.read_text()).get("report")
    assert old is not None, f"{path.name} has no report"  # a shipped model always has one: a skip hid its loss
    assert OLD_REPORT_KEYS <= set(old) | {"split"}  # the keys the CLI prints were in the old files too
    assert _lost(old, read_model_record(path).report.to_json()) == []


# --- (5) training and inference feed the model identical pixels ---------------------------------------


@pytest.fixture(scope="module")
def mixed_films(kermany_train, films_dir) -> FilmSet:
    """224-px training copies and full-resolution films (JPEG, both classes) in one set."""
    def first(folder: Path, n: int) -> list[Path]:
        return sorted(folder.glob("*.jpeg"))[:n]

    paths = (first(kermany_train / "NORMAL", 2) + first(kermany_train / "PNEUMONIA", 1)
             + first(films_dir / "NORMAL", 1) + first(films_dir / "PNEUMONIA", 1))
    films = FilmSet(tuple(paths), np.array([0, 0, 1, 0, 1]), ("NORMAL", "PNEUMONIA"))
    assert read_film(films.paths[0]).size == (224, 224) and min(read_film(films.paths[-1]).size) > 500
    return films


@pytest.mark.parametrize("size", [64, 224])
def test_training_tensors_are_the_inference_tensors(mixed_films, size):
    tensors = load_tensors(mixed_films, size)
    assert tensors.dtype == torch.uint8 and tensors.shape == (len(mixed_films), 1, size, size)
    for i, path in enumerate(mixed_films.paths):
        inference = film_to_tensor(read_film(path), size)
        assert inference.dtype == torch.uint8
        assert torch.equal(tensors[i], inference), path.name


class _Recorder(nn.Module):
    """A stand-in network that keeps the batch it is given and answers 'normal'."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.seen.append(batch.detach().clone())
        return torch.tensor([[2.0, 0.0]]).expand(len(batch), 2)


class _NoChestCheck:
    def problem(self, film):
        return None


def test_the_predictor_feeds_exactly_the_training_pixels(mixed_films):
    """The app's own path (Predictor.predict) gives the network the training tensor / 255, bit for bit."""
    from core.serving.predict import Predictor
    from core.store.checkpoints import LoadedModel

    record = read_model_record(REPO / "checkpoints" / "pneumonia-logistic-v1.json")  # a 64-px model
    recorder = _Recorder()
    predictor = Predictor(LoadedModel(record, recorder), chest_check=_NoChestCheck())
    training = as_float(load_tensors(mixed_films, record.image_size))
    for i, path in enumerate(mixed_films.paths):
        predictor.predict(read_film(path))
        (seen,) = recorder.seen[-1:]
        assert seen.dtype == torch.float32 and seen.shape == (1, 1, record.image_size, record.image_size)
        assert torch.equal(seen[0], training[i]), path.name
        assert torch.equal(torch.round(seen * 255), seen * 255)  # 8-bit values, not the float film
