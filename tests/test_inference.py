"""Denoising a photo with a checkpoint: bad input, and the evaluation report on real held-out photos."""

from __future__ import annotations

import json

import pytest
import torch

from ebt_vision.data import held_out_photos
from ebt_vision.evaluation import average_rows, evaluate_denoiser, write_denoise_report
from ebt_vision.inference import denoise
from ebt_vision.objectives import DenoisingObjective
from ebt_vision.reports import make_meta


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
        denoise(objective, torch.zeros(1, 3, 32, 32), **kwargs)


def test_evaluation_rows_and_report(tmp_path, objective):
    pytest.importorskip("bm3d", reason="bm3d (a dependency) is the classical baseline")
    photos = held_out_photos(max_side=40)[:2]
    rows = evaluate_denoiser(objective, photos, sigmas=(25, 75), num_steps=2, progress=False)
    assert len(rows) == 2 * 2 * (2 + 2)  # images x sigmas x (noisy, cbm3d, 2 EBT steps)
    ebt = [r for r in rows if r["method"] == "ebt"]
    assert [r["forward_passes"] for r in ebt[:2]] == [1, 2] and [r["backward_passes"] for r in ebt[:2]] == [1, 2]
    assert {r["split"] for r in rows if r["sigma"] == 75} == {"ood"}
    cbm3d = [r for r in rows if r["method"] == "cbm3d"]
    noisy = [r for r in rows if r["method"] == "noisy"]
    assert all(c["psnr"] > n["psnr"] + 3 for c, n in zip(cbm3d, noisy, strict=True))  # CBM3D really denoises
    averaged = average_rows(rows)
    assert len(averaged) == 2 * 4 and all(r["images"] == 2 for r in averaged)
    md = write_denoise_report(rows, make_meta("cpu", 0, "test", "none", command="pytest"), tmp_path)
    report = json.loads((tmp_path / "denoise_eval.json").read_text())
    assert set(report) == {"meta", "rows", "per_image"} and report["meta"]["command"] == "pytest"
    assert "| 75 | ood |" in md.read_text() and (tmp_path / "denoise_eval.png").stat().st_size > 0
