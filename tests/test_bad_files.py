"""Bad and awkward files, through both ways in (the issue's "Inputs").

Every input is generated at test time (tests/corpus.py) or is a real film from ../shared/data. The whole batch
goes through both ways in: ONE ``python -m core predict --json`` process (so the good films must survive the
bad ones around them) and the triage page's own path, ``dashboard.state.triage_uploads`` on uploads held in
memory; an AppTest run draws the page. Pixel bombs are also measured in-process. Broken models are in
test_broken_models.py; killed training jobs and the lock files a crash can leave behind in test_job_crashes.py.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import corpus
import numpy as np
import pytest
from bad_input_support import REPO, open_page, private_registry, upload
from PIL import Image, ImageFile

from core.errors import UnreadableImage
from core.films import dicom
from core.films.read import read_film
from core.serving import in_flight
from dashboard import state
from dashboard.state import Upload, triage_uploads

CLI_TIMEOUT = 120  # seconds for the whole batch; it takes ~15 s on 2 busy cores
TOLERANCE = 0.005  # probabilities of re-encodings of one film (measured: < 0.001, the large copy included)
DICOM_PAIR_TOLERANCE = 0.01  # JPEG 2000 lossy copy of the CR vs the uncompressed file (measured: < 0.001)
SIZE_WORDS = "too large|limit"

# name -> what the error message must say (regex). Each name is both the upload's name and the CLI's file name.
BROKEN = {
    "empty.png": "empty",
    "notes.txt": "not an image",
    "report.pdf": "not an image",
    "truncated.jpeg": "truncated|corrupt",
    "random.bin": "not an image",
    "bomb.png": "too large",  # 144 megapixels in 20 kB: over Pillow's own bomb limit
    "huge.png": SIZE_WORDS,  # 56 megapixels: under Pillow's limit, over ours
    "huge-header.dcm": SIZE_WORDS,  # a DICOM header claiming 10,000 x 10,000 pixels
    "no-pixels.dcm": "without pixel data",
    "private-syntax.dcm": "cannot be decoded",  # a made-up transfer syntax UID
    # pydicom's 12-bit JPEG Extended test file: the installed JPEG decoder does not read 12 bits
    "JPEG-lossy.dcm": "could not be decoded: .* a variant",
}
# Re-encodings of one real full-resolution film; each must get the answer of plain.png (the same film as PNG).
AWKWARD = ("grey16.png", "rgba.png", "cmyk.jpg", "palette.png", "exif_rotated.jpg", "large.png",
           "mono1.dcm", "mono1-no-preamble", "mono1-bare")
GOOD = ("normal.jpeg", "pneumonia.jpeg", "RG1_UNCI.dcm", "RG1_J2KI.dcm", "plain.png")


@pytest.fixture(scope="module")
def grey_film(normal_film_path) -> Image.Image:
    with Image.open(normal_film_path) as image:
        return image.convert("L")


@pytest.fixture(scope="module")
def batch(normal_film_path, pneumonia_film_path, dicom_dir, grey_film) -> dict[str, bytes]:
    """Every input case, good films interleaved with bad ones, in the order the CLI gets them."""
    import pydicom

    huge = io.BytesIO()
    Image.new("1", (8000, 7000)).save(huge, format="PNG")
    bad = dict(corpus.broken_files(normal_film_path))
    bad.update({
        "huge.png": huge.getvalue(),
        "huge-header.dcm": corpus.dicom_claiming_size(10_000),
        "no-pixels.dcm": corpus.dicom_without_pixels(),
        "private-syntax.dcm": corpus.dicom_with_unknown_syntax(grey_film),
        "JPEG-lossy.dcm": (Path(pydicom.__file__).parent / "data" / "test_files" / "JPEG-lossy.dcm").read_bytes(),
    })
    assert set(bad) == set(BROKEN), "tests/corpus.py changed: say what each new broken file's error must name"
    good = {"normal.jpeg": normal_film_path.read_bytes(), "pneumonia.jpeg": pneumonia_film_path.read_bytes(),
            "RG1_UNCI.dcm": (dicom_dir / "RG1_UNCI.dcm").read_bytes(),
            "RG1_J2KI.dcm": (dicom_dir / "RG1_J2KI.dcm").read_bytes()}
    good.update(corpus.awkward_encodings(normal_film_path))
    good.update({"mono1.dcm": corpus.film_as_dicom(grey_film, monochrome1=True),
                 "mono1-no-preamble": corpus.film_as_dicom(grey_film, monochrome1=True, layout="no-preamble"),
                 "mono1-bare": corpus.film_as_dicom(grey_film, monochrome1=True, layout="bare"),
                 "cine-bomb.dcm": corpus.multiframe_dicom_bomb(frames=48)})
    assert set(AWKWARD) | set(GOOD) <= set(good)
    bad_names, good_names = list(bad), list(good)
    order = [name for pair in zip(good_names, bad_names, strict=False) for name in pair]
    order += good_names[len(bad_names):] + bad_names[len(good_names):]
    return {name: {**bad, **good}[name] for name in order}


@dataclass(frozen=True)
class CliBatch:
    returncode: int
    stderr: str
    files: list[str]
    answers: dict[str, dict]


@pytest.fixture(scope="module")
def cli_batch(batch, trained_model, tmp_path_factory) -> CliBatch:
    folder = tmp_path_factory.mktemp("bad-inputs")
    paths = []
    for name, data in batch.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    env = {**os.environ, "CXR_MODELS": str(trained_model.directory), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "core", "predict", *map(str, paths), "--json"],
                          check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return CliBatch(done.returncode, done.stderr, [Path(line["file"]).name for line in lines],
                    {Path(line["file"]).name: line for line in lines})


@pytest.fixture(scope="module")
def app_answers(batch, predictor) -> dict[str, dict]:
    """What the triage page computes for the same files uploaded at once, in the CLI's JSON shape."""
    results = triage_uploads(predictor, [Upload.of(corpus.Upload(name, data)) for name, data in batch.items()])
    return {r.file: {"file": r.file, "error": r.error} if r.error else {"file": r.file, **r.prediction.to_dict()}
            for r in results}


