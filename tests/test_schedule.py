"""Noise-level adaptation: the step schedule (fit, lookup, save/load), its use in eval and denoise, and energy-based
stopping read off a plain descent."""

from __future__ import annotations

import json

import pytest
import torch

from ebt_vision.core.descent import minimize_energy
from ebt_vision.core.inference import Thinking
from ebt_vision.core.reports import make_meta
from ebt_vision.experiments.image.evaluation import EvalOptions, energy_stop_step, evaluate_denoiser
from ebt_vision.experiments.image.evaluation_report import write_denoise_report
from ebt_vision.image.data import held_out_photos
from ebt_vision.image.inference import denoise
from ebt_vision.image.noise import add_gaussian_noise
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.schedule import (
    SCHEDULE_FILE,
    StepSchedule,
    denoise_scheduled,
    fit_schedule,
    full_resolution_crops,
    noisy_crops,
)


@pytest.fixture
def objective(tiny_cfg) -> DenoisingObjective:
    return DenoisingObjective(tiny_cfg).eval()


def _schedule() -> StepSchedule:
    return StepSchedule(estimated=[10.0, 40.0, 90.0], steps=[1, 2, 5], scales=[0.5, 1.0, 1.5],
                        psnr=[30.0, 25.0, 20.0], calibration_sigmas=[10.0, 40.0, 90.0])  # fmt: skip


def test_lookup_takes_the_nearest_calibrated_level():
    schedule = _schedule()
    assert schedule.lookup(0.0) == (1, 0.5, 1) and schedule.lookup(24.0) == (1, 0.5, 1)  # saved without passes: 1
    assert schedule.lookup(30.0) == (2, 1.0, 1) and schedule.lookup(70.0) == (5, 1.5, 1)
    assert schedule.lookup(500) == (5, 1.5, 1)
    anchored = StepSchedule([10.0, 90.0], [1, 3], [0.75, 1.0], [30.0, 20.0], [10.0, 90.0], passes=[1, 2])
    assert anchored.lookup(80.0) == (3, 1.0, 2) and anchored.thinking(80.0).passes == 2
    assert anchored.describe() == "10->1x0.75, 90->3x1 (2 passes)"


