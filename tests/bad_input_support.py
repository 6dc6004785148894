"""What test_bad_files.py and test_broken_models.py share: a private copy of the session model's registry for
the app, and driving the triage page with AppTest."""
from __future__ import annotations

from pathlib import Path

import corpus
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "dashboard" / "app.py")


def private_registry(trained_model, tmp_path: Path, settings_env) -> Path:
    """A copy of the session model's checkpoints folder, made the app's site models (CXR_MODELS) with its own jobs."""
    folder = corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    return folder


def open_page() -> AppTest:
    """The app's first page (triage), drawn once; it must not raise."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> None:
    """Hand ``files`` (name, bytes) to the page's uploader and redraw it."""
    at.file_uploader(key="films").set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception, at.exception
