"""The decoding process: DICOM files are parsed and their pixels decoded here, never in the app or the CLI.

Started by :mod:`core.films.decode_pool` as ``python -m core.films.decode_worker READ_FD WRITE_FD MEMORY_BYTES``.
After importing the decoders it caps its own address space at what it holds idle plus ``MEMORY_BYTES``
(RLIMIT_AS), says it is ready, then answers one request at a time until its input closes:

- request: a JSON header ``{"label", "headerless"}``, then the file's bytes;
- ``{"decoding": samples}`` once the header passed its checks, before the pixels are decoded;
- answer: ``{"film": {...}}`` then the float32 pixels as raw bytes; ``{"error": message}`` (UnreadableImage);
  ``{"not_dicom": true}`` (headerless bytes that are no DICOM image); or ``{"memory": true}``, after which the
  worker exits so that the next film starts in a fresh process.

Its stdout and stderr lead nowhere: decoders that print cannot corrupt the answers or reach a person.
"""
from __future__ import annotations

import json
import resource
import sys
from multiprocessing.connection import Connection

import numpy as np

from core.errors import UnreadableImage
from core.films import rle
from core.films.dicom import decode_dicom
from core.films.film import Film


def _preload_decoders() -> None:
    """Import every installed pixel decoder now, before the memory limit, and not while a film waits."""
    for module in ("pydicom.pixels.decoders.pylibjpeg", "pydicom.pixels.decoders.pillow", "openjpeg", "libjpeg",
                   "PIL.JpegImagePlugin", "PIL.Jpeg2KImagePlugin"):
        try:
            __import__(module)
        except ImportError:
            pass
    rle.install()  # RLE that stops at the frame's size


def _address_space(field: str = "VmSize") -> int:
    """Bytes of address space this process holds now (VmSize) or has ever held (VmPeak); 0 without /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _limit_memory(extra_bytes: int) -> int:
    """Cap the address space at what is held now plus ``extra_bytes``; the peak beyond which a film is
    taken to have hit the cap (decoders turn a failed allocation into their own errors)."""
    held = _address_space()
    limit = held + extra_bytes
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return held + (limit - held) * 3 // 4


def _answer(requests: Connection, answers: Connection, high_water: int) -> bool:
    """Decode one film and send its answer; False when the worker must stop (input closed, memory spent)."""
    try:
        header = json.loads(requests.recv_bytes())
    except EOFError:
        return False

    def decoding(samples: int) -> None:
        answers.send_bytes(json.dumps({"decoding": samples}).encode())

    try:
        # The file's bytes are held by decode_dicom alone, which drops them once parsed.
        film = decode_dicom(requests.recv_bytes(), str(header["label"]), headerless=bool(header.get("headerless")),
                            on_decoding=decoding)
    except EOFError:
        return False
    except MemoryError:
        film = MemoryError
    except UnreadableImage as exc:
        film = exc
    except Exception:  # noqa: BLE001 - a failure dicom.py did not name: the pool says so without its text
        film = RuntimeError
    # Near the cap, a decoder's error is most likely a failed allocation; and a worker that came this close
    # retires after this film, so the next one starts in a fresh process.
    near_cap = high_water > 0 and _address_space("VmPeak") >= high_water
    if film is MemoryError or (near_cap and not isinstance(film, Film)):
        answers.send_bytes(b'{"memory": true}')
        return False
    # "retiring": this worker exits after the answer, so the pool must not hand it another film (found by a
    # review: the next, healthy film went to the exited worker and was refused as damaged)
    if isinstance(film, UnreadableImage):
        answers.send_bytes(json.dumps({"error": str(film), "retiring": near_cap}).encode())
    elif film is RuntimeError:
        answers.send_bytes(json.dumps({"failed": True, "retiring": near_cap}).encode())
    elif film is None:
        answers.send_bytes(json.dumps({"not_dicom": True, "retiring": near_cap}).encode())
    else:
        _send_film(answers, film, near_cap)
    return not near_cap


def _send_film(answers: Connection, film: Film, retiring: bool) -> None:
    pixels = np.ascontiguousarray(film.pixels, dtype=np.float32)
    answers.send_bytes(json.dumps({"film": {
        "shape": list(pixels.shape), "source_format": film.source_format,
        "original_size": list(film.original_size), "bit_depth": film.bit_depth,
        "metadata": film.metadata, "warnings": list(film.warnings)}, "retiring": retiring}).encode())
    answers.send_bytes(memoryview(pixels).cast("B"))


def main(argv: list[str]) -> int:
    read_fd, write_fd, memory_bytes = (int(value) for value in argv)
    requests, answers = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    _preload_decoders()
    high_water = _limit_memory(memory_bytes)
    answers.send_bytes(b'{"ready": true}')
    while _answer(requests, answers, high_water):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
