"""Small helpers for the sentences core writes into messages, notes and reports."""
from __future__ import annotations


def and_list(words: list[str]) -> str:
    """["a"] -> "a"; ["a", "b", "c"] -> "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
