"""Triage: upload films, get a worklist with urgent films first, and look at each film with its explanation.

Drawn before the model is up: the upload box appears first, the model loads in the background meanwhile
(dashboard.model_loads.warm_up), probabilities show as soon as they exist and the Grad-CAM overlays last.
"""
import hashlib
import time
from contextlib import nullcontext

import streamlit as st

st.title("Triage")
st.caption("Upload chest films to get a reading order: films the model calls abnormal come first. "
           "A research and triage aid, not a diagnosis.")
upload_box = st.empty()  # first on screen: nothing slow to import comes before it (see below)
uploads = upload_box.file_uploader(
    "Chest films", accept_multiple_files=True, key="films",
    help="PNG, JPEG or DICOM, one or many at once. DICOM files without an extension are recognised too. "
         "Films stay in memory and are never stored.",
)

# Imported only now that the upload box is drawn: pydantic, pydicom and pandas take a second or more
# on a fresh server. The default model of the session's task starts loading in the background at once.
from core.errors import BatchTooLarge  # noqa: E402
from core.serving.batch_limits import check_batch  # noqa: E402
from core.serving.in_flight import Patience  # noqa: E402
from dashboard.components.access import current_user  # noqa: E402
from dashboard.components.no_models import as_seen_by, no_models  # noqa: E402
from dashboard.components.task_choice import models_of, pick_task, remembered_task, with_defaults  # noqa: E402
from dashboard.model_loads import foreground, warm_up  # noqa: E402
from dashboard.state import (  # noqa: E402
    distinct_names,
    forget_other_films,
    registered_models,
    repeated_uploads,
    triage_uploads,
    uploads_of,
)
from dashboard import kept_batch  # noqa: E402
from dashboard.components.upload_messages import refused_warnings, repeated_warning  # noqa: E402
from dashboard.upload_store import refused_uploads  # noqa: E402

models, problems = registered_models()
problems = as_seen_by(problems, current_user().is_admin)  # a clinician is not told how to repair a model file
models, without_default = with_defaults(models)  # a task is triaged only with a default that cleared the floor
if models:
    warm_up(models_of(models, remembered_task(models))[0])  # the session's task's default

from dashboard.components.model_card import model_card  # noqa: E402
from dashboard.components.kept_settings import keep, last_value, restore  # noqa: E402
from dashboard.components.model_choice import pick_model  # noqa: E402
from dashboard.components.triage_view import CAM_TITLES, METHODS, await_model, film_card  # noqa: E402
from dashboard.components.worklist import (  # noqa: E402
    ATYPICAL,
    status_of,
    worklist_csv,
    worklist_key,
    worklist_table,
)

FILMS_PER_PAGE = 6
METHOD_KEY, OPACITY_KEY, PAGE_KEY = "explanation-method", "heat-map-opacity", "film-page"  # kept_settings

task = pick_task(models, without_default)
entry = pick_model(models_of(models, task), problems, task)
if entry is None:
    upload_box.empty()  # nothing to triage with
    is_admin = current_user().is_admin
    st.warning(no_models(problems, "No task has a usable default model, so films cannot be triaged (see the sidebar)."
                         if without_default else "No model is registered yet, so films cannot be triaged.", is_admin,
                         "Train one, or make one the default, on the Retrain page."), icon=":material/warning:")
    if is_admin:
        st.page_link("views/retrain.py", label="Go to Retrain", icon=":material/model_training:")
    st.stop()
loading = warm_up(entry)  # the chosen model (usually that default, already on its way)
with st.sidebar.expander("Model card", expanded=True, icon=":material/description:"):
    model_card(entry)
refused = refused_uploads([upload.name for upload in uploads or []])
for message in refused_warnings(refused):
    st.error(message, icon=":material/cloud_off:")
kept = None if uploads else kept_batch.kept_on_return()  # the batch shown before a visit to another page
if kept:
    st.info(f"The {len(kept)} file(s) uploaded before you left this page are shown again; the upload box starts "
            "empty after a page switch. Upload films to replace them.", icon=":material/history:")  # "film(s)
    # triaged" counted an unreadable text file among them (a browser review)
    if st.button("Clear these films", icon=":material/delete:"):
        kept_batch.clear()
        st.rerun()
elif not uploads:
    forget_other_films([])  # films taken out of the upload box leave this session's caches too
    if lost := kept_batch.lost_on_return():
        st.warning(f"The {lost} file(s) uploaded before you left this page were not kept while you were away: the "
                   "server needed the memory for other users' films. Upload them again to see their readings.",
                   icon=":material/history_toggle_off:")
    st.info("Upload one or more films above. Each gets probabilities, a priority and a Grad-CAM map.",
            icon=":material/upload_file:")
