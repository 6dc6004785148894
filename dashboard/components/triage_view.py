"""Drawing the triage page: the model picker, the model's loading state and one card per film (the worklist:
dashboard.components.worklist).

Imports nothing that loads torch: the page draws before the model is up (see dashboard.state). Upload names
are often a patient's name and may be hostile: they are drawn as plain text (``st.text``) or escaped where an
element reads Markdown.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Callable

import streamlit as st

from core.errors import ServerBusy, TriageError, TryAgainLater
from core.models.catalog import CATALOG
from core.serving.explain import CAM_METHODS, CLASS_FREE_METHODS, colour_bar, overlay
from core.serving.in_flight import Patience
from core.wording import digits_apart, fixed
from dashboard.components.kept_settings import keep, restore
from dashboard.components.reports import escape_markdown, percent, threshold_value
from dashboard.components.worklist import BADGES, film_id, leading_abnormal, status_of
from dashboard.model_loads import ModelLoad
from dashboard.state import FilmResult, Upload, heat_map, read_again

if TYPE_CHECKING:
    from core.serving.predict import Predictor

CAM_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "xgradcam": "XGrad-CAM",
              "layercam": "LayerCAM", "eigencam": "Eigen-CAM"}
METHODS = [m for m in CAM_TITLES if m in CAM_METHODS] + [m for m in CAM_METHODS if m not in CAM_TITLES]
WAIT_STEP_S = 0.25  # how often a page waiting for its model lets an upload or a click interrupt it


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
    except TryAgainLater as exc:  # passing (a GPU without room for it, saved again while it loaded): its own words
        st.warning(f"Model {load.name} cannot be used yet: {exc}", icon=":material/hourglass_empty:")  # say when
        return None  # (a messages review: "Choose another model" beside "try again once it is free")
    except TriageError as exc:  # a broken model (CheckpointError)
        st.error(f"Model {load.name} cannot be used: {exc} Choose another model in the sidebar.",
                 icon=":material/error:")
        return None


def priority_badge(result: FilmResult) -> None:
    label, color, icon = BADGES[status_of(result)]
    st.badge(label, color=color, icon=icon)


def film_card(result: FilmResult, upload: Upload, predictor: Predictor, method: str, opacity: float,
              slot: int) -> Callable[[Patience], None] | None:
    """The film, a place for its explanation, and the model's reading; an unreadable film says why, in place.

    Returns what draws the Grad-CAM overlay into its place (None when there is none to draw): the page calls
    it once every card shows its probabilities, so a slow explanation never holds a reading back.
    ``slot`` (the film's place in the batch) keeps widget keys apart when the same film is uploaded twice.
    """
    with st.container(border=True):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.text(result.file)  # plain text: a name is never read as Markdown
            st.caption(f"Film ID {film_id(result)}", help="As in the worklist and its CSV: the start of the "
                       "file's content fingerprint, which tells apart files that share a name.")
            priority_badge(result)
            if result.prediction and result.prediction.priority:
                st.markdown(f"Label: **{result.prediction.label}**")
        if result.retry:  # not read yet: the server was busy or the film ran past its time limit; the message says
            st.info(escape_markdown(result.error), icon=":material/hourglass_empty:")  # what to do, and this does it
            st.button("Read it again", key=f"read-again-{slot}-{result.digest}", icon=":material/refresh:",
                      on_click=read_again, args=(result.digest,))
            return None
        if result.error:
            st.error(f"{escape_markdown(result.error)} The other films are not affected.", icon=":material/error:")
            return None
        film_column, explanation_column, reading_column = st.columns(3, gap="medium")
        with film_column:
            st.image(result.display, caption=f"Film, {result.size[0]} × {result.size[1]} px, {result.source_format}",
                     width="stretch", alt=f"Chest film {film_id(result)}")  # by ID: a file name may be a patient's
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
                line = score_line(result.prediction)
                if line:
                    st.caption(line)
                class_probabilities(result.prediction.probabilities, result.prediction.label)
            else:  # found in a browser audit: a blank image showed a bold "PNEUMONIA · 99.2 %" above why not
                with st.expander("The model's output, which is not a reading"):
                    class_probabilities(result.prediction.probabilities, None)
            if result.prediction.population_warning:  # the priority stands; the reading deserves caution
                st.warning(escape_markdown(result.prediction.population_warning), icon=":material/groups:")
            with st.expander("Film details"):
                st.markdown(detail_lines(result.details))
    return draw_explanation


def score_line(prediction) -> str | None:
    """The number the film's priority came from, beside the threshold it was compared with: the label alone read
    as a diagnosis ("Routine, NORMAL" beside a larger abnormal bar under a high threshold; a review). None for a
    film not triaged, or a model without a normal class."""
    score, threshold = prediction.abnormal_score, prediction.threshold
    if prediction.priority is None or score is None or threshold is None:
        return None
    shown = f"Abnormal score {fixed(score, digits_apart(score, threshold))} (1 − p(normal))"
    if prediction.priority == "urgent":
        likeliest = max(prediction.probabilities, key=prediction.probabilities.get)
        # a browser review: "Urgent · Label: PNEUMONIA" over "NORMAL 52.8 %" read as a contradiction
        why = "" if likeliest == prediction.label else (f" {prediction.label} is the call at that threshold, though "
                                                        f"{likeliest} is the more probable class.")
        return f"{shown}, at or above the urgent threshold {threshold_value(threshold, score)}.{why}"
    return (f"{shown}, below the urgent threshold {threshold_value(threshold, score)}: routine means below it, not "
            "a finding of normal.")


def class_explained_first(prediction, normal_class: str | None) -> str:
    """The class a card's map opens on: an urgent film's label, else the abnormal class the model gives most. A
    routine film's map "for NORMAL" put a red spot where a reader looks for a lesion (a review)."""
    if normal_class is None or prediction.label != normal_class:
        return prediction.label
    abnormal = [name for name in prediction.probabilities if name != normal_class]
    return leading_abnormal(prediction.probabilities, abnormal) if abnormal else prediction.label


def detail_lines(details: dict) -> str:
    """The film's details as Markdown lines, each name in words (``PhotometricInterpretation``: "Photometric
    interpretation"), values escaped; lines wrap in a narrow column, where a table's cells cut them short."""
    def words(key: str) -> str:
        spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(key))
        return spaced[:1].upper() + spaced[1:].lower()
    return "\n".join(f"- {escape_markdown(words(k))}: {escape_markdown(str(v))}" for k, v in details.items())


