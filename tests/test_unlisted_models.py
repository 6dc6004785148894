"""What the pages say when the model list itself cannot be read, and who is told to act (a messages review): an
unreadable site registry.json hid every model, and every page said "No model is registered yet ... Train one",
so an administrator who did trained for hours into a list still unreadable; clinicians were told to train."""
from __future__ import annotations

from e2e_support import ROOT, quick_checkpoints
from streamlit.testing.v1 import AppTest

APP = str(ROOT / "dashboard" / "app.py")


def _page(path: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page(path).run()
    assert not at.exception
    return at


def _said(at: AppTest) -> str:
    return "\n".join(m.value for kind in ("warning", "info", "error") for m in at.get(kind))


def test_an_unreadable_model_list_is_said_as_such_not_as_no_model(tmp_path, settings_env):
    folder = quick_checkpoints(tmp_path / "checkpoints")
    (folder / "registry.json").write_text("{oops")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    for path in ("views/triage.py", "views/compare.py", "views/retrain.py"):
        said = _said(_page(path))
        assert "The list of models cannot be read, so no model can be used now; no model is lost." in said, path
        assert "No model is registered yet" not in said and "registry.json cannot be read" in said, path


def test_a_clinician_without_models_is_told_to_ask_an_administrator(tmp_path, settings_env):
    settings_env(CXR_MODELS=str(tmp_path / "empty"), CXR_JOBS=str(tmp_path / "jobs"), CXR_LOCAL_ADMIN="off",
                 CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    for path in ("views/triage.py", "views/compare.py"):
        said = _said(_page(path))
        assert "No model is registered yet" in said and "ask an administrator" in said.lower(), path
        assert "Train one on the Retrain page" not in said, path


def test_a_clinician_is_told_that_models_cannot_be_used_not_how_an_administrator_repairs_them(tmp_path,
                                                                                             settings_env):
    """The sidebar showed every user "Model description bad-v1.json is not a valid ModelRecord" and commands such as
    "git checkout -- checkpoints/registry.json" (a messages review); an administrator still sees them."""
    folder = quick_checkpoints(tmp_path / "checkpoints")
    (folder / "pneumonia-bad-v1.json").write_text('{"name": "pneumonia-bad-v1", "task": 7}')
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    admin = [w.value for w in _page("views/triage.py").sidebar.warning]
    assert any("pneumonia-bad-v1.json" in w for w in admin)
    settings_env(CXR_LOCAL_ADMIN="off")
    for path in ("views/triage.py", "views/compare.py"):
        at = _page(path)
        said = "\n".join(w.value for w in [*at.sidebar.warning, *at.warning])
        assert "The model list has 1 note for an administrator, who sees it when signed in; the models offered " \
               "here can be chosen." in said and "pneumonia-bad-v1" not in said, path
