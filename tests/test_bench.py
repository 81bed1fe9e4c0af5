"""The benchmark measures both models in one run; CUDA-only checks skip without a GPU."""

from __future__ import annotations

import pytest
import torch

from ebt_vision.experiments.image.bench import BenchOptions, bench_cases, bench_table, run_isolated, with_ratios
from ebt_vision.image.config import ModelConfig
from ebt_vision.image.model import ImageEBT

from .conftest import denoising_batch


def test_bench_variants_and_inference_rows():
    options = BenchOptions(("EBT-T/4",), (16,), (2,), (2,), ("cpu",), bf16=False, repeats=1, warmup=1,
                           variants=("naive", "fast", "checkpoint"))  # fmt: skip
    cases = bench_cases(options)
    assert [(c.mode, c.method, c.variant) for c in cases] == [
        ("train", "transformer", "eager"), ("train", "ebt", "naive"), ("train", "ebt", "fast"),
        ("train", "ebt", "checkpoint"), ("infer", "transformer", "eager"), ("infer", "ebt", "fast"),
    ]  # fmt: skip
    rows = with_ratios([run_isolated(case) for case in cases])
    assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_mem_gib"] >= 0 for r in rows)
    assert abs(rows[0]["params"] - rows[1]["params"]) / rows[0]["params"] < 0.02  # same size
    assert [r["time_ratio"] == 1.0 for r in rows] == [True, False, False, False, True, False]
    assert "| infer | ebt | fast | 2 |" in bench_table(rows)


def test_bench_table_marks_out_of_memory_rows():
    row = {"device": "cuda", "preset": "EBT-R/2", "params": 21e6, "image_size": 32, "batch": 256, "mode": "train",
           "method": "ebt", "variant": "naive", "steps": 2, "ms_per_step": float("nan"), "gflop_per_step": 900.0,
           "peak_mem_gib": float("nan"), "images_per_s": float("nan"), "status": "out of memory"}  # fmt: skip
    assert "| naive | 2 | OOM | OOM | nan | OOM | OOM | OOM |" in bench_table([row])


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_fused_attention_on_cuda_matches_math():
    math_model = ImageEBT(ModelConfig(width=64, depth=2, heads=4, attention="math")).cuda()
    with torch.no_grad():
        for param in math_model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    fused = ImageEBT(ModelConfig(width=64, depth=2, heads=4, attention="fused")).cuda()
    fused.load_state_dict(math_model.state_dict())
    context = torch.randn(4, 3, 32, 32, device="cuda")
    grads = []
    for model in (math_model, fused):
        candidate = context.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(model(context, candidate).sum(), candidate)
        grads.append(grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-4)


@cuda
def test_bf16_training_step_on_cuda(tiny_cfg):
    from ebt_vision.image.objective import DenoisingObjective

    objective = DenoisingObjective(tiny_cfg).cuda().train()
    clean = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = objective(denoising_batch(clean + 0.1 * torch.randn_like(clean), clean))
    out.loss.backward()
    grads = [p.grad for p in objective.parameters() if p.requires_grad]
    assert torch.isfinite(out.loss) and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_the_truncated_descent_costs_fewer_flops_than_the_full_graph():
    """descent.graph_steps=1: of 4 descent steps only the last carries the second-order graph."""
    from dataclasses import replace

    from ebt_vision.experiments.image.bench import BenchCase, run_case

    fast = BenchCase("ebt", 4, "EBT-T/4", 16, 2, "cpu", False, "fast", "train", warmup=0, repeats=1)
    full, truncated = run_case(fast), run_case(replace(fast, variant="truncated"))
    assert full["status"] == truncated["status"] == "ok"
    assert truncated["gflop_per_step"] < 0.75 * full["gflop_per_step"]
