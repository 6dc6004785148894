"""What a PNG or JPEG would cost its decoder beyond its pixels, read before any decoder runs.

PNG and JPEG decode in the server's own process, where nothing can interrupt Pillow, so the pixel limit
(core.films.bounds) is not enough:

- each **scan** of a progressive JPEG is a pass over the whole image: 0.5 MB of a repeated 75-byte scan kept a
  49-megapixel decode busy for 11 s, and 50 MB would keep a core for most of an hour. Real encoders write 1-3
  scans (baseline) or about 6-12 (progressive); nvImageCodec refuses more than 256 by default against the same
  denial of service (cure53's libjpeg-turbo report): :data:`MAX_JPEG_SCANS`.
- Pillow reads every JPEG **marker segment** before the first scan, every **fill byte** and every PNG **chunk**
  in Python: 7.6 MB of empty JPEG comments took it 1.3 s and 5 MB of fill bytes 1.3 s, so the 200 MB a film may
  be would take a minute. A film has a few dozen segments, no fill and, in PNG, chunks of kilobytes.

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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where entropy-coded data (or garbage a decoder skips) ends: 0xFF then neither a stuffed 0x00, a restart
# marker nor a fill byte.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_FILL = re.compile(rb"\xff+")

MAX_JPEG_SCANS = 256
MAX_JPEG_SEGMENTS = 10_000  # a film has a few dozen (tables, EXIF, an ICC profile cut into 64 kB pieces)
MAX_JPEG_FILL = 65_536  # fill bytes in all: legal before any marker, written by no encoder
MAX_PNG_CHUNKS = 100_000  # 200 MB of libpng's 8 kB IDAT chunks is 25,000


@dataclass(frozen=True)
class JpegCounts:
    scans: int  # SOS segments
    segments: int  # markers of every kind, standalone ones included
    fill: int  # fill bytes (0xFF) before markers


def check_decoding_cost(data: bytes, label: str) -> None:
    """Raise UnreadableImage, naming the file, for a JPEG or PNG past one of the limits above."""
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
                f"marker segments or {MAX_JPEG_FILL:,} fill bytes (a film has a few dozen segments and no fill). "
                "Export the film again as PNG or JPEG."
            )
    elif data.startswith(PNG_SIGNATURE) and png_chunks(data) > MAX_PNG_CHUNKS:
        raise UnreadableImage(
            f"{label} is too costly to decode safely: its PNG data is cut into more than {MAX_PNG_CHUNKS:,} "
            "chunks. Export the film again as PNG or JPEG."
        )


def jpeg_counts(data: bytes) -> JpegCounts:
    """The scans, markers and fill bytes of the JPEG in ``data`` up to its end (EOI), counting no further than
    one past a limit."""
    scans = segments = fill = 0
    for marker, _, before in jpeg_markers(data):
        segments, scans, fill = segments + 1, scans + (marker == JPEG_SOS), fill + before
        if scans > MAX_JPEG_SCANS or segments > MAX_JPEG_SEGMENTS or fill > MAX_JPEG_FILL:
            break
    return JpegCounts(scans, segments, fill)


def png_chunks(data: bytes) -> int:
    """The chunks of the PNG in ``data`` up to IEND, counting no further than one past :data:`MAX_PNG_CHUNKS`."""
    at, chunks = len(PNG_SIGNATURE), 0
    while at + 8 <= len(data) and chunks <= MAX_PNG_CHUNKS:
        (length,) = struct.unpack_from(">I", data, at)
        chunks += 1
        if data[at + 4 : at + 8] == b"IEND":
            break
        at += 12 + length
    return chunks


def jpeg_markers(data: bytes):
    """(marker, offset, fill bytes before it) of each marker of a JPEG, walked as a decoder walks them: segments
    skipped by their length, fill bytes and entropy-coded data passed over, and garbage where a marker should be
    skipped to the next marker (libjpeg resyncs so, with a warning), up to EOI."""
    at, end, fill = 2, len(data), 0
    while at + 2 <= end:
        if data[at] != 0xFF or data[at + 1] == 0x00:
            found = _NEXT_MARKER.search(data, at)
            if found is None:
                return
            at = found.start()
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
