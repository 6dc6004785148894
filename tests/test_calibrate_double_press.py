"""Calibrate pressed again while it runs: Streamlit starts the page again at once (fast reruns) while the first run
goes on calibrating, so both registered a version, 2 s apart (a browser review: pneumonia-cnn5-v4 and -v5). The
second press now waits for the first and shows its version; a press after an error tries again."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

import core.training.calibrate as calibrate_module
from core.errors import CalibrationError
from core.store.registry import list_models
from dashboard.components import calibrate_view
from test_calibrate_site import _retrain_page, _ward

ASKED = ("pneumonia-x-v1", 0.95, None, "")
ENTRY = SimpleNamespace(name="pneumonia-x-v1", record=SimpleNamespace(training=None))
USER = SimpleNamespace(who="local")


class _Page:
    """What _run draws with: one session's state, shared by both presses' threads, and what each showed."""

    def __init__(self) -> None:
        self.session_state: dict = {}
        self.errors: list[str] = []

    @contextmanager
    def spinner(self, text: str):
        yield

    def error(self, text: str, icon: str | None = None) -> None:
        self.errors.append(text)


@pytest.fixture
def page(monkeypatch):
    page, registered, reported = _Page(), [], []
    monkeypatch.setattr(calibrate_view, "st", page)
    monkeypatch.setattr(calibrate_view, "registered_models", lambda: (registered, []))
    monkeypatch.setattr(calibrate_view, "_report", reported.append)
    return SimpleNamespace(page=page, registered=registered, reported=reported)


def _presses(monkeypatch, outcome) -> list[str]:
    """Two presses of one request, the second while the first calibrates; the names calibrate was called with."""
    started, release, calls = threading.Event(), threading.Event(), []

    def slow(name, target, who=None, site_folder=None):
        calls.append(name)
        started.set()
        release.wait(10)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(calibrate_module, "calibrate", slow)
    presses = [threading.Thread(target=calibrate_view._run, args=(ENTRY, ASKED, None, USER)) for _ in range(2)]
    presses[0].start()
    assert started.wait(10)
    presses[1].start()
    time.sleep(1.0)  # the second press is waiting on the first
    release.set()
    for press in presses:
        press.join(10)
    return calls


def test_a_second_press_while_calibrating_shows_the_first_press_version(page, monkeypatch):
    version = SimpleNamespace(name="pneumonia-x-v2")
    page.registered.append(version)
    assert _presses(monkeypatch, version) == ["pneumonia-x-v1"]  # before: called twice, two versions
    assert page.reported == [version, version] and not page.page.errors
    assert page.page.session_state[calibrate_view._DONE] == (ASKED, "pneumonia-x-v2")
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *a, **k: pytest.fail("calibrated again"))
    calibrate_view._run(ENTRY, ASKED, None, USER)  # pressed once more, the version still registered: shown again
    assert page.reported == [version] * 3


def test_a_press_for_another_target_meanwhile_does_not_make_the_first_run_again(page, monkeypatch):
    """A re-read: one pending press per session, replaced by a press for another target, let the first target's
    press run again while its first run went on."""
    version, other = SimpleNamespace(name="pneumonia-x-v2"), SimpleNamespace(name="pneumonia-x-v3")
    page.registered += [version, other]
    quick = ("pneumonia-x-v1", 0.9, None, "")
    started, release, calls = threading.Event(), threading.Event(), []

    def calibrate(name, target, who=None, site_folder=None):
        calls.append(target)
        if target == ASKED[1]:
            started.set()
            release.wait(10)
            return version
        return other

    monkeypatch.setattr(calibrate_module, "calibrate", calibrate)
    first = threading.Thread(target=calibrate_view._run, args=(ENTRY, ASKED, None, USER))
    first.start()
    assert started.wait(10)
    calibrate_view._run(ENTRY, quick, None, USER)  # another target, while the first runs
    again = threading.Thread(target=calibrate_view._run, args=(ENTRY, ASKED, None, USER))
    again.start()
    time.sleep(1.0)
    release.set()
    for press in (first, again):
        press.join(10)
    assert calls == [ASKED[1], 0.9] and page.reported == [other, version, version]


def test_a_press_after_a_refusal_tries_again(page, monkeypatch):
    assert _presses(monkeypatch, CalibrationError("Too few films.")) == ["pneumonia-x-v1"]
    assert page.page.errors == ["The model was not recalibrated. Too few films."] * 2 and not page.reported
    version = SimpleNamespace(name="pneumonia-x-v2")
    page.registered.append(version)
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *a, **k: version)
    calibrate_view._run(ENTRY, ASKED, None, USER)
    assert page.reported == [version]


def test_calibrate_pressed_again_after_the_site_folder_changed_calibrates_again(trained_model, registry, tmp_path,
                                                                                settings_env, films_dir):
    """Found by a review: the page's guard against a double press knew the folder by name only, so pressing again
    after relabelling films (moved between class folders) showed the version chosen on the wrong labels."""
    site, roots = _ward(tmp_path, films_dir, 4)
    settings_env(CXR_MODELS=str(registry), CXR_JOBS=str(tmp_path / "jobs"), CXR_DATA_ROOTS=str(roots))
    at = _retrain_page()
    at.radio(key="calibrate-source").set_value("site folder").run()
    at.selectbox(key="calibrate-site-root").set_value("ward-7").run()
    at.selectbox(key="calibrate-site-folder-ward-7").set_value("ward").run()
    for _ in range(2):  # pressed twice: one version
        next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception and len(list_models(registry)[0]) == 2
    moved = sorted((site / "NORMAL").iterdir())[0]
    moved.rename(site / "PNEUMONIA" / moved.name)  # relabelled
    next(b for b in at.button if b.label == "Calibrate").click().run()
    assert not at.exception and len(list_models(registry)[0]) == 3
    assert not [i.value for i in at.info if "already recalibrated" in i.value]
