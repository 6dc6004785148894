"""The pages as a session from elsewhere sees them (AppTest): administration offered only after sign-in.

AppTest has no browser connection, so the request facts come from the one injectable place,
``dashboard.components.access.request_facts`` (conftest makes every AppTest session local by default).
"""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import streamlit as st
from e2e_support import ROOT, TRAIN_DIR, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

from core import clock
from core.access.passphrase import hash_passphrase
from core.access.policy import AdminGrant, RequestFacts
from core.access.throttle import SignInThrottle
from core.admin.audit import read_actions
from core.jobs.jobs import SUCCEEDED, write_status
from core.store.registry import list_models
from dashboard.components import access

APP = str(ROOT / "dashboard" / "app.py")
PASSPHRASE = "a long admin passphrase for tests"
HASH = hash_passphrase(PASSPHRASE)
JOB = "20260102-000000-beef"
ADMIN_LABELS = ("Start training", "Cancel training", "Make pneumonia-mlp-v1 the default", "Evaluate", "Calibrate")


@pytest.fixture
def places(tmp_path, settings_env):
    """Two quick models (the MLP not the default), a finished job that registered the MLP, a private audit log."""
    checkpoints = quick_checkpoints(tmp_path / "checkpoints")
    jobs = tmp_path / "jobs"
    folder = jobs / JOB
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({
        "job_id": JOB, "data_dir": str(require(TRAIN_DIR, "the Kermany train split")),
        "config": {"arch": "mlp", "epochs": 1, "image_size": 64, "augment": True, "max_films": 160}}))
    write_status(folder, SUCCEEDED, model="pneumonia-mlp-v1", message="Registered pneumonia-mlp-v1 as a new version.")
    settings_env(CXR_MODELS=str(checkpoints), CXR_JOBS=str(jobs), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
                 CXR_PROMOTION_MIN_FILMS="1", CXR_PROMOTION_MIN_SENSITIVITY="0.5")
    access._THROTTLE = SignInThrottle()  # one throttle per server process: each test starts with none counted
    return checkpoints


def from_elsewhere(monkeypatch, address: str = "192.0.2.2", **headers: str) -> None:
    facts = RequestFacts.of(address, {"Host": "triage.hospital.example", **headers})
    monkeypatch.setattr(access, "request_facts", lambda: facts)


COMPLETE_AUTH = {"redirect_uri": "https://t.example/oauth2callback", "cookie_secret": "c" * 40, "client_id": "i",
                 "client_secret": "s", "server_metadata_url": "https://idp.example/.well-known/openid-configuration"}


def with_provider(monkeypatch, auth: dict | None = COMPLETE_AUTH) -> None:
    """A [auth] section in secrets.toml (AppTest has none), with what st.login needs installed."""
    monkeypatch.setattr(access, "_auth_section", lambda: auth)
    monkeypatch.setattr(access, "_authlib_installed", lambda: True)


