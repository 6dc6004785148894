"""Cold start of the triage page: it draws with nothing heavy imported; models come up in the background.

What the page imports at module level must not load torch, torchvision or pytorch_grad_cam (seconds each on
a fresh server); :func:`dashboard.model_loads.warm_up` brings the model up in a thread, once per process and model
version, and then the Grad-CAM library. Timings are measured by bench/cold_start.py, not asserted here.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from e2e_support import ROOT, quick_checkpoints, real_films, wait_for

import dashboard.model_loads
import dashboard.state
from core.errors import CheckpointError
from core.films.read import read_film
from dashboard.components import worklist
from dashboard.model_loads import predictor_for, warm_up
from dashboard.state import registered_models

PAGE = ROOT / "dashboard" / "views" / "triage.py"
HEAVY = ("torch", "torchvision", "pytorch_grad_cam", "sklearn")


@pytest.fixture
def checkpoints(tmp_path, settings_env):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    yield folder
    # each load's thread goes on rehearsing after its test: one still inside torch as the interpreter exits
    # aborts the process ("terminate called without an active exception", exit code 134); loads the cache has
    # dropped too (ModelLoad names its thread)
    for thread in threading.enumerate():
        if thread.name.startswith("load "):
            thread.join(120)


def _page_imports() -> list[str]:
    """Every module the triage page imports, wherever in the page the import stands."""
    modules = set()
    for node in ast.walk(ast.parse(PAGE.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return sorted(modules)


def _run(code: str, tmp_path) -> list[str]:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); its stdout, word by word."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()


# Prints which of the heavy packages are imported, e.g. "loaded:torch,torchvision" (or "loaded:").
PROBE = "print('loaded:' + ','.join(h for h in {heavy} if any(m == h or m.startswith(h + '.') for m in sys.modules)))"


def test_the_page_imports_nothing_heavy(tmp_path):
    imports = _page_imports()
    assert {"dashboard.state", "dashboard.components.triage_view", "dashboard.components.worklist",
            "dashboard.components.model_card"} <= set(imports)
    code = f"import sys, threading\nimport {', '.join(imports)}\n{PROBE.format(heavy=HEAVY)}\n" \
           "print(threading.active_count())"
    assert _run(code, tmp_path) == ["loaded:", "1"]  # and no thread started on import


def test_the_probe_can_tell(tmp_path):
    """The same probe sees torch and the Grad-CAM library once they are imported (so the check above means
    something); and predicting imports torch while the explanation module alone does not."""
    code = f"import sys, core.serving.explain\n{PROBE.format(heavy=HEAVY)}\n" \
           f"import core.serving.predict\n{PROBE.format(heavy=HEAVY)}\n" \
           f"core.serving.explain.load_cam_library()\n{PROBE.format(heavy=HEAVY)}"
    alone, predicting, explaining = _run(code, tmp_path)
    assert alone == "loaded:"
    assert "torch" in predicting.split(":")[1].split(",") and "pytorch_grad_cam" not in predicting
    assert explaining == "loaded:" + ",".join(HEAVY)


def test_predicting_leaves_pydicom_to_the_decoding_workers(tmp_path):
    """DICOM pixels are decoded in worker processes (core.films.decode_pool), so the server's model path does
    not import pydicom; the decode cache still names the installed pydicom in its keys."""
    code = """
        import sys, core.serving.predict, core.store.checkpoints
        from core.films.tensor import cache_namespace
        namespace = cache_namespace()
        print('pydicom' in sys.modules)
        import pydicom
        print(';pydicom=' + pydicom.__version__ + ';' in namespace)
    """
    assert _run(code, tmp_path) == ["False", "True"]


def test_drawing_the_page_imports_nothing_heavy_until_the_model_loads(checkpoints, tmp_path):
    """The whole first draw (upload box, model picker, model card, hint) with the model's load held back."""
    code = f"""
        import sys
        from streamlit.testing.v1 import AppTest
        import dashboard.model_loads as state
        state.ModelLoad._run = lambda self: None  # the background load never finishes
        state.ModelLoad.ready = property(lambda self: True)  # ...and the page does not wait for it
        state.ModelLoad.result = lambda self: None
        at = AppTest.from_file({str(ROOT / "dashboard" / "app.py")!r}, default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        assert at.file_uploader(key="films") is not None and at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"
        assert any("Intended use" in c.value for c in at.sidebar.caption)
        {PROBE.format(heavy=HEAVY)}
    """
    assert _run(code, tmp_path) == ["loaded:"]


