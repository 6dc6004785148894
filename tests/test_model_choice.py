"""The Triage page's model box: a version below the promotion floor is marked, and said so when chosen."""
from __future__ import annotations

from e2e_support import ROOT, quick_checkpoints
from streamlit.testing.v1 import AppTest

APP = str(ROOT / "dashboard" / "app.py")


def test_a_version_below_the_floor_is_marked_and_warned_of_when_chosen(tmp_path, settings_env):
    """A browser review: a one-epoch version at AUC 0.000 on 4 validation films was offered as a plain option, and
    triaged every film urgent; it could never have been made the default."""
    folder = quick_checkpoints(tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_PROMOTION_MIN_FILMS="5000")
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
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
