"""Under torchrun the ranks together take the class-weighted loss of the global batch: two gloo processes, each
with its own share of one batch, reach the gradient one process reaches on the whole batch."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from e2e_support import run_ranks
from torch import nn

from core.config import DistributedEnvironment
from core.models.device import FP32
from core.training import loop
from core.training.distributed import Hardware

WEIGHT = torch.tensor([0.6, 2.5])  # a rarer second class weighs more, as class_weights makes it
# One global batch of 8 films: rank 0 draws one film of the rarer class, rank 1 three (different weights of films).
LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0])


def _batch() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(3)
    return nn.Linear(5, 2), torch.randn(8, 5)


def _weighted_gradient_rank(rank: int, world: int, rendezvous: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        hardware = Hardware(torch.device("cpu"), FP32, DistributedEnvironment(rank, world, rank, world))
        model, films = _batch()
        mine = slice(4 * rank, 4 * rank + 4)
        trainer = SimpleNamespace(hardware=hardware, loss_fn=nn.CrossEntropyLoss(weight=WEIGHT))
        network = hardware.wrap(model)
        loop._Trainer._loss(trainer, network(films[mine]), LABELS[mine]).backward()
        Path(results, f"{rank}.json").write_text(json.dumps(model.weight.grad.tolist()))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_take_the_gradient_of_the_global_batch_s_weighted_loss(tmp_path):
    run_ranks(_weighted_gradient_rank, 2, tmp_path, timeout=120)
    model, films = _batch()
    nn.CrossEntropyLoss(weight=WEIGHT)(model(films), LABELS).backward()  # one process, the whole batch
    for rank in (0, 1):
        gradient = torch.tensor(json.loads((tmp_path / f"{rank}.json").read_text()))
        assert torch.allclose(gradient, model.weight.grad, atol=1e-6), rank
