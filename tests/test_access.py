"""core.access: who is local, the admin passphrase (hash, verify, rate limit, expiry); the identity provider's
sign-in is in test_access_oidc.py."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from core import config
from core.access.errors import SignInRefused, SignInUnavailable
from core.access.passphrase import hash_passphrase, main, parse_hash, verify_passphrase
from core.access.policy import (ADMIN, CLINICIAN, AdminGrant, RequestFacts, has_proxy_headers, is_local,
                                is_loopback, names_this_machine, session_user)
from core.access.signin import sign_in
from core.access.throttle import SignInThrottle
from core.errors import SettingOutOfRange, TriageError

REPO = config.REPO_ROOT
PASSPHRASE = "correct horse battery staple"
HASH = hash_passphrase(PASSPHRASE, salt=b"0123456789abcdef")  # made once: each hash costs ~0.1 s
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)


def facts(address: str | None, **headers: str) -> RequestFacts:
    return RequestFacts.of(address, {"Host": "localhost:8501", **{k.replace("_", "-"): v for k, v in headers.items()}})


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("::ffff:7f00:1", True), ("::1%lo", True),
    ("192.0.2.2", False), ("10.0.0.7", False), ("::ffff:192.0.2.2", False), ("fd00::2", False), ("0.0.0.0", False),
    ("::", False), ("localhost", False), ("", False), (None, False), ("127.0.0.1.evil.example", False),
])
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


@pytest.mark.parametrize("headers, local", [
    ({}, True),
    ({"X-Forwarded-For": "192.0.2.9"}, False),
    ({"X-Forwarded-For": "127.0.0.1"}, False),  # a proxy may say anything: its presence is what counts
    ({"Forwarded": "for=192.0.2.9;proto=https"}, False),
    ({"X-Real-IP": "192.0.2.9"}, False),
    ({"X-Forwarded-Proto": "https"}, False),
    ({"X-Forwarded-Something-New": "1"}, False),
    ({"Via": "1.1 nginx"}, False),
    ({"User-Agent": "Chromium", "Cookie": "a=b"}, True),
])
def test_a_loopback_peer_is_local_only_without_proxy_headers(headers, local):
    request = facts("127.0.0.1", **{k.replace("-", "_"): v for k, v in headers.items()})
    assert has_proxy_headers(request) is not local
    assert is_local(request) is local


@pytest.mark.parametrize("host, ours", [
    ("localhost:8501", True), ("LOCALHOST", True), ("127.0.0.1:8501", True), ("[::1]:8501", True), ("::1", True),
    ("app.localhost:8501", True), ("localhost.", True),
    ("rebound.example:8501", False), ("192.0.2.2:8501", False), ("", False), ("localhost.example", False),
])
def test_only_a_request_addressed_to_a_loopback_name_is_local(host, ours):
    assert names_this_machine(host) is ours
    assert is_local(RequestFacts.of("127.0.0.1", {"Host": host})) is ours


def test_remote_and_unknown_sessions_are_not_local():
    assert not is_local(facts("192.0.2.2"))
    assert not is_local(facts("::ffff:192.0.2.2"))
    assert not is_local(facts(None))
    assert not is_local(RequestFacts.of("127.0.0.1", {}))  # no Host: not a browser we know
    assert not is_local(RequestFacts.of(object(), {"Host": "localhost"}))  # not an address at all


@pytest.mark.parametrize("origin, host, local", [
    (None, "localhost:8501", True),  # not from a page (a script on this machine)
    ("http://localhost:8501", "localhost:8501", True),  # this app's own page
    ("http://127.0.0.1:8501", "127.0.0.1:8501", True),
    ("https://localhost", "localhost", True),
    ("http://localhost:9999", "localhost:8501", False),  # another service's page on this machine
    ("http://localhost:9999", "localhost", False),
    ("http://127.0.0.1:8501", "localhost:8501", False),  # another name is another origin
    ("null", "localhost:8501", False),  # a sandboxed frame or a file
    ("http://localhost:notaport", "localhost:8501", False),
])
def test_a_page_of_another_service_on_this_machine_is_not_local(origin, host, local):
    headers = {"Host": host} | ({"Origin": origin} if origin else {})
    assert is_local(RequestFacts.of("127.0.0.1", headers)) is local


def test_the_client_behind_a_proxy_is_the_hop_the_proxy_added():
    assert facts("192.0.2.2").client == "192.0.2.2"
    # a peer elsewhere that sends proxy headers itself is keyed on its own address, whatever it claims: it must
    # not become a new client (a fresh sign-in budget) at every attempt
    assert {facts("192.0.2.2", X_Forwarded_For=f"10.0.0.{n}").client for n in range(5)} == {"192.0.2.2"}
    assert facts("127.0.0.1", X_Forwarded_For="6.6.6.6, 192.0.2.9").client == "127.0.0.1 for 192.0.2.9"
    assert facts("127.0.0.1", X_Real_IP="192.0.2.9").client == "127.0.0.1 for 192.0.2.9"
    # a client may send its own X-Real-IP (a proxy that appends to X-Forwarded-For passes it on unchanged): it
    # must not choose which sign-in budget its attempts count against
    for claimed in ("10.0.0.1", "10.0.0.2"):
        spoofed = facts("127.0.0.1", X_Real_IP=claimed, X_Forwarded_For="192.0.2.9")
        assert spoofed.client == "127.0.0.1 for 192.0.2.9"
    # one IPv6 host may use any address of its /64: every one of them is the same client, direct or proxied
    assert {facts(f"2001:db8:1:2::{n:x}").client for n in range(1, 300, 37)} == {"2001:db8:1:2::/64"}
    assert facts("2001:db8:1:3::1").client == "2001:db8:1:3::/64"
    assert facts("::1", X_Forwarded_For="2001:db8:1:2:aaaa::7").client == "::1 for 2001:db8:1:2::/64"
    assert facts("::ffff:192.0.2.2").client == "::ffff:192.0.2.2"  # IPv4, written as IPv6
    # a proxy that writes the client's port, or RFC 7239 syntax: the port changes with every connection, and
    # must not give each a fresh sign-in budget (found by a review)
    assert {facts("127.0.0.1", X_Forwarded_For=f"203.0.113.5:{port}").client for port in (51234, 51235)} == {
        "127.0.0.1 for 203.0.113.5"}
    assert {facts("127.0.0.1", Forwarded=hop).client for hop in (
        'for="[2001:db8:1:2::1]:443"', "for=[2001:db8:1:2::2]", 'proto=https;For="[2001:db8:1:2::3]"',
        "for=2001:db8:1:2::4")} == {"127.0.0.1 for 2001:db8:1:2::/64"}
    proxied = facts("127.0.0.1", Forwarded="for=192.0.2.60;proto=http;by=203.0.113.43")
    assert proxied.client == "127.0.0.1 for 192.0.2.60"
    # a hop that is no address (behind a forwarder that leaves the client's own header as sent): one key for all
    # such text, never written as it came into the audit log's "who" (found by a review)
    assert {facts("127.0.0.1", X_Forwarded_For=hop).client for hop in (
        "127.0.0.1 for dr.smith@hospital.example (radiology)", "unknown", "for=_hidden", "x" * 500, "0.0.0.0/0",
        "1.2.3.4/255.0.0.0", "2001:db8::/32")} == {
        "127.0.0.1 for an unnamed client"}
    # a proxy that names no client at all: its clients are not counted as, nor bound like, the local browser
    for header in ("Via", "X_Forwarded_Proto", "Cf_Connecting_Ip"):
        named_nobody = facts("127.0.0.1", **{header: "1.1 proxy"})
        assert named_nobody.client == named_nobody.address == "127.0.0.1 for an unnamed client" != facts(
            "127.0.0.1").client


def test_the_server_keeps_the_peer_address_a_forwarding_header_names(monkeypatch):
    """uvicorn (Streamlit's server) replaces a loopback peer with the last hop of X-Forwarded-For unless told to
    trust nobody: a client behind a proxy that passes that header on would then choose its own sign-in budget."""
    import asyncio

    import uvicorn
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


    def peer_seen() -> tuple[str, int]:
        seen = {}

        async def app(scope, receive, send):
            seen["client"] = scope["client"]

        config = uvicorn.Config(app)  # as Streamlit builds it: forwarded_allow_ips from the environment
        middleware = ProxyHeadersMiddleware(app, trusted_hosts=config.forwarded_allow_ips)
        scope = {"type": "http", "client": ("127.0.0.1", 50000), "headers": [(b"x-forwarded-for", b"6.6.6.6")]}
        asyncio.run(middleware(scope, None, None))
        return seen["client"]

    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert peer_seen()[0] == "6.6.6.6"  # uvicorn's default: the client's own claim
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")  # restored after the test
    config.trust_no_forwarding_headers()  # as dashboard/serve.py (make run) calls it
    assert peer_seen() == ("127.0.0.1", 50000)


def test_roles_follow_reach_sign_in_and_the_local_switch():
    local, remote = facts("127.0.0.1"), facts("192.0.2.2")
    assert (session_user(local, local_admin=True).role, session_user(local, local_admin=True).who) == (ADMIN, "local")
    assert session_user(local, local_admin=False).role == CLINICIAN
    assert session_user(remote, local_admin=True).role == CLINICIAN
    assert session_user(facts("127.0.0.1", X_Forwarded_For="192.0.2.9"), local_admin=True).role == CLINICIAN
    grant = AdminGrant("admin (passphrase) from 192.0.2.2", expires_at=T0 + timedelta(minutes=30))
    signed_in = session_user(remote, local_admin=True, grant=grant, now=T0 + timedelta(minutes=29))
    assert signed_in.is_admin and signed_in.who == "admin (passphrase) from 192.0.2.2"
    assert not session_user(remote, local_admin=True, grant=grant, now=T0 + timedelta(minutes=30)).is_admin
    assert session_user(remote, local_admin=False, account="a@x.org", admin_account=True).who == "a@x.org"
    assert session_user(remote, local_admin=False, account="c@x.org").role == CLINICIAN


def test_a_passphrase_sign_in_administers_only_for_the_client_that_signed_in():
    """Found by a review: a grant was bound to the Streamlit session alone, whose id travels in every upload URL
    (proxy logs keep them) and lets another connection take the session over."""
    grant = AdminGrant("admin (passphrase) from 192.0.2.2", expires_at=T0 + timedelta(minutes=30), client="192.0.2.2")
    during = T0 + timedelta(minutes=1)
    assert session_user(facts("192.0.2.2"), local_admin=False, grant=grant, now=during).is_admin
    assert not session_user(facts("192.0.2.3"), local_admin=False, grant=grant, now=during).is_admin
    proxied = AdminGrant("a", expires_at=T0 + timedelta(minutes=30), client="127.0.0.1 for 192.0.2.2")
    assert session_user(facts("127.0.0.1", X_Forwarded_For="192.0.2.2"), local_admin=False, grant=proxied,
                        now=during).is_admin
    assert not session_user(facts("127.0.0.1", X_Forwarded_For="192.0.2.7"), local_admin=False, grant=proxied,
                            now=during).is_admin
    # an IPv6 client's attempts count as its /64's, but its sign-in holds for its own address alone (a review)
    here, neighbour = facts("2001:db8:10:20::a1"), facts("2001:db8:10:20::77")
    assert here.client == neighbour.client == "2001:db8:10:20::/64" and here.address == "2001:db8:10:20::a1"
    assert facts("[2001:DB8:10:20:0::A1]").address == "2001:db8:10:20::a1"
    ipv6 = sign_in(PASSPHRASE, here.client, SignInThrottle(), settings=config.reload(
        {"CXR_ADMIN_PASSPHRASE_HASH": HASH}), now=T0, address=here.address)
    config.reload()
    assert ipv6.who == "admin (passphrase) from 2001:db8:10:20::a1"
    assert session_user(here, local_admin=False, grant=ipv6, now=during).is_admin
    assert not session_user(neighbour, local_admin=False, grant=ipv6, now=during).is_admin
    proxied_v6 = facts("127.0.0.1", X_Forwarded_For="2001:db8:10:20::a1")
    assert proxied_v6.address == "127.0.0.1 for 2001:db8:10:20::a1"


def test_a_hash_verifies_its_passphrase_only():
    assert HASH.startswith("scrypt:32768:8:1:") and "$" not in HASH and PASSPHRASE not in HASH
    assert verify_passphrase(PASSPHRASE, HASH)
    for wrong in ("correct horse battery stapl", "Correct horse battery staple", "", PASSPHRASE + " "):
        assert not verify_passphrase(wrong, HASH)
    again = hash_passphrase(PASSPHRASE)
    assert again != HASH and verify_passphrase(PASSPHRASE, again)  # a fresh salt every time
    with pytest.raises(ValueError, match="at least 12 characters"):
        hash_passphrase("short")


@pytest.mark.parametrize("stored", [
    "", "plain words", "$2b$12$abcdefghijklmnopqrstuv", HASH.replace("scrypt", "bcrypt"), HASH.rsplit(":", 1)[0],
    HASH.replace(":32768:", ":30000:"), HASH.replace(":32768:", ":4194304:"), HASH.replace(":8:1:", ":8:99:"),
    HASH + "!!", "scrypt:32768:8:1:c2FsdA:a2V5",  # salt and key too short
    HASH.replace(":32768:8:", ":1048576:16:"),  # 2 GiB a check: within each bound, refused by OpenSSL at every sign-in
])
def test_a_malformed_hash_says_how_to_make_one_and_never_quotes_itself(stored):
    with pytest.raises(SignInUnavailable, match="python -m core.access.passphrase") as caught:
        parse_hash(stored)
    assert not stored or stored not in str(caught.value)


def test_the_hash_maker_reads_without_echo_and_refuses_what_it_should(capsys):
    answers = iter([PASSPHRASE, PASSPHRASE])
    assert main([], ask=lambda prompt: next(answers)) == 0
    made = capsys.readouterr().out.strip()
    assert verify_passphrase(PASSPHRASE, made)
    answers = iter([PASSPHRASE, PASSPHRASE + "x"])
    assert main([], ask=lambda prompt: next(answers)) == 1
    assert json.loads(capsys.readouterr().out) == {"error": "The two passphrases differ; nothing was made."}


@pytest.mark.parametrize("typed, code", [(PASSPHRASE, 0), ("too short", 1)])
def test_the_hash_maker_from_a_pipe(typed, code, tmp_path):
    done = subprocess.run([sys.executable, "-m", "core.access.passphrase"], input=typed + "\n", cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code and typed not in done.stdout + done.stderr
    if code:
        assert json.loads(done.stdout) == {"error": "The passphrase must be at least 12 characters long."}
    else:
        assert verify_passphrase(typed, done.stdout.strip()) and "CXR_ADMIN_PASSPHRASE_HASH" in done.stderr


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now


def test_the_throttle_limits_each_client_and_the_whole_server():
    clock = Clock()
    throttle = SignInThrottle(per_client=3, overall=5, window=timedelta(minutes=15), now=clock)
    for _ in range(3):
        throttle.attempt("192.0.2.2")
    with pytest.raises(SignInRefused, match="from here; try again in 15 minutes"):
        throttle.attempt("192.0.2.2")
    throttle.attempt("192.0.2.3")
    throttle.attempt("192.0.2.4")
    with pytest.raises(SignInRefused, match="on this server; try again in 15 minutes"):
        throttle.attempt("192.0.2.5")  # a fresh client, but the server has had its five
    clock.now = T0 + timedelta(minutes=14, seconds=30)
    with pytest.raises(SignInRefused, match="try again in 1 minute\\."):
        throttle.attempt("192.0.2.2")
    clock.now = T0 + timedelta(minutes=15)
    throttle.attempt("192.0.2.2")  # the window has passed


def test_a_flood_of_attempts_cannot_lock_out_a_client_that_signed_in_here_before():
    """Anyone may spend the server-wide budget; a client that signed in with the right passphrase within 30
    days keeps its own five attempts all the same. A client new to the server waits, as before."""
    clock = Clock()
    throttle = SignInThrottle(per_client=3, overall=5, window=timedelta(minutes=15), now=clock)
    throttle.attempt("192.0.2.7")
    throttle.succeeded("192.0.2.7")  # an administrator's earlier sign-in
    clock.now = T0 + timedelta(days=2)
    for client in ("198.51.100.1", "198.51.100.2"):  # the flood, from several addresses
        for _ in range(3):
            with contextlib.suppress(SignInRefused):
                throttle.attempt(client)
    with pytest.raises(SignInRefused, match="on this server"):
        throttle.attempt("192.0.2.8")
    for _ in range(3):
        throttle.attempt("192.0.2.7")  # held to its own limit only
    with pytest.raises(SignInRefused, match="from here"):
        throttle.attempt("192.0.2.7")
    clock.now = T0 + timedelta(days=31, minutes=20)  # a month on, it is a client like any other
    for client in ("198.51.100.3", "198.51.100.4"):
        for _ in range(3):
            with contextlib.suppress(SignInRefused):
                throttle.attempt(client)
    with pytest.raises(SignInRefused, match="on this server"):
        throttle.attempt("192.0.2.7")


def test_a_right_passphrase_forgets_that_clients_attempts_and_no_one_elses():
    throttle = SignInThrottle(per_client=3, overall=30, window=timedelta(minutes=15), now=Clock())
    for _ in range(3):
        throttle.attempt("192.0.2.2")
        throttle.attempt("192.0.2.3")
    with pytest.raises(SignInRefused, match="from here"):
        throttle.attempt("192.0.2.2")
    throttle.succeeded("192.0.2.2")
    for _ in range(3):
        throttle.attempt("192.0.2.2")  # its count starts again
    with pytest.raises(SignInRefused, match="from here"):
        throttle.attempt("192.0.2.3")  # the other client's does not


def settings_with(**values) -> config.Settings:
    return config.Settings(**{**config.settings().__dict__, **values})


def test_sign_in_grants_admin_for_the_configured_minutes_and_is_rate_limited(caplog):
    settings = settings_with(admin_passphrase_hash=HASH, admin_session_minutes=20)
    throttle = SignInThrottle(per_client=2, overall=10, now=Clock())
    grant = sign_in(PASSPHRASE, "192.0.2.2", throttle, settings=settings, now=T0)
    assert grant.who == "admin (passphrase) from 192.0.2.2" and grant.expires_at == T0 + timedelta(minutes=20)
    assert grant.active(T0 + timedelta(minutes=19)) and not grant.active(T0 + timedelta(minutes=20))
    for _ in range(2):
        with pytest.raises(SignInRefused, match="That passphrase is not right"):
            sign_in("a wrong passphrase", "192.0.2.9", throttle, settings=settings)
    with pytest.raises(SignInRefused, match="Too many sign-in attempts"):  # refused before any check, even if right
        sign_in(PASSPHRASE, "192.0.2.9", throttle, settings=settings)
    with pytest.raises(SignInRefused, match="Enter the admin passphrase"):
        sign_in("", "192.0.2.2", throttle, settings=settings)
    # the server log shows the guessing (found by a review: refusals were shown on the page only), never a guess
    assert [r.getMessage() for r in caplog.records if r.name == "core.access.signin"] == [
        "admin sign-in refused: wrong passphrase (client 192.0.2.9)"] * 2 + [
        "admin sign-in refused: too many attempts (client 192.0.2.9)"]
    assert "wrong passphrase" not in caplog.text.replace("refused: wrong passphrase", "")


def test_a_wrong_passphrase_is_in_the_audit_log_and_a_throttled_attempt_is_not(tmp_path, settings_env):
    """Refused sign-ins reached the server log only (a review). Each checked attempt is one line (the throttle
    bounds them: 5 per client, 30 in all per 15 minutes); refusals by the throttle itself, unbounded, are not."""
    from core.admin.audit import read_actions

    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    settings = settings_with(admin_passphrase_hash=HASH)
    throttle = SignInThrottle(per_client=2, overall=10, now=Clock())
    for _ in range(4):
        with pytest.raises(SignInRefused):
            sign_in("a wrong passphrase", "192.0.2.9", throttle, settings=settings)
    assert [(a.action, a.who, a.details) for a in read_actions()] == [
        ("sign-in.refused", "client 192.0.2.9", {"reason": "wrong passphrase"})] * 2
    assert "a wrong passphrase" not in (tmp_path / "audit.jsonl").read_text()


def test_sign_in_without_a_configured_hash_names_the_setting():
    with pytest.raises(SignInUnavailable, match="CXR_ADMIN_PASSPHRASE_HASH"):
        sign_in(PASSPHRASE, "192.0.2.2", SignInThrottle(), settings=settings_with(admin_passphrase_hash=""))
    assert issubclass(SignInUnavailable, TriageError) and issubclass(SignInRefused, TriageError)


def test_access_settings_from_the_environment(settings_env):
    # unset: the dashboard decides (on until an admin sign-in works: tests/test_access_pages.py)
    assert (config.settings().local_admin, config.settings().admin_session_minutes) == (None, 30)
    assert config.settings().admin_accounts == () and config.settings().admin_passphrase_hash == ""
    settings_env(CXR_LOCAL_ADMIN="off", CXR_ADMIN_ACCOUNTS="Ana@Hospital.example, it@hospital.example",
                 CXR_ADMIN_SESSION_MINUTES="45", CXR_ADMIN_PASSPHRASE_HASH=f" {HASH}\n")
    current = config.settings()
    assert current.local_admin is False and current.admin_session_minutes == 45
    assert current.admin_accounts == ("ana@hospital.example", "it@hospital.example")
    assert current.admin_passphrase_hash == HASH


@pytest.mark.parametrize("variable, value, words", [
    ("CXR_LOCAL_ADMIN", "maybe", "CXR_LOCAL_ADMIN must be on or off"),
    ("CXR_ADMIN_SESSION_MINUTES", "0", "An admin sign-in must be between 1 and 1440 minutes"),
    ("CXR_ADMIN_SESSION_MINUTES", "soon", "CXR_ADMIN_SESSION_MINUTES must be a whole number"),
])
def test_bad_access_settings_are_refused_in_words(variable, value, words):
    before = config.settings()
    with pytest.raises(SettingOutOfRange, match=words):
        config.reload({variable: value})  # a mapping, not the environment: nothing to undo after a refusal
    assert config.settings() is before
