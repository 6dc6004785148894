"""Who this session is (decided per request by core.access) and the sidebar's admin sign-in and sign-out.

Pages ask :func:`current_user` before drawing an administrative control and draw it only for an admin;
otherwise :func:`admin_only` says who may do it and how administration is enabled here.
"""
from __future__ import annotations

from importlib import import_module, metadata

import streamlit as st

from core import clock, config
from core.access.errors import SignInRefused, SignInUnavailable
from core.access.oidc import (AUTHLIB, ProviderSetup, provider_grant, provider_setup, signed_in_account,
                              why_not_admin)
from core.access.policy import AdminGrant, RequestFacts, User, is_local, session_user
from core.access.signin import passphrase_configured, passphrase_usable, sign_in
from core.access.throttle import SignInThrottle
from core.admin.audit import record_action
from core.errors import TriageError

_GRANT, _EXPIRED = "admin-grant", "admin-grant-expired"
_PROVIDER_SEEN = "admin-provider-seen"  # (account, when this session first saw it signed in with the provider)
_AUTH = "auth"
GUIDE = 'See the README, "Running on a hospital network".'


def request_facts() -> RequestFacts:
    """The one place a request's facts are read: peer address and headers of this session's connection.

    The peer is the connection's own (:func:`peer_address`), not ``st.context.ip_address``, which reports a
    loopback peer as None, as it does a session with no connection of its own: Streamlit's agent API (off by
    default; ``server.enableAgentApi``) serves each HTTP request as a session with the request's headers and no
    peer, so reading None-with-headers as loopback made any caller who could reach the port an administrator.
    Tests replace this function (AppTest sessions have no connection).
    """
    headers = st.context.headers
    pairs = [(name, value) for name in headers for value in headers.get_all(name)]
    return RequestFacts.of(peer_address(), pairs)


def peer_address() -> str | None:
    """The address this session's browser connection came from, loopback included; None when it has none."""
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        client = runtime.get_instance().get_client(ctx.session_id) if ctx is not None else None
    except RuntimeError:  # no runtime: no connection
        return None
    return getattr(getattr(client, "client_context", None), "remote_ip", None)


def current_user() -> User:
    """This session's role and the name the audit log gives it."""
    settings = config.settings()
    identity = _identity()
    provider = _provider_grant(identity)
    return session_user(request_facts(), local_admin=local_administration(settings), grant=_live_grant(),
                        account=signed_in_account(identity),
                        admin_account=provider is not None and provider.active())


def admin_only(what: str) -> None:
    """Say that ``what`` is for administrators, and how this session could become one."""
    st.info(f"{what} is for administrators. {how_to_administer()}", icon=":material/lock:")


def local_administration(settings: config.Settings) -> bool:
    """Whether sessions on this machine administer: CXR_LOCAL_ADMIN when set, else only until an admin sign-in
    works here. A server with a sign-in is served to others, and behind a forwarder that adds no proxy header a
    remote script's Host and Origin passed for a local browser's (a review)."""
    if settings.local_admin is not None:
        return settings.local_admin
    return not (passphrase_usable(settings) or identity_provider().offered)


def how_to_administer() -> str:
    settings = config.settings()
    local = is_local(request_facts())
    if passphrase_configured(settings) or identity_provider().offered:
        why = "CXR_LOCAL_ADMIN=off" if settings.local_admin is False else \
            "while an admin sign-in works here; CXR_LOCAL_ADMIN=on brings it back"
        start = (f"Local administration is off on this server ({why}). "
                 if local and not local_administration(settings) else "")
        return f"{start}An administrator signs in from the sidebar."
    enable = ("an administrator sets CXR_ADMIN_PASSPHRASE_HASH (made with `python -m core.access.passphrase`), "
              "or an identity provider in .streamlit/secrets.toml together with CXR_ADMIN_ACCOUNTS. " + GUIDE)
    if local and not local_administration(settings):
        return ("Local administration is switched off on this server (CXR_LOCAL_ADMIN=off) and no admin sign-in is "
                f"configured, so nobody can administer. To enable it, {enable}")
    # the port this server listens on: the link went to port 80, where nothing answers (a browser review)
    return ("No admin sign-in is configured on this server, so administration is offered only in a browser on "
            f"the server itself (http://localhost:{st.get_option('server.port')}). To enable it here, {enable}")


