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


def fixed(value: float, digits: int, whole: float = 1.0) -> str:
    """``value`` to ``digits`` decimals, or to as many as three more where rounding would show a figure short of
    ``whole`` (1; 100 for a percentage) as whole, or one above 0 as 0 (found by a review: the default's other-batch
    AUC, 0.99967, read as a perfect "1.000"); past those, cut short rather than rounded up, or "<0.0001"."""
    for shown in range(digits, digits + 4):
        text = f"{value:.{shown}f}"
        if not (value < whole <= float(text) or float(text) <= 0 < value):
            return text
    if float(text) <= 0 < value:
        return f"<{10 ** -shown:.{shown}f}"  # above 0, under the last decimal shown
    return f"{math.floor(value * 10 ** shown) / 10 ** shown:.{shown}f}"  # short of whole: cut, not rounded up


def threshold_value(threshold: float, other: float | None = None) -> str:
    """A threshold as serving compares scores with it: to 5 decimals (trailing zeros dropped, never under 3), or
    to as many as tell it from ``other``. At 3, the default's 0.47098 read "0.471" on its card while the worklist
    showed a film at 0.47099 urgent, seemingly below it (found by a review). One at or under 0 (chosen a hair
    below a score of 0, so that every film is flagged) says so, never "-0.000" (a review)."""
    if threshold <= 0:
        return "0 (every film urgent)"
    text = fixed(threshold, max(5, digits_apart(threshold, other))).rstrip("0")
    return text if len(text.partition(".")[2]) >= 3 else f"{threshold:.3f}"


def digits_apart(value: float, other: float | None) -> int:
    """3, or the fewest decimals (at most 9) at which ``value`` and ``other`` read differently: at most 6, a score
    one float32 step under its threshold (0.47097996 against 0.47098) read as the threshold itself (a review)."""
    digits = 3
    while other is not None and digits < 9 and value != other and f"{value:.{digits}f}" == f"{other:.{digits}f}":
        digits += 1
    return digits


def percent(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{fixed(value * 100, digits, 100.0)} %"


def interval_text(interval: list[float] | None, as_percent: bool = True) -> str:
    if not interval:
        return "—"
    if as_percent:
        return f"{fixed(interval[0] * 100, 1, 100.0)}–{fixed(interval[1] * 100, 1, 100.0)}"
    return f"{fixed(interval[0], 3)}–{fixed(interval[1], 3)}"


def with_interval(value: float | None, interval: list[float] | None, as_percent: bool = True) -> str:
    """``86.1 % (78.5–93.7)``: the value and its 95 % interval. A resampled interval of no width (every resample
    of a few perfectly separated films gives AUC 1) bounds nothing, so it is not written as one."""
    if value is None:
        return "—"
    text = percent(value) if as_percent else fixed(value, 3)
    if interval and interval[0] == interval[1]:  # found in a browser audit: "AUC 1.000 (1.000–1.000)" on 16 films
        return f"{text} (no interval: every resample of these films gives the same value)"
    return f"{text} ({interval_text(interval, as_percent)})" if interval else text


def one_line(text: str) -> str:
    """``text`` for one line of the command's text output: control characters (a newline or carriage return in a
    file name would start a line of its own, with a reading of its choosing) and lone surrogates spelled as
    escapes, everything else as it is."""
    text = valid_text(text)
    return "".join(repr(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


_REORDERING = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A)], "\ufffd")  # bidi embeddings


def in_its_own_order(text: str) -> str:
    """``text`` with every character that reorders the text around it shown as U+FFFD: a file named with U+202E
    showed "gepj.exe" for "\u202eexe.jpeg" (a browser review of the Triage page's cards)."""
    return text.translate(_REORDERING)


def valid_text(text: str) -> str:
    """``text`` with the lone surrogates a file name that is not valid UTF-8 decodes to spelled as escapes
    ("M\\udcfcller"): a page or a JSON line can carry it (Streamlit's messages cannot carry the raw name)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _valid_unicode(value: object) -> object:
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, dict):
        return {_valid_unicode(key): _valid_unicode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid_unicode(item) for item in value]
    return value


def signed_difference(value: float | None, interval, points: bool) -> str:
    """A difference and its 95 % interval: ``+0.012 (−0.004 to +0.029)``, or in percentage points ``+3.1 pts (−1.0
    to +7.2)``; "—" when missing, and no interval where every resample gave the same value."""
    if value is None:
        return "—"

    def one(v: float) -> str:
        text = f"{v * 100:+.1f}" if points else f"{v:+.3f}"
        return text[1:] if not text.strip("+-0.") else text.replace("-", "−")  # 0.0, not +0.0 or −0.0

    unit = " pts" if points else ""
    if not interval:
        return one(value) + unit
    if interval[0] == interval[1]:  # "0.000 (0.000 to 0.000)" for two models perfect on a few films
        return f"{one(value)}{unit} (the same in every resample of these films)"
    return f"{one(value)}{unit} ({one(interval[0])} to {one(interval[1])})"
