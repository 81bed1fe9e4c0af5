"""The EBT vs DiT comparison: sigma conditioning, best-of-N, noise estimation, and the command end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from ebt_vision.core.inference import Thinking
from ebt_vision.experiments.image.compare.protocols import eval_images
from ebt_vision.image.inference import best_of_n, denoise
from ebt_vision.image.model import ImageEBT
from ebt_vision.image.noise import add_gaussian_noise, estimate_noise_sigma
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.tiling import TiledEnergy

from .conftest import noisy_batch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cond_cfg(tiny_cfg):
    return replace(tiny_cfg, model=replace(tiny_cfg.model, sigma_conditioning=True))


def test_sigma_conditioned_energy_depends_on_sigma_and_blind_models_refuse_it(tiny_cfg, cond_cfg):
    model = ImageEBT(cond_cfg.model)
    torch.nn.init.normal_(model.head.out.weight)  # zero-initialised heads give zero energy for every sigma
    for block in model.blocks:
        torch.nn.init.normal_(block.ada[1].weight, std=0.1)
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    e15, e50 = model(x, y, torch.tensor([15.0, 15.0])), model(x, y, torch.tensor([50.0, 50.0]))
    assert not torch.allclose(e15, e50)
    with pytest.raises(ValueError, match="pass sigma"):
        model(x, y)
    with pytest.raises(ValueError, match="blind"):
        ImageEBT(tiny_cfg.model)(x, y, torch.tensor([15.0, 15.0]))


def test_tiled_energy_passes_each_image_its_own_sigma(cond_cfg):
    model = ImageEBT(cond_cfg.model)
    torch.nn.init.normal_(model.head.out.weight)
    for block in model.blocks:
        torch.nn.init.normal_(block.ada[1].weight, std=0.1)
    x, y = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    sigma = torch.tensor([10.0, 60.0])
    tiled = TiledEnergy(model, 16, sigma=sigma)(x, y)  # one tile per image: must equal the model itself
    assert torch.allclose(tiled, model(x, y, sigma), atol=1e-5)


def test_conditioned_objective_trains_and_denoise_tells_it_a_sigma(cond_cfg):
    """Told a sigma, or used blind: then told the one ``estimate_noise_sigma`` reads off each noisy image."""
    from ebt_vision.image.noise import estimate_noise_sigma

    objective = DenoisingObjective(cond_cfg)
    clean = torch.rand(4, 3, 16, 16) * 2 - 1
    out = objective(noisy_batch(clean, 25.0))
    out.loss.backward()
    assert objective.model.sigma_embed.linear.weight.grad is not None
    objective.eval()
    with torch.no_grad():  # trained-looking weights (a fresh adaLN ignores its condition), so that sigma matters
        for value in objective.parameters():
            value.copy_(0.2 * torch.randn(value.shape))
    noisy = noisy_batch(clean[:2], 20.0).noisy
    blind = denoise(objective, noisy, Thinking(2))[0].final
    told = denoise(objective, noisy, Thinking(2), sigma=estimate_noise_sigma(noisy))[0].final
    assert torch.equal(blind, told)
    assert not torch.allclose(blind, denoise(objective, noisy, Thinking(2), sigma=45.0)[0].final)
    with pytest.raises(ValueError, match="sigma"):
        denoise(objective, clean[:2], sigma=torch.tensor([1.0, 2.0, 3.0]))
    trajectory, _ = denoise(objective, clean[:2], Thinking(2), sigma=torch.tensor([10.0, 30.0]))
    assert trajectory.final.shape == (2, 3, 16, 16)


def test_best_of_n_keeps_the_lowest_energy_and_n1_is_plain_descent(tiny_cfg):
    objective = DenoisingObjective(tiny_cfg).eval()
    torch.nn.init.normal_(objective.model.head.out.weight)
    noisy = torch.rand(3, 3, 16, 16) * 2 - 1
    found = best_of_n(objective, noisy, Thinking(2, n_candidates=4, start_noise=20.0))
    best, energies, trajectory = found.best, found.final_energies, found.trajectory
    assert energies.shape == (4, 3) and best.shape == noisy.shape
    finals = trajectory.final.reshape(4, 3, 3, 16, 16)
    for i in range(3):
        assert torch.equal(best[i], finals[energies[:, i].argmin(), i])
    single = best_of_n(objective, noisy, Thinking(2, n_candidates=1)).best
    plain, _ = denoise(objective, noisy, Thinking(2))
    assert torch.allclose(single, plain.final, atol=1e-6)
    with pytest.raises(ValueError, match="best-of-N"):
        best_of_n(objective, noisy, Thinking(n_candidates=0))


def test_noise_estimate_is_close_on_real_photos():
    _, clean = eval_images("test", 64, limit=3)
    noisy = add_gaussian_noise(clean, 25.0, torch.Generator().manual_seed(0))
    estimated = estimate_noise_sigma(noisy)
    assert estimated.shape == (3,) and ((estimated - 25.0).abs() < 5.0).all()


def test_eval_images_are_square_held_out_crops():
    names, images = eval_images("test", 48, limit=2)
    assert names == ["skimage:astronaut", "skimage:coffee"] and images.shape == (2, 3, 48, 48)
    assert images.min() >= -1 and images.max() <= 1
    validation, _ = eval_images("validation", 48)
    assert validation and not set(validation) & set(eval_images("test", 48)[0])


def test_selection_chooses_on_validation_and_reports_test():
    """Validation prefers 2 steps, the test split would prefer 1: the report must quote 2 steps' test PSNR."""
    from ebt_vision.experiments.image.compare.report import average, choose

    def row(split, steps, psnr, image="a"):
        return {"eval_split": split, "noise": "gaussian", "sigma": 25, "setting": "blind", "split": "id",
                "method": "ebt", "steps": steps, "image": image, "psnr": psnr, "ssim": 0.5, "forward_passes": steps,
                "backward_passes": steps, "dit_forward_equivalents": 2.0 * steps}  # fmt: skip

    rows = [row("validation", 1, 20.0), row("validation", 2, 22.0), row("test", 1, 30.0), row("test", 2, 25.0)]
    rows += [row("validation", 2, 24.0, image="b")]  # averaged with image a: 23.0
    chosen = choose(average(rows))
    (picked,) = chosen.values()
    assert picked["steps"] == 2 and picked["psnr"] == 25.0 and picked["validation_psnr"] == 23.0
    assert picked["chosen"] == "ebt@2"
    cheap = choose(average(rows), {"ebt"}, within=lambda r: r["dit_forward_equivalents"] <= 2.0)
    assert next(iter(cheap.values()))["steps"] == 1


