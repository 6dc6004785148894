"""Drawing the triage page: the model picker, the model's loading state, the worklist and one card per film.

Imports nothing that loads torch: the page draws before the model is up (see dashboard.state). Upload names
are often a patient's name and may be hostile: they are drawn as plain text (``st.text``, tables) or escaped
where an element reads Markdown, and the worklist CSV neutralises cells a spreadsheet would run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pandas as pd
import streamlit as st

from core.errors import CheckpointError, TriageError
from core.serving.explain import CAM_METHODS, CLASS_FREE_METHODS, overlay
from core.store.registry import ModelEntry
from core.tasks import find_normal_index
from dashboard.components.reports import escape_markdown, spreadsheet_safe
from dashboard.model_loads import ModelLoad
from dashboard.state import FilmResult, Upload, heat_map

if TYPE_CHECKING:
    from core.serving.predict import Predictor

CAM_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
              "layercam": "LayerCAM", "eigencam": "Eigen-CAM"}
METHODS = [m for m in CAM_TITLES if m in CAM_METHODS] + [m for m in CAM_METHODS if m not in CAM_TITLES]
URGENT, ROUTINE = "urgent", "routine"  # Prediction.priority's values (core.serving.predict, which loads torch)
NOT_TRIAGED, UNREADABLE = "not triaged", "unreadable"
WAIT_STEP_S = 0.25  # how often a page waiting for its model lets an upload or a click interrupt it
_RANK = {URGENT: 0, ROUTINE: 1, NOT_TRIAGED: 2, UNREADABLE: 3}
_BADGES = {URGENT: ("Urgent", "red", ":material/priority_high:"), ROUTINE: ("Routine", "green", ":material/check:"),
           NOT_TRIAGED: ("Not triaged", "gray", ":material/help:"),
           UNREADABLE: ("Unreadable", "gray", ":material/block:")}
CHOSEN_MODELS = "chosen_models"  # task -> model name; survives page switches, unlike the widget's own state
MODEL_WIDGET = "model-choice"
REPLACED_MODELS = "replaced_models"
LEADING_ABNORMAL = "Leading abnormal class"


def pick_model(entries: list[ModelEntry], problems: list[str], task: str | None = None) -> ModelEntry | None:
    """Sidebar model choice among ``entries`` (one task's models), the task's default preselected and each
    task's last choice remembered for the session; broken models are listed, not fatal."""
    for problem in problems:
        st.sidebar.warning(problem, icon=":material/warning:")
    if not entries:
        return None
    names = [e.name for e in entries]
    default = next((e.name for e in entries if e.is_default), names[0])
    chosen = st.session_state.setdefault(CHOSEN_MODELS, {})
    replaced = st.session_state.setdefault(REPLACED_MODELS, {})  # task -> (the chosen model that went, its stand-in)
    if st.session_state.get(MODEL_WIDGET) not in names:
        remembered = chosen.get(task)
        if remembered is not None and remembered not in names:  # removed, or unreadable, since it was chosen
            replaced[task] = (remembered, default)
        st.session_state[MODEL_WIDGET] = remembered if remembered in names else default
    name = st.sidebar.selectbox(
        "Model", names, key=MODEL_WIDGET, format_func=lambda n: f"{n}  (default)" if n == default else n,
        help="This task's models, from the shipped and the site's models folders. The default is preselected; "
             "make another the default on the Retrain page.",
    )
    chosen[task] = name
    gone, stand_in = replaced.get(task, (None, None))
    if gone is not None and name == stand_in:  # said until someone picks a model again
        st.sidebar.warning(f"{gone}, the model chosen before, is no longer available (removed, or it cannot be "
                           f"read), so films are triaged with {name}. Choose another model above if you prefer.",
                           icon=":material/warning:")
    else:
        replaced.pop(task, None)
    return entries[names.index(name)]


def await_model(load: ModelLoad) -> Predictor | None:
    """The model once its background load is done, or None after saying in words why it cannot be used.

    While it loads, a note is rewritten every WAIT_STEP_S: each write is where Streamlit lets a new upload
    or a click stop this run and start the next, so waiting never delays the user's next action.
    """
    if not load.ready:
        note = st.empty()
        while not load.wait(WAIT_STEP_S):
            note.caption(f":material/hourglass_top: Loading the model {load.name}…")
        note.empty()
    try:
        return load.result()
    except CheckpointError as exc:
        st.error(f"Model {load.name} cannot be used: {exc} Choose another model in the sidebar.",
                 icon=":material/error:")
        return None


def status_of(result: FilmResult) -> str:
    if result.error:
        return UNREADABLE
    return result.prediction.priority or NOT_TRIAGED


def worklist_key(result: FilmResult) -> tuple[int, float]:
    """Urgent first, then routine, then films without a priority; most abnormal first within each."""
    score = result.prediction.abnormal_score if result.prediction else None
    return _RANK[status_of(result)], -(score if score is not None else -1.0)


def in_worklist_order(results: list[FilmResult]) -> list[FilmResult]:
    return sorted(results, key=worklist_key)


def worklist(results: list[FilmResult], classes: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """One row per film in worklist order. With the model's ``classes``: every class's probability as well,
    and, for a model with more than one abnormal class, the most probable abnormal class (the one an urgent
    film is labelled with; for a routine film, the abnormality it comes nearest to)."""
    abnormal = _abnormal_classes(classes) if classes else []
    rows = []
    for result in in_worklist_order(results):
        prediction = result.prediction
        row = {"File": result.file, "Priority": _BADGES[status_of(result)][0]}
        triaged = prediction is not None and prediction.priority is not None
        if not triaged:  # unreadable, or not a usable chest film: no call, and no figure that reads as one
            row["Label"] = None
            row.update({LEADING_ABNORMAL: None} if len(abnormal) > 1 else {})
            row.update({"Top class": None, "Probability": None, "Abnormal score": None})
        else:
            top = max(prediction.probabilities, key=prediction.probabilities.get)
            row["Label"] = prediction.label
            if len(abnormal) > 1:
                row[LEADING_ABNORMAL] = max(abnormal, key=lambda c: prediction.probabilities.get(c, -1.0))
            row.update({"Top class": top, "Probability": prediction.probabilities[top],
                        "Abnormal score": prediction.abnormal_score})
        row.update({probability_column(c): prediction.probabilities.get(c) if triaged else None
                    for c in classes or ()})
        row["Warnings"] = result.error if prediction is None else " ".join(  # sentences, each with its full stop
            prediction.warnings + ([prediction.population_warning] if prediction.population_warning else []))
        rows.append(row)
    return pd.DataFrame.from_records(rows)


def _abnormal_classes(classes: tuple[str, ...] | list[str]) -> list[str]:
    normal = find_normal_index(classes)
    return [c for i, c in enumerate(classes) if i != normal] if normal is not None else []


def probability_column(class_name: str) -> str:
    return f"p({class_name})"


def worklist_csv(results: list[FilmResult], model: str, classes: tuple[str, ...] | list[str] | None = None) -> bytes:
    """The worklist with every class probability (``classes``: the model's, else those the films carry),
    the model and its threshold, for the record; no cell starts with what a spreadsheet would take for a
    formula (a file named ``=HYPERLINK(...).png``)."""
    if classes is None:
        classes = next((list(r.prediction.probabilities) for r in results if r.prediction), [])
    table = worklist(results, classes)
    extra = [{"Model": model, "Threshold": r.prediction.threshold if r.prediction else None}
             for r in in_worklist_order(results)]
    table = pd.concat([table, pd.DataFrame.from_records(extra)], axis=1)
    table.columns = [spreadsheet_safe(column) for column in table.columns]  # class names come from a model
    # RFC 4180 line ends: a carriage return inside a cell is then quoted too, and cannot split a row.
    return table.map(spreadsheet_safe).to_csv(index=False, lineterminator="\r\n").encode()


WORKLIST_COLUMNS = {
    "File": st.column_config.TextColumn("File", width="medium"),
    "Priority": st.column_config.TextColumn("Priority", help="From the model's operating point: urgent films first."),
    "Label": st.column_config.TextColumn("Label", help="The model's call at its operating point."),
    "Top class": st.column_config.TextColumn("Top class", help="The most probable class."),
    "Probability": st.column_config.ProgressColumn("Probability", format="percent", min_value=0.0, max_value=1.0,
                                                   help="Probability of the top class."),
    "Abnormal score": st.column_config.NumberColumn("Abnormal score", format="%.3f",
                                                    help="1 − p(normal); urgent at or above the threshold."),
    "Warnings": st.column_config.TextColumn("Warnings", width="medium",
                                            help="Why a film was not triaged, or what to check before trusting it."),
}


def worklist_screen_order(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The worklist's columns on screen: what a reader acts on (priority, call, score, warnings) before the
    figures behind them, so a laptop-wide page shows it without scrolling sideways; the CSV keeps
    :func:`worklist`'s order."""
    abnormal = _abnormal_classes(classes)
    return ["File", "Priority", "Label", "Abnormal score", "Warnings",
            *([LEADING_ABNORMAL] if len(abnormal) > 1 else []), "Top class", "Probability",
            *(probability_column(c) for c in classes)]


def worklist_columns(classes: tuple[str, ...] | list[str]) -> dict:
    """:data:`WORKLIST_COLUMNS` plus the leading abnormal class and one probability bar per class."""
    columns = {**WORKLIST_COLUMNS, LEADING_ABNORMAL: st.column_config.TextColumn(
        LEADING_ABNORMAL, help="The most probable abnormal class, whatever the priority.")}
    columns.update({probability_column(c): st.column_config.ProgressColumn(
        probability_column(c), format="percent", min_value=0.0, max_value=1.0, help=f"Probability of {c}.")
        for c in classes})
    return columns


def priority_badge(result: FilmResult) -> None:
    label, color, icon = _BADGES[status_of(result)]
    st.badge(label, color=color, icon=icon)


def film_card(result: FilmResult, upload: Upload, predictor: Predictor, method: str, opacity: float,
              slot: int) -> Callable[[], None] | None:
    """The film, a place for its explanation, and the model's reading; an unreadable film says why, in place.

    Returns what draws the Grad-CAM overlay into its place (None when there is none to draw): the page calls
    it once every card shows its probabilities, so a slow explanation never holds a reading back.
    ``slot`` (the film's place in the batch) keeps widget keys apart when the same film is uploaded twice.
    """
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.text(result.file)  # plain text: a name is never read as Markdown
            priority_badge(result)
            if result.prediction and result.prediction.priority:
                st.markdown(f"Label: **{result.prediction.label}**")
        if result.error:
            st.error(f"{escape_markdown(result.error)} The other films are not affected.", icon=":material/error:")
            return None
        film_column, explanation_column, reading_column = st.columns(3, gap="medium")
        with film_column:
            st.image(result.display, caption=f"Film, {result.size[0]} × {result.size[1]} px, {result.source_format}",
                     width="stretch")
        triaged = result.prediction.priority is not None
        with explanation_column:
            draw_explanation = None
            if triaged:
                draw_explanation = _explanation(result, upload, predictor, method, opacity, f"{slot}-{result.digest}")
            else:  # not a usable chest film: a map "for" a class would read as a finding
                st.caption("No explanation map: the image was not triaged (why is beside it).")
        with reading_column:
            for warning in result.prediction.warnings:
                st.warning(escape_markdown(warning), icon=":material/warning:")
            if triaged:
                class_probabilities(result.prediction.probabilities, result.prediction.label)
            else:  # found in a browser audit: a blank image showed a bold "PNEUMONIA · 99.2 %" above why not
                with st.expander("The model's output, which is not a reading"):
                    class_probabilities(result.prediction.probabilities, None)
            if result.prediction.population_warning:  # the priority stands; the reading deserves caution
                st.warning(escape_markdown(result.prediction.population_warning), icon=":material/groups:")
            with st.expander("Film details"):
                st.table(pd.DataFrame({"value": [escape_markdown(v) for v in result.details.values()]},
                                      index=list(result.details)))  # st.table reads Markdown
    return draw_explanation


def probability_lines(probabilities: dict[str, float], label: str | None) -> list[tuple[float, str]]:
    """One (fraction, Markdown text) per class in the model's order, the model's label (if any) in bold."""
    lines = []
    for name, p in probabilities.items():
        shown = escape_markdown(name)
        lines.append((min(1.0, max(0.0, float(p))), f"{f'**{shown}**' if name == label else shown} · {p:.1%}"))
    return lines


def class_probabilities(probabilities: dict[str, float], label: str | None) -> None:
    """The class probabilities as Streamlit's own bars: they draw with the page, with no chart library to load
    in the browser first (a Plotly chart held a cold page's first reading back by about two seconds)."""
    st.markdown("**Class probabilities**")
    for fraction, text in probability_lines(probabilities, label):
        st.progress(fraction, text=text)


def _explanation(result: FilmResult, upload: Upload, predictor: Predictor, method: str, opacity: float,
                 key: str) -> Callable[[], None] | None:
    if not predictor.can_explain:
        st.info(f"{predictor.loaded.record.arch} has no convolutional layer, so there is no Grad-CAM map. "
                "Choose a CNN model in the sidebar to see where a model looked.", icon=":material/info:")
        return None
    classes = predictor.loaded.classes
    picture = st.empty()  # the overlay sits level with the film; its class picker goes underneath
    picture.caption(f":material/hourglass_top: Computing the {CAM_TITLES.get(method, method)} map…")
    class_free = method in CLASS_FREE_METHODS  # found in a browser audit: the picker changed only the caption
    class_name = st.selectbox("Explain class", classes, index=classes.index(result.prediction.label),
                              key=f"cam-class-{key}-{predictor.name}", disabled=class_free,
                              help=f"{CAM_TITLES.get(method, method)} draws the main pattern of the network's "
                                   "activations, the same map for every class." if class_free else
                                   "Show where the model found evidence for this class.")
    title = (f"{CAM_TITLES.get(method, method)}, the same for every class" if class_free
             else f"{CAM_TITLES.get(method, method)} for {class_name}")

    def draw() -> None:
        try:
            heat = heat_map(class_name, method, upload, predictor)
        except (TriageError, ValueError) as exc:
            picture.warning(f"No explanation for this film: {escape_markdown(exc)}", icon=":material/warning:")
            return
        picture.image(overlay(result.display / 255.0, heat, opacity), width="stretch",
                      caption=f"{title} (red = most evidence)")

    return draw