def test_warm_up_brings_the_default_model_up_in_the_background(checkpoints, tmp_path):
    """In a fresh process: the default predictor becomes available, then the Grad-CAM library, unasked."""
    code = """
        import sys, time
        from dashboard.model_loads import predictor_for, warm_up
        from dashboard.state import registered_models
        (default, *_), _ = registered_models()
        load = warm_up(default)
        print(default.is_default, default.name, load.wait(240), warm_up(default) is load)
        predictor = predictor_for(default)
        print(predictor is load.result(), predictor.name, 'torch' in sys.modules)
        deadline = time.monotonic() + 240
        while 'pytorch_grad_cam' not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.2)
        print('pytorch_grad_cam' in sys.modules)
        # let the warm-up finish its Grad-CAM rehearsal before the interpreter exits: a daemon thread still inside
        # torch's C++ code at exit aborts the process (SIGABRT), which a slow, loaded machine once hit in CI
        load.thread.join(240)
        print(load.thread.is_alive())
    """
    assert _run(code, tmp_path) == ["True", "pneumonia-cnn5-v1", "True", "True",
                                    "True", "pneumonia-cnn5-v1", "True", "True", "False"]


def test_one_shared_predictor_per_model_version(checkpoints):
    entries, _ = registered_models()
    cnn = next(e for e in entries if e.name == "pneumonia-cnn5-v1")
    load = warm_up(cnn)
    assert load.wait(240) and not load.failed
    predictor = predictor_for(cnn)
    assert warm_up(cnn) is load and predictor_for(cnn) is predictor  # no second load, the same object
    prediction = predictor.predict(read_film(real_films()[-1]))
    assert prediction.model == "pneumonia-cnn5-v1" and abs(sum(prediction.probabilities.values()) - 1) < 1e-4