def access_sidebar() -> None:
    """Who is signed in, with sign-out; for everyone else the ways to sign in that this server offers."""
    user = current_user()
    with st.sidebar:
        if st.session_state.pop(_EXPIRED, False):
            st.info("Your admin sign-in expired; sign in again to administer.", icon=":material/timer_off:")
        grant = _live_grant()
        if grant is not None and not user.is_admin:  # bound to the client that signed in (core.access.policy)
            st.info("Your admin sign-in was made from another network address (a new network, or another "
                    "machine); sign in again here to administer.", icon=":material/lan:")
        provider = _provider_grant(_identity())
        if provider is not None and not provider.active() and not user.is_admin:
            st.info(f"Your admin rights through the identity provider ended at {_hhmm(provider)} UTC "
                    f"({config.settings().admin_session_minutes} minutes after signing in). Sign out and sign in "
                    "again to administer.", icon=":material/timer_off:")
        if user.is_admin:
            _signed_in(user)
        else:
            _sign_in_offers()


def identity_provider() -> ProviderSetup:
    settings = config.settings()
    return provider_setup(_auth_section(), settings.admin_accounts, authlib_installed=_authlib_installed())


def _signed_in(user: User) -> None:
    grant = _live_grant()
    if grant is not None:
        st.caption(f"Administrator: {user.who}, until {clock.iso(grant.expires_at)[11:16]} UTC.")
        if st.button("Sign out", icon=":material/logout:", key="admin-sign-out"):
            _record("sign-out", user.who)
            del st.session_state[_GRANT]
            st.rerun()
    elif signed_in_account(_identity()):
        st.caption(f"Administrator: {user.who} (identity provider).")
        provider = _provider_grant(_identity())
        if provider is not None and provider.active():
            st.caption(f"Admin rights until {_hhmm(provider)} UTC; then sign in again.")
        if st.button("Sign out", icon=":material/logout:", key="provider-sign-out"):
            _record("sign-out", user.who)
            st.logout()
    else:
        st.caption("Administering from the server itself (a local session).")


def _sign_in_offers() -> None:
    settings = config.settings()
    provider = identity_provider()
    account = signed_in_account(_identity())
    with st.expander("Administrator sign-in", icon=":material/admin_panel_settings:"):
        if account:
            st.caption(f"Signed in as {account}; the admin rights of this sign-in have ended." if
                       _provider_grant(_identity()) else
                       f"Signed in as {account}, {why_not_admin(_identity(), settings.admin_accounts)}")
            if st.button("Sign out", icon=":material/logout:", key="provider-sign-out"):
                st.logout()
        if passphrase_configured(settings):
            _passphrase_form(settings)
        if provider.offered:
            for name in provider.providers:
                label = "Sign in with the identity provider" if name == "default" else f"Sign in with {name}"
                if st.button(label, icon=":material/login:", key=f"sign-in-{name}"):
                    st.login(None if name == "default" else name)
        elif passphrase_configured(settings):
            st.caption(f"Identity provider: {provider.explanation}")
        if not passphrase_configured(settings) and not provider.offered:
            st.caption(how_to_administer())
            st.caption(f"Identity provider: {provider.explanation}")


