"""DICOM films: the real CR pair (uncompressed and JPEG 2000), and small DICOMs written at test time
to check the pixel pipeline arithmetic (rescale -> window / VOI LUT -> [0, 1] -> MONOCHROME1 inverted)."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MPEG2MPML, SecondaryCaptureImageStorage, generate_uid

from core.errors import UnreadableImage
from core.films.dicom_values import transfer_syntax_name
from core.films.read import read_film

REAL = ("RG1_UNCI.dcm", "RG1_J2KI.dcm")
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "InstitutionName",
               "ReferringPhysicianName", "StudyDate", "AccessionNumber", "StudyInstanceUID")


@pytest.fixture(scope="module")
def real_films(dicom_dir):
    return {name: read_film(dicom_dir / name) for name in REAL}


@pytest.mark.parametrize("name", REAL)
def test_real_dicom_decodes_to_a_grey_film(name, real_films, dicom_dir):
    film = real_films[name]
    header = pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)
    assert film.source_format == "DICOM"
    assert film.pixels.shape == (header.Rows, header.Columns) == (1955, 1841)
    assert film.original_size == (1841, 1955)
    assert film.pixels.dtype == np.float32
    assert 0.0 <= film.pixels.min() < film.pixels.max() <= 1.0
    assert film.bit_depth == 15
    assert film.metadata["PhotometricInterpretation"] == "MONOCHROME1"
    assert film.metadata["Modality"] == "CR"


@pytest.mark.parametrize("name", REAL)
def test_monochrome1_is_inverted_so_bone_is_bright(name, real_films):
    pixels = real_films[name].pixels
    h, w = pixels.shape
    mediastinum = pixels[int(0.3 * h): int(0.6 * h), int(0.45 * w): int(0.55 * w)].mean()
    lungs = (pixels[int(0.3 * h): int(0.6 * h), int(0.2 * w): int(0.35 * w)].mean()
             + pixels[int(0.3 * h): int(0.6 * h), int(0.65 * w): int(0.8 * w)].mean()) / 2
    assert mediastinum > lungs + 0.15  # air-filled lungs dark, mediastinum and spine bright


def test_real_dicom_matches_a_hand_windowed_inversion(real_films, dicom_dir):
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    raw = ds.pixel_array.astype(np.float64)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    windowed = np.clip((raw - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2, linear
    expected = 1.0 - windowed  # MONOCHROME1: low stored values are white
    np.testing.assert_allclose(real_films["RG1_UNCI.dcm"].pixels, expected, atol=1e-5)


def test_jpeg2000_and_uncompressed_decode_to_the_same_film(real_films):
    a, b = (real_films[name].pixels.astype(np.float64).ravel() for name in REAL)
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).mean() < 0.01
    assert real_films["RG1_J2KI.dcm"].metadata["TransferSyntax"].startswith("JPEG 2000")


@pytest.mark.parametrize("name", REAL)
def test_no_patient_identifying_metadata(name, real_films, dicom_dir):
    header = pydicom.dcmread(dicom_dir / name, stop_before_pixels=True)
    assert str(header.PatientName)  # the file does carry identity ...
    film = real_films[name]
    for keyword in IDENTIFYING:  # ... and none of it leaves the reader, as a key or as a value
        assert keyword not in film.metadata
        if keyword in header and str(header.get(keyword)):
            assert str(header.get(keyword)) not in map(str, film.metadata.values())


def test_real_dicom_gets_a_prediction(real_films, predictor):
    """A real adult film, stored uncompressed and as lossless JPEG 2000: one reading, triaged, and warned as outside
    the paediatric population (a test review: the old assertions held whatever the reading was)."""
    prediction = predictor.predict(real_films["RG1_UNCI.dcm"])
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.warnings == [] and prediction.priority in ("urgent", "routine")  # a usable chest film
    assert "does not look like the films this model was trained on" in prediction.population_warning
    compressed = predictor.predict(real_films["RG1_J2KI.dcm"])
    assert compressed.probabilities == pytest.approx(prediction.probabilities, abs=1e-4)
    assert (compressed.label, compressed.priority) == (prediction.label, prediction.priority)


# --- DICOMs written here, checked against hand-computed values ----------------------------------------

STORED = np.array([[0, 100, 200, 300], [400, 500, 1000, 4095]], dtype=np.uint16)


def make_dicom(stored=STORED, photometric="MONOCHROME2", rescale=None, window=None, pixels=True,
               file_format=True, frames=1) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-0042", "19700101"
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if pixels:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=file_format)
    return buffer.getvalue()


def test_rescale_then_window_arithmetic():
    film = read_film(make_dicom(rescale=(2, -1000), window=(0, 1000)), name="synthetic.dcm")
    # modality: 2 * stored - 1000 -> [-1000, -800, -600, -400, -200, 0, 1000, 7190]
    # linear window c=0, w=1000: (v + 0.5) / 999 + 0.5, clipped to [0, 1]
    expected = np.array([[0.0, 0.0, 0.0, 100.0 / 999], [300.0 / 999, 500.0 / 999, 1.0, 1.0]])
    np.testing.assert_allclose(film.pixels, expected, atol=1e-6)


def test_monochrome1_window_is_inverted():
    film = read_film(make_dicom(photometric="MONOCHROME1", rescale=(2, -1000), window=(0, 1000)), name="m1.dcm")
    expected = 1.0 - np.array([[0.0, 0.0, 0.0, 100.0 / 999], [300.0 / 999, 500.0 / 999, 1.0, 1.0]])
    np.testing.assert_allclose(film.pixels, expected, atol=1e-6)


def test_without_window_the_full_range_is_stretched():
    film = read_film(make_dicom(rescale=(1, 0)), name="plain.dcm")
    np.testing.assert_allclose(film.pixels, STORED / 4095.0, atol=1e-6)


def test_voi_lut_sequence_is_applied():
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    item = Dataset()
    item.add_new(0x00283002, "US", [1024, 0, 12])  # LUT Descriptor: 1024 entries from 0, 12-bit output
    item.add_new(0x00283006, "US", [min(4095, 8 * i) for i in range(1024)])  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    film = read_film(_saved(ds), name="lut.dcm")
    expected = np.minimum(4095, 8 * np.minimum(STORED, 1023)) / 4095.0
    np.testing.assert_allclose(film.pixels, expected, atol=1e-6)


def test_synthetic_dicom_metadata_is_whitelisted():
    film = read_film(make_dicom(window=(2000, 4000)), name="x.dcm")
    assert set(film.metadata) <= {"format", "Modality", "BodyPartExamined", "ViewPosition",
                                  "PhotometricInterpretation", "BitsStored", "Rows", "Columns",
                                  "NumberOfFrames", "TransferSyntax", "PatientOrientation", "PresentationIntentType"}
    assert not {"Doe^Jane", "MRN-0042", "19700101"} & set(map(str, film.metadata.values()))


def test_dicom_without_preamble_is_recognised():
    film = read_film(make_dicom(file_format=False), name="no-preamble")  # no DICM magic, no .dcm suffix
    assert film.source_format == "DICOM"
    np.testing.assert_allclose(film.pixels, STORED / 4095.0, atol=1e-6)


def test_multi_frame_reads_the_first_frame_with_a_warning():
    frames = np.stack([STORED, STORED[:, ::-1], np.zeros_like(STORED)])
    film = read_film(make_dicom(stored=frames, frames=3), name="cine.dcm")
    assert film.pixels.shape == STORED.shape
    np.testing.assert_allclose(film.pixels, STORED / 4095.0, atol=1e-6)
    assert any("3 frames" in w for w in film.warnings)


@pytest.mark.parametrize("file_format", [True, False], ids=["with-preamble", "without-preamble"])
def test_dicom_without_pixel_data_is_unreadable(file_format):
    with pytest.raises(UnreadableImage, match="without pixel data"):
        read_film(make_dicom(pixels=False, file_format=file_format), name="report.dcm")


def test_truncated_real_dicom_is_unreadable(dicom_dir):
    data = (dicom_dir / "RG1_UNCI.dcm").read_bytes()
    with pytest.raises(UnreadableImage, match="cut.dcm"):
        read_film(data[: len(data) // 3], name="cut.dcm")


def test_unsupported_voi_lut_is_unreadable_not_a_crash():
    """A VOI LUT whose descriptor no reader applies (17 bits per entry; the standard allows 8 to 16) must be a
    clear UnreadableImage.

    pydicom's NotImplementedError used to escape read_film, so the CLI printed a traceback instead of JSON.
    """
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    item = Dataset()
    item.add_new(0x00283002, "US", [1024, 0, 17])
    item.add_new(0x00283006, "US", list(range(1024)))
    ds.VOILUTSequence = Sequence([item])
    with pytest.raises(UnreadableImage, match="grey-level transforms"):  # not any other refusal (a test review)
        read_film(_saved(ds), name="odd-lut.dcm")


# --- values shown to people: checked against their value representation first (issue 12) ----------------


def _saved(ds: pydicom.Dataset) -> bytes:
    """The dataset as a DICOM file's bytes, as an upload brings them."""
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _refusal(data: bytes, name: str) -> str:
    """What read_film says when it refuses ``data`` (it must refuse it)."""
    with pytest.raises(UnreadableImage) as refused:
        read_film(data, name=name)
    return str(refused.value)