@pytest.mark.parametrize("film_first", [False, True])
def test_the_warm_up_rehearses_an_explanation_only_when_no_film_came_first(checkpoints, monkeypatch, film_first):
    """The first Grad-CAM of a process is slow, so the warm-up rehearses one on a made-up film; but when a real
    film was explained while the library imported, that was the first, and a rehearsal would only compete
    with drawing its overlay."""
    entry = next(e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1")
    film = read_film(real_films()[-1])
    holder = {}

    def library_then_a_film(between_steps=None):
        while "load" not in holder:  # the load's own thread gets here before the constructor returns
            time.sleep(0.01)
        if film_first:
            holder["load"].result().explain(film, "PNEUMONIA")  # a browser's film, explained meanwhile
        return None

    monkeypatch.setattr(dashboard.model_loads, "load_cam_library", library_then_a_film)
    holder["load"] = dashboard.model_loads.ModelLoad(entry)  # its own load, not the shared cache's
    holder["load"].thread.join(240)
    assert not holder["load"].thread.is_alive() and not holder["load"].failed
    assert holder["load"].result().explanations == 1  # the film's alone, or the rehearsal's alone


def test_a_broken_model_fails_its_load_in_words_and_is_retried_a_while_later(checkpoints, monkeypatch):
    """Retried, but not on every page run: a broken default was read and hashed again on each run of each
    session, taking a loading slot from good models (a review)."""
    (checkpoints / "pneumonia-mlp-v1.pt").write_bytes(b"truncated")
    entry = next(e for e in registered_models()[0] if e.name == "pneumonia-mlp-v1")
    load = warm_up(entry)
    assert load.wait(240) and load.failed
    with pytest.raises(CheckpointError):
        predictor_for(entry)
    assert warm_up(entry) is load  # the next page runs show the same failure
    monkeypatch.setattr(dashboard.model_loads, "RETRY_FAILED_AFTER_S", 0.0)
    assert warm_up(entry) is not load  # and later it is read again (the file may have been put right)


def test_the_page_knows_the_priorities_predict_gives():
    from core.serving.predict import ROUTINE, URGENT

    assert (worklist.URGENT, worklist.ROUTINE) == (URGENT, ROUTINE)


def test_at_most_a_few_model_versions_stay_loaded(checkpoints, monkeypatch):
    monkeypatch.setattr(dashboard.model_loads, "_models", type(dashboard.model_loads._models)())
    monkeypatch.setattr(dashboard.model_loads, "_asked", {})
    monkeypatch.setattr(dashboard.model_loads, "MAX_MODELS", 1)
    monkeypatch.setattr(dashboard.model_loads, "KEPT_WHILE_USED_S", 0.0)  # none counts as in use
    cnn, mlp = sorted(registered_models()[0], key=lambda e: e.name)
    first = warm_up(cnn)
    second = warm_up(mlp)
    assert list(dashboard.model_loads._models.values()) == [first, second]  # loading: not dropped (see below)
    assert first.wait(240) and second.wait(240)
    assert warm_up(mlp) is second and list(dashboard.model_loads._models.values()) == [second]


def test_versions_asked_for_lately_stay_loaded_past_the_usual_number_up_to_a_cap(monkeypatch):
    """Going back and forth among more versions than MAX_MODELS reloaded each of them every time (the shipped
    registry alone has more): versions asked for in the last minutes stay, up to MAX_MODELS_IN_USE."""
    from collections import OrderedDict
    from types import SimpleNamespace

    model_loads = dashboard.model_loads
    monkeypatch.setattr(model_loads, "_models", OrderedDict())
    monkeypatch.setattr(model_loads, "_asked", {}, raising=False)
    monkeypatch.setattr(model_loads, "MAX_MODELS", 1)
    monkeypatch.setattr(model_loads, "MAX_MODELS_IN_USE", 2, raising=False)
    started = []

    def instant(self):  # a load that is done at once (no model is needed here)
        started.append(self.name)
        self._done.set()

    monkeypatch.setattr(model_loads.ModelLoad, "_run", instant)
    a, b, c = (SimpleNamespace(name=n, json_path=f"/nowhere/{n}.json", record=SimpleNamespace(weights_sha256=n * 64),
                               population_missing=False) for n in "abc")
    for entry in (a, b, a, b):
        warm_up(entry).wait(5)
    assert started == ["a", "b"]  # both asked for just now: both kept, though MAX_MODELS is 1
    warm_up(c).wait(5)
    assert started == ["a", "b", "c"] and [load.name for load in model_loads._models.values()] == ["b", "c"]


def test_the_versions_kept_are_counted_in_bytes_of_weights_too(monkeypatch):
    """An ensemble weighs its members: by count alone, 16 site ensembles of 10 ResNet-18s stayed (7 GB)."""
    from collections import OrderedDict
    from types import SimpleNamespace

    model_loads = dashboard.model_loads
    monkeypatch.setattr(model_loads, "_models", OrderedDict())
    monkeypatch.setattr(model_loads, "_asked", {})
    monkeypatch.setattr(model_loads, "MAX_MODEL_BYTES", 1000)
    monkeypatch.setattr(model_loads, "MAX_BYTES_IN_USE", 2000)
    monkeypatch.setattr(model_loads.ModelLoad, "_run", lambda self: self._done.set())
    small, big, bigger = (SimpleNamespace(name=n, json_path=f"/nowhere/{n}.json", record=SimpleNamespace(
        weights_sha256=n * 64, parameters=parameters), population_missing=False)
        for n, parameters in (("small", 100), ("big", 150), ("bigger", 300)))
    kept = lambda: [load.name for load in model_loads._models.values()]  # noqa: E731
    for entry in (small, big):
        warm_up(entry).wait(5)
    assert kept() == ["small", "big"]  # 1,000 bytes of float32 weights: within the budget
    warm_up(bigger).wait(5)
    assert kept() == ["big", "bigger"]  # 2,200: over the cap even for versions in use, so the oldest is dropped
    monkeypatch.setattr(model_loads, "KEPT_WHILE_USED_S", 0.0)  # with none in use, down to the budget (or the
    warm_up(bigger).wait(5)  # one asked for)
    assert kept() == ["bigger"]


def test_make_runs_launcher_warms_the_default_model_before_any_page_is_viewed(checkpoints, tmp_path):
    """`python -m dashboard.serve` (make run): the preload thread brings the default up in this process, the
    same shared load the triage page then finds, with the page's heavier imports after it."""
    code = """
        import sys
        from dashboard import serve
        serve.preload()
        from dashboard.model_loads import warm_up
        from dashboard.state import registered_models
        (default, *_), _ = registered_models()
        load = warm_up(default)
        print(load.ready, not load.failed, load.result().name, 'dashboard.components.triage_view' in sys.modules)
    """
    assert _run(code, tmp_path) == ["True", "True", "pneumonia-cnn5-v1", "True"]


def test_the_cam_library_imports_in_steps_with_a_call_before_each(tmp_path):
    """Warm-up imports pytorch_grad_cam step by step, asking before each whether it may go on; every step is
    a module pytorch_grad_cam really imports (so the steps do not add work), the last the library itself."""
    code = """
        import sys
        import core.serving.explain as explain
        seen = []
        explain.load_cam_library(between_steps=lambda: seen.append(
            [s for s in explain.CAM_IMPORT_STEPS if s in sys.modules]))
        print(len(seen), len(explain.CAM_IMPORT_STEPS), seen[0] == [], seen[-1] == list(explain.CAM_IMPORT_STEPS[:-1]))
        print("pytorch_grad_cam" in sys.modules)
    """
    assert _run(code, tmp_path) == ["7", "7", "True", "True", "True"]
    needed = "import sys, pytorch_grad_cam\nfrom core.serving.explain import CAM_IMPORT_STEPS\n" \
             "print(all(s in sys.modules for s in CAM_IMPORT_STEPS))"
    assert _run(needed, tmp_path) == ["True"]


def test_background_warm_up_waits_while_a_browser_is_waiting():
    """Foreground work holds the warm-up's next step until it ends; with none, the warm-up goes straight on."""
    import threading
    import time

    gate, steps = dashboard.model_loads.Foreground(), []
    gate.wait_until_idle()  # nothing in progress: returns at once
    with gate.working():
        waiter = threading.Thread(target=lambda: (gate.wait_until_idle(), steps.append("step")))
        waiter.start()
        time.sleep(0.3)
        assert steps == [] and waiter.is_alive()
    waiter.join(timeout=5)
    assert steps == ["step"]


def test_switching_among_more_versions_than_are_kept_loads_each_once_and_few_at_a_time(monkeypatch):
    """A clinician switching back and forth among more versions than MAX_MODELS must not start a second load of
    one still loading (each would hold a model's memory), and model files are read MAX_LOADING at a time."""
    import threading
    from collections import OrderedDict
    from types import SimpleNamespace

    from core.store import checkpoints as store

    model_loads = dashboard.model_loads
    release, lock = threading.Event(), threading.Lock()
    reading, most = [0], [0]

    def slow_load(path):  # each load holds its place until released, then fails (no model is needed here)
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        release.wait(30)
        with lock:
            reading[0] -= 1
        raise CheckpointError(f"{path.name} is not a model")

    monkeypatch.setattr(store, "load_checkpoint", slow_load)
    monkeypatch.setattr(model_loads, "_models", OrderedDict())
    started = []
    monkeypatch.setattr(model_loads.ModelLoad, "_run", lambda self, run=model_loads.ModelLoad._run: (
        started.append(self.name), run(self)))
    entries = [SimpleNamespace(name=f"v{i}", json_path=f"/nowhere/v{i}.json",
                               record=SimpleNamespace(weights_sha256=f"{i:064x}"), population_missing=False)
               for i in range(model_loads.MAX_MODELS + 3)]
    for _ in range(3):
        loads = [warm_up(entry) for entry in entries]
    wait_for(lambda: len(started) >= len(entries) and most[0] == model_loads.MAX_LOADING, timeout=30, interval=0.05,
             what="every load to start and the most allowed to read at once")  # not a fixed sleep (a review)
    assert sorted(started) == sorted(e.name for e in entries)  # each version once, though the first ones went past
    assert most[0] == model_loads.MAX_LOADING
    release.set()
    for load in loads:
        load.wait(30)
    assert most[0] == model_loads.MAX_LOADING


def test_a_population_check_fitted_again_on_a_running_server_is_used_from_the_next_run(checkpoints):
    """`fit-population` rewrites a version's JSON and population file, not its weights: the loaded predictor, and
    the results it gave, were kept by the weights' hash alone, so films went on unchecked while the card, read
    afresh, promised the check."""
    import shutil

    from core.store.descriptions import update_record
    from core.store.records import read_model_record

    (entry,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    before = predictor_for(entry)
    shipped = ROOT / "checkpoints" / "pneumonia-cnn5-v1"  # the shipped cnn5's check: fitted on other films
    shutil.copy(shipped.with_suffix(".population.pt"), checkpoints / "pneumonia-cnn5-v1.population.pt")
    update_record(entry.json_path, lambda record: {
        "population_check": read_model_record(shipped.with_suffix(".json")).population_check})
    (entry,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    after = predictor_for(entry)
    refitted = read_model_record(shipped.with_suffix(".json")).population_check.sha256
    assert before.population.check.sha256 != refitted and after.population.check.sha256 == refitted
    assert dashboard.model_loads.model_key(after) != dashboard.model_loads.model_key(before)


def test_an_operating_point_stored_again_with_the_same_weights_is_served_from_the_next_run(checkpoints):
    """Found by a review: a version's JSON saved again with the same weights and another threshold (a name
    reused after a delete, or an edit) kept being triaged at the old threshold while its card showed the new."""
    from core.store.descriptions import update_record

    (entry,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    before = predictor_for(entry)
    moved = round(before.loaded.operating_point.threshold / 2, 6)
    update_record(entry.json_path, lambda record: {
        "operating_point": record.operating_point.model_copy(update={"threshold": moved})})
    (entry,) = [e for e in registered_models()[0] if e.name == "pneumonia-cnn5-v1"]
    after = predictor_for(entry)
    assert after.loaded.operating_point.threshold == moved != before.loaded.operating_point.threshold
    assert dashboard.model_loads.model_key(after) != dashboard.model_loads.model_key(before)