@pytest.fixture(params=["cli", "app"])
def answers(request) -> dict[str, dict]:
    if request.param == "cli":
        return request.getfixturevalue("cli_batch").answers
    return request.getfixturevalue("app_answers")


# --- not an image, or too large to decode --------------------------------------------------------------


def test_the_cli_batch_answers_every_file_in_order_exits_1_and_shows_no_traceback(cli_batch, batch):
    assert cli_batch.files == list(batch), cli_batch.stderr[-2000:]  # nothing after a bad file was lost
    assert cli_batch.returncode == 1
    assert "Traceback" not in cli_batch.stderr


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_file_gets_a_clear_error_naming_it(answers, name):
    answer = answers[name]
    assert set(answer) == {"file", "error"}, answer
    assert re.search(BROKEN[name], answer["error"]), answer["error"]
    assert name in answer["error"]


@pytest.mark.parametrize("name", GOOD)
def test_the_good_films_between_the_broken_ones_are_triaged(answers, name):
    answer = answers[name]
    assert "error" not in answer, answer["error"]
    assert answer["priority"] in ("urgent", "routine")
    assert answer["warnings"] == []


def _peak_bytes(action) -> int:
    """Peak traced allocation during ``action()``: numpy buffers are traced, so turning an image into an array
    shows; Pillow's own decode buffers are not (a test patches its loading instead)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", ["bomb.png", "huge.png", "huge-header.dcm"])
def test_a_pixel_bomb_is_refused_before_it_is_decoded(batch, name, monkeypatch):
    """Refused from the size its header declares: Pillow's pixel loading and pydicom's pixel decoding are never
    called (a DICOM is decoded in a worker process, so its decoding is also run here, where the patch sees it),
    and no large buffer is allocated."""
    with pytest.raises(UnreadableImage, match=SIZE_WORDS):
        read_film(batch[name], name=name)  # the path an upload takes
    decoded: list[str] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda *args, **kwargs: decoded.append("Pillow"))
    monkeypatch.setattr(dicom, "pixel_array", lambda *args, **kwargs: decoded.append("pydicom"))

    def refuse():
        with pytest.raises(UnreadableImage, match=SIZE_WORDS):
            if name.endswith(".dcm"):
                dicom.decode_dicom(batch[name], name)
            else:
                read_film(batch[name], name=name)

    assert _peak_bytes(refuse) < 50 * 2**20
    assert decoded == []


def test_a_multi_frame_dicom_bomb_is_not_decoded_whole():
    """48 blank JPEG frames of 2048 x 2048 px fit in 2.4 MB; ~4,000 fit under the 200 MB upload limit.

    Only the first frame is used, but every frame used to be decoded first (``ds.pixel_array``) while the
    Rows x Columns check ignored NumberOfFrames: memory grew with the frame count (measured: 88 MB for one
    frame, 280 MB for 48; a 200 MB file would have needed ~17 GB). Either refuse by total size or decode one.
    """
    one, many = corpus.multiframe_dicom_bomb(frames=1), corpus.multiframe_dicom_bomb(frames=48)
    single = _peak_bytes(lambda: read_film(one, name="one-frame.dcm"))
    read = []
    multi = _peak_bytes(lambda: read.append(read_film(many, name="cine.dcm")))  # the first frame, as it is read
    assert multi < 1.5 * single, f"{multi / 2**20:.0f} MB for 48 frames vs {single / 2**20:.0f} MB for one"
    assert "Multi-frame DICOM (48 frames): only the first frame is read." in read[0].warnings


def test_the_multi_frame_bomb_in_the_batch_is_read_as_its_first_frame(answers):
    """One behaviour pinned (a review of the tests: refusing it or reading its first frame both passed)."""
    answer = answers["cine-bomb.dcm"]
    assert "error" not in answer, answer["error"]
    assert any("only the first frame is read" in w for w in answer["warnings"])
    assert answer["priority"] is None  # blank frames are no chest film


# --- real films in awkward encodings -------------------------------------------------------------------


@pytest.mark.parametrize("name", AWKWARD)
def test_an_awkward_encoding_gets_the_plain_films_answer(answers, name):
    plain, other = answers["plain.png"], answers[name]
    assert "error" not in other, other["error"]
    assert (other["label"], other["priority"]) == (plain["label"], plain["priority"])
    for cls, p in plain["probabilities"].items():
        assert other["probabilities"][cls] == pytest.approx(p, abs=TOLERANCE)
    assert other["warnings"] == []


def test_the_plain_png_is_the_same_film_as_the_jpeg(answers):
    assert answers["plain.png"]["probabilities"] == answers["normal.jpeg"]["probabilities"]


def test_monochrome1_and_jpeg2000_copies_of_the_real_cr_agree(answers):
    raw, j2k = answers["RG1_UNCI.dcm"], answers["RG1_J2KI.dcm"]
    assert (j2k["label"], j2k["priority"]) == (raw["label"], raw["priority"])
    for cls, p in raw["probabilities"].items():
        assert j2k["probabilities"][cls] == pytest.approx(p, abs=DICOM_PAIR_TOLERANCE)


@pytest.mark.parametrize("layout", corpus.DICOM_LAYOUTS)
def test_a_film_exported_as_monochrome1_dicom_reads_back_as_the_film(grey_film, layout):
    """Stored inverted (MONOCHROME1) at 16 bits; with or without preamble and file meta, and no extension.

    The ``bare`` layout (a data set without file meta, as old exports write it) was once refused: pydicom reads
    it (implicit VR little endian) but cannot decode pixels without a Transfer Syntax UID in file_meta.
    """
    film = read_film(corpus.film_as_dicom(grey_film, monochrome1=True, layout=layout), name="export")
    assert film.source_format == "DICOM"
    assert film.metadata["PhotometricInterpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(film.pixels, np.asarray(grey_film, dtype=np.float32) / 255.0, atol=1e-6)


def test_text_named_dcm_is_not_called_a_dicom_file(predictor):
    """The format is decided by content: a text file named .dcm is not "a DICOM file without pixel data"."""
    with pytest.raises(UnreadableImage) as error:
        read_film(b"Dear colleague, the film follows by post.\n" * 20, name="letter.dcm")
    message = str(error.value)
    assert "without pixel data" not in message and re.search("not an image|not a DICOM", message), message
    (result,) = triage_uploads(predictor, [Upload.of(corpus.Upload("letter.dcm", b"Dear colleague,\n" * 50))])
    assert result.error and "without pixel data" not in result.error


def test_a_film_refused_for_a_passing_reason_is_tried_again_on_the_next_run(predictor, films_dir, monkeypatch):
    """A GPU another job fills, or a decoding process that did not start, says "try again": the session must not
    keep that answer as the film's, or every later click would show it Unreadable. A real refusal is kept."""
    from core.errors import DeviceOutOfMemory

    film = next((films_dir / "PNEUMONIA").iterdir())
    uploads = [Upload.of(corpus.Upload("busy.jpeg", film.read_bytes())),
               Upload.of(corpus.Upload("letter.jpeg", b"Dear colleague,\n" * 50))]
    predict, calls = predictor.predict, []

    def busy_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise DeviceOutOfMemory("The GPU has no room for the model now; try again once it is free.")
        return predict(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict", busy_once)
    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))  # one session's cache, fresh for this test
    first = triage_uploads(predictor, uploads)
    assert "try again" in first[0].error and first[1].error
    second = triage_uploads(predictor, uploads)
    assert second[0].error is None and second[0].prediction is not None and len(calls) == 2
    assert second[1].error == first[1].error
    triage_uploads(predictor, uploads)
    assert len(calls) == 2  # the good result is kept as before


