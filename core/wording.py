"""Small helpers for the sentences core writes into messages, notes and reports."""
from __future__ import annotations

import math
import unicodedata


def and_list(words: list[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def megabytes_over(size_mb: float, limit_mb: float) -> str:
    """A size past ``limit_mb``, never written as the limit itself ("250 MB (at most 250 MB)"): whole megabytes,
    else tenths rounded up."""
    return f"{size_mb:,.0f}" if round(size_mb) > limit_mb else f"{math.ceil(size_mb * 10) / 10:,.1f}"


def json_line(value: object, **dumps_options) -> str:
    """``value`` as JSON for the command line, every string made valid Unicode first. A file name that is not
    valid UTF-8 reaches Python with lone surrogates, which ``json.dumps`` would write as ``\\udcff`` escapes
    that strict JSON parsers refuse; here they are spelled out as the six characters ``\\udcff``, as the
    command's text output prints them."""
    import json

    return json.dumps(_valid_unicode(value), **dumps_options)


def one_line(text: str) -> str:
    """``text`` for one line of the command's text output: control characters (a newline or carriage return in a
    file name would start a line of its own, with a reading of its choosing) and lone surrogates spelled as
    escapes, everything else as it is."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def _valid_unicode(value: object) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_valid_unicode(key): _valid_unicode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid_unicode(item) for item in value]
    return value
