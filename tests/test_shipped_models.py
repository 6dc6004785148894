"""The models shipped in checkpoints/: the lineup is complete, each one loads, carries its report, and the
default triages the 16 full-resolution films it never saw (another batch than its training films)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.evaluation.folder import evaluate_folder
from core.store.checkpoints import load_checkpoint
from core.store.registry import find_model, list_models, read_registry

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"

REPORT_KEYS = {"auc", "auc_ci", "accuracy", "accuracy_ci", "sensitivity", "sensitivity_ci", "specificity",
               "specificity_ci", "confusion_matrix", "roc", "operating_point", "at_0.5", "split"}


@pytest.fixture(scope="module")
def shipped():
    entries, problems = list_models(SHIPPED)
    assert problems == []
    return {e.name: e for e in entries}


def test_the_lineup_is_complete_and_small(shipped):
    configs = {name: e.record.training.config for name, e in shipped.items()}
    kinds = {(c.arch, c.augment) for c in configs.values()}
    assert {("logistic", False), ("mlp", False), ("resnet18", False), ("resnet18", True)} <= kinds
    assert {"cnn5", "efficientnet_lite0"} <= {arch for arch, _ in kinds}
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 100 * 2**20


def test_every_model_loads_and_carries_a_full_validation_report(shipped):
    for name, entry in shipped.items():
        loaded = load_checkpoint(entry.json_path)  # verifies the weights' hash
        record = loaded.record
        report = record.report
        assert report is not None, name
        assert REPORT_KEYS <= set(report.to_json()), name
        assert report.n == 1038 and report.class_counts == [265, 773], name  # the same patient-disjoint split
        assert report.auc_ci[0] <= report.auc <= report.auc_ci[1]
        assert report.auc > 0.97, name
        assert report.sensitivity >= record.operating_point.target_sensitivity >= 0.95, name
        assert record.training.history and record.training.seconds > 0
        assert record.inference_ms_per_film > 0 and record.parameters > 0
        assert record.task == "pneumonia" and record.classes == ("NORMAL", "PNEUMONIA"), name


def test_the_default_is_the_efficientnet_with_a_sensitivity_margin(shipped):
    (default,) = [e for e in shipped.values() if e.is_default]  # one task, one default
    assert default.arch == "efficientnet_lite0"
    assert find_model(None, SHIPPED).name == find_model(None, SHIPPED, task="pneumonia").name == default.name
    assert read_registry(SHIPPED).task_defaults == {"pneumonia": default.name}
    point = default.record.operating_point
    assert point.target_sensitivity == 0.98 and point.validation_sensitivity >= 0.98
    assert default.record.report.auc > 0.995


def test_the_default_triages_the_unseen_full_resolution_films(shipped, films_dir):
    default = next(e for e in shipped.values() if e.is_default)
    report = evaluate_folder(load_checkpoint(default.json_path), films_dir)
    assert report.n == 16 and report.skipped == []
    assert report.auc == pytest.approx(1.0)
    assert report.sensitivity == 1.0  # every pneumonia urgent (at the 95 % policy it missed 1 of 8)
    assert report.specificity >= 7 / 8
