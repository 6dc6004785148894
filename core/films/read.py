"""Reading films: PNG/JPEG/DICOM bytes -> one :class:`~core.films.film.Film`.

Anything we cannot decode raises :class:`UnreadableImage` naming the file, with a message a person can act
on and never a decoder's own text. Bounds come first: the file size, then the size the codestream declares
(:mod:`core.films.bounds`), before any decoder runs. PNG and JPEG are decoded here by Pillow, which may open
those two formats and nothing else; a large one (over :data:`LARGE_DECODE` samples declared) waits for one of
``decode_workers`` places, so that sessions uploading at once cannot each hold the most a decode takes (641 MB
for a 49-megapixel progressive CMYK JPEG) together. DICOM files are parsed and decoded in a worker process with
memory and time limits (:mod:`core.films.decode_pool`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.config import settings
from core.errors import TriageError, UnreadableImage
from core.films.bounds import RASTER_FORMATS, check_declared_size, dicom_elements, is_codestream, over_limit
from core.films.decoding_cost import JPEG_SOI, check_exif, jpeg_frame, jpeg_height, jpeg_precision
from core.films.decode_pool import decode_pool
from core.films.film import MAX_FILE_BYTES, MAX_PIXELS, Film
from core.films.roots import open_inside_roots
from core.films.transparency import has_alpha, refuse_transparency
from core.films.colour_marks import image_marks
from core.films.truncation import jpeg_cut_short
from core.wording import in_its_own_order, megabytes_over

_DICOM_MAGIC_OFFSET = 128
LARGE_DECODE = 16_000_000  # declared pixels x components: a 4000 x 4000 grey film decodes without waiting
_large_places: threading.BoundedSemaphore | None = None
_places_lock = threading.Lock()


def shown_name(name: str, most: int = 160) -> str:
    """A file's name as its messages give it: at most ``most`` characters (its start and its end, "…" between:
    a 100,000-character upload name made a 100 kB message, a review), and no character that reorders the text
    around it (U+202E shows "gpj.exe" as "exe.jpg")."""
    name = in_its_own_order(name)
    return name if len(name) <= most else f"{name[: most - 41]}…{name[-40:]}"


def read_film(source: str | Path | bytes, name: str | None = None) -> Film:
    """Decode a film from a path or from bytes held in memory (uploads never touch the disk)."""
    if isinstance(source, (str, Path)):
        label = shown_name(name or Path(source).name or "the file")
        data = _read_path(Path(source), label)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label, data = shown_name(name or "the file"), bytes(source)
    else:
        raise TypeError(f"read_film takes a path or bytes, not {type(source).__name__}")
    try:
        return _read_bytes(data, label)
    except TriageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the one catch-all: a decoder's failure, never its text
        raise UnreadableImage(
            f"{label} could not be decoded: the file is damaged or not a film we can read. "
            "Export it again as PNG, JPEG or DICOM."
        ) from exc


def _read_bytes(data: bytes, label: str) -> Film:
    if len(data) == 0:
        raise UnreadableImage(f"{label} is empty (0 bytes): nothing of the film arrived. Upload or copy it again.")
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableImage(
            f"{label} is {megabytes_over(len(data) / 2**20, MAX_FILE_BYTES // 2**20)} MB, over the "
            f"{MAX_FILE_BYTES // 2**20} MB limit for one film."
        )
    if _looks_like_dicom(data):
        return decode_pool().decode(data, label)
    try:
        return _read_raster(data, label)
    except UnreadableImage:
        if is_codestream(data) or data[:2] not in _DICOM_FIRST_GROUPS or not dicom_elements(data):
            raise  # no DICOM data set: 40 MB of zeros (after two bytes of a group, found later) went to the worker and
            # ran out its time limit, listed "not read yet: the server may be busy" (reviews)
        # DICOM files without the 128-byte preamble carry no magic; give pydicom a chance, in the worker.
        film = decode_pool().decode(data, label, headerless=True)
        if film is None:
            raise
        return film


def check_film_path(path: str | Path, name: str | None = None) -> None:
    """Raise the UnreadableImage :func:`read_film` would for a path it cannot even open (missing, not a file,
    over the size limit), without reading the file: a command can refuse a mistyped path before it spends
    seconds loading a model. Messages name the file, never the server path."""
    path = Path(path)
    label = name or path.name or "the file"
    try:
        if path.is_dir():
            raise UnreadableImage(f"{label} is a folder, not a film: name the films in it.")
        if not path.is_file():
            if path.exists():  # a device, a pipe or a socket (/dev/null read "null does not exist": a review)
                raise UnreadableImage(f"{label} is not a regular file (a pipe, a device or a socket).")
            raise UnreadableImage(f"{label} does not exist or is not a file. Check the path.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UnreadableImage(
                f"{label} is {megabytes_over(path.stat().st_size / 2**20, MAX_FILE_BYTES // 2**20)} MB, over the "
                f"{MAX_FILE_BYTES // 2**20} MB limit for one film."
            )
    except OSError as exc:
        raise _cannot_read(label, exc) from exc


def read_film_file(path: Path) -> tuple[Film, str]:
    """The film at ``path`` (as :func:`read_film` reads it) and the SHA-256 of its bytes: which files are one film
    byte for byte (core.evaluation.folder)."""
    label = shown_name(path.name or "the file")
    data = _read_path(Path(path), label)
    return read_film(data, path.name or "the file"), hashlib.sha256(data).hexdigest()


def _read_path(path: Path, label: str) -> bytes:
    """The file's bytes, after :func:`check_film_path`."""
    check_film_path(path, label)
    try:
        with open_inside_roots(path, label) as handle:  # a regular file, and no link out swapped in meanwhile
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _cannot_read(label, exc) from exc


