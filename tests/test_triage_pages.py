"""The Triage page's film cards, six to a page: a new batch opens on its first page (a review: the page number of
the last batch carried over, so a new batch opened on page 3 with its urgent cards out of sight)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import corpus
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent


def _batch(names: list[Path]) -> list[tuple[str, bytes, str]]:
    return [(path.name, path.read_bytes(), "image/jpeg") for path in names]


def test_a_new_batch_opens_on_its_first_page_and_the_same_batch_keeps_its_page(kermany_train, trained_model,
                                                                                tmp_path, settings_env):
    folder = corpus.copy_registry(trained_model.directory, tmp_path / "checkpoints")
    settings_env(CXR_MODELS=str(folder), CXR_JOBS=str(tmp_path / "jobs"))
    films = sorted((kermany_train / "NORMAL").glob("*.jpeg"))[:14]
    first, second = _batch(films[:7]), _batch(films[7:])
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=240)
    at.run()
    at.file_uploader(key="films").set_value(first)
    at.run()
    assert not at.exception, at.exception
    (pages,) = at.get("pagination")
    assert pages.num_pages == 2 and pages.value == 1
    # each card names its file's content fingerprint, as the worklist and its CSV do
    ids = {f"Film ID {hashlib.sha256(data).hexdigest()[:8]}" for _, data, _ in first}
    shown = {c.value for c in at.caption if c.value.startswith("Film ID ")}
    assert len(shown) == 6 and shown <= ids and set(at.dataframe[0].value["Film ID"]) == {i[8:] for i in ids}
    pages.set_value(2)
    at.run()
    assert at.get("pagination")[0].value == 2
    at.file_uploader(key="films").set_value(second)
    at.run()
    assert not at.exception, at.exception
    assert at.get("pagination")[0].value == 1  # the new batch's urgent cards are on its first page
    at.file_uploader(key="films").set_value(first)
    at.run()
    assert at.get("pagination")[0].value == 2  # back to the first batch: where its reader left it
