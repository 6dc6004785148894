"""The models shipped in checkpoints/: the lineup is complete, each one loads, carries its report, and the
default triages the 16 full-resolution films it never saw (another batch than its training films)."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.checkpoints import load_checkpoint
from core.evaluate import evaluate_folder
from core.registry import list_models

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"

REPORT_KEYS = {"auc", "auc_ci", "accuracy", "accuracy_ci", "sensitivity", "sensitivity_ci", "specificity",
               "specificity_ci", "confusion_matrix", "roc", "operating_point", "at_0.5", "split"}


@pytest.fixture(scope="module")
def shipped():
    entries, problems = list_models(SHIPPED)
    assert problems == []
    return {e.name: e for e in entries}


def test_the_lineup_is_complete_and_small(shipped):
    configs = {name: e.metadata["training"]["config"] for name, e in shipped.items()}
    kinds = {(c["arch"], c["augment"]) for c in configs.values()}
    assert {("logistic", False), ("mlp", False), ("resnet18", False), ("resnet18", True)} <= kinds
    assert {"cnn5", "efficientnet_lite0"} <= {arch for arch, _ in kinds}
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total < 100 * 2**20


def test_every_model_loads_and_carries_a_full_validation_report(shipped):
    for name, entry in shipped.items():
        loaded = load_checkpoint(entry.json_path)  # verifies the weights' hash
        meta = loaded.metadata
        report = meta["report"]
        assert REPORT_KEYS <= set(report), name
        assert report["n"] == 1038 and report["class_counts"] == [265, 773], name  # the same patient-disjoint split
        assert report["auc_ci"][0] <= report["auc"] <= report["auc_ci"][1]
        assert report["auc"] > 0.97, name
        assert report["sensitivity"] >= meta["operating_point"]["target_sensitivity"] >= 0.95, name
        assert meta["training"]["history"] and meta["training"]["seconds"] > 0
        assert meta["inference_ms_per_film"] > 0 and meta["parameters"] > 0


def test_the_default_is_the_efficientnet_with_a_sensitivity_margin(shipped):
    default = next(e for e in shipped.values() if e.is_default)
    assert default.arch == "efficientnet_lite0"
    point = default.metadata["operating_point"]
    assert point["target_sensitivity"] == 0.98 and point["validation_sensitivity"] >= 0.98
    assert default.metadata["report"]["auc"] > 0.995


def test_the_default_triages_the_unseen_full_resolution_films(shipped, films_dir):
    default = next(e for e in shipped.values() if e.is_default)
    report = evaluate_folder(load_checkpoint(default.json_path), films_dir)
    assert report["n"] == 16 and report["skipped"] == []
    assert report["auc"] == pytest.approx(1.0)
    assert report["sensitivity"] == 1.0  # every pneumonia urgent (at the 95 % policy it missed 1 of 8)
    assert report["specificity"] >= 7 / 8
