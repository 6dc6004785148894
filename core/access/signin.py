"""Signing in with the admin passphrase: throttled, checked against the configured hash, time-limited."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from core import clock, config
from core.access.errors import SignInRefused, SignInUnavailable
from core.access.passphrase import parse_hash, verify_passphrase
from core.access.policy import AdminGrant
from core.access.throttle import SignInThrottle
from core.admin.audit import REFUSED_SIGN_IN, record_action
from core.errors import AuditLogUnavailable

# One scrypt check at a time: each takes ~32 MiB, and a burst of attempts must not take the memory.
_checking = threading.Lock()
_log = logging.getLogger(__name__)


def passphrase_configured(settings: config.Settings | None = None) -> bool:
    return bool((settings or config.settings()).admin_passphrase_hash)


def passphrase_usable(settings: config.Settings | None = None) -> bool:
    """A passphrase is configured and its hash reads as one (a passphrase pasted in its place does not)."""
    settings = settings or config.settings()
    if not passphrase_configured(settings):
        return False
    try:
        parse_hash(settings.admin_passphrase_hash)
    except SignInUnavailable:
        return False
    return True


def sign_in(passphrase: str, client: str, throttle: SignInThrottle, *, settings: config.Settings | None = None,
            now: datetime | None = None, address: str | None = None) -> AdminGrant:
    """An admin grant lasting ``CXR_ADMIN_SESSION_MINUTES``, or SignInRefused / SignInUnavailable saying why.
    ``client`` (RequestFacts.client) is what attempts are counted under; the grant holds for ``address``
    (RequestFacts.address, the client's own address) alone, else for ``client``."""
    settings = settings or config.settings()
    if not settings.admin_passphrase_hash:
        raise SignInUnavailable("No admin passphrase is configured on this server: an administrator sets "
                                "CXR_ADMIN_PASSPHRASE_HASH (made by `python -m core.access.passphrase`).")
    stored = parse_hash(settings.admin_passphrase_hash)
    if not passphrase:
        raise SignInRefused("Enter the admin passphrase.")
    try:
        throttle.attempt(client)
    except SignInRefused:
        _log.warning("admin sign-in refused: too many attempts (client %s)", client)
        raise
    with _checking:
        right = verify_passphrase(passphrase, stored)
    if not right:  # in the server log and the audit log, so guessing shows (reviews); never the passphrase
        _log.warning("admin sign-in refused: wrong passphrase (client %s)", client)
        try:  # a line per checked attempt, which the throttle bounds (its own refusals, unbounded, are not)
            record_action(REFUSED_SIGN_IN, f"client {client}", reason="wrong passphrase")
        except AuditLogUnavailable:
            _log.warning("the refused admin sign-in could not be written to the audit log")
        raise SignInRefused("That passphrase is not right. Attempts are limited; ask your administrator if "
                            "you do not have it.")
    throttle.succeeded(client)
    bound = address or client
    return AdminGrant(who=f"admin (passphrase) from {bound}", client=bound,
                      expires_at=(now or clock.now()) + timedelta(minutes=settings.admin_session_minutes))
