"""Decompression bombs, one per codec, built at test time from the real DICOMs in ../shared/data/dicom.

Each keeps a real film's header (its Rows and Columns say a small, honest size) and patches only what the
codestream declares, or packs a stream that expands far beyond what it holds. ``BOMBS`` maps a file name to
its builder and to what the refusal must say; every builder takes the folder of the real DICOMs.
Never decode one of these outside the product's guard: unguarded, several take many GB.
"""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

HUGE = 30_000  # the side every patched codestream declares: 900 megapixels
SIZE_WORDS = "too large|limit"


def real_film(dicom_dir: Path, side: int = 512) -> np.ndarray:
    """The real CR film, 8-bit and ``side`` pixels square, bone bright (the stored film is MONOCHROME1)."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    raw = ds.pixel_array.astype(np.float64)
    eight = np.clip(255.0 - raw / raw.max() * 255.0, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(eight).resize((side, side), Image.Resampling.BILINEAR))


def _header(dicom_dir: Path, size: tuple[int, int], syntax, bits: int = 8) -> pydicom.Dataset:
    """RG1_UNCI's own header (patient name included), saying ``size`` (rows, columns) of ``bits`` bits."""
    ds = pydicom.dcmread(dicom_dir / "RG1_UNCI.dcm")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (8, 8, 7) if bits == 8 else (16, bits, bits - 1)
    ds.PhotometricInterpretation = "MONOCHROME2"
    for keyword in ("WindowCenter", "WindowWidth"):
        delattr(ds, keyword)
    return ds


def _write(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def encapsulated(dicom_dir: Path, codestream: bytes, syntax, size=(512, 512), bits: int = 8) -> bytes:
    """RG1_UNCI's header around one encapsulated ``codestream`` under transfer syntax ``syntax``."""
    ds = _header(dicom_dir, size, syntax, bits)
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    return _write(ds)


def jpeg(dicom_dir: Path, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def patch_jpeg_frame(stream: bytes, width: int, height: int, marker: int | None = None) -> bytes:
    """The JPEG with its frame header (first SOFn) declaring ``width`` x ``height``, optionally another SOFn."""
    at = 2
    while stream[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack_from(">H", stream, at + 2)[0]
    patched = bytearray(stream)
    struct.pack_into(">HH", patched, at + 5, height, width)
    if marker is not None:
        patched[at + 1] = marker
    return bytes(patched)


def patch_j2k_siz(codestream: bytes, width: int, height: int) -> bytes:
    """The JPEG 2000 codestream with its SIZ declaring a ``width`` x ``height`` reference grid."""
    at = codestream.index(b"\xff\x51")
    patched = bytearray(codestream)
    struct.pack_into(">II", patched, at + 6, width, height)
    return bytes(patched)


def real_j2k(dicom_dir: Path) -> bytes:
    """The JPEG 2000 codestream of RG1_J2KI.dcm (the real film, lossy)."""
    ds = pydicom.dcmread(dicom_dir / "RG1_J2KI.dcm")
    return b"".join(fragment for fragment in generate_fragments(ds.PixelData))


def jp2_file(codestream: bytes, width: int, height: int) -> bytes:
    """A JP2 box file around ``codestream`` whose header box declares ``width`` x ``height``."""
    def box(kind: bytes, content: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(content), kind) + content

    ihdr = struct.pack(">IIHBBBB", height, width, 1, 14, 7, 0, 0)
    colour = struct.pack(">BBBI", 1, 0, 0, 17)  # enumerated colour space: greyscale
    return (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"ftyp", b"jp2 \x00\x00\x00\x00jp2 ")
            + box(b"jp2h", box(b"ihdr", ihdr) + box(b"colr", colour)) + box(b"jp2c", codestream))


def png_with_size(dicom_dir: Path, width: int, height: int) -> bytes:
    """The real film as PNG, its IHDR declaring ``width`` x ``height`` (checksum recomputed)."""
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="PNG")
    patched = bytearray(buffer.getvalue())
    struct.pack_into(">II", patched, 16, width, height)
    struct.pack_into(">I", patched, 29, zlib.crc32(bytes(patched[12:29])))
    return bytes(patched)


def second_header_png(dicom_dir: Path) -> bytes:
    """The real film as PNG with a second IHDR declaring 7000 x 7000 RGBA after the honest one: the size checks read
    the first, Pillow keeps the last (found by a review: 747 MB decoded without waiting for a place)."""
    stream = png_with_size(dicom_dir, 512, 512)
    body = b"IHDR" + struct.pack(">IIBBBBB", 7000, 7000, 8, 6, 0, 0, 0)
    return stream[:33] + struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body)) + stream[33:]


