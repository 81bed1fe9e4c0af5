"""Linear probing of frozen features, following MAE's ``main_linprobe.py``: frozen backbone, mean-pooled token
features of one layer, ``BatchNorm1d(affine=False)`` then a linear head, no weight decay; top-1 and top-5.

Offline on Fashion-MNIST (the published 60k/10k split): 10,000 of the training images are the validation split on
which each method's layer and noise level are chosen; the probe is then trained on all 60,000 and reported on the
10,000 test images; few-shot probes use 10 and 100 images per class. Any ImageFolder tree works the same way.

Methods: an EBT and a DiT pre-trained by denoising the unlabelled training images (same size within 2%, same steps,
both told the noise level: the EBT is sigma-conditioned, the DiT has its timestep), the same two with random weights,
raw pixels, and the photo-trained shipped checkpoints (transfer). The EBT sees the image as both context and
candidate; the DiT sees x_t = sqrt(a) (x + u eps) at the timestep of the same sigma; both at every level of a sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ...core.progress import progress as progress_bar
from ...image.dit import DiTObjective
from ...image.labelled import LabelledImages
from ...image.noise import add_gaussian_noise, alphas_cumprod, sigma_to_timestep
from ...image.objective import DenoisingObjective

LEVELS = (0.0, 15.0, 30.0, 50.0)  # noise sigmas (0-255) the features are extracted at


def _noisy(images: Tensor, sigma: float, seed: int) -> Tensor:
    if sigma == 0:
        return images
    return add_gaussian_noise(images, sigma, torch.Generator().manual_seed(seed))


@torch.no_grad()
def ebt_features(objective: DenoisingObjective, images: Tensor, sigma: float, batch: int = 512) -> list[Tensor]:
    """(N, C, H, W) -> depth + 1 tensors (N, D): the image at ``sigma`` as context and candidate; a conditioned EBT is
    told the sigma."""
    model = objective.model.eval()
    told = torch.full((1,), sigma) if model.cfg.sigma_conditioning else None
    layers: list[list[Tensor]] = [[] for _ in range(model.cfg.depth + 1)]
    for start in range(0, len(images), batch):
        x = _noisy(images[start : start + batch], sigma, start)
        sigma_batch = None if told is None else told.expand(len(x))
        for chunks, features in zip(layers, model.layer_features(x, x, sigma_batch), strict=True):
            chunks.append(features)
    return [torch.cat(chunks) for chunks in layers]


@torch.no_grad()
def dit_features(objective: DiTObjective, images: Tensor, sigma: float, batch: int = 512) -> list[Tensor]:
    """(N, C, H, W) -> depth + 1 tensors (N, D): diffusers' patch embedding and every transformer block's output
    (forward hooks), mean-pooled, for x_t at the timestep of ``sigma``."""
    transformer = objective.model.transformer.eval()
    t = sigma_to_timestep(sigma)
    scale = float(alphas_cumprod()[t].sqrt())
    captured: list[Tensor] = []
    modules = [transformer.pos_embed, *transformer.transformer_blocks]
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out.mean(dim=1))) for m in modules]
    layers: list[list[Tensor]] = [[] for _ in modules]
    try:
        for start in range(0, len(images), batch):
            captured.clear()
            objective.model(_noisy(images[start : start + batch], sigma, start) * scale, torch.tensor([t]))
            for i, features in enumerate(captured):
                layers[i].append(features)
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(chunks) for chunks in layers]


def pixel_features(images: Tensor, sigma: float, batch: int = 512) -> list[Tensor]:
    """Raw pixels, flattened: the control every representation should beat."""
    return [images.flatten(1)]


Extractor = Callable[[Tensor, float], list[Tensor]]


def cached_features(path: Path, extractor: Extractor, images: Tensor, levels=LEVELS) -> dict[tuple[int, float], Tensor]:
    """{(layer, level): (N, D)} extracted once and cached in ``path`` (safetensors), so sweeps are cheap."""
    if path.is_file():
        stored = load_file(str(path))
        return {(int(k.split("@")[0]), float(k.split("@")[1])): v for k, v in stored.items()}
    features = {}
    for level in progress_bar(levels, desc=f"features {path.stem}", unit="level"):
        for layer, values in enumerate(extractor(images, level)):
            features[(layer, level)] = values.float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"{layer}@{level:g}": v for (layer, level), v in features.items()}, str(path))
    return features


@dataclass(frozen=True)
class ProbeSettings:
    """Optimisation of every probe. Counted in steps, not epochs, so few-shot probes (100 images) train as long as
    full ones."""

    steps: int = 2000
    batch: int = 512
    lr: float = 3e-3


class LinearProbe(nn.Module):
    """MAE's probe head: BatchNorm1d without affine (a per-feature standardisation) and a linear classifier."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.norm(features))


def train_probe(features: Tensor, labels: Tensor, classes: int, settings: ProbeSettings, seed: int = 0) -> LinearProbe:
    """A linear probe fitted on frozen ``features`` (N, D): AdamW without weight decay, cosine schedule, random
    mini-batches (the whole set when it is smaller than a batch)."""
    torch.manual_seed(seed)
    probe = LinearProbe(features.shape[1], classes)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=settings.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    generator = torch.Generator().manual_seed(seed)
    batch = min(settings.batch, len(features))
    for _ in range(settings.steps):
        index = torch.randperm(len(features), generator=generator)[:batch]
        loss = nn.functional.cross_entropy(probe(features[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return probe.eval()


@torch.no_grad()
def accuracy(probe: LinearProbe, features: Tensor, labels: Tensor, classes: int) -> tuple[float, float]:
    """(top-1, top-5) in percent, with torchmetrics (with 5 classes or fewer, top-5 is 100% by definition)."""
    from torchmetrics.functional.classification import multiclass_accuracy

    logits = probe(features)
    top = [multiclass_accuracy(logits, labels, num_classes=classes, top_k=min(k, classes), average="micro")
           if k < classes else torch.tensor(1.0) for k in (1, 5)]  # fmt: skip
    return 100 * float(top[0]), 100 * float(top[1])


def split_validation(train: LabelledImages, count: int = 10_000, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Indices of the probe-training and validation parts of the training set (fixed by the seed): ``count``
    images (at most a sixth of the set) held out for choosing the layer and noise level."""
    count = min(count, len(train) // 6)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return order[count:], order[:count]
