"""``ebt-vision denoise``: the shipped (or any) EBT or DiT on a user's own image files."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.defaults import MAX_FILE_CANDIDATES, MAX_FILE_PIXELS, MAX_STEPS, MIRROR_VIEWS
from ..core.errors import InputError
from ..core.inference import Thinking
from ..core.maps import render_map
from ..core.progress import progress as progress_bar
from .files import (
    MEMORY_BUDGET,
    UserImage,
    check_image_file,
    collect_inputs,
    output_path,
    read_image,
    to_array,
    write_image,
)
from .inference import Tiling, best_of_n, crop_to_patches, denoise
from .noise import estimate_noise_sigma
from .schedule import StepSchedule
from .tiling import photo_energy

if TYPE_CHECKING:
    from .dit import DiTObjective  # diffusers is imported only when a DiT denoises (seconds of start-up otherwise)


@dataclass(frozen=True)
class DenoiseOptions:
    steps: int | None = None  # EBT descent steps (default: the schedule's, else as trained) or DiT DDIM steps (2)
    best_of: int = 1  # EBT only: N descents, keep the lowest final energy
    sigma: float | None = None  # 0-255; None: the EBT is blind, DiT and sigma-conditioned EBT use the estimate
    save_steps: bool = False  # EBT only: every step's candidate too
    save_energy_map: bool = False  # EBT only: the per-patch energy of the result, as a PNG with a colour bar
    overwrite: bool = False  # redo earlier results (never replace an input); without it they are kept and skipped
    schedule: StepSchedule | None = None  # EBT without --steps: steps and step scale by the estimated noise level
    views: int = 1  # every pass averaged over this many mirror images of the photo (EBT and DiT alike)

    def check(self, dit: bool = False) -> None:
        if self.steps is not None and not 1 <= self.steps <= MAX_STEPS:
            raise InputError(f"--steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if not 1 <= self.best_of <= MAX_FILE_CANDIDATES:
            raise InputError(f"--best-of must be in [1, {MAX_FILE_CANDIDATES}], got {self.best_of}")
        if self.sigma is not None and not 0 <= self.sigma <= 255:
            raise InputError(f"--sigma must be in [0, 255] (the 0-255 pixel scale), got {self.sigma}")
        if self.views not in MIRROR_VIEWS:
            raise InputError(f"--views must be one of {', '.join(map(str, MIRROR_VIEWS))}, got {self.views}")
        if dit and (self.best_of > 1 or self.save_steps or self.save_energy_map):
            raise InputError("--best-of, --save-steps and --save-energy-map apply to the EBT only")


@dataclass(frozen=True)
class ResultName:
    """The files of one input's result: ``name()`` the result, ``name("-step1")``, ``name("-energy", ".png")``."""

    source: Path
    out_dir: Path
    tag: str
    root: Path | None

    def __call__(self, extra: str = "", suffix: str | None = None) -> Path:
        return output_path(self.source, self.out_dir, self.tag + extra, self.root, suffix)


@dataclass
class DenoisePlan:
    """What a denoise will do, decided before a model is loaded: the results to make (``tag``: "ebt" or "dit"),
    earlier results kept, and inputs refused from their header (input, why)."""

    tag: str
    jobs: list[ResultName] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def nothing_done(self) -> DenoiseRun:
        """The run of a plan with no jobs: what was kept and refused."""
        return DenoiseRun([], 0, list(self.kept), list(self.failed))


@dataclass
class DenoiseRun:
    """What a denoise did: the files written, earlier results kept, and the inputs that failed (input, why)."""

    written: list[Path]
    results: int  # the inputs denoised (``written`` also holds their steps and energy maps)
    kept: list[Path]
    failed: list[tuple[Path, str]]

    def summary(self) -> list[str]:
        """One line per failed input, then what was done; nothing when every input was denoised."""
        lines = [f"error: {message}" for _, message in self.failed]
        if self.kept:
            lines.append(f"kept {len(self.kept)} earlier result{'s' * (len(self.kept) > 1)} (pass --overwrite to "
                         f"redo {'them' if len(self.kept) > 1 else 'it'}), e.g. {self.kept[0]}")  # fmt: skip
        if self.failed:
            total = self.results + len(self.failed)
            lines.append(f"denoised {self.results} of {total} images; {len(self.failed)} failed (named above)")
        return lines