TINY_YAML = (
    "name: tiny\nmodel: {patch_size: 4, width: 16, depth: 1, heads: 2}\ndescent: {num_steps: 2, step_size: 5.0}\n"
    "data: {crop_size: 16, batch_size: 4}\noptim: {lr: 1e-3, warmup_steps: 2}\n"
    "train: {steps: 3, log_every: 1, checkpoint_every: 2}\n"
)
WARM_YAML = (  # the shipped recipe's EBT stage, tiny: residual energy read against the noisy image, from the trunk
    "name: tiny-warm\nmodel: {energy: residual, relative_to_noisy: true}\n"
    "descent: {num_steps: 3, min_steps: 1, step_size: 1.0, graph_steps: 2}\noptim: {lr: 1e-3, warmup_steps: 1}\n"
    "train: {steps: 1, checkpoint_every: 1, ema_decay: 0.999}\n"
)
COMPARE_ARGS = ["--eval-size", "32", "--limit", "2", "--sigmas", "25", "75", "--ebt-steps", "3",
                "--dit-steps", "1", "2", "0", "--best-of", "2", "--quiet"]  # fmt: skip


def test_compare_command_end_to_end_on_a_tiny_config(tmp_path):
    config, warm = tmp_path / "tiny.yaml", tmp_path / "warm.yaml"
    config.write_text(TINY_YAML)
    warm.write_text(WARM_YAML)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    runs, out = tmp_path / "runs", tmp_path / "out"
    cmd = [sys.executable, "-m", "ebt_vision", "compare", "--config", str(config), "--runs", str(runs)]
    done = subprocess.run([*cmd, "--out", str(out), "--warm-config", str(warm), *COMPARE_ARGS], capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in ("ebt", "ebt-cond", "dit", "dit-compute", "ebt-warm-trunk", "ebt-warm"):
        assert (runs / name / "model.safetensors").is_file()
    # the warm EBT: its trunk a plain denoiser for what its one EBT step leaves of the blind EBT's training FLOPs
    from ebt_vision.experiments.image.compare.contenders import load_contenders

    trained = load_contenders(runs)
    ebt_warm, trunk = trained["ebt-warm"], trained["ebt-warm"].prior
    assert type(trunk.objective).__name__ == "PlainDenoisingObjective" and trunk.steps > 3 and ebt_warm.steps == 1
    assert ebt_warm.objective.cfg.train.init_from == str(runs / "ebt-warm-trunk")
    assert abs(ebt_warm.train_flops - trained["ebt"].train_flops) <= trunk.step_flops / 2 + 1
    assert ebt_warm.steps_label == f"{trunk.steps} + 1" and "| ebt-warm |" in (out / "denoise_compare.md").read_text()
    compute_steps = yaml.safe_load((runs / "dit-compute" / "config.yaml").read_text())["train"]["steps"]
    assert compute_steps > 3  # the DiT step is cheaper than the EBT's: more steps for the same FLOPs
    report = json.loads((out / "denoise_compare.json").read_text())
    text = (out / "denoise_compare.md").read_text()
    assert (out / "denoise_compare.png").stat().st_size > 10_000 and "Goal check" in text and "compute-matched" in text
    rows = report["per_image"]
    methods = {r["method"] for r in rows}
    assert {"noisy", "cbm3d", "dit_ddim", "dit_compute_ddim", "ebt", "ebt_stop", "ebt_cond", "ebt_cond_stop",
            "ebt_best_of_n", "ebt_warm", "ebt_warm_stop", "ebt_warm_x2", "ebt_warm_x3"} <= methods  # fmt: skip
    assert {r["eval_split"] for r in rows} == {"validation", "test"}
    assert not {r["image"] for r in rows if r["eval_split"] == "validation"} & {
        r["image"] for r in rows if r["eval_split"] == "test"
    }
    assert {r["noise"] for r in rows} == {"gaussian", "diffusion"}
    assert {r["setting"] for r in rows} >= {"blind", "non-blind", "known level"}
    all_steps = [r for r in rows if r["method"] == "dit_ddim" and r["steps"] == 0 and r["setting"] == "non-blind"]
    assert {r["forward_passes"] for r in all_steps if r["sigma"] == 25} == {57}  # t = 56 -> 57 DDIM steps
    ebt3 = [r for r in rows if r["method"] == "ebt" and r["steps"] == 3]
    assert all(r["forward_passes"] == 3 and r["backward_passes"] == 3 for r in ebt3)
    assert len(report["verdicts"]) == 4 and all(c["eval_split"] == "test" for c in report["chosen"])
    # --load evaluates the finished runs without training them again
    weights = runs / "ebt" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = subprocess.run([*cmd, "--load", "--out", str(tmp_path / "again"), "--no-paper", "--no-bm3d", *COMPARE_ARGS],
                           capture_output=True, text=True, env=env)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (
        weights.stat().st_mtime_ns == before
        and "EBT-warm (chosen)" in (tmp_path / "again" / "denoise_compare.md").read_text()
    )
    # a changed setting never silently reuses the runs trained with the old one
    changed = subprocess.run([*cmd, "--set", "optim.lr=0.5", "--out", str(tmp_path / "x"), *COMPARE_ARGS],
                             capture_output=True, text=True, env=env)  # fmt: skip
    assert changed.returncode == 2 and "optim.lr" in changed.stderr and str(runs / "ebt") in changed.stderr


def test_ablation_variants_train_on_the_same_crops_and_report(tmp_path, tiny_cfg):
    from ebt_vision.core.reports import make_meta
    from ebt_vision.experiments.image.ablation import VARIANTS, AblationOptions, run_ablation, variant_config
    from ebt_vision.experiments.image.ablation_report import write_ablation_report

    cfg = variant_config(tiny_cfg, "loss-last", VARIANTS["loss-last"][0])
    assert cfg.train.loss_on_steps == "last" and cfg.name == "tiny-loss-last" and cfg.model == tiny_cfg.model
    assert variant_config(tiny_cfg, "long", VARIANTS["long"][0]).descent.graph_steps == 1
    with pytest.raises(ValueError, match="unknown ablation variant"):
        run_ablation(tiny_cfg, ["nope"], tmp_path)
    options = AblationOptions(sigmas=(25.0, 75.0), eval_size=32, max_steps=3, dit_steps=(1, 2), limit=1, best_of=2)
    result = run_ablation(tiny_cfg, ["base", "long+stationarity+rank"], tmp_path / "runs", options, progress=False)
    assert set(result.seconds) == {"base", "long+stationarity+rank", "dit"}
    ebt_rows = [r for r in result.rows if r["method"] == "ebt"]
    assert len(ebt_rows) == 2 * 2 * 2 * 4 and all(r["psnr"] > 5 for r in ebt_rows)  # splits x variants x sigmas x k
    assert {r["eval_split"] for r in result.rows} == {"validation", "test"}
    stops = [r for r in result.rows if r["method"] == "ebt_stop"]
    assert all(0 <= r["mean_steps_taken"] <= 3 for r in stops)
    report = write_ablation_report(result, tiny_cfg, (25.0, 75.0), make_meta("cpu", 0, "tiny", "tiny"), tmp_path / "o")
    text = report.read_text()
    assert (
        "long+stationarity+rank" in text
        and "Does thinking pay?" in text
        and (tmp_path / "o" / "ablation.png").is_file()
    )
    checks = json.loads((tmp_path / "o" / "ablation.json").read_text())["checks"]["base"]
    assert set(checks) >= {"id_flat", "ood_gains", "stop_close", "best_of_wins"}


def test_a_warm_stage_dearer_than_the_budget_is_a_clear_error(tmp_path):
    from ebt_vision.core.config import ConfigError, load_config
    from ebt_vision.experiments.image.compare.contenders import step_flops_of, warm_configs

    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    (tmp_path / "warm.yaml").write_text(WARM_YAML)
    cfg, warm = load_config(tmp_path / "tiny.yaml"), load_config(tmp_path / "warm.yaml")
    trunk, stage = warm_configs(cfg, warm, tmp_path, budget_flops=10 * step_flops_of("ebt", cfg))
    assert stage.model.width == cfg.model.width and stage.model.relative_to_noisy and stage.data == cfg.data
    assert trunk.train.steps > 10 and not trunk.model.sigma_conditioning  # a trunk step is cheaper than an EBT step
    with pytest.raises(ConfigError, match="costs more than the blind EBT's training FLOPs"):
        warm_configs(cfg, warm, tmp_path, budget_flops=1.0)
