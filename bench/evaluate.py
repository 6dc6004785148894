"""Evaluation and Grad-CAM speed of the default shipped model (issue 11):

- `python -m core evaluate` on a seeded, class-balanced sample of kermany-224/train, end to end (a fresh
  process) and in-process (``evaluate_folder`` after the model is loaded), against the same films decoded
  (``read_film`` + ``film_to_tensor``) and run through the model in batches, nothing else;
- Grad-CAM (``Predictor.explain``) as a multiple of one forward pass, and of ``Predictor.predict``, on decoded
  films: the 16 full-resolution films of shared/data/films and 16 of the 224-px sample.

The shipped checkpoints are only read. Prints figures and rewrites the "evaluate" section of
docs/measurements.md; not a pass/fail test. ``--quick`` (64 films) checks the script and only prints.

    .venv/bin/python bench/evaluate.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.measurements import write_section  # noqa: E402
from bench.training import ROOT, last_json, run_process, sample_folder  # noqa: E402
from bench.training_runs import Run  # noqa: E402
from core import config  # noqa: E402
from core.evaluation.folder import evaluate_folder  # noqa: E402
from core.films.folders import discover  # noqa: E402
from core.films.read import read_film  # noqa: E402
from core.films.tensor import as_float, film_to_tensor  # noqa: E402
from core.models.device import inference_batch_size  # noqa: E402
from core.models.inference import probabilities  # noqa: E402
from core.serving.predict import Predictor  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.registry import find_model  # noqa: E402

try:  # the device policy of issue 11: models run where and in the memory format the product runs them
    from core.models.device import place_model  # noqa: E402
except ImportError:  # an older commit: models stay where they were loaded
    def place_model(model, device):
        return model.to(device)

SHIPPED = ROOT / "checkpoints"


def evaluate_cli(folder: Path, name: str, work: Path, models: Path = SHIPPED) -> tuple[float, dict, str]:
    """Wall time and report of `python -m core evaluate` in its own process (empty decode cache, if any)."""
    shipped = models.resolve() == SHIPPED.resolve()  # any other folder is a registry of trained models
    (work / "no-shipped-models").mkdir(exist_ok=True)  # a shipped folder that does not exist is a listed problem
    env = {**os.environ, "CXR_CHECKPOINTS": str(models if shipped else work / "no-shipped-models"),
           "CXR_MODELS": str(work / "no-models" if shipped else models), "CXR_DECODE_CACHE": str(work / "cache"),
           "CXR_AUDIT_LOG": str(work / "audit.jsonl")}  # a bench's evaluations are not the site's
    wall, done = run_process([sys.executable, "-m", "core", "evaluate", str(folder), "--model", name, "--json"], env,
                             Run("core evaluate"))
    report = last_json(done.stdout)
    problem = "" if done.returncode == 0 and "error" not in report else (
        report.get("error") or done.stderr.strip()[-300:] or f"exit {done.returncode}")
    return wall, report, problem


def decode_and_forward(folder: Path, loaded, device: torch.device) -> tuple[int, float, float]:
    """The floor: decode every film through the product's path, then batched forward passes. Seconds each."""
    films, batch = discover(folder), inference_batch_size(device)
    started = time.perf_counter()
    x = torch.stack([film_to_tensor(read_film(path), loaded.image_size) for path in films.paths])
    decoded = time.perf_counter()
    model = place_model(loaded.model, device).eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            torch.softmax(model(as_float(x[i : i + batch]).to(device, non_blocking=True)), 1).cpu()
    return len(films), decoded - started, time.perf_counter() - decoded


def median_ms(fn, films, repeats: int = 3) -> float:
    """Median over films of each film's fastest of ``repeats`` calls (the least disturbed by other load)."""
    per_film = []
    for film in films:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            fn(film)
            times.append(time.perf_counter() - started)
        per_film.append(min(times))
    return statistics.median(per_film) * 1000.0


def grad_cam_rows(json_path: Path, films: dict[str, list]) -> list[str]:
    predictor = Predictor(load_checkpoint(json_path))
    model, size, cls = predictor.loaded.model, predictor.loaded.image_size, predictor.loaded.classes[-1]
    rows = ["| films | forward ms | predict ms (incl. chest-film check) | Grad-CAM ms | Grad-CAM + overlay ms "
            "| Grad-CAM / forward | Grad-CAM / predict |", "|---|---|---|---|---|---|---|"]
    for label, decoded in films.items():
        for film in decoded:
            film.model_pixels  # the reference form, once per film, as the app caches it
        inputs = {id(f): as_float(film_to_tensor(f, size).unsqueeze(0)) for f in decoded}
        for warm in (lambda f: probabilities(model, inputs[id(f)]), predictor.predict,
                     lambda f: predictor.explain(f, cls)):
            warm(decoded[0])  # first calls allocate and load the chest-film check
        forward = median_ms(lambda f: probabilities(model, inputs[id(f)]), decoded)
        predict = median_ms(predictor.predict, decoded)
        cam = median_ms(lambda f: predictor.explain(f, cls), decoded)
        cam_overlay = median_ms(lambda f: predictor.explain(f, cls).overlay, decoded, repeats=1)
        rows.append(f"| {label} | {forward:.1f} | {predict:.1f} | {cam:.1f} | {cam_overlay:.1f} "
                    f"| {cam / forward:.1f}x | {cam / predict:.1f}x |")
    device = next(model.parameters()).device
    return [f"Grad-CAM ({predictor.loaded.record.arch}, {size} px, class {cls}, model on {device}): each film's "
            "fastest of 3 calls (Grad-CAM + overlay: one call), median over films; films decoded and in reference form "
            "beforehand.", "", *rows]