def plan_denoise(
    inputs: list[str | Path],
    out_dir: str | Path,
    tag: str,
    overwrite: bool = False,
    best_of: int = 1,
    views: int = 1,
) -> DenoisePlan:
    """Every input's result (``tag``: "ebt" or "dit"), checked before any work: an unusable output folder, a result
    that would replace an input, or two inputs whose results would be the same file stop everything; an earlier
    result is kept unless ``overwrite``; an input whose header cannot be read or is over the pixel limit (divided by
    ``best_of`` x ``views``: each start is a descent of the whole photo, each view a copy of it) is refused alone."""
    out_dir = Path(out_dir)
    check_output_folder(out_dir)
    found = _without_results(collect_inputs(inputs), out_dir)
    sources = {path.resolve(): path for path, _ in found}
    plan, claimed = DenoisePlan(tag), {}
    for path, root in found:
        name = ResultName(path, out_dir, tag, root)
        out = name()
        if out.resolve() in sources:
            raise InputError(f"the result {out} would overwrite the input {sources[out.resolve()]}; choose another "
                             "output folder")  # fmt: skip
        if out.resolve() in claimed:
            raise InputError(f"{claimed[out.resolve()]} and {path} would both be written to {out}; denoise them into "
                             "separate output folders")  # fmt: skip
        claimed[out.resolve()] = path
        if out.exists() and not overwrite:
            plan.kept.append(out)
            continue
        try:
            check_image_file(path, *pixel_limit(best_of, views))
        except InputError as error:
            plan.failed.append((path, str(error)))
            continue
        plan.jobs.append(name)
    return plan


# what denoise writes for an input named X: X.ebt.png, X.ebt-step1.png, X.ebt-energy.png, X.dit.tif, ...
RESULT_NAME = re.compile(r"(?P<source>.+)\.(ebt|dit)(-step\d+|-energy)?\.(png|tif)")


def _without_results(found: list[tuple[Path, Path | None]], out_dir: Path) -> list[tuple[Path, Path | None]]:
    """The images found in folders, less earlier results: those in an output folder inside the input folder, and
    those named as the result of an image beside them (written beside their inputs). Files given by name stay."""
    out = out_dir.resolve()

    def is_result(path: Path, root: Path) -> bool:
        named = RESULT_NAME.fullmatch(path.name)
        return (out != root.resolve() and out in path.resolve().parents) or bool(
            named and (path.parent / named["source"]).is_file()
        )

    return [(path, root) for path, root in found if root is None or not is_result(path, root)]


def pixel_limit(best_of: int, views: int = 1) -> tuple[int, str]:
    """(the most pixels one image may have, why): each of best-of-N's starts is a descent of the whole photo, and
    each mirror image (``views``) keeps its own copy of the photo's tiles for the backward pass."""
    if best_of * views == 1:
        return MAX_FILE_PIXELS, MEMORY_BUDGET
    chosen = (("best-of", best_of), ("views", views))
    settings = " and ".join(f"--{name} {value}" for name, value in chosen if value > 1)
    return MAX_FILE_PIXELS // (best_of * views), f"{MEMORY_BUDGET} with {settings}"


