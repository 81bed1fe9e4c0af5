"""The original work's denoising protocol: its noise, the context-free EBT, the DiT's pass counts, the report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from ebt_vision.core.config import ConfigError, from_dict, with_overrides
from ebt_vision.experiments.image import paper, paper_report
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.model import ImageEBT
from ebt_vision.image.objective import DenoisingObjective

from .conftest import TINY


def paper_cfg(**data):
    return from_dict({**TINY, "data": {**TINY["data"], "noise": "diffusion", "level_min": 0.1, "level_max": 0.1,
                                        **data}})  # fmt: skip


@pytest.mark.parametrize(("level", "signal", "noise"), [(0.1, 0.947, 0.321), (0.2, 0.812, 0.584)])
def test_protocol_noise_matches_the_closed_form(level, signal, noise):
    clean = torch.rand(2, 3, 8, 8) * 2 - 1
    x_t = paper.paper_noise(clean, level, torch.Generator().manual_seed(3))
    eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    a = ((x_t - noise * eps) * clean).sum() / (clean * clean).sum()  # least-squares signal coefficient
    assert float(a) == pytest.approx(signal, abs=1e-3)
    assert torch.allclose(x_t, signal * clean + noise * eps, atol=2e-3)


def test_the_context_free_energy_ignores_the_noisy_image():
    cfg = paper_cfg()
    models = {ctx: ImageEBT(replace(cfg.model, noisy_context=ctx)) for ctx in (False, True)}
    candidate, first, second = (torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(3))
    energies = {}
    for ctx, model in models.items():
        torch.nn.init.normal_(model.head.out.weight)  # the head starts at zero: make the energy non-trivial
        for block in model.blocks:
            torch.nn.init.normal_(block.ada[1].weight, std=0.02)
        energies[ctx] = (model(first, candidate), model(second, candidate))
    assert torch.equal(*energies[False])
    assert not torch.allclose(*energies[True])  # the context variant does read it (so the check can fail)
    assert models[False].embed.in_features * 2 == models[True].embed.in_features


def test_models_train_at_one_level_and_the_dit_on_t_below_100(tmp_path):
    configs = paper.model_configs(paper_cfg())
    assert set(configs) == {"ebt-1", "ebt-23", "ebt-eq", "ebt-ctx-1", "ebt-ctx-23", "ebt-ctx-eq", "dit"}
    assert [c.model.noisy_context for c in configs.values()] == [False] * 3 + [True] * 4
    assert configs["ebt-1"].descent.num_steps == 1 and configs["ebt-23"].descent.min_steps == 2
    for name in ("ebt-eq", "ebt-ctx-eq"):  # the landscape recipe; the original's keep the linear head and unrolling
        assert (configs[name].model.energy, configs[name].train.objective) == ("residual", "equilibrium")
    assert (configs["ebt-23"].model.energy, configs["ebt-23"].train.objective) == ("linear", "unrolled")
    assert {c.train.ema_decay for c in configs.values()} == {0.0}  # no model averages its weights
    assert DiTObjective(configs["dit"]).max_timestep == 99
    objective = DenoisingObjective(configs["ebt-1"])
    batch_noise = paper.paper_noise(torch.zeros(1, 3, 16, 16), 0.1, torch.Generator().manual_seed(0))
    assert batch_noise.std() == pytest.approx(0.321, rel=0.2) and objective.cfg.data.level_max == 0.1
    trunk, stage = paper.warm_configs(with_overrides(paper_cfg(), ["train.steps=1500"]), tmp_path)
    assert (trunk.train.steps, stage.train.steps) == (1350, 150)  # the shipped denoiser's 10:1 split
    assert stage.model.relative_to_noisy and stage.train.init_from == str(tmp_path / "ebt-ctx-warm-trunk")
    assert stage.optim.lr == trunk.optim.lr / 2 and stage.descent.num_steps == 8
    with pytest.raises(ConfigError, match="one diffusion level"):
        paper.model_configs(paper_cfg(level_min=0.0))
    with pytest.raises(ConfigError, match="diffusion"):
        paper.model_configs(with_overrides(paper_cfg(), ["data.noise=gaussian"]))


@pytest.mark.parametrize(("level", "expected"), [(0.1, [1, 2, 5, 100, 300]), (0.2, [1, 2, 5, 200, 600])])
def test_dit_pass_counts_per_setting(level, expected):
    dit = DiTObjective(paper_cfg()).eval()
    x_t = paper.paper_noise(torch.rand(1, 3, 16, 16) * 2 - 1, level)
    counts = [paper.dit_passes(dit, x_t, level, k)[1] for k in (1, 2, 5, 0)]
    counts.append(paper.dit_passes(dit, x_t, level, 0, reruns=3)[1])
    assert counts == expected  # min(k, t + 1) passes, all t + 1 for 0, and three times that for the re-runs


def test_the_protocol_end_to_end_chooses_on_validation(tmp_path):
    cfg = with_overrides(paper_cfg(), ["train.steps=2", "train.log_every=1"])
    models = paper.train_models(cfg, tmp_path / "runs", progress=False)
    rows = []
    for split in ("validation", "test"):
        options = paper.PaperOptions(eval_size=16, ebt_steps=2, dit_passes=(1, 0), reruns=2, limit=1)
        rows += paper.evaluate(models, split, options, progress=False)
    report = paper_report.write_paper_report(rows, models, {"machine": "test"}, tmp_path, "paper")
    data = json.loads((tmp_path / "paper.json").read_text())
    assert report.exists() and (tmp_path / "paper.png").exists()
    ebts = {f"ebt_{c}{r}" for c in ("", "ctx_") for r in ("1", "23", "eq")} | {"ebt_ctx_warm"}
    assert {r["method"] for r in data["rows"]} == {"noisy", "dit", "dit_x2", "dit_compute", "dit_compute_x2"} | ebts
    ratio = models["ebt-1"]["step_flops"] / models["dit"]["step_flops"]
    assert models["dit-compute"]["steps"] == round(2 * ratio) > 2  # the EBT's training FLOPs in more DiT steps
    for key, choice in data["chosen"].items():  # each choice is its family's best on validation
        level, family = key.split("/")
        scores = [r["psnr"] for r in data["averaged"] if r["eval_split"] == "validation"
                  and r["noise_level"] == float(level)
                  and paper_report.family_of(r["method"]) == family]  # fmt: skip
        assert len(scores) >= 2 and choice["validation_psnr"] == max(scores)
    assert models["ebt-ctx-warm"]["steps"] == 2  # both stages: the trunk's step and the EBT's
    assert (tmp_path / "runs" / "ebt-ctx-warm-trunk" / "model.safetensors").exists()
    assert len(data["verdicts"]) == 14 and "original work" in report.read_text().lower()
    assert all("dit_compute_psnr" in v for v in data["verdicts"])
