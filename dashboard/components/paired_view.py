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
               "with a 95 % interval from resampling those films once for both (films, not patients: a folder says "
               "nothing of who a film belongs to). An interval that holds 0 does not show a difference. "
               "Sensitivity and specificity are at each model's own operating point; McNemar's exact test asks "
               "whether the films only one of the two called right (abnormal or normal) lean one way more than "
               "chance would. On few films most gaps are not shown; a side-by-side table overstates none of this "
               "but cannot tell it either.")


def paired_table(readings: list[tuple[str, FilmScores]]) -> pd.DataFrame:
    from core.evaluation.paired import paired_difference, verdict

    rows = []
    for (first, one), (second, two) in combinations(readings, 2):
        diff = paired_difference(one, two)
        if diff is None:
            continue
        rows.append({
            "Models (first − second)": f"{first} − {second}", "Films": diff.n,
            "AUC difference": signed_difference(diff.auc, diff.auc_ci, points=False),
            "Sensitivity difference": signed_difference(diff.sensitivity, diff.sensitivity_ci, points=True),
            "Specificity difference": signed_difference(diff.specificity, diff.specificity_ci, points=True),
            "Only the first right": diff.first_only_right, "Only the second right": diff.second_only_right,
            "McNemar p": f"{diff.p_value:.3g}", "What the films show": verdict(diff, first, second),
        })
    return pd.DataFrame(rows)


def paired_differences(readings: list[tuple[str, FilmScores | None]]) -> None:
    """The table under the side-by-side figures, when two models or more read the folder abnormal against normal."""
    usable = [(name, films) for name, films in readings if films is not None]
    if len(usable) < 2:
        return
    table = paired_table(usable)
    if table.empty:
        return
    st.subheader("Paired differences on the same films")
    st.dataframe(table, hide_index=True, key="paired-differences")
    st.caption(PAIRED_NOTE)
