"""Inference benchmark: decode + preprocess + predict, and Grad-CAM, per film, for every registered model.

Prints figures; not a pass/fail test. Run with `make bench` (uses the full-resolution films and both
DICOMs in ../shared/data).
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.checkpoints import load_checkpoint  # noqa: E402
from core.films import read_film  # noqa: E402
from core.predict import Predictor  # noqa: E402
from core.registry import list_models  # noqa: E402

DATA = Path(os.environ.get("CXR_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


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
    print(f"{len(films)} films from {DATA}; torch threads: {__import__('torch').get_num_threads()}")
    decode_ms = {p.name: timed(lambda p=p: read_film(p), 3) for p in films}
    print(f"decode: median {statistics.median(decode_ms.values()):.1f} ms/film "
          f"(JPEG {statistics.median(v for k, v in decode_ms.items() if k.endswith('jpeg')):.1f}, "
          f"DICOM {statistics.median(v for k, v in decode_ms.items() if k.endswith('dcm')):.1f})")
    decoded = [read_film(p) for p in films]
    entries, _ = list_models()
    print(f"{'model':40s} {'load ms':>8s} {'predict ms':>11s} {'grad-cam ms':>12s}")
    for entry in entries:
        start = time.perf_counter()
        predictor = Predictor(load_checkpoint(entry.json_path))
        load_ms = (time.perf_counter() - start) * 1000.0
        predictor.predict(decoded[0])
        predict_ms = statistics.median(timed(lambda f=f: predictor.predict(f), 3) for f in decoded)
        cam_ms = float("nan")
        if predictor.can_explain:
            cls = predictor.loaded.classes[-1]
            cam_ms = statistics.median(timed(lambda f=f: predictor.explain(f, cls), 1) for f in decoded[:6])
        print(f"{entry.name:40s} {load_ms:8.0f} {predict_ms:11.1f} {cam_ms:12.1f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
