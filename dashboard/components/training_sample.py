"""The Retrain page's look at a training source's films before a job starts: Triage's film checks on a sample
(core.training.source_check), cached per source and its contents."""
from __future__ import annotations

from datetime import timedelta

import streamlit as st

from core.training.source_check import SampleCheck
from dashboard.labels import PATHS_HASHED


@st.cache_data(max_entries=16, ttl=timedelta(minutes=10), show_spinner="Checking a sample of the films…",
               hash_funcs=PATHS_HASHED)
def sample_check(source: str, stamp: str) -> SampleCheck:
    """``stamp``: dashboard.training_source.source_stamp, so films that come or go are checked again."""
    from core.films.manifest import training_films
    from core.training.source_check import check_sample

    return check_sample(training_films(source)[0])


def sample_warning(found: SampleCheck) -> str | None:
    """What the page says about the sample, or None when every film looked like a chest film."""
    said = []
    if found.not_chest:
        said.append(f"{found.not_chest} of {found.checked} films sampled from this source do not look like usable "
                    "chest films (the checks Triage uses to leave such images untriaged). A model trained on them "
                    "learns something other than chest disease: check the folder before training.")
    if found.unreadable:
        said.append(f"{found.unreadable} sampled film(s) could not be read at all; training stops at the first "
                    "film it cannot read.")
    if found.unscreened and not said:
        said.append("The chest-film check is unavailable here, so only the images' statistics were checked.")
    return " ".join(said) or None
