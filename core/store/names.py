"""What a model may be called: a file name in one folder, never a path.

Every place that accepts a name (``train --name``, calibrate, background jobs, registry look-ups) checks it
here before the name reaches a file system call, so ``../escaped`` or ``/etc/x`` can never name a file
outside the models folders, and glob characters can never widen a search.
"""
from __future__ import annotations

import re

from core.errors import InvalidModelName

MAX_LENGTH = 64
MAX_BASE_LENGTH = MAX_LENGTH - len("-v999")  # a base name leaves room for the version added to it
_ALLOWED = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_LENGTH}}}")


def check_model_name(name: object) -> str:
    """``name`` when it is 1-64 letters, digits, ``.``, ``_`` or ``-`` and does not start with a dot."""
    if is_model_name(name):
        return name
    # The name itself is not repeated: it is whatever someone typed, possibly a server path.
    raise InvalidModelName(f"A model name must be 1 to {MAX_LENGTH} letters, digits, '.', '_' or '-', and must "
                           "not start with a dot; choose another name.")


def is_model_name(name: object) -> bool:
    # fullmatch, not match with "$": "$" would let a trailing newline through
    return isinstance(name, str) and bool(_ALLOWED.fullmatch(name)) and not name.startswith(".")


def check_base_name(name: object) -> str:
    """``name`` when it can take a version suffix (``name-vN``) and still be a model name: checked before a run
    whose version is named only when it is saved, minutes later."""
    check_model_name(name)
    if len(name) > MAX_BASE_LENGTH:
        raise InvalidModelName(f"A model name may be at most {MAX_BASE_LENGTH} characters: its version (such as "
                               "-v12) is added to it. Choose a shorter name.")
    return name
