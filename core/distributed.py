"""Several GPUs or machines through PyTorch's own engine: `torchrun --nproc_per_node=N -m core.train ...`.

torchrun starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK; each process trains on its
share of every epoch's batches under DistributedDataParallel, which averages the gradients. Rank 0 alone writes
the run folder. Decisions that end training (a stop request, a NaN loss) are agreed by all ranks at once, so
none is left waiting for the others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank."""
        if not self.active:
            return flag
        tensor = torch.tensor([int(flag)], device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def broadcast(self, value):
        """Rank 0's value, on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def init_from_env() -> World:
    """The process group torchrun describes in the environment, or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), size, local_rank)


def shutdown(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
