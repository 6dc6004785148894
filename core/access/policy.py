"""Trust follows reach: what one request says about where it came from, and the role that follows.

Decided per request, from facts the server saw (the peer address, the header names), never from anything
the page itself asks the browser. A session is *local* only when all of these hold:

- its peer address is loopback (``127.0.0.0/8``, ``::1``, or ``::ffff:127.x.x.x``);
- it carries no proxy header (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``, ``Via``, ...): a reverse proxy
  on this host connects from loopback on behalf of someone elsewhere;
- it was addressed to this machine by a loopback name (``Host: localhost:8501``): a page elsewhere that
  rebinds its own name to 127.0.0.1 reaches the port from this machine's browser under its own name;
- when a page opened it (an ``Origin`` header), that page is this app's own: same host and port as ``Host``.
  A page of another service on this machine would otherwise act with the local administrator's rights.

Anything unknown (no peer address, no headers) is not local.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from core import clock

ADMIN, CLINICIAN = "admin", "clinician"

# Headers a reverse proxy adds; any one of them means the loopback peer speaks for someone else.
PROXY_HEADERS = frozenset({
    "forwarded", "forwarded-for", "x-forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
    "x-forwarded-port", "x-forwarded-server", "x-forwarded-prefix", "x-real-ip", "x-client-ip",
    "x-original-forwarded-for", "true-client-ip", "cf-connecting-ip", "fastly-client-ip",
    "x-cluster-client-ip", "x-proxyuser-ip", "via",
})
# Where a proxy names the client it speaks for; the right-most entry is the one our own proxy added. The
# README's nginx appends to X-Forwarded-For, which a client cannot push out of the right-most place, and sets
# X-Real-IP itself; a client's own X-Real-IP reaches us unchanged behind a proxy that sets only X-Forwarded-For,
# so it is read last.
_CLIENT_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


@dataclass(frozen=True)
class RequestFacts:
    """What the server saw of one browser connection."""

    remote_address: str | None  # the TCP peer; None when the server does not know it
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, value), as received

    @classmethod
    def of(cls, remote_address: str | None, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> RequestFacts:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return cls(remote_address if isinstance(remote_address, str) else None,
                   tuple((str(name).lower(), str(value)) for name, value in pairs))

    @property
    def header_names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.headers)

    def header(self, name: str) -> str:
        """The last value of header ``name`` (lower case), or ""."""
        values = [value for key, value in self.headers if key == name]
        return values[-1] if values else ""

    @property
    def client(self) -> str:
        """Who the request is from, for rate limiting: the peer; when the peer is a proxy on this machine
        (loopback), the client it says it speaks for. A peer elsewhere is keyed on its own address whatever its
        headers say: they are its own claim, and changing them at every attempt must not make one client many.
        An IPv6 client counts as its /64 (one host may use any address of it)."""
        return self._who(_one_host)

    @property
    def address(self) -> str:
        """:attr:`client` with an IPv6 client's own address, not its /64: what a sign-in is bound to, so that a
        neighbour on the same network who learns the session's id gets no rights (a review)."""
        return self._who(_exact)

    def _who(self, host) -> str:
        if is_loopback(self.remote_address):
            for name in _CLIENT_HEADERS:
                value = self.header(name)
                if value:  # an address, or one key for any other text (never the text: it reaches the audit log)
                    hop = host(_hop_address(value.split(',')[-1]))
                    return f"{self.remote_address} for {hop if _is_address(hop) else 'an unnamed client'}"
            if has_proxy_headers(self):  # a proxy that names nobody (only Via, say): its clients were the local
                return f"{self.remote_address} for an unnamed client"  # browser's "127.0.0.1" (a review)
        return host(self.remote_address) if self.remote_address else "unknown"


def _hop_address(hop: str) -> str:
    """The address in one proxy hop, without what would make one client many (found by a review): RFC 7239's
    ``for=`` and quotes, brackets, and a port (``203.0.113.5:51234``, ``[2001:db8::1]:443``), which changes with
    every connection."""
    text = hop.strip()
    pairs = [part.strip() for part in text.split(";")]
    named = [part[4:] for part in pairs if part[:4].lower() == "for="]
    text = (named[0] if named else text).strip().strip('"')
    if text.startswith("["):
        return text[1:].partition("]")[0]
    host, colon, port = text.rpartition(":")
    return host if colon and host.count(":") == 0 and port.isdigit() else text


