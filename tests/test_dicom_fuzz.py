"""A seeded DICOM fuzz test (issue 12, item 8): a few hundred mutants of the real DICOMs in ../shared/data.

Each mutant goes through ``read_film``, the app's and the CLI's way in. Every one must be answered with a Film
or a TriageError (no other exception, no hang: the decoding process has a time limit), and the patient's name,
read from the clean file first, must appear in no message and no metadata. Mutations: byte flips in the
header, truncations, elements whose length runs over the elements after them, and wrong value representations.
"""
from __future__ import annotations

import io
import struct

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from core.errors import TriageError
from core.films.dicom_values import UNKNOWN
from core.films.film import Film
from core.films.read import read_film

SEED = 12
MUTANTS_PER_BASE = 60
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
_WRONG_VRS = (b"UN", b"SQ", b"OB", b"US", b"FD", b"AT", b"UL", b"ZZ", b"\x00\x00", b"PN", b"DS", b"IS")
SHOWN_TAGS = {0x00080060, 0x00180015, 0x00185101, 0x00280004}  # Modality, body part, view, photometric
SHOWN_KEYS = {"format", "Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation",
              "BitsStored", "Rows", "Columns", "NumberOfFrames", "TransferSyntax", "PatientOrientation",
              "PresentationIntentType"}


def _crop(dicom_dir, syntax=None, implicit=False, preamble=True) -> bytes:
    """The real CR's own header (patient name included) over a 256 x 256 crop of its pixels."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[800:1056, 800:1056]).tobytes()
    ds.Rows = ds.Columns = 256
    if syntax is not None:
        ds.compress(syntax)
    buffer = io.BytesIO()
    if implicit:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    pydicom.dcmwrite(buffer, ds, enforce_file_format=preamble)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bases(dicom_dir) -> dict[str, bytes]:
    return {
        "explicit": _crop(dicom_dir),
        "implicit": _crop(dicom_dir, implicit=True),
        "no-preamble": _crop(dicom_dir, preamble=False),
        "rle": _crop(dicom_dir, RLELossless),
        "j2k": _crop(dicom_dir, JPEG2000Lossless),
        "real-j2k": (dicom_dir / "RG1_J2KI.dcm").read_bytes(),
    }


@pytest.fixture(scope="module")
def identity(dicom_dir) -> tuple[str, ...]:
    """What identifies the patient in the clean file: none of it may come out of a damaged one."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm", stop_before_pixels=True)
    name = str(ds.PatientName)
    assert name == "CompressedSamples^RG1"
    return name, name.split("^")[0], str(ds.PatientID), str(ds.OtherPatientIDs)


def _elements(data: bytes) -> list[tuple[int, str, bool, int, int]]:
    """(offset of the value, VR, implicit?, offset after the value, tag) of every top-level element before the
    pixel data, in file order."""
    ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    implicit = ds.original_encoding[0]
    found = []
    for dataset, is_implicit in ((ds.file_meta, False), (ds, implicit)):
        for tag in list(dataset.keys()):
            raw = dataset.get_item(tag)
            if getattr(raw, "value_tell", None) is not None:
                end = raw.value_tell + (raw.length if raw.length != 0xFFFFFFFF else 0)
                found.append((raw.value_tell, str(raw.VR), is_implicit, end, int(tag)))
    return sorted(found)


def _length_field(value_at: int, vr: str, implicit: bool) -> tuple[int, str]:
    return (value_at - 4, "<I") if implicit or vr in _LONG_VRS else (value_at - 2, "<H")


def mutate(data: bytes, elements: list, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(4)
    header_end = elements[-1][0] + 16
    if kind == 0:  # flip a few header bytes
        for at in rng.integers(0, header_end, rng.integers(1, 9)):
            out[at] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncate
        return bytes(out[: int(rng.integers(0, len(out)))])
    elif kind == 2:  # a length that runs over the elements after it; half the time a value the app shows
        shown = [i for i, element in enumerate(elements) if element[4] in SHOWN_TAGS]
        index = int(rng.choice(shown) if shown and rng.integers(2) else rng.integers(len(elements)))
        value_at, vr, implicit, _, _ = elements[index]
        at, fmt = _length_field(value_at, vr, implicit)
        biggest = 0xFFFF if fmt == "<H" else 0xFFFFFFFF
        choice = rng.integers(3)
        if choice == 0:  # exactly to the end of a later element: the file still parses after it
            length = min(biggest, elements[int(rng.integers(index, len(elements)))][3] - value_at)
        else:
            length = int(rng.integers(1, 4096)) + struct.unpack_from(fmt, out, at)[0] if choice == 1 else biggest
        struct.pack_into(fmt, out, at, min(length, biggest))
    else:  # a wrong value representation (explicit VR only; implicit files get a byte flip instead)
        value_at, vr, implicit, _, _ = elements[rng.integers(len(elements))]
        if implicit:
            out[value_at - 1] ^= 0xFF
        else:
            at = value_at - (8 if vr in _LONG_VRS else 4)
            out[at : at + 2] = _WRONG_VRS[rng.integers(len(_WRONG_VRS))]
    return bytes(out)


def _overrun_modality(data: bytes) -> bytes:
    """The issue's case: Modality's length made to run over every element up to the patient's name and past it."""
    elements = {raw_tag: raw for raw_tag, raw in _raw(data).items()}
    modality, name = elements[0x00080060], elements[0x00100010]
    out = bytearray(data)
    struct.pack_into("<H", out, modality.value_tell - 2, name.value_tell + name.length - modality.value_tell)
    return bytes(out)


def _raw(data: bytes) -> dict:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return {int(tag): ds.get_item(tag) for tag in ds.keys()}


def _check_answer(data: bytes, name: str, identity) -> str:
    """Read one file; assert its answer keeps the contract; 'film' or 'refused'."""
    try:
        film = read_film(data, name=name)
    except TriageError as exc:
        message = str(exc)
        assert name in message, message
        assert not any(part in message for part in identity), message
        assert "Traceback" not in message and "Error(" not in message, message
        return "refused"
    assert isinstance(film, Film)
    assert film.pixels.ndim == 2 and film.pixels.dtype == np.float32
    assert 0.0 <= float(film.pixels.min()) and float(film.pixels.max()) <= 1.0
    assert set(film.metadata) <= SHOWN_KEYS, film.metadata
    shown = " ".join(map(str, [*film.metadata.values(), *film.warnings]))
    assert not any(part in shown for part in identity), film.metadata
    return "film"


def test_a_modality_running_over_the_patient_name_shows_unknown(bases, identity):
    film = read_film(_overrun_modality(bases["explicit"]), name="overrun.dcm")
    assert film.metadata["Modality"] == UNKNOWN
    assert not any(part in str(film.metadata) for part in identity)


def test_every_mutant_is_answered_without_the_patients_name(bases, identity):
    rng = np.random.default_rng(SEED)
    outcomes = {"film": 0, "refused": 0}
    for base_name, data in bases.items():
        elements = _elements(data)
        count = MUTANTS_PER_BASE // 2 if base_name == "real-j2k" else MUTANTS_PER_BASE  # full size: slower
        for index in range(count):
            mutant = mutate(data, elements, rng)
            outcomes[_check_answer(mutant, f"mutant-{base_name}-{index:03d}", identity)] += 1
    print(f"\n{sum(outcomes.values())} mutants: {outcomes}")
    assert sum(outcomes.values()) >= 250
    assert min(outcomes.values()) >= 25  # the mutations neither all break the files nor all miss
