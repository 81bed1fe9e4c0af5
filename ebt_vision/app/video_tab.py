"""The video tab: watch the video EBT predict the next frames. A thin layer over ``video_view``.

Pick a test clip (Moving MNIST test sequences, real test footage; no model trained on either) or upload a video,
choose the horizon, the descent steps and best-of-N, and see the context, each predicted frame after every descent
step, the per-patch energy map of every predicted frame, the baselines' predictions of the same context (copy-last,
the plain transformer and the DiT when their checkpoints exist), PSNR per horizon step and the passes each spent.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import defaults
from .common import (
    MODELS,
    Workers,
    find_checkpoint,
    initial,
    initial_result,
    open_tab,
    step_gallery,
    train_command,
    without_traceback,
)

if TYPE_CHECKING:
    import numpy as np
    from torch import Tensor

OPTIONS = {
    "ebt": "--video-checkpoint",
    "transformer": "--video-transformer-checkpoint",
    "dit": "--video-dit-checkpoint",
}
NAMES = {"ebt": "video EBT", "transformer": "plain-transformer video baseline", "dit": "DiT video baseline"}


def _checkpoint(kind: str, path: str | Path | None) -> Path:
    return find_checkpoint(path, NAMES[kind], train_command(defaults.VIDEO_CONFIG, kind, path), OPTIONS[kind])


def _start_steps(path: Path, configured: int, notes: list[str]) -> tuple[int, str]:
    """A slider's first value -> (steps, where they come from): the count chosen on validation clips when the model's
    folder records one (``ebt-vision video`` writes it), else the configured one; a damaged record becomes a note."""
    from ..core.errors import UserError
    from ..video.loading import chosen_steps

    try:
        recorded = chosen_steps(path)
    except UserError as error:
        notes.append(str(error))
        recorded = None
    return (recorded[0], f"chosen on {recorded[1]}") if recorded else (configured, "as configured")


class VideoTab:
    """The video tab's handler, independent of Gradio so tests can call it directly.

    The EBT checkpoint is required (a ``UserError`` naming the path and the training command otherwise); a baseline
    whose checkpoint is missing, unreadable or made for other frames is left out, and every summary says why.
    """

    def __init__(
        self,
        checkpoint: str | Path = defaults.VIDEO_EBT,
        transformer_checkpoint: str | Path | None = defaults.VIDEO_TRANSFORMER,
        dit_checkpoint: str | Path | None = defaults.VIDEO_DIT,
        upload_checkpoint: str | Path | None = None,
    ) -> None:
        from ..video.loading import load_video_model
        from .video_view import sample_clips

        path = _checkpoint("ebt", checkpoint)
        self.objective = load_video_model(path, "ebt")
        self.cfg = self.objective.cfg
        self.notes: list[str] = []
        self.steps = _start_steps(path, self.cfg.descent.num_steps, self.notes)  # (the EBT slider's start, source)
        self.transformer = self._baseline("transformer", transformer_checkpoint)
        self.dit = self._baseline("dit", dit_checkpoint)
        self.dit_steps = (
            _start_steps(_checkpoint("dit", dit_checkpoint), self.dit.cfg.dit.sampling_steps, self.notes)
            if self.dit is not None
            else (1, "")
        )
        self.samples, sample_notes = sample_clips(self.cfg)
        self.notes += sample_notes
        self.upload_objective, self.upload_note = self._upload_model(upload_checkpoint)

    def _upload_model(self, path: str | Path | None):
        """The EBT for uploaded clips and a note saying which: ``path`` (None: the shipped real-footage model,
        ``defaults.VIDEO_REAL_EBT``, when there is one; '': none), else the samples' EBT with a visible warning."""
        from ..video.loading import default_video_checkpoint, load_video_model

        if path is None:
            found, _ = default_video_checkpoint()
            path = found if found.name == Path(defaults.VIDEO_REAL_EBT).name else ""
        if path:
            return load_video_model(_checkpoint("ebt", path), "ebt"), f"uploads use the real-footage video EBT {path}"
        return self.objective, (
            f"no real-footage video EBT is shipped ({defaults.VIDEO_REAL_EBT}): your upload meets the EBT of the "
            "samples, which may never have seen real footage (e.g. the Moving MNIST one)"
        )

    def _baseline(self, kind: str, path: str | Path | None):
        from ..core.errors import UserError
        from ..video.loading import load_video_model

        if not path:  # left out on purpose ('' on the command line)
            return None
        try:
            model = load_video_model(_checkpoint(kind, path), kind)
        except UserError as error:
            self.notes.append(f"{NAMES[kind]} left out: {error}")
            return None
        mine, theirs = self.cfg, model.cfg
        if (theirs.data.frame_size, theirs.model.channels) != (mine.data.frame_size, mine.model.channels):
            self.notes.append(f"{NAMES[kind]} left out: it predicts {theirs.data.frame_size} px frames with "
                              f"{theirs.model.channels} channels, the EBT {mine.data.frame_size} px with "
                              f"{mine.model.channels}")  # fmt: skip
            return None
        return model

    @property
    def context_frames(self) -> int:
        return self.cfg.data.context_frames

    def clip(self, sample: str | None, upload: str | None, horizon: int) -> tuple[Tensor, Tensor, str, list[str]]:
        """-> (context (T, C, S, S), truth (H', C, S, S), clip name, notes): an upload wins over the sample."""
        from ..core.errors import InputError
        from .video_view import load_video_upload

        if upload:
            cfg = self.upload_objective.cfg
            context_frames = cfg.data.context_frames
            frames = context_frames + horizon
            clip, notes = load_video_upload(upload, frames, cfg.data.frame_size, cfg.model.channels, cfg.data.stride)
            name = Path(upload).name
            notes = [f"your upload {name} (clear it to use the sample clips): {notes[0]}", self.upload_note, *notes[1:]]
            return clip[:context_frames], clip[context_frames:], name, notes
        elif sample in self.samples:
            clip, name, notes = self.samples[sample], sample, ["a test-split clip: no model was trained on it"]
        else:
            raise InputError("pick a sample clip or upload a video")
        return clip[: self.context_frames], clip[self.context_frames :], name, notes

    def run(
        self,
        sample: str | None,
        upload: str | None,
        horizon: int,
        steps: int,
        best_of: int,
        dit_steps: int,
        seed: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, object, str]:
        """-> (context strip, predictions-vs-truth strip, descent-steps strip, energy-map gallery, PSNR/energy
        figure, summary markdown)."""
        from ..video.rollout import copy_last_frame
        from .video_view import (
            comparison_strip,
            context_strip,
            energy_map_frames,
            horizon_figure,
            predict_story,
            steps_strip,
            story_summary,
        )

        horizon, seed = int(horizon), int(seed)
        context, truth, name, notes = self.clip(sample, upload, horizon)
        objective = self.upload_objective if upload else self.objective
        baselines = {"copy-last": copy_last_frame}
        if self.transformer is not None and objective is self.objective:  # the baselines of the samples' EBT
            baselines["transformer"] = self.transformer.rollout
        if self.dit is not None and objective is self.objective:
            baselines[f"DiT {int(dit_steps)} DDIM"] = partial(self.dit.rollout, num_steps=int(dit_steps), seed=seed)
        story = predict_story(objective, context, horizon, truth, int(steps), int(best_of), baselines, seed)
        story.name, story.notes = name, notes + self.notes
        return (
            context_strip(story),
            comparison_strip(story),
            steps_strip(story),
            energy_map_frames(story),
            horizon_figure(story),
            story_summary(story),
        )


