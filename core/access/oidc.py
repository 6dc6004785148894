"""Signing in through the site's identity provider (Streamlit's built-in OIDC), and which accounts administer.

Streamlit reads the provider from the ``[auth]`` section of ``.streamlit/secrets.toml``; this module only
judges that section (handed in as a plain mapping) so the sidebar can offer the sign-in or say, naming keys
but never values, what is missing. Admin accounts are e-mail addresses listed in ``CXR_ADMIN_ACCOUNTS``
(core.config); an address the provider marks unverified never administers.

Streamlit's own sign-in lasts 30 days (its identity cookie); admin rights through it last
``CXR_ADMIN_SESSION_MINUTES``, as a passphrase sign-in does (:func:`provider_grant`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

from core.access.policy import AdminGrant
from core.wording import and_list

AUTHLIB = "Authlib>=1.3.2"
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
MIN_COOKIE_SECRET = 32
CALLBACK = "/oauth2callback"
_SECRETS = "`.streamlit/secrets.toml`"
_EXAMPLE = "replace-with"  # the placeholders of an earlier secrets.toml.example: not values
_LOGGED_IN, _EMAIL, _VERIFIED = "is_logged_in", "email", "email_verified"
_ISSUED_AT = "iat"  # an ID token claim (OIDC Core 2): when the provider issued it, in seconds since the epoch


@dataclass(frozen=True)
class ProviderSetup:
    """Whether an identity-provider sign-in can be offered; if not, why, in words."""

    offered: bool
    providers: tuple[str, ...] = ()  # st.login(name); "default" means plain st.login()
    explanation: str = ""


def provider_setup(auth: Mapping[str, Any] | None, admin_accounts: Sequence[str], *,
                   authlib_installed: bool) -> ProviderSetup:
    """Judge the ``[auth]`` section: complete and usable, or a sentence naming what is missing."""
    if not auth:
        return ProviderSetup(False, explanation="No identity provider is configured (an [auth] section in "
                                                f"{_SECRETS}).")
    missing = [key for key in ("redirect_uri", "cookie_secret") if not _text(auth, key)]
    if missing:
        return ProviderSetup(False, explanation=f"The [auth] section in {_SECRETS} lacks {and_list(missing)}.")
    if not _text(auth, "redirect_uri").rstrip("/").endswith(CALLBACK):
        return ProviderSetup(False, explanation=f"[auth] redirect_uri in {_SECRETS} must end with {CALLBACK}.")
    if len(_text(auth, "cookie_secret")) < MIN_COOKIE_SECRET or _text(auth, "cookie_secret").startswith(_EXAMPLE):
        # an earlier example's placeholder was 42 characters: a copy signed cookies anyone could forge (a review)
        return ProviderSetup(False, explanation=f"[auth] cookie_secret in {_SECRETS} must be at least "
                                                f"{MIN_COOKIE_SECRET} random characters of your own.")
    providers, problems = _providers(auth)
    if not providers:
        return ProviderSetup(False, explanation=" ".join(problems) or
                             f"The [auth] section in {_SECRETS} names no provider ({and_list(list(PROVIDER_KEYS))}).")
    if not authlib_installed:
        return ProviderSetup(False, explanation=f"Signing in with the identity provider needs the {AUTHLIB} and "
                                                "httpx packages on the server (both in requirements.txt).")
    if not admin_accounts:
        return ProviderSetup(False, explanation="No admin account is listed: an administrator sets "
                                                "CXR_ADMIN_ACCOUNTS (e-mail addresses, comma-separated).")
    return ProviderSetup(True, tuple(providers), " ".join(problems))


def _providers(auth: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Complete providers (the default one: keys right in [auth]) and one sentence per incomplete one."""
    sections = {name: value for name, value in auth.items() if isinstance(value, Mapping)}
    if any(key in auth for key in PROVIDER_KEYS):
        sections = {"default": auth, **sections}
    complete, problems = [], []
    for name, section in sections.items():
        lacking = [key for key in PROVIDER_KEYS if not _text(section, key) or _text(section, key).startswith(_EXAMPLE)]
        if "_" in name:
            problems.append(f"The provider name [auth.{name}] may not contain an underscore.")
        elif lacking:
            where = "[auth]" if name == "default" else f"[auth.{name}]"
            problems.append(f"{where} in {_SECRETS} lacks {and_list(lacking)}.")
        else:
            complete.append(name)
    return complete, problems


def _text(section: Mapping[str, Any], key: str) -> str:
    value = section.get(key)
    return value.strip() if isinstance(value, str) else ""


def signed_in_account(identity: Mapping[str, Any]) -> str | None:
    """The e-mail address of a person signed in with the provider (``st.user``), or None."""
    if identity.get(_LOGGED_IN) is not True:
        return None
    email = identity.get(_EMAIL)
    return email.strip().lower() if isinstance(email, str) and "@" in email else None


def is_admin_account(identity: Mapping[str, Any], admin_accounts: Sequence[str]) -> bool:
    """Signed in, with a listed address the provider says it has verified (``email_verified`` true). A token
    without the claim grants nothing: a provider that lets a tenant's owner set any address and does not
    vouch for it (Microsoft Entra ID sends no ``email_verified``) would otherwise make whoever claims a listed
    address an administrator."""
    return not why_not_admin(identity, admin_accounts)


def why_not_admin(identity: Mapping[str, Any], admin_accounts: Sequence[str]) -> str:
    """Why a signed-in account does not administer here, in words after "Signed in as ADDRESS, "; "" when it
    does (a listed, verified address of a sign-in whose issue time is known, so that its rights can be timed)."""
    account = signed_in_account(identity)
    if account is None or account not in admin_accounts:
        return "which is not an admin account here."
    if identity.get(_VERIFIED) is not True:
        return ("but the identity provider does not say it has verified this address, so it does not administer "
                "here; sign in with the admin passphrase instead.")
    if issued_at(identity) is None:
        return ("but the identity provider's sign-in carries no issue time (iat), so admin rights could not be "
                "limited in time; sign in with the admin passphrase instead.")
    return ""


def issued_at(identity: Mapping[str, Any]) -> datetime | None:
    """When the provider issued this sign-in: the ID token's ``iat``, which Streamlit keeps in ``st.user``."""
    value = identity.get(_ISSUED_AT)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def provider_grant(identity: Mapping[str, Any], admin_accounts: Sequence[str], *, minutes: int,
                   first_seen: datetime) -> AdminGrant | None:
    """An admin account's rights, lasting ``minutes`` from when the sign-in began; None for anyone else.

    It began when the provider issued it or when this session first saw it, whichever is earlier: a reload
    starts a new session with the same 30-day identity cookie, and must not start the clock again (a token's
    ``iat`` ahead of ours, a skewed clock, cannot lengthen it either). A sign-in without ``iat`` (OpenID
    Connect requires it) grants nothing: every reload would start its clock again. Past the limit the person
    signs out and in again, which brings a new token."""
    if not is_admin_account(identity, admin_accounts):
        return None
    began = min(issued_at(identity), first_seen)
    return AdminGrant(who=signed_in_account(identity) or "", expires_at=began + timedelta(minutes=minutes))