def page(name: str, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    if user is not None:
        at.user = user
    at.switch_page(f"views/{name}.py")
    at.run()
    assert not at.exception
    return at


def offered(at: AppTest) -> set[str]:
    """Labels of every button and form button on the page (none is drawn disabled for the missing role)."""
    return {b.label for b in at.button} | {b.label for b in at.get("form_submit_button")}


def text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def sign_in(at: AppTest, passphrase: str) -> AppTest:
    at.text_input(key="admin-passphrase").set_value(passphrase)
    next(b for b in at.get("form_submit_button") if b.label == "Sign in").click()
    at.run()
    assert not at.exception
    return at


def test_a_session_from_elsewhere_without_a_credential_is_offered_no_administration(places, monkeypatch):
    from_elsewhere(monkeypatch)
    retrain = page("retrain")
    assert not offered(retrain) & set(ADMIN_LABELS)
    assert not retrain.selectbox and not retrain.number_input  # no form, no folder picker
    assert "Starting, cancelling and promoting training jobs is for administrators" in retrain.info[0].value
    assert "CXR_ADMIN_PASSPHRASE_HASH" in retrain.info[0].value
    assert f"(http://localhost:{st.get_option('server.port')})" in retrain.info[0].value  # the port (a browser review)
    assert "Registered pneumonia-mlp-v1" in text(retrain) and "Job " + JOB in text(retrain)  # progress: read-only
    assert str(TRAIN_DIR) not in text(retrain) and "/" not in " ".join(c.value for c in retrain.caption[1:2])
    assert [e.label for e in retrain.expander] == ["Administrator sign-in"]  # no log, no audit trail
    assert not retrain.text_input  # nothing to sign in with
    compare = page("compare")
    assert not compare.segmented_control and not offered(compare) & set(ADMIN_LABELS)
    assert "Evaluating the models on a server folder is for administrators" in text(compare)
    assert [t.value for t in compare.title] == ["Compare models"] and compare.dataframe  # stored reports shown


@pytest.mark.parametrize("headers", [{"X-Forwarded-For": "192.0.2.9"}, {"Forwarded": "for=192.0.2.9"},
                                     {"X-Real-IP": "192.0.2.9"}])
def test_a_proxy_on_this_machine_is_not_local(places, monkeypatch, headers):
    from_elsewhere(monkeypatch, "127.0.0.1", **headers)
    assert not offered(page("retrain")) & set(ADMIN_LABELS)


def test_a_local_session_administers_and_sees_the_audit_log(places):
    at = page("retrain")
    assert {"Start training", "Make pneumonia-mlp-v1 the default"} <= offered(at)
    assert any(e.label == "Audit log: administrative actions" for e in at.expander)
    assert "Administering from the server itself" in at.sidebar.caption[0].value
    next(b for b in at.button if b.label == "Make pneumonia-mlp-v1 the default").click()
    at.run()
    assert not at.exception
    assert next(e for e in list_models(places)[0] if e.is_default).name == "pneumonia-mlp-v1"
    last = read_actions(limit=1)[0]
    assert (last.action, last.who, last.model) == ("default.change", "local", "pneumonia-mlp-v1")


@pytest.mark.parametrize("switch, why", [("off", "(CXR_LOCAL_ADMIN=off)"),
                                         (None, "(while an admin sign-in works here; CXR_LOCAL_ADMIN=on brings it")])
def test_local_administration_can_be_switched_off_and_is_off_once_a_sign_in_works(places, settings_env, switch,
                                                                                  why):
    """Off by default once a sign-in works here (found by a review): the server is then served to others, and
    behind a forwarder that adds no proxy header a remote script's Host and Origin pass for a local browser's."""
    settings_env(CXR_ADMIN_PASSPHRASE_HASH=HASH, **({"CXR_LOCAL_ADMIN": switch} if switch else {}))
    at = page("retrain")
    assert not offered(at) & set(ADMIN_LABELS)
    assert f"Local administration is off on this server {why}" in at.info[0].value
    assert at.text_input(key="admin-passphrase")  # and the way in is offered


def test_admin_accounts_without_a_working_identity_provider_leave_local_administration_on(places, settings_env):
    """Found by a review of the day's change: the default was read from the raw settings, so admin accounts listed
    beside an incomplete secrets file (or a passphrase of blanks) left nobody able to administer."""
    settings_env(CXR_ADMIN_ACCOUNTS="ana@hospital.example", CXR_ADMIN_PASSPHRASE_HASH="  ")
    assert {"Start training", "Make pneumonia-mlp-v1 the default"} <= offered(page("retrain"))
    settings_env(CXR_ADMIN_PASSPHRASE_HASH="my-secret-passphrase")  # the passphrase pasted in place of its hash
    assert {"Start training", "Make pneumonia-mlp-v1 the default"} <= offered(page("retrain"))


def test_local_administration_beside_a_sign_in_when_switched_on(places, settings_env):
    settings_env(CXR_LOCAL_ADMIN="on", CXR_ADMIN_PASSPHRASE_HASH=HASH)
    assert {"Start training", "Make pneumonia-mlp-v1 the default"} <= offered(page("retrain"))


def test_passphrase_sign_in_administers_until_sign_out(places, monkeypatch, settings_env):
    settings_env(CXR_ADMIN_PASSPHRASE_HASH=HASH, CXR_ADMIN_SESSION_MINUTES="20")
    from_elsewhere(monkeypatch, "192.0.2.20")
    at = page("retrain")
    assert "An administrator signs in from the sidebar" in at.info[0].value
    sign_in(at, "not the passphrase")
    assert "That passphrase is not right" in at.sidebar.error[0].value and not offered(at) & set(ADMIN_LABELS)
    sign_in(at, PASSPHRASE)
    assert {"Start training", "Make pneumonia-mlp-v1 the default", "Sign out"} <= offered(at)
    logs = [list(d.value["Action"]) for d in at.dataframe if "Action" in d.value.columns]  # refused sign-ins apart
    assert logs == [["sign-in"], ["sign-in.refused"]], logs  # from the changes (a review)
    who = "admin (passphrase) from 192.0.2.20"
    assert at.sidebar.caption[0].value.startswith(f"Administrator: {who}, until ")
    grant = at.session_state["admin-grant"]
    assert timedelta(minutes=19) < grant.expires_at - clock.now() <= timedelta(minutes=20)
    from_elsewhere(monkeypatch, "192.0.2.99")  # the same session taken over from another machine: no admin
    assert not offered(at.run()) & set(ADMIN_LABELS)
    assert "Your admin sign-in was made from another network address" in at.sidebar.info[0].value
    from_elsewhere(monkeypatch, "192.0.2.20")
    at.run()
    next(b for b in at.button if b.label == "Make pneumonia-mlp-v1 the default").click()
    at.run()
    assert not at.exception
    assert next(e for e in list_models(places)[0] if e.is_default).name == "pneumonia-mlp-v1"
    assert [(a.action, a.who) for a in read_actions(limit=2)] == [("default.change", who), ("sign-in", who)]
    next(b for b in at.button if b.label == "Sign out").click()
    at.run()
    assert not at.exception and not offered(at) & set(ADMIN_LABELS)
    assert at.text_input(key="admin-passphrase") and read_actions(limit=1)[0].action == "sign-out"


def test_no_admin_rights_begin_where_the_sign_in_cannot_be_recorded(places, monkeypatch, settings_env, tmp_path):
    """"An action whose audit line cannot be written does not happen": a sign-in is one, by passphrase or
    through the identity provider."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings_env(CXR_ADMIN_PASSPHRASE_HASH=HASH, CXR_ADMIN_ACCOUNTS="ana@hospital.example",
                 CXR_AUDIT_LOG=str(blocker / "audit.jsonl"))
    from_elsewhere(monkeypatch, "192.0.2.25")
    with_provider(monkeypatch)
    at = page("retrain")
    sign_in(at, PASSPHRASE)
    assert at.sidebar.error[0].value.startswith("Not signed in. The audit log cannot be written")
    assert not offered(at) & set(ADMIN_LABELS) and "admin-grant" not in at.session_state
    at = page("retrain", user={"is_logged_in": True, "email": "ana@hospital.example", "email_verified": True,
                                          "iat": int(time.time())})
    assert any(e.value.startswith("Admin rights not granted. The audit log cannot be written")
               for e in at.sidebar.error)
    assert not offered(at) & set(ADMIN_LABELS)


def test_an_expired_sign_in_takes_administration_away(places, monkeypatch, settings_env):
    settings_env(CXR_ADMIN_PASSPHRASE_HASH=HASH)
    from_elsewhere(monkeypatch, "192.0.2.21")
    at = page("retrain")
    sign_in(at, PASSPHRASE)
    assert "Start training" in offered(at)
    signed_in = at.session_state["admin-grant"]
    at.session_state["admin-grant"] = AdminGrant(signed_in.who, clock.now() - timedelta(seconds=1))
    at.run()
    assert not offered(at) & set(ADMIN_LABELS)
    assert "Your admin sign-in expired" in at.sidebar.info[0].value


def test_sign_in_is_rate_limited_per_client(places, monkeypatch, settings_env):
    settings_env(CXR_ADMIN_PASSPHRASE_HASH=HASH)
    from_elsewhere(monkeypatch, "192.0.2.22")
    at = page("triage")
    for _ in range(5):
        sign_in(at, "guess number n")
        assert "That passphrase is not right" in at.sidebar.error[0].value
    sign_in(at, PASSPHRASE)  # right, but too late
    assert "Too many sign-in attempts from here; try again in 15 minutes" in at.sidebar.error[0].value
    import streamlit as st

    st.cache_resource.clear()  # what any browser's "clear cache" message makes the server do
    st.cache_data.clear()
    sign_in(at, PASSPHRASE)  # the count survives it
    assert "Too many sign-in attempts from here" in at.sidebar.error[0].value
    from_elsewhere(monkeypatch, "192.0.2.23")  # another client still gets in
    sign_in(at, PASSPHRASE)
    assert at.sidebar.caption[0].value.startswith("Administrator: admin (passphrase) from 192.0.2.23")


@pytest.mark.parametrize("email, admin", [("Ana@Hospital.example", True), ("bob@hospital.example", False)])
def test_an_identity_provider_account_administers_only_when_listed(places, monkeypatch, settings_env, email, admin):
    settings_env(CXR_ADMIN_ACCOUNTS="ana@hospital.example")
    from_elsewhere(monkeypatch, "192.0.2.24")
    with_provider(monkeypatch)
    at = page("retrain", user={"is_logged_in": True, "email": email, "email_verified": True, "iat": int(time.time())})
    assert ("Start training" in offered(at)) is admin
    if admin:
        assert at.sidebar.caption[0].value == "Administrator: ana@hospital.example (identity provider)."
        at.run()  # once per browser session, not per rerun
        assert [(a.action, a.who, a.details["through"]) for a in read_actions(limit=5)] == [
            ("sign-in", "ana@hospital.example", "identity provider")]
        next(b for b in at.button if b.label == "Sign out").click()
        at.run()
        assert [(a.action, a.who) for a in read_actions(limit=5)][0] == ("sign-out", "ana@hospital.example")
    else:
        assert "bob@hospital.example, which is not an admin account here" in at.sidebar.caption[0].value
        assert read_actions(limit=5) == []


@pytest.mark.parametrize("auth", [None, {**COMPLETE_AUTH, "cookie_secret": ""}, {**COMPLETE_AUTH, "cookie_secret": "k"},
                                  {**COMPLETE_AUTH, "cookie_secret": "replace-with-at-least-32-random-characters"}])
def test_a_sign_in_cookie_counts_only_where_the_identity_provider_is_offered(places, monkeypatch, settings_env, auth):
    """Found by a review: Streamlit checks its identity cookie with whatever [auth] cookie_secret says, empty,
    short or an old example's placeholder included, so anyone could sign a cookie naming a listed admin; the
    pages trusted st.user although the sidebar said the provider was not offered."""
    settings_env(CXR_ADMIN_ACCOUNTS="ana@hospital.example")
    from_elsewhere(monkeypatch, "192.0.2.26")
    with_provider(monkeypatch, auth)
    at = page("retrain", user={"is_logged_in": True, "email": "ana@hospital.example", "email_verified": True,
                                "iat": int(time.time())})
    assert not offered(at) & set(ADMIN_LABELS) and "Sign out" not in offered(at)
    assert "ana@hospital.example" not in text(at) and read_actions(limit=5) == []


def test_the_sidebar_explains_an_incomplete_identity_provider(places, monkeypatch, settings_env):
    settings_env(CXR_ADMIN_ACCOUNTS="ana@hospital.example")
    from_elsewhere(monkeypatch)
    monkeypatch.setattr(access, "_auth_section", lambda: {"redirect_uri": "https://t.example/oauth2callback"})
    at = page("triage")
    assert any("[auth] section in `.streamlit/secrets.toml` lacks cookie_secret" in c.value
               for c in at.sidebar.caption)
    with_provider(monkeypatch)
    at = page("triage")
    assert "Sign in with the identity provider" in offered(at)


def test_the_identity_provider_sign_in_has_what_st_login_imports(monkeypatch):
    """requirements.txt pinned Authlib alone: its Starlette client imports httpx, so the sidebar offered the
    provider's sign-in and /auth/login answered 500 on a fresh install."""
    import importlib

    from dashboard.components import access

    importlib.import_module("authlib.integrations.starlette_client")  # what Streamlit's /auth/login imports
    assert access._authlib_installed()

    def without_httpx(name):
        raise ModuleNotFoundError("No module named 'httpx'")

    monkeypatch.setattr(access, "import_module", without_httpx)
    assert not access._authlib_installed()  # then the sidebar says what is missing instead of offering it
