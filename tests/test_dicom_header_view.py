"""What a valid DICOM's header says of how the film was taken and stored (core.films.dicom_view), found by a review
of unusual but legitimate files: a lateral view spelled otherwise than the standard's term, or given only in the
View Code Sequence; a body part in lower case; a film stored turned (Patient Orientation); a For Processing image;
and a PALETTE COLOR film, whose grey levels were stretched."""
from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from test_dicom_grey import dicom

from core.films.read import read_film

FILM = np.tile(np.linspace(1000, 3000, 64).astype(np.uint16), (64, 1))
FRONTAL_CHEST = {"BodyPartExamined": "CHEST", "ViewPosition": "PA", "PatientOrientation": ["L", "F"]}


def _warnings(**elements) -> list[str]:
    header = {key: value for key, value in {**FRONTAL_CHEST, **elements}.items() if value is not None}
    return [w for w in read_film(dicom(FILM, **header), name="chest.dcm").warnings if w.startswith("The DICOM")]


def test_a_frontal_chest_film_s_header_says_nothing():
    assert _warnings() == []
    assert _warnings(ViewPosition="pa") == []  # a standard term in lower case


@pytest.mark.parametrize("view", ["LAT", "XTABLE LATERAL", "Lateral", "lateral"])
def test_a_lateral_view_however_spelled_is_a_warning(view):
    (said,) = _warnings(ViewPosition=view)
    assert said.startswith("The DICOM header gives the view as LATERAL, not frontal (PA or AP)")
    shown = read_film(dicom(FILM, **{**FRONTAL_CHEST, "ViewPosition": view}), name="chest.dcm").metadata
    assert shown["ViewPosition"] == "LATERAL"  # the standard's term, never the file's own spelling


def test_a_lateral_view_given_only_in_the_view_code_sequence_is_a_warning():
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "R-10232", "SRT", "lateral"
    (said,) = _warnings(ViewPosition=None, ViewCodeSequence=Sequence([code]))
    assert said.startswith("The DICOM header gives the view as LATERAL")
    code.CodeValue, code.CodeMeaning = "R-10214", "postero-anterior"
    assert _warnings(ViewPosition=None, ViewCodeSequence=Sequence([code])) == []


@pytest.mark.parametrize("view", ["PLATE", "FLAT"])
def test_a_word_that_only_holds_lat_is_no_lateral(view):
    assert _warnings(ViewPosition=view) == []


def test_a_body_part_in_lower_case_is_read_as_its_term():
    (said,) = _warnings(BodyPartExamined="skull")
    assert said.startswith("The DICOM header gives the body part as SKULL, not the chest")


@pytest.mark.parametrize("orientation, turned", [(["L", "F"], False), (["R", "F"], False), (["F", "L"], True),
                                                 (["H", "R"], True), (["R", "H"], True), (["L", "FP"], False),
                                                 (["LH", "F"], False)])  # an oblique: its principal letter counts
def test_a_film_stored_turned_is_a_warning(orientation, turned):
    said = [w for w in _warnings(PatientOrientation=orientation) if "stored turned" in w]
    assert [w.startswith("The DICOM header says the film is stored turned (patient orientation "
                         f"{orientation[0]}\\{orientation[1]};") for w in said] == ([True] if turned else [])


@pytest.mark.parametrize("orientation, said", [
    (["R", "F"], "The DICOM header says the film is stored mirrored (patient orientation R\\F; a chest film as viewed "
                 "reads L\\F): the model reads films as viewed, so this reading may be wrong. Export the film as it is "
                 "viewed."),
    (["RA", "F"], "stored mirrored"),  # an oblique: its principal letter counts
    (["A", "F"], "The DICOM header's patient orientation (A\\F) is that of a lateral film: the model was trained on "
                 "frontal chest films, so this reading may be wrong. Triage the frontal film of the study."),
    (["P", "F"], "that of a lateral film"), (["L", "F"], None), (["LP", "F"], None)])
def test_a_film_stored_mirrored_or_taken_from_the_side_is_a_warning(orientation, said):
    """A browser review: Patient Orientation R\\F (left and right swapped) and A\\F (a side view) were read with no
    word, while F\\R (turned) was warned on."""
    warned = _warnings(PatientOrientation=orientation)
    assert warned == [] if said is None else len(warned) == 1 and said in warned[0]


