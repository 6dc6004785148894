"""Files decode inside bounds (issue 12, item 4): a bomb per codec, the decoding process's own limits, and
the formats Pillow may open.

Every bomb is built here from the real DICOMs in ../shared/data/dicom (tests/bombs.py): a real film's header
whose Rows and Columns tell the truth, around a codestream patched to declare 30,000 x 30,000 pixels, or a
stream that expands far beyond what it holds. Memory is bounded by measuring the peak resident size of the
CLI process and its decoding workers (RUSAGE_CHILDREN of a wrapper process); times are printed, not asserted.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time

import bombs
import numpy as np
import pydicom
import pytest
from bad_input_support import REPO
from PIL import Image
from pydicom.uid import JPEG2000, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from core.errors import UnreadableImage
from core.films import folders
from core.films.bounds import FILM_SUFFIXES, RASTER_FORMATS, declared_size
from core.films.decoding_cost import MAX_JPEG_SCANS, jpeg_counts
from core.films.read import read_film

GB = 2**30


@pytest.fixture(scope="module")
def bomb_files(dicom_dir) -> dict[str, bytes]:
    return {name: build(dicom_dir) for name, (build, _) in bombs.BOMBS.items()}


@pytest.mark.parametrize("name", bombs.BOMBS)
def test_a_bomb_is_refused_with_a_size_message_naming_the_file(bomb_files, name):
    with pytest.raises(UnreadableImage) as refused:
        read_film(bomb_files[name], name=name)
    message = str(refused.value)
    assert re.search(bombs.BOMBS[name][1], message), message
    assert message.startswith(name)


@pytest.mark.parametrize("name", [n for n in bombs.BOMBS if "dicom" in n])
def test_a_bomb_in_dicom_keeps_the_honest_header_of_the_real_film(bomb_files, name):
    ds = pydicom.dcmread(io.BytesIO(bomb_files[name]), stop_before_pixels=True)
    assert str(ds.PatientName) == "CompressedSamples^RG1"  # the real file's header ...
    assert ds.Rows * ds.Columns <= 1955 * 1841  # ... claiming no more than the real film


def test_the_patched_streams_decode_when_honest(dicom_dir):
    """The bombs differ from films that decode only in the size they declare: the tests above can fail."""
    stream = bombs.jpeg(dicom_dir)
    assert declared_size(bombs.patch_jpeg_frame(stream, 512, 512)).pixels == 512 * 512
    film = read_film(bombs.encapsulated(dicom_dir, bombs.patch_jpeg_frame(stream, 512, 512), JPEGBaseline8Bit),
                     name="honest-jpeg.dcm")
    assert film.pixels.shape == (512, 512)
    reference = np.asarray(bombs.real_film(dicom_dir), dtype=np.float64)  # stretched on reading: compare shapes
    assert np.corrcoef(film.pixels.ravel(), reference.ravel())[0, 1] > 0.99  # JPEG at quality 90
    j2k = bombs.real_j2k(dicom_dir)
    for codestream in (j2k, bombs.jp2_file(j2k, 1841, 1955)):
        film = read_film(bombs.encapsulated(dicom_dir, codestream, JPEG2000, size=(1955, 1841), bits=15),
                         name="honest-j2k.dcm")
        assert film.pixels.shape == (1955, 1841)


def test_a_progressive_jpeg_decodes_and_only_one_of_too_many_scans_is_refused(dicom_dir):
    """Real encoders write 1 scan (baseline) or 6 (progressive grey); the many-scans bomb is the same film with
    its last scan repeated, refused from 257 scans on, before any decoder runs; 256 still decode."""
    baseline, progressive = bombs.jpeg(dicom_dir), bombs.jpeg(dicom_dir, progressive=True)
    assert (jpeg_scans(baseline), jpeg_scans(progressive)) == (1, 6)
    assert jpeg_counts(baseline).fill == 0 and jpeg_counts(baseline).segments < 12
    assert jpeg_scans(bombs.many_scans(dicom_dir, 250)) == MAX_JPEG_SCANS == 256
    assert jpeg_scans(bombs.many_scans(dicom_dir, 2000)) == MAX_JPEG_SCANS + 1  # counted no further
    garbage = progressive[:-2] + b"\x00\x17garbage" + progressive[progressive.rfind(b"\xff\xda"):]
    assert jpeg_scans(garbage) == 7  # bytes a decoder skips (with a warning) do not hide the scans after them
    reference = read_film(progressive, name="progressive.jpeg").pixels
    most = read_film(bombs.many_scans(dicom_dir, 250), name="most.jpeg").pixels
    assert most.shape == reference.shape == (512, 512)
    assert np.corrcoef(most.ravel(), reference.ravel())[0, 1] > 0.9  # the repeated refinement only adds noise
    with pytest.raises(UnreadableImage, match="more than 256 scans"):
        read_film(bombs.many_scans(dicom_dir, 251), name="one-too-many.jpeg")


def test_the_structure_bombs_decode_when_a_little_under_their_limits(dicom_dir):
    """Comments, fill bytes and chunks are legal: just under the limits the same films decode (the refusals in
    the bomb table above can fail), and counting them stops at the limit, whatever the file holds."""
    for stream in (bombs.comments(dicom_dir, 9_000), bombs.fill_bytes(dicom_dir, 60_000),
                   bombs.png_chunks(dicom_dir, 90_000), bombs.junk(dicom_dir, 60_000),
                   bombs.exif_png(dicom_dir, entries=10, claim=90_000), bombs.exif_jpeg(dicom_dir, 100, 600),
                   bombs.mpf_jpeg(dicom_dir, 10, 600), bombs.icc_png(dicom_dir, 1),
                   bombs.photoshop_jpeg(dicom_dir, 15)):
        assert read_film(stream, name="legal").pixels.shape == (512, 512)
    assert jpeg_counts(bombs.junk(dicom_dir, 60_000)).fill == 60_000
    assert jpeg_counts(bombs.comments(dicom_dir, 50_000)).segments == 10_001


def test_a_film_is_turned_upright_without_reading_its_exif_sub_directories(dicom_dir):
    """Found by a review: ImageOps.exif_transpose wrote the EXIF block back out, reading every sub-directory with
    no bound (809 MB and 26 s for a 58 kB JPEG). The film is still turned by its orientation, within bounds."""
    import tracemalloc

    stream = bombs.exif_sub_directory_jpeg(dicom_dir, entries=200)
    assert len(stream) < 100_000
    tracemalloc.start()
    try:
        film = read_film(stream, name="sideways.jpeg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000, peak  # the 512 x 512 film's own copies are a few MB
    plain = read_film(bombs.jpeg(dicom_dir), name="plain.jpeg")
    assert film.pixels.shape == plain.pixels.shape == (512, 512)
    assert np.abs(film.pixels - plain.pixels).mean() < 0.02  # turned back upright (JPEG noise only)


def test_large_decodes_wait_for_one_of_the_decode_places_small_ones_never_wait(dicom_dir, settings_env,
                                                                               monkeypatch):
    """Sessions decoding at once may not each hold what a large decode takes: with one place, two films over
    LARGE_DECODE samples decode one after the other; two small ones still decode together."""
    import threading

    from core.films import read

    settings_env(CXR_DECODE_WORKERS="1")
    monkeypatch.setattr(read, "_large_places", None)
    running, overlapped, original = [], [], read._decode_raster

    def decode(data, label):
        running.append(label)
        overlapped.append(len(running) > 1)
        time.sleep(0.3)
        running.remove(label)
        return original(data, label)

    monkeypatch.setattr(read, "_decode_raster", decode)
    small = bombs.jpeg(dicom_dir)  # 512 x 512 grey: 0.26 M samples
    large = bombs.patch_jpeg_frame(small, 4096, 4096)  # 16.8 M samples declared (decoding then fails: no matter)

    def both(data: bytes) -> bool:
        overlapped.clear()
        threads = [threading.Thread(target=lambda: _quietly(read_film, data, "f.jpeg")) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return any(overlapped)

    assert both(small) and not both(large)


def jpeg_scans(data: bytes) -> int:
    return jpeg_counts(data).scans


def _quietly(function, *args) -> None:
    try:
        function(*args)
    except UnreadableImage:
        pass


def _recompressed(dicom_dir, syntax) -> tuple[np.ndarray, bytes]:
    """A 512 x 512 crop of the real CR, as the uncompressed film's pixels and as a DICOM under ``syntax``."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[700:1212, 600:1112]).tobytes()
    ds.Rows = ds.Columns = 512
    plain = io.BytesIO()
    ds.save_as(plain)
    if syntax == RLELossless:
        ds.compress(RLELossless)
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    packed = io.BytesIO()
    ds.save_as(packed)
    return read_film(plain.getvalue(), name="crop.dcm").pixels, packed.getvalue()


