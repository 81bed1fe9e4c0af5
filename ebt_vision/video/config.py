"""The video workload's configuration: the causal video EBT's size, the clips it learns from, how a prediction starts,
and the diffusers DiT baseline."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..core.config import ExperimentConfig, TransformerConfig, check, check_energy_model, check_transformer
from ..core.streams import ON_ERROR
from .drift import MIN_SPEED

SOURCES = ("moving-mnist", "real-clips")  # or a path: a video file, a folder of videos, a folder of numbered frames
FORMATS = ("auto", "footage", "clips")
STARTS = ("last-frame", "noise", "guess")
LOWER_IS_BETTER = {"mse": True, "psnr": False}  # the metrics that can choose settings (``select_by``) and their sense
DIT_TARGETS = ("frame", "change")
DIT_PREDICTIONS = ("epsilon", "sample")


@dataclass(frozen=True)
class VideoModelConfig(TransformerConfig):
    patch_size: int = 8
    channels: int = 1  # 1: grey (Moving MNIST), 3: RGB; sources of the other kind are converted when read


@dataclass(frozen=True)
class VideoDataConfig:
    # "moving-mnist" (generated from real MNIST digits), "real-clips" (the offline footage of docs/data.md with a
    # fixed train/validation/test split, see ebt_vision.video.clips) or a path to your own video(s).
    source: str = "moving-mnist"
    # For a path: "footage" (videos decoded up front and split in time), "clips" (a clip dataset, one file per clip,
    # streamed by workers; ebt_vision.video.clip_files) or "auto" (clips for a folder of 10 or more video files).
    format: str = "auto"
    workers: int = 0  # DataLoader worker processes decoding clips (format clips; 0: in the training process)
    on_error: str = "raise"  # a clip that cannot be read: "raise" (one error naming it) or "skip" (counted)
    train_list: str = ""  # format clips: split lists (SSv2 .json, Kinetics .csv or a text list like UCF-101's);
    validation_list: str = ""  # without them clip i of the sorted files is validation when i % 10 == 3,
    test_list: str = ""  # test when i % 10 == 7, training otherwise
    frames: int = 20  # frames per clip: the model trains on all of them, predicting each from the real ones before
    context_frames: int = 10  # at test time: this many real frames in, frames - context_frames predicted out
    frame_size: int = 64  # square frames: the shorter side is resized to this, then centre-cropped
    stride: int = 1  # real footage: take every stride-th frame
    # Footage sources: this fraction of training windows is replaced by a slow camera drift over the window's first
    # frame (ebt_vision.video.drift; speeds log-uniform up to drift_speed pixels per clip frame), the sub-pixel
    # motion of hand-held footage that the training scenes lack.
    drift_fraction: float = 0.0
    drift_speed: float = 0.3
    batch_size: int = 16
    digits: int = 2  # Moving MNIST: digits bouncing in each clip
    validation_clips: int = 256  # Moving MNIST: fixed validation set (settings are chosen here)
    test_clips: int = 1000  # Moving MNIST: fixed test set from digits training never uses (OpenSTL's has 10,000)


@dataclass(frozen=True)
class PredictionConfig:
    """Where the descent for a next frame starts, in training and at test time."""

    # "last-frame": the newest real (or predicted) frame; "noise": Gaussian noise; "guess": the model's own one-pass
    # guess (the last frame plus a correction read off the real stream, trained beside the descent)
    start: str = "last-frame"
    # Best-of-N: every start after the first is perturbed by Gaussian noise of this std ([-1, 1] pixel units).
    start_noise: float = 0.1
    # The frame each prediction is measured from: last + extrapolate x (last - previous). 0: the last frame. The EBT's
    # energy reads candidates as changes from it and its descent starts there; the transformer corrects it.
    extrapolate: float = 0.0
    # With it, the gain is scaled per frame by how well the change before predicted the last change (least squares,
    # clamped to [0, 1]; video.rollout.Reference): a steady drift continues, an erratic change is not extrapolated.
    extrapolate_adaptive: bool = False
    # Training predicts the last this many frames of each clip, each from all the real frames before it (0: every
    # frame from the second on). Fewer candidates cost less: the candidate stream is half the EBT's tokens.
    train_frames: int = 0


@dataclass(frozen=True)
class VideoDiTConfig:
    """The diffusers DiT baseline: conditioned on the last ``data.context_frames`` frames (channel-concatenated with
    the noisy next frame), sized by width and depth to the EBT's parameter count."""

    sampling_steps: int = 10  # DDIM steps per predicted frame when a caller does not choose
    clip_sample: bool = True  # DDIM clips its x0 estimate to [-1, 1]
    # What the diffusion generates: "frame", the next frame itself, or "change", the next frame minus the last one
    # (halved, so it lies in [-1, 1]): zero change is then what the model starts from and what a still scene needs.
    target: str = "frame"
    # What the network outputs: "epsilon", the noise (DDPM's choice), or "sample", the clean target itself. Next-frame
    # prediction is nearly deterministic, and an epsilon network must be exact at the first DDIM step from pure noise
    # (its x0 estimate divides by sqrt(alpha_bar) = 0.006 at t = 999): on real footage it generated noise (10 dB).
    # "sample" with target "change" starts (zero-initialised output) at copying the last frame.
    prediction: str = "epsilon"


@dataclass(frozen=True)
class EBTTrunkConfig:
    """The video EBT's trunk where it differs from ``model`` (0: as ``model``). The EBT's descent step is a forward
    and a backward pass over the context and its candidate frame, the transformer's prediction one forward pass, so at
    equal trunks the EBT costs more per frame; a narrower or shallower EBT can be compared at equal or lower cost."""

    width: int = 0  # the EBT's model.width (0: model.width)
    depth: int = 0  # its model.depth (0: model.depth)
    heads: int = 0  # its model.heads (0: model.heads)


