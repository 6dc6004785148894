"""Broken models beside a good one (the issue's "Models and jobs"): the triage page names each broken model
and triages with the good one; the CLI refuses a broken default clearly. The library's own refusals are in
test_checkpoints.py.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest
import torch
from bad_input_support import open_page, private_registry, upload

from core.store.registry import read_registry, set_default


class Payload:
    """Any object a hostile weights file could pickle; loading with weights_only=True must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


def _broken_copy(registry: Path, good: str, name: str, how: str) -> None:
    """``name``.json/.pt: the good model renamed, then broken ``how``; the JSON's hash always matches the file.

    The files are edited as plain JSON and a plain payload, as damage on disk would: records are never written
    this way by the product.
    """
    metadata = json.loads((registry / f"{good}.json").read_text())
    payload = torch.load(registry / f"{good}.pt", weights_only=True)
    payload["identity"]["name"] = metadata["name"] = name
    if how == "pickled object":
        payload["extra"] = Payload()
    elif how == "mismatched metadata":  # consistent in itself (else the description alone is refused), not with
        metadata["classes"] = list(reversed(metadata["classes"]))  # the weights: found when they are loaded
        metadata["operating_point"]["classes"] = metadata["classes"]
        metadata["operating_point"]["normal_index"] = metadata["classes"].index("NORMAL")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    if how == "truncated":
        data = data[: len(data) // 2]
    (registry / f"{name}.pt").write_bytes(data)
    metadata["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (registry / f"{name}.json").write_text(json.dumps(metadata))


BROKEN_MODELS = {"pneumonia-cnn5-v7": "pickled object", "pneumonia-cnn5-v8": "truncated",
                 "pneumonia-cnn5-v9": "mismatched metadata"}


@pytest.fixture
def broken_registry(trained_model, tmp_path, settings_env) -> Path:
    """The good session model plus three broken ones; the first broken one is its task's default (it was
    promoted whole and broke on disk afterwards: promoting reads only the description, not the weights)."""
    registry = private_registry(trained_model, tmp_path, settings_env)
    for name, how in BROKEN_MODELS.items():
        _broken_copy(registry, trained_model.name, name, how)
    set_default("pneumonia-cnn5-v7", registry)
    promoted = read_registry(registry)
    assert promoted.task_defaults["pneumonia"] == promoted.default == "pneumonia-cnn5-v7"
    return registry


def test_the_page_names_each_broken_model_and_triages_with_the_good_one(broken_registry, trained_model,
                                                                         normal_film_path):
    at = open_page()  # the broken default is preselected: the page must say so, not crash
    for name in BROKEN_MODELS:
        if at.sidebar.selectbox[0].value != name:
            at.sidebar.selectbox[0].set_value(name)
            at.run()
        assert not at.exception, at.exception
        assert any(f"Model {name} cannot be used" in e.value and "Choose another model" in e.value
                   for e in at.error), [e.value for e in at.error]
    at.sidebar.selectbox[0].set_value(trained_model.name)
    at.run()
    assert not at.error, [e.value for e in at.error]
    upload(at, [(normal_film_path.name, normal_film_path.read_bytes())])
    table = at.dataframe[0].value
    assert list(table["Priority"]) in (["Urgent"], ["Routine"])


def test_the_cli_refuses_a_broken_default_clearly_and_uses_a_good_model_on_request(broken_registry, trained_model,
                                                                                  run_cli, normal_film_path):
    refused = run_cli("predict", normal_film_path, "--json", checkpoints=broken_registry)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    (line,) = refused.json_lines()
    assert "pneumonia-cnn5-v7" in line["error"] and "refused" in line["error"]
    chosen = run_cli("predict", normal_film_path, "--model", trained_model.name, "--json", checkpoints=broken_registry)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert chosen.json_lines()[0]["priority"] in ("urgent", "routine")
    listing = json.loads(run_cli("models", "--json", checkpoints=broken_registry).stdout)
    assert trained_model.name in {m["name"] for m in listing["models"]}
