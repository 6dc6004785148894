"""Inference batch size on the CPU (issue 11): milliseconds a film, by films per batch, for the networks the
product runs without gradients (validation, `evaluate`, the film features of both film checks), twice: with
glibc's allocator as it comes (the dashboard, `evaluate`), then with freed memory kept for reuse as a training
process keeps it (core.models.host_memory).

As it comes, a few films a batch run fastest: glibc hands every freed block over 32 MB back to the kernel, so a
large batch's activations are page-faulted in again on every call. With freed memory kept, larger batches are
as fast or faster, so a training process validates every epoch at its training batch (core.training.loop).
``core.limits.INFERENCE_BATCH_SIZE["cpu"]`` is chosen from the first table; the bold cells are the batches the
product runs. Real films (a seeded sample of kermany-224/train through the product's own path), each size the
fastest of three passes over the same films, interleaved so load drifts hit every size alike.

Prints figures and rewrites the "inference-batch" section of docs/measurements.md; not a pass/fail test.
``--quick`` (two sizes, one pass) checks the script in seconds and only prints.

    .venv/bin/python bench/inference_batch.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.measurements import write_section  # noqa: E402
from bench.training import SOURCE  # noqa: E402
from core.films.folders import FilmSet  # noqa: E402
from core.films.tensor import as_float, load_tensors  # noqa: E402
from core.models.build import build_model  # noqa: E402
from core.models.device import inference_batch_size, place_for_training, training_autocast  # noqa: E402
from core.models.features import FEATURE_SIZE, FeatureExtractor  # noqa: E402
from core.models.host_memory import keep_freed_memory  # noqa: E402
from core.store.records import TrainConfig  # noqa: E402

CPU = torch.device("cpu")
PER_EPOCH = "ResNet-18, bf16, training layout (per-epoch validation)"
SIZES = (2, 4, 6, 8, 12, 16, 32, 64, 128)
FILMS = 128


def films(image_size: int, count: int) -> torch.Tensor:
    """``count`` real training films (both classes, seeded) as the product's uint8 input at ``image_size``."""
    paths = sorted(SOURCE.rglob("*.jpeg"))
    chosen = np.sort(np.random.default_rng(0).choice(len(paths), count, replace=False))
    picked = FilmSet(tuple(paths[i] for i in chosen), np.zeros(count, dtype=np.int64), ("film",))
    return load_tensors(picked, image_size)


def networks() -> list[tuple[str, int, object]]:
    """(label, input size, batch -> output) for each network timed; the weights do not matter for speed."""
    def plain(arch: str, size: int):
        model = build_model(arch, 2, size, False)[0].eval()
        return lambda batch: model(batch)

    trained = place_for_training(build_model("resnet18", 2, 224, False)[0], CPU).eval()

    def bf16(batch):
        with training_autocast(CPU, "bf16"):
            return trained(batch)

    extractor = FeatureExtractor.shared()
    return [("ResNet-18, fp32 (evaluate, the final validation)", 224, plain("resnet18", 224)),
            (PER_EPOCH, 224, bf16),
            ("EfficientNet-Lite0 classifier, fp32", 224, plain("efficientnet_lite0", 224)),
            ("film features (EfficientNet-Lite0 backbone)", FEATURE_SIZE, extractor),
            ("5-layer CNN, fp32", 128, plain("cnn5", 128)),
            ("MLP, fp32", 64, plain("mlp", 64))]


def time_all(nets, inputs: dict[int, torch.Tensor], sizes, passes: int) -> dict[tuple[str, int], float]:
    best: dict[tuple[str, int], float] = {}
    with torch.inference_mode():
        for _ in range(passes):
            for label, size, run in nets:
                x = as_float(inputs[size])
                for batch in sizes:
                    run(x[:batch])  # first calls at a shape pick kernels and allocate
                    started = time.perf_counter()
                    for i in range(0, len(x), batch):
                        run(x[i:i + batch])
                    ms = (time.perf_counter() - started) / len(x) * 1000
                    best[(label, batch)] = min(ms, best.get((label, batch), float("inf")))
    return best


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def product_batch(label: str, kept: bool) -> int:
    """The batch the product runs ``label`` at: a training process (freed memory kept) validates every epoch
    at its training batch (the default's), everything else at the CPU's inference batch."""
    return TrainConfig().batch_size if kept and label == PER_EPOCH else inference_batch_size(CPU)


def table(nets, inputs: dict[int, torch.Tensor], sizes, passes: int, kept: bool) -> list[str]:
    best = time_all(nets, inputs, sizes, passes)
    lines = ["| network | input | " + " | ".join(f"{s} films" for s in sizes)
             + f" | product: films, ms | vs {max(sizes)} |",
             "|---|---|" + "---|" * len(sizes) + "---|---|"]
    for label, size, run in nets:
        product = product_batch(label, kept)
        if (label, product) not in best:
            best.update(time_all([(label, size, run)], inputs, (product,), passes))
        cells = [f"**{_ms(best[(label, s)])}**" if s == product else _ms(best[(label, s)]) for s in sizes]
        largest = best[(label, max(sizes))]
        lines.append(f"| {label} | {size} px | " + " | ".join(cells) +
                     f" | {product}, {_ms(best[(label, product)])} | {largest / best[(label, product)]:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two sizes, one pass, 16 films; print only")
    args = parser.parse_args()
    sizes, passes, count = ((4, 32), 1, 16) if args.quick else (SIZES, 3, FILMS)
    nets = networks()
    inputs = {size: films(size, count) for size in {size for _, size, _ in nets}}
    lines = [f"{count} films of kermany-224/train through the product's path; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Milliseconds a film (fastest of {passes} pass(es)); "
             "**bold**: the batch the product runs.", "",
             "With glibc's allocator as it comes (the dashboard, `evaluate`):", "",
             *table(nets, inputs, sizes, passes, kept=False)]
    if keep_freed_memory():  # from here on, as a training process allocates
        lines += ["", "With freed memory kept for reuse, as a training process runs (core.models.host_memory): "
                  "per-epoch validation at the training batch, the rest as above:", "",
                  *table(nets, inputs, sizes, passes, kept=True)]
    lines += ["", f"\"vs {max(sizes)}\": how many times faster a film runs at the product's batch than at "
              f"{max(sizes)} films a batch."]
    if args.quick:
        print("\n".join(lines))
    else:
        write_section("inference-batch", "Inference batch size on the CPU (bench/inference_batch.py)", lines)

if __name__ == "__main__":
    main()