else:
    try:
        # before any film is read: a shared server; the films it did not receive belong to the batch chosen too
        check_batch([upload.size for upload in uploads], len(refused.named) + sum(refused.more.values()))
    except BatchTooLarge as exc:
        kept_batch.clear()  # the batch it replaced left the box: a visit elsewhere must not bring it back
        forget_other_films([])
        st.error(str(exc), icon=":material/block:")
        st.stop()
# From here until every reading is on screen, a browser is waiting: the Grad-CAM library's background import
# pauses between its steps meanwhile (dashboard.model_loads.Foreground); the overlays come after it.
with foreground.working() if uploads or kept else nullcontext():
    predictor = await_model(loading)  # a broken model is reported now, not after the first upload
    if predictor is None or not (uploads or kept):
        if uploads:  # a new batch the model could not read replaces the one kept before it all the same
            kept_batch.clear()
            forget_other_films([])
        st.stop()

    uploads = kept or distinct_names(uploads_of(uploads))
    if not kept:
        kept_batch.keep(uploads)
    forget_other_films(uploads)
    reading, so_far, classes, began = st.empty(), st.empty(), predictor.loaded.classes, time.monotonic()

    def read_so_far(results: list) -> None:  # each reading as it comes, in reading order so far (a review: a batch
        # showed nothing but its progress until its last film); not for a batch read before, which takes no time
        if len(results) < len(uploads) and time.monotonic() - began > 0.5:
            worklist_table(results, classes, so_far)

    results = triage_uploads(predictor, uploads, on_film=lambda done, total: reading.caption(
        f"Reading film {done + 1} of {total}… the films read so far are listed below in reading order; the "
        "worklist and the films' cards follow once all are read.") if total > 1 else None, on_result=read_so_far)
    reading.empty()
    so_far.empty()

    st.subheader("Worklist")
    statuses = [status_of(r) for r in results]
    with st.container(horizontal=True):
        # the counts in the worklist's reading order (a worklist review)
        for title, status in (("Urgent", "urgent"), ("Not read yet", "not read yet"), ("Not triaged", "not triaged"),
                              ("Unreadable", "unreadable"), ("Routine, atypical", ATYPICAL), ("Routine", "routine")):
            if status not in ("not read yet", ATYPICAL) or status in statuses:  # only when there are such films
                st.metric(title, statuses.count(status), border=True)
        if refused.named or refused.more:  # films of this batch the server did not receive: named above, counted
            st.metric("Not received", len(refused.named) + sum(refused.more.values()), border=True)  # here, CSV rows
    repeats = repeated_uploads(uploads)
    if repeats:
        st.warning(repeated_warning(repeats), icon=":material/content_copy:")
    worklist_table(results, classes, key="worklist")
    st.download_button("Download worklist (CSV)", worklist_csv(results, predictor.name, classes,
                                                               [name for _, name in refused.named]),
                       file_name="worklist.csv", mime="text/csv", icon=":material/download:", on_click="ignore")

    st.subheader("Films")
    settings = st.columns([1, 1, 2])
    method = keep(METHOD_KEY, settings[0].selectbox(
        "Explanation method", METHODS, format_func=CAM_TITLES.get, key=restore(METHOD_KEY, METHODS[0], METHODS),
        help="How the heat map is computed; Grad-CAM is the usual choice."))
    opacity = keep(OPACITY_KEY, settings[1].slider(
        "Heat map opacity", 0.0, 1.0, step=0.05, key=restore(OPACITY_KEY, 0.4),
        help="0 shows the film alone, 1 the heat map alone."))
    # each card keyed by its upload's place, not its place in the worklist: a film read again moves in the list,
    # and its class picker kept the reader's choice only while it stayed put (a review)
    films = sorted(enumerate(zip(results, uploads)), key=lambda item: worklist_key(item[1][0]))
    pages = -(-len(films) // FILMS_PER_PAGE)
    # one page number per batch: a new batch opens on its first page, where its urgent cards are (a review: the
    # last batch's page carried over), and a batch shown again where its reader left it
    batch_page = f"{PAGE_KEY}-{hashlib.sha256(''.join(r.digest for r in results).encode()).hexdigest()[:16]}"
    page = keep(batch_page, st.pagination(pages, default=last_value(batch_page, 1, range(1, pages + 1)),
                                          key=batch_page)) if pages > 1 else 1
    first = (page - 1) * FILMS_PER_PAGE
    explanations = [film_card(result, upload, predictor, method, opacity, slot)
                    for slot, (result, upload) in films[first: first + FILMS_PER_PAGE]]
patience = Patience()  # every reading is on screen; now the overlays, the rest not waiting once one found it busy
for draw_explanation in filter(None, explanations):
    draw_explanation(patience)
