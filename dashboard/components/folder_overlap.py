"""Whether the models evaluated on a folder learned from its films, or had their threshold chosen on them: said
beside their figures on Compare (core.evaluation.overlap's answers, worked out once per folder state)."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import streamlit as st

from core.evaluation.overlap import calibrated_on, trained_on
from core.store.records import read_model_record
from core.store.registry import ModelEntry
from core.store.reports import Report
from dashboard.labels import PATHS_HASHED


@st.cache_data(max_entries=64, ttl=timedelta(hours=1), show_spinner=False, hash_funcs=PATHS_HASHED)
def _overlaps(json_path: str, weights_sha256: str, folder: str, stamp: str) -> tuple[bool, bool]:
    """(trained or validated on films in ``folder``, threshold chosen on films in it) for the version at
    ``json_path`` (``weights_sha256`` and the folder's ``stamp`` key it): each answer walks the whole folder for
    links, so every rerun walked it twice per model, about 3 s a model for 100,000 films (a resource review)."""
    record = read_model_record(Path(json_path))
    return trained_on(record, folder), calibrated_on(record, folder)


def training_films_caveat(rows: list[tuple[ModelEntry, Report]], folder: str, stamp: str) -> None:
    """Warn when a model evaluated on ``folder`` (as of its ``stamp``) was trained or validated on films in it, or
    had its threshold chosen on them."""
    found = {entry.name: _overlaps(str(entry.json_path), entry.record.weights_sha256, folder, stamp)
             for entry, _ in rows}
    learned = [name for name, (trained, _) in found.items() if trained]
    if learned:
        st.warning(f"{', '.join(f'`{name}`' for name in learned)} learned from films in this folder (it holds the "
                   "films they were trained or validated on), so their figures here overstate what they do on new "
                   "films. Evaluate on films kept out of training, such as another batch or a site's own films.",
                   icon=":material/warning:")
    chosen = [name for name, (_, calibrated) in found.items() if calibrated]
    if chosen:  # found by a review: a site-calibrated version's own calibration films were shown without a word
        st.warning(f"{', '.join(f'`{name}`' for name in chosen)} had its threshold chosen on films in this folder "
                   "(its site calibration), so its sensitivity here is met by construction and its specificity "
                   "is not a fresh measurement. Evaluate it on other films of the site.", icon=":material/warning:")