def _cannot_read(label: str, exc: OSError) -> UnreadableImage:
    return UnreadableImage(f"Cannot read {label}: {exc.strerror or 'the file cannot be opened'}.")


# A DICOM data set without its preamble opens with its first element's group: 0002 (file meta) or 0008, little
# or big endian.
_DICOM_FIRST_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


def _looks_like_dicom(data: bytes) -> bool:
    """By content only: a PNG named .dcm is a PNG. Preamble-less DICOMs are caught by the fallback."""
    return data[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + 4] == b"DICM"


def _read_raster(data: bytes, label: str) -> Film:
    size = check_declared_size(data, label, MAX_PIXELS)
    with decode_place(size.pixels * size.components if size else 0):
        return _decode_raster(data, label)


def decode_place(samples: int) -> contextlib.AbstractContextManager:
    """For a decode of ``samples`` declared: nothing to wait for, or one of ``decode_workers`` places."""
    global _large_places
    if samples <= LARGE_DECODE:
        return contextlib.nullcontext()
    with _places_lock:
        if _large_places is None:
            _large_places = threading.BoundedSemaphore(settings().decode_workers)
        return _large_places


def _decode_raster(data: bytes, label: str) -> Film:
    try:
        # No warnings.catch_warnings here: its filters belong to the process, and uploads decode in several
        # threads at once (one interleaving left every warning silenced for good). Pillow's decompression-bomb
        # warning starts at 89 megapixels; check_declared_size refused anything over 50 before this opened.
        image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
        width, height = image.size
        if over := over_limit(width, height, MAX_PIXELS):
            raise UnreadableImage(f"{label} is {width}x{height} pixels, {over} we decode safely. Export the film "
                                  "at a lower resolution.")
        # a JPEG whose multi-picture (MPF) index lists several images opens as "MPO": still a JPEG, checked as one
        # (it skipped the truncation check and was recompressed at 224 px, found by a review)
        fmt = "JPEG" if image.format == "MPO" else image.format or "image"
        image.load()
        if fmt == "JPEG" and jpeg_cut_short(data, image):
            raise UnreadableImage(f"{label} could not be decoded; the file is probably truncated or corrupt "
                                  "(its last rows are missing). Export it again.")
        if fmt != "JPEG":  # a JPEG's block was checked in its marker walk, before Pillow opened it
            check_exif(_exif_block(image), label)  # turning it upright reads the block: within bounds first
        image = _upright(image)
    except UnreadableImage:
        raise
    except UnidentifiedImageError as exc:
        bits = jpeg_precision(data) if data.startswith(JPEG_SOI) else None
        if bits not in (None, 8):  # a JPEG all the same: "use JPEG" told its sender nothing (a review)
            raise UnreadableImage(f"{label} is a {bits}-bit JPEG, which cannot be read here. Export it as an 8-bit "
                                  "JPEG, a PNG or a DICOM.") from exc
        if bits == 8 and jpeg_height(data) == 0:  # a JPEG all the same (a review)
            raise UnreadableImage(f"{label} is a JPEG that gives its height only after its image data (a DNL "
                                  "marker), which cannot be read here. Export it again as an ordinary JPEG, a PNG "
                                  "or a DICOM.") from exc
        raise UnreadableImage(
            f"{label} is not an image we can read. Use PNG, JPEG or DICOM."
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(
            f"{label} is too large to decode safely: it declares more pixels than the limit. "
            "Export the film at a lower resolution."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if "decompressed data too large" in str(exc).lower():  # Pillow's own cap on a compressed chunk (zTXt, iCCP)
            raise UnreadableImage(
                f"{label} could not be decoded: it holds a compressed metadata chunk (text or a colour profile) too "
                "large to read safely. Export the film again without its metadata."
            ) from exc
        if "text chunks" in str(exc).lower():  # Pillow's cap on all text chunks together (MAX_TEXT_MEMORY, 64 MB)
            raise UnreadableImage(f"{label} could not be decoded: it holds more text metadata than can be read "
                                  "safely. Export the film again without its metadata.") from exc
        if data.startswith(JPEG_SOI) and jpeg_frame(data) in _LOSSLESS_JPEG:  # not cut short: another kind of JPEG
            raise UnreadableImage(f"{label} is a lossless JPEG, which cannot be read here. Export it as an 8-bit "
                                  "JPEG, a PNG or a DICOM.") from exc
        raise UnreadableImage(
            f"{label} could not be decoded; the file is probably truncated or corrupt. Export it again."
        ) from exc
    refuse_transparency(image, label)
    frames = getattr(image, "n_frames", 1)  # an animated PNG, a JPEG with a multi-picture index (MPO)
    pixels, bit_depth = _to_grey_float(image)
    meta = {"format": fmt, "mode": image.mode}
    notes = (f"This {fmt} holds {frames} images: only the first is read.",) if frames > 1 else ()  # as a DICOM says
    marks = image_marks(image)
    return Film(pixels, fmt, (width, height), bit_depth, meta, warnings=notes + ((marks,) if marks else ()))


# EXIF orientation -> the turn that makes the film upright (as ImageOps.exif_transpose turns it)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _upright(image: Image.Image) -> Image.Image:
    """The film turned as its EXIF (or XMP) orientation says. Not ImageOps.exif_transpose: it writes the EXIF block
    back out (Exif.tobytes), reading every sub-directory the block points to, unbounded (found by a review: a 58 kB
    JPEG took 809 MB and 26 s). ``getexif`` reads only the first directory, which check_exif has bounded."""
    orientation = image.getexif().get(0x0112, 1)
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image if method is None else image.transpose(method)


def _exif_block(image: Image.Image) -> bytes:
    """The EXIF block Pillow would read (its ``getexif``): a JPEG's APP1 or a PNG's eXIf chunk, else a PNG's
    hex-encoded "Raw profile type exif" text."""
    exif = image.info.get("exif")
    if exif is None and "Raw profile type exif" in image.info:
        exif = bytes.fromhex("".join(image.info["Raw profile type exif"].split("\n")[3:]))
    return exif if isinstance(exif, bytes) else b""


def _stored_bits(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """A 16-bit container's film in [0, 1] at the bits it holds: a detector's 10-, 12-, 14- or 15-bit values saved
    as a 16-bit PNG (``pixel_array`` written out as it is) fill only part of 0..65535, and read at 16 bits the film
    was near black and triaged wrongly with no warning (found by a review: three normal films read urgent; a
    15-bit film, like the shared CR DICOM, read at half brightness and all eight normal films urgent). The range is
    the smallest of 8 to 16 bits that holds the brightest pixel; a film using all 16 bits reads as before.
    ``arr`` (float32, 0..65535) is scaled in place."""
    brightest = float(arr.max()) if arr.size else 0.0
    bits = next(b for b in range(8, 17) if brightest <= 2 ** b - 1)
    arr /= float(2 ** bits - 1)
    return arr, bits


def _to_grey_float(image: Image.Image) -> tuple[np.ndarray, int]:
    """Any PIL mode -> float32 grey in [0, 1] using the mode's nominal range."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _stored_bits(np.asarray(image, dtype=np.float32))
    if mode == "I":
        # Pillow opens 16-bit PNGs as "I"; values beyond 16 bits have no nominal range, so stretch them.
        arr = np.asarray(image, dtype=np.float64)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return _stored_bits(arr.astype(np.float32))
        return _stretch(arr), 32
    if mode == "F":
        return _stretch(np.asarray(image, dtype=np.float64)), 32
    if has_alpha(image):
        # Transparent regions are shown on black, as a film viewer would. Each step's input is let go as soon
        # as it is used: a 50-megapixel RGBA film is 200 MB a copy.
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
        del rgba
        image = image.convert("L")  # opaque now: the RGB luma PIL's RGB -> L conversion would give
    elif image.mode != "L":
        image = image.convert("RGB").convert("L")
    grey = np.asarray(image, dtype=np.float32)
    grey /= 255.0  # in place: no second float copy
    return grey, 8


_LOSSLESS_JPEG = {0xC3, 0xC7, 0xCB, 0xCF}  # SOF3, 7, 11, 15: read "probably truncated" (a review)


def _stretch(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)