def _is_address(text: str) -> bool:
    """An IP address or an IPv6 /64 network (:func:`_one_host`'s two answers for an address), nothing else."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        return False
    return network.version == 6 and network.prefixlen == 64


def _one_host(address: str) -> str:
    """An IPv6 address as its /64 network: one host is usually given a whole /64 and may use any address in
    it, so counting addresses would make one client many. Anything else as it is."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def _exact(address: str) -> str:
    """An address in its one written form (``2001:DB8::0:1`` and ``[2001:db8::1]`` are ``2001:db8::1``);
    anything else as it is."""
    ip = _ip(address)
    return address if ip is None else str(ip)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address in ``address`` (brackets and an IPv6 zone allowed), or None for a name or garbage."""
    try:
        return ipaddress.ip_address(address.strip().removeprefix("[").removesuffix("]").split("%", 1)[0])
    except ValueError:
        return None


def is_loopback(address: str | None) -> bool:
    """Loopback IPv4 or IPv6, IPv4-mapped included (``::ffff:127.0.0.1``); names and garbage are not."""
    ip = _ip(address) if address else None
    if ip is None:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def has_proxy_headers(facts: RequestFacts) -> bool:
    return any(name in PROXY_HEADERS or name.startswith("x-forwarded-") for name in facts.header_names)


def names_this_machine(host: str) -> bool:
    """``Host`` is a loopback name or address (port allowed): ``localhost:8501``, ``127.0.0.1``, ``[::1]:80``."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    name = name.rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def same_origin(facts: RequestFacts) -> bool:
    """No ``Origin`` (not sent from a page), or one naming the very host and port the request was addressed to.

    Streamlit accepts connections from a page of any port of this machine; a page of another service here (a
    notebook, a file server) must not drive this app with the local administrator's rights."""
    origin = facts.header("origin").strip()
    if not origin:
        return True
    try:
        page, addressed = urlsplit(origin), urlsplit("//" + facts.header("host").strip())
        default_port = {"http": 80, "https": 443}.get(page.scheme)  # a Host without a port: the scheme's own
        page_port, addressed_port = page.port or default_port, addressed.port or default_port
    except ValueError:  # a port that is not a number
        return False
    return (page.scheme in ("http", "https") and bool(page.hostname) and page.hostname == addressed.hostname
            and page_port == addressed_port)


def is_local(facts: RequestFacts) -> bool:
    """Loopback peer, no proxy header, addressed to a loopback name, from a page of this app itself when a page
    sent it (see the module's docstring)."""
    return (is_loopback(facts.remote_address) and not has_proxy_headers(facts)
            and names_this_machine(facts.header("host")) and same_origin(facts))


@dataclass(frozen=True)
class User:
    """The role of one session and ``who`` the audit log names for it."""

    role: str
    who: str

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


@dataclass(frozen=True)
class AdminGrant:
    """An admin sign-in held by one session until it expires or the person signs out."""

    who: str
    expires_at: datetime
    client: str | None = None  # a passphrase sign-in's RequestFacts.address: it administers for that client alone

    def active(self, now: datetime | None = None) -> bool:
        return (now or clock.now()) < self.expires_at


def session_user(facts: RequestFacts, *, local_admin: bool, grant: AdminGrant | None = None,
                 account: str | None = None, admin_account: bool = False,
                 now: datetime | None = None) -> User:
    """The role of this request: a live sign-in, an admin account, a local session (when allowed), else clinician."""
    # a grant is the session's, and a session's id travels in its upload URLs (kept in proxy logs) and lets
    # another connection take it over: it administers for the client that signed in alone (a review)
    if grant is not None and grant.active(now) and grant.client in (None, facts.address):
        return User(ADMIN, grant.who)
    if account and admin_account:
        return User(ADMIN, account)
    local = is_local(facts)
    if local and local_admin:
        return User(ADMIN, "local")
    return User(CLINICIAN, account or ("local" if local else "remote"))