def _passphrase_form(settings: config.Settings) -> None:
    with st.form("admin-sign-in", border=False, clear_on_submit=True):
        passphrase = st.text_input("Admin passphrase", type="password", key="admin-passphrase",
                                   autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", icon=":material/login:")
    if not submitted:
        return
    facts = request_facts()
    try:
        grant = sign_in(passphrase, facts.client, _throttle(), settings=settings, address=facts.address)
    except (SignInRefused, SignInUnavailable) as exc:
        st.error(str(exc), icon=":material/error:")
        return
    try:  # admin rights begin only once the audit log has the sign-in
        record_action("sign-in", grant.who, minutes=settings.admin_session_minutes)
    except TriageError as exc:
        st.error(f"Not signed in. {exc}", icon=":material/error:")
        return
    st.session_state[_GRANT] = grant
    st.rerun()


def _live_grant() -> AdminGrant | None:
    """This session's passphrase sign-in while it lasts; an expired one is dropped (and the sidebar says so)."""
    grant = st.session_state.get(_GRANT)
    if isinstance(grant, AdminGrant) and grant.active():
        return grant
    if grant is not None:
        del st.session_state[_GRANT]
        st.session_state[_EXPIRED] = True
    return None


def _provider_grant(identity: dict) -> AdminGrant | None:
    """Admin rights through the identity provider, live or past their limit; None for any other account.

    The clock starts when the provider issued the sign-in or when this session first saw the account, which
    is remembered here; signing out and in again starts a new session and a new token."""
    account = signed_in_account(identity)
    if account is None:
        st.session_state.pop(_PROVIDER_SEEN, None)
        return None
    settings = config.settings()
    seen = st.session_state.get(_PROVIDER_SEEN)
    first_sight = not (isinstance(seen, tuple) and seen[0] == account)
    began = clock.now() if first_sight else seen[1]
    grant = provider_grant(identity, settings.admin_accounts, minutes=settings.admin_session_minutes,
                           first_seen=began)
    if first_sight:
        if grant is not None and grant.active():  # an admin account: its rights begin once the log has them
            try:
                record_action("sign-in", grant.who, through="identity provider",
                              minutes=settings.admin_session_minutes)
            except TriageError as exc:
                st.sidebar.error(f"Admin rights not granted. {exc}", icon=":material/error:")
                return None  # asked again on the next run
        st.session_state[_PROVIDER_SEEN] = (account, began)
    return grant


def _hhmm(grant: AdminGrant) -> str:
    return clock.iso(grant.expires_at)[11:16]


# One throttle for every session of this server process, held by this module, not in Streamlit's caches: any
# browser session may ask Streamlit to clear those (the "clear cache" message), which would forget every attempt.
_THROTTLE = SignInThrottle()


def _throttle() -> SignInThrottle:
    return _THROTTLE


def _identity() -> dict:
    """What the identity provider said about this session (``st.user``): empty without one, and empty wherever
    the provider is not offered. Streamlit checks its identity cookie with whatever [auth] cookie_secret holds,
    empty, short or an old example's placeholder included, so there a cookie anyone can sign would name any
    account (found by a review)."""
    return dict(st.user.to_dict()) if identity_provider().offered else {}


def _auth_section() -> dict | None:
    """The [auth] section of .streamlit/secrets.toml as a plain mapping; None without one (or unreadable)."""
    try:
        section = st.secrets.get(_AUTH) if st.secrets.load_if_toml_exists() else None
    except OSError:  # Streamlit's StreamlitSecretNotFoundError is one
        return None
    return section.to_dict() if hasattr(section, "to_dict") else None


def _authlib_installed() -> bool:
    """Whether st.login can run: Authlib recent enough, and its Starlette client importable (it needs httpx:
    without it the sidebar offered the button and the server answered 500 at /auth/login; found by a review)."""
    try:
        version = metadata.version("Authlib")
        import_module("authlib.integrations.starlette_client")
    except (metadata.PackageNotFoundError, ImportError):
        return False
    wanted = tuple(int(p) for p in AUTHLIB.split(">=")[1].split("."))
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit()) >= wanted


def _record(action: str, who: str, **details) -> None:
    try:
        record_action(action, who, **details)
    except TriageError as exc:
        st.warning(str(exc), icon=":material/warning:")
