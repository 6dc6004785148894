"""The Triage page's model box follows the task's default until its user chooses a model, and marks a version below
the promotion floor.

A session opened before another version was made the default went on triaging with the old one, which the box no
longer labelled as the default (found by a review)."""
from __future__ import annotations

import pytest
from e2e_support import ROOT, quick_checkpoints
from streamlit.testing.v1 import AppTest

from core.store.registry import set_default

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def checkpoints(tmp_path, settings_env):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    return folder


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception and at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"  # the template's default
    return at


def test_a_session_that_never_chose_follows_a_new_default_and_is_told(checkpoints):
    at = _app()
    set_default("pneumonia-mlp-v1", checkpoints)  # another administrator, meanwhile
    at.run()
    assert not at.exception and at.sidebar.selectbox[0].value == "pneumonia-mlp-v1"
    assert [i.value for i in at.sidebar.info if "default" in i.value] == [
        "pneumonia-mlp-v1 has been made this task's default since this page was opened (before: pneumonia-cnn5-v1), "
        "so films are now triaged with it. Choose another model above if you prefer."]
    at.sidebar.selectbox[0].set_value("pneumonia-cnn5-v1").run()  # a choice of its user's: kept, and no more notice
    set_default("pneumonia-cnn5-v1", checkpoints)
    set_default("pneumonia-mlp-v1", checkpoints)
    at.run()
    assert at.sidebar.selectbox[0].value == "pneumonia-cnn5-v1"
    assert not [i.value for i in at.sidebar.info if "default" in i.value]


def test_a_model_its_user_chose_stays_when_the_default_changes(checkpoints):
    at = _app()
    at.sidebar.selectbox[0].set_value("pneumonia-mlp-v1").run()
    set_default("pneumonia-mlp-v1", checkpoints)
    set_default("pneumonia-cnn5-v1", checkpoints)
    at.run()
    assert not at.exception and at.sidebar.selectbox[0].value == "pneumonia-mlp-v1"


def test_a_new_default_made_while_its_user_was_on_another_page_is_told_on_return(checkpoints):
    """Found by a concurrency review: Streamlit forgets the model box's value on a page switch, so a session back
    from Compare took the new default without a word and triaged its kept batch again with it."""
    at = _app()
    at.switch_page("views/compare.py").run()
    set_default("pneumonia-mlp-v1", checkpoints)  # another administrator, meanwhile
    at.switch_page("views/triage.py").run()
    assert not at.exception and at.sidebar.selectbox[0].value == "pneumonia-mlp-v1"
    assert [i.value for i in at.sidebar.info if "default" in i.value] == [
        "pneumonia-mlp-v1 has been made this task's default since this page was opened (before: pneumonia-cnn5-v1), "
        "so films are now triaged with it. Choose another model above if you prefer."]


def test_a_version_below_the_floor_is_marked_and_warned_of_when_chosen(checkpoints, settings_env):
    """A browser review: a one-epoch version at AUC 0.000 on 4 validation films was offered as a plain option, and
    triaged every film urgent; it could never have been made the default."""
    settings_env(CXR_PROMOTION_MIN_FILMS="5000")
    at = _app()
    model = at.sidebar.selectbox[0]
    assert model.options == ["pneumonia-cnn5-v1  (default)", "pneumonia-mlp-v1  (below the promotion floor)"]
    assert not [w for w in at.sidebar.warning if "promotion floor" in w.value]  # the default is never marked
    model.set_value("pneumonia-mlp-v1").run()
    assert not at.exception
    (warning,) = [w.value for w in at.sidebar.warning if "promotion floor" in w.value]
    assert warning.startswith("pneumonia-mlp-v1 is below the promotion floor: its validation holds only ")
    assert "a default needs at least 5000 of each class" in warning
    assert warning.endswith("Its priorities are not validated for triage: use it to compare, not to decide, or "
                            "choose the default.")
