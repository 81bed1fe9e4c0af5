"""Operations whose double backward is cheap: what makes training through the descent fast.

Training an EBT differentiates the energy's gradient, so every layer needs a *double* backward, and PyTorch's
built-in second-order formulas are either missing (fused attention) or slow (GELU's is a dozen elementwise passes).
Each function here has a fused forward and a hand-written backward in plain, differentiable ops, so autograd can
differentiate the backward again. ``tests/test_ops.py`` checks them against the plain-ops references to second order.

PyTorch's fused attention kernels (``scaled_dot_product_attention``: flash, memory-efficient, the CPU flash kernel)
have no double backward, so the naive choice is attention in plain ops (``math_attention``), which saves the full
(N, N) attention matrix of every layer in every descent step. ``efficient_attention`` runs the forward with the
fused kernel and saves only q, k, v and the output; its backward is written out in plain, differentiable tensor ops
(recomputing the attention matrix once, as flash attention's backward does), so the backward itself has a backward.
Forward: fused speed and no (N, N) activation kept; first-order gradients: one recompute; second order: autograd
differentiates the hand-written backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_BACKENDS = ("auto", "math", "fused", "efficient")
_reference_ops = False


def use_reference_ops(enabled: bool = True) -> None:
    """Process-wide switch to PyTorch's own second-order formulas: ``auto`` attention becomes ``math`` in training and
    GELU uses ``F.gelu``. For the benchmark's naive baseline, and for ruling the fast paths out when debugging."""
    global _reference_ops
    _reference_ops = enabled


def _scores(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """q k^T / sqrt(d), -inf where ``mask`` (N, N) bool is False (True = may attend). Scales q (N d), not the
    scores (N^2)."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, h, N, d) x3 -> (B, h, N, d) in plain ops: the reference every other backend is tested against."""
    return _scores(q, k, mask).softmax(dim=-1).to(v.dtype) @ v


def attention_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, mask: Tensor | None):
    """dL/dq, dL/dk, dL/dv of softmax attention given its output ``out``, in ops autograd can differentiate again."""
    scale = q.shape[-1] ** -0.5
    scores = _scores(q, k, mask)
    # (B, h, N, N), recomputed; softmax in at least float32 (bf16 under autocast would lose the small weights)
    probs = scores.to(torch.promote_types(scores.dtype, torch.float32)).softmax(dim=-1).to(v.dtype)
    grad_v = probs.transpose(-2, -1) @ grad_out
    # softmax backward: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(dO * O) costs N d, not N^2
    row = (grad_out * out).sum(dim=-1, keepdim=True)
    grad_scores = probs * (grad_out @ v.transpose(-2, -1) - row)
    grad_q = (grad_scores @ k) * scale
    grad_k = (grad_scores.transpose(-2, -1) @ q) * scale
    return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)


