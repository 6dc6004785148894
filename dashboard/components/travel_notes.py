"""The words around a model's figures of how its promise travels (#13): why internal validation is not enough,
what each other set of films is, and the shortcut its training set allows; only the parts that apply to the
versions shown."""
from __future__ import annotations

from core.evaluation.site_range import stored_site_range
from core.films.known_sets import known_shortcuts, training_sources
from core.store.records import ModelRecord
from core.store.reports import shown_reports
from dashboard.components.travel import elsewhere_title

ONE_BATCH = ("Internal validation films come from the same collections as the training films (for pneumonia, one "
             "hospital batch; for COVID-19, the same public set): figures from them overstate what a new site will "
             "see; a site should still check its own films.")
# Said only for versions that carry an out-of-batch report (a browser review: COVID-19 cards, which have none, were
# told of the Kermany test's five models).
ANOTHER_BATCH = ("Another batch is held-out series of the training folder, picked by their file names: for the five "
                 "shipped models the project measured on the official Kermany test, none of its intervals held the "
                 "official figures (specificity, AUC and accuracy were lower there, sensitivity higher), so read it "
                 "as the best case for specificity, not a forecast.")
# What the project measured on the official Kermany test, films not held here (docs/project-measurements):
# six earlier pneumonia models, five of them shipped (resnet18-noaug-v1 was not).
KERMANY_TEST = ("On the official Kermany test (another batch of the same hospital, measured by the project), six "
                "earlier pneumonia models kept their sensitivity, but their specificity fell from 91–100 % on "
                "validation to 41.5–73.5 %.")
COLLECTION_NOTE = ("Another collection: Kermany-type films another dataset gathered and re-encoded, copies of "
                   "training films left out: real films from outside the training folder, but few (about 130), and "
                   "its pneumonias are all viral (harder to see than most): every shipped model's sensitivity there "
                   "is below its validation figure.")
FRAMED_NOTE = ("Framed 15 % tighter: the films of the batch a run held out (a run that held none out: its validation "
               "films, so titled) shown larger, "
               "the one synthetic change found to move every pneumonia model the project measured the official "
               "test's way (for the CNNs far less than that test): a floor on the loss, not a forecast.")
FRAMED_UNCHECKED = " Whether it moves models of other tasks so has not been checked."
RANGE_NOTE = ("Range at a new site: from the lower 95 % bound to the upper one over the other collection as "
              "collected and framed 15 % tighter (the same films read twice); the official test's AUC, sensitivity "
              "and specificity fell inside it for all five shipped models the project measured there, but the "
              "range was built after those results were seen, so that is not a test of it, and no model has been "
              "measured there since. It is wide because another site's films "
              "can differ that much: recalibrate on a site's own labelled films before relying on its threshold.")

WIDE_FRAMING_NOTE = ("Trained with wide framing: its augmentation scaled films 0.8–1.25 times, the 15 % tighter "
                     "framing among them, so its framed readings test a change it was taught, and the lower end of "
                     "its range may sit too high. Wide framing was itself chosen for the project's recipes on these "
                     "same checks (the other collection and the framed readings), so for it they are no longer clean "
                     "checks: read them as a little high.")


def travel_text(records: list[ModelRecord]) -> str:
    """Why internal validation is not enough, and what each other set of films these versions carry is: only
    the parts that apply to them (a COVID-19 model is told nothing of the Kermany test)."""
    keys = {key for record in records for key in shown_reports(record.other_reports)}
    pneumonia = any({"NORMAL", "PNEUMONIA"} <= set(record.classes) for record in records)
    framed = FRAMED_NOTE + ("" if pneumonia else FRAMED_UNCHECKED)
    parts = [ONE_BATCH, *([ANOTHER_BATCH] if "out-of-batch" in keys else []), *([KERMANY_TEST] if pneumonia else []),
             *([COLLECTION_NOTE] if "other-collection" in keys else []),
             *([framed] if "tighter-framing" in keys or "other-collection-framed" in keys else []),
             *([RANGE_NOTE] if any(stored_site_range(record.other_reports) for record in records) else []),
             *([WIDE_FRAMING_NOTE] if any(_wide_framing(record) for record in records) else [])]
    return " ".join(parts)


def _wide_framing(record: ModelRecord) -> bool:
    """Whether it (or any of its networks) trained on widely varied framing, with a framed reading to speak of."""
    configs = [record.training.config if record.training else None, *(m.config for m in record.members)]
    framed = {"tighter-framing", "other-collection-framed"} & set(shown_reports(record.other_reports))
    return bool(framed) and any(config is not None and config.wide_framing for config in configs)


def not_on_the_official_test(record: ModelRecord) -> str | None:
    """The card of a pneumonia version the project has not measured on the official Kermany test says so: it
    quotes that test's results of earlier models (:data:`KERMANY_TEST`), not its own (a review)."""
    if not {"NORMAL", "PNEUMONIA"} <= set(record.classes) or record.measured_elsewhere:
        return None
    return ("This version has **not been measured on the official Kermany test**: the results quoted from it "
            "above are earlier models'.")


def new_site_caution(record: ModelRecord) -> str:
    """The card's first word on its figures (an out-of-batch review: "overstate what a new site will see" sat deep
    in a long note after the table, under validation figures in bold): what to expect at a new site, and which
    figure to read instead."""
    if record.calibration is not None and record.calibration.folder:  # recalibrated on a site's films already
        return ("**At another site, expect other figures than below:** this version's threshold was chosen on one "
                "site's labelled films; check it on the films of any other site before relying on it there.")
    if {"NORMAL", "PNEUMONIA"} <= set(record.classes):
        ranged = " Read the range at a new site below, not validation or the other batch (held-out patients of the " \
            "training folder, which tracked validation there), for what to expect;" \
            if stored_site_range(record.other_reports) else " Do not expect validation's specificity;"
        return ("**At a new site, expect lower specificity than below:** on another batch of the same hospital (the "
                "official Kermany test), earlier models' fell from 91–100 % to 41.5–73.5 %." + ranged
                + " recalibrate the threshold on your own labelled films (Retrain page) before relying on it.")
    return ("**At a new site, expect lower figures than below:** they come from films of the training "
            "collections. Check the model on your own labelled films, and recalibrate its threshold there "
            "(Retrain page), before relying on it.")


def shortcuts(record: ModelRecord) -> list[str]:
    """The shortcuts this version's training set allows (core.films.known_sets), by its training sources: the
    population check's, else the training folder's name."""
    return known_shortcuts(training_sources(record))


def elsewhere_films(records: list[ModelRecord]) -> list[str]:
    """Each set of films others measured these versions on, and who did, in words (once per set)."""
    sets = sorted({(elsewhere_title(m), m.films, m.measured_by) for r in records for m in r.measured_elsewhere})
    macro = {(elsewhere_title(m), m.films, m.measured_by) for r in records if len(r.classes) > 2
             for m in r.measured_elsewhere}
    return [f"{title}: {films}; measured by {who}. Its intervals are computed from the reported figures and films "
            f"per class (Wilson; Hanley–McNeil for the AUC"
            f"{' of two classes, none for a macro AUC of more' if (title, films, who) in macro else ''})."
            for title, films, who in sets]
