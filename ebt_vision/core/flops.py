"""Counting the FLOPs of what actually ran: every matrix product and attention kernel, in every pass."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_flash_forward(query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_flop_count(query.shape, key.shape, value.shape)


def _cpu_flash_backward(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


# PyTorch's registry has formulas for the CUDA attention kernels only; the CPU flash kernel does the same work.
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward,
}


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of matrix products and attention kernels (PyTorch's flop formulas) in every pass, backward
    and double backward included. (``FlopCounterMode`` itself cannot: its module hooks break ``autograd.grad``.)"""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket) or CPU_ATTENTION.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and attention; see ``MatmulFlops``)."""
    with MatmulFlops() as counter:
        fn()
    return counter.total