def check_output_folder(out_dir: Path) -> None:
    """A folder results can be written to (made later, when the first result is), or an ``InputError``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"the output folder {out_dir} is a file; give a folder for the results")
    existing = next(folder for folder in (out_dir, *out_dir.absolute().parents) if folder.exists())
    if not existing.is_dir():
        raise InputError(f"cannot make the output folder {out_dir}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write the output folder {out_dir}: {existing} is not writable")


def _ebt_result(objective: nn.Module, image: UserImage, options: DenoiseOptions, name: ResultName) -> list[Path]:
    patch = objective.cfg.model.patch_size
    noisy = crop_to_patches(image.rgb[None], patch)
    if noisy.shape[-2:] != image.rgb.shape[-2:]:
        raise InputError(f"{image.path.name}: {image.rgb.shape[2]}x{image.rgb.shape[1]} is not a multiple of the "
                         f"{patch}px patch; crop it first")  # fmt: skip
    sigma = options.sigma  # None: a sigma-conditioned model is told the estimated one (``denoise``)
    thinking, tiling = Thinking(options.steps, final_energy=False), Tiling(views=options.views)
    if options.steps is None and options.schedule is not None:
        thinking = options.schedule.thinking(float(estimate_noise_sigma(noisy)[0]), thinking)
    if options.best_of > 1:
        found = best_of_n(objective, noisy, replace(thinking, n_candidates=options.best_of), sigma, tiling)
        result = found.best
        chosen = int(found.final_energies[:, 0].argmin())  # the start whose final energy was the lowest (one image)
        steps = [candidate[chosen : chosen + 1] for candidate in found.trajectory.candidates]
    else:
        trajectory, _ = denoise(objective, noisy, thinking, sigma, tiling)
        result = trajectory.final
        steps = list(trajectory.candidates)
    written = []
    if options.save_steps:  # the steps of the chosen start, so they end at the result
        for k, candidate in enumerate(steps[1:-1], start=1):
            written.append(name(f"-step{k}"))
            write_image(to_array(image, candidate[0]), written[-1])
    if options.save_energy_map:
        energy = photo_energy(objective.model, objective.cfg.data.crop_size, options.views)  # what was descended
        with torch.no_grad():
            patch_map = energy.patch_energy_map(noisy, result.to(noisy))[0]
        written.append(name("-energy", ".png"))
        write_image(render_map(patch_map, f"per-patch energy of the result ({patch}px patches)"), written[-1])
    # the result last: once it exists, everything of this input is written (a re-run keeps it and skips the input)
    written.append(name())
    write_image(to_array(image, result[0]), written[-1])
    return written


def _dit_result(dit: DiTObjective, image: UserImage, options: DenoiseOptions, name: ResultName) -> list[Path]:
    from .dit import dit_denoise

    sigma = options.sigma if options.sigma is not None else float(estimate_noise_sigma(image.rgb[None])[0])
    estimate, _ = dit_denoise(dit, image.rgb[None], sigma, options.steps or 2, views=options.views)
    write_image(to_array(image, estimate[0]), name())
    return [name()]


def run_denoise(model: nn.Module, plan: DenoisePlan, options: DenoiseOptions, progress: bool = True) -> DenoiseRun:
    """Denoise the plan's inputs with ``model`` (an EBT ``DenoisingObjective`` or a ``DiTObjective``, as planned). An
    input that fails to read or to denoise (corrupt, not a multiple of the patch) is skipped and named; the others go
    on."""
    is_dit = _is_dit(model)
    options.check(dit=is_dit)
    if plan.tag != ("dit" if is_dit else "ebt"):
        raise ValueError(f"the plan is for the {plan.tag.upper()}, the model is not")
    make = _dit_result if is_dit else _ebt_result
    run = DenoiseRun([], 0, list(plan.kept), list(plan.failed))
    for name in progress_bar(plan.jobs, desc="denoise", unit="image", disable=not progress):
        try:
            image = read_image(name.source, *pixel_limit(options.best_of))
            with torch.no_grad():
                run.written += make(model, image, options, name)
            run.results += 1
        except InputError as error:
            run.failed.append((name.source, str(error)))
    return run


def denoise_files(
    model: nn.Module, inputs: list[str | Path], out_dir: str | Path, options: DenoiseOptions, progress: bool = True
) -> DenoiseRun:
    """Denoise every input image (files, or folders of images) with ``model`` (an EBT ``DenoisingObjective`` or a
    ``DiTObjective``); results go to ``out_dir`` as ``<input name>.ebt.png`` / ``.dit.png`` (``.tif`` for TIFF
    inputs): ``plan_denoise``, then ``run_denoise``."""
    is_dit = _is_dit(model)
    options.check(dit=is_dit)
    plan = plan_denoise(inputs, out_dir, "dit" if is_dit else "ebt", options.overwrite, options.best_of)
    return run_denoise(model, plan, options, progress)


def _is_dit(model: nn.Module) -> bool:
    """Whether ``model`` is a ``DiTObjective``, without importing diffusers for an EBT."""
    from .objective import DenoisingObjective

    if isinstance(model, DenoisingObjective):
        return False
    from .dit import DiTObjective

    return isinstance(model, DiTObjective)
