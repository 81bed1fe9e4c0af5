"""Train-step time and peak memory: the image EBT (K descent steps) against a plain transformer of the same size.

Each configuration runs in a fresh process, so the CPU peak-memory figure (growth of the maximum resident set
during the timed steps) belongs to that configuration alone; on CUDA it is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import resource
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...core.config import from_dict
from ...core.flops import MatmulFlops
from ...core.layers import count_parameters
from ...core.reports import markdown_table
from ...image.config import ImageConfig

EBT_VARIANTS = ("naive", "fast", "checkpoint", "truncated", "compiled")
VARIANT_NOTES = {
    "naive": "PyTorch's own second-order formulas: math attention, nn.GELU",
    "fast": "efficient attention and GELU with hand-written differentiable backwards (the default)",
    "checkpoint": "fast + descent.checkpoint_steps (each step's graph recomputed in the backward pass)",
    "truncated": "fast + descent.graph_steps=1 (the second-order graph through the last descent step only)",
    "compiled": "train.compile: the energy-gradient function (EBT) or the network (transformer) under torch.compile",
    "eager": "PyTorch's fused attention kernels, no compilation",
}


@dataclass(frozen=True)
class BenchCase:
    method: str  # "transformer" or "ebt"
    descent_steps: int  # 0 for the transformer
    preset: str
    image_size: int
    batch: int
    device: str
    bf16: bool
    variant: str = "fast"  # EBT_VARIANTS for the EBT; "eager" or "compiled" for the transformer
    mode: str = "train"  # "train": one optimiser step; "infer": a prediction (K descent steps, no second order)
    warmup: int = 2
    repeats: int = 5


def _config(case: BenchCase) -> ImageConfig:
    steps = max(1, case.descent_steps)
    return from_dict(
        {
            "preset": case.preset,
            "descent": {
                "num_steps": steps,
                "min_steps": steps,
                "checkpoint_steps": case.variant == "checkpoint",
                "graph_steps": 1 if case.variant == "truncated" else 0,
            },
            "data": {"crop_size": case.image_size, "batch_size": case.batch},
            "train": {"compile": case.variant == "compiled"},
        }
    )


def _max_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def _step_function(case: BenchCase, cfg: ImageConfig, device: torch.device):
    """-> (objective, a no-argument function running one training step or one prediction)."""
    from ...core.inference import Thinking
    from ...core.ops import use_reference_ops
    from ...core.train import build_optimizer
    from ...image.data import DenoisingBatch
    from ...image.noise import NoiseLevel
    from ...image.objective import DenoisingObjective
    from ...image.plain import PlainDenoisingObjective

    use_reference_ops(case.variant == "naive")
    objective = (DenoisingObjective if case.method == "ebt" else PlainDenoisingObjective)(cfg).to(device)
    objective.train(case.mode == "train")
    if cfg.train.compile:
        objective.compile_for_training()
    clean = torch.rand(case.batch, 3, case.image_size, case.image_size, device=device) * 2 - 1
    noise = NoiseLevel("gaussian", torch.full((case.batch,), 25.0, device=device))
    batch = DenoisingBatch(noise.add_to(clean), clean, noise)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and case.bf16)
    if case.mode == "infer":

        def predict() -> None:
            with torch.no_grad(), autocast:
                if case.method == "transformer":
                    objective.model(batch.noisy)
                else:
                    thinking = Thinking(final_energy=False)
                    objective.infer(batch.noisy, batch.noisy, thinking, gradient_fn=objective.gradient_fn)

        return objective, predict
    optimizer, _ = build_optimizer(objective, cfg, device)

    def step() -> None:
        with autocast:
            loss = objective(batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return objective, step


def run_case(case: BenchCase) -> dict:
    """Time ``repeats`` training steps (or predictions) after ``warmup``; returns one report row."""
    torch.manual_seed(0)
    device = torch.device(case.device)
    cfg = _config(case)
    objective, step = _step_function(case, cfg, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rss_before = _max_rss_gib()
    flops = seconds = peak = float("nan")
    status = "ok"
    try:
        if case.variant != "compiled":  # compiled code runs below the dispatcher: its FLOPs are the eager ones
            counter = MatmulFlops()
            with counter:
                step()
            flops = float(counter.total)
        for _ in range(case.warmup):
            step()
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(case.repeats):  # the median step: robust to a stray page-fault storm or a busy neighbour
            started = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - started)
        seconds = statistics.median(times)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else _max_rss_gib() - rss_before
    except torch.OutOfMemoryError:
        status = "out of memory"
    return {
        "method": case.method,
        "variant": case.variant,
        "mode": case.mode,
        "steps": case.descent_steps,
        "preset": case.preset,
        "params": count_parameters(objective),
        "image_size": case.image_size,
        "batch": case.batch,
        "device": case.device,
        "ms_per_step": 1000 * seconds,
        "gflop_per_step": flops / 1e9,
        "peak_mem_gib": peak,
        "images_per_s": case.batch / seconds,
        "status": status,
    }


def run_isolated(case: BenchCase) -> dict:
    """``run_case`` in a fresh spawned process (clean peak-memory counters, no state from earlier cases)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_case, case).result()


