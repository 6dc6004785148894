"""What a DICOM header says of how a film was taken and stored, beyond its listed codes (core.films.dicom_values),
each reduced to a code of our own before anyone sees it (never the file's free text):

- the view, where View Position is not one of the standard's terms ("LAT", "XTABLE LATERAL") or is absent and the
  View Code Sequence says it: a lateral film got a confident reading with no word of it (a review);
- Patient Orientation (0020,0020), which says a film is stored turned on its side or upside down: JPEG and PNG films
  are turned upright from their EXIF orientation, a DICOM's was read as stored (a review); or mirrored (R\\F), or
  taken from the side (A\\F, P\\F), which a browser review found read without a word;
- a For Processing image (raw detector data, PS3.3 C.8.11.1.1), not meant for viewing.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydicom

FOR_PROCESSING = "FOR PROCESSING"
# DX, mammography and intra-oral X-ray images For Processing (PS3.4 B.5)
_FOR_PROCESSING_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.2.1",
                                     "1.2.840.10008.5.1.4.1.1.1.3.1"})
_DIRECTION = re.compile(r"[APRLHF]{1,3}")  # PS3.3 C.7.6.1.1.1: anterior, posterior, right, left, head, foot
_SPELLING = re.compile(r"[A-Z0-9 _\-]{1,32}")
# View Code Sequence meanings (CID 4010, DX View) and codes of the lateral views (SRT, SNOMED CT)
_LATERAL_CODES = frozenset({"R-10232", "R-102CD", "R-10236", "399067008", "399198007", "399173006"})
_LATERAL_WORD = re.compile(r"\bLAT")  # LAT, LATERAL, XTABLE LATERAL, LAT DECUB: not PLATE or FLAT (a review)


def view_and_orientation(ds: pydicom.Dataset, view_known: bool) -> dict[str, str]:
    """``ViewPosition`` (a standard term) where no listed code gave it (``view_known`` false) but the header says
    the view another way, ``PatientOrientation`` (two checked directions, e.g. ``L\\F``) and
    ``PresentationIntentType``."""
    found: dict[str, str] = {}
    if not view_known:
        derived = _spelled_view(_value(ds, "ViewPosition")) or _coded_view(ds)
        if derived:
            found["ViewPosition"] = derived
    orientation = _value(ds, "PatientOrientation")
    parts = orientation.split("\\") if isinstance(orientation, str) else \
        list(orientation) if isinstance(orientation, Sequence) else []  # pydicom's MultiValue is a Sequence
    parts = [p.strip().upper() if isinstance(p, str) else "" for p in parts]
    if len(parts) == 2 and all(_DIRECTION.fullmatch(p) for p in parts):
        found["PatientOrientation"] = "\\".join(parts)
    intent = _value(ds, "PresentationIntentType")
    intent = intent.strip().upper() if isinstance(intent, str) else ""
    if intent in (FOR_PROCESSING, "FOR PRESENTATION"):
        found["PresentationIntentType"] = intent
    if str(_value(ds, "SOPClassUID") or "").strip("\0 ") in _FOR_PROCESSING_CLASSES:
        found["PresentationIntentType"] = FOR_PROCESSING
    return found


def header_layout_doubts(shown: dict[str, str], of_a_reading: bool = True) -> list[str]:
    """Notes that doubt a reading: the film stored turned, or raw detector data. Without ``of_a_reading``, what the
    header says and what to do, not what it means for a reading: said of a film not triaged, which has none."""
    notes = []
    orientation = shown.get("PatientOrientation", "")
    rows, _, columns = orientation.partition("\\")
    # the principal directions only: an oblique's second letter, as in LH\F, says nothing of turning (a review)
    if orientation and (rows[:1] in ("H", "F") or columns[:1] == "H"):
        notes.append(f"The DICOM header says the film is stored turned (patient orientation {orientation}; an "
                     "upright chest film reads L\\F): the model reads upright films"
                     + (", so this reading may be wrong" if of_a_reading else "") + ". Export the film upright.")
    elif orientation and rows[:1] == "R":  # the patient's right to the viewer's right: a mirror image
        notes.append(f"The DICOM header says the film is stored mirrored (patient orientation {orientation}; a chest "
                     "film as viewed reads L\\F): the model reads films as viewed"
                     + (", so this reading may be wrong" if of_a_reading else "")
                     + ". Export the film as it is viewed.")
    elif orientation and rows[:1] in ("A", "P"):  # rows running front to back: a side view
        notes.append(f"The DICOM header's patient orientation ({orientation}) is that of a lateral film: the model "
                     "was trained on frontal chest films" + (", so this reading may be wrong" if of_a_reading else "")
                     + ". Triage the frontal film of the study.")
    if shown.get("PresentationIntentType") == FOR_PROCESSING:
        notes.append("The DICOM header marks this image For Processing (raw detector data, not meant for viewing)"
                     + (": this reading may mean nothing" if of_a_reading else "")
                     + ". Export the For Presentation image of the film.")
    return notes


def _spelled_view(value) -> str | None:
    """A non-standard spelling of a lateral or frontal view ("LAT", "Lateral", "XTABLE LATERAL", "pa")."""
    words = value.strip().upper() if isinstance(value, str) else ""
    if not _SPELLING.fullmatch(words):
        return None
    if _LATERAL_WORD.search(words):
        return "LATERAL"
    return words if words in ("AP", "PA") else None


def _coded_view(ds: pydicom.Dataset) -> str | None:
    """The view the View Code Sequence (0054,0220) names, as a View Position term; None when it names none."""
    try:
        item = ds.ViewCodeSequence[0] if ds.get("ViewCodeSequence") else None
        code, meaning = (str(item.get("CodeValue", "")), str(item.get("CodeMeaning", "")).lower()) if item else ("", "")
    except Exception:  # noqa: BLE001 - a damaged sequence says nothing
        return None
    if code in _LATERAL_CODES or "lateral" in meaning:
        return "LATERAL"
    if re.search(r"postero-?anterior", meaning):
        return "PA"
    if re.search(r"antero-?posterior", meaning):
        return "AP"
    return None


def _value(ds: pydicom.Dataset, keyword: str):
    try:
        return ds.get(keyword)
    except Exception:  # noqa: BLE001 - a damaged element says nothing
        return None
