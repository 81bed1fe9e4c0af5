"""scripts/dit-crop-steps.py: the DiT scored on the step schedule's calibration crops and noise, per DDIM step count
and view count, so its setting for a view count is chosen on the data the EBT's schedule is."""

from __future__ import annotations

import json

import pytest
import torch

from ebt_vision.core.checkpoint import save_pretrained_folder
from ebt_vision.core.metrics import psnr
from ebt_vision.image.data import held_out_photos
from ebt_vision.image.dit import DiTObjective, dit_denoise
from ebt_vision.image.noise import estimate_noise_sigma
from ebt_vision.image.schedule import full_resolution_crops, noisy_crops

from .conftest import load_script


def test_each_row_is_the_dit_on_the_calibration_crops_at_its_steps_and_views(tmp_path, tiny_cfg):
    torch.manual_seed(0)
    dit = DiTObjective(tiny_cfg).eval()
    for parameter in dit.parameters():  # a DiT whose predictions differ by view and step count
        torch.nn.init.normal_(parameter, std=0.05)
    save_pretrained_folder(dit, tiny_cfg, tmp_path / "dit")
    out = tmp_path / "reports"
    args = ["--dit-checkpoint", str(tmp_path / "dit"), "--sigmas", "25", "--dit-steps", "1", "2", "--views", "1", "2",
            "--crop", "32", "--per-photo", "1", "--out", str(out), "--stem", "crops"]  # fmt: skip
    assert load_script("dit-crop-steps.py").main(args) == 0
    report = json.loads((out / "crops.json").read_text())
    rows = {(r["views"], r["dit_steps"]): r["psnr"] for r in report["rows"]}
    assert set(rows) == {(1, 1), (1, 2), (2, 1), (2, 2)} and len(set(rows.values())) == 4
    crops = full_resolution_crops(held_out_photos(None, "validation"), 32, 1)
    noisy = noisy_crops(crops, 25.0)
    by_hand, _ = dit_denoise(dit, noisy, estimate_noise_sigma(noisy), 2, views=2)
    assert rows[(2, 2)] == pytest.approx(float(psnr(by_hand.clamp(-1, 1), torch.stack(crops)).mean()), abs=1e-4)
    assert (out / "crops.png").stat().st_size > 0 and "| 25 | 2 |" in (out / "crops.md").read_text()