class _EfficientAttention(torch.autograd.Function):
    @staticmethod
    def forward(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        # Saving the output is safe under double backward: autograd routes its gradient back through this node.
        q, k, v, mask = inputs
        ctx.save_for_backward(q, k, v, output)
        ctx.mask = mask

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, out = ctx.saved_tensors
        return (*attention_backward(q, k, v, out, grad_out, ctx.mask), None)


def efficient_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """(B, h, N, d) x3 -> (B, h, N, d): fused forward, differentiable hand-written backward (see the module doc)."""
    return _EfficientAttention.apply(q, k, v, mask)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """PyTorch's fused kernels: fastest, but no double backward (evaluation and first-order training only)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


ATTENTION_FUNCTIONS = {"math": math_attention, "fused": fused_attention, "efficient": efficient_attention}


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, backend: str, training: bool) -> Tensor:
    """Dispatch on ``backend``; ``auto`` is ``efficient`` in training (a double backward is needed) and ``fused``
    otherwise, and ``math`` inside ``torch.compile``."""
    if torch.compiler.is_compiling() and backend in ("auto", "efficient"):
        # The compiler derives and fuses the double backward itself from plain ops (see gelu_tanh); the fused
        # kernel would block it where the parameters require grad, even in eval mode.
        backend = "math"
    if backend == "auto":
        backend = ("math" if _reference_ops else "efficient") if training else "fused"
    return ATTENTION_FUNCTIONS[backend](q, k, v, mask)


_GELU_C = math.sqrt(2.0 / math.pi)  # tanh-approximate GELU: x/2 (1 + tanh(C (x + A x^3)))
_GELU_A = 0.044715


def _gelu_tanh_second_derivative(x: Tensor) -> Tensor:
    """gelu''(x) = (1 - t^2) (u' - x t u'^2 + 3 C A x^2), t = tanh(u), u = C (x + A x^3), u' = C (1 + 3 A x^2)."""
    if torch.is_grad_enabled():  # a third derivative is wanted: plain ops autograd can follow
        inner_grad = _GELU_C * (1 + 3 * _GELU_A * x * x)
        t = torch.tanh(_GELU_C * (x + _GELU_A * x * x * x))
        return (1 - t * t) * (inner_grad - x * t * inner_grad * inner_grad + 3 * _GELU_C * _GELU_A * x * x)
    # the usual case, inside the outer backward: the same formula in place, four buffers instead of fifteen
    x2 = x * x
    t = torch.mul(x2, _GELU_A).add_(1).mul_(x).mul_(_GELU_C).tanh_()
    inner_grad = torch.mul(x2, 3 * _GELU_A * _GELU_C).add_(_GELU_C)
    inner = torch.mul(x, t).mul_(inner_grad).mul_(inner_grad).neg_().add_(inner_grad)
    inner.add_(x2.mul_(3 * _GELU_C * _GELU_A))
    return t.mul_(t).neg_().add_(1).mul_(inner)


class _GeluTanhBackward(torch.autograd.Function):
    """(grad, x) -> grad * gelu'(x) in PyTorch's one fused kernel, differentiable in both inputs: d/dgrad is this
    same function again, d/dx is grad * gelu''(x) (in place unless a third derivative is wanted). Saves grad and x,
    as PyTorch's own GELU double backward does."""

    @staticmethod
    def forward(grad: Tensor, x: Tensor) -> Tensor:
        return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, outer: Tensor):
        grad, x = ctx.saved_tensors
        d_grad = d_x = None
        if ctx.needs_input_grad[0]:
            d_grad = _gelu_tanh_backward(outer, x)
        if ctx.needs_input_grad[1]:
            second = _gelu_tanh_second_derivative(x)
            d_x = outer * grad * second if torch.is_grad_enabled() else second.mul_(grad).mul_(outer)
        return d_grad, d_x


def _gelu_tanh_backward(grad: Tensor, x: Tensor) -> Tensor:
    """grad * gelu'(x): the fused kernel, through the differentiable Function only when a graph is being recorded."""
    if torch.is_grad_enabled():
        return _GeluTanhBackward.apply(grad, x)
    return torch.ops.aten.gelu_backward(grad, x, approximate="tanh")


class _GeluTanh(torch.autograd.Function):
    @staticmethod
    def forward(x: Tensor) -> Tensor:
        return F.gelu(x, approximate="tanh")

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return _gelu_tanh_backward(grad, x)


def gelu_tanh(x: Tensor) -> Tensor:
    """``F.gelu(x, approximate="tanh")`` with a double backward about twice as fast as PyTorch's own.

    Under ``torch.compile`` the plain op is used: Inductor fuses the double backward itself, and the compiled
    second derivative of a custom autograd.Function inside ``torch.func.grad`` came out wrong (torch 2.14, CPU).
    """
    if _reference_ops or torch.compiler.is_compiling():
        return F.gelu(x, approximate="tanh")
    return _GeluTanh.apply(x)