def test_a_for_processing_image_is_a_warning():
    words = "The DICOM header marks this image For Processing (raw detector data, not meant for viewing)"
    assert [w[:len(words)] for w in _warnings(PresentationIntentType="FOR PROCESSING")] == [words]
    assert [w[:len(words)] for w in _warnings(SOPClassUID="1.2.840.10008.5.1.4.1.1.1.1.1")] == [words]
    assert _warnings(PresentationIntentType="FOR PRESENTATION") == []


def test_a_palette_colour_film_reads_over_its_palette_s_range_as_the_same_grey_film_does():
    indices = np.tile(np.linspace(64, 192, 64).astype(np.uint8), (64, 1))
    grey = read_film(dicom(indices, bits=8), name="grey.dcm").pixels
    ramp = [257 * i for i in range(256)]  # a grey palette of 16-bit entries, the usual kind
    palette = dicom(indices, bits=8, photometric="PALETTE COLOR",
                    RedPaletteColorLookupTableDescriptor=[256, 0, 16],
                    GreenPaletteColorLookupTableDescriptor=[256, 0, 16],
                    BluePaletteColorLookupTableDescriptor=[256, 0, 16],
                    RedPaletteColorLookupTableData=np.array(ramp, np.uint16).tobytes(),
                    GreenPaletteColorLookupTableData=np.array(ramp, np.uint16).tobytes(),
                    BluePaletteColorLookupTableData=np.array(ramp, np.uint16).tobytes())
    pixels = read_film(palette, name="palette.dcm").pixels
    assert grey.min() == pytest.approx(64 / 255) and grey.max() == pytest.approx(192 / 255)
    np.testing.assert_allclose(pixels, grey, atol=1e-4)  # not stretched to 0-1
    eight = np.arange(256, dtype=np.uint16).tobytes()  # 8-bit values in 16-bit entries, as some writers store them
    lax = dicom(indices, bits=8, photometric="PALETTE COLOR",
                **{f"{c}PaletteColorLookupTableDescriptor": [256, 0, 16] for c in ("Red", "Green", "Blue")},
                **{f"{c}PaletteColorLookupTableData": eight for c in ("Red", "Green", "Blue")})
    np.testing.assert_allclose(read_film(lax, name="lax.dcm").pixels, grey, atol=1e-4)  # not near black


def test_a_film_not_triaged_keeps_what_its_header_says_without_doubting_a_reading_it_has_not(predictor,
                                                                                           normal_film_path):
    """A film Triage leaves untriaged has no reading: its header notes say what the header says and what to do, not
    "so this reading may mean nothing" above "Not triaged" (a browser review); a triaged film keeps the doubt."""
    header = dict(Modality="CT", BodyPartExamined="ABDOMEN", ViewPosition="LL", PatientOrientation=["F", "L"],
                  PresentationIntentType="FOR PROCESSING")
    blank = predictor.predict(read_film(dicom(np.full((64, 64), 2000, np.uint16), **header), name="blank.dcm"))
    notes = [w for w in blank.warnings if w.startswith("The DICOM")]
    assert blank.priority is None and notes == [
        "The DICOM header says the film is stored turned (patient orientation F\\L; an upright chest film reads L\\F): "
        "the model reads upright films. Export the film upright.",
        "The DICOM header marks this image For Processing (raw detector data, not meant for viewing). Export the For "
        "Presentation image of the film.",
        "The DICOM header gives the modality as CT, not projection radiography: the model reads chest radiographs "
        "only.",
        "The DICOM header gives the body part as ABDOMEN, not the chest: the model reads chest films only.",
        "The DICOM header gives the view as LL, not frontal (PA or AP): the model was trained on frontal chest films."]
    from PIL import Image

    chest = np.asarray(Image.open(normal_film_path).convert("L"))
    read = predictor.predict(read_film(dicom(chest, bits=8, **header), name="chest.dcm"))
    doubted = [w for w in read.warnings if w.startswith("The DICOM")]
    assert read.priority and len(doubted) == 5 and all("so this reading may" in w or ": this reading may" in w
                                                       for w in doubted)
