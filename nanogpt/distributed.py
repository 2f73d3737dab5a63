"""Data-parallel training of one run across the processes `torchrun` starts (NCCL on GPUs, gloo on
CPU).

The global batch is `batch_size`, split across ranks: every rank draws the same global batch
(same seeded generator) and trains on its 1/N of the rows, and DDP averages the gradients. N
ranks therefore compute what one process computes, up to float summation order, and a config
means the same run (and has the same hash) whatever N is. Rank 0 alone writes the run folder,
logs and checkpoints; the other ranks start from rank 0's state and follow it.

A single process gets `SingleProcess`, whose collectives do nothing; the training loop calls
the same methods either way.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class DistributedError(ValueError):
    """A data-parallel launch that cannot work; the message says what to change."""


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain process: the one that prints and writes."""
    return os.environ.get("RANK", "0") == "0"


class SingleProcess:
    rank, size = 0, 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        return device

    def check_batch(self, batch_size: int) -> None:
        pass

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def broadcast(self, obj: Any) -> Any:
        return obj

    def reseed(self, seed: int, step: int) -> None:
        pass


class DataParallel(SingleProcess):
    def __init__(self, rank: int, size: int, local_rank: int):
        self.rank, self.size, self.local_rank = rank, size, local_rank

    def place(self, device: torch.device) -> torch.device:
        """One GPU per rank: a bare 'cuda' becomes cuda:LOCAL_RANK."""
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank if device.index is None else device.index)
            torch.cuda.set_device(device)
        return device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise DistributedError(
                f"batch_size {batch_size} (the global batch) does not split evenly over "
                f"{self.size} processes; pick a batch_size divisible by {self.size} or change "
                "--nproc_per_node"
            )

    def wrap(self, model: nn.Module) -> nn.Module:
        device = next(model.parameters()).device
        return DistributedDataParallel(model,
                                       device_ids=[device] if device.type == "cuda" else None)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, dist.ReduceOp.SUM)  # gloo has no AVG; callers divide
        return tensor

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, dist.ReduceOp.MIN)
        return tensor

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def reseed(self, seed: int, step: int) -> None:
        """Give each rank its own dropout stream, a function of (seed, step, rank) only.

        Called at every evaluation point, so a resumed run needs no per-rank RNG state in rank 0's
        checkpoint to draw exactly the dropout masks an uninterrupted run draws.
        """
        torch.manual_seed(hash((seed, step, self.rank)) & 0x7FFF_FFFF_FFFF_FFFF)


def world(device: torch.device) -> SingleProcess:
    """The process group torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK), joined once; else a
    single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return SingleProcess()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(dist.destroy_process_group)
    return DataParallel(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0")))