def _with_values(file_meta: dict | None = None, **values) -> bytes:
    """make_dicom()'s file with these values written as given (pydicom warns that some break their VR)."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        for keyword, value in (file_meta or {}).items():
            setattr(ds.file_meta, keyword, value)
    return _saved(ds)


@pytest.mark.parametrize("keyword, value, shown", [
    ("Modality", "DX ", "DX"),
    ("Modality", "Doe^Jane", "unknown"),  # not a code string at all
    ("Modality", "JANE DOE", "unknown"),  # a valid code string, but no modality
    ("Modality", ["CR", "DX"], "unknown"),  # one value only
    ("BodyPartExamined", "CHEST", "CHEST"),
    ("BodyPartExamined", "MRN 0042", "unknown"),
    ("ViewPosition", "AP", "AP"),
    ("ViewPosition", "DOE", "unknown"),
])
def test_a_shown_code_is_one_the_standard_lists_or_unknown(keyword, value, shown):
    film = read_film(_with_values(**{keyword: value}), name="coded.dcm")
    assert film.metadata[keyword] == shown


def test_an_unreadable_transfer_syntax_is_unknown_in_the_message():
    data = _with_values(file_meta={"TransferSyntaxUID": "Doe^Jane"})
    with pytest.raises(UnreadableImage) as refused:
        read_film(data, name="odd-syntax.dcm")
    assert "'unknown'" in str(refused.value) and "Doe^Jane" not in str(refused.value)


@pytest.mark.parametrize("syntax, name", [
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)"),
    ("1.2.826.0.1.3680043.9.9999.1", "1.2.826.0.1.3680043.9.9999.1"),  # a private one: its UID
    ("Jane Doe", "unknown"),
])
def test_a_transfer_syntax_is_shown_by_its_standard_name(syntax, name):
    assert transfer_syntax_name(syntax) == name


def test_a_decoder_failure_is_named_in_our_words_not_the_decoders():
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(40)])  # a codestream's marker, then nothing usable
    # a JPEG 2000 decoder is installed (it was told to export itself as JPEG 2000: a review)
    assert _refusal(_saved(ds), "bad.dcm") == ("bad.dcm: the DICOM pixel data (transfer syntax 'JPEG 2000 Image Compression "
                                  "(Lossless Only)') could not be decoded: the file is damaged, or uses a variant of "
                                  "that syntax this server's decoder does not read. Export the film again, "
                                  "uncompressed.")
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # no decoder here reads it: the codec is what is missing
    assert _refusal(_saved(ds), "video.dcm") == ("video.dcm: the DICOM pixel data (transfer syntax 'MPEG2 Main Profile / Main "
                                  "Level') cannot be decoded here. Export the film uncompressed or as JPEG/JPEG 2000.")


def test_uncompressed_pixel_data_cut_short_is_said_to_be_incomplete(dicom_dir):
    ds = pydicom.dcmread(io.BytesIO(make_dicom()))
    ds.PixelData = STORED.tobytes()[:6]
    assert _refusal(_saved(ds), "short.dcm") == ("short.dcm is incomplete: its pixel data holds 6 of the 16 bytes its 4x2 image "
                                  "needs (the file was cut short). Upload or export the whole file again.")
    whole = (dicom_dir / "RG1_UNCI.dcm").read_bytes()  # a real film's upload interrupted half-way
    with pytest.raises(UnreadableImage, match=r"^half\.dcm is incomplete: its pixel data holds 3,598,132 of the "
                                              r"7,198,310 bytes its 1841x1955 image needs"):
        read_film(whole[: len(whole) // 2], name="half.dcm")


# --- a decoding worker started ahead of the first DICOM (the server's preload, predict given a DICOM) -------

@pytest.fixture
def fresh_pool(monkeypatch):
    """This process's decoding pool swapped for an empty one with the same limits, closed afterwards."""
    from core.films import decode_pool as pools

    pool = pools.DecodePool(*pools.decode_pool().limits)
    monkeypatch.setattr(pools, "_pool", pool)
    yield pool
    pool.close()


