"""What one GPU can show of issue 11's NCCL path: a process group on NCCL, core's ResNet-18 inside
DistributedDataParallel on that GPU, a few bf16 training steps, and the collectives core's training uses
(broadcast of rank 0's early-stopping decision, all-reduce of the loss and of a cancel flag).

``torchrun --nproc-per-node 1`` makes a world of one process, which `core train` rightly runs without DDP; NCCL
refuses two ranks on one GPU; so this check joins NCCL itself, in a world of one, with core's own model. Several
GPUs or machines are needed to see gradients averaged across ranks. Prints one line; not a pass/fail test.

    torchrun --standalone --nproc-per-node 1 bench/nccl_check.py
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from core.models.build import build_model  # noqa: E402


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/nccl_check.py: NCCL needs a CUDA GPU, and torch sees none here")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    model = build_model("resnet18", 2, 224, False)[0].to(device, memory_format=torch.channels_last)
    ddp = DistributedDataParallel(model, device_ids=[local_rank], output_device=local_rank)
    optimiser, loss_fn = torch.optim.AdamW(ddp.parameters(), lr=3e-4), nn.CrossEntropyLoss()
    images = torch.rand(32, 1, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (32,), device=device)
    started = time.perf_counter()
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(ddp(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    stop = torch.tensor([1], device=device)
    dist.broadcast(stop, src=0)
    total = torch.tensor([loss.item()], device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    cancel = torch.tensor([0], device=device)
    dist.all_reduce(cancel, op=dist.ReduceOp.MAX)
    torch.cuda.synchronize()
    print(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))} on {torch.cuda.get_device_name(device)}: world of "
          f"{dist.get_world_size()}, backend {dist.get_backend()}; DDP(resnet18) 5 bf16 steps in "
          f"{time.perf_counter() - started:.2f} s (first-call set-up included), loss {loss.item():.3f}; broadcast "
          f"{stop.item()}, all-reduced loss {total.item():.3f}, cancel flag {cancel.item()}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
