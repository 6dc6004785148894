"""What a codestream says it will decode to, read from its header before any decoder runs.

A decoder allocates what the codestream declares, not what the file's size or a DICOM's Rows and Columns
suggest: 35 kB of JPEG can declare 30,000 x 30,000 pixels. ``declared_size`` reads the frame header of a
JPEG (every SOFn, hierarchical DHP and JPEG-LS SOF55), a JPEG 2000 codestream (SIZ, bare or inside a JP2
box file) or a PNG (IHDR); ``check_declared_size`` refuses, naming the file, anything over the pixel limit,
and (core.films.decoding_cost) a PNG or JPEG that would cost a decoder far more than its pixels.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from core.errors import UnreadableImage
from core.films.decoding_cost import (JPEG_SOI, JPEG_SOS, MAX_JPEG_SEGMENTS, PNG_SIGNATURE, check_decoding_cost,
                                      jpeg_markers, png_chunks)

# Raster formats Pillow may open, for uploads and training folders alike (core/films/read.py): nothing else,
# so a file cannot reach a decoder we did not choose (EPS would reach Ghostscript).
RASTER_FORMATS = ("PNG", "JPEG")
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
FILM_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES

# A film is grey or colour (with alpha at most); more components only multiply what a decoder allocates.
MAX_COMPONENTS = 4
# A detector's longest side is about 4,300 px. Within the pixel limit a 1 x 50,000,000 strip (a 97 kB PNG) made
# the resize to the model's input allocate its length times 224 floats: 45 GB (found by a review).
MAX_SIDE = 20_000

# Frame headers: SOF0-3, 5-7, 9-11, 13-15 (baseline, extended, progressive, lossless, hierarchical,
# arithmetic), DHP (hierarchical), SOF55 (JPEG-LS). C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xDE, 0xF7}
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True)
class DeclaredSize:
    """The size a codestream declares: ``codec`` names it for a person."""

    width: int
    height: int
    components: int
    codec: str

    @property
    def pixels(self) -> int:
        return self.width * self.height


def is_codestream(data: bytes) -> bool:
    """``data`` starts as a JPEG, JPEG 2000 (bare or JP2) or PNG codestream does, whatever follows."""
    return data.startswith((JPEG_SOI, _J2K_SOC_SIZ, _JP2_SIGNATURE, PNG_SIGNATURE))


def declared_size(data: bytes) -> DeclaredSize | None:
    """The largest frame a codestream declares, or None when ``data`` starts with no codestream we know."""
    if data.startswith(JPEG_SOI):
        return _jpeg(data)
    if data.startswith(_J2K_SOC_SIZ):
        return _j2k_siz(data, 2)
    if data.startswith(_JP2_SIGNATURE):
        return _jp2(data)
    if data.startswith(PNG_SIGNATURE):
        return _png(data)
    return None


def check_declared_size(data: bytes, label: str, max_pixels: int, pillow: bool = True) -> DeclaredSize | None:
    """Raise UnreadableImage when the codestream in ``data`` declares more than ``max_pixels`` or odd components;
    else the size it declares (None for no codestream we know), for the caller to use without a second walk.
    ``pillow``: for Pillow in this process (core.films.decoding_cost), not a DICOM frame."""
    check_decoding_cost(data, label, pillow)  # first: a JPEG of too many segments declares nothing within the limit
    size = declared_size(data)
    if size is None:
        return None
    if over := over_limit(size.width, size.height, max_pixels):
        raise UnreadableImage(
            f"{label} is too large to decode safely: its {size.codec} data declares {size.width}x{size.height} "
            f"pixels, {over}. Export the film at a lower resolution."
        )
    if size.components > MAX_COMPONENTS:
        raise UnreadableImage(
            f"{label} cannot be decoded: its {size.codec} data declares {size.components} colour components, "
            f"and a film has at most {MAX_COMPONENTS}. Export the film again as PNG, JPEG or DICOM."
        )
    return size


def over_limit(width: int, height: int, max_pixels: int) -> str | None:
    """Which limit a film of ``width`` x ``height`` passes, in words ("over the 50 megapixel limit"), or None."""
    if width * height > max_pixels:
        return f"over the {max_pixels // 1_000_000} megapixel limit"
    if max(width, height) > MAX_SIDE:
        return f"a side over the {MAX_SIDE:,}-pixel limit"
    return None


def _jpeg(data: bytes) -> DeclaredSize | None:
    """Walk the markers up to the first scan (at most MAX_JPEG_SEGMENTS); every frame header on the way counts."""
    found: list[DeclaredSize] = []
    for count, (marker, at, _) in enumerate(jpeg_markers(data)):
        if marker == JPEG_SOS or count > MAX_JPEG_SEGMENTS:
            break
        if marker in _JPEG_FRAMES and at + 10 <= len(data):
            height, width = struct.unpack_from(">HH", data, at + 5)
            codec = "JPEG-LS" if marker == 0xF7 else "JPEG"
            found.append(DeclaredSize(width, height, data[at + 9], codec))
    return max(found, key=lambda s: (s.pixels, s.components)) if found else None


def _j2k_siz(data: bytes, at: int) -> DeclaredSize | None:
    """The SIZ segment starting at ``at`` (its marker): reference grid less the image offset, components."""
    if at + 40 > len(data):
        return None
    xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">IIII", data, at + 6)
    (components,) = struct.unpack_from(">H", data, at + 38)
    return DeclaredSize(max(xsiz - x_offset, 0), max(ysiz - y_offset, 0), components, "JPEG 2000")


def _jp2(data: bytes) -> DeclaredSize | None:
    """A JP2 box file: the header box's ``ihdr`` and the codestream's SIZ, whichever declares more."""
    found = []
    for box, start, stop in _boxes(data, 0, len(data)):
        if box == b"jp2h":
            for inner, inner_start, _ in _boxes(data, start, stop):
                if inner == b"ihdr" and inner_start + 10 <= stop:
                    height, width, components = struct.unpack_from(">IIH", data, inner_start)
                    found.append(DeclaredSize(width, height, components, "JPEG 2000"))
        elif box == b"jp2c" and data[start : start + 4] == _J2K_SOC_SIZ:
            size = _j2k_siz(data, start + 2)
            if size is not None:
                found.append(size)
    return max(found, key=lambda s: (s.pixels, s.components)) if found else None


def _boxes(data: bytes, start: int, stop: int):
    """(type, content start, content stop) of each box between ``start`` and ``stop`` (ISO/IEC 15444-1 I.4)."""
    at = start
    while at + 8 <= stop:
        length, box = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1 and at + 16 <= stop:
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif length == 0:  # the last box runs to the end
            length = stop - at
        if length < header:
            return
        yield box, at + header, min(at + length, stop)
        at += length


def _png(data: bytes) -> DeclaredSize | None:
    """Bytes a pixel as the film is decoded: a palette is read as RGB, and a tRNS chunk (transparency) makes any
    PNG RGBA before its grey levels (a security review: a palette PNG with one, counted as one byte a pixel,
    skipped the large-decode slot and peaked at 200 MB for a 20 kB, 4000 x 4000 file)."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    components = 4 if png_chunks(data)[3] else {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(data[25], 1)  # past the
    return DeclaredSize(width, height, components, "PNG")  # chunks it walks, the file is refused as too many


_DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


def check_deflated_dicom(data: bytes, label: str, max_bytes: int) -> None:
    """A deflated DICOM data set is inflated whole before anything in it is read, so 8 MB can become 8 GB:
    inflate it here in small steps, keeping nothing, and refuse it once it passes ``max_bytes``."""
    syntax, start = _file_meta(data)
    if syntax != _DEFLATED:
        return
    inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
    try:
        for at in range(start, len(data), 2**16):
            pending = data[at : at + 2**16]
            while pending:
                total += len(inflater.decompress(pending, 2**22))
                pending = inflater.unconsumed_tail
                if total > max_bytes:
                    raise UnreadableImage(
                        f"{label} is too large to decode safely: its deflated data expands to more than the "
                        f"{max_bytes // 2**20} MB limit. Export the film uncompressed or as JPEG/JPEG 2000."
                    )
            if inflater.eof:
                return
    except zlib.error:
        return  # a damaged stream: pydicom refuses it on its own


def _file_meta(data: bytes) -> tuple[bytes | None, int]:
    """The transfer syntax UID in a DICOM file's meta group (explicit VR little endian), and where it ends."""
    at = 132 if data[128:132] == b"DICM" else 0
    syntax = None
    while at + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, at)
        if group != 2:
            break
        if data[at + 4 : at + 6] in _LONG_VRS:
            if at + 12 > len(data):
                break
            (length,), header = struct.unpack_from("<I", data, at + 8), 12
        else:
            (length,), header = struct.unpack_from("<H", data, at + 6), 8
        if element == 0x0010:
            syntax = data[at + header : at + header + length].rstrip(b"\0 ")
        at += header + length
    return syntax, at


def dicom_elements(data: bytes, count: int = 4) -> bool:
    """Whether a preamble-less data set's first ``count`` elements read as DICOM elements do, in one of its
    encodings: tags in a non-zero group, ascending, each length within the file (implicit or explicit VR, little
    or big endian); so no decoder is started on what is not one."""
    return any(_walk(data, order, explicit, count) for order in "<>" for explicit in (False, True))


def _walk(data: bytes, order: str, explicit: bool, count: int) -> bool:
    at, last = 0, (0, -1)
    for _ in range(count):
        if at + 8 > len(data):
            return at == len(data) and at > 0  # a data set of fewer elements, ending where its last one does
        tag = struct.unpack_from(order + "HH", data, at)
        if tag[0] == 0 or tag <= last:
            return False
        last, vr = tag, data[at + 4: at + 6]
        if explicit and not (vr.isalpha() and vr.isupper()):
            return False
        if explicit and vr in _LONG_VRS:
            if at + 12 > len(data):
                return False
            (length,), at = struct.unpack_from(order + "I", data, at + 8), at + 12
        else:
            (length,), at = struct.unpack_from(order + ("H" if explicit else "I"), data, at + (6 if explicit else 4)), \
                at + 8
        if length == 0xFFFFFFFF:  # undefined length: a sequence, read by the decoder's own rules
            return True
        at += length
        if at > len(data):
            return False
    return True
