"""DICOM values a person may see, each checked against its value representation and known codes first.

A damaged file can make one element swallow the next ones (a Modality whose length runs over the patient's
name), so a value is shown only when it is a code the DICOM standard lists for that element, or an integer
where the element holds one; anything else is shown as ``"unknown"``. Nothing else in a DICOM file is shown.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from core.films.dicom_view import header_layout_doubts, view_and_orientation

if TYPE_CHECKING:  # pydicom runs in the decoding workers; the server reads these codes without importing it
    import pydicom

UNKNOWN = "unknown"

# PS3.3 C.7.3.1.1.1 Modality defined terms, current and retired.
MODALITIES = frozenset("""
ANN AR ASMT AU BDUS BI BMD CFM CR CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL
IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX REG
RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF STAIN
TEXTUREMAP TG US VA XA XAPROTOCOL XC
AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF
""".split())

# PS3.16 Annex L: Body Part Examined defined terms (with the retired spellings still written by devices).
BODY_PARTS = frozenset("""
ABDOMEN ABDOMENPELVIS ACJOINT ADRENAL AMNIOTICFLUID ANKLE ANUS AORTA APPENDIX ARM AXILLA BACK BILEDUCT
BLADDER BODY BRAIN BREAST BRONCHUS BUTTOCK CALCANEUS CALF CAROTID CEREBELLUM CERVIX CHEEK CHEST
CHESTABDOMEN CHESTABDPELVIS CIRCLEOFWILLIS CLAVICLE COCCYX COLON CORNEA CORONARYARTERY CSPINE CTSPINE
DUODENUM EAR ELBOW ESOPHAGUS EXTREMITY EYE EYELID FACE FEMUR FINGER FOOT FOREARM GALLBLADDER HAND HEAD
HEADNECK HEART HIP HUMERUS ILEUM ILIUM IAC JAW JEJUNUM KIDNEY KNEE LARYNX LEG LIVER LSPINE LSSPINE LUNG
MAXILLA MEDIASTINUM MOUTH NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE ORBIT OVARY PANCREAS
PAROTID PATELLA PELVIS PENIS PHARYNX PROSTATE RECTUM RIB SACRUM SCROTUM SHOULDER SIGMOID SKULL SPINE
SPLEEN SSPINE STERNUM STOMACH SUBMANDIBULAR TESTIS THIGH THORAX THUMB THYMUS THYROID TIBIA TLSPINE TMJ TOE
TONGUE TRACHEA TSPINE ULNA URETER URETHRA UTERUS VAGINA VULVA WHOLEBODY WRIST ZYGOMA
""".split())

# View Position (0018,5101) defined terms: projection radiography (CR, DX) and mammography.
VIEW_POSITIONS = frozenset("""
AP PA LL RL RLD LLD RLO LLO LATERAL
CC FB LM LMO ML MLO SIO XCC XCCL XCCM
""".split())

# PS3.3 C.7.6.3.1.2 Photometric Interpretation, current and retired.
PHOTOMETRIC = frozenset({
    "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB", "HSV", "ARGB", "CMYK",
})

# What a frontal chest radiograph's header may say: projection radiography (or OT, a secondary capture), a body
# part that holds the chest, a frontal view.
RADIOGRAPHY = frozenset({"CR", "DX", "RG", "OT"})
CHEST_PARTS = frozenset("""
BODY CHEST CHESTABDOMEN CHESTABDPELVIS HEART LUNG MEDIASTINUM NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV RIB
STERNUM THORAX WHOLEBODY
""".split())
FRONTAL_VIEWS = frozenset({"AP", "PA"})

_CODES = {"Modality": MODALITIES, "BodyPartExamined": BODY_PARTS, "ViewPosition": VIEW_POSITIONS,
          "PhotometricInterpretation": PHOTOMETRIC}
_COUNTS = {"Rows": 0xFFFF, "Columns": 0xFFFF, "BitsStored": 64, "NumberOfFrames": 2**31 - 1}
SHOWN = (*_CODES, *_COUNTS)

_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")  # PS3.5 6.2: CS is 16 characters of these at most
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # PS3.5 9.1; at most 64 characters


def code_string(value) -> str:
    """A single CS value with its padding removed, or UNKNOWN when it breaks the CS rules."""
    if not isinstance(value, str):
        return UNKNOWN
    value = value.strip(" ")
    return value if _CODE_STRING.fullmatch(value) else UNKNOWN


def known_code(keyword: str, value) -> str:
    """``value`` when it is a valid CS value the standard lists for ``keyword`` (in any case: devices write
    "skull" and "pa"), else UNKNOWN."""
    code = code_string(value.upper() if isinstance(value, str) else value)
    return code if code in _CODES[keyword] else UNKNOWN


def count(value, highest: int) -> str | None:
    """A whole number in [0, highest] (US, or IS: digits with an optional sign) as text, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip(" ")
        if not re.fullmatch(r"[+-]?[0-9]{1,11}", value):
            return None
        number = int(value)
    elif isinstance(value, int):
        number = int(value)
    else:
        return None
    return str(number) if 0 <= number <= highest else None


