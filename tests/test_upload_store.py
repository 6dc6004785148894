"""The server's upload store (dashboard.upload_store): bounded per browser session and for all sessions together.

A browser drives the same store through a real server in tests/test_e2e_uploads.py.
"""
from __future__ import annotations

import pytest
from starlette.exceptions import HTTPException
from streamlit.runtime.uploaded_file_manager import UploadedFileRec

from core.serving.batch_limits import MEGABYTE, server_upload_limit, session_upload_limits
from dashboard.upload_store import REFUSED_NAMES_KEPT, SERVER_FULL, SESSION_FULL, BoundedUploads, Refusals


def _film(file_id: str, size: int, name: str | None = None) -> UploadedFileRec:
    return UploadedFileRec(file_id=file_id, name=name or f"{file_id}.png", type="image/png", data=b"x" * size)


def _store(settings_env, **limits) -> BoundedUploads:
    settings_env(**limits)
    return BoundedUploads("/_stcore/upload_file", max_file_mb=1)


def _held(store: BoundedUploads, session: str) -> list[str]:
    return sorted(rec.file_id for rec in store.file_storage.get(session, {}).values())


def test_limits_leave_room_above_a_batch_so_a_refusal_always_comes_with_the_batch_refused(settings_env):
    settings_env(CXR_BATCH_MAX_FILMS="3", CXR_BATCH_MAX_MB="2", CXR_UPLOADS_MAX_MB="7")
    assert session_upload_limits(max_file_mb=1) == (6, 5 * MEGABYTE)  # twice the batch, plus one largest file
    assert server_upload_limit() == 7 * MEGABYTE


def test_a_session_holding_more_than_a_batch_may_is_refused_more_films(settings_env):
    store = _store(settings_env, CXR_BATCH_MAX_FILMS="2")
    for i in range(4):
        store.add_file("a", _film(f"f{i}", 10))
    with pytest.raises(HTTPException) as refused:
        store.add_file("a", _film("f4", 10))
    assert (refused.value.status_code, refused.value.detail) == (413, SESSION_FULL)
    assert _held(store, "a") == ["f0", "f1", "f2", "f3"]
    store.add_file("a", _film("f3", 20))  # the same upload sent again replaces itself: not one more film
    store.add_file("b", _film("g0", 10))  # another session has its own allowance
    store.remove_file("a", "f0")
    store.add_file("a", _film("f4", 10))  # a film taken out of the box makes room
    assert _held(store, "a") == ["f1", "f2", "f3", "f4"]
    assert store.take_refused("a").named == [("session", "f4.png")]  # named on its page, above the batch's refusal


