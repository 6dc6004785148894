"""Triage: upload films, get a worklist with urgent films first, and look at each film with its explanation."""
import streamlit as st

from core.errors import CheckpointError
from dashboard.components.model_card import model_card
from dashboard.components.triage_view import (
    CAM_TITLES,
    METHODS,
    WORKLIST_COLUMNS,
    film_card,
    pick_model,
    status_of,
    worklist,
    worklist_csv,
    worklist_key,
)
from dashboard.state import Upload, predictor_for, registered_models, triage_uploads

FILMS_PER_PAGE = 6

st.title("Triage")
st.caption("Upload chest films to get a reading order: films the model calls abnormal come first. "
           "A research and triage aid, not a diagnosis.")

entry = pick_model(*registered_models())
if entry is None:
    st.warning("No model is registered yet, so films cannot be triaged. Train one on the Retrain page.",
               icon=":material/warning:")
    st.page_link("views/retrain.py", label="Go to Retrain", icon=":material/model_training:")
    st.stop()
with st.sidebar.expander("Model card", expanded=True, icon=":material/description:"):
    model_card(entry)

uploads = st.file_uploader(
    "Chest films", accept_multiple_files=True, key="films",
    help="PNG, JPEG or DICOM, one or many at once. DICOM files without an extension are recognised too. "
         "Films stay in memory and are never stored.",
)
try:
    predictor = predictor_for(entry)
except CheckpointError as exc:
    st.error(f"Model {entry.name} cannot be used: {exc} Choose another model in the sidebar.",
             icon=":material/error:")
    st.stop()
if not uploads:
    st.info("Upload one or more films above. Each gets probabilities, a priority and a Grad-CAM map.",
            icon=":material/upload_file:")
    st.stop()

uploads = [Upload.of(upload) for upload in uploads]
results = triage_uploads(predictor, uploads)

st.subheader("Worklist")
statuses = [status_of(r) for r in results]
with st.container(horizontal=True):
    for title, status in (("Urgent", "urgent"), ("Routine", "routine"), ("Not triaged", "not triaged"),
                          ("Unreadable", "unreadable")):
        st.metric(title, statuses.count(status), border=True)
st.dataframe(worklist(results), hide_index=True, column_config=WORKLIST_COLUMNS, key="worklist", placeholder="—")
st.download_button("Download worklist (CSV)", worklist_csv(results, predictor.name), file_name="worklist.csv",
                   mime="text/csv", icon=":material/download:", on_click="ignore")

st.subheader("Films")
settings = st.columns([1, 1, 2])
method = settings[0].selectbox("Explanation method", METHODS, format_func=CAM_TITLES.get,
                               help="How the heat map is computed; Grad-CAM is the usual choice.")
opacity = settings[1].slider("Heat map opacity", 0.0, 1.0, 0.4, 0.05,
                             help="0 shows the film alone, 1 the heat map alone.")
films = sorted(zip(results, uploads), key=lambda pair: worklist_key(pair[0]))
pages = -(-len(films) // FILMS_PER_PAGE)
page = st.pagination(pages, key="film-page") if pages > 1 else 1
first = (page - 1) * FILMS_PER_PAGE
for slot, (result, upload) in enumerate(films[first: first + FILMS_PER_PAGE], start=first):
    film_card(result, upload, predictor, method, opacity, slot)