def _started(pool) -> list[int]:
    """The process ids of the pool's idle workers, once a worker starting ahead (if any) is ready."""
    starting = pool._starting
    if starting is not None:
        assert starting.wait(120)
    return [worker.process.pid for worker in pool._idle]


def _address_space_cap(pid: int) -> str:
    line = next(x for x in Path(f"/proc/{pid}/limits").read_text().splitlines() if x.startswith("Max address space"))
    return line.split()[3]  # the soft limit, in bytes


def test_a_worker_starts_ahead_only_when_a_dicom_is_coming(fresh_pool, films_dir, dicom_dir, tmp_path):
    from core.films.decode_pool import start_worker_early

    rasters = sorted(films_dir.rglob("*.jpeg"))[:3]
    assert len(rasters) == 3 and start_worker_early(rasters) is False
    assert start_worker_early([tmp_path / "missing.dcm", tmp_path]) is False
    assert fresh_pool._starting is None and _started(fresh_pool) == []  # PNG/JPEG runs pay nothing
    by_content = tmp_path / "exported-film"  # no suffix: "DICM" after the preamble says what it is
    by_content.write_bytes((dicom_dir / "RG1_J2KI.dcm").read_bytes()[:200])
    assert start_worker_early([*rasters, by_content]) is True
    [pid] = _started(fresh_pool)
    assert _address_space_cap(pid) != "unlimited"  # the same memory limit as any worker
    film = read_film(dicom_dir / "RG1_J2KI.dcm")
    assert film.pixels.shape == (1955, 1841) and film.metadata["Modality"] == "CR"
    assert _started(fresh_pool) == [pid]  # decoded by the worker started ahead, kept for the next film
    assert start_worker_early() is True and _started(fresh_pool) == [pid]  # one idle is enough: none added
    fresh_pool.close()
    assert fresh_pool.start_worker() is None


