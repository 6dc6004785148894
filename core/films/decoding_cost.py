"""What a PNG or JPEG would cost its decoder beyond its pixels, read before any decoder runs.

PNG and JPEG decode in the server's own process, where nothing can interrupt Pillow, so the pixel limit
(core.films.bounds) is not enough:

- each **scan** of a progressive JPEG is a pass over the whole image: 0.5 MB of a repeated 75-byte scan kept a
  49-megapixel decode busy for 11 s, and 50 MB would keep a core for most of an hour. Real encoders write 1-3
  scans (baseline) or about 6-12 (progressive); nvImageCodec refuses more than 256 by default against the same
  denial of service (cure53's libjpeg-turbo report): :data:`MAX_JPEG_SCANS`.
- Pillow reads every JPEG **marker segment** before the first scan, every **fill byte**, every byte of **junk**
  where a marker should be, and every PNG **chunk** in Python: 7.6 MB of empty JPEG comments took it 1.3 s,
  5 MB of fill bytes 1.3 s and 30 MB of zeros after a segment 2.2 s, so the 200 MB a film may be would take a
  minute. A film has a few dozen segments, no fill, no junk and, in PNG, chunks of kilobytes.
- **EXIF**: Pillow reads a JPEG's EXIF block on opening it (for its resolution) and any film's on turning it
  upright, copying out every value of the block's first directory, each as long as the directory says: 1,000
  entries that each claim the whole of a 1 MB block cost 1 GB, and 65,535 may be declared. A block past
  :data:`MAX_EXIF_BYTES`, or whose first directory claims more bytes than the block holds (honest values lie
  side by side inside it), is refused: :func:`check_exif`. A JPEG's **MPF** block (APP2, a multi-picture index)
  is a TIFF directory Pillow reads on opening too: 1,000 entries in 58 kB cost 1.35 GB and 16 s (found by a
  review); it is held to the same rule. Turning a film upright never writes the EXIF block back out
  (core.films.read), which would read every sub-directory too.
- A walk that ends before the **first scan** (an end of image, EOI, or a segment of length 0 or 1 right after
  SOI) left every check above blind to what followed, and Pillow reads on past both (an MPF block behind one
  cost 480 MB; found by reviews): a JPEG for Pillow whose structure ends before its first scan is refused.
  **Photoshop** (APP13) blocks Pillow walks resource by resource in Python (20 MB took 0.9 s): held to
  :data:`MAX_EXIF_BYTES` in all. A PNG's **colour profile** (iCCP) Pillow inflates to about 1 MB, counted
  against no budget: 15,000 of them took 34 s, so more than one, which the PNG standard forbids, is refused.
- Pillow reads a JPEG's **frame header** (SOFn) and **quantisation tables** (DQT) in Python too: it keeps one
  entry for every 3 bytes of every frame header, whatever number of components the header declares, and copies
  the rest of a DQT segment once per table. 18.8 MB of 64-kB frame headers took 640 MB and 1.6 s, so a 200 MB
  film about 6 GB (found by a review). A film has one frame header, 8 + 3 bytes per component (1 to 4), and 2 to
  4 tables of 65 or 129 bytes: a JPEG for Pillow with another frame header before its first scan, one of
  another length, or more than :data:`MAX_JPEG_TABLE_BYTES` of tables there, is refused.
- Markers libjpeg refuses anyway (JPG, JPGn: 0xC8, 0xF0-0xFD) Pillow reads as having no length where this walk
  skips their length, so a segment behind one was hidden from the EXIF check: a JPEG for Pillow holding one is
  refused. (JPEG-LS, decoded only inside a DICOM, in a worker, uses 0xF7 and 0xF8 with lengths.)

The walks here stop one past their limits, so they cost milliseconds whatever the file.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from core.errors import UnreadableImage

JPEG_SOI = b"\xff\xd8"
JPEG_NO_LENGTH = frozenset(range(0xD0, 0xDA)) | {0x01}  # RSTn, SOI, EOI, TEM
JPEG_SOS = 0xDA
JPEG_EOI = 0xD9
JPEG_REFUSED = frozenset(range(0xF0, 0xFE)) | {0xC8}  # JPG and JPGn: no decoder reads them
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where entropy-coded data (or garbage a decoder skips) ends: 0xFF then neither a stuffed 0x00, a restart
# marker nor a fill byte.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")

MAX_JPEG_SCANS = 256
MAX_JPEG_SEGMENTS = 10_000  # a film has a few dozen (tables, EXIF, an ICC profile cut into 64 kB pieces)
MAX_JPEG_FILL = 65_536  # fill bytes and junk in all: fill is legal before any marker, written by no encoder
MAX_JPEG_TABLE_BYTES = 4096  # quantisation tables before the first scan: 4 of 16 bits are 516 bytes
JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn: DHT, JPG and DAC share the range
_JPEG_DQT = 0xDB
MAX_EXIF_BYTES = 1 << 20  # one JPEG APP1 segment holds 64 kB: a camera's EXIF, thumbnail included, fits in it
_EXIF_HEADER = b"Exif\0\0"
_JPEG_APP1 = 0xE1
_JPEG_APP2 = 0xE2
_JPEG_APP13 = 0xED
_MPF_HEADER = b"MPF\0"
# TIFF field types Pillow reads, and their size in bytes; values of more than 4 bytes lie out of line
# Every TIFF header Pillow reads as one (TiffImagePlugin.PREFIXES), valid or not, and its byte order
_TIFF_HEADERS = {b"II*\0": "<", b"MM\0*": ">", b"II\0*": "<", b"MM*\0": ">"}
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
MAX_PNG_CHUNKS = 100_000  # 200 MB of libpng's 8 kB IDAT chunks is 25,000


@dataclass(frozen=True)
class JpegCounts:
    scans: int  # SOS segments
    segments: int  # markers of every kind, standalone ones included
    fill: int  # fill bytes (0xFF) and junk before markers
    exif: bytes = b""  # the EXIF block before the first scan as Pillow joins it (no more read once past the limit)
    mpf: bytes = b""  # the last MPF block before the first scan, as Pillow keeps it (its TIFF directory)
    refused: int | None = None  # the first marker no decoder reads (JPEG_REFUSED), if any
    photoshop: int = 0  # bytes of Photoshop (APP13) segments before the first scan
    frames: int = 0  # frame headers (SOFn) before the first scan
    odd_frame: bool = False  # one of them of another length than its components need, or with none or over 4
    tables: int = 0  # bytes of quantisation-table (DQT) segments before the first scan


def check_decoding_cost(data: bytes, label: str, pillow: bool = True) -> None:
    """Raise UnreadableImage, naming the file, for a JPEG or PNG past one of the limits above. ``pillow``: the
    data is for Pillow (an upload's PNG or JPEG), not a DICOM frame for a worker's decoder."""
    if data.startswith(JPEG_SOI):
        counts = jpeg_counts(data)
        if counts.scans > MAX_JPEG_SCANS:
            raise UnreadableImage(
                f"{label} is too costly to decode safely: its JPEG data holds more than {MAX_JPEG_SCANS} scans (a "
                "progressive JPEG has about ten). Export the film again as PNG, or as a baseline JPEG."
            )
        if counts.segments > MAX_JPEG_SEGMENTS or counts.fill > MAX_JPEG_FILL:
            raise UnreadableImage(
                f"{label} is too costly to decode safely: its JPEG data holds more than {MAX_JPEG_SEGMENTS:,} "
                f"marker segments or {MAX_JPEG_FILL:,} fill or junk bytes (a film has a few dozen segments and "
                "no fill). Export the film again as PNG or JPEG."
            )
        if counts.refused is not None and pillow:
            raise UnreadableImage(
                f"{label} cannot be read safely: its JPEG data holds a reserved marker (0xFF{counts.refused:02X}) "
                "that no JPEG decoder reads. Export the film again as PNG or JPEG."
            )
        if not counts.scans and pillow:  # what Pillow read past the walk's end no check above saw (reviews)
            raise UnreadableImage(f"{label} is not a JPEG we can read: its structure ends before its image data. "
                                  "Export the film again as PNG or JPEG.")
        if pillow and (counts.frames > 1 or counts.odd_frame or counts.tables > MAX_JPEG_TABLE_BYTES):
            raise UnreadableImage(f"{label} cannot be read safely: its JPEG frame header or quantisation tables are "
                                  "not a film's (one frame header, a few small tables). Export the film again as "
                                  "PNG or JPEG.")
        if counts.photoshop > MAX_EXIF_BYTES:
            raise UnreadableImage(f"{label} cannot be read safely: its Photoshop (APP13) metadata is larger than a "
                                  "film's. Export the film again without its metadata.")
        check_exif(counts.exif, label)
        check_exif(counts.mpf, label, "multi-picture (MPF)")  # a TIFF directory too, read as Pillow opens the file
    elif data.startswith(PNG_SIGNATURE):
        chunks, headers, profiles, _ = png_chunks(data)
        if chunks > MAX_PNG_CHUNKS:
            raise UnreadableImage(
                f"{label} is too costly to decode safely: its PNG data is cut into more than {MAX_PNG_CHUNKS:,} "
                "chunks. Export the film again as PNG or JPEG."
            )
        check_png_header(data, headers, label)
        if profiles > 1:
            raise UnreadableImage(f"{label} cannot be read safely: it holds more than one colour profile (iCCP), "
                                  "which no film has. Export the film again as PNG or JPEG.")


def check_png_header(data: bytes, headers: int, label: str) -> None:
    """One IHDR, first, as the PNG standard has it: the size checks read the first and Pillow keeps the last, so a
    second one declaring 7000 x 7000 decoded without waiting its turn (found by a review: 747 MB). And no 16-bit
    colour or grey-with-alpha PNG: Pillow reads only its top 8 bits, so a detector's 14-bit values saved so read
    at a quarter of their brightness and every normal film came out urgent (found by a review)."""
    if headers != 1 or data[12:16] != b"IHDR" or len(data) < 26:
        raise UnreadableImage(f"{label} is not a PNG we can read: it must have one image header (IHDR), first. "
                              "Export the film again as PNG or JPEG.")
    if data[24] == 16 and data[25] in (2, 4, 6):
        raise UnreadableImage(f"{label} is a 16-bit colour (or grey with transparency) PNG, which would be read at "
                              "8 bits and could come out darker than it is. Export it as a greyscale PNG (8 or 16 "
                              "bits, no transparency), a JPEG or a DICOM.")


def jpeg_counts(data: bytes) -> JpegCounts:
    """The scans, markers and fill bytes of the JPEG in ``data`` up to its end (EOI), counting no further than
    one past a limit."""
    scans = segments = fill = 0
    exif = mpf = b""
    refused, photoshop, frames, odd_frame, tables = None, 0, 0, False, 0
    for marker, at, before in jpeg_markers(data):
        if marker is None:  # junk to the end of the file
            fill += before
            break
        length = struct.unpack_from(">H", data, at + 2)[0] if at + 4 <= len(data) else 0
        if marker == _JPEG_APP13 and not scans:
            photoshop += length
        elif marker in JPEG_FRAMES and not scans:
            components = data[at + 9] if at + 10 <= len(data) else 0
            frames, odd_frame = frames + 1, odd_frame or not 1 <= components <= 4 or length != 8 + 3 * components
        elif marker == _JPEG_DQT and not scans:
            tables += length
        segments, scans, fill = segments + 1, scans + (marker == JPEG_SOS), fill + before
        if scans > MAX_JPEG_SCANS or segments > MAX_JPEG_SEGMENTS or fill > MAX_JPEG_FILL:
            break
        if marker in JPEG_REFUSED and refused is None:
            refused = marker
        if marker in (_JPEG_APP1, _JPEG_APP2) and not scans and len(exif) <= MAX_EXIF_BYTES + 6 and length:
            payload = data[at + 4 : at + 2 + length]
            if marker == _JPEG_APP1 and payload.startswith(_EXIF_HEADER):  # Pillow joins a second block's body
                exif += payload[len(_EXIF_HEADER):] if exif else payload
            elif marker == _JPEG_APP2 and payload.startswith(_MPF_HEADER):  # Pillow keeps the last one
                mpf = payload[len(_MPF_HEADER):]
    return JpegCounts(scans, segments, fill, exif, mpf, refused, photoshop, frames, odd_frame, tables)


def jpeg_frame(data: bytes) -> int | None:
    """The marker of the first frame header (SOFn) of the JPEG in ``data``: its coding process; or None."""
    found = _first_frame(data)
    return None if found is None else found[0]


def jpeg_precision(data: bytes) -> int | None:
    """The bits per sample the first frame header (SOFn) of the JPEG in ``data`` declares, or None."""
    found = _first_frame(data)
    return None if found is None or found[1] + 5 > len(data) else data[found[1] + 4]


def jpeg_height(data: bytes) -> int | None:
    """The lines the JPEG's first frame header (SOFn) declares (0: a DNL marker after the scan says), or None."""
    found = _first_frame(data)
    return None if found is None or found[1] + 7 > len(data) else int.from_bytes(data[found[1] + 5:][:2], "big")


def _first_frame(data: bytes) -> tuple[int, int] | None:
    """(marker, offset) of the JPEG's first frame header, or None when a scan or the end comes first."""
    for marker, at, _ in jpeg_markers(data):
        if marker in JPEG_FRAMES:
            return marker, at
        if marker is None or marker == JPEG_SOS:
            return None
    return None


def check_exif(exif: bytes, label: str, what: str = "EXIF") -> None:
    """Raise UnreadableImage, naming the file, for an EXIF block (with or without its ``Exif`` header) that
    Pillow could not read within bounds: past :data:`MAX_EXIF_BYTES`, a BigTIFF block, or a first directory
    claiming more out-of-line bytes than the block holds. A block that is no TIFF at all Pillow ignores."""
    body = exif
    while body.startswith(_EXIF_HEADER):  # Pillow strips every one (Image.Exif.load)
        body = body[len(_EXIF_HEADER):]
    if len(body) > MAX_EXIF_BYTES or exif_claims(body) > len(body):
        raise UnreadableImage(
            f"{label} cannot be read safely: its {what} metadata is larger than a film's, or asks a reader for more "
            "than it holds. Export the film again without its metadata."
        )


def exif_claims(body: bytes) -> int:
    """The bytes the first directory of an EXIF (TIFF) block asks a reader to copy out of line, as Pillow reads
    it: every entry of a known type whose value is over 4 bytes; a BigTIFF block counts as past any limit."""
    order = _TIFF_HEADERS.get(body[:4])
    if order is None:
        return len(body) + 1 if body[:4] in (b"II+\0", b"MM\0+") else 0  # BigTIFF; else Pillow reads nothing
    if len(body) < 8:
        return 0
    (first,) = struct.unpack_from(order + "I", body, 4)
    if first + 2 > len(body):
        return 0
    (entries,) = struct.unpack_from(order + "H", body, first)
    entries = min(entries, (len(body) - first - 2) // 12)  # Pillow stops where the block ends
    claims = 0
    for _, kind, count, _ in struct.iter_unpack(order + "HHII", body[first + 2 : first + 2 + 12 * entries]):
        size = _TIFF_TYPE_SIZES.get(kind, 0) * count
        claims += size if size > 4 else 0
    return claims


def png_chunks(data: bytes) -> tuple[int, int, int, bool]:
    """The chunks of the PNG in ``data`` up to IEND, counting no further than one past :data:`MAX_PNG_CHUNKS`, how
    many of them are an image header (IHDR) and a colour profile (iCCP), and whether one is transparency (tRNS)."""
    at, chunks, headers, profiles, transparency = len(PNG_SIGNATURE), 0, 0, 0, False
    while at + 8 <= len(data) and chunks <= MAX_PNG_CHUNKS:
        (length,) = struct.unpack_from(">I", data, at)
        chunks += 1
        kind = data[at + 4 : at + 8]
        headers += kind == b"IHDR"
        profiles += kind == b"iCCP"
        transparency |= kind == b"tRNS"
        if kind == b"IEND":
            break
        at += 12 + length
    return chunks, headers, profiles, transparency


def jpeg_markers(data: bytes):
    """(marker, offset, fill and junk bytes before it) of each marker of a JPEG, walked as a decoder walks them:
    segments skipped by their length, fill bytes and entropy-coded data passed over, and junk where a marker
    should be skipped to the next marker (libjpeg resyncs so, with a warning), up to EOI; junk running to the
    end of the file ends the walk with ``(None, its end, those bytes)``."""
    at, end, fill = 2, len(data), 0
    while at + 2 <= end:
        if data[at] != 0xFF or data[at + 1] == 0x00:  # junk: counted with the fill bytes
            found = _NEXT_MARKER.search(data, at)
            if found is None:
                yield None, end, fill + end - at  # junk to the end: no marker, but its bytes count
                return
            at, fill = found.start(), fill + found.start() - at
            continue
        if data[at + 1] == 0xFF:  # fill bytes before a marker, however many: on to the last of them
            last = _FILL.match(data, at).end() - 1
            at, fill = last, fill + last - at
            continue
        marker = data[at + 1]
        yield marker, at, fill
        fill = 0
        if marker == JPEG_EOI:
            return
        if marker in JPEG_NO_LENGTH:
            at += 2
            continue
        if at + 4 > end:
            return
        (length,) = struct.unpack_from(">H", data, at + 2)
        if length < 2:
            return
        at += 2 + length
        if marker == JPEG_SOS:  # its entropy-coded data runs to the next marker
            found = _NEXT_MARKER.search(data, at)
            if found is None:
                return
            at = found.start()
