"""Compare's paired differences: every pair of models that read the same folder, film by film
(core.evaluation.paired), so a gap between two models' figures is called a difference only when the films say so."""
from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from core.wording import signed_difference

if TYPE_CHECKING:  # scikit-learn and SciPy: imported when a folder is evaluated, not when the page draws
    from core.evaluation.paired import FilmScores

PAIRED_NOTE = ("Each row reads two models on the films both read, the second's figure subtracted from the first's, "
               "with a 95 % interval: for the AUC from resampling those films once for both (films, not patients: a "
               "folder says nothing of who a film belongs to), no narrower than Hanley–McNeil's with fewer than 20 "
               "films of a kind; for sensitivity and specificity, at each model's own operating point, Newcombe's "
               "for paired shares. *What the films show* names a model only where the AUC interval leaves out 0, or "
               "where the abnormal (or normal) films only one model called right lean its way by McNemar's exact "
               "test (p < 0.05, its p beside each difference): the exact test is the stricter of the two, so an "
               "interval that only just leaves out 0 can come with p above 0.05 and no model named. The last "
               "columns give that test on all films, which weighs this folder's mix of abnormal and normal films. No "
               "difference shown does not make two models equal. Each row makes three checks and is tested on its "
               "own: two models that do not differ are named in about one row in ten by chance")


def paired_note(rows: int) -> str:
    """:data:`PAIRED_NOTE` with the chance of a name by chance alone in a table of ``rows`` rows (a browser review:
    one row of two models was told what six rows of four make likely)."""
    if rows <= 1:
        return f"{PAIRED_NOTE}."
    chance = 1 - 0.9 ** rows
    return (f"{PAIRED_NOTE}, so in these {rows} rows a name somewhere by chance alone is "
            f"{'about as likely as not' if 0.4 <= chance <= 0.6 else f'about {chance * 100:.0f} % likely'}.")


def paired_table(readings: list[tuple[str, FilmScores]]) -> pd.DataFrame:
    """One row per pair of models, in the order chosen."""
    from core.evaluation.paired import paired_difference, verdict

    rows = []
    for (first, one), (second, two) in combinations(readings, 2):
        try:
            diff = paired_difference(one, two)
        except ValueError:  # two readings that disagree on a film's class (a folder changed between them)
            rows.append({"Models (first − second)": f"{first} − {second}", "What the films show": (
                "Not compared: the two readings give some films different classes. Press Evaluate again.")})
            continue
        if diff is None:
            continue
        rows.append({
            "Models (first − second)": f"{first} − {second}", "Films": diff.n,
            "AUC difference": signed_difference(diff.auc, diff.auc_ci, points=False),
            "Sensitivity difference": signed_difference(diff.sensitivity, diff.sensitivity_ci, points=True),
            "Sensitivity: McNemar p": _p(diff.sensitivity_p),
            "Specificity difference": signed_difference(diff.specificity, diff.specificity_ci, points=True),
            "Specificity: McNemar p": _p(diff.specificity_p),
            "What the films show": verdict(diff, first, second),
            "Only the first right": diff.first_only_right, "Only the second right": diff.second_only_right,
            "McNemar p (all films)": f"{diff.p_value:.2g}",
        })
    return pd.DataFrame(rows)


def _p(value: float | None) -> str | None:
    """A p-value as the table gives it (None: no films of that kind)."""
    return None if value is None else f"{value:.2g}"


@st.cache_data(max_entries=16, show_spinner=False)
def _table(readings: list[tuple[str, FilmScores]]) -> pd.DataFrame:
    """:func:`paired_table`, once per set of readings: not again at every rerun of the page (a folder of 100,000
    films takes seconds a pair)."""
    return paired_table(readings)


def paired_differences(readings: list[tuple[str, FilmScores | None]]) -> None:
    """The table under the side-by-side figures, when two models or more read the folder abnormal against normal."""
    usable = [(name, films) for name, films in readings if films is not None]
    if len(usable) < 2:
        return
    table = _table(usable)
    if table.empty:
        return
    st.subheader("Paired differences on the same films")
    st.dataframe(table, hide_index=True, key="paired-differences")
    st.caption(paired_note(len(table)))
