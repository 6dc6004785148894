"""The admin passphrase: stored only as a salted scrypt hash, checked in constant time.

Make a hash for ``CXR_ADMIN_PASSPHRASE_HASH`` with ``python -m core.access.passphrase``: it asks for the
passphrase twice without echoing it (or reads one line from a pipe) and prints the hash, which looks like
``scrypt:32768:8:1:<salt>:<key>`` (base64, no ``$``, so it survives shells, systemd and compose files).
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass, replace
from typing import Callable

from core.access.errors import SignInUnavailable
from core.wording import json_line

SCHEME = "scrypt"
COST, BLOCK_SIZE, PARALLELISM = 2**15, 8, 1  # 32 MiB and about 0.1 s per check
KEY_BYTES, SALT_BYTES = 32, 16
MIN_LENGTH = 12
# A hash from elsewhere could ask for any cost; these bounds, and one check's memory at most _MAX_MEMORY, keep a
# check under 1 GiB. The first alone allowed 2**20 x 32 (4 GiB), which OpenSSL refuses at every sign-in: no one
# could administer, and the page met a ValueError (a review).
_MAX_COST, _MAX_BLOCK_SIZE, _MAX_PARALLELISM, _MAX_MEMORY = 2**20, 32, 16, 2**30 + 2**20
_SETTING = "CXR_ADMIN_PASSPHRASE_HASH"


@dataclass(frozen=True)
class PassphraseHash:
    cost: int
    block_size: int
    parallelism: int
    salt: bytes
    key: bytes

    def __str__(self) -> str:
        return ":".join((SCHEME, str(self.cost), str(self.block_size), str(self.parallelism),
                         _encode(self.salt), _encode(self.key)))

    def derive(self, passphrase: str) -> bytes:
        memory = 128 * self.block_size * (self.cost + self.parallelism + 2)
        return hashlib.scrypt(passphrase.encode("utf-8"), salt=self.salt, n=self.cost, r=self.block_size,
                              p=self.parallelism, maxmem=memory + 2**20, dklen=len(self.key))


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def hash_passphrase(passphrase: str, *, salt: bytes | None = None) -> str:
    """A new salted hash of ``passphrase`` (at least MIN_LENGTH characters) in the form the setting takes."""
    if len(passphrase) < MIN_LENGTH:
        raise ValueError(f"The passphrase must be at least {MIN_LENGTH} characters long.")
    unkeyed = PassphraseHash(COST, BLOCK_SIZE, PARALLELISM, salt or secrets.token_bytes(SALT_BYTES), bytes(KEY_BYTES))
    return str(replace(unkeyed, key=unkeyed.derive(passphrase)))


def parse_hash(text: str) -> PassphraseHash:
    """The configured hash, or SignInUnavailable saying how to make a proper one (the value is never quoted)."""
    problem = SignInUnavailable(f"{_SETTING} is not a hash made by `python -m core.access.passphrase`; "
                                "make a new one and set it again.")
    parts = text.strip().split(":")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise problem
    try:
        cost, block_size, parallelism = (int(p) for p in parts[1:4])
        salt, key = _decode(parts[4]), _decode(parts[5])
    except ValueError:  # binascii.Error is one
        raise problem from None
    if not (1 < cost <= _MAX_COST and cost & (cost - 1) == 0 and 0 < block_size <= _MAX_BLOCK_SIZE
            and 0 < parallelism <= _MAX_PARALLELISM and len(salt) >= 8 and len(key) >= 16
            and 128 * block_size * (cost + parallelism + 2) <= _MAX_MEMORY):
        raise problem
    return PassphraseHash(cost, block_size, parallelism, salt, key)


def verify_passphrase(passphrase: str, stored: str | PassphraseHash) -> bool:
    """Whether ``passphrase`` matches ``stored``; the comparison takes the same time wherever they differ."""
    stored = parse_hash(stored) if isinstance(stored, str) else stored
    return hmac.compare_digest(stored.derive(passphrase), stored.key)


def main(argv: list[str] | None = None, *, ask: Callable[[str], str] = getpass.getpass) -> int:
    """Ask for a passphrase twice (no echo) and print its hash; from a pipe, read one line instead."""
    del argv  # no options: the passphrase never travels on the command line, where `ps` would show it
    try:
        if sys.stdin is not None and not sys.stdin.isatty() and ask is getpass.getpass:
            first = second = sys.stdin.readline().rstrip("\r\n")
        else:
            first = ask("Admin passphrase: ")
            second = ask("Again: ")
        if first != second:
            raise ValueError("The two passphrases differ; nothing was made.")
        print(hash_passphrase(first))
    except (ValueError, EOFError, KeyboardInterrupt) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "No passphrase was given; nothing was made."
        print(json_line({"error": message}))
        return 1
    print(f"Set {_SETTING} to the line above (see README: Running on a hospital network).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