@dataclass(frozen=True)
class VideoConfig(ExperimentConfig):
    name: str = "ebt-video"
    task: str = "video"
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    prediction: PredictionConfig = field(default_factory=PredictionConfig)
    dit: VideoDiTConfig = field(default_factory=VideoDiTConfig)
    # The EBT's trunk where it differs from model's (width, depth, heads; 0: as model), e.g. narrower so that its
    # descent step costs no more per frame than the transformer's forward pass; the baselines keep model's trunk.
    ebt: EBTTrunkConfig = field(default_factory=EBTTrunkConfig)
    # The validation metric that chooses every setting (early stopping's weights, the EBT's steps, the DiT's DDIM
    # steps, the extrapolation gain): "mse", the mean MSE in OpenSTL's convention, which the clips with the most motion
    # dominate; or "psnr", the mean PSNR over clips (a mean log error, what train.loss log_mse trains for), in which a
    # nearly still clip predicted almost exactly counts as much as a shaking one.
    select_by: str = "mse"

    def ebt_model(self) -> VideoModelConfig:
        """``model`` with the ``ebt`` section's sizes: the trunk the video EBT is built with."""
        sizes = {k: v for k, v in vars(self.ebt).items() if v}
        return replace(self.model, **sizes)

    @property
    def horizon(self) -> int:
        """Frames predicted at test time (10 in the 10 -> 10 protocol)."""
        return self.data.frames - self.data.context_frames

    def validate(self) -> None:
        super().validate()
        m, d, p = self.model, self.data, self.prediction
        check(self.task == "video", f"a VideoConfig has task 'video', got {self.task!r}")
        check(self.select_by in LOWER_IS_BETTER, f"select_by must be mse or psnr, got {self.select_by!r}")
        check(min(vars(self.ebt).values()) >= 0, "ebt.width, ebt.depth and ebt.heads must be >= 0 (0: as model)")
        for section, trunk in (("model", m), ("ebt", self.ebt_model())):
            check_transformer(trunk, section)
            check(
                trunk.width % 4 == 0,
                f"{section}.width must be a multiple of 4 (2-D sin-cos positions), got {trunk.width}",
            )
        check_energy_model(m, self.descent)
        check(m.patch_size >= 1, f"model.patch_size must be >= 1, got {m.patch_size}")
        check(m.channels in (1, 3), f"model.channels must be 1 (grey) or 3 (RGB), got {m.channels}")
        check(d.frames >= 2, f"data.frames must be >= 2 (a frame and its successor), got {d.frames}")
        check(
            1 <= d.context_frames < d.frames,
            f"data.context_frames must be in [1, data.frames - 1] = [1, {d.frames - 1}], got {d.context_frames}",
        )
        check(
            d.frame_size >= m.patch_size and d.frame_size % m.patch_size == 0,
            f"data.frame_size {d.frame_size} must be a positive multiple of model.patch_size {m.patch_size}",
        )
        check(d.stride >= 1, f"data.stride must be >= 1, got {d.stride}")
        check(0 <= d.drift_fraction <= 1, f"data.drift_fraction must be in [0, 1], got {d.drift_fraction}")
        check(
            d.drift_fraction == 0 or d.source != "moving-mnist",
            "data.drift_fraction is for real footage (a camera drifting over its frames), not Moving MNIST",
        )
        check(
            d.drift_speed >= MIN_SPEED, f"data.drift_speed must be >= {MIN_SPEED} pixels per frame, got {d.drift_speed}"
        )
        check(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
        check(1 <= d.digits <= 4, f"data.digits must be in [1, 4], got {d.digits}")
        check(d.validation_clips >= 1 and d.test_clips >= 1, "data.validation_clips and data.test_clips must be >= 1")
        check(bool(d.source), "data.source must be moving-mnist, real-clips or a path")
        check(d.format in FORMATS, f"data.format must be one of {FORMATS}, got {d.format!r}")
        check(d.workers >= 0, f"data.workers must be >= 0, got {d.workers}")
        check(d.on_error in ON_ERROR, f"data.on_error must be one of {ON_ERROR}, got {d.on_error!r}")
        check(p.start in STARTS, f"prediction.start must be one of {STARTS}, got {p.start!r}")
        check(
            p.start != "guess" or self.descent.replay_buffer_size == 0,
            "prediction.start=guess does not combine with descent.replay_buffer_size > 0 (a replayed row's start "
            "would not be its guess)",
        )
        check(0 <= p.extrapolate <= 2, f"prediction.extrapolate must be in [0, 2], got {p.extrapolate}")
        check(
            not p.extrapolate_adaptive or p.extrapolate > 0,
            "prediction.extrapolate_adaptive scales prediction.extrapolate, which is 0 (the last frame)",
        )
        check(p.start_noise >= 0, f"prediction.start_noise must be >= 0, got {p.start_noise}")
        check(
            0 <= p.train_frames < d.frames,
            f"prediction.train_frames must be in [0, data.frames - 1] = [0, {d.frames - 1}], got {p.train_frames}",
        )
        check(self.dit.target in DIT_TARGETS, f"dit.target must be one of {DIT_TARGETS}, got {self.dit.target!r}")
        check(
            self.dit.prediction in DIT_PREDICTIONS,
            f"dit.prediction must be one of {DIT_PREDICTIONS}, got {self.dit.prediction!r}",
        )
        check(self.dit.sampling_steps >= 1, f"dit.sampling_steps must be >= 1, got {self.dit.sampling_steps}")
