"""Counting the FLOPs of what actually ran: every matrix product and attention kernel, in every pass."""

from __future__ import annotations

from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of matrix products and attention kernels (PyTorch's flop formulas) in every pass, backward
    and double backward included. (``FlopCounterMode`` itself cannot: its module hooks break ``autograd.grad``.)"""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **(kwargs or {}), out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (matrix products and attention; see ``MatmulFlops``)."""
    with MatmulFlops() as counter:
        fn()
    return counter.total
