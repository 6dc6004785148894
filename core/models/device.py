"""One device policy for training, evaluation, prediction and Grad-CAM.

``resolve_device("auto" | "cpu" | "cuda")``: auto is CUDA when a GPU is present, else the CPU; an explicit
"cuda" without one is a :class:`DeviceUnavailable` naming what was found. ``resolve_precision`` gives the
training precision: bf16 autocast (fp32 master weights) where the hardware computes in bf16, else fp32 with
a note. Inference always runs in fp32: the stored operating point is chosen in fp32, so a report describes
the model that ships whatever device serves it.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass

import torch
from torch import nn

from core import limits
from core.errors import DeviceOutOfMemory, DeviceUnavailable

BF16, FP32 = "bf16", "fp32"


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """The device to run on; ``local_rank`` picks this process's GPU under torchrun."""
    if requested not in limits.DEVICES:
        raise DeviceUnavailable(f"Unknown device '{requested}'; choose one of {', '.join(limits.DEVICES)}.")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable("A CUDA GPU was asked for (--device cuda) but none is available here "
                                f"({_no_cuda_reason()}); use --device cpu or --device auto.")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DeviceUnavailable(f"Process {local_rank} needs GPU {local_rank}, but this machine has {count}; "
                                "start at most one process per GPU (--nproc-per-node).")
    return torch.device("cuda", local_rank)


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return "this PyTorch was built without CUDA"
    return f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU or no working driver"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively: AVX-512 BF16 or AMX. oneDNN's own check also says yes for plain
    AVX-512 (Skylake to Ice Lake Xeons), where bf16 is emulated and slower than fp32 (a review)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()))
    except (AttributeError, RuntimeError):
        return False


def bf16_supported(device: torch.device) -> bool:
    """Native bf16 on ``device``: a GPU of compute capability 8 (Ampere) or later, that GPU itself (torch's own
    check says yes for older ones, where bf16 is emulated, and asks the current GPU, not this one: a review)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_has_bf16()


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str | None]:
    """The training precision for ``requested`` ('auto' | 'bf16' | 'fp32') on ``device``, and a note when
    the hardware decided."""
    if requested not in limits.PRECISIONS:
        raise ValueError(f"Unknown precision '{requested}'; choose one of {', '.join(limits.PRECISIONS)}.")
    if requested == FP32:
        return FP32, None
    native = bf16_supported(device)
    if requested == BF16:
        return BF16, None if native else f"{device.type} has no native bf16: bf16 runs emulated, probably slower"
    if native:
        return BF16, None
    return FP32, f"training in fp32: {device.type} has no native bf16"


def training_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass and loss; the weights and optimiser stay fp32."""
    if precision != BF16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def model_device(model: nn.Module) -> torch.device:
    """The device a model's weights live on (inference moves each batch there)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` to run it, in the one memory layout every path uses (:func:`run_layout`).

    Inference always runs in this one layout, the one ``build_model`` and ``load_checkpoint`` give: a threshold
    sits exactly on a validation film's score, and another layout's different rounding could move that film
    across it.
    """
    try:
        return model.to(device).to(memory_format=run_layout(model))
    except torch.OutOfMemoryError:  # a GPU another job fills: in words, and a later load tries again
        where = "The GPU" if device.type == "cuda" else "This computer"
        raise DeviceOutOfMemory(f"{where} has no room for the model now; another job may be using it. Try again once "
                                "it is free.", command_step="nvidia-smi shows which job; or run on the CPU "
                                "(--device cpu).") from None


def place_for_training(model: nn.Module, device: torch.device, layout: str = "auto") -> nn.Module:
    """Move ``model`` to ``device`` to train it, in the layout it runs in (``layout`` "auto", see
    TrainConfig.layout) or the plain one ("contiguous")."""
    if layout == "contiguous":
        return model.to(device).to(memory_format=torch.contiguous_format)
    return place_model(model, device)


def run_layout(model: nn.Module) -> torch.memory_format:
    """channels_last for convolutional networks (25-40 % faster here in fp32 inference for ResNet-18, the
    5-layer CNN and EfficientNet-Lite0, and faster in bf16 training), the plain layout for pixel models."""
    return torch.channels_last if has_convolutions(model) else torch.contiguous_format


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


_CUDA_FLAGS = threading.RLock()  # held while cuDNN's process-wide flags are set for one inference


@contextlib.contextmanager
def inference_kernels(device: torch.device, precision: str = FP32):
    """The kernels inference runs on a GPU: cuDNN's own choice rather than benchmark mode, and in fp32 plain
    fp32 (cuDNN otherwise runs fp32 convolutions in TF32, a 10-bit mantissa); bf16 autocast when asked.

    Benchmark mode, on while training (one input shape, thousands of steps), times every candidate kernel for
    each new input shape; inference sees a few batches of each (the last one shorter), so it pays that search
    and barely uses the result. On an H200 (2026-12-04), with it on, the first validation of an EfficientNet-Lite1
    took 13.8 s and the next eleven 0.07 s each, and the fp32 validation report after training 6.5-11.9 s a
    network: most likely that search (bench/gpu_session.sh re-measures it on the next GPU).

    cuDNN's flags belong to the process, and ``cudnn.flags`` puts back on leaving what it found on entering: two
    threads inside at once (two models on a page, or Compare beside Triage) could switch TF32 back on under the
    other's fp32 inference (found by a review). GPU inference therefore takes :data:`_CUDA_FLAGS` for its
    duration; a GPU runs one model's batch at a time anyway."""
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(_CUDA_FLAGS)
            cudnn = torch.backends.cudnn
            stack.enter_context(cudnn.flags(enabled=cudnn.enabled, benchmark=False, deterministic=cudnn.deterministic,
                                            allow_tf32=cudnn.allow_tf32 and precision != FP32))
        stack.enter_context(training_autocast(device, precision))
        yield


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy on ``device``; host-to-GPU copies go through pinned memory and do not block."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def inference_batch_size(device: torch.device) -> int:
    """Films per inference batch on ``device`` (core.limits: large on a GPU, a few films on a CPU)."""
    return limits.INFERENCE_BATCH_SIZE.get(device.type, limits.INFERENCE_BATCH_SIZE["cpu"])


def set_cpu_threads(processes_on_this_machine: int = 1) -> int:
    """A single process keeps PyTorch's default (one thread per physical core). Several processes on one
    machine (torchrun, which also sets OMP_NUM_THREADS=1) share its CPUs: more threads than CPUs only makes
    them take turns, and one thread each leaves most of a large machine idle."""
    if processes_on_this_machine > 1:
        torch.set_num_threads(max(1, _cpus() // processes_on_this_machine))
    return torch.get_num_threads()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class FoundDevices:
    """What this machine offers, in words for the Retrain page."""

    gpus: int
    cpu_bf16: bool
    cpu_threads: int

    @property
    def choices(self) -> tuple[str, ...]:
        return limits.DEVICES if self.gpus else tuple(d for d in limits.DEVICES if d != "cuda")

    @property
    def auto(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        gpus = f"{self.gpus} CUDA GPU{'s' if self.gpus > 1 else ''}" if self.gpus else "no CUDA GPU"
        bf16 = "computes bf16 natively" if self.cpu_bf16 else "has no native bf16 (trains in fp32)"
        return f"{gpus}; a CPU with {self.cpu_threads} threads that {bf16}"


def found_devices() -> FoundDevices:
    """Counts GPUs without starting CUDA in this process (the dashboard's process never trains)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return FoundDevices(gpus=gpus, cpu_bf16=cpu_has_bf16(), cpu_threads=torch.get_num_threads())