def output_percent(p: float) -> str:
    """A class probability as a percentage, never a certainty: predictions store 6 decimals, so a saturated
    output reads 1.0 or 0.0, and its card said "PNEUMONIA · 100.0 %" (a review)."""
    if p >= 1.0:
        return ">99.9999 %"
    return "<0.0001 %" if p <= 0.0 else percent(p)


def probability_lines(probabilities: dict[str, float], label: str | None) -> list[tuple[float, str]]:
    """One (fraction, Markdown text) per class in the model's order, the model's label (if any) in bold."""
    lines = []
    for name, p in probabilities.items():
        shown = escape_markdown(name)
        # percent(): 0.99972 read "100.0%" beside a Grad-CAM caption of "99.97 %" for the same film (a review)
        lines.append((min(1.0, max(0.0, float(p))),
                      f"{f'**{shown}**' if name == label else shown} · {output_percent(p)}"))
    return lines


def class_probabilities(probabilities: dict[str, float], label: str | None) -> None:
    """The class probabilities as Streamlit's own bars: they draw with the page, with no chart library to load
    in the browser first (a Plotly chart held a cold page's first reading back by about two seconds)."""
    st.markdown("**Class probabilities**")
    for fraction, text in probability_lines(probabilities, label):
        st.progress(fraction, text=text)


COLOUR_BAR = colour_bar()  # drawn under every map: the caption's words for its colours, as colours
EMPTY_MAP = 1e-6  # a map scaled to its own peak (pytorch_grad_cam) is this small only where the map was zero