def png_text_bomb(dicom_dir: Path, inflated_gb: int = 1) -> bytes:
    """The real film as PNG with a zTXt chunk whose text inflates to ``inflated_gb`` GB (repeated flushed runs,
    as in :func:`deflated_dicom`); Pillow reads text chunks while opening the file."""
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="PNG")
    compressor = zlib.compressobj(9)
    run = compressor.compress(bytes(64 * 2**20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    text = b"Comment\x00\x00" + run * (inflated_gb * 16)
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text + struct.pack(">I", zlib.crc32(b"zTXt" + text))
    png = buffer.getvalue()
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


def deflated_dicom(dicom_dir: Path, inflated_gb: int = 8) -> bytes:
    """RG1_UNCI's header as a deflated data set whose stream inflates to ``inflated_gb`` GB more.

    A full flush byte-aligns and resets the compressor, so one compressed 64 MB run of zeros can be repeated:
    ~65 kB of file per 64 MB inflated."""
    ds = _header(dicom_dir, (512, 512), DeflatedExplicitVRLittleEndian)
    ds.PixelData = real_film(dicom_dir).tobytes()
    plain = io.BytesIO()
    pydicom.dcmwrite(plain, ds, enforce_file_format=True)
    whole = plain.getvalue()
    meta_end = 132 + 12 + struct.unpack_from("<I", whole, 140)[0]  # preamble, DICM, group length element
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(whole[meta_end:]) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(64 * 2**20)
    run = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH) == run  # the trick holds
    return whole[:meta_end] + head + run * (inflated_gb * 16) + compressor.flush()


def rle_frame(dicom_dir: Path, side: int, run: bytes) -> bytes:
    """An honest ``side`` x ``side`` 8-bit header over one RLE segment of ``run`` repeated up to the longest
    a segment may be (2 bytes per pixel): header checks pass it; only the decoding process's limits can stop it.
    ``b"\x81\x00"`` repeats a byte 128 times per run (memory); ``b"\x00\x00"`` copies one byte per run (time)."""
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return encapsulated(dicom_dir, header + run * (side * side // len(run) * 2), RLELossless, size=(side, side))


def rle_segment_bomb(dicom_dir: Path, inflated_mb: int = 2048) -> bytes:
    """An RLE frame whose one segment repeats a byte 128 times per 2 bytes: ``inflated_mb`` MB for 512 x 512."""
    runs = inflated_mb * 2**20 // 128
    segment = b"\x81\x00" * runs  # header byte -127: the next byte 128 times
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    return encapsulated(dicom_dir, header + segment, RLELossless)


def _jpeg_in_dicom(dicom_dir: Path, marker: int | None = None, syntax=JPEGBaseline8Bit,
                   progressive: bool = False, bits: int = 8) -> bytes:
    stream = patch_jpeg_frame(jpeg(dicom_dir, progressive), HUGE, HUGE, marker)
    return encapsulated(dicom_dir, stream, syntax, bits=bits)


def _j2k_in_dicom(dicom_dir: Path, boxed: bool = False) -> bytes:
    stream = patch_j2k_siz(real_j2k(dicom_dir), HUGE, HUGE)
    if boxed:
        stream = jp2_file(stream, HUGE, HUGE)
    return encapsulated(dicom_dir, stream, JPEG2000, size=(1955, 1841), bits=15)


def many_scans(dicom_dir: Path, copies: int = 300) -> bytes:
    """The real film as a progressive JPEG whose last scan is repeated ``copies`` times: every scan costs a
    decoder a pass over the whole image, so repeated tiny scans buy minutes of CPU for a few bytes each."""
    stream = jpeg(dicom_dir, progressive=True)
    assert stream.endswith(b"\xff\xd9")
    last = stream.rfind(b"\xff\xda")
    return stream[:-2] + stream[last:-2] * copies + b"\xff\xd9"


def comments(dicom_dir: Path, count: int = 20_000) -> bytes:
    """The real film as a JPEG with ``count`` empty comment segments before its frame: Pillow reads each one in
    Python (7.6 MB of them took it 1.3 s)."""
    stream = jpeg(dicom_dir)
    return stream[:2] + b"\xff\xfe\x00\x02" * count + stream[2:]


def fill_bytes(dicom_dir: Path, count: int = 100_000) -> bytes:
    """The real film as a JPEG with ``count`` fill bytes (0xFF) before its first marker: legal, and read by
    Pillow one by one."""
    stream = jpeg(dicom_dir)
    return stream[:2] + b"\xff" * count + stream[2:]


def png_chunks(dicom_dir: Path, count: int = 150_000) -> bytes:
    """The real film as a PNG with ``count`` empty IDAT chunks before its own: each costs Pillow a Python read."""
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="PNG")
    stream = buffer.getvalue()
    empty = struct.pack(">I", 0) + b"IDAT" + struct.pack(">I", zlib.crc32(b"IDAT"))
    return stream[:33] + empty * count + stream[33:]  # after the signature and IHDR


def junk(dicom_dir: Path, count: int = 100_000) -> bytes:
    """The real film as a JPEG with ``count`` zero bytes after its first segment, where a marker should be:
    libjpeg skips them with a warning, Pillow one by one in Python (30 MB took it 2.2 s)."""
    stream = jpeg(dicom_dir)
    first = 4 + struct.unpack_from(">H", stream, 4)[0]  # SOI, then the APP0 segment
    return stream[:first] + b"\0" * count + stream[first:]


def exif_block(entries: int, claim: int, size: int, header: bytes = b"Exif\0\0", tiff: bytes = b"II*\0") -> bytes:
    """An EXIF (TIFF) block of ``size`` bytes whose first directory holds ``entries`` values of
    type UNDEFINED, each claiming ``claim`` bytes from offset 8: Pillow copies every one out when it reads it.
    ``header``: what comes before the TIFF (Pillow strips any number of ``Exif\\0\\0``); ``tiff``: its
    first four bytes (Pillow also reads ``II\\0*``, an invalid header, as little-endian TIFF)."""
    order = "<" if tiff.startswith(b"II") else ">"
    ifd = struct.pack(order + "H", entries) + b"".join(struct.pack(order + "HHII", 0x9000 + i, 7, claim, 8)
                                                       for i in range(entries)) + b"\0" * 4
    body = tiff + struct.pack(order + "I", 8) + ifd
    return header + body + b"\0" * max(0, size - len(body))


def exif_png(dicom_dir: Path, entries: int = 1000, claim: int = 900_000, header: bytes = b"",
             tiff: bytes = b"II*\0") -> bytes:
    """The real film as a PNG with a 1 MB eXIf chunk whose entries claim 900 kB each (900 MB to Pillow when it
    turns the film upright). The chunk holds the bare TIFF unless ``header`` says otherwise."""
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="PNG")
    stream, block = buffer.getvalue(), exif_block(entries, claim, 1_000_000, header, tiff)
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + struct.pack(">I", zlib.crc32(b"eXIf" + block))
    return stream[:33] + chunk + stream[33:]


def exif_jpeg(dicom_dir: Path, entries: int = 5000, claim: int = 64_000, header: bytes = b"Exif\0\0",
              tiff: bytes = b"II*\0") -> bytes:
    """The real film as a JPEG with one 64-kB EXIF segment whose 5,000 entries claim 64 kB each: 320 MB to
    Pillow as it opens the file (it reads the block for a resolution)."""
    stream, block = jpeg(dicom_dir), exif_block(entries, claim, 65_000 - len(header) + 6, header, tiff)
    return stream[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + stream[2:]


def mpf_jpeg(dicom_dir: Path, entries: int = 1000, claim: int = 56_000) -> bytes:
    """The real film as a JPEG with an APP2 multi-picture (MPF) index whose directory's entries claim 56 kB each:
    Pillow reads that directory as it opens any JPEG (1.35 GB and 16 s before it was checked; found by a review)."""
    stream, block = jpeg(dicom_dir), exif_block(entries, claim, 60_000, header=b"MPF\0", tiff=b"MM\0*")
    return stream[:2] + b"\xff\xe2" + struct.pack(">H", len(block) + 2) + block + stream[2:]


def reserved_marker(dicom_dir: Path) -> bytes:
    """The real film as a JPEG with a JPG0 (0xFFF0) segment first: this walk skipped its length, Pillow does not, so
    an EXIF segment inside one was read by Pillow and never checked (found by a review)."""
    stream, block = jpeg(dicom_dir), exif_block(300, 900_000, 60_000)
    app1 = b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block
    return stream[:2] + b"\xff\xf0" + struct.pack(">H", len(app1) + 2) + app1 + stream[2:]


def exif_sub_directory_jpeg(dicom_dir: Path, entries: int = 500, claim: int = 56_000) -> bytes:
    """The real film stored sideways (EXIF orientation 6) with an Exif sub-directory of ``entries`` values each
    claiming ``claim`` bytes. Its first directory claims nothing, but ImageOps.exif_transpose wrote the block back
    out, reading every sub-directory: 809 MB and 26 s for 58 kB (found by a review)."""
    grey = Image.fromarray(real_film(dicom_dir)).rotate(90, expand=True)
    buffer = io.BytesIO()
    grey.save(buffer, format="JPEG", quality=90)
    stream = buffer.getvalue()
    sub_at = 8 + 2 + 2 * 12 + 4
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<HHII", 0x8769, 4, 1, sub_at)
    sub = struct.pack("<H", entries) + b"".join(struct.pack("<HHII", 0xA000 + i, 5, claim // 8, 8)  # RATIONALs
                                                for i in range(entries))
    block = b"Exif\0\0II*\0" + struct.pack("<I", 8) + ifd0 + b"\0" * 4 + sub + b"\0" * 4
    block += b"\0" * (60_000 - len(block))  # every value lies inside the block: the claims are real reads
    return stream[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + stream[2:]


def early_end_jpeg(dicom_dir: Path) -> bytes:
    """The MPF bomb behind an end-of-image marker right after SOI: the walk stopped at that EOI and saw nothing
    else, Pillow reads on past it (480 MB for 400 entries; found by a review)."""
    stream = mpf_jpeg(dicom_dir, 400, 56_000)
    return stream[:2] + b"\xff\xd9" + stream[2:]


def zero_length_jpeg(dicom_dir: Path) -> bytes:
    """The MPF bomb behind an APP0 segment of length 0 right after SOI: the walk stopped there, Pillow reads the
    length as -2 and carries on (found by a review of the EOI fix)."""
    stream = mpf_jpeg(dicom_dir, 400, 56_000)
    return stream[:2] + b"\xff\xe0\x00\x00" + stream[2:]


def icc_png(dicom_dir: Path, count: int = 200) -> bytes:
    """The real film as a PNG with ``count`` iCCP chunks of 1 kB that each inflate to almost 1 MB: Pillow
    inflates every one, counting none against its text budget (15,000 took 34 s; found by a review)."""
    buffer = io.BytesIO()
    Image.fromarray(real_film(dicom_dir)).save(buffer, format="PNG")
    body = b"icc\0\0" + zlib.compress(bytes(1_000_000), 9)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    stream = buffer.getvalue()
    return stream[:33] + chunk * count + stream[33:]


def photoshop_jpeg(dicom_dir: Path, segments: int = 20) -> bytes:
    """The real film as a JPEG with ``segments`` 64-kB Photoshop (APP13) segments of empty 8BIM resources, which
    Pillow walks one by one in Python as it opens the file (20 MB took 0.9 s; found by a review)."""
    payload = b"Photoshop 3.0\0" + b"8BIM\x04\x04\0\0\0\0\0\0" * 5_400
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    stream = jpeg(dicom_dir)
    return stream[:2] + segment * segments + stream[2:]


def frame_headers(dicom_dir: Path, count: int = 20, components: int = 21_842) -> bytes:
    """The real film as a JPEG with ``count`` 64-kB frame headers (SOF0) first, each listing ``components``
    components where it declares one: Pillow keeps an entry per 3 bytes of each (a review: 18.8 MB took 640 MB)."""
    header = bytes([8]) + struct.pack(">HH", 200, 200) + bytes([1]) + b"\x01\x11\x00" * components
    segment = b"\xff\xc0" + struct.pack(">H", len(header) + 2) + header
    stream = jpeg(dicom_dir)
    return stream[:2] + segment * count + stream[2:]


def quantisation_tables(dicom_dir: Path, count: int = 20) -> bytes:
    """The real film as a JPEG with ``count`` 64-kB segments of 8-bit quantisation tables first: Pillow copies
    the rest of a segment once per table (a review: 18.8 MB took 0.7 s, a 200 MB film would take about 7 s)."""
    tables = b"".join(bytes([k % 4]) + bytes(range(1, 65)) for k in range(1008))
    segment = b"\xff\xdb" + struct.pack(">H", len(tables) + 2) + tables
    stream = jpeg(dicom_dir)
    return stream[:2] + segment * count + stream[2:]


def _plain_jpeg(dicom_dir: Path) -> bytes:
    return patch_jpeg_frame(jpeg(dicom_dir), HUGE, HUGE)


# name -> (builder, what the refusal must say)
BOMBS = {
    "jpeg-in-dicom.dcm": (lambda d: _jpeg_in_dicom(d), SIZE_WORDS),
    "progressive-jpeg-in-dicom.dcm": (lambda d: _jpeg_in_dicom(d, progressive=True), SIZE_WORDS),
    "lossless-jpeg-in-dicom.dcm": (lambda d: _jpeg_in_dicom(d, 0xC3, JPEGLosslessSV1, bits=16), SIZE_WORDS),
    "jpeg-ls-in-dicom.dcm": (lambda d: _jpeg_in_dicom(d, 0xF7, JPEGLSLossless, bits=16), SIZE_WORDS),
    "j2k-in-dicom.dcm": (lambda d: _j2k_in_dicom(d), SIZE_WORDS),
    "jp2-in-dicom.dcm": (lambda d: _j2k_in_dicom(d, boxed=True), SIZE_WORDS),
    "deflated.dcm": (deflated_dicom, SIZE_WORDS),
    "rle.dcm": (rle_segment_bomb, f"{SIZE_WORDS}|time limit"),
    "plain.jpeg": (_plain_jpeg, SIZE_WORDS),
    "many-scans.jpeg": (many_scans, "too costly to decode safely: its JPEG data holds more than 256 scans"),
    "many-scans-jpeg-in-dicom.dcm": (lambda d: encapsulated(d, many_scans(d), JPEGBaseline8Bit),
                                     "too costly to decode safely"),
    "comments.jpeg": (comments, "more than 10,000 marker segments or 65,536 fill or junk bytes"),
    "fill-bytes.jpeg": (fill_bytes, "more than 10,000 marker segments or 65,536 fill or junk bytes"),
    "junk.jpeg": (junk, "more than 10,000 marker segments or 65,536 fill or junk bytes"),
    "exif.png": (exif_png, "its EXIF metadata is larger than a film's, or asks a reader for more than it holds"),
    "exif.jpeg": (exif_jpeg, "its EXIF metadata is larger than a film's, or asks a reader for more than it holds"),
    "exif-header-twice.jpeg": (lambda d: exif_jpeg(d, 4000, 48_000, header=b"Exif\0\0" * 2), "its EXIF metadata"),
    "exif-odd-header.jpeg": (lambda d: exif_jpeg(d, tiff=b"II\0*"), "its EXIF metadata"),
    "exif-header.png": (lambda d: exif_png(d, header=b"Exif\0\0"), "its EXIF metadata"),
    "exif-odd-header.png": (lambda d: exif_png(d, tiff=b"MM*\0"), "its EXIF metadata"),
    "mpf.jpeg": (mpf_jpeg, "its multi-picture \\(MPF\\) metadata is larger than a film's"),
    "reserved-marker.jpeg": (reserved_marker, "holds a reserved marker \\(0xFFF0\\) that no JPEG decoder reads"),
    "early-end.jpeg": (early_end_jpeg, "its structure ends before its image data"),
    "zero-length-segment.jpeg": (zero_length_jpeg, "its structure ends before its image data"),
    "photoshop.jpeg": (photoshop_jpeg, "its Photoshop \\(APP13\\) metadata is larger than a film's"),
    "frame-headers.jpeg": (frame_headers, "its JPEG frame header or quantisation tables are not a film's"),
    "one-long-frame-header.jpeg": (lambda d: frame_headers(d, count=1, components=3),
                                   "its JPEG frame header or quantisation tables are not a film's"),
    "quantisation-tables.jpeg": (quantisation_tables, "its JPEG frame header or quantisation tables are not a film's"),
    "chunks.png": (png_chunks, "cut into more than 100,000 chunks"),
    "icc-profiles.png": (icc_png, "holds more than one colour profile \\(iCCP\\)"),
    "second-header.png": (second_header_png, "must have one image header \\(IHDR\\), first"),
    "plain.png": (lambda d: png_with_size(d, HUGE, HUGE), SIZE_WORDS),
    # within the pixel limit, but the resize to the model's input would allocate 224 x 40,000,000 floats (a review)
    "strip.png": (lambda d: png_with_size(d, 1, 40_000_000),
                  "declares 1x40000000 pixels, a side over the 20,000-pixel"),
    "text-chunk.png": (png_text_bomb, r"compressed metadata chunk \(text or a colour profile\) too large"),
    "plain.j2k": (lambda d: patch_j2k_siz(real_j2k(d), HUGE, HUGE), SIZE_WORDS),
    "plain.jp2": (lambda d: jp2_file(patch_j2k_siz(real_j2k(d), HUGE, HUGE), HUGE, HUGE), SIZE_WORDS),
}