def open_video_tab(
    checkpoint: str | Path | None = defaults.VIDEO_EBT,
    transformer_checkpoint: str | Path | None = defaults.VIDEO_TRANSFORMER,
    dit_checkpoint: str | Path | None = defaults.VIDEO_DIT,
) -> VideoTab | str:
    """The tab's handler, or (when the EBT cannot be loaded) the Markdown message the tab shows instead."""
    return open_tab("video", lambda: VideoTab(checkpoint or "", transformer_checkpoint, dit_checkpoint))


def build_video_tab(tab: VideoTab | str, workers: Workers | None = None) -> None:
    """The video tab's components and events (or its message), inside the app's ``gr.Blocks``."""
    import gradio as gr

    with gr.Tab("Video"):
        if isinstance(tab, str):
            gr.Markdown(tab, elem_id="video-unavailable")
            return
        cfg = tab.cfg
        trained = cfg.descent.num_steps
        gr.Markdown(
            f"The video EBT predicts each next frame by **descending its energy** from the last frame, "
            f"{tab.context_frames} real frames in, one frame at a time (each prediction joins the context of the "
            "next). Below: every descent step of every predicted frame, where the model is unsure (energy per "
            "patch), and the baselines on the same context."
        )
        if tab.notes:  # baselines left out, sample sources unavailable: said before the first click too
            gr.Markdown("\n\n".join(f"*{note}*" for note in tab.notes))
        with gr.Row():
            with gr.Column(scale=1):
                first = next(iter(tab.samples), None)
                sample = gr.Dropdown(list(tab.samples), value=first, label="Sample clip (test split, never trained on)")
                upload = gr.File(label=f"…or upload a video (≤ 100 MiB; its first {tab.context_frames} + horizon "
                                       "frames are used)", elem_id="video-upload")  # fmt: skip
                horizon = gr.Slider(1, cfg.horizon, value=cfg.horizon, step=1, label="Horizon: frames to predict")
                most = defaults.APP_MAX_STEPS
                start = min(tab.steps[0], most)
                steps = gr.Slider(1, most, value=start, step=1, elem_id="video-ebt-steps",
                                  label=f"EBT descent steps per frame (trained with {trained}; "
                                        f"starts at {tab.steps[0]}, {tab.steps[1]})")  # fmt: skip
                best_of = gr.Slider(1, defaults.APP_MAX_BEST_OF, value=1, step=1,
                                    label="Best-of-N per frame (lowest energy wins)")  # fmt: skip
                most_dit = defaults.APP_MAX_DIT_STEPS
                dit_default = min(tab.dit_steps[0], most_dit)
                dit_steps = gr.Slider(1, most_dit, value=dit_default, step=1, elem_id="video-dit-steps",
                                      label=f"DiT DDIM steps per frame ({tab.dit_steps[1]})",
                                      visible=tab.dit is not None)  # fmt: skip
                seed = gr.Number(0, precision=0, label="Seed (best-of-N starts, DiT noise)", elem_id="video-seed")
                run = gr.Button("Predict", variant="primary", elem_id="video-button")
            # the default clip's prediction, computed once now: the tab opens showing a result
            opening = initial_result(tab.run, first, None, cfg.horizon, start, 1, dit_default, 0)
            with gr.Column(scale=2):
                summary = gr.Markdown(initial(opening, 5), elem_id="video-summary")
                plot = gr.Plot(initial(opening, 4), label="PSNR and energy per predicted frame")
        image = partial(gr.Image, type="numpy", format="png", interactive=False)
        context = image(initial(opening, 0), label="Context: the real frames the models see", elem_id="video-context")
        comparison = image(initial(opening, 1), label="Predictions beside the truth (red frame = predicted)",
                           elem_id="video-comparison")  # fmt: skip
        descent = image(initial(opening, 2), label="EBT descent: each predicted frame after every step",
                        elem_id="video-steps")  # fmt: skip
        maps = step_gallery("Energy per patch of each predicted frame (bright = implausible; each map has its colour "
                            "bar)", 5, "video-maps", format="png", value=initial(opening, 3))  # fmt: skip
        run.click(
            without_traceback(tab.run, workers),
            [sample, upload, horizon, steps, best_of, dit_steps, seed],
            [context, comparison, descent, maps, plot, summary],
            concurrency_id=MODELS,
        )
