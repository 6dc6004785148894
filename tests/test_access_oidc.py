"""core.access.oidc: sign-in through the site's identity provider (Streamlit's st.login): its set-up offered
or explained, admin accounts from the configured list (verified addresses only), rights that end."""
from __future__ import annotations

from datetime import timedelta

import pytest
from streamlit.testing.v1 import AppTest
from test_access import REPO, T0, Clock

from core import clock as product_clock
from core.access.oidc import (is_admin_account, issued_at, provider_grant, provider_setup, signed_in_account,
                              why_not_admin)
from core.access.policy import RequestFacts
from dashboard.components import access


COMPLETE = {"redirect_uri": "https://triage.example/oauth2callback", "cookie_secret": "s" * 40,
            "client_id": "id", "client_secret": "secret", "server_metadata_url": "https://idp.example/.well-known"}
ADMINS = ("ana@hospital.example",)


@pytest.mark.parametrize("auth, admins, authlib, offered, words", [
    (None, ADMINS, True, False, "No identity provider is configured"),
    ({}, ADMINS, True, False, "No identity provider is configured"),
    ({k: v for k, v in COMPLETE.items() if k != "redirect_uri"}, ADMINS, True, False, "lacks redirect_uri"),
    ({k: v for k, v in COMPLETE.items() if k not in ("redirect_uri", "cookie_secret")}, ADMINS, True, False,
     "lacks redirect_uri and cookie_secret"),
    ({**COMPLETE, "redirect_uri": "https://triage.example/"}, ADMINS, True, False, "must end with /oauth2callback"),
    ({**COMPLETE, "cookie_secret": "short"}, ADMINS, True, False, "at least 32 random characters"),
    ({k: v for k, v in COMPLETE.items() if k != "client_secret"}, ADMINS, True, False, "[auth] in"),
    (COMPLETE, ADMINS, False, False, "Authlib>=1.3.2"),
    (COMPLETE, (), True, False, "CXR_ADMIN_ACCOUNTS"),
    (COMPLETE, ADMINS, True, True, ""),
])
def test_identity_provider_configuration_is_offered_or_explained(auth, admins, authlib, offered, words):
    setup = provider_setup(auth, admins, authlib_installed=authlib)
    assert setup.offered is offered and words in setup.explanation
    assert "secret" not in setup.explanation.replace("client_secret", "").replace("cookie_secret", "").replace(
        "secrets.toml", "")  # keys are named, values never quoted
    assert setup.providers == (("default",) if offered else ())


def test_the_example_secrets_file_filled_in_as_its_comments_ask_is_offered_only_with_a_cookie_secret_of_ones_own():
    """Found by a review: the example's cookie_secret placeholder was 42 characters, so a copy with only the
    provider's values filled in was offered, and Streamlit signed its sign-in cookies with a secret anyone could
    read here: a forged cookie naming a listed admin was an administrator."""
    import tomllib

    from e2e_support import ROOT

    auth = tomllib.loads((ROOT / ".streamlit" / "secrets.toml.example").read_text())["auth"]
    filled = {**auth, "client_id": "id", "client_secret": "secret"}
    setup = provider_setup(filled, ADMINS, authlib_installed=True)
    assert not setup.offered and "cookie_secret" in setup.explanation
    assert provider_setup({**filled, "cookie_secret": "k" * 48}, ADMINS, authlib_installed=True).offered
    earlier = {**filled, "cookie_secret": "replace-with-at-least-32-random-characters"}  # copies already made
    assert not provider_setup(earlier, ADMINS, authlib_installed=True).offered
    assert not provider_setup({**earlier, "cookie_secret": "k" * 48, "client_secret": "replace-with-the-client-"
                                                                                     "secret"},
                              ADMINS, authlib_installed=True).offered


def test_named_providers_each_offered_and_an_incomplete_one_explained():
    auth = {"redirect_uri": COMPLETE["redirect_uri"], "cookie_secret": COMPLETE["cookie_secret"],
            "microsoft": {k: COMPLETE[k] for k in ("client_id", "client_secret", "server_metadata_url")},
            "google": {"client_id": "id"}, "bad_name": {k: "x" for k in ("client_id", "client_secret",
                                                                          "server_metadata_url")}}
    setup = provider_setup(auth, ADMINS, authlib_installed=True)
    assert setup.offered and setup.providers == ("microsoft",)
    assert "[auth.google] in `.streamlit/secrets.toml` lacks client_secret and server_metadata_url" in setup.explanation
    assert "[auth.bad_name] may not contain an underscore" in setup.explanation


SIGNED = {"is_logged_in": True, "iat": int(T0.timestamp())}


@pytest.mark.parametrize("identity, account, admin", [
    ({}, None, False),
    ({"is_logged_in": False, "email": "ana@hospital.example"}, None, False),
    ({**SIGNED, "email": "Ana@Hospital.example", "email_verified": True}, "ana@hospital.example", True),
    # A provider that does not vouch for the address grants nothing: a tenant's owner may set any address.
    ({**SIGNED, "email": "ana@hospital.example"}, "ana@hospital.example", False),
    ({**SIGNED, "email": "ana@hospital.example", "email_verified": "true"}, "ana@hospital.example", False),
    ({**SIGNED, "email": "ana@hospital.example", "email_verified": False}, "ana@hospital.example", False),
    # Nor does a sign-in without its issue time: every reload would start its clock again.
    ({"is_logged_in": True, "email": "ana@hospital.example", "email_verified": True}, "ana@hospital.example", False),
    ({**SIGNED, "email": "bob@hospital.example", "email_verified": True}, "bob@hospital.example", False),
    ({"is_logged_in": True, "name": "No Email"}, None, False),
])
def test_admin_accounts_come_from_the_configured_list(identity, account, admin):
    assert signed_in_account(identity) == account
    assert is_admin_account(identity, ADMINS) is admin


