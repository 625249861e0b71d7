"""Data parallel training on PyTorch's own engine: ``torchrun`` starts the processes,
``torch.distributed`` connects them, ``DistributedDataParallel`` averages the gradients.

Nothing here launches anything. A process is one rank of a data-parallel fit when
torchrun has set ``WORLD_SIZE`` > 1 (with ``RANK``, ``LOCAL_RANK`` and the rendezvous
variables); :func:`init` then joins the process group (NCCL on CUDA, gloo on the CPU).
Outside torchrun every function here answers for a single process, so the training loop
and the samplers call them unconditionally.

Conventions (also in ``run_bench.py fit --help``):

* ``Budget.batch_size`` is the **total** batch of one step over all ranks (KAIR's and
  MMagic's reading; BasicSR's ``batch_size_per_gpu`` is the other): each rank draws
  ``batch_size / world`` patches of the step's batch, so N ranks together see exactly the
  patches one process would, and the learning rate is never rescaled.
* Batch norm stays per rank, as the official multi-GPU recipes run it (no SyncBatchNorm).
* Only rank 0 writes: training state, the fit cache, the store.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .adapter import BenchError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the data-parallel job (rank 0 of 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched() -> bool:
    """True in a process that torchrun started (any number of ranks, one included: the
    process group and DistributedDataParallel then run even at ``--nproc_per_node 1``)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init(device: str) -> World:
    """Join torchrun's process group (once); returns this rank. CUDA ranks use the GPU of
    their ``LOCAL_RANK``."""
    if not launched():
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return world()


def device_for(device: str) -> str:
    """A rank's own device: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_batch(batch_size: int) -> int:
    """This rank's share of a step's total batch."""
    w = world()
    if batch_size % w.size:
        raise BenchError(f"batch size {batch_size} does not split over {w.size} ranks: batch_size is the total over "
                         f"all ranks; choose a multiple of {w.size} or another --nproc_per_node")
    return batch_size // w.size


def shard(batch, w: World | None = None):
    """This rank's slice of a whole step's batch (a tensor, or a tuple or dict of aligned tensors)."""
    w = w or world()
    if w.size == 1:
        return batch
    if isinstance(batch, tuple):
        return tuple(shard(b, w) for b in batch)
    if isinstance(batch, dict):
        return {k: shard(v, w) for k, v in batch.items()}
    n = batch.shape[0] // w.size
    return batch[w.rank * n:(w.rank + 1) * n].contiguous()


def gather(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0, in rank order (no gradient); ``t`` itself
    on one process. MoCo's enqueue uses it so that all ranks keep the same queue."""
    w = world()
    if w.size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(w.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def all_objects(obj):
    """``[rank 0's obj, rank 1's, ...]`` (picklable values, e.g. RNG states)."""
    w = world()
    if w.size == 1:
        return [obj]
    out = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel in a torchrun fit (itself otherwise).

    Call the wrapper where the module's own loss is backpropagated; a step that only
    backpropagates *through* it (a generator's loss through its discriminator) calls the
    bare module, or DDP's reducer waits for gradients that never come."""
    if not (dist.is_available() and dist.is_initialized()) or not any(p.requires_grad for p in module.parameters()):
        return module
    dev = next(module.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
