"""The fast paths of training through the descent, each against its plain-ops reference, to second order."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ebt_vision.core.config import from_dict
from ebt_vision.core.ops import efficient_attention, gelu_tanh, math_attention, use_reference_ops
from ebt_vision.image.objective import DenoisingObjective

from .conftest import TINY, denoising_batch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CAUSAL = torch.ones(6, 6, dtype=torch.bool).tril()


@pytest.mark.parametrize("mask", [None, CAUSAL], ids=["bidirectional", "causal"])
def test_efficient_attention_has_exact_first_and_second_derivatives(mask):
    q, k, v = (torch.randn(2, 3, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))

    def fn(q, k, v):
        return efficient_attention(q, k, v, mask)

    torch.testing.assert_close(fn(q, k, v), math_attention(q, k, v, mask))
    assert torch.autograd.gradcheck(fn, (q, k, v))
    assert torch.autograd.gradgradcheck(fn, (q, k, v))


def test_gelu_tanh_matches_pytorch_to_third_order():
    x = torch.linspace(-6, 6, 301, dtype=torch.float64, requires_grad=True)
    derivatives = []
    for fn in (gelu_tanh, lambda t: F.gelu(t, approximate="tanh")):
        y, found = fn(x), []
        for _ in range(3):
            (y,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            found.append(y)
        derivatives.append(found)
    for ours, reference in zip(*derivatives, strict=True):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(gelu_tanh(x), F.gelu(x, approximate="tanh"))


def _objective(overrides: dict, dtype=torch.float64, compile_: bool = False) -> DenoisingObjective:
    """A small EBT with randomised descent, its weights moved off the zero-initialised heads."""
    values = {
        **TINY,
        "model": {**TINY["model"], "width": 32, "depth": 2, "heads": 4, **overrides.get("model", {})},
        "descent": {"num_steps": 3, "min_steps": 1, "step_size_jitter": 2.0, **overrides.get("descent", {})},
    }
    torch.manual_seed(0)
    objective = DenoisingObjective(from_dict(values)).to(dtype).train()
    with torch.no_grad():  # move off the zero-initialised heads so every path carries signal
        for param in objective.parameters():
            param.add_(0.05 * torch.randn_like(param))
    if compile_:
        objective.compile_for_training()
    return objective


def _training_gradients(overrides: dict, dtype=torch.float64, compile_: bool = False, objective=None):
    """Loss and all parameter gradients of one training step with noise."""
    objective = objective or _objective(overrides, dtype, compile_)
    clean = torch.rand(3, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(2)) * 2 - 1
    torch.manual_seed(1)
    out = objective(denoising_batch(clean + 0.1 * torch.randn_like(clean), clean))
    out.loss.backward()
    return out.loss.item(), torch.cat([p.grad.flatten() for p in objective.parameters() if p.grad is not None])


@pytest.mark.parametrize("attention", ["efficient", "auto"])
def test_fast_ops_train_like_pytorchs_own_formulas(attention):
    """Efficient attention and the fast GELU (in-place second derivative in the outer backward) against math
    attention and F.gelu, to the last digits of float64."""
    try:
        use_reference_ops(True)
        loss_reference, grads_reference = _training_gradients({"model": {"attention": "math"}})
    finally:
        use_reference_ops(False)
    loss_fast, grads_fast = _training_gradients({"model": {"attention": attention}})
    assert loss_fast == pytest.approx(loss_reference, rel=1e-12)
    torch.testing.assert_close(grads_fast, grads_reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("detach", [True, False], ids=["detached-steps", "full-chain"])
def test_checkpointed_descent_steps_give_the_same_gradients(detach):
    common = {"detach_between_steps": detach, "langevin_noise": 0.01}
    loss_kept, grads_kept = _training_gradients({"descent": common})
    loss_ckpt, grads_ckpt = _training_gradients({"descent": {**common, "checkpoint_steps": True}})
    assert loss_ckpt == loss_kept
    torch.testing.assert_close(grads_ckpt, grads_kept, rtol=1e-10, atol=1e-13)


def test_compiled_energy_gradient_trains_and_evaluates_like_eager():
    """torch.compile of the energy's gradient function: its compiled derivative is the second-order graph, and the
    same compiled function serves an evaluation descent (no graph) with eager's candidates."""
    loss_eager, grads_eager = _training_gradients({}, dtype=torch.float32)
    compiled = _objective({}, dtype=torch.float32, compile_=True)
    loss_compiled, grads_compiled = _training_gradients({}, dtype=torch.float32, objective=compiled)
    assert loss_compiled == pytest.approx(loss_eager, rel=1e-5)
    torch.testing.assert_close(grads_compiled, grads_eager, rtol=1e-3, atol=1e-6)
    eager = _objective({}, dtype=torch.float32).eval()
    compiled.eval()
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        expected = eager.descend_rows(noisy, noisy, noisy).trajectory
        got = compiled.descend_rows(noisy, noisy, noisy).trajectory
    assert not got.final.requires_grad and got.backward_passes == 3
    for a, b in zip(got.candidates, expected.candidates, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _attention_and_derivatives(fn, q, k, v) -> list[torch.Tensor]:
    """Output, first-order gradients of a loss, and second-order gradients of the first-order ones' norm."""
    out = fn(q, k, v)
    first = torch.autograd.grad((out.float() ** 2).sum(), (q, k, v), create_graph=True)
    second = torch.autograd.grad(sum((g.float() ** 2).sum() for g in first), (q, k, v))
    return [out, *first, *second]


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_efficient_attention_on_cuda_is_as_accurate_as_math_to_second_order(dtype):
    """Against a float64 reference from the same inputs: the fused-forward path must be no less accurate than math
    attention in the same precision (flash kernels and bf16 both round differently, so equality is not the test)."""
    torch.manual_seed(0)
    inputs = [torch.randn(4, 6, 256, 64, device="cuda") for _ in range(3)]
    reference = _attention_and_derivatives(math_attention, *(t.double().requires_grad_() for t in inputs))
    errors = {}
    for name, fn in (("math", math_attention), ("efficient", efficient_attention)):
        found = _attention_and_derivatives(fn, *(t.to(dtype).requires_grad_() for t in inputs))
        errors[name] = [((f.double() - r).norm() / r.norm()).item() for f, r in zip(found, reference, strict=True)]
    for ours, theirs in zip(errors["efficient"], errors["math"], strict=True):
        assert ours <= 2 * theirs + (1e-5 if dtype == torch.float32 else 1e-3), errors


@cuda
def test_efficient_attention_trains_like_math_attention_on_cuda_in_bf16():
    grads = []
    for attention in ("math", "efficient"):
        values = {**TINY, "model": {**TINY["model"], "width": 64, "heads": 4, "attention": attention}}
        torch.manual_seed(0)
        objective = DenoisingObjective(from_dict(values)).cuda().train()
        with torch.no_grad():  # off the zero-initialised heads, so the descent moves
            for param in objective.parameters():
                param.add_(0.05 * torch.randn_like(param))
        clean = torch.rand(8, 3, 16, 16, device="cuda") * 2 - 1
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = objective(denoising_batch(clean + 0.1 * torch.randn_like(clean), clean))
        out.loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in objective.parameters() if p.grad is not None]).float())
    assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
    assert (grads[1] - grads[0]).norm() / grads[0].norm() < 0.1
