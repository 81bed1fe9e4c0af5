"""The image tab: watch the image EBT denoise. A thin layer over ``image_view``.

Pick a held-out sample photo or upload one, choose the noise, the number of descent steps, the step-size scale and
best-of-N (or adaptive per-patch steps, with a map of each patch's step count), and see every refinement step with
its per-patch energy map and gradient-magnitude map (each with a colour bar), energy and PSNR per step, and the DiT
baseline on the same noisy input with its pass count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..core import defaults
from .common import MODELS, Workers, gallery_height, initial, initial_result, step_gallery, without_traceback

if TYPE_CHECKING:
    import numpy as np

DEFAULT_SAMPLE = "skimage:astronaut"
SAMPLE_SIDE = 256  # sample photos are shown at 256 px: an interactive CPU denoise
# The tab's controls as it opens, in the order of the Denoise event's inputs (``ImageTab.run``'s arguments). The
# calibrated steps are on when the checkpoint has a step schedule (the shipped one has).
DEFAULTS = {"sample": DEFAULT_SAMPLE, "upload": None, "sigma": 25, "steps": 2, "step_scale": 1.0, "best_of": 1,
            "dit_steps": 2, "seed": 0, "fast": True, "adaptive": 0.0, "auto_steps": True}  # fmt: skip


class ImageTab:
    """The image tab's handler, independent of Gradio so tests can call it directly."""

    def __init__(self, ebt_path: str | Path = defaults.IMAGE_EBT, dit_path: str | Path | None = defaults.IMAGE_DIT):
        from ..image.data import held_out_photos
        from ..image.dit import load_dit
        from ..image.inference import load_denoiser
        from ..image.schedule import StepSchedule

        self.objective = load_denoiser(ebt_path)
        self.schedule = StepSchedule.load(ebt_path)  # steps by the estimated noise level, when calibrated
        self.dit = load_dit(dit_path) if dit_path else None
        self.samples = {photo.name: photo.image for photo in held_out_photos(max_side=SAMPLE_SIDE)}

    def run(
        self,
        sample: str | None,
        upload: str | None,
        sigma: float,
        steps: int,
        step_scale: float,
        best_of: int,
        dit_steps: int,
        seed: int = 0,
        fast: bool = True,
        adaptive: float = 0.0,
        auto_steps: bool = False,
    ) -> tuple[np.ndarray | None, np.ndarray, list, np.ndarray, np.ndarray | None, object, str]:
        """-> (clean, noisy, step gallery, EBT result, DiT result, energy/PSNR figure, summary markdown).
        ``auto_steps``: the steps and step scale come from the checkpoint's step schedule (by the estimated noise)."""
        from ..core.errors import InputError
        from ..image.data import to_uint8
        from .image_view import (
            StorySettings,
            denoise_story,
            load_upload,
            prepare_image,
            story_figure,
            story_frames,
            story_summary,
        )

        if upload:  # an upload wins over the sample, and the summary says which was used
            image, notes = load_upload(upload)
            notes = [f"your upload {Path(upload).name} (clear it to use the sample photos)", *notes]
        elif sample in self.samples:
            image, notes = prepare_image(self.samples[sample])
            notes = [f"sample photo {sample} (held out from training)", *notes]
        else:
            raise InputError("pick a sample photo or upload one")
        settings = StorySettings(
            sigma=float(sigma),
            steps=int(steps),
            step_scale=float(step_scale),
            best_of=int(best_of),
            dit_steps=None if int(dit_steps) == 0 else int(dit_steps),
            seed=int(seed),
            tile_overlap=1 if fast else 2,
            adaptive=float(adaptive),
        )
        story = denoise_story(self.objective, image, settings, self.dit, self.schedule if auto_steps else None)
        if auto_steps and self.schedule is None:
            notes.append("this checkpoint has no step schedule (ebt-vision calibrate): the steps slider was used")
        story.notes = notes + story.notes
        dit = to_uint8(story.dit) if story.dit is not None else None
        return (
            to_uint8(story.clean) if story.clean is not None else None,
            to_uint8(story.noisy),
            story_frames(story),
            to_uint8(story.final),
            dit,
            story_figure(story),
            story_summary(story),
        )


