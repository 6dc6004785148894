"""Shipped models, re-measured: each model's validation films are rebuilt from its training record (and
checked against the stored fingerprint), decoded through the product's one preprocessing path, run through
the stored weights and read at the stored operating point. The table compares what the model's JSON promises
with what the code on this commit gives. Prints figures and rewrites the "models" section of
docs/measurements.md (``--measurements FILE`` writes it elsewhere, as `make models-trial` does); not a pass/fail
test. Run by `make models` and `make bench`. The shipped folder is ``CXR_CHECKPOINTS`` (default checkpoints/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measurements import MEASUREMENTS, write_section  # noqa: E402
from core.evaluation.metrics import evaluate_probabilities  # noqa: E402
from core.evaluation.site_range import stored_site_range  # noqa: E402
from core.models.inference import probabilities_in_batches  # noqa: E402
from core.store.checkpoints import load_checkpoint  # noqa: E402
from core.store.manifest import shipped_dir  # noqa: E402
from core.store.registry import list_models  # noqa: E402
from core.training.calibrate import recorded_validation_split  # noqa: E402
from core.store.reports import shown_reports  # noqa: E402
from core.films.tensor import load_tensors  # noqa: E402
from core.wording import fixed  # noqa: E402


def _size(size: int) -> str:
    """Bytes in MiB, or KiB below one MiB (a logistic regression's weights are a few KiB, not "0.0 MB")."""
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _ci(value, interval) -> str:
    """As the card writes it (core.wording.fixed): an AUC of 0.99967 is not a perfect "1.000" (a figures review)."""
    if value is None:
        return "—"
    return f"{fixed(value, 3)} ({fixed(interval[0], 3)}–{fixed(interval[1], 3)})" if interval else fixed(value, 3)


def _pct(value) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _training(record) -> str:
    if record.members:  # each member's time and epochs are in the ensemble's training notes
        return f"ensemble of {len(record.members)} (members' recipes in its notes)"
    return f"{_duration(record.training.seconds)}, {len(record.training.history)} epochs"


TRAVEL_SETS = (("out-of-batch", "another batch"), ("other-collection", "another collection (viral pneumonias)"),
               ("other-collection-framed", "another collection framed 15 % tighter"),
               ("tighter-framing", "framed 15 % tighter (synthetic)"))
WITHDRAWN_NOTE = ("The adult-normals figures of earlier versions of this table are withdrawn: shared-data/tb/train "
                  "holds smoothed noise textures, not chest films, so they measured nothing about adults.")
POLICY_FILMS_NOTE = ("Neither table uses the 16 full-resolution films of shared/data/films: they already helped "
                     "choose the default's operating policy, so they are no longer a clean check.")


def _travel_cell(report, figure: str) -> str:
    if report is None:
        return "not measured"
    value, interval = getattr(report, figure), getattr(report, f"{figure}_ci")
    if value is None:
        one_class = sum(1 for n in report.class_counts if n) < 2  # e.g. normal films only: no AUC, no sensitivity
        return "— (one class only)" if one_class else "—"
    return _ci(value, interval)


def _travel_notes(record) -> str:
    notes = []
    held_out = record.training is not None and record.training.config.holdout
    run = record.holdout_run
    if run is not None:
        notes.append(f"other batch: {run.name}, its recipe run with the batch held out, at that run's threshold "
                     f"{run.threshold:.3f}")
    elif "out-of-batch" in record.other_reports and not held_out:
        notes.append("other batch measured on a run that held it out; these weights retrained on every film")
    shown = {k: r for k, r in shown_reports(record.other_reports).items() if not (run and k == "out-of-batch")}
    if any(abs(r.threshold - record.operating_point.threshold) > 1e-9 for r in shown.values()):
        notes.append("other reports read at an earlier threshold")
    return "".join(f" ({note})" for note in notes)


def travel_lines(records) -> list[str]:
    """The stored figures beside internal validation (``other_reports``, #13), each with its 95 % interval, at
    the stored operating point; "not measured" for a model trained before those checks or without a holdout."""
    head = "| model | internal validation AUC / sens / spec |"
    rule = "|---|---|"
    for _, title in TRAVEL_SETS:
        head += f" {title}: n | AUC | sens | spec |"
        rule += "---|---|---|---|"
    rows = [head, rule]
    for record in records:
        figures = ("auc", "sensitivity", "specificity")
        row = f"| {record.name}{_travel_notes(record)} | " + " / ".join(_travel_cell(record.report, f)
                                                                         for f in figures) + " |"
        for key, _ in TRAVEL_SETS:
            report = record.other_reports.get(key)
            row += f" {'—' if report is None else report.n} | " + " | ".join(_travel_cell(report, f)
                                                                              for f in figures) + " |"
        rows.append(row)
    return ["How the promise travels: the figures stored beside internal validation (another batch held out of "
            "training; another collection, Kermany-type films of shared-data/covid-3class/train read as NORMAL and "
            "viral PNEUMONIA, copies of training films left out, core/training/other_collection.py; the films "
            "framed 15 % tighter, a synthetic shift, core/evaluation/framing.py: the held-out batch where there is "
            "one, else the validation films), at each model's stored operating point (a version retrained on every "
            "film: its other batch at the threshold of the run that held it out, as its row says), 95 % intervals. "
            "Figures from one batch overstate what a new site will see.",
            "", *rows, "", *range_lines(records), *elsewhere_lines(records), POLICY_FILMS_NOTE, "", WITHDRAWN_NOTE]


def range_lines(records) -> list[str]:
    """The range at a new site (core.evaluation.site_range) of each model with both readings of the other
    collection, beside what others measured on films not held here, and whether each figure lies inside."""
    rows = []
    for record in records:
        spans = stored_site_range(record.other_reports)
        if spans is None:
            continue
        figures = ("auc", "sensitivity", "specificity")
        cells = [_span(getattr(spans, f), percent=f != "auc") for f in figures]
        for measured in record.measured_elsewhere or [None]:
            if measured is None:
                rows.append(f"| {record.name} | " + " | ".join(cells) + " | not measured | — |")
                continue
            values = [getattr(measured, f) for f in figures]
            inside = [v is None or span is None or span[0] <= v <= span[1]
                      for v, span in zip(values, (getattr(spans, f) for f in figures))]
            found = " / ".join("—" if v is None else (f"{v:.3f}" if f == "auc" else f"{v * 100:.1f} %")
                               for v, f in zip(values, figures))
            outside = [f for f, ok in zip(figures, inside) if not ok]
            verdict = "outside: " + ", ".join(outside) if outside else "all inside"
            rows.append(f"| {record.name} | " + " | ".join(cells) + f" | {measured.title}: {found} | {verdict} |")
    if not rows:
        return []
    return ["Range at a new site: from the lower 95 % bound to the upper one over the other collection as collected "
            "and framed 15 % tighter (core/evaluation/site_range.py), beside the figures measured elsewhere.", "",
            "| model | AUC | sensitivity | specificity | measured elsewhere (AUC / sens / spec) | inside the range |",
            "|---|---|---|---|---|---|", *rows, ""]


def _span(span, percent: bool) -> str:
    if span is None:
        return "—"
    return f"{span[0] * 100:.1f}–{span[1] * 100:.1f} %" if percent else f"{span[0]:.3f}–{span[1]:.3f}"


def elsewhere_lines(records) -> list[str]:
    """The figures others measured on films not held here (``measured_elsewhere``), as they reported them."""
    rows = [(record, m) for record in records for m in record.measured_elsewhere]
    if not rows:
        return []
    figures = ("auc", "sensitivity", "specificity")
    lines = ["Measured elsewhere: figures others measured on films this repository does not hold, as reported "
             "(python -m core measured-elsewhere); intervals from the figures and films per class (Wilson; "
             "Hanley-McNeil for the AUC).", "",
             "| model | films | n | AUC | sens | spec | read at threshold |", "|---|---|---|---|---|---|---|"]
    for record, m in rows:
        at = "—" if m.threshold is None else f"{m.threshold:.3f}"
        lines.append(f"| {record.name} | {m.title} | {m.n} | " + " | ".join(_travel_cell(m, f) for f in figures)
                     + f" | {at} |")
    described = sorted({(m.title, m.films, m.measured_by) for _, m in rows})
    return [*lines, "", *[f"{title}: {films}; measured by {who}." for title, films, who in described], ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measurements", type=Path, default=MEASUREMENTS,
                        help="the Markdown file whose \"models\" section is rewritten (default docs/measurements.md)")
    args = parser.parse_args()
    entries, problems = list_models(shipped_dir())
    rows = ["| model | input | stored val AUC (95 % CI) | re-measured val AUC | acc | sens / spec | "
            "re-measured acc · sens / spec | threshold (target) | training | weights | inference |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    tensors: dict[tuple[str, int], object] = {}
    for entry in entries:
        loaded = load_checkpoint(entry.json_path)
        record, stored = loaded.record, loaded.record.report
        val_set = recorded_validation_split(record)
        key = (record.data.validation.sha256, record.image_size)
        if key not in tensors:
            started = time.perf_counter()
            tensors[key] = load_tensors(val_set, record.image_size)
            print(f"decoded {len(val_set)} validation films at {record.image_size} px in "
                  f"{time.perf_counter() - started:.1f} s")
        probs = probabilities_in_batches(loaded.model, tensors[key])
        now = evaluate_probabilities(val_set.labels, probs, val_set.classes, record.operating_point, seed=0)
        point = record.operating_point
        rows.append(
            f"| {record.name}{' (default)' if entry.is_default else ''} | {record.image_size} px "
            f"| {_ci(stored.auc, stored.auc_ci)} | {now.auc:.4f} (stored {stored.auc:.4f}) "
            f"| {_pct(stored.accuracy)} | {_pct(stored.sensitivity)} / {_pct(stored.specificity)} "
            f"| {_pct(now.accuracy)} · {_pct(now.sensitivity)} / {_pct(now.specificity)} "
            f"| {point.threshold:.3f} ({_pct(point.target_sensitivity)}) "
            f"| {_training(record)} "
            f"| {_size(record.weights_bytes)} | {record.inference_ms_per_film} ms |")
    split = "; ".join(dict.fromkeys(e.record.report.split for e in entries if e.record.report)) or "none"
    lines = [f"Films: {split}. Stored = the model's JSON; re-measured = this commit's preprocessing and "
             "inference on the same films, read at the stored threshold.", "", *rows]
    lines += [f"- problem: {p}" for p in problems]
    lines += ["", *travel_lines([entry.record for entry in entries])]
    write_section("models", "Shipped models: validation figures, stored and re-measured", lines, args.measurements)


if __name__ == "__main__":
    main()