def test_a_session_holding_more_megabytes_than_a_batch_may_is_refused(settings_env):
    store = _store(settings_env, CXR_BATCH_MAX_MB="1")  # at most 2 x 1 + 1 MB held
    store.add_file("a", _film("big", 2 * MEGABYTE))
    store.add_file("a", _film("small", MEGABYTE // 2))
    with pytest.raises(HTTPException) as refused:
        store.add_file("a", _film("more", MEGABYTE // 2 + 1))
    assert refused.value.status_code == 413
    store.add_file("a", _film("big", MEGABYTE))  # replacing a file counts the new size, not both
    store.add_file("a", _film("more", MEGABYTE // 2 + 1))
    assert _held(store, "a") == ["big", "more", "small"]


def test_past_the_servers_limit_uploads_are_refused_and_named_to_their_own_page_once(settings_env):
    store = _store(settings_env, CXR_UPLOADS_MAX_MB="1")
    store.add_file("a", _film("a0", 600_000))
    store.add_file("b", _film("b0", 400_000))
    with pytest.raises(HTTPException) as refused:
        store.add_file("b", _film("b1", 100_000, name="chest 2.png"))
    assert (refused.value.status_code, refused.value.detail) == (503, SERVER_FULL)
    with pytest.raises(HTTPException):
        store.add_file("b", _film("b2", 100_000, name="chest 3.png"))
    assert store.take_refused("a") == ([], {})
    assert store.take_refused("b") == ([("server", "chest 2.png"), ("server", "chest 3.png")], {})
    assert store.take_refused("b") == ([], {})  # once
    store.add_file("b", _film("b1", 40_000))  # what is left of the server's room is still usable
    store.remove_session_files("a")  # a session that ends frees its room for the others
    store.add_file("b", _film("b2", 500_000))
    assert _held(store, "b") == ["b0", "b1", "b2"] and _held(store, "a") == []


def test_a_session_that_ends_forgets_its_refusals(settings_env):
    store = _store(settings_env, CXR_UPLOADS_MAX_MB="1")
    with pytest.raises(HTTPException):
        store.add_file("a", _film("a0", MEGABYTE + 1))
    store.remove_session_files("a")
    assert store.take_refused("a") == ([], {})


def test_refusals_past_the_names_kept_are_counted_not_named_and_long_names_are_cut(settings_env):
    """Found by a resource review: a client refused again and again under new names grew the list without end."""
    store = _store(settings_env, CXR_UPLOADS_MAX_MB="1")
    for k in range(REFUSED_NAMES_KEPT + 5):
        with pytest.raises(HTTPException):
            store.add_file("a", _film(f"a{k}", MEGABYTE + 1, name=f"{k}{'x' * 4000}.png"))
    named, more = store.take_refused("a")
    assert (len(named), more) == (REFUSED_NAMES_KEPT, {"server": 5})
    assert named[0][1].startswith("0xx") and named[0][1].endswith("xx.png") and len(named[0][1]) <= 160


def test_make_runs_launcher_starts_the_server_with_the_bounded_store(monkeypatch):
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.web import cli
    from streamlit.web.server import server

    from dashboard import serve

    monkeypatch.setattr(server, "MemoryUploadedFileManager", MemoryUploadedFileManager)
    monkeypatch.setattr(serve, "preload", lambda: None)  # no model is needed to start this server
    monkeypatch.setattr(serve.sys, "argv", list(serve.sys.argv))
    started_with = []
    monkeypatch.setattr(cli, "main", lambda: started_with.append(server.MemoryUploadedFileManager) or 0)
    assert serve.main(["--server.port", "0"]) == 0
    assert started_with == [BoundedUploads]


def _page_showing_refusals():
    import streamlit as st

    from dashboard.upload_store import refused_uploads

    refused = refused_uploads(st.session_state.get("box", []))
    st.write(repr(refused.named) + "".join(f" and {n} more" for n in refused.more.values()))


def _shown_at_each_run(monkeypatch, why: str, runs) -> list[str]:
    """Run the page once per (box, films refused since the last run) with those refusals arriving from the
    store; what it named each time, as "[(name), ...]"."""
    from streamlit.testing.v1 import AppTest

    from dashboard import upload_store

    arriving: list[Refusals] = []
    monkeypatch.setattr(upload_store, "refused_here", lambda: arriving.pop(0) if arriving else Refusals([], {}))
    page = AppTest.from_function(_page_showing_refusals)
    shown = []
    for box, refused in runs:
        arriving.append(Refusals([(why, name) for name in refused], {}))
        page.session_state["box"] = box
        page.run()
        assert not page.exception
        shown.append(page.markdown[0].value.replace(f"('{why}', ", "(").replace("'", ""))
    return shown


def test_a_page_names_refused_films_until_its_upload_box_changes(monkeypatch):
    shown = _shown_at_each_run(monkeypatch, "server", ((["a"], ["b"]), (["a"], []), (["a", "c"], ["d"]),
                                                        (["a", "c"], ["e"]), (["a", "b", "c"], []),
                                                        (["a", "b", "c"], [])))
    # Kept while the box is unchanged; a refusal after a change replaces the old ones; re-sent films clear them.
    assert shown == ["[(b)]", "[(b)]", "[(d)]", "[(d), (e)]", "[]", "[]"]


def test_films_refused_before_the_box_s_new_value_arrives_are_named_with_it(monkeypatch):
    """Seen in CI: a run that started before a drop took its refusals while the box was still empty, and the run
    that received the drop's accepted films dropped them as belonging to another box."""
    shown = _shown_at_each_run(monkeypatch, "session", (([], ["c", "d"]), (["a", "b"], []), (["a", "b"], []),
                                                         (["a"], []), ([], ["e"]), ([], [])))
    # Kept when the drop's films arrive, and while the box holds them; gone at its next change. With nothing
    # received at all (every film of a drop refused), the refusals stay on the empty box.
    assert shown == ["[(c), (d)]", "[(c), (d)]", "[(c), (d)]", "[]", "[(e)]", "[(e)]"]


def test_a_page_refused_again_and_again_names_at_most_the_names_kept(monkeypatch):
    """Found by a resource review: a box left as it was kept every refusal's name for the session's life."""
    runs = [(["a"], [f"r{run}-{k}" for k in range(60)]) for run in range(3)]
    shown = _shown_at_each_run(monkeypatch, "session", runs)
    assert shown[1].count("(r") == REFUSED_NAMES_KEPT and shown[2].endswith(" and 80 more")


def test_refused_films_are_named_once_per_reason_as_plain_text():
    from dashboard.components.reports import escape_markdown
    from dashboard.components.upload_messages import refused_warnings

    messages = refused_warnings(Refusals([("server", "**chest**.png"), ("session", "c.png"), ("server", "d.png")], {}))
    assert len(messages) == 2
    assert messages[0].startswith("Not received, so not on any worklist: c.png. More was chosen on this page")
    assert f"{escape_markdown('**chest**.png')}, d.png. The server is holding" in messages[1]
    assert "**chest**" not in messages[1] and refused_warnings(Refusals([], {})) == []
    assert refused_warnings(Refusals([("server", "d.png")], {"server": 3, "session": 1})) == [  # each its reason's
        "Not received, so not on any worklist: 1 film (not named here or in the downloaded worklist). More was "
        "chosen on this page than the server takes from one page at once (100 films or 700 MB), so it stopped "
        "receiving them. Remove films from the upload box and triage them in batches of at most 50.",
        "Not received, so not on any worklist: d.png and 3 more films (not named here or in the downloaded "
        "worklist). The server is holding as many uploaded films as it may for all its users at once. Remove these "
        "from the upload box and upload them again in a few minutes."]


def test_copies_of_one_film_are_named_in_one_sentence_and_counted_past_five():
    """Found in a browser audit: 50 copies of one file gave 49 sentences in one warning."""
    from dashboard.components.upload_messages import repeated_warning

    copies = [(f"n{k}.png", "n1.png") for k in range(2, 51)] + [("b (2).png", "b.png")]
    said = repeated_warning(copies)
    assert said.startswith("n2.png, n3.png, n4.png, n5.png, n6.png and 44 more are the same file as n1.png; "
                           "b (2).png is the same file as b.png. Each upload")
