"""``ebt-vision denoise``: the shipped (or any) EBT or DiT on a user's own image files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..core.defaults import MAX_FILE_CANDIDATES, MAX_STEPS
from ..core.errors import InputError
from ..core.inference import Thinking
from ..core.maps import render_map
from ..core.progress import progress as progress_bar
from .dit import DiTObjective, dit_denoise
from .files import UserImage, collect_inputs, output_path, read_image, to_array, write_image
from .inference import best_of_n, crop_to_patches, denoise
from .noise import estimate_noise_sigma
from .schedule import StepSchedule
from .tiling import TiledEnergy


@dataclass(frozen=True)
class DenoiseOptions:
    steps: int | None = None  # EBT descent steps (default: the schedule's, else as trained) or DiT DDIM steps (2)
    best_of: int = 1  # EBT only: N descents, keep the lowest final energy
    sigma: float | None = None  # 0-255; None: the EBT is blind, DiT and sigma-conditioned EBT use the estimate
    save_steps: bool = False  # EBT only: every step's candidate too
    save_energy_map: bool = False  # EBT only: the per-patch energy of the result, as a PNG with a colour bar
    overwrite: bool = False  # replace earlier results (never an input)
    schedule: StepSchedule | None = None  # EBT without --steps: steps and step scale by the estimated noise level

    def check(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"--steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if not 1 <= self.best_of <= MAX_FILE_CANDIDATES:
            raise InputError(f"--best-of must be in [1, {MAX_FILE_CANDIDATES}], got {self.best_of}")
        if self.sigma is not None and not 0 <= self.sigma <= 255:
            raise InputError(f"--sigma must be in [0, 255] (the 0-255 pixel scale), got {self.sigma}")


def _plan(inputs: list[str | Path], out_dir: Path, tag: str, overwrite: bool) -> list[tuple[Path, Path | None]]:
    """Inputs and a refusal, before any work, of results that would replace an input or (without --overwrite) an
    earlier result."""
    jobs = collect_inputs(inputs)
    sources = {path.resolve() for path, _ in jobs}
    for path, root in jobs:
        for depth in (8, 16):  # the result's suffix follows the bit depth, known once the image is read
            result = output_path(path, depth, out_dir, tag, root)
            if result.resolve() in sources:
                raise InputError(f"the result {result} would overwrite an input; choose another output folder")
            if result.exists() and not overwrite:
                raise InputError(f"{result} exists; pass --overwrite to replace earlier results")
    return jobs


def _ebt_result(objective: nn.Module, image: UserImage, options: DenoiseOptions, out: Path) -> list[Path]:
    patch = objective.cfg.model.patch_size
    noisy = crop_to_patches(image.rgb[None], patch)
    if noisy.shape[-2:] != image.rgb.shape[-2:]:
        raise InputError(f"{image.path.name}: {image.rgb.shape[2]}x{image.rgb.shape[1]} is not a multiple of the "
                         f"{patch}px patch; crop it first")  # fmt: skip
    sigma = options.sigma
    if objective.cfg.model.sigma_conditioning and sigma is None:
        sigma = float(estimate_noise_sigma(noisy)[0])
    thinking = Thinking(options.steps, final_energy=False)
    if options.steps is None and options.schedule is not None and not objective.cfg.model.sigma_conditioning:
        thinking = options.schedule.thinking(float(estimate_noise_sigma(noisy)[0]), thinking)
    trajectory = None
    if options.best_of > 1:
        result = best_of_n(objective, noisy, replace(thinking, n_candidates=options.best_of), sigma).best
    else:
        trajectory, _ = denoise(objective, noisy, thinking, sigma)
        result = trajectory.final
    written = [out]
    write_image(to_array(image, result[0]), out)
    if options.save_steps and trajectory is not None:
        for k, candidate in enumerate(trajectory.candidates[1:-1], start=1):
            path = out.with_name(out.name.replace(".ebt.", f".ebt-step{k}."))
            write_image(to_array(image, candidate[0]), path)
            written.append(path)
    if options.save_energy_map:
        energy = TiledEnergy(objective.model, objective.cfg.data.crop_size)
        with torch.no_grad():
            patch_map = energy.patch_energy_map(noisy, result.to(noisy))[0]
        path = out.with_name(f"{out.name.split('.ebt.')[0]}.ebt-energy.png")
        write_image(render_map(patch_map, f"per-patch energy of the result ({patch}px patches)"), path)
        written.append(path)
    return written


def _dit_result(dit: DiTObjective, image: UserImage, options: DenoiseOptions, out: Path) -> list[Path]:
    sigma = options.sigma if options.sigma is not None else float(estimate_noise_sigma(image.rgb[None])[0])
    estimate, _ = dit_denoise(dit, image.rgb[None], sigma, options.steps or 2)
    write_image(to_array(image, estimate[0]), out)
    return [out]


def denoise_files(
    model: nn.Module, inputs: list[str | Path], out_dir: str | Path, options: DenoiseOptions, progress: bool = True
) -> list[Path]:
    """Denoise every input image (files, or folders of images) with ``model`` (an EBT ``DenoisingObjective`` or a
    ``DiTObjective``); results go to ``out_dir`` as ``<name>.ebt.png`` / ``<name>.dit.png`` (``.tif`` for 16-bit).
    Returns the files written."""
    options.check()
    is_dit = isinstance(model, DiTObjective)
    if is_dit and (options.best_of > 1 or options.save_steps or options.save_energy_map):
        raise InputError("--best-of, --save-steps and --save-energy-map apply to the EBT only")
    tag, out_dir = ("dit" if is_dit else "ebt"), Path(out_dir)
    jobs = _plan(inputs, out_dir, tag, options.overwrite)
    written = []
    for path, root in progress_bar(jobs, desc="denoise", unit="image", disable=not progress):
        image = read_image(path)
        out = output_path(path, image.bit_depth, out_dir, tag, root)
        if out.resolve() == path.resolve():
            raise InputError(f"the result {out} would overwrite its input")
        make = _dit_result if is_dit else _ebt_result
        with torch.no_grad():
            written += make(model, image, options, out)
    return written