@dataclass(frozen=True)
class BenchOptions:
    """The cases to time: every preset x image size x batch x device x mode, the plain transformer and the EBT with
    each of ``descent_steps`` K and ``variants``; ``devices`` empty: the CPU, and CUDA when available; the median of
    ``repeats`` timed steps after ``warmup`` untimed ones; bf16 autocast on CUDA."""

    presets: tuple[str, ...] = ("EBT-S/4",)
    image_sizes: tuple[int, ...] = (32,)
    batches: tuple[int, ...] = (32,)
    descent_steps: tuple[int, ...] = (1, 2, 4)
    devices: tuple[str, ...] = ()
    bf16: bool = True
    repeats: int = 5
    warmup: int = 2
    variants: tuple[str, ...] = ("naive", "fast", "checkpoint", "truncated")
    modes: tuple[str, ...] = ("train", "infer")

    def resolved_devices(self) -> tuple[str, ...]:
        return self.devices or (("cpu", "cuda") if torch.cuda.is_available() else ("cpu",))


def bench_cases(options: BenchOptions) -> list[BenchCase]:
    """Every setting, each with the plain transformer first (eager, and compiled when "compiled" is asked for),
    then the EBT variants for every K; inference rows (mode "infer") for the fast (and compiled) EBT only."""
    o, cases = options, []
    settings = itertools.product(o.resolved_devices(), o.presets, o.image_sizes, o.batches, o.modes)
    for device, preset, size, batch, mode in settings:
        base = BenchCase("transformer", 0, preset, size, batch, device, o.bf16, "eager", mode, o.warmup, o.repeats)
        cases.append(base)
        if "compiled" in o.variants:
            cases.append(replace(base, variant="compiled"))
        for variant in (v for v in o.variants if mode == "train" or v in ("fast", "compiled")):
            cases += [replace(base, method="ebt", variant=variant, descent_steps=k) for k in o.descent_steps]
    return cases


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add each row's time and memory relative to the plain transformer of the same setting and mode (the compiled
    transformer for compiled rows, the eager one otherwise)."""
    key = ("preset", "image_size", "batch", "device", "mode")
    plain = {(*(r[k] for k in key), r["variant"]): r for r in rows if r["method"] == "transformer"}
    for row in rows:
        reference_variant = "compiled" if row["variant"] == "compiled" else "eager"
        ref = plain.get((*(row[k] for k in key), reference_variant))
        if ref is not None:
            row["time_ratio"] = row["ms_per_step"] / ref["ms_per_step"]
            row["flop_ratio"] = row["gflop_per_step"] / ref["gflop_per_step"]
            row["mem_ratio"] = row["peak_mem_gib"] / ref["peak_mem_gib"] if ref["peak_mem_gib"] > 0 else float("nan")
    return rows


def bench_table(rows: list[dict]) -> str:
    headers = ["device", "preset", "params", "image", "batch", "mode", "method", "variant", "K", "ms/step",
               "x plain", "x plain FLOPs", "peak GiB", "x plain mem", "images/s"]  # fmt: skip

    def cell(row: dict, text: str) -> str:
        return "OOM" if row.get("status") == "out of memory" else text

    body = [
        [r["device"], r["preset"], f"{r['params'] / 1e6:.2f}M", r["image_size"], r["batch"], r["mode"], r["method"],
         r["variant"], r["steps"], cell(r, f"{r['ms_per_step']:.1f}"),
         cell(r, f"{r.get('time_ratio', float('nan')):.2f}"), f"{r.get('flop_ratio', float('nan')):.2f}",
         cell(r, f"{r['peak_mem_gib']:.3f}"), cell(r, f"{r.get('mem_ratio', float('nan')):.2f}"),
         cell(r, f"{r['images_per_s']:.1f}")]
        for r in rows
    ]  # fmt: skip
    return markdown_table(headers, body)


def _ratios(rows: dict[tuple[str, int], dict], variants: list[str], k: int, key: str) -> list[float]:
    """``key`` of each variant's row with K = ``k`` (NaN where there is none)."""
    found = [rows.get((v, k), {}).get(key) for v in variants]
    return [float("nan") if value is None else value for value in found]


