"""What the Triage page says about the uploads themselves, above the worklist: copies of one file, and films the
server did not receive (dashboard.upload_store). Names are made literal: a file name is never read as Markdown."""
from __future__ import annotations

from typing import TYPE_CHECKING

from core.config import settings
from dashboard.components.reports import escape_markdown

if TYPE_CHECKING:
    from dashboard.upload_store import Refusals

SHOWN = 5  # copies of one film named in the warning; the rest are counted


def repeated_warning(repeats: list[tuple[str, str]]) -> str:
    """The warning above the worklist for uploads that are copies of an earlier one, given as (copy, original):
    one sentence per original, at most ``SHOWN`` copies named in it (names made literal)."""
    copies: dict[str, list[str]] = {}
    for copy, original in repeats:
        copies.setdefault(original, []).append(copy)
    sentences = []
    for original, names in copies.items():
        shown = ", ".join(escape_markdown(name) for name in names[:SHOWN])
        more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
        verb = "is" if len(names) == 1 else "are"
        sentences.append(f"{shown}{more} {verb} the same file as {escape_markdown(original)}")
    return (f"{'; '.join(sentences)}. Each upload is listed and counted on its own; remove the copies from the "
            "upload box if the same film was chosen twice.")


def refused_warnings(refused: Refusals) -> list[str]:
    """One error per reason for films the server did not receive, named as (why, name) with ``why`` "session" or
    "server" (dashboard.upload_store), and one for those refused past the names kept; names made literal."""
    from streamlit import config

    from core.serving.batch_limits import MEGABYTE, session_upload_limits

    films, size = session_upload_limits(float(config.get_option("server.maxUploadSize")))
    batch = settings().batch_max_films
    reasons = {  # "session": not "already held", as if from before: a browser review chose 121 films on a new page;
        # films or megabytes, whichever ran out (a re-read: four films of 200 MB were told of 100 films)
        "session": (f"More was chosen on this page than the server takes from one page at once ({films} films or "
                    f"{size // MEGABYTE:,} MB), so it stopped receiving them. Remove films from the upload box and "
                    f"triage them in batches of at most {batch}."),
        "server": ("The server is holding as many uploaded films as it may for all its users at once. Remove these "
                   "from the upload box and upload them again in a few minutes."),
    }
    messages = []
    for why, reason in reasons.items():
        names, more = [escape_markdown(name) for kind, name in refused.named if kind == why], refused.more.get(why, 0)
        films = ", ".join(names)
        if more:  # past the names kept: counted, each under its own reason
            counted = f"{more}{' more' if names else ''} film{'s' if more > 1 else ''}"
            films = (f"{films} and {counted}" if names else counted) + " (not named here or in the downloaded worklist)"
        if films:
            messages.append(f"Not received, so not on any worklist: {films}. {reason}")
    return messages
