"""Compare's paired differences: every pair of models that read the same folder, film by film
(core.evaluation.paired), so a gap between two models' figures is called a difference only when the films say so."""
from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

if TYPE_CHECKING:  # scikit-learn and SciPy: imported when a folder is evaluated, not when the page draws
    from core.evaluation.paired import FilmScores, PairedDifference

PAIRED_NOTE = ("Each row reads two models on the films both read, the second's figure subtracted from the first's, "
               "with a 95 % interval from resampling those films once for both (films, not patients: a folder says "
               "nothing of who a film belongs to). An interval that holds 0 does not show a difference. "
               "Sensitivity and specificity are at each model's own operating point; McNemar's exact test asks "
               "whether the films only one of the two called right (abnormal or normal) lean one way more than "
               "chance would. On few films most gaps are not shown; a side-by-side table overstates none of this "
               "but cannot tell it either.")


def signed(value: float | None, interval, points: bool) -> str:
    """``+0.012 (−0.004 to +0.029)``, or in percentage points ``+3.1 pts (−1.0 to +7.2)``; "—" when missing."""
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


def verdict(diff: PairedDifference, first: str, second: str) -> str:
    """In words: which model the films favour, on ranking (the AUC interval) and on its calls (McNemar)."""
    said = []
    if diff.auc_ci and (diff.auc_ci[0] > 0 or diff.auc_ci[1] < 0):
        said.append(f"{first if diff.auc_ci[0] > 0 else second} ranks these films better")
    if diff.p_value < 0.05:
        said.append(f"{first if diff.first_only_right > diff.second_only_right else second} calls more of them "
                    f"right (p = {diff.p_value:.3g})")
    return "; ".join(said) if said else "No difference shown on these films"


def paired_table(readings: list[tuple[str, FilmScores]]) -> pd.DataFrame:
    from core.evaluation.paired import paired_difference

    rows = []
    for (first, one), (second, two) in combinations(readings, 2):
        diff = paired_difference(one, two)
        if diff is None:
            continue
        rows.append({
            "Models (first − second)": f"{first} − {second}", "Films": diff.n,
            "AUC difference": signed(diff.auc, diff.auc_ci, points=False),
            "Sensitivity difference": signed(diff.sensitivity, diff.sensitivity_ci, points=True),
            "Specificity difference": signed(diff.specificity, diff.specificity_ci, points=True),
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
