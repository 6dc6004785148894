"""Uploads past the server's limits, in a real browser against ``python -m dashboard.serve`` (what ``make run`` starts).

Streamlit holds uploads in the server's memory before any page runs; the launcher bounds that store
(dashboard.upload_store). Films refused there must never leave a worklist that looks complete.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from tests.e2e_support import CHROMIUM_ARGS, StreamlitServer, chromium, quick_checkpoints, real_films

WAIT_MS = 90_000


def _upload_six_films(tmp_path, limits: dict, worklist: bool, alerts: int = 1) -> "tuple[list[str], str, int]":
    """Six real ~250 KB films dropped at once on a fresh ``make run`` server with these ``CXR_*`` limits -> (the
    page's error alerts, its text, the films its worklist counts once it is drawn when ``worklist``)."""
    from playwright.sync_api import expect, sync_playwright

    browser_path = chromium()
    env = {**os.environ, "CXR_MODELS": str(quick_checkpoints(tmp_path / "models")), "CXR_JOBS": str(tmp_path / "jobs"),
           "CXR_AUDIT_LOG": str(tmp_path / "audit.jsonl"), **limits}
    normals = [film for film in real_films() if film.parent.name == "NORMAL"][:6]
    with StreamlitServer(env, tmp_path / "streamlit.log", serve=True) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(browser_path), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        page.goto(server.url)
        expect(page.get_by_role("heading", name="Triage")).to_be_visible()
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(film) for film in normals])
        expect(page.get_by_test_id("stAlertContentError").first).to_be_visible()
        if alerts > 1:  # drawn one after the other: read them once all are there
            expect(page.get_by_test_id("stAlertContentError")).to_have_count(alerts)
        counted = 0
        if worklist:
            expect(page.get_by_test_id("stDataFrame")).to_be_visible()
            counted = sum(int(page.get_by_test_id("stMetric").filter(has_text=title).get_by_test_id("stMetricValue")
                              .inner_text()) for title in ("Urgent", "Routine", "Not triaged", "Unreadable"))
        expect(page.get_by_test_id("stException")).to_have_count(0)
        alerts = page.get_by_test_id("stAlertContentError").all_inner_texts()
        text = page.inner_text("body")
        browser.close()
    return alerts, text, counted


@pytest.mark.slow
def test_a_session_past_twice_a_batch_is_refused_more_uploads_and_its_batch_refused(tmp_path):
    alerts, text, _ = _upload_six_films(tmp_path, {"CXR_BATCH_MAX_FILMS": "1"}, worklist=False, alerts=2)
    # The server kept two of the six (twice the batch of one) and refused four; the page names them and refuses
    # the batch.
    # the six chosen, not the two received (a browser review: 121 chosen were called 100)
    assert len(alerts) == 2 and "This batch is too large: 6 films (at most 1)." in alerts[1]
    refused = re.search(r"Not received, so not on any worklist: (.*)\. More was chosen on this page than the "
                        r"server takes from one page at once \(2 films or ", alerts[0])
    assert refused and len(refused.group(1).split(", ")) == 4, alerts
    assert "Worklist" not in text
    assert (tmp_path / "streamlit.log").read_text().count("an upload was refused: its session holds 2 films") == 4


@pytest.mark.slow
def test_uploads_past_the_servers_room_are_named_above_a_worklist_of_the_others(tmp_path):
    alerts, _, counted = _upload_six_films(tmp_path, {"CXR_UPLOADS_MAX_MB": "1"}, worklist=True)
    # Any four of these six films fit in 1 MB and no five do, whatever order they arrive in.
    refused = re.search(r"Not received, so not on any worklist: (.*)\. The server is holding", alerts[0])
    assert refused and len(refused.group(1).split(", ")) == 2, alerts
    assert counted == 4  # the worklist holds the four films received


@pytest.mark.slow
def test_films_of_a_page_left_no_longer_count_against_the_sessions_uploads(tmp_path):
    # A session holds at most twice a batch (two films here). Streamlit kept a left page's uploads until the
    # session ended, so the third of three visits that each triaged one film was refused, with an empty box.
    from playwright.sync_api import expect, sync_playwright

    env = {**os.environ, "CXR_MODELS": str(quick_checkpoints(tmp_path / "models")), "CXR_JOBS": str(tmp_path / "jobs"),
           "CXR_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "CXR_BATCH_MAX_FILMS": "1"}
    films = [film for film in real_films() if film.parent.name == "NORMAL"][:3]
    with StreamlitServer(env, tmp_path / "streamlit.log", serve=True) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        page.goto(server.url)
        for visit, film in enumerate(films):
            if visit:  # to another page and back
                page.get_by_test_id("stSidebarNav").get_by_text("Compare models").click()
                expect(page.get_by_role("heading", name="Compare models")).to_be_visible()
                page.get_by_test_id("stSidebarNav").get_by_text("Triage").click()
            expect(page.get_by_role("heading", name="Triage")).to_be_visible()
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(film)])
            expect(page.get_by_test_id("stDataFrame").filter(has_text=film.stem)).to_be_visible()
            expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        browser.close()
    assert "an upload was refused" not in (tmp_path / "streamlit.log").read_text()


@pytest.mark.slow
def test_a_closed_tab_s_films_leave_the_server_once_it_can_no_longer_reconnect(tmp_path):
    """Streamlit 1.67 drops a disconnected session after its time to reconnect without shutting it down, so a tab
    closed with films in its box held them for the life of the server, and the next user's films were refused as
    over the server's room (a review); dashboard.session_store shuts such a session down."""
    from playwright.sync_api import expect, sync_playwright

    env = {**os.environ, "CXR_MODELS": str(quick_checkpoints(tmp_path / "models")), "CXR_JOBS": str(tmp_path / "jobs"),
           "CXR_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "CXR_UPLOADS_MAX_MB": "1",
           "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "2"}
    normals = [film for film in real_films() if film.parent.name == "NORMAL"][:6]
    with StreamlitServer(env, tmp_path / "streamlit.log", serve=True) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium()), headless=True, args=CHROMIUM_ARGS)
        expect.set_options(timeout=WAIT_MS)
        for tab, films in enumerate((normals[:3], normals[3:])):  # about 0.7 MB each: the two do not fit in 1 MB
            if tab:
                time.sleep(5)  # past the closed tab's 2 s to reconnect
            context = browser.new_context(viewport={"width": 1440, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(server.url)
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(film) for film in films])
            for film in films:
                expect(page.get_by_test_id("stDataFrame").filter(has_text=film.stem)).to_be_visible()
            expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
            context.close()  # the tab is closed with its films in the box
        browser.close()
    assert "an upload was refused" not in (tmp_path / "streamlit.log").read_text()
