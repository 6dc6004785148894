"""Reading raster films: every input format a clinic sends decodes to the same grey film.

Each variant is written at test time from a real film, so no binary fixture is committed.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core.errors import UnreadableImage
from core.films.read import read_film


def reference(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _grey16(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)  # 8 -> 16 bit, full range


def _palette(image: Image.Image) -> Image.Image:
    return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256)


# name -> (how to write it from the plain 8-bit film, file suffix, expected PIL mode, format, bit depth)
VARIANTS = {
    "png-grey": (lambda im, p: im.save(p), ".png", "L", "PNG", 8),
    "jpeg-grey": (lambda im, p: im.save(p, quality=95), ".jpg", "L", "JPEG", 8),
    "png-grey-16bit": (lambda im, p: _grey16(im).save(p), ".png", "I;16", "PNG", 16),
    # a detector's 12- and 14-bit values in a 16-bit PNG, as pixel_array is often saved: read at the bits held
    "png-grey-12-of-16bit": (lambda im, p: Image.fromarray(np.asarray(im, np.uint16) * 16).save(p), ".png", "I;16",
                             "PNG", 12),
    "png-grey-14-of-16bit": (lambda im, p: Image.fromarray(np.asarray(im, np.uint16) * 64).save(p), ".png", "I;16",
                             "PNG", 14),
    # 15 bits, as the shared CR DICOM holds: read at 16 it was half as bright (found by a review)
    "png-grey-15-of-16bit": (lambda im, p: Image.fromarray(np.asarray(im, np.uint16) * 128).save(p), ".png", "I;16",
                             "PNG", 15),
    "png-rgb": (lambda im, p: im.convert("RGB").save(p), ".png", "RGB", "PNG", 8),
    "jpeg-rgb": (lambda im, p: im.convert("RGB").save(p, quality=95), ".jpg", "RGB", "JPEG", 8),
    "png-rgba": (lambda im, p: im.convert("RGBA").save(p), ".png", "RGBA", "PNG", 8),
    "png-grey-alpha": (lambda im, p: im.convert("LA").save(p), ".png", "LA", "PNG", 8),
    "jpeg-cmyk": (lambda im, p: im.convert("CMYK").save(p, quality=95), ".jpg", "CMYK", "JPEG", 8),
    "png-palette": (lambda im, p: _palette(im).save(p), ".png", "P", "PNG", 8),
}


@pytest.fixture
def write_variant(plain_film, tmp_path):
    def write(name: str):
        writer, suffix = VARIANTS[name][:2]
        path = tmp_path / f"film-{name}{suffix}"
        writer(plain_film, path)
        return path

    return write


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_format_decodes_to_the_plain_grey_film(variant, write_variant, plain_film):
    _, _, mode, fmt, bit_depth = VARIANTS[variant]
    film = read_film(write_variant(variant))
    # The writer really produced that kind of file (or this test would prove nothing).
    assert (film.metadata["mode"], film.source_format, film.bit_depth) == (mode, fmt, bit_depth)
    assert film.pixels.dtype == np.float32
    assert film.pixels.shape == (plain_film.height, plain_film.width)
    assert 0.0 <= film.pixels.min() and film.pixels.max() <= 1.0
    assert np.abs(film.pixels - reference(plain_film)).mean() < 0.01


class _NoChestCheck:
    """Probabilities do not depend on the chest-film check; skipping it keeps these tests quick."""

    def problem(self, film):
        return None


@pytest.fixture(scope="module")
def quick_predictor(predictor):
    from core.serving.predict import Predictor

    return Predictor(predictor.loaded, chest_check=_NoChestCheck())


@pytest.fixture(scope="module")
def plain_prediction(quick_predictor, plain_film, tmp_path_factory):
    path = tmp_path_factory.mktemp("plain") / "film.png"
    plain_film.save(path)
    return quick_predictor.predict(read_film(path))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "png-grey"])
def test_every_format_gets_the_same_probabilities(variant, write_variant, quick_predictor, plain_prediction):
    plain = plain_prediction
    other = quick_predictor.predict(read_film(write_variant(variant)))
    for name, p in plain.probabilities.items():
        assert other.probabilities[name] == pytest.approx(p, abs=0.01)
    assert other.label == plain.label


def test_bytes_and_path_give_the_same_film(write_variant):
    path = write_variant("jpeg-grey")
    from_path, from_bytes = read_film(path), read_film(path.read_bytes(), name=path.name)
    np.testing.assert_array_equal(from_path.pixels, from_bytes.pixels)
    assert from_path.metadata == from_bytes.metadata


# EXIF Orientation -> the rotation that shows the film upright (numpy rot90 k: +1 = counter-clockwise).
ORIENTATIONS = {3: 2, 6: -1, 8: 1}


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_exif_orientation_is_applied(orientation, plain_film, tmp_path):
    path = tmp_path / f"rotated-{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    plain_film.save(path, quality=95, exif=exif)
    film = read_film(path)
    upright = np.rot90(reference(plain_film), k=ORIENTATIONS[orientation])
    assert film.original_size == plain_film.size  # as stored
    assert film.size == (upright.shape[1], upright.shape[0])  # as displayed: swapped for 6 and 8
    assert np.abs(film.pixels - upright).mean() < 0.01
    if orientation == 3:  # same shape as stored: it must really be turned, not left as stored
        assert np.abs(film.pixels - reference(plain_film)).mean() > 0.05


def test_real_kermany_rgb_jpeg_reads_as_grey(kermany_train):
    path = sorted((kermany_train / "NORMAL").glob("*.jpeg"))[0]
    film = read_film(path)
    assert film.metadata["mode"] == "RGB"
    assert film.pixels.shape == (224, 224)
    with Image.open(path) as image:
        rgb = np.asarray(image, dtype=np.float32)
    # grey source: the three channels (almost) agree, so the grey film is (almost) any one of them
    assert np.abs(film.pixels - rgb[..., 1] / 255.0).mean() < 0.01


@pytest.mark.parametrize("folder", ["NORMAL", "PNEUMONIA"])
def test_full_resolution_films_keep_their_size(films_dir, folder):
    for path in sorted((films_dir / folder).iterdir()):
        film = read_film(path)
        with Image.open(path) as image:
            assert film.size == image.size
        assert film.pixels.std() > 0.1  # real anatomy, not a blank decode


# --- unreadable input: a clear UnreadableImage naming the problem, never another exception -------------


def _truncated_jpeg(path, plain_film):
    plain_film.save(path.with_suffix(".full.jpg"), quality=95)
    data = path.with_suffix(".full.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_jpeg_with_end(path, plain_film):
    """Cut in half, then the end marker written after it, as an interrupted copy repaired by a tool might be:
    libjpeg fills the missing half with mid-grey and only warns (found by a review: 7 of 8 normal films urgent)."""
    _truncated_jpeg(path, plain_film)
    path.write_bytes(path.read_bytes() + b"\xff\xd9")


def _truncated_mpo_with_end(path, plain_film):
    """The same cut in a JPEG whose multi-picture index lists two images: Pillow opens it as "MPO", and the
    truncation check read only "JPEG" (a review)."""
    plain_film.save(path.with_suffix(".full.jpg"), format="MPO", save_all=True, append_images=[plain_film],
                    quality=95)
    data = path.with_suffix(".full.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 4] + b"\xff\xd9")  # the first image's scan cut in half


def _cut_with_end(path, image, fraction=0.5, **options):
    """``image`` as a JPEG cut at ``fraction`` of its bytes, with the end marker written after it."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * fraction)] + b"\xff\xd9")