@pytest.mark.parametrize("syntax", [RLELossless, DeflatedExplicitVRLittleEndian], ids=["rle", "deflated"])
def test_rle_and_deflated_films_decode_to_the_uncompressed_film(dicom_dir, syntax):
    expected, packed = _recompressed(dicom_dir, syntax)
    film = read_film(packed, name="packed.dcm")
    np.testing.assert_array_equal(film.pixels, expected)


def test_rle_runs_past_the_frame_are_not_decoded(dicom_dir):
    """2 bytes per pixel of 128-byte runs would expand to 64 times the frame; decoding stops at the frame."""
    film = read_film(bombs.rle_frame(dicom_dir, 1024, b"\x81\x07"), name="long-runs.dcm")
    assert film.pixels.shape == (1024, 1024)
    # one grey level (7), and without a window 8-bit data reads over 0-255, as the same pixels in a PNG would
    assert float(film.pixels.max()) == float(film.pixels.min()) == pytest.approx(7 / 255)


def _tiled(dicom_dir, side: int) -> io.BytesIO:
    """The real CR film tiled to an honest side x side 16-bit DICOM."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    reps = -(-side // min(ds.Rows, ds.Columns))
    ds.PixelData = np.tile(ds.pixel_array, (reps, reps))[:side, :side].tobytes()
    ds.Rows = ds.Columns = side
    out = io.BytesIO()
    ds.save_as(out)
    return out


def test_the_memory_limit_refuses_a_film_that_needs_more(dicom_dir, settings_env):
    """An honest 7000 x 7000 16-bit film (under the pixel limit) needs ~500 MB to decode: refused at 256 MB,
    and the next film still decodes (a fresh worker)."""
    big = _tiled(dicom_dir, 7000)
    settings_env(CXR_DECODE_MEMORY_MB="256")
    with pytest.raises(UnreadableImage, match="big.dcm is too large to decode safely.*256 MB memory limit"):
        read_film(big.getvalue(), name="big.dcm")
    assert read_film(dicom_dir / "RG1_UNCI.dcm").pixels.shape == (1955, 1841)


def test_a_worker_that_retires_near_the_memory_limit_is_not_handed_the_next_film(dicom_dir, settings_env):
    """A 4000 x 4000 film decodes at 256 MB but brings its worker near the limit, so the worker sends it and
    exits; the pool kept it as idle, and the next, healthy film was refused as damaged (found by a review)."""
    large = _tiled(dicom_dir, 4000)
    settings_env(CXR_DECODE_MEMORY_MB="256")
    assert read_film(large.getvalue(), name="large.dcm").pixels.shape == (4000, 4000)
    assert read_film(dicom_dir / "RG1_UNCI.dcm").pixels.shape == (1955, 1841)


def test_an_idle_worker_killed_meanwhile_is_not_handed_the_next_film(dicom_dir):
    from core.films.decode_pool import decode_pool

    assert read_film(dicom_dir / "RG1_UNCI.dcm").pixels.shape == (1955, 1841)
    for worker in decode_pool()._idle:  # as the kernel's OOM killer would
        worker.process.kill()
        worker.process.wait()
    assert read_film(dicom_dir / "RG1_UNCI.dcm").pixels.shape == (1955, 1841)


def test_the_time_limit_stops_a_film_that_decodes_too_slowly(dicom_dir, settings_env):
    """One literal byte per RLE run: 4096 x 4096 pixels take millions of loop turns. Stopped after 0.5 s."""
    slow = bombs.rle_frame(dicom_dir, 4096, b"\x00\x00")
    settings_env(CXR_DECODE_SECONDS="0.5", CXR_DECODE_SECONDS_PER_MP="0")
    with pytest.raises(UnreadableImage, match="slow.dcm took longer than the time limit"):
        read_film(slow, name="slow.dcm")
    assert read_film(dicom_dir / "RG1_UNCI.dcm").pixels.shape == (1955, 1841)


# --- formats -------------------------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF", "JPEG2000", "WEBP"])
def test_pillow_opens_png_and_jpeg_only(dicom_dir, fmt):
    film = Image.fromarray(bombs.real_film(dicom_dir, 256))
    with pytest.raises(UnreadableImage, match=f"film.{fmt.lower()} is not an image we can read"):
        read_film(_encoded(film, fmt), name=f"film.{fmt.lower()}")


def test_an_eps_file_never_reaches_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\n%%EOF\n"
    with pytest.raises(UnreadableImage, match="drawing.eps is not an image we can read"):
        read_film(eps, name="drawing.eps")


def test_training_folders_accept_the_upload_formats(tmp_path, dicom_dir):
    assert RASTER_FORMATS == ("PNG", "JPEG") and folders.FILM_SUFFIXES is FILM_SUFFIXES
    film = Image.fromarray(bombs.real_film(dicom_dir, 64))
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / cls).mkdir()
        for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpeg"), ("BMP", ".bmp"), ("TIFF", ".tif")):
            (tmp_path / cls / f"film{suffix}").write_bytes(_encoded(film, fmt))
    found = folders.discover(tmp_path)
    assert sorted(p.suffix for p in found.paths) == [".jpeg", ".jpeg", ".png", ".png"]


# --- the CLI on every bomb -----------------------------------------------------------------------------


def _predict_peak(files: list, models) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run ``python -m core predict --json FILES`` under a wrapper; its stdout, and the peak resident bytes of
    the CLI and every decoding worker it started (the wrapper's RUSAGE_CHILDREN), and the seconds taken."""
    wrapper = ("import resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(done.returncode)")
    env = {**os.environ, "CXR_MODELS": str(models), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "core", "predict", "--json",
                           *map(str, files)], env=env, capture_output=True, text=True, timeout=600)
    return done, int(done.stderr.strip().splitlines()[-1]) * 1024, time.monotonic() - started


