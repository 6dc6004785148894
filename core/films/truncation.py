"""A JPEG cut short but decoded anyway: libjpeg only warns when its data stops early, and Pillow (and pydicom
through it) decodes what is missing without a word.

- **Sequential** (baseline, extended): Pillow's libjpeg fills the missing blocks flat at the level shift (every
  coefficient zero: 128 for 8-bit samples, 127 where Adobe's CMYK is inverted); pydicom's repeats one block decoded
  from zero bits. Found by reviews: halves of normal films read urgent, 7 of 8; then the same with colour films
  (16 x 16 blocks when chroma is subsampled), CMYK and JPEG inside DICOM, which an 8 x 8, grey-or-RGB check of
  uploads alone let through. So: the last minimum coded units (MCUs), in the order they are coded, each the same as
  the last from one partway along an MCU row to the end, and none the same before them (a film padded on a mid-grey
  canvas has flat margins beside its rows, or starts its padding at a row's start). A cut that ends exactly at the
  start of an MCU row is not told from such padding.
- **Progressive**: a file cut before its last scans is complete in size but never refined: every component's every
  coefficient must reach full precision (a scan with Al = 0 covering it), which the scans' headers say without
  decoding anything. (Cut inside a refinement scan, the film misses only that scan's last bits of detail.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.films.decoding_cost import JPEG_SOS, jpeg_markers

_SEQUENTIAL = {0xC0, 0xC1}  # baseline and extended Huffman; arithmetic (C9) is read by no decoder here
_PROGRESSIVE = 0xC2


@dataclass(frozen=True)
class _Frame:
    progressive: bool
    precision: int
    sampling: dict[int, tuple[int, int]]  # component id -> (horizontal, vertical) sampling factors
    scans: list[tuple[tuple[int, ...], int, int, int]]  # (component ids, Ss, Se, Al) of each scan header


def jpeg_cut_short(data: bytes, pixels, any_level: bool = False) -> bool:
    """Whether the JPEG codestream ``data``, decoded as ``pixels`` (a Pillow image in the mode it opened in, or an
    array of rows x columns [x channels] as decoded: no grey conversion), was cut short; False for a JPEG this
    cannot judge (lossless, JPEG-LS, no frame). ``any_level``: the decoder may fill at any one level, not only the
    level shift (pydicom's libjpeg carries the last block's DC on: a cut CR film's missing half read 172)."""
    frame = _frame(data)
    if frame is None or not frame.scans:
        return False
    if frame.progressive:
        return not _refined(frame)
    if len(frame.scans[-1][0]) > 1:  # interleaved: one MCU holds every component's blocks
        width = 8 * max(h for h, _ in frame.sampling.values())
        height = 8 * max(v for _, v in frame.sampling.values())
    else:
        width = height = 8
    level = 1 << (frame.precision - 1)
    return _flat_tail(pixels, width, height, None if any_level else (level, level - 1))


def _frame(data: bytes) -> _Frame | None:
    frame, scans = None, []
    for marker, at, _ in jpeg_markers(data):
        if marker is None:
            break
        if marker in _SEQUENTIAL | {_PROGRESSIVE} and frame is None and at + 10 <= len(data):
            count = data[at + 9]
            components = data[at + 10: at + 10 + 3 * count]
            sampling = {components[i]: (components[i + 1] >> 4, components[i + 1] & 15)
                        for i in range(0, len(components) - 2, 3)}
            if not sampling or any(h == 0 or v == 0 for h, v in sampling.values()):
                return None
            frame = (marker == _PROGRESSIVE, data[at + 4], sampling)
        elif marker in range(0xC3, 0xD0) and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
            return None  # lossless, hierarchical or arithmetic: not judged here
        elif marker == JPEG_SOS and frame is not None and at + 5 <= len(data):
            count = data[at + 4]
            header = data[at + 5: at + 5 + 2 * count + 3]
            if len(header) < 2 * count + 3:
                break
            ids = tuple(header[i] for i in range(0, 2 * count, 2))
            scans.append((ids, header[2 * count], header[2 * count + 1], header[2 * count + 2] & 15))
    if frame is None:
        return None
    return _Frame(frame[0], frame[1], frame[2], scans)


def _refined(frame: _Frame) -> bool:
    """Every coefficient (0..63) of every component has a scan at full precision (Al = 0)."""
    done = {component: np.zeros(64, dtype=bool) for component in frame.sampling}
    for ids, start, end, low in frame.scans:
        if low == 0 and start <= end <= 63:
            for component in ids:
                if component in done:
                    done[component][start: end + 1] = True
    return all(bits.all() for bits in done.values())


def _flat_tail(pixels, width: int, height: int, levels: tuple[int, ...] | None) -> bool:
    """The image's MCUs of ``width`` x ``height``, in raster (coding) order: each the same as the last from one
    partway along an MCU row to the end, and none the same before; the last flat at one of ``levels`` in every
    channel (None: whatever the decoder fills with, as long as every MCU of the end is that same one: pydicom's
    libjpeg repeats one block decoded from the missing data's zero bits, not flat)."""
    image_width, image_height = (pixels.width, pixels.height) if hasattr(pixels, "crop") else \
        (pixels.shape[1], pixels.shape[0])
    rows, columns = image_height // height, image_width // width
    if rows == 0 or columns == 0:
        return False
    last = _part(pixels, (columns - 1) * width, (rows - 1) * height, columns * width, rows * height)
    if levels is not None and not any((last == level).all() for level in levels):
        return False  # the cheap test first (no copy of the film): most end in anything but flat mid-grey
    if levels is None and columns > 1 and not (last == _part(pixels, (columns - 2) * width, (rows - 1) * height,
                                                           (columns - 1) * width, rows * height)).all():
        return False  # the last two MCUs differ: a decoder fills a cut frame with one block over and over
    whole = _part(pixels, 0, 0, columns * width, rows * height).reshape(rows, height, columns, width, -1)
    same = (whole == last[None, :, None, :, :]).all(axis=(1, 3, 4)).ravel()
    differs = np.flatnonzero(~same)
    start = int(differs[-1]) + 1 if len(differs) else 0
    return 0 < start < len(same) and start % columns != 0 and not same[:start].any()


def _part(pixels, left: int, top: int, right: int, bottom: int) -> np.ndarray:
    """Rows ``top:bottom`` and columns ``left:right`` of an image or array, as rows x columns x channels."""
    part = np.asarray(pixels.crop((left, top, right, bottom))) if hasattr(pixels, "crop") else \
        pixels[top:bottom, left:right]
    return part if part.ndim == 3 else part[:, :, None]
