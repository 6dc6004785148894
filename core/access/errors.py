"""What signing in refuses, in words a person can act on (never which part of a credential was wrong)."""
from core.errors import TriageError


class SignInRefused(TriageError):
    """The passphrase was wrong, or too many attempts came too fast: the message says when to try again."""


class SignInUnavailable(TriageError):
    """No usable admin credential is configured here; the message names the setting that enables one."""
