"""Entry point: ``streamlit run dashboard/app.py`` (or ``make run``). Only routes to the pages."""
import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path; core/ lives beside it
    sys.path.insert(0, str(ROOT))

from dashboard.components.access import access_sidebar  # noqa: E402 - needs ROOT on the path (above)

# The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the entry file as a
# legacy multipage app until st.navigation first runs, so a deep link (/retrain) on a fresh server would run
# the page without this router.
# An emoji favicon is drawn in the browser; a material one is fetched from fonts.gstatic.com, which a hospital
# network may not reach and the README's Content-Security-Policy does not allow.
st.set_page_config(page_title="Chest X-ray triage", page_icon="🩻", layout="wide")
pages = st.navigation([
    st.Page(HERE / "views" / "triage.py", title="Triage", icon=":material/radiology:", default=True),
    st.Page(HERE / "views" / "compare.py", title="Compare models", icon=":material/compare_arrows:"),
    st.Page(HERE / "views" / "retrain.py", title="Retrain", icon=":material/model_training:"),
])
# Who may administer is decided on every run, per request (core.access); pages ask current_user().
access_sidebar()
# Which page ran before this one: Triage shows its last batch again after a visit elsewhere (dashboard.kept_batch).
# (getattr: a page run outside `streamlit run`, as a spawned process's main module, has no title)
st.session_state["previous-page"] = st.session_state.get("page")
st.session_state["page"] = getattr(pages, "title", None)
if st.session_state["previous-page"] not in (None, st.session_state["page"]):
    from dashboard import kept_batch  # not before the first page draws: see views/triage.py
    from dashboard.upload_store import release_left_uploads

    release_left_uploads()  # the left page's upload box is gone, but Streamlit still held its films
    kept_batch.charge_left_batch()  # held here alone from now on: under the caches' budget
pages.run()
