"""Denoising a photo with a checkpoint: bad input, and the evaluation report on real held-out photos."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from ebt_vision.core.descent import STEP_STOP_TOLERANCES
from ebt_vision.core.inference import Thinking
from ebt_vision.core.reports import make_meta
from ebt_vision.experiments.image.evaluation import STOP_FRACTIONS, EvalOptions, evaluate_denoiser
from ebt_vision.experiments.image.evaluation_report import average_rows, write_denoise_report
from ebt_vision.image.data import held_out_photos
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.inference import denoise
from ebt_vision.image.objective import DenoisingObjective


@pytest.fixture
def objective(tiny_cfg) -> DenoisingObjective:
    return DenoisingObjective(tiny_cfg).eval()


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.full((1, 3, 32, 32), float("nan")), "NaN"),
        (torch.zeros(3, 32, 32), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 4, 32, 32), r"\(B, 3, H, W\)"),
        (torch.zeros(1, 3, 2, 32), "smaller than one"),
    ],
)
def test_bad_images_give_clear_errors(objective, image, message):
    with pytest.raises(ValueError, match=message):
        denoise(objective, image)


@pytest.mark.parametrize("kwargs, message", [({"num_steps": 1000}, "num_steps"), ({"step_scale": 0.0}, "step_scale")])
def test_out_of_range_settings_give_clear_errors(objective, kwargs, message):
    with pytest.raises(ValueError, match=message):
        denoise(objective, torch.zeros(1, 3, 32, 32), Thinking(**kwargs))


def test_evaluation_rows_and_report(tmp_path, objective):
    pytest.importorskip("bm3d", reason="bm3d (a dependency) is the classical baseline")
    photos = held_out_photos(max_side=40)[:2]
    rows = evaluate_denoiser(objective, photos, EvalOptions(sigmas=(25, 75), steps=2, progress=False))
    # images x sigmas x (noisy, cbm3d, 2 EBT steps, EBT with stopping, stopping with each relative tolerance, the
    # gradient stop at each tolerance)
    variants = 1 + len(STOP_FRACTIONS) + len(STEP_STOP_TOLERANCES)
    assert len(rows) == 2 * 2 * (2 + 2 + variants)
    stopped = [r for r in rows if r["method"].startswith("ebt_stop")]
    assert all(0 <= r["steps_taken"] <= 2 for r in stopped)
    ebt = [r for r in rows if r["method"] == "ebt"]
    assert [r["forward_passes"] for r in ebt[:2]] == [1, 2] and [r["backward_passes"] for r in ebt[:2]] == [1, 2]
    assert {r["split"] for r in rows if r["sigma"] == 75} == {"ood"}
    cbm3d = [r for r in rows if r["method"] == "cbm3d"]
    noisy = [r for r in rows if r["method"] == "noisy"]
    assert all(c["psnr"] > n["psnr"] + 3 for c, n in zip(cbm3d, noisy, strict=True))  # CBM3D really denoises
    averaged = average_rows(rows)
    assert len(averaged) == 2 * (4 + variants) and all(r["images"] == 2 for r in averaged)
    dit = DiTObjective(objective.cfg).eval()
    quick = EvalOptions(sigmas=(25, 75), steps=2, with_bm3d=False, dit_steps=(1, 2), progress=False)
    validation = evaluate_denoiser(objective, held_out_photos(40, "validation")[:1], quick, "validation", dit)
    relative = {f"ebt_stop_rel@{f:g}" for f in STOP_FRACTIONS}
    gradient = {f"ebt_stop_grad@{t:g}" for t in STEP_STOP_TOLERANCES}
    assert {r["method"] for r in validation} == {"noisy", "ebt", "ebt_stop", "dit_ddim"} | relative | gradient
    rows += validation + evaluate_denoiser(objective, photos[:1], quick, dit=dit)
    # tiles a quarter apart (eval --tile-overlap 4) for the EBT and the DiT alike: the same rows, other figures
    moved = DenoisingObjective(objective.cfg).eval()
    with torch.no_grad():  # a fresh EBT's energy is flat: give it a landscape that tiling changes
        for value in moved.parameters():
            value.add_(0.05 * torch.randn(value.shape, generator=torch.Generator().manual_seed(value.numel())))
    default, finer = (evaluate_denoiser(moved, photos[:1], replace(quick, tile_overlap=k), dit=dit) for k in (2, 4))
    mirrored = evaluate_denoiser(moved, photos[:1], replace(quick, views=2), dit=dit)  # eval --views 2
    for other in (finer, mirrored):
        assert [(r["method"], r["steps"]) for r in other] == [(r["method"], r["steps"]) for r in default]
        for method in ("ebt", "dit_ddim"):
            assert {r["psnr"] for r in other if r["method"] == method}.isdisjoint(
                r["psnr"] for r in default if r["method"] == method
            )
    md = write_denoise_report(rows, make_meta("cpu", 0, "test", "none", command="pytest"), tmp_path)
    assert "EBT (chosen k)" in md.read_text() and "DiT (chosen DDIM steps)" in md.read_text()
    assert "EBT stop, chosen tolerance" in md.read_text() and "EBT gradient stop, chosen tolerance" in md.read_text()
    report = json.loads((tmp_path / "denoise_eval.json").read_text())
    assert set(report) == {"meta", "rows", "per_image"} and report["meta"]["command"] == "pytest"
    assert "| 75 | ood |" in md.read_text() and (tmp_path / "denoise_eval.png").stat().st_size > 0
    # the validation photos alone (eval --split validation, where a setting is chosen): reported, not a crash
    md = write_denoise_report(validation, make_meta("cpu", 0, "validation", "none"), tmp_path, "validation_only")
    text = md.read_text()
    assert "held-out **validation** photos" in text and "| 75 | ood |" in text and "DiT 2 DDIM steps" in text
    assert (tmp_path / "validation_only.png").stat().st_size > 0


def test_the_gradient_stop_uses_one_tolerance_for_every_sigma():
    """A blind model cannot pick its stopping tolerance by the noise level: the report's tolerance is the one with the
    best validation PSNR averaged over the sigmas, even where another wins at one sigma; its test rows are quoted."""
    from ebt_vision.experiments.image.evaluation_report import _chosen_for_every_sigma

    validation = {(15, "a"): 30.0, (15, "b"): 31.0, (50, "a"): 26.0, (50, "b"): 24.0}  # a: 28.0 on average, b: 27.5
    rows = [{"eval_split": "validation", "method": f"ebt_stop_grad@{t}", "sigma": sigma, "psnr": psnr}
            for (sigma, t), psnr in validation.items()]  # fmt: skip
    rows += [{"eval_split": "test", "method": f"ebt_stop_grad@{t}", "sigma": sigma, "psnr": 20.0 + sigma / 10}
             for sigma in (15, 50) for t in "ab"]  # fmt: skip
    for sigma in (15, 50):
        chosen = _chosen_for_every_sigma(rows, "ebt_stop_grad@", sigma)
        assert chosen["method"] == "ebt_stop_grad@a" and chosen["sigma"] == sigma and chosen["eval_split"] == "test"
    assert _chosen_for_every_sigma([r for r in rows if r["eval_split"] == "test"], "ebt_stop_grad@", 15) is None


def test_the_plain_transformer_trains_and_joins_the_evaluation(tmp_path, tiny_cfg):
    """The EBT's trunk predicting the clean photo directly: trained by the one loop (``--model transformer``), tiled
    like the EBT on big photos, one row per photo and sigma, and a column of the report."""
    from ebt_vision.core.checkpoint import load_trained
    from ebt_vision.core.config import with_overrides
    from ebt_vision.image.plain import PlainDenoisingObjective, plain_denoise
    from ebt_vision.image.training import train_model

    cfg = with_overrides(tiny_cfg, ["train.steps=2", "train.checkpoint_every=2"])
    train_model(cfg, tmp_path / "transformer", "transformer", progress=False)
    plain, extra = load_trained(tmp_path / "transformer", PlainDenoisingObjective, "a plain transformer", "cpu")
    assert extra["step"] == 2
    crop = torch.rand(1, 3, 16, 16) * 2 - 1  # the training crop size: one tile, the model's own output
    with torch.no_grad():
        torch.testing.assert_close(plain_denoise(plain, crop), plain.model(crop).clamp(-1, 1))
    assert plain_denoise(plain, torch.rand(2, 3, 40, 56) * 2 - 1).shape == (2, 3, 40, 56)
    objective = DenoisingObjective(tiny_cfg).eval()
    options = EvalOptions(sigmas=(25,), steps=1, with_bm3d=False, progress=False)
    rows = []
    for split in ("validation", "test"):
        photos = held_out_photos(40, split)[:1]
        rows += evaluate_denoiser(objective, photos, options, split, transformer=plain)
    mine = [r for r in rows if r["method"] == "transformer"]
    assert len(mine) == 2 and all((r["forward_passes"], r["backward_passes"]) == (1, 0) for r in mine)
    text = write_denoise_report(rows, make_meta("cpu", 0, "test", "none"), tmp_path).read_text()
    test_row = next(r for r in mine if r["eval_split"] == "test")
    assert "transformer (the EBT's trunk, direct)" in text and f"{test_row['psnr']:.2f} / " in text


def test_diffusion_trained_models_get_their_own_input_and_split_labels(tiny_cfg):
    """Level 0.1 (t 99) has the signal-to-noise ratio of sigma ~43: sigma 25 is in distribution, 50 is not; the model
    sees the noisy photo scaled to the diffusion convention, sqrt(a) (x0 + u eps) with a = 1 / (1 + u^2)."""
    from dataclasses import replace

    from ebt_vision.image.noise import as_model_input, level_to_sigma, training_sigma_max

    cfg = replace(tiny_cfg, data=replace(tiny_cfg.data, noise="diffusion", level_min=0.0, level_max=0.1))
    assert training_sigma_max(cfg.data) == pytest.approx(level_to_sigma(0.1)) and 42 < level_to_sigma(0.1) < 44
    options = EvalOptions(sigmas=(25, 50), steps=1, with_bm3d=False, progress=False)
    rows = evaluate_denoiser(DenoisingObjective(cfg).eval(), held_out_photos(max_side=32)[:1], options)
    assert {r["sigma"]: r["split"] for r in rows} == {25: "id", 50: "ood"}
    noisy = torch.randn(1, 3, 8, 8)
    unit = 50 * 2 / 255
    torch.testing.assert_close(as_model_input(noisy, 50.0, "diffusion"), noisy / (1 + unit**2) ** 0.5)
    assert torch.equal(as_model_input(noisy, 50.0, "gaussian"), noisy)


def test_adaptive_report_compares_at_equal_patch_steps(tmp_path, objective):
    from ebt_vision.experiments.image.adaptive import AdaptiveOptions, run_adaptive, summarise, write_adaptive_report

    torch.nn.init.normal_(objective.model.head.out.weight)  # a non-trivial energy
    options = AdaptiveOptions(sigmas=(25.0,), max_steps=3, max_side=32, fractions=(0.0, 5.0), limit=1)
    rows = run_adaptive(objective, options, progress=False)
    uniform = [r for r in rows if r["method"] == "uniform"]
    assert [r["steps_per_patch"] for r in uniform if r["eval_split"] == "test"] == [0.0, 1.0, 2.0, 3.0]
    adaptive = {r["tolerance_fraction"]: r for r in rows if r["method"] == "adaptive" and r["eval_split"] == "test"}
    assert adaptive[5.0]["steps_per_patch"] <= adaptive[0.0]["steps_per_patch"] <= 3.0  # a looser stop, fewer steps
    for row in summarise(rows):
        assert row["gain_db"] == pytest.approx(row["psnr_adaptive"] - row["psnr_uniform_same_steps"])
    report = write_adaptive_report(rows, make_meta("cpu", 0, "test", "test"), tmp_path)
    assert report.exists() and (tmp_path / "adaptive.png").exists() and "gain" in report.read_text()


def test_a_sigma_conditioned_ebt_is_told_the_estimated_noise_level_never_the_true_one(tiny_cfg):
    """A conditioned EBT in the blind evaluation gets what the DiT and the step schedule get: the sigma
    ``estimate_noise_sigma`` reads off the noisy photo."""
    from dataclasses import replace

    from ebt_vision.core.metrics import psnr
    from ebt_vision.experiments.selection import SPLIT_SEED_OFFSET
    from ebt_vision.image.inference import crop_to_patches
    from ebt_vision.image.noise import estimate_noise_sigma, noisy_copy

    torch.manual_seed(0)
    cfg = replace(tiny_cfg, model=replace(tiny_cfg.model, sigma_conditioning=True))
    conditioned = DenoisingObjective(cfg).eval()
    with torch.no_grad():  # trained-looking weights (a fresh adaLN ignores its condition), so that sigma matters
        for value in conditioned.parameters():
            value.copy_(0.2 * torch.randn(value.shape))
    photo = held_out_photos(max_side=32)[0]
    rows = evaluate_denoiser(conditioned, [photo], EvalOptions(sigmas=(25,), steps=1, with_bm3d=False, progress=False))
    row = next(r for r in rows if r["method"] == "ebt" and r["steps"] == 1)
    clean = crop_to_patches(photo.image[None], cfg.model.patch_size)[0]
    noisy = noisy_copy(clean, 25, EvalOptions().seed, SPLIT_SEED_OFFSET["test"])[None]
    estimated = float(estimate_noise_sigma(noisy)[0])
    assert abs(estimated - 25) > 0.5  # the estimate differs from the truth, so the check below can tell them apart
    told = {s: float(psnr(denoise(conditioned, noisy, Thinking(1), s)[0].final.clamp(-1, 1), clean[None]))
            for s in (estimated, 25.0)}  # fmt: skip
    assert abs(told[estimated] - told[25.0]) > 1e-3
    assert row["psnr"] == pytest.approx(told[estimated], abs=1e-4)
