"""Counting a film once: time and memory of finding the copies in a folder (core.films.copies).

``evaluate`` (Compare), a site's calibration folder and the split all look for copies of a film among the films
they read: the split's rule (a perceptual hash and 32-px thumbnails) proposes pairs, and ``evaluate`` and the
site folder confirm each in fine detail. A folder of many near-identical films (a phantom's quality-control films,
or a hostile folder) makes every pair a candidate: n films, n(n-1)/2 pairs. Timed here on real films of
kermany-224/train (few copies) and on folders of one film saved n times with faint noise (every pair a copy).
Prints figures and rewrites the "copies" section of docs/measurements.md; not a pass/fail test.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402
from core.films.copies import film_signatures, repeats_in_detail  # noqa: E402
from core.films.folders import FilmSet, discover  # noqa: E402


def one_film_many_times(folder: Path, n: int) -> FilmSet:
    """One real film saved ``n`` times as PNG, each with faint noise (sigma 2 grey levels): no two files alike."""
    films = settings().data / "kermany-224" / "train"
    with Image.open(films / "NORMAL" / "IM-0115-0001.jpeg") as image:
        grey = np.asarray(image.convert("L"), dtype=np.float32)
    rng, paths = np.random.default_rng(0), []
    for i in range(n):
        paths.append(folder / f"copy-{i:05d}.png")
        Image.fromarray(np.clip(grey + rng.normal(0, 2, grey.shape), 0, 255).astype(np.uint8)).save(paths[-1])
    return FilmSet(tuple(paths), np.zeros(n, dtype=np.int64), ("film",))


def timed(films: FilmSet) -> tuple[float, float, float, int]:
    """Seconds to sign the films, seconds and peak MB (numpy's allocations, traced) to find their copies in
    detail, and the pairs kept."""
    started = time.perf_counter()
    signatures = film_signatures(films.paths)
    signed = time.perf_counter()
    tracemalloc.start()
    pairs = repeats_in_detail(films, signatures)
    found = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return signed - started, found - signed, peak, len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, nargs="+", default=[1000, 3000], help="folder sizes to time")
    sizes = parser.parse_args().films
    real = discover(settings().data / "kermany-224" / "train")
    lines = ["Seconds to sign the films (decode, hash, thumbnail; evaluate signs them from its own decode instead), "
             "then to find their copies and confirm them in detail (`repeats_in_detail`), with the peak of the "
             "memory that step allocates; pairs kept: a spanning forest of the copies found (one pair a copy).", "",
             "| folder | films | sign s | copies s | peak MB | pairs kept |", "|---|---|---|---|---|---|"]
    print("\n".join(lines))
    for n in sizes:
        subset = real.subset(np.random.default_rng(0).permutation(len(real))[:n])
        with tempfile.TemporaryDirectory() as folder:
            for name, films in (("kermany-224/train, a seeded sample", subset),
                                ("one film saved n times, faint noise", one_film_many_times(Path(folder), n))):
                sign, copies, peak, pairs = timed(films)
                lines.append(f"| {name} | {len(films)} | {sign:.1f} | {copies:.1f} | {peak:.0f} | {pairs} |")
                print(lines[-1], flush=True)
    lines += ["", "Before 2026-12-07 every candidate pair was kept and confirmed on its own. This bench on that code "
                  "(4ac657a): 1,000 copies of one film 7.1 s and 62 MB (499,500 pairs kept), 3,000 copies 59.9 s and "
                  "510 MB (4.5 M pairs); the real films alike."]
    write_section("copies", "Finding copies of a film in a folder (bench/copies.py)", lines)


if __name__ == "__main__":
    main()