def _rgb16_png(path, plain_film):
    """The film's values as 14 bits in a 16-bit RGB PNG (written by hand: Pillow writes no 16-bit colour)."""
    grey = np.asarray(plain_film, dtype=">u2") * 64
    rows = np.repeat(grey[..., None], 3, axis=2).reshape(grey.shape[0], -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", grey.shape[1], grey.shape[0], 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def _truncated_png(path, plain_film):
    plain_film.save(path.with_suffix(".full.png"))
    data = path.with_suffix(".full.png").read_bytes()
    path.write_bytes(data[: len(data) // 2])


UNREADABLE = {
    "empty.png": (lambda p, im: p.write_bytes(b""), "empty"),
    "notes.txt": (lambda p, im: p.write_text("Patient notes, not an image.\n"), "not an image"),
    "noise.jpg": (lambda p, im: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not an image"),
    "cut.jpg": (_truncated_jpeg, "truncated"),
    "cut.png": (_truncated_png, "truncated"),
    "cut-with-end.jpg": (_truncated_jpeg_with_end, "truncated"),
    "cut-with-end-mpo.jpg": (_truncated_mpo_with_end, "truncated"),
    # a review: 16 x 16 blocks (colour, chroma subsampled), CMYK and progressive files passed an 8 x 8 grey check
    "cut-colour-420.jpg": (lambda p, im: _cut_with_end(p, im.convert("RGB")), "truncated"),
    "cut-cmyk.jpg": (lambda p, im: _cut_with_end(p, im.convert("CMYK")), "truncated"),
    "cut-progressive.jpg": (lambda p, im: _cut_with_end(p, im.convert("RGB"), 0.3, progressive=True), "truncated"),
    "film-rgb16.png": (_rgb16_png, "16-bit colour"),
    # Pillow opens PNG and JPEG only (issue 12): other raster formats are refused (tests/test_bombs.py).
    "film.tif": (lambda p, im: _grey16(im).save(p), "not an image"),
    "film.bmp": (lambda p, im: im.save(p), "not an image"),
}


@pytest.mark.parametrize("name", UNREADABLE)
def test_unreadable_files_are_refused_with_a_reason(name, tmp_path, plain_film):
    write, reason = UNREADABLE[name]
    path = tmp_path / name
    write(path, plain_film)
    with pytest.raises(UnreadableImage) as error:
        read_film(path)
    assert reason in str(error.value)
    assert name in str(error.value)
    with pytest.raises(UnreadableImage, match=reason):  # the same from memory, as an upload arrives
        read_film(path.read_bytes(), name=name)


def test_a_film_on_a_mid_grey_canvas_is_not_taken_for_a_cut_short_jpeg(plain_film):
    """The cut-short test (flat mid-grey at the end) refused a real film pasted on a canvas of grey 128 (a review)."""
    import io

    for size, at in (((plain_film.width + 64, plain_film.height + 64), (32, 32)),  # margins all round
                     ((plain_film.width, plain_film.height + 40), (0, 0))):  # padding below only
        for mode in ("L", "RGB"):  # colour: 16 x 16 blocks
            canvas = Image.new(mode, size, (128,) * len(mode))
            canvas.paste(plain_film.convert(mode), at)
            buffer = io.BytesIO()
            canvas.save(buffer, "JPEG", quality=95)
            assert read_film(buffer.getvalue(), name="canvas.jpg").pixels.shape == (size[1], size[0])


def test_missing_path_and_folder_are_refused(tmp_path):
    with pytest.raises(UnreadableImage, match="does not exist"):
        read_film(tmp_path / "nowhere.png")
    with pytest.raises(UnreadableImage, match="is a folder, not a film"):
        read_film(tmp_path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import core.films.read

    Image.new("L", (300, 300), 128).save(tmp_path / "big.png")
    monkeypatch.setattr(core.films.read, "MAX_PIXELS", 300 * 300 - 1)
    with pytest.raises(UnreadableImage, match="megapixel limit"):
        read_film(tmp_path / "big.png")


def test_other_objects_are_a_type_error():
    with pytest.raises(TypeError):
        read_film(12345)


def test_png_named_dcm_is_read_by_its_content(plain_film, tmp_path):
    """Content, not the file name, decides the format: a PNG that a PACS export named .dcm is still a film.

    The .dcm suffix used to send it to pydicom, which reported "a DICOM file without pixel data": a wrong
    message (it is not a DICOM file at all) and a refused, perfectly readable film.
    """
    path = tmp_path / "export.dcm"
    plain_film.save(path, format="PNG")
    film = read_film(path)
    assert film.source_format == "PNG"
    assert np.abs(film.pixels - reference(plain_film)).mean() < 1e-6


@pytest.mark.parametrize("bits", [12, 16])
def test_a_jpeg_of_more_than_8_bits_is_named_as_such_not_told_to_use_jpeg(bits):
    """A review: a 12-bit JPEG was told "not an image we can read. Use PNG, JPEG or DICOM", though it is a JPEG."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = 2
    while data[at + 1] != 0xC0:  # to the frame header (baseline SOF0), whose first byte is the precision
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    data[at + 4] = bits
    with pytest.raises(UnreadableImage, match=f"^deep.jpg is a {bits}-bit JPEG, which cannot be read here. Export it "
                                              "as an 8-bit JPEG, a PNG or a DICOM.$"):
        read_film(bytes(data), name="deep.jpg")


def test_a_jpeg_whose_height_comes_after_its_data_is_named_as_such():
    """A frame header of height 0 (the height given by a DNL marker after the scan) read "not an image we can
    read. Use PNG, JPEG or DICOM", though it is a JPEG (a review)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"\xff\xc0")
    data[at + 5: at + 7] = b"\x00\x00"
    with pytest.raises(UnreadableImage, match="^dnl.jpg is a JPEG that gives its height only after its image data "
                                              r"\(a DNL marker\), which cannot be read here\."):
        read_film(bytes(data), name="dnl.jpg")


def test_bytes_that_cannot_open_a_dicom_data_set_are_not_sent_to_the_dicom_worker(monkeypatch):
    """A review: 40 MB of zeros went to the DICOM worker as a possible preamble-less DICOM, ran out its time limit
    and was listed "not read yet: the server may be busy", first in the worklist, with a Read it again button."""
    from core.films import read

    sent = []
    monkeypatch.setattr(read, "decode_pool", lambda: sent.append(1))
    # then (a later review) a DICOM group's two bytes, or a first element, before the zeros
    for junk in (bytes(2_000_000), b"%PDF-1.7\n" + bytes(1000), b"\x10\x00\x10\x00PN", b"\x08\x00" + bytes(2_000_000),
                 b"\x08\x00\x05\x00" + bytes(2_000_000), b"\x02\x00\x10\x00UI\x40\x00" + bytes(100)):
        with pytest.raises(UnreadableImage, match="is not an image we can read"):
            read_film(junk, name="junk.bin")
    assert sent == []


def test_a_file_is_named_in_its_messages_at_a_readable_length_and_in_its_own_order():
    """A hostile-file review: a 100,000-character upload name made a 100 kB message, and U+202E passed through (it
    shows "gpj.exe" as "exe.jpg")."""
    with pytest.raises(UnreadableImage) as long_name:
        read_film(b"not a film", name="a" * 100_000 + ".png")
    said = str(long_name.value)
    assert len(said) < 300 and "a" * 119 + "…" + "a" * 36 + ".png is not an image" in said
    with pytest.raises(UnreadableImage, match="^film\ufffdgpj.exe is not an image"):
        read_film(b"not a film", name="film\u202egpj.exe")


def test_a_file_of_several_images_says_only_the_first_is_read(plain_film):
    """A hostile-file review: an animated PNG or a multi-picture JPEG read its first image without a word, where a
    multi-frame DICOM says so."""
    import io

    for fmt, options in (("PNG", {"save_all": True, "append_images": [plain_film.rotate(90)]}),
                         ("MPO", {"save_all": True, "append_images": [plain_film]})):
        buffer = io.BytesIO()
        plain_film.save(buffer, fmt, **options)
        film = read_film(buffer.getvalue(), name=f"several.{fmt.lower()}")
        shown = "JPEG" if fmt == "MPO" else fmt
        assert film.warnings == (f"This {shown} holds 2 images: only the first is read.",)
        assert film.pixels.shape == (plain_film.height, plain_film.width)
    buffer = io.BytesIO()
    plain_film.save(buffer, "PNG")
    assert read_film(buffer.getvalue(), name="one.png").warnings == ()


def test_a_lossless_jpeg_is_named_as_one_not_as_truncated(plain_film):
    """A hostile-file review: a lossless JPEG (SOF3), which Pillow cannot decode, was called "probably truncated"."""
    import io

    buffer = io.BytesIO()
    plain_film.convert("L").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    data[data.index(b"\xff\xc0") + 1] = 0xC3  # the frame header of the lossless process
    with pytest.raises(UnreadableImage, match=r"^lossless\.jpg is a lossless JPEG, which cannot be read here\."):
        read_film(bytes(data), name="lossless.jpg")


def test_a_png_with_more_text_than_pillow_reads_says_so_not_truncated(plain_film, monkeypatch):
    """Past Pillow's cap on text chunks in all (64 MB: 66 chunks of 1 MB were read as "probably truncated", a
    review); the cap is lowered here so the test film stays small."""
    import PIL.PngImagePlugin

    monkeypatch.setattr(PIL.PngImagePlugin, "MAX_TEXT_MEMORY", 4096)
    buffer = io.BytesIO()
    info = PIL.PngImagePlugin.PngInfo()
    for i in range(8):
        info.add_text(f"note{i}", "a" * 1000)
    plain_film.save(buffer, "PNG", pnginfo=info)
    with pytest.raises(UnreadableImage, match="more text metadata than") as error:
        read_film(buffer.getvalue(), name="notes.png")
    assert "truncated" not in str(error.value)