def test_a_batch_gives_the_page_a_stopping_point_before_each_film(predictor, films_dir, monkeypatch):
    """Streamlit stops a superseded run at its next element only, and the loop over films had none: every click
    during a batch left the old run reading the rest (with the old model) beside the new one (a review)."""

    films = sorted((films_dir / "PNEUMONIA").iterdir())[:3]
    uploads = [Upload.of(corpus.Upload(f"film-{n}.jpeg", path.read_bytes())) for n, path in enumerate(films)]
    predict, calls, shown = predictor.predict, [], []
    monkeypatch.setattr(predictor, "predict", lambda *a, **k: calls.append(1) or predict(*a, **k))
    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))

    def progress(done: int, total: int) -> None:
        shown.append((done, total))
        if done == 1:
            raise InterruptedError("a newer run")  # as Streamlit's StopException at an element

    display_copy, free_slots = state._display_copy, []  # and the full-size film is held in its slot to the end
    monkeypatch.setattr(state, "_display_copy", lambda film: free_slots.append(in_flight._slots._value)
                        or display_copy(film))
    with pytest.raises(InterruptedError):
        triage_uploads(predictor, uploads, on_film=progress)
    assert shown == [(0, 3), (1, 3)] and len(calls) == 1
    assert free_slots == [in_flight.MAX_FILMS_IN_FLIGHT - 1]