def test_schedule_round_trips_and_bad_files_are_refused(tmp_path):
    assert StepSchedule.load(tmp_path) is None  # no schedule: callers fall back to the trained step count
    assert StepSchedule.load(tmp_path / "missing") is None
    _schedule().save(tmp_path)
    assert StepSchedule.load(tmp_path) == _schedule()
    assert StepSchedule.load(tmp_path / "model.safetensors") == _schedule()  # a weights file finds its neighbour
    (tmp_path / SCHEDULE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a step schedule"):
        StepSchedule.load(tmp_path)
    with pytest.raises(ValueError, match="ascending"):
        StepSchedule([40.0, 10.0], [1, 2], [1.0, 1.0], [0.0, 0.0], [40.0, 10.0])


def test_fit_schedule_picks_the_best_validation_choice(objective):
    crops = full_resolution_crops(held_out_photos(None, "validation")[:1], size=32, per_photo=2)
    assert len(crops) == 2 and crops[0].shape == (3, 32, 32)
    schedule, rows = fit_schedule(objective, crops, sigmas=(10.0, 60.0), max_steps=3, scales=(0.5, 1.0),
                                  progress=False, passes=2)  # fmt: skip
    single = [r for r in rows if r["passes"] == 1]
    assert len(single) == 2 * 2 * 3  # sigmas x scales x steps
    assert len(rows) - len(single) == 2 * 3  # sigmas x steps per pass (1-3), each after its second pass
    for i, sigma in enumerate(schedule.calibration_sigmas):
        best = max((r for r in rows if r["sigma"] == sigma), key=lambda r: r["psnr"])
        assert (schedule.steps[i], schedule.scales[i], schedule.passes[i]) == (best["steps"], best["scale"],
                                                                               best["passes"])  # fmt: skip
        assert schedule.psnr[i] == pytest.approx(best["psnr"], abs=1e-3)
    assert schedule.estimated == sorted(schedule.estimated)
    assert schedule.estimated[-1] > 30  # heavy noise is estimated as heavy
    with pytest.raises(ValueError, match="one size"):
        fit_schedule(objective, [crops[0], crops[0][:, :16]], progress=False)


def test_denoise_scheduled_gives_each_image_its_own_steps(objective):
    clean = held_out_photos(64)[0].image[None, :, :32, :32]
    light = add_gaussian_noise(clean, 5.0, torch.Generator().manual_seed(0))
    heavy = add_gaussian_noise(clean, 100.0, torch.Generator().manual_seed(1))
    estimates, estimated, choices = denoise_scheduled(objective, torch.cat([light, heavy]), _schedule())
    assert estimated[0] < estimated[1] and choices == [(1, 0.5, 1), (5, 1.5, 1)]
    for i, (steps, scale, _) in enumerate(choices):
        alone = denoise(objective, torch.cat([light, heavy])[i : i + 1], Thinking(steps, step_scale=scale))[0].final
        torch.testing.assert_close(estimates[i : i + 1], alone)


def test_stopping_read_off_a_plain_descent_matches_the_stopping_descent():
    # A quadratic whose stiff direction overshoots (grows x1.21 per step) while the soft one shrinks: the energy
    # falls for a few steps, then rises, as a too-long descent of a learned landscape can.
    curvature = torch.tensor([1.0, 0.05])

    def energy(context, x):
        return (curvature * (x - context) ** 2).sum(1)

    context, start = torch.zeros(1, 2), torch.tensor([[0.3, 3.0]])
    plain = minimize_energy(energy, context, start, 1.05, 12, final_energy=True)
    stopped = minimize_energy(energy, context, start, 1.05, 12, stop_when_energy_rises=True)
    k = energy_stop_step(plain.energies[:, 0])
    assert 0 < k < 12 and k == int(stopped.steps_taken[0])
    torch.testing.assert_close(plain.candidates[k], stopped.final)
    assert (plain.forward_passes, plain.backward_passes) == (stopped.forward_passes, stopped.backward_passes)
    assert energy_stop_step(torch.tensor([3.0, 2.0, 2.5, 1.0])) == 1
    assert energy_stop_step(torch.tensor([3.0, 2.0, 1.0])) == 2
    assert energy_stop_step(torch.tensor([3.0, 2.0, 1.9, 1.0]), tolerance=0.5) == 2  # the small step is kept
    tolerance = 0.5 * float(plain.energies[0, 0] - plain.energies[1, 0])
    k = energy_stop_step(plain.energies[:, 0], tolerance)
    stalled = minimize_energy(energy, context, start, 1.05, 12, stop_when_energy_rises=True, stop_tolerance=tolerance)
    assert 0 < k < 4 and k == int(stalled.steps_taken[0])  # it stops before the energy rises (at step 4)
    torch.testing.assert_close(plain.candidates[k], stalled.final)


def test_evaluation_reports_the_scheduled_row(tmp_path, objective):
    photos = held_out_photos(max_side=40)[:1]
    options = EvalOptions(sigmas=(15, 100), steps=2, with_bm3d=False, progress=False)
    rows = evaluate_denoiser(objective, photos, options, schedule=_schedule())
    auto = [r for r in rows if r["method"] == "ebt_auto"]
    assert len(auto) == 2 and auto[0]["estimated_sigma"] < auto[1]["estimated_sigma"]
    assert auto[1]["forward_passes"] == 5 and auto[1]["step_scale"] == 1.5
    md = write_denoise_report(rows, make_meta("cpu", 0, "test", "none", command="pytest"), tmp_path)
    assert "EBT auto steps (mean steps)" in md.read_text()
    assert json.loads((tmp_path / "denoise_eval.json").read_text())["meta"]["command"] == "pytest"


def test_calibrate_fits_at_the_noise_levels_it_is_given_and_saves_beside_the_weights(tmp_path, objective):
    """`ebt-vision calibrate --sigmas --scales`: the grid the schedule is fitted at (a photo takes the nearest level's
    setting, so a coarse grid gives photos of one noise level different settings) and the step-size scales tried; a
    scale of 0 or below is refused before any descent."""
    from ebt_vision.cli import main
    from ebt_vision.core.checkpoint import save_pretrained_folder

    save_pretrained_folder(objective, objective.cfg, tmp_path / "model")
    grid = ["--sigmas", "12", "33", "--scales", "0.25", "4", "--max-steps", "2", "--passes", "1", "--per-photo", "1",
            "--crop", "32"]  # fmt: skip
    args = ["calibrate", "--checkpoint", str(tmp_path / "model"), *grid, "--out", str(tmp_path / "report"), "--quiet"]
    assert main(args) == 0
    saved = StepSchedule.load(tmp_path / "model")
    assert saved.calibration_sigmas == [12.0, 33.0] and len(saved.steps) == 2
    report = json.loads((tmp_path / "report" / "step_schedule.json").read_text())
    assert "sigma 12, 33" in report["meta"]["data"] and report["meta"]["budget"].endswith("step scales 0.25, 4")
    assert {row["scale"] for row in report["rows"]} == {0.25, 4.0} and set(saved.scales) <= {0.25, 4.0}
    zero = ["--scales", "0", "--out", str(tmp_path / "x"), "--quiet"]
    assert main(["calibrate", "--checkpoint", str(tmp_path / "model"), *zero]) == 2


def test_calibration_with_mirror_views_descends_the_averaged_energy_and_is_reported_not_saved(tmp_path, objective):
    """`ebt-vision calibrate --views N --no-save`: every row is the PSNR of a descent on the energy averaged over N
    mirror images (what `eval --views N` descends); without --no-save it is refused before any descent, so the
    one-view schedule beside the weights is never replaced by one the other commands would misread."""
    from ebt_vision.cli import main
    from ebt_vision.core.checkpoint import save_pretrained_folder
    from ebt_vision.core.metrics import psnr
    from ebt_vision.image.inference import Tiling

    torch.manual_seed(0)
    torch.nn.init.normal_(objective.model.head.out.weight)  # a non-zero energy, so the descent moves the pixels
    crops = full_resolution_crops(held_out_photos(None, "validation")[:1], size=32, per_photo=2)
    kwargs = dict(sigmas=(25.0,), max_steps=2, scales=(1.0,), progress=False, passes=1)
    _, one = fit_schedule(objective, crops, **kwargs)
    _, four = fit_schedule(objective, crops, views=4, **kwargs)
    noisy = noisy_crops(crops, 25.0)
    by_hand = denoise(objective, noisy, Thinking(2, final_energy=False), tiling=Tiling(views=4))[0]
    for row in four:
        assert row["psnr"] == pytest.approx(float(psnr(by_hand.candidates[row["steps"]], torch.stack(crops)).mean()))
    assert [r["psnr"] for r in one] != pytest.approx([r["psnr"] for r in four])

    save_pretrained_folder(objective, objective.cfg, tmp_path / "model")
    grid = ["--sigmas", "25", "--scales", "1", "--max-steps", "1", "--passes", "1", "--per-photo", "1", "--crop", "32"]
    args = ["calibrate", "--checkpoint", str(tmp_path / "model"), *grid, "--views", "2", "--out", str(tmp_path / "r")]
    assert main([*args, "--quiet"]) == 2 and not (tmp_path / "r").exists()  # refused: it would be saved
    assert main([*args, "--quiet", "--no-save"]) == 0 and StepSchedule.load(tmp_path / "model") is None
    report = json.loads((tmp_path / "r" / "step_schedule.json").read_text())
    assert report["meta"]["budget"].endswith("averaged over 2 mirror images of the crop")
