"""Retrain shipped models from what their JSON records and compare the weights: does ``make models`` reproduce them?

Each shipped single-network model records its whole recipe (``training.config``) and its training folder
(``training.data_dir``, with the films' fingerprint in ``data.train.sha256``). This trains that recipe again, in
a fresh process, into a throwaway registry, and compares every tensor of the new weights with the shipped
ones (stored in half precision, so the new ones are rounded the same way before comparing), then the
validation AUC and the operating point. Ensembles are left out (their members' recipes are in their notes;
``make models`` trains them). By default only the models whose recorded training took at most
``--max-minutes`` (5) are retrained; name models to choose others.

    .venv/bin/python bench/reproduce.py [NAME ...] [--max-minutes 5] [--no-write]

Prints a table and rewrites the "reproduce" section of docs/measurements.md; not a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.measurements import write_section  # noqa: E402
from core.config import settings  # noqa: E402
from core.films.manifest import recorded_source  # noqa: E402

# Run in a fresh interpreter: the recipe as recorded, the training folder as recorded (training_folder).
TRAIN = """
import json, sys
from pathlib import Path
from core.store.records import TrainConfig
from core.training.train import train
config, data_dir, name, folder = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
record = train(data_dir, TrainConfig.model_validate(config), name=name, directory=folder)
print(json.dumps({"json": str(folder / f"{record.name}.json")}))
"""


def shipped_models(names: list[str], max_minutes: float) -> list[tuple[str, dict]]:
    """(name, its JSON) of the shipped single-network models asked for."""
    chosen = []
    for path in sorted(settings().checkpoints.glob("*.json")):
        record = json.loads(path.read_text())
        if "training" not in record or record.get("members"):
            continue
        seconds = record["training"].get("seconds") or 0
        if (record["name"] in names) if names else seconds <= max_minutes * 60:
            chosen.append((record["name"], record))
    missing = set(names) - {name for name, _ in chosen}
    if missing:
        sys.exit(f"not a shipped single-network model: {', '.join(sorted(missing))}")
    return chosen


def recipe(record: dict) -> dict:
    """The recorded recipe at the precision the run used: older JSONs record the request ("auto"), which meant
    fp32 then and means bf16 on this CPU now; ``training.precision`` says what the run did."""
    return {**record["training"]["config"],
            "precision": record["training"].get("precision") or record["training"]["config"]["precision"]}


def training_folder(record: dict) -> str:
    """The recorded training folder, read where it is now: ``../shared/data/...`` where CXR_DATA puts the shared
    films, another relative folder from the repository root."""
    return recorded_source(record["training"]["data_dir"])


def retrain(record: dict, work: Path) -> tuple[dict, float]:
    """The reproduced model's JSON and the seconds its process took."""
    base = record["name"].rsplit("-v", 1)[0]
    folder = work / base
    (work / "no-shipped-models").mkdir(exist_ok=True)
    env = {"CXR_MODELS": str(folder), "CXR_CHECKPOINTS": str(work / "no-shipped-models"),
           "CXR_JOBS": str(work / "jobs"), "CXR_AUDIT_LOG": str(work / "audit.jsonl")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", TRAIN, json.dumps(recipe(record)),
                           training_folder(record), base, str(folder)],
                          cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode:
        raise RuntimeError(f"{record['name']}: training failed: {done.stderr.strip()[-400:]}")
    return json.loads(Path(json.loads(done.stdout.strip().splitlines()[-1])["json"]).read_text()), seconds


def weights(record: dict, folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, by its dotted key."""
    saved = torch.load(folder / f"{record['name']}.pt", map_location="cpu", weights_only=True)["model"]
    return {key: value for key, value in saved.items() if torch.is_tensor(value)}


def compare(shipped: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> tuple[str, float]:
    """("bit-identical" / "N of M tensors differ" / what does not match, the largest absolute difference)."""
    if shipped.keys() != new.keys():
        return "different tensors", float("nan")
    differ, largest = 0, 0.0
    for key, old in shipped.items():
        now = new[key].to(old.dtype)  # shipped weights are half precision
        if old.shape != now.shape:
            return f"{key}: shape {tuple(old.shape)} vs {tuple(now.shape)}", float("nan")
        if not torch.equal(old, now):
            differ += 1
            if old.is_floating_point():
                largest = max(largest, (old.float() - now.float()).abs().max().item())
    return ("bit-identical" if not differ else f"{differ} of {len(shipped)} tensors differ"), largest


def figures(record: dict) -> str:
    report, point = record["report"], record["operating_point"]
    return f"{report['auc']:.4f} / {point['threshold']:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="shipped models to retrain (default: the quick ones)")
    parser.add_argument("--max-minutes", type=float, default=5.0,
                        help="without names: retrain the models whose recorded training took at most this long")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/measurements.md alone")
    args = parser.parse_args()
    chosen = shipped_models(args.names, args.max_minutes)
    lines = ["Each shipped single-network model retrained from the recipe and training folder its JSON records (at "
             "the precision the run used), in a fresh process on this machine, and its weights compared tensor by "
             "tensor with the shipped file (both in half precision). Validation figures = AUC / stored threshold. Reproduce: `.venv/bin/python "
             f"bench/reproduce.py {' '.join(args.names) or f'--max-minutes {args.max_minutes:g}'}`.", "",
             "| model | recipe (arch, size, epochs, precision) | recorded training | this run (process) | films "
             "the same | weights | largest difference | validation: shipped | reproduced |",
             "|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory(prefix="cxr-reproduce-") as temporary:
        work = Path(temporary)
        for name, record in chosen:
            config = recipe(record)
            new, seconds = retrain(record, work)
            verdict, largest = compare(weights(record, settings().checkpoints),
                                       weights(new, work / name.rsplit("-v", 1)[0]))
            same_films = new["data"]["train"]["sha256"] == record["data"]["train"]["sha256"]
            described = f"{config['arch']}, {config['image_size']} px, {config['epochs']} epochs, {config['precision']}"
            lines.append(f"| {name} | {described} | {record['training']['seconds']:.0f} s | {seconds:.0f} s | "
                         f"{'yes' if same_films else 'no'} | {verdict} | {largest:.3g} | {figures(record)} | "
                         f"{figures(new)} |")
            print(lines[-1], flush=True)
    if not args.no_write:
        write_section("reproduce", "Reproducing the shipped models (bench/reproduce.py)", lines)


if __name__ == "__main__":
    main()
