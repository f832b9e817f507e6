"""Data-parallel training across processes started by `torchrun` (DistributedDataParallel).

`DistContext.from_env()` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK and, when WORLD_SIZE > 1, joins
the process group (NCCL on CUDA, gloo on the CPU). Rank 0 owns the run directory (creates it, holds the
lock, writes every file); the others train and exchange gradients. Small helpers: `broadcast_text`
(rank 0's run path to the others), `all_reduce_sum`, `barrier`, `close`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        """The context torchrun describes in the environment; a single process when it is not set."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    def init(self, device: torch.device) -> None:
        """Join the process group (no-op for one process)."""
        if not self.enabled or dist.is_initialized():
            return
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=self.backend, rank=self.rank, world_size=self.world_size,
                                device_id=device if device.type == "cuda" else None)

    def comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")

    def broadcast_text(self, text: str | None, max_bytes: int = 4096) -> str:
        """Rank 0's `text`, on every rank (an encoded tensor; nothing pickled)."""
        if not self.enabled:
            return text or ""
        buf = torch.zeros(max_bytes + 1, dtype=torch.uint8, device=self.comm_device())
        if self.is_main:
            data = (text or "").encode()
            if len(data) > max_bytes:
                raise ValueError(f"text of {len(data)} bytes is too long to broadcast")
            buf[0] = 1
            buf[1 : 1 + len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        dist.broadcast(buf, src=0)
        raw = bytes(buf[1:].cpu().tolist()).rstrip(b"\0")
        return raw.decode()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place (no-op for one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_reduce_max(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