def test_films_in_flight_are_bounded_for_all_sessions_and_one_past_them_is_read_at_the_next_run(
        predictor, films_dir, monkeypatch):
    """A film being decoded and waiting for the model was counted by no cache: a hundred sessions each holding a
    61 MB film (from a 21 kB PNG) held 6 GB. Past MAX_FILMS_IN_FLIGHT a film waits, then says to try again."""

    films = sorted((films_dir / "NORMAL").iterdir())[:3]
    uploads = [Upload.of(corpus.Upload(f"waiting-{n}.jpeg", film.read_bytes())) for n, film in enumerate(films)]
    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))  # one session's cache, fresh for this test
    monkeypatch.setattr(in_flight, "WAIT_S", 0.2)
    waits = []  # a review: each film of a batch waited its own 120 s, so 50 films 100 minutes; now the first alone
    monkeypatch.setattr(state, "film_in_flight", lambda run: waits.append(run.wait_s) or in_flight.film_in_flight(run))
    slots = [in_flight.film_in_flight() for _ in range(in_flight.MAX_FILMS_IN_FLIGHT)]
    for slot in slots:  # other sessions' films, all in flight
        slot.__enter__()
    try:
        busy = triage_uploads(predictor, uploads)
    finally:
        for slot in slots:
            slot.__exit__(None, None, None)
    assert waits == [None, 0.0, 0.0] and all(  # the rest of the batch tried once without waiting, each not read yet
        b.error == in_flight.BUSY and b.prediction is None and b.retry for b in busy)  # not unreadable
    read = triage_uploads(predictor, uploads)  # not kept: read now that a slot is free
    assert all(r.error is None and r.prediction is not None for r in read) and waits[3:] == [None] * 3