ANA = {"is_logged_in": True, "email": "ana@hospital.example", "email_verified": True}


def test_provider_admin_rights_last_the_configured_minutes_from_the_earlier_start():
    seen = T0 + timedelta(minutes=5)
    issued = {**ANA, "iat": int((T0 + timedelta(minutes=10)).timestamp())}  # a token dated after we saw it
    grant = provider_grant(issued, ADMINS, minutes=30, first_seen=seen)  # from when first seen
    assert (grant.who, grant.expires_at) == ("ana@hospital.example", seen + timedelta(minutes=30))
    assert grant.active(seen + timedelta(minutes=29, seconds=59)) and not grant.active(seen + timedelta(minutes=30))
    issued = {**ANA, "iat": int(T0.timestamp())}  # a reload: a new session, the same token
    assert issued_at(issued) == T0
    assert provider_grant(issued, ADMINS, minutes=30, first_seen=seen).expires_at == T0 + timedelta(minutes=30)
    assert provider_grant(ANA, ADMINS, minutes=30, first_seen=seen) is None  # no issue time: never timed
    ahead = {**ANA, "iat": int((seen + timedelta(hours=1)).timestamp())}  # the provider's clock runs ahead
    assert provider_grant(ahead, ADMINS, minutes=30, first_seen=seen).expires_at == seen + timedelta(minutes=30)
    for junk in ("1764489600", None, True, float("nan"), 10**20):  # no usable issue time: no rights
        assert issued_at({**ANA, "iat": junk}) is None
        assert provider_grant({**ANA, "iat": junk}, ADMINS, minutes=30, first_seen=seen) is None
    assert provider_grant({**issued, "email": "bob@hospital.example"}, ADMINS, minutes=30, first_seen=seen) is None
    assert provider_grant({**issued, "email_verified": False}, ADMINS, minutes=30, first_seen=seen) is None


@pytest.mark.parametrize("identity, why", [
    ({**ANA, "iat": 1}, ""),
    ({**ANA, "email": "bob@hospital.example", "iat": 1}, "which is not an admin account here."),
    ({**ANA, "email_verified": None, "iat": 1}, "does not say it has verified this address"),
    (ANA, "carries no issue time (iat)"),
])
def test_a_listed_account_that_cannot_administer_is_told_why(identity, why):
    said = why_not_admin(identity, ADMINS)
    if not why or why.startswith("which"):
        assert said == why
    else:  # listed, yet not an administrator here: say why, and what works instead
        assert why in said and said.endswith("sign in with the admin passphrase instead.")


@pytest.fixture
def provider_session(tmp_path, settings_env, monkeypatch) -> Clock:
    """A session from elsewhere with ana@ an admin account for 20 minutes, on a clock the test moves."""
    settings_env(CXR_JOBS=str(tmp_path / "jobs"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
                 CXR_ADMIN_ACCOUNTS="ana@hospital.example", CXR_ADMIN_SESSION_MINUTES="20")
    facts = RequestFacts.of("192.0.2.30", {"Host": "triage.hospital.example"})
    monkeypatch.setattr(access, "request_facts", lambda: facts)
    monkeypatch.setattr(access, "_auth_section", lambda: COMPLETE)  # offered: st.user counts only then
    monkeypatch.setattr(access, "_authlib_installed", lambda: True)
    fake = Clock()
    fake.now = product_clock.now()
    monkeypatch.setattr(product_clock, "now", fake)
    return fake


def retrain_page(user: dict) -> AppTest:
    at = AppTest.from_file(str(REPO / "dashboard" / "app.py"), default_timeout=120)
    at.user = user
    at.switch_page("views/retrain.py")
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception
    return at


def sidebar_text(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("caption", "info") for e in at.sidebar.get(kind))


def test_identity_provider_admin_rights_end_after_the_configured_minutes(provider_session):
    started = provider_session.now
    at = retrain_page({**ANA, "iat": int(started.timestamp())})
    assert "Start training" in {b.label for b in at.button}
    until = product_clock.iso(started + timedelta(minutes=20))[11:16]
    assert f"Admin rights until {until} UTC; then sign in again." in sidebar_text(at)
    provider_session.now = started + timedelta(minutes=19, seconds=59)
    assert "Start training" in {b.label for b in run(at).button}
    provider_session.now = started + timedelta(minutes=20)
    labels = {b.label for b in run(at).button}
    assert "Start training" not in labels and "Sign out" in labels
    words = sidebar_text(at)
    assert (f"Your admin rights through the identity provider ended at {until} UTC (20 minutes after signing in). "
            "Sign out and sign in again to administer.") in words
    assert "Signed in as ana@hospital.example; the admin rights of this sign-in have ended." in words
    assert "Starting, cancelling and promoting training jobs is for administrators" in at.info[0].value


def test_a_new_session_on_the_same_sign_in_does_not_restart_the_clock(provider_session):
    issued = provider_session.now - timedelta(minutes=20, seconds=1)
    at = retrain_page({**ANA, "iat": int(issued.timestamp())})
    assert "Start training" not in {b.label for b in at.button}
    assert "Your admin rights through the identity provider ended at" in sidebar_text(at)
    fresh = provider_session.now - timedelta(minutes=5)
    at = retrain_page({**ANA, "iat": int(fresh.timestamp())})  # signed out and in again: a new token
    assert "Start training" in {b.label for b in at.button}
    assert f"until {product_clock.iso(fresh + timedelta(minutes=20))[11:16]} UTC" in sidebar_text(at)