def build_image_tab(tab: ImageTab, workers: Workers | None = None) -> None:
    """The image tab's components and events, inside the app's ``gr.Blocks``."""
    import gradio as gr

    opening = dict(DEFAULTS, auto_steps=DEFAULTS["auto_steps"] and tab.schedule is not None)
    first = initial_result(tab.run, *opening.values())  # the default sample's result, shown when the app opens
    columns = 3  # one descent step per row: candidate, energy map, |dE/dx| map

    def denoise(*inputs):
        clean, noisy, frames, *rest = tab.run(*inputs)
        return clean, noisy, gr.Gallery(frames, height=gallery_height(len(frames), columns)), *rest

    with gr.Tab("Image"):
        gr.Markdown(
            "The EBT denoises by **gradient descent on its energy**. Each step below shows the candidate, its "
            "per-patch energy (bright = the model finds this patch implausible) and the gradient magnitude that moves "
            "it. The DiT baseline denoises the same noisy image by DDIM from the timestep of the estimated noise."
        )
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Dropdown(list(tab.samples), value=DEFAULTS["sample"], label="Sample photo (held out)",
                                     elem_id="sample")  # fmt: skip
                # no file-type filter: a rejected file would silently leave the sample in use; the handler says why
                upload = gr.File(label=f"…or upload a photo (≤ {defaults.APP_MAX_IMAGE_BYTES // 2**20} MiB; "
                                       f"downscaled to {defaults.APP_MAX_SIDE} px)", elem_id="upload")  # fmt: skip
                sigma = gr.Slider(
                    *defaults.APP_SIGMA_RANGE, value=DEFAULTS["sigma"], step=1, label="Noise sigma (0-255 scale)"
                )
                descent = tab.objective.cfg.descent
                trained = (
                    f"{descent.min_steps}-{descent.num_steps}"
                    if descent.min_steps < descent.num_steps
                    else str(descent.num_steps)
                )
                auto_steps = gr.Checkbox(opening["auto_steps"], elem_id="auto-steps",
                                         label="Steps from the estimated noise (the model's calibrated step schedule; "
                                               "overrides the two sliders below)")  # fmt: skip
                steps = gr.Slider(1, defaults.APP_MAX_STEPS, value=DEFAULTS["steps"], step=1,
                                  label=f"EBT descent steps (trained with {trained})")  # fmt: skip
                step_scale = gr.Slider(
                    *defaults.APP_STEP_SCALE_RANGE, value=DEFAULTS["step_scale"], step=0.1, label="Step-size scale"
                )
                best_of = gr.Slider(
                    1,
                    defaults.APP_MAX_BEST_OF,
                    value=DEFAULTS["best_of"],
                    step=1,
                    label="Best-of-N (lowest energy wins)",
                )
                dit_steps = gr.Slider(0, 100, value=DEFAULTS["dit_steps"], step=1, label="DiT DDIM steps (0 = all)")
                seed = gr.Number(DEFAULTS["seed"], precision=0, label="Noise seed", elem_id="seed")
                fast = gr.Checkbox(
                    DEFAULTS["fast"], label="Fast tiling: tiles side by side (4x faster, ~0.15 dB lower)"
                )
                adaptive_label = "Adaptive per-patch steps: stop a patch whose energy falls by < this x the median drop"
                adaptive = gr.Slider(0, 0.3, value=DEFAULTS["adaptive"], step=0.01, label=f"{adaptive_label} (0 = off)")
                run = gr.Button("Denoise", variant="primary", elem_id="denoise-button")
            with gr.Column(scale=2):
                summary = gr.Markdown(initial(first, 6), elem_id="summary")
                with gr.Row():
                    clean = gr.Image(initial(first, 0), label="Clean", type="numpy", interactive=False)
                    noisy = gr.Image(initial(first, 1), label="Noisy", type="numpy", interactive=False)
                    ebt = gr.Image(initial(first, 3), label="EBT result", type="numpy", interactive=False)
                    dit = gr.Image(initial(first, 4), label="DiT result", type="numpy", interactive=False)
                plot = gr.Plot(initial(first, 5), label="Energy and PSNR per step")
        frames = initial(first, 2) or []
        gallery = step_gallery("Every step: candidate · energy per patch · |dE/dx| (each map has its colour bar)",
                               columns, "steps", value=frames, height=gallery_height(len(frames), columns))  # fmt: skip
        # the photo in use is named in one place: an upload clears the sample's name, clearing it brings the sample back
        upload.upload(lambda _: None, upload, sample, concurrency_limit=None, show_progress="hidden")
        upload.clear(lambda chosen: chosen or DEFAULT_SAMPLE, sample, sample, concurrency_limit=None,
                     show_progress="hidden")  # fmt: skip
        sample.select(lambda: None, None, upload, concurrency_limit=None, show_progress="hidden")
        run.click(
            without_traceback(denoise, workers),
            [sample, upload, sigma, steps, step_scale, best_of, dit_steps, seed, fast, adaptive, auto_steps],
            [clean, noisy, gallery, ebt, dit, plot, summary],
            api_name="denoise",
            concurrency_id=MODELS,
        )
