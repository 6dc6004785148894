"""The caps on model versions kept in memory (dashboard.model_loads) hold while versions are still loading, found
by a security review: a clinician picking one version after another started loads the caps could not drop, and
nothing trimmed them once they finished (12 versions of 1 GB kept against caps of 1 and 2 GB)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from types import SimpleNamespace

import dashboard.model_loads as model_loads
from dashboard.model_loads import warm_up


def test_versions_loaded_after_being_asked_for_in_a_row_are_trimmed_to_the_caps_as_they_finish(monkeypatch):
    monkeypatch.setattr(model_loads, "_models", OrderedDict())
    monkeypatch.setattr(model_loads, "_asked", {})
    monkeypatch.setattr(model_loads, "MAX_MODELS", 1)
    monkeypatch.setattr(model_loads, "MAX_MODELS_IN_USE", 2)
    gate = threading.Event()

    def slow(self):  # every load still running when the next version is asked for
        gate.wait(10)
        self._done.set()

    monkeypatch.setattr(model_loads.ModelLoad, "_run", slow)
    loads = [warm_up(SimpleNamespace(name=n, json_path=f"/nowhere/{n}.json", population_missing=False,
                                     record=SimpleNamespace(weights_sha256=n * 64))) for n in "abcdef"]
    assert len(model_loads._models) == 6  # loading: none can be dropped yet
    gate.set()
    for load in loads:
        load.thread.join(10)
    kept = [load.name for load in model_loads._models.values()]
    assert len(kept) == model_loads.MAX_MODELS_IN_USE and kept[-1] == "f"  # within the cap, the last asked for kept