def test_the_cli_refuses_every_bomb_with_json_and_exit_1_within_bounds(bomb_files, trained_model, dicom_dir,
                                                                     tmp_path):
    for name, data in bomb_files.items():
        (tmp_path / name).write_bytes(data)
    normal, normal_peak, normal_seconds = _predict_peak([dicom_dir / "RG1_UNCI.dcm"], trained_model.directory)
    assert normal.returncode == 0 and "error" not in json.loads(normal.stdout)
    done, peak, seconds = _predict_peak([tmp_path / name for name in bomb_files], trained_model.directory)
    answers = {os.path.basename(line["file"]): line for line in map(json.loads, done.stdout.splitlines())}
    print(f"\npredict on a normal DICOM: {normal_seconds:.1f} s, peak {normal_peak / 2**20:.0f} MB; "
          f"on {len(bomb_files)} bombs: {seconds:.1f} s, peak {peak / 2**20:.0f} MB")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert set(answers) == set(bomb_files)
    for name, answer in answers.items():
        assert set(answer) == {"file", "error"} and re.search(bombs.BOMBS[name][1], answer["error"]), answer
    assert peak < normal_peak + 1.5 * GB


def test_a_palette_png_with_transparency_is_counted_as_the_four_channels_it_decodes_to():
    """Found by a security review: a palette PNG counted as one byte a pixel skipped the large-decode slot, though
    its transparency check and grey conversion expand it to RGBA (a 20 kB, 4000 x 4000 film peaked at 200 MB)."""
    import io

    from PIL import Image

    def palette_png(transparent: bool) -> bytes:
        image, buffer = Image.new("P", (64, 64), 0), io.BytesIO()
        image.putpalette([v for k in range(256) for v in (k, k, k)])
        image.save(buffer, format="PNG", **({"transparency": 0} if transparent else {}))
        return buffer.getvalue()

    assert declared_size(palette_png(True)).components == 4
    padded = palette_png(True)  # a re-read: 1,001 empty chunks before tRNS once hid it from a walk of 1,000
    at = padded.index(b"PLTE") - 4
    padded = padded[:at] + b"\x00\x00\x00\x00teSt\x00\x00\x00\x00" * 1001 + padded[at:]
    assert declared_size(padded).components == 4
    assert declared_size(palette_png(False)).components == 3  # read as RGB before its grey levels
