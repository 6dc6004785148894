"""Command line: ``python -m core {predict,evaluate,train,calibrate,models}``. Other tools script against this.

Every failure is a JSON object with an ``error`` message and exit code 1, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.errors import TriageError
from core.operating_point import DEFAULT_TARGET_SENSITIVITY


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit 2
        _fail(f"{self.prog}: {message}")


def _fail(message: str) -> None:
    print(json.dumps({"error": message}))
    sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m core", description="Chest X-ray triage: predict, evaluate, train, list models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("predict", help="triage one or more films")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="registered model name (default: the default model)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per film")
    p = sub.add_parser("evaluate", help="metrics on a class-folder tree DIR/CLASS/*")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("train", help="train and register a new model version")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--arch", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int)
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--hflip", action="store_true", help="also flip horizontally (moves the heart; off by default)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="ignore local ImageNet weights")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float)
    p.add_argument("--max-films", type=int, help="train on a random class-balanced subset (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-sensitivity", type=float, default=DEFAULT_TARGET_SENSITIVITY,
                   help="the operating point reaches this sensitivity on validation (default %(default)s)")
    p.add_argument("--name", help="base name; a version suffix -vN is added")
    p.add_argument("--set-default", action="store_true", help="make the new model the default")
    p = sub.add_parser("calibrate", help="new version of a model with a threshold for another sensitivity target")
    p.add_argument("model", metavar="NAME")
    p.add_argument("--target-sensitivity", type=float, required=True, help="e.g. 0.98 (on validation)")
    p.add_argument("--data", metavar="DIR", help="the training folder, if it moved since training")
    p.add_argument("--set-default", action="store_true", help="make the new version the default")
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"predict": _predict, "evaluate": _evaluate, "train": _train, "calibrate": _calibrate,
                "models": _models}[args.command](args)
    except TriageError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted")
    return 1


def _predict(args) -> int:
    from core.films import read_film
    from core.predict import Predictor

    predictor = Predictor.from_registry(args.model)
    failures = 0
    for file in args.files:
        try:
            result = {"file": file, **predictor.predict(read_film(Path(file))).to_dict()}
        except TriageError as exc:
            result, failures = {"file": file, "error": str(exc)}, failures + 1
        print(json.dumps(result) if args.json else _describe(result), flush=True)
    return 1 if failures else 0


def _describe(result: dict) -> str:
    if "error" in result:
        return f"{result['file']}: ERROR {result['error']}"
    probs = ", ".join(f"{c} {p:.3f}" for c, p in result["probabilities"].items())
    text = f"{result['file']}: {result['label']} [{result['priority'] or 'not triaged'}] ({probs})"
    return text + "".join(f"\n  warning: {w}" for w in result["warnings"])


def _evaluate(args) -> int:
    from core.checkpoints import load_checkpoint
    from core.evaluate import evaluate_folder
    from core.registry import find_model

    loaded = load_checkpoint(find_model(args.model).json_path)
    report = evaluate_folder(loaded, args.dir)
    if args.json:
        print(json.dumps(report))
    else:
        sens, spec = report.get("sensitivity"), report.get("specificity")
        print(f"{loaded.name} on {report['n']} films: accuracy {report['accuracy']:.3f}, AUC {report['auc'] or float('nan'):.3f}"
              + (f", sensitivity {sens:.3f}, specificity {spec:.3f} at threshold {report['threshold']:.3f}"
                 if sens is not None and spec is not None else ""))
        for row in report["skipped"]:
            print(f"  skipped {row['file']}: {row['error']}")
    return 0


def _train(args) -> int:
    from tqdm import tqdm

    from core.registry import set_default
    from core.train import TrainConfig, train

    config = TrainConfig(arch=args.arch, epochs=args.epochs, image_size=args.image_size, augment=args.augment,
                         hflip=args.hflip, pretrained=args.pretrained, batch_size=args.batch_size, lr=args.lr,
                         max_films=args.max_films, seed=args.seed, target_sensitivity=args.target_sensitivity)
    try:
        config = config.resolved()
    except ValueError as exc:
        _fail(str(exc))
    if config.epochs < 1 or config.image_size < 32 or config.batch_size < 2:
        _fail("epochs must be >= 1, image size >= 32 and batch size >= 2")
    bar = tqdm(total=config.epochs, unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def on_progress(event: dict) -> None:
        if event["phase"] == "train":
            bar.n = round(event["progress"] * config.epochs, 2)
            bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.3f}", refresh=False)
            bar.refresh()
        elif event["phase"] == "epoch":
            bar.write(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}, "
                      f"validation AUC {event['val_auc']:.4f}, {event['seconds']:.0f} s")
        elif event["phase"] in ("note", "loading") and "message" in event:
            bar.write(event["message"])

    json_path = train(args.dir, config, name=args.name, on_progress=on_progress)
    bar.close()
    metadata = json.loads(json_path.read_text())
    if args.set_default:
        set_default(metadata["name"])
    print(json.dumps({"name": metadata["name"], "checkpoint": str(json_path.with_suffix(".pt")),
                      "validation": _summary(metadata["report"]), "seconds": metadata["training"]["seconds"]}))
    return 0


def _calibrate(args) -> int:
    from core.calibrate import calibrate

    json_path = calibrate(args.model, args.target_sensitivity, args.data, make_default=args.set_default)
    metadata = json.loads(json_path.read_text())
    print(json.dumps({"name": metadata["name"], "from": metadata["calibration"]["from"],
                      "previous_threshold": metadata["calibration"]["previous_threshold"],
                      "validation": _summary(metadata["report"])}))
    return 0


def _summary(report: dict) -> dict:
    return {k: report.get(k) for k in ("n", "auc", "accuracy", "sensitivity", "specificity", "threshold")}


def _models(args) -> int:
    from core.registry import list_models

    entries, problems = list_models()
    rows = [{"name": e.name, "task": e.task, "arch": e.arch, "classes": list(e.classes), "default": e.is_default,
             "image_size": e.metadata["model_args"]["image_size"], "metrics": _summary(e.metadata.get("report", {})),
             "parameters": e.metadata.get("parameters"), "created": e.metadata.get("created")} for e in entries]
    if args.json:
        print(json.dumps({"models": rows, "problems": problems}))
    else:
        for row in rows:
            m = row["metrics"]
            print(f"{'*' if row['default'] else ' '} {row['name']:40s} {row['arch']:18s} "
                  f"val AUC {m['auc'] or 0:.3f} acc {m['accuracy'] or 0:.3f}")
        for problem in problems:
            print(f"! {problem}")
    return 0