def transfer_syntax_name(syntax) -> str:
    """The standard's name of a transfer syntax, its UID when it is a well-formed private one, else UNKNOWN."""
    if not isinstance(syntax, str) or len(syntax) > 64 or not _UID.fullmatch(syntax.rstrip("\0 ")):
        return UNKNOWN
    from pydicom.uid import UID

    return UID(syntax.rstrip("\0 ")).name


def shown_values(ds: pydicom.Dataset) -> dict[str, str]:
    """The checked values of the elements a person may see: never free text from the file."""
    shown: dict[str, str] = {}
    for keyword in SHOWN:
        try:
            present = keyword in ds
            value = ds.get(keyword) if present else None
        except Exception:  # noqa: BLE001 - any failure to convert a damaged element means "unknown"
            present, value = True, None
        if not present:
            continue
        if keyword in _CODES:
            shown[keyword] = known_code(keyword, value)
        else:
            shown[keyword] = count(value, _COUNTS[keyword]) or UNKNOWN
    shown.update(view_and_orientation(ds, view_known=shown.get("ViewPosition", UNKNOWN) != UNKNOWN))
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None:
        shown["TransferSyntax"] = transfer_syntax_name(syntax)
    return shown


def header_warnings(shown: dict[str, str], frames: int = 1) -> list[str]:
    """What a film's own header says against reading it as one frontal chest radiograph, from :func:`shown_values`
    (an unknown or absent value says nothing). Found by a review: a film whose header said lateral, abdomen or
    mammography got a confident priority and no word of it; the pixels' chest-film check decides triage, these warn."""
    notes = [f"Multi-frame DICOM ({frames} frames): only the first frame is read."] if frames > 1 else []
    return notes + header_doubts(shown)


def header_doubts(shown: dict[str, str], of_a_reading: bool = True) -> list[str]:
    """The notes of :func:`header_warnings` that doubt the reading itself: the header names another modality, body
    part or view than a frontal chest radiograph. A routine call on such a film is no confident one (a review).
    Without ``of_a_reading``, each note says what the header says, not what it means for a reading: a film not
    triaged has none, and "so this reading may mean nothing" stood above "Not triaged" (a browser review)."""
    modality, part, view = (shown.get(k, UNKNOWN) for k in ("Modality", "BodyPartExamined", "ViewPosition"))
    notes = header_layout_doubts(shown, of_a_reading)

    def so(consequence: str) -> str:
        return f", so this reading {consequence}." if of_a_reading else "."

    if modality != UNKNOWN and modality not in RADIOGRAPHY:
        notes.append(f"The DICOM header gives the modality as {modality}, not projection radiography: the model "
                     f"reads chest radiographs only{so('may mean nothing')}")
    if part != UNKNOWN and part not in CHEST_PARTS:
        notes.append(f"The DICOM header gives the body part as {part}, not the chest: the model reads chest films "
                     f"only{so('may mean nothing')}")
    if view != UNKNOWN and view not in FRONTAL_VIEWS:
        notes.append(f"The DICOM header gives the view as {view}, not frontal (PA or AP): the model was trained on "
                     f"frontal chest films{so('may be wrong')}")
    return notes
