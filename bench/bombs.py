"""Decompression bombs through the CLI: time and peak memory of ``python -m core predict --json BOMB``.

One process per file, beside two baselines: a missing file (refused before any model loads: the CLI's
start-up alone) and the real uncompressed CR (start-up, model load and decoding). Peak memory is the largest
resident size of the CLI or of any decoding worker it started (RUSAGE_CHILDREN of a wrapper process). The
bombs are built from ../shared/data/dicom by tests/bombs.py. Prints figures and rewrites the "bombs" section of
docs/measurements.md; not a pass/fail test.
Targets (issue 12): every bomb refused within 10 s of starting ``predict`` (goal ~1 s after start-up) and at
most 1.5 GB above what a normal film needs.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import bombs  # noqa: E402
from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402

WRAPPER = ("import json, resource, subprocess, sys; done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True);"
           " print(json.dumps([done.returncode, done.stdout, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))")


def predict(path: Path) -> tuple[float, float, int, str]:
    """Seconds, peak MB, exit code and the JSON answer of one ``predict`` process on ``path``."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", WRAPPER, sys.executable, "-m", "core", "predict",
                           "--json", str(path)], cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    code, stdout, peak_kb = json.loads(done.stdout.strip().splitlines()[-1])
    answer = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    return seconds, peak_kb / 1024, code, answer


def refusal_seconds(path: Path) -> tuple[float, float]:
    """``read_film`` alone in a fresh process (what ``predict`` does after start-up): seconds with the decoding
    process still to start, and the best of three once it runs."""
    code = ("import sys, time; from core.films.read import read_film\n"
            "def once():\n t = time.perf_counter()\n try: read_film(sys.argv[1])\n except Exception: pass\n"
            " return time.perf_counter() - t\n"
            "print(once(), min(once() for _ in range(3)))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    cold, warm = map(float, done.stdout.split())
    return cold, warm


def first_dicom_seconds(path: Path, ahead: bool) -> float:
    """The first ``read_film`` of a normal DICOM in a fresh process, with or without a decoding worker started
    ahead and ready (what ``make run``'s launcher does once the model is up, before anyone uploads)."""
    code = ("import sys, time\nfrom core.films.decode_pool import decode_pool\nfrom core.films.read import read_film\n"
            "if sys.argv[2] == 'ahead':\n decode_pool().start_worker().join()\n"
            "t = time.perf_counter(); read_film(sys.argv[1]); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code, str(path), "ahead" if ahead else "cold"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    return float(done.stdout)


def main() -> None:
    dicom_dir = settings().data / "dicom"
    with tempfile.TemporaryDirectory() as folder:
        cases = {"(missing file: refused before the model loads)": Path(folder) / "missing.dcm",
                 "RG1_UNCI.dcm (a normal film)": dicom_dir / "RG1_UNCI.dcm"}
        for name, (build, _) in bombs.BOMBS.items():
            (Path(folder) / name).write_bytes(build(dicom_dir))
            cases[name] = Path(folder) / name
        lines = ["One `python -m core predict --json FILE` process per file (seconds = its wall time, start-up and "
                 "model load included for every file it can open; peak = the largest resident size of the CLI or a "
                 "decoding worker), and "
                 "`read_film` alone in a fresh process (first) and with a worker running (warm). Targets: refused "
                 "within 10 s of starting predict, at most 1.5 GB above the normal film.", "",
                 "| file | size | predict: exit | seconds | peak MB | read_film s: first, warm | answer |",
                 "|---|---|---|---|---|---|---|"]
        print("\n".join(lines))
        for name, path in cases.items():
            seconds, peak_mb, code, answer = predict(path)
            cold, warm = refusal_seconds(path)
            size = f"{path.stat().st_size / 1024:.0f} kB" if path.exists() else "-"
            error = json.loads(answer).get("error", "triaged") if answer else ""
            lines.append(f"| {name} | {size} | {code} | {seconds:.1f} | {peak_mb:.0f} | {cold:.2f}, {warm:.2f} | "
                         f"{error[:70]} |")
            print(lines[-1], flush=True)
    normal = dicom_dir / "RG1_UNCI.dcm"
    cold, ahead = (min(first_dicom_seconds(normal, ahead) for _ in range(3)) for ahead in (False, True))
    lines += ["", f"First normal DICOM of a fresh process (best of 3): read_film {cold:.2f} s, {ahead:.2f} s with a "
                  "decoding worker started ahead (as `make run` does once the model is up)."]
    print(lines[-1])
    write_section("bombs", "Decompression bombs and damaged files (bench/bombs.py)", lines)


if __name__ == "__main__":
    main()