# --- the triage page itself ----------------------------------------------------------------------------


@pytest.fixture
def app_registry(trained_model, tmp_path, settings_env) -> Path:
    return private_registry(trained_model, tmp_path, settings_env)


def test_the_triage_page_lists_broken_uploads_as_unreadable_and_triages_the_rest(app_registry, batch):
    broken, readable = ["empty.png", "truncated.jpeg", "bomb.png", "no-pixels.dcm"], ["plain.png", "mono1.dcm"]
    at = open_page()
    upload(at, [(name, batch[name]) for name in broken + readable])  # six: one page of film cards
    table = at.dataframe[0].value.set_index("File")
    for name in broken:
        assert table.loc[name, "Priority"] == "Unreadable"
        assert re.search(BROKEN[name], table.loc[name, "Warnings"])
        shown = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]  # the page escapes Markdown in messages
        assert any(name in text and "other films are not affected" in text for text in shown)
    assert table.loc["plain.png", "Priority"] in ("Urgent", "Routine")
    assert table.loc["mono1.dcm", "Priority"] == table.loc["plain.png", "Priority"]
    assert table.loc["mono1.dcm", "Probability"] == pytest.approx(table.loc["plain.png", "Probability"], abs=TOLERANCE)
    assert {m.label: m.value for m in at.metric}["Unreadable"] == str(len(broken))
    assert sum(c.startswith("Film,") for image in at.get("image") for c in image.captions) == len(readable)



def test_a_dicom_stopped_at_its_time_limit_waits_as_not_read_until_asked_to_be_read_again(
        predictor, dicom_dir, monkeypatch):
    """A healthy large film on a busy server can run past its decoding time limit; it was kept as "damaged"
    for the session (found by a review). It shows as not read yet; later page runs (any click) do not spend the
    time limit on it again, a hostile file's as much as a healthy one's, until the reader asks: then it is read."""

    monkeypatch.setattr(state, "session_cache", lambda kind, kept={}: kept.setdefault(kind, state.BoundedCache(
        *state._CAPS[kind])))  # one session's cache, fresh for this test
    films = state.FilmCache(state.limits.SESSION_FILM_CACHE_BYTES)  # and its decoded films: none decoded yet
    monkeypatch.setattr(state, "session_films", lambda: films)
    from core.films import decode_pool

    decode, calls = decode_pool._Worker.decode, []

    def slow_once(worker, *args):  # the first decoding runs past its limit, as under a training job's load
        calls.append(1)
        if len(calls) == 1:
            raise decode_pool._Lost("time")
        return decode(worker, *args)

    monkeypatch.setattr(decode_pool._Worker, "decode", slow_once)
    uploads = [Upload.of(corpus.Upload("large.dcm", (dicom_dir / "RG1_UNCI.dcm").read_bytes()))]
    (stopped,) = triage_uploads(predictor, uploads)
    assert stopped.retry and "longer than the time limit" in stopped.error and "server may be busy" in stopped.error
    (still,) = triage_uploads(predictor, uploads)  # another click on the page: no second decoding
    assert still.retry and len(calls) == 1
    state.read_again(uploads[0].digest)
    (read,) = triage_uploads(predictor, uploads)
    assert read.error is None and read.prediction is not None and len(calls) == 2
