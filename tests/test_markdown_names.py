"""Folder names reach pages that read Markdown (model cards, Compare, Retrain), and anyone who can make a folder
inside a data root chooses them: a security review found a backtick in one closing the code span it was shown in,
so the rest of its name became a live link ("Sign in again") on every clinician's model card."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pandas as pd
import pytest

from dashboard.components.reports import chosen_on, code_span, escape_markdown

HOSTILE = "site/x` [Sign in again](https://evil.example) :red[urgent] `y"


def _inside(span: str) -> str:
    """The text a CommonMark code span shows, after checking nothing inside can close it: a fence of N backticks
    closes only on a run of exactly N."""
    fence = re.match(r"`+", span).group(0)
    assert span.endswith(fence) and not span.endswith("`" + fence)
    body = span[len(fence):-len(fence)]
    assert len(fence) not in {len(run) for run in re.findall(r"`+", body)}
    return body[1:-1] if body.startswith(" ") and body.endswith(" ") and body.strip() else body


@pytest.mark.parametrize("name", ["shared-data/films", "site/a_b", HOSTILE, "`", "a``b`", "two\nlines", ""])
def test_a_name_in_a_code_span_cannot_end_it(name):
    assert _inside(code_span(name)) == (" ".join(name.splitlines()) or " ")


def test_the_site_folder_a_threshold_was_chosen_on_stays_inside_its_span():
    words = chosen_on(SimpleNamespace(folder=HOSTILE))
    assert words.startswith("the site folder ``") and _inside(words.removeprefix("the site folder ")) == HOSTILE
    assert chosen_on(SimpleNamespace(folder=None)) == "the same validation films"


def test_a_source_named_like_a_link_is_escaped_in_the_tables():
    table = pd.DataFrame({"Films": ["3"]}, index=[HOSTILE]).rename(index=escape_markdown)
    (shown,) = table.index
    assert "\\[Sign in again\\](" in shown and "\\`" in shown and "\\:red" in shown  # no link, no directive


def test_an_upload_named_to_reverse_its_text_is_named_in_its_own_order_everywhere():
    """A browser review: a file named "\\u202eexe.jpeg" showed as "gepj.exe" on its card, and the CSV kept the
    character; the name is set right where the upload is taken in, for the card, the worklist and the CSV."""
    from dashboard.components.worklist import worklist_csv
    from dashboard.state import FilmResult, Upload

    class Uploaded:
        name = "\u202eexe.jpeg"

        def getvalue(self):
            return b"not a film"

    upload = Upload.of(Uploaded())
    assert upload.name == "\ufffdexe.jpeg"
    csv = worklist_csv([FilmResult(upload.name, upload.digest, error="Cannot read it.")], "a model").decode("utf-8-sig")
    assert "\ufffdexe.jpeg" in csv and "\u202e" not in csv