def cam_caption(title: str, class_free: bool, probability: float | None, below_threshold: bool = False) -> str:
    """Each map is scaled to its own strongest point, so full yellow shows the most evidence in this film however
    weak it is: a class the model gives 0.6 % looked as sure as one it gives 97 % (found by a review). The caption
    says so, with the model's probability for the class explained."""
    if class_free or probability is None:
        return (f"{title} (colours relative to this film alone: yellow = the strongest activation here; purple = weak; "
                "no colour = none)")
    said = (f"{title}, which the model gives {output_percent(probability)} (colours relative to this film alone: "
            "yellow = the most evidence for it here, however weak; purple = little; no colour = none)")
    # a routine film's map for an abnormal class looked like a lesion found (a browser review: a bright spot at
    # 3.3 %); said of routine films only, never of a class an urgent call rests on (a re-read: 48 % under 0.47)
    return said + (". This film is below the urgent threshold: the colours show where what little evidence the model "
                   "found for this class lies, not a finding." if below_threshold else "")


def _explanation(result: FilmResult, upload: Upload, predictor: Predictor, method: str, opacity: float,
                 key: str) -> Callable[[Patience], None] | None:
    if not predictor.can_explain:
        record = predictor.loaded.record  # a clinician's words, not "no convolutional layer" (a browser review)
        known = CATALOG.get(record.arch)
        which = ("a member of this ensemble weighs" if record.members else
                 f"this model ({known.title if known else record.arch}) weighs")
        st.info(f"No map of where the model looked: {which} the film's pixels directly, with no image features to "
                "map. Choose another model in the sidebar to see where it looked.", icon=":material/info:")
        return None
    classes = predictor.loaded.classes
    picture = st.empty()  # the overlay sits level with the film; its class picker goes underneath
    picture.caption(f":material/hourglass_top: Computing the {CAM_TITLES.get(method, method)} map…")
    class_free = method in CLASS_FREE_METHODS  # found in a browser audit: the picker changed only the caption
    first = class_explained_first(result.prediction, predictor.loaded.operating_point.normal_class)
    widget = restore(f"cam-class-{key}-{predictor.name}", first, classes)
    class_name = keep(widget, st.selectbox(
        "Explain class", classes, key=widget, disabled=class_free,
        help=f"{CAM_TITLES.get(method, method)} draws the main pattern of the network's activations, the same map "
             "for every class." if class_free else "Show where the model found evidence for this class."))
    title = (f"{CAM_TITLES.get(method, method)}, the same for every class" if class_free
             else f"{CAM_TITLES.get(method, method)} for {class_name}")

    def draw(patience: Patience) -> None:
        """Draw the map, waiting for a slot as the page run's ``patience`` allows (core.serving.in_flight)."""
        try:
            heat = heat_map(class_name, method, upload, predictor, patience)
        except ServerBusy:  # the film was read: its reading stands beside this
            picture.info("The explanation is not drawn yet: the server is busy with other users' films. It will be "
                         "drawn at the page's next run (press R, or change anything on the page).",
                         icon=":material/hourglass_empty:")
            return
        except (TriageError, ValueError) as exc:
            picture.warning(f"No explanation for this film: {escape_markdown(exc)}", icon=":material/warning:")
            return
        except Exception:  # noqa: BLE001 - the server's fault, not the film's: its reading stands (a messages review)
            logging.getLogger(__name__).exception("drawing a Grad-CAM map failed")
            picture.warning("No explanation for this film: a fault on the server stopped the map (the server log has "
                            "the details). The film's reading stands.", icon=":material/warning:")
            return
        if not class_free and float(heat.max()) <= EMPTY_MAP:  # every network's map zero: nothing to point at
            picture.info(f"{title}: no part of this film raised the model's score for {class_name}, so there is no "
                         "map to draw.", icon=":material/info:")
            return
        with picture.container():  # the map, then its colour bar right under it with the words for its colours
            st.image(overlay(result.display / 255.0, heat, opacity), width="stretch",
                     alt=f"{title} over chest film {film_id(result)}")  # a screen reader's name for it (a review)
            reading = result.prediction
            st.image(COLOUR_BAR, width="stretch",
                     caption=cam_caption(title, class_free, reading.probabilities.get(class_name),
                                         reading.priority == "routine" and class_name != reading.label),
                     alt="Colour scale of the map: no colour where there is no evidence, then purple (little) to "
                         "yellow (the most in this film)")

    return draw
