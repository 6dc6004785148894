"""RLE Lossless decoding that never produces more than the frame holds: a pydicom decoding plugin.

RLE declares no size. pydicom's own decoder expands a segment to whatever its runs add up to (128 bytes per
2-byte run) before comparing with Rows x Columns, so a 32 MB segment becomes 2 GB. This one stops each segment
at the frame's size, so memory stays at one frame and a segment of repeat runs costs 1/128 of a loop turn
per byte. The decoding process installs it in place of pydicom's (:func:`install`).
"""
from __future__ import annotations

import struct

from pydicom.uid import RLELossless

DECODER_DEPENDENCIES = {RLELossless: ()}  # pure Python: pydicom's plugin interface asks for this
PLUGIN = "bounded"


def is_available(uid: str) -> bool:
    return uid == RLELossless


def install() -> None:
    """Make this the RLE decoder of this process (pylibjpeg-rle, when installed, stays first: it is bounded)."""
    from pydicom.pixels.decoders import RLELosslessDecoder

    if PLUGIN not in RLELosslessDecoder.available_plugins:
        RLELosslessDecoder.remove_plugin("pydicom")
        RLELosslessDecoder.add_plugin(PLUGIN, ("core.films.rle", "decode_frame"))


def decode_frame(src: bytes, runner) -> bytearray:
    """One RLE frame -> its bytes in planar configuration 1, little endian (as pydicom's plugin returns them)."""
    rows, columns, samples, bits = runner.rows, runner.columns, runner.samples_per_pixel, runner.bits_allocated
    if bits % 8:
        raise NotImplementedError(f"RLE with {bits} bits allocated")
    per_sample, plane = bits // 8, rows * columns
    count, *offsets = struct.unpack_from("<16I", src)
    if count != samples * per_sample or count > 15:
        raise ValueError("the number of RLE segments does not match the image")
    ends = [*offsets[:count], len(src)]
    big_endian = runner.get_option("rle_segment_order", ">") == ">"
    decoded = bytearray(plane * samples * per_sample)
    for sample in range(samples):
        for byte in range(per_sample):
            index = sample * per_sample + byte
            segment = _segment(src[ends[index] : ends[index + 1]], plane)
            if len(segment) < plane:
                raise ValueError("an RLE segment holds less than the image")
            start = (per_sample - byte - 1 if big_endian else byte) + sample * per_sample * plane
            decoded[start : start + per_sample * plane : per_sample] = segment[:plane]
    runner.set_option("planar_configuration", 1)
    return decoded


def _segment(src: bytes, limit: int) -> bytearray:
    """PackBits (PS3.5 G.3.1): header n < 128 copies the next n + 1 bytes, n > 128 repeats the next byte
    257 - n times, 128 does nothing. Stops once ``limit`` bytes are out."""
    result, at, end = bytearray(), 0, len(src)
    while at < end and len(result) < limit:
        header = src[at]
        if header > 128:
            result += src[at + 1 : at + 2] * (257 - header)
            at += 2
        elif header < 128:
            result += src[at + 1 : at + header + 2]
            at += header + 2
        else:
            at += 1
    return result
