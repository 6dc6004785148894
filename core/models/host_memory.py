"""Keeping freed memory in the process for reuse while training on the CPU (glibc's allocator).

A training step allocates and frees the same large buffers every time (ResNet-18 at 224 px, batch 32: activations
of tens of MB each). glibc hands every block over 32 MB, and by default many smaller ones, to the kernel on free
and maps fresh pages for the next step, so each step page-faults hundreds of MB of zeroed memory back in.
Measured on the 2-core EPYC (2026-12-04; ResNet-18, 224 px, batch 32, bf16 + channels_last): 60,000-90,000 page
faults and 0.15-0.27 s of kernel time a step with glibc's defaults. Keeping freed memory cut the page faults
fivefold and, for `core train` on 600 films for 2 epochs (two runs each way, alternated), the training phase from
36.5-37.1 s to 33.5-33.6 s (the first epoch's steps 16.8-17.0 -> 14.6-14.7 s: most of the first steps' warm-up
was page faults) at a peak resident size of 2.06 GB instead of 1.81-1.84. Inference at the CPU's batch of 6
films allocates far less and gained nothing (19.8 ms a film either way); larger batches gain (core.limits
INFERENCE_BATCH_SIZE), which a training process uses for its per-epoch validation. Only training processes ask
(core.training.distributed.prepare_hardware, on the CPU); the dashboard's own process, which keeps its memory
bounded, never does (training jobs run in processes of their own).

The same settings as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` in the environment (jemalloc or tcmalloc
preloaded do it their own way), applied with ``mallopt`` from inside the process so every way of starting a run
gets them. Anywhere glibc is not the C library (macOS, Windows, musl) nothing changes.
"""
from __future__ import annotations

import ctypes
import sys
from functools import cache

_M_TRIM_THRESHOLD = -1  # free memory at the top of the heap beyond this goes back to the kernel
_M_MMAP_MAX = -4  # blocks allowed their own mapping (0: none, every block comes from the reusable heap)
TRIM_BYTES = 2**31 - 1  # the most the setting takes (an int): free memory beyond 2 GB still goes back


@cache
def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (once per process); whether it took the settings."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts these and does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES))
