"""
Data parallelism for grpo.py: one process per GPU (or CPU), started by torchrun, each holding whole
groups.

    torchrun --nproc_per_node 4 grpo.py --prompts-per-step 16 ...

What is split: the step's prompts, by whole groups (rank r takes prompts r*P/N .. (r+1)*P/N - 1),
so each rank samples, scores and computes the advantages of its own groups with no communication.
What is shared: the step's loss normaliser (token and completion counts), the batch std of
--normalize batch (two sums), the LoRA gradient (one all-reduce of the flat gradient, summed:
each rank's loss is already divided by the global normaliser), and the metrics (gathered to rank
0, which alone writes logs and checkpoints and runs evaluation and diagnostics). Every rank then
clips the same gradient and takes the same optimizer step, so the adapters stay identical.

Why one all-reduce rather than DistributedDataParallel (measured: BENCHMARKS.md "Data parallel"):
the gradient is accumulated over micro-batches and only the last backward could overlap its
communication with compute (DDP's no_sync on the others), the LoRA gradient is small (18.5M floats
at r=16), and one explicit sum after accumulation keeps the update one readable line.

One process (no torchrun) is the same code with every collective the identity. A collective that
fails (a peer died, raised or stopped answering) raises PeerFailed, so that each process can tell
its own error from another's.
"""

from __future__ import annotations

import functools
import os
from datetime import timedelta

import torch
import torch.distributed as dist


class PeerFailed(RuntimeError):
    """A collective failed: another process of the run failed, exited or stopped answering within
    the timeout (the cause is chained)."""


def collective(method):
    """A World method whose failure raises PeerFailed."""
    # gloo and NCCL report a dead peer as assorted RuntimeErrors; one type lets main() say which
    # checkpoint is intact instead of printing a traceback per rank
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as e:
            raise PeerFailed(f"{method.__name__} across {self.size} processes failed: "
                             f"{(str(e).splitlines() or [type(e).__name__])[0]}") from e
    return wrapped


class World:
    """The data-parallel group of this process: rank, size, and the few collectives the trainer
    needs."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0):
        self.rank, self.size, self.local_rank = rank, size, local_rank

    @classmethod
    def from_env(cls, device_type: str, timeout_s: float) -> World:
        """torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a world of one."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        backend = "nccl" if device_type == "cuda" else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device_type == "cuda":
            # Before any collective: NCCL runs on the current device, which is otherwise GPU 0
            # for every process.
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's contiguous share of a list whose length the world size divides."""
        n = len(items) // self.size
        # contiguous, not strided: gather's rank order then puts the step back in its own order
        return items[self.rank * n:(self.rank + 1) * n]

    @collective
    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """In place: the sum of this tensor over all ranks."""
        if self.size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_values(self, *values: float) -> list[float]:
        """Sums over all ranks of a few numbers (in float64, so token counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device())
        return self.sum_tensor(t).tolist()

    def any(self, flag: bool) -> bool:
        # every rank must take the same branch (skip the step, stop the run), or one of them
        # waits in a collective the others never join
        return self.sum_values(float(flag))[0] > 0

    @collective
    def gather(self, obj) -> list:
        """Every rank's object, in rank order (on every rank)."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        # pickled: only ever the run's own records between its own processes
        dist.all_gather_object(out, obj)
        return out

    @collective
    def broadcast(self, obj):
        """Rank 0's object on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @collective
    def barrier(self):
        dist.barrier()

    def device(self) -> torch.device:
        # where sum_values puts its numbers: NCCL reduces CUDA tensors only; gloo runs on CPU
        if self.size > 1 and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def close(self, finished: bool):
        """Leave the group. After a finished run every rank first waits for the others, so none
        tears gloo down while rank 0 still writes the last checkpoint (seen: the early rank
        aborting at exit, "terminate called without an active exception"). After a failure there
        is no waiting: a peer may be gone."""
        if self.size > 1 and dist.is_initialized():
            if finished:
                self.barrier()
            dist.destroy_process_group()