def test_the_first_dicom_takes_the_worker_already_starting(fresh_pool, dicom_dir):
    starting = fresh_pool.start_worker()
    assert starting is not None and fresh_pool.start_worker() is None  # one start ahead at a time
    film = read_film(dicom_dir / "RG1_UNCI.dcm")  # at once, while that worker may still be importing
    starting.join(120)
    assert film.source_format == "DICOM" and film.bit_depth == 15
    assert len(_started(fresh_pool)) == 1  # had the film started a worker of its own, two would be idle now


def test_the_servers_preload_starts_a_decoding_worker(fresh_pool):
    from dashboard.serve import preload

    preload()  # the session's registry is empty: the page's imports, then the worker
    [pid] = _started(fresh_pool)
    assert _address_space_cap(pid) != "unlimited"


@pytest.mark.parametrize("header, words", [
    ({}, []),
    ({"ViewPosition": "LL"}, ["The DICOM header gives the view as LL, not frontal (PA or AP)"]),
    ({"BodyPartExamined": "ABDOMEN"}, ["The DICOM header gives the body part as ABDOMEN, not the chest"]),
    ({"Modality": "MG", "BodyPartExamined": "BREAST"},
     ["The DICOM header gives the modality as MG, not projection radiography",
      "The DICOM header gives the body part as BREAST, not the chest"]),
    ({"BodyPartExamined": "MRN 0042", "ViewPosition": None}, []),  # unknown or absent: the header says nothing
])
def test_a_header_that_says_the_film_is_no_frontal_chest_radiograph_is_a_warning(dicom_dir, header, words):
    """Found by a review: the real CR chest film with its header edited to say lateral, abdomen or mammography got
    its confident urgent reading and no word of it; the header's own values (shown under Film details) now warn."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    for keyword, value in header.items():
        if value is None:
            del ds[keyword]
        else:
            setattr(ds, keyword, value)
    film = read_film(_saved(ds), name="edited.dcm")
    said = [w for w in film.warnings if w.startswith("The DICOM header")]
    assert [w[:len(start)] for w, start in zip(said, words)] == words and len(said) == len(words)
