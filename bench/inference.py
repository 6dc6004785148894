"""Inference benchmark: decode + preprocess + predict, and Grad-CAM, per film, for every registered model.

Prints figures; not a pass/fail test. Run with `make bench` (uses the full-resolution films and both
DICOMs in ../shared/data).
"""
from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402
from core.films.read import read_film  # noqa: E402
from core.serving.chest_check import ChestFilmCheck  # noqa: E402
from core.serving.predict import Predictor  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.registry import list_models  # noqa: E402

DATA = settings().data


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def main() -> None:
    films = sorted((DATA / "films").rglob("*.jpeg")) + sorted((DATA / "dicom").glob("*.dcm"))
    if not films:
        sys.exit(f"no films under {DATA}")
    lines = [f"{len(films)} films from shared/data (full-resolution JPEGs and adult DICOMs); "
             f"torch threads: {__import__('torch').get_num_threads()}", ""]
    decode_ms = {p.name: timed(lambda p=p: read_film(p), 3) for p in films}
    lines.append(f"- decode: median {statistics.median(decode_ms.values()):.1f} ms/film "
                 f"(JPEG {statistics.median(v for k, v in decode_ms.items() if k.endswith('jpeg')):.1f}, "
                 f"DICOM {statistics.median(v for k, v in decode_ms.items() if k.endswith('dcm')):.1f})")
    decoded = [read_film(p) for p in films]
    started = time.perf_counter()
    for film in decoded:
        film.model_pixels  # the reference form, once per film
    lines.append(f"- reference form: {(time.perf_counter() - started) * 1000 / len(decoded):.1f} ms/film, once")
    entries, _ = list_models()
    ChestFilmCheck.shared()  # built by the first Predictor otherwise: that model's load time paid it (a review)
    lines += ["", "| model | load ms | predict ms (incl. chest-film check) | Grad-CAM ms |", "|---|---|---|---|"]
    for entry in entries:
        start = time.perf_counter()
        predictor = Predictor(load_checkpoint(entry.json_path))
        load_ms = (time.perf_counter() - start) * 1000.0
        predictor.predict(decoded[0])
        predict_ms = statistics.median(timed(lambda f=f: predictor.predict(f), 3) for f in decoded)
        cam = "—"
        if predictor.can_explain:
            cls = predictor.loaded.classes[-1]
            predictor.explain(decoded[0], cls)  # warm-up, as for predict: the first model paid the library's import
            cam = f"{statistics.median(timed(lambda f=f: predictor.explain(f, cls), 1) for f in decoded[:6]):.1f}"
        lines.append(f"| {entry.name} | {load_ms:.0f} | {predict_ms:.1f} | {cam} |")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"Peak resident memory, each model loaded in turn (one at a time) and explained: {peak_mb:.0f} MB"]
    write_section("inference", "Inference speed and memory (bench/inference.py)", lines)

if __name__ == "__main__":
    main()
