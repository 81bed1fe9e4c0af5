"""Multi-process training with ``torchrun``: PyTorch DDP in the same training loop.

Launch any training command under torchrun, e.g. two GPUs on one machine::

    torchrun --nproc_per_node 2 -m ebt_vision train --config configs/cpu-small.yaml --out runs/ddp

or many nodes (``--nnodes 4 --node_rank $RANK --rdzv_endpoint host:29500``). torchrun sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; ``init_from_environment`` joins the process group (NCCL on GPUs, gloo on CPUs)
and each process trains on its own GPU. ``data.batch_size`` is the batch of *one* process: a step sees
``batch_size * world_size * train.grad_accumulation`` images. Every process draws the same global batch from the
same seeded crop stream and keeps its own slice (``data.CropSampler``), so N processes see exactly the data one process
with an N-times larger batch would. Only rank 0 writes checkpoints, metrics and plots; all ranks resume from them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes (a no-op for a single process); -> this process's place in it.

    ``device``: the ``train.device`` setting; ``auto`` uses NCCL and one GPU per process when CUDA is available.
    """
    if not launched_by_torchrun():
        return Distributed()
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return current()


def current() -> Distributed:
    """This process's rank and the world size (rank 0 of 1 when no process group is running)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Distributed()
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def mean_over_ranks(values: dict[str, torch.Tensor], ctx: Distributed) -> dict[str, torch.Tensor]:
    """Average scalar metrics over all processes (every rank must call this at the same step)."""
    if not ctx.enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(stacked)
    return dict(zip(keys, stacked / ctx.world_size, strict=True))


def average_gradients(module: torch.nn.Module, ctx: Distributed) -> None:
    """All-reduce the mean of every trainable parameter's gradient in one flat buffer (missing gradients count as 0).

    The manual alternative to DDP for graphs DDP gets wrong: with reentrant activation checkpointing each parameter's
    gradient arrives once per checkpointed region, and DDP (static_graph or not) then reduces partial gradients
    (measured: 45% error; ``tests/test_distributed.py`` checks this path against one process).
    """
    if not ctx.enabled:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    for param, grad in zip(params, flat.split([g.numel() for g in grads]), strict=True):
        param.grad = grad.view_as(param).clone()


def broadcast_parameters(module: torch.nn.Module, ctx: Distributed) -> None:
    """Rank 0's weights to every rank (what DDP does when it wraps a module)."""
    if ctx.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def any_over_ranks(flag: bool, device: torch.device, ctx: Distributed) -> bool:
    """True on every rank when ``flag`` is True on any rank."""
    if not ctx.enabled:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(obj, ctx: Distributed) -> list:
    """Every rank's ``obj`` (e.g. its RNG state), in rank order."""
    if not ctx.enabled:
        return [obj]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