def bench_plot(rows: list[dict], path) -> None:
    """Training-step time and memory relative to the plain transformer, per variant and K, one row per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows = [r for r in rows if r["mode"] == "train" and r["method"] == "ebt"]
    settings = sorted({(r["device"], r["preset"], r["image_size"], r["batch"]) for r in train_rows})
    if not settings:
        return
    fig, axes = plt.subplots(len(settings), 2, figsize=(10, 3.4 * len(settings)), squeeze=False)
    for (device, preset, size, batch), (ax_time, ax_mem) in zip(settings, axes, strict=True):
        mine = {
            (r["variant"], r["steps"]): r
            for r in train_rows
            if (r["device"], r["preset"], r["image_size"], r["batch"]) == (device, preset, size, batch)
        }
        variants = [v for v in EBT_VARIANTS if any(variant == v for variant, _ in mine)]
        steps = sorted({k for _, k in mine})
        width = 0.8 / max(1, len(steps))

        for i, k in enumerate(steps):
            positions = [j + (i - (len(steps) - 1) / 2) * width for j in range(len(variants))]
            ax_time.bar(positions, _ratios(mine, variants, k, "time_ratio"), width, label=f"K = {k} descent steps")
            ax_mem.bar(positions, _ratios(mine, variants, k, "mem_ratio"), width, label=f"K = {k} descent steps")
            # the FLOP ratio: what the step would cost with zero overhead
            floor = _ratios(mine, variants, k, "flop_ratio")
            ax_time.scatter(positions, floor, marker="_", s=300, color="black", zorder=3,
                            label="FLOP ratio" if i == 0 else None)  # fmt: skip
        for ax, what, goal in ((ax_time, "step time", 3.0), (ax_mem, "peak memory", 2.0)):
            label = "goal at K = 2: 3x time, 2x memory" if ax is ax_time else None
            ax.axhline(goal, color="red", linestyle="--", linewidth=0.9, label=label)
            ax.set_xticks(range(len(variants)), variants)
            ax.set_ylabel(f"{what}, x plain transformer")
            ax.set_title(f"{preset}, {size}px, batch {batch}, {device}", fontsize=9)
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.07 / len(settings)))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(out: str | Path, options: BenchOptions = BenchOptions(), stem: str = "bench") -> tuple[Path, str]:
    """``ebt-vision bench``: every case in a fresh process; writes ``stem.{md,json,png}``; -> (report, table)."""
    from ...core.progress import progress
    from ...core.reports import describe_device, make_meta, write_report

    cases = bench_cases(options)
    rows = with_ratios([run_isolated(case) for case in progress(cases, desc="bench", unit="case")])
    table = bench_table(rows)
    data = "random images (timing does not depend on content)"
    budget = (
        f"median of {options.repeats} timed steps after {options.warmup} warm-up steps (compilation happens in the "
        "warm-up), AdamW (fused), bf16 autocast on CUDA"
    )
    notes = "\n".join(f"- **{name}**: {VARIANT_NOTES[name]}" for name in VARIANT_NOTES)
    body = (
        "Time and peak memory of one training step (mode train) or one prediction (mode infer). An EBT training "
        "step runs K descent steps with a second-order graph and backpropagates through them; an EBT prediction runs "
        "K descent steps with first-order gradients; the plain transformer of the same size predicts the clean image "
        "in one forward pass. `x plain`: relative to the plain transformer of the same setting and mode (the "
        "compiled one for compiled rows). CPU memory: growth of the process's peak resident set during the steps "
        "(each row in a fresh process); CUDA memory: torch.cuda.max_memory_allocated.\n\nVariants:\n\n"
        f"{notes}\n\n{table}\n\n![time and memory relative to the plain transformer]({stem}.png)"
    )
    meta = make_meta("cpu", 0, data, budget)
    meta["device"] = ", ".join(describe_device(d) for d in options.resolved_devices())
    report = write_report(out, stem, meta, rows, body)
    bench_plot(rows, Path(out) / f"{stem}.png")
    return report, table