def throughput(entry, device: torch.device, films: int, sample_size: int,
               models: Path = SHIPPED) -> tuple[list[str], list]:
    """`evaluate` (CLI and in-process) against decode + forward on the same films; also returns a few decoded
    films of the sample for Grad-CAM."""
    with tempfile.TemporaryDirectory(prefix="cxr-bench-evaluate-") as tmp:
        work = Path(tmp)
        # This process's own evaluate_folder must not fill a decode cache outside the temporary folder either.
        config.reload({**os.environ, "CXR_DECODE_CACHE": str(work / "cache-in-process")})
        folder = work / "films"
        counts = sample_folder(folder, films)
        for path in sorted(folder.rglob("*.jpeg")):
            path.read_bytes()  # the page cache holds every film before either side is timed
        cli_wall, report, problem = evaluate_cli(folder, entry.name, work, models)
        loaded = load_checkpoint(entry.json_path)
        loaded.model = place_model(loaded.model, device)  # as `python -m core evaluate` does
        size = loaded.image_size  # a warm-up batch: first calls allocate and pick kernels, for both sides alike
        probabilities(loaded.model.eval(), torch.rand(inference_batch_size(device), 1, size, size))
        started = time.perf_counter()
        evaluate_folder(loaded, folder)
        in_process = time.perf_counter() - started
        n, decode_s, forward_s = decode_and_forward(folder, loaded, device)
        paths = sorted(folder.rglob("*.jpeg"))[:: max(1, n // sample_size)][:sample_size]
        sample = [read_film(p) for p in paths]
    config.reload()
    floor = n / (decode_s + forward_s)
    cli = "—" if problem else f"{n / cli_wall / floor:.2f}x end to end, "
    lines = [f"Default model {entry.name} ({entry.arch}, {entry.record.image_size} px) on {n} films "
             f"({' + '.join(map(str, counts))} per class, a seeded sample of kermany-224/train); torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads; forward on {device}.", "",
             "| what | seconds | films/s | vs decode + forward |", "|---|---|---|---|",
             f"| `python -m core evaluate` | failed: {problem.replace('|', '/')} | | |" if problem else
             f"| `python -m core evaluate --json` (Triage's film checks included), process wall "
             f"({report.get('n', '?')} films scored) "
             f"| {cli_wall:.1f} | {n / cli_wall:.1f} | {n / cli_wall / floor:.2f}x |",
             f"| `evaluate_folder` (the same checks), model already loaded | {in_process:.1f} | {n / in_process:.1f} "
             f"| {n / in_process / floor:.2f}x |",
             f"| decode (read_film + film_to_tensor) + forward in batches of {inference_batch_size(device)} "
             f"| {decode_s:.1f} + {forward_s:.1f} | {floor:.1f} | 1.00x |", "",
             f"Target (issue 11): `evaluate` >= 0.5x of decode + forward alone; measured {cli}"
             f"{n / in_process / floor:.2f}x in-process.", ""]
    return lines, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 films; prints only")
    parser.add_argument("--models", type=Path, default=SHIPPED, metavar="DIR",
                        help="the models' folder (default: the shipped checkpoints); with it, figures are only printed")
    parser.add_argument("--model", metavar="NAME", help="the model to time (default: that folder's default)")
    args = parser.parse_args()
    quick = args.quick or args.models.resolve() != SHIPPED.resolve()
    entry, per_group = find_model(args.model, args.models), 4 if args.quick else 16
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lines, sample = throughput(entry, device, 64 if args.quick else 600, per_group, args.models)
    full = sorted((config.settings().data / "films").rglob("*.jpeg"))[:: 16 // per_group]
    films = {f"{len(sample)} of the 224-px sample": sample}
    if full:
        films[f"{len(full)} full-resolution (shared/data/films)"] = [read_film(p) for p in full]
    lines += grad_cam_rows(entry.json_path, films)
    lines += ["- CUDA: no CUDA device"] if device.type == "cpu" else []
    if quick:
        print("\n".join(lines))
        print("\n(--quick or --models: figures printed only; docs/measurements.md left as it is)")
    else:
        write_section("evaluate", "Evaluation and Grad-CAM speed (bench/evaluate.py)", lines)


if __name__ == "__main__":
    main()
