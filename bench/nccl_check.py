"""What one GPU can show of issue 11's NCCL path: core's own training collectives (core.training.distributed
``Hardware``: DDP around the model, rank 0's early-stopping decision broadcast, a cancel flag and the loss
all-reduced) over a NCCL process group, with core's ResNet-18 and a few bf16 steps.

``torchrun --nproc-per-node 1`` makes a world of one process, which `core train` rightly runs without DDP; NCCL
refuses two ranks on one GPU; so this check joins NCCL itself and hands core's ``Hardware`` a world of one that
counts as distributed. Several GPUs or machines are needed to see gradients averaged across ranks. Prints one
line; not a pass/fail test.

    torchrun --standalone --nproc-per-node 1 bench/nccl_check.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402

from core.config import DistributedEnvironment, distributed_environment  # noqa: E402
from core.models.build import build_model  # noqa: E402
from core.models.device import BF16, place_for_training, training_autocast  # noqa: E402
from core.training.distributed import Hardware, leave  # noqa: E402


class WorldOfOne(DistributedEnvironment):
    """torchrun's one process, taken through the collectives a world of several would use."""

    @property
    def is_distributed(self) -> bool:
        return True


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("bench/nccl_check.py: NCCL needs a CUDA GPU, and torch sees none here")
    launched = distributed_environment()
    world = WorldOfOne(launched.rank, launched.world_size, launched.local_rank, launched.local_world_size)
    hardware = Hardware(torch.device("cuda", world.local_rank), BF16, world)
    torch.cuda.set_device(hardware.device)
    dist.init_process_group("nccl", rank=world.rank, world_size=world.world_size)
    model = hardware.wrap(place_for_training(build_model("resnet18", 2, 224, False)[0], hardware.device))
    optimiser, loss_fn = torch.optim.AdamW(model.parameters(), lr=3e-4), nn.CrossEntropyLoss()
    images = torch.rand(32, 1, 224, 224, device=hardware.device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (32,), device=hardware.device)
    started = time.perf_counter()
    for _ in range(5):
        with training_autocast(hardware.device, hardware.precision):
            loss = loss_fn(model(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    stop, cancel, mean = hardware.from_main(True), hardware.on_any(False), hardware.mean(loss.item())
    torch.cuda.synchronize()
    print(f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))} on {torch.cuda.get_device_name(hardware.device)}: "
          f"world of {dist.get_world_size()}, backend {dist.get_backend()}; {type(model).__name__}(resnet18) 5 bf16 "
          f"steps in {time.perf_counter() - started:.2f} s (first-call set-up included); Hardware.from_main(True) "
          f"{stop}, on_any(False) {cancel}, mean(loss {loss.item():.3f}) {mean:.3f}")
    leave(hardware, completed=True)


if __name__ == "__main__":
    main()
