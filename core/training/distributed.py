"""Training on several processes with an existing engine: ``torchrun ... -m core train`` runs PyTorch's
DistributedDataParallel (NCCL between GPUs, gloo between CPUs).

Every process (rank) builds the same split and the same initial weights from the seed, decodes only its
shard of the training films and trains on it; DDP averages the gradients, so ``--batch-size`` stays the
global batch (each rank takes its share). Rank 0 alone validates, decides early stopping (and tells the
others, so no rank waits forever), writes the checkpoint and touches the registry. A plain run is rank 0
of a world of one: the same code with every collective skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core.config import DistributedEnvironment, distributed_environment
from core.errors import SettingOutOfRange
from core.films.folders import FilmSet
from core.models.device import FP32, resolve_device, resolve_precision, set_cpu_threads
from core.models.host_memory import keep_freed_memory
from core.store.records import TrainConfig


@dataclass(frozen=True)
class Hardware:
    """Where this process trains, at what precision, and its place among the training processes."""

    device: torch.device
    precision: str
    world: DistributedEnvironment = field(default_factory=DistributedEnvironment)
    notes: tuple[str, ...] = ()

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    def describe(self) -> str:
        where = "the GPU" if self.device.type == "cuda" else "the CPU"
        processes = f", {self.world.world_size} processes" if self.world.is_distributed else ""
        return f"training on {where} in {self.precision}{processes}"

    def rank_batch_size(self, global_batch: int, films: int) -> int:
        """This rank's share of the global batch (never more films than one rank's shard holds)."""
        return max(1, min(global_batch, films) // self.world.world_size)

    def steps_per_epoch(self, global_batch: int, films: int, smallest_shard: int | None = None) -> int:
        """The same on every rank, so no rank waits for another's last step: films / processes in whole batches,
        but never a step in which the smallest shard (:meth:`smallest_shard`) has no film left (found by a review:
        with a film or two a rank, a rank's last batch could be empty, its loss NaN); a short last batch is fine."""
        batch = self.rank_batch_size(global_batch, films)
        steps = max(1, (films // self.world.world_size) // batch)
        return steps if smallest_shard is None else max(1, min(steps, -(-smallest_shard // batch)))

    def smallest_shard(self, films: FilmSet) -> int:
        """The films of the smallest shard :meth:`shard` deals ``films`` into (each class dealt out in turn)."""
        counts = np.bincount(films.labels, minlength=len(films.classes))
        return int(np.sum(counts // self.world.world_size)) if self.world.is_distributed else len(films)

    def shard(self, films: FilmSet, seed: int) -> FilmSet:
        """This rank's films: each class dealt out in turn from a seeded shuffle, so shards keep the balance."""
        if not self.world.is_distributed:
            return films
        rng, mine = np.random.default_rng(seed), []
        for label in range(len(films.classes)):
            members = rng.permutation(np.flatnonzero(films.labels == label))
            mine += members[self.world.rank :: self.world.world_size].tolist()
        return films.subset(np.sort(np.asarray(mine, dtype=np.int64)))

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model to train: DDP around it when several processes train, the model itself otherwise."""
        if not self.world.is_distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)

    def own_randomness(self, seed: int) -> None:
        """Once every rank has drawn the same initial weights from ``seed``: each rank but 0 its own stream of
        the global generator from here on, which dropout and stochastic depth draw their masks from (a review:
        every rank dropped the same units of its films). Rank 0, like a single process, keeps the stream it has."""
        if self.world.rank:
            torch.manual_seed(seed + 104_729 * self.world.rank)

    def from_main(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (early stopping)."""
        if not self.world.is_distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(value, src=0)
        return bool(value.item())

    def on_any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a cancel request)."""
        if not self.world.is_distributed:
            return flag
        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gathered(self, state: torch.Tensor) -> torch.Tensor:
        """One tensor per rank, stacked (world x ...), on the CPU: a collective under torchrun (the random-number
        states a saved run keeps for every rank)."""
        if not self.world.is_distributed:
            return state.unsqueeze(0).clone()
        local = state.to(self.device)  # NCCL gathers GPU tensors only
        parts = [torch.empty_like(local) for _ in range(self.world.world_size)]
        dist.all_gather(parts, local)
        return torch.stack(parts).cpu()

    def differing(self, digests: dict[str, bytes]) -> list[str]:
        """The names of ``digests`` (16 bytes each) not the same on every rank (a collective under torchrun)."""
        if not self.world.is_distributed:
            return []
        names = list(digests)
        rows = self.gathered(torch.tensor([list(digests[name]) for name in names], dtype=torch.uint8))
        return [name for i, name in enumerate(names) if not bool((rows[:, i] == rows[0, i]).all())]

    def summed(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` (a tensor on this rank's device) summed over the ranks; itself in a single process."""
        if not self.world.is_distributed:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (the training loss of an epoch)."""
        if not self.world.is_distributed:
            return value
        total = torch.tensor([value], dtype=torch.float64 if self.device.type == "cpu" else torch.float32,
                             device=self.device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total.item()) / self.world.world_size


def prepare_hardware(config: TrainConfig, world: DistributedEnvironment | None = None) -> Hardware:
    """Resolve device and precision for ``config`` and, under torchrun, join the other processes."""
    world = world or distributed_environment()
    device = resolve_device(config.device, world.local_rank)
    precision, note = resolve_precision(config.precision, device)
    if world.is_distributed and config.batch_size < world.world_size:
        raise SettingOutOfRange(f"--batch-size {config.batch_size} is the global batch; with {world.world_size} "
                                f"processes it must be at least {world.world_size}.")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # one input size for the whole run: pick the fastest kernels
        torch.backends.cudnn.allow_tf32 = precision != FP32  # fp32 means fp32, not TF32's 10-bit mantissa
    else:
        set_cpu_threads(world.local_world_size)
        keep_freed_memory()  # every step frees and re-allocates the same large buffers (core.models.host_memory)
    if world.is_distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank,
                                world_size=world.world_size)
        _joined.append(world.rank)
    notes = [note] if note else []
    if world.is_distributed and config.batch_size % world.world_size:
        notes.append(f"the global batch {config.batch_size} does not divide among {world.world_size} processes: "
                     f"each takes {config.batch_size // world.world_size}")
    return Hardware(device, precision, world, tuple(notes))


_joined: list[int] = []  # the rank this process joined a process group as (core.__main__ reads it at exit)


def joined_a_group() -> bool:
    """Whether this process joined a process group. DDP keeps its group alive in C++ past
    ``destroy_process_group`` (measured, torch 2.14: gloo's three threads still run at exit), and tearing the
    interpreter down around them can abort a rank that finished (a CI run: SIGABRT, "terminate called without
    an active exception", after rank 0 had registered its model), so ``python -m core`` ends such a process at
    once, after its own exit work (core.__main__)."""
    return bool(_joined)


def leave(hardware: Hardware, completed: bool = False) -> None:
    """Leave the process group (a no-op for a single process). After a run that completed on every rank,
    the ranks first meet at a barrier: a rank tearing gloo down while its peer is still connected can abort
    the peer's process (seen as SIGABRT, "terminate called without an active exception")."""
    if hardware.world.is_distributed and dist.is_initialized():
        if completed:
            dist.barrier()
        dist.destroy_process_group()
