"""``ebt-vision probe``: pre-train (or load) the backbones, extract and cache features, sweep layers and noise levels
on the validation split, probe on the full training set, report top-1/top-5 (full and few-shot) on the test set."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...core import defaults
from ...core.checkpoint import load_trained
from ...core.config import with_overrides
from ...core.data_check import check_data
from ...core.errors import InputError
from ...core.layers import count_parameters
from ...core.progress import progress as progress_bar
from ...core.reports import make_meta, markdown_table, write_report
from ...core.train import seed_everything, train
from ...image.config import ImageConfig
from ...image.dit import DiTObjective
from ...image.labelled import LabelledImages, fashion_mnist, few_shot, image_folder
from ...image.objective import DenoisingObjective
from ...image.plain import PlainDenoisingObjective
from ...image.training import make_sampler
from .probe import (
    LEVELS,
    ProbeSettings,
    accuracy,
    cached_features,
    dit_features,
    ebt_features,
    pixel_features,
    split_validation,
    train_probe,
)

SHIPPED = {"ebt-photo": defaults.IMAGE_EBT, "dit-photo": defaults.IMAGE_DIT}
SHOTS = (10, 100)


@dataclass
class Backbone:
    name: str
    extract: object  # (images, sigma) -> list of (N, D) per layer
    channels: int
    params: int
    note: str
    levels: tuple[float, ...] = LEVELS  # noise levels swept (extraction over 70,000 images costs minutes per level)


def warm_stage(cfg: ImageConfig, warm: ImageConfig, trunk: Path) -> ImageConfig:
    """The EBT stage of the shipped recipe (``warm``, e.g. configs/cpu-small-warm.yaml) on the probe's data: its
    energy, descent, optimiser and steps, the probe's images, channels and seed, started from ``trunk``."""
    return replace(
        warm,
        name=f"{cfg.name}-ebt",
        data=replace(warm.data, source=cfg.data.source, crop_size=cfg.data.crop_size),
        model=replace(warm.model, channels=cfg.model.channels),
        train=replace(warm.train, init_from=str(trunk), seed=cfg.train.seed),
    )


def dit_name(cfg: ImageConfig, steps: int) -> str:
    """``dit`` for the DiT pre-trained for the config's steps, ``dit-<steps>`` for one given other steps."""
    return "dit" if steps == cfg.train.steps else f"dit-{steps}"


def pretrain(cfg: ImageConfig, run_root: Path, progress: bool = True, warm: ImageConfig | None = None,
             dit_steps: tuple[int, ...] = ()) -> dict[str, torch.nn.Module]:  # fmt: skip
    """The EBT and the DiT (timestep-conditioned), denoising the unlabelled training images; resumable under
    ``run_root/<name>``.

    With ``warm`` the EBT is pre-trained as the shipped denoiser is: its trunk as a plain one-pass denoiser with
    ``cfg`` (the DiT's steps, under ``run_root/trunk``), then ``warm``'s EBT stage started from it. Without, the EBT
    is sigma-conditioned (told the noise level, as the DiT is told its timestep) and trained with ``cfg`` alone.
    ``dit_steps``: the DiT's pre-training step counts (one DiT each, ``dit_name``; default: the config's)."""
    dits = [(dit_name(cfg, steps), replace(cfg, name=f"{cfg.name}-{dit_name(cfg, steps)}",
                                           model=replace(cfg.model, sigma_conditioning=False),
                                           train=replace(cfg.train, steps=steps)), DiTObjective)
            for steps in dit_steps or (cfg.train.steps,)]  # fmt: skip
    if warm is None:
        stages = [("ebt", replace(cfg, name=f"{cfg.name}-ebt", model=replace(cfg.model, sigma_conditioning=True)),
                   DenoisingObjective)]  # fmt: skip
    else:
        trunk_cfg = replace(cfg, name=f"{cfg.name}-trunk", model=replace(cfg.model, sigma_conditioning=False))
        stages = [("trunk", trunk_cfg, PlainDenoisingObjective),
                  ("ebt", warm_stage(cfg, warm, run_root / "trunk"), DenoisingObjective)]  # fmt: skip
    trained = {}
    for name, model_cfg, build in (*stages, *dits):
        seed_everything(model_cfg.train.seed)
        objective = build(model_cfg)
        sampler = make_sampler(model_cfg)
        train(objective, iter(sampler), model_cfg, run_root / name, True, sampler, progress)
        trained[name] = objective.eval()
    return trained


def _ebt_note(ebt: DenoisingObjective, trunk_steps: int) -> str:
    m = ebt.cfg.model
    if ebt.cfg.train.init_from:
        return (f"the shipped recipe: trunk {trunk_steps} steps as a plain denoiser, then {ebt.cfg.train.steps} "
                f"EBT steps from it ({m.energy} energy{', read against the noisy image' if m.relative_to_noisy else ''}"
                f"{', sigma-conditioned' if m.sigma_conditioning else ', blind'})")  # fmt: skip
    return f"pre-trained by denoising{', sigma-conditioned' if m.sigma_conditioning else ''}"


def backbones(cfg: ImageConfig, trained: dict[str, torch.nn.Module]) -> list[Backbone]:
    """Every method: pre-trained, random-init controls, raw pixels, and the photo-trained shipped checkpoints."""
    seed_everything(cfg.train.seed)
    random_ebt = DenoisingObjective(trained["ebt"].cfg).eval()
    random_dit = DiTObjective(cfg).eval()
    out = [
        Backbone("ebt", partial(ebt_features, trained["ebt"]), cfg.model.channels,
                 count_parameters(trained["ebt"].model), _ebt_note(trained["ebt"], cfg.train.steps)),
        *(Backbone(name, partial(dit_features, model), cfg.model.channels, count_parameters(model.model),
                   f"pre-trained by denoising (DDPM), timestep-conditioned, {model.cfg.train.steps} steps")
          for name, model in trained.items() if name.startswith("dit")),
        Backbone("ebt-random", partial(ebt_features, random_ebt), cfg.model.channels,
                 count_parameters(random_ebt.model), "random weights (adaLN-Zero: blocks start as the identity)",
                 (0.0,)),
        Backbone("dit-random", partial(dit_features, random_dit), cfg.model.channels,
                 count_parameters(random_dit.model), "random weights (diffusers' initialisation)", (0.0,)),
        Backbone("pixels", pixel_features, cfg.model.channels, 0, "raw pixels", (0.0,)),
    ]  # fmt: skip
    for name, path in SHIPPED.items():
        build = DenoisingObjective if name.startswith("ebt") else DiTObjective
        model = load_trained(path, build, name)[0]
        extract = ebt_features if name.startswith("ebt") else dit_features
        out.append(Backbone(name, partial(extract, model), model.cfg.model.channels, count_parameters(model.model),
                            f"shipped {path}, trained on photos (transfer)", (0.0, 30.0)))  # fmt: skip
    return out


def _as_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    return images if images.shape[1] == channels else images[:, :1].expand(-1, channels, -1, -1)


def evaluate_backbone(backbone: Backbone, train_set: LabelledImages, test_set: LabelledImages, cache: Path,
                      settings: ProbeSettings, seeds: int = 3) -> dict:  # fmt: skip
    """Sweep (layer, level) on validation; probe the chosen one on the full training set (test top-1/top-5) and on
    10 and 100 images per class (mean over ``seeds`` draws)."""
    classes = len(train_set.classes)
    images = _as_channels(torch.cat([train_set.images, test_set.images]), backbone.channels)
    features = cached_features(cache / f"{backbone.name}.safetensors", backbone.extract, images, backbone.levels)
    n_train = len(train_set)
    fit, held = split_validation(train_set)
    sweep = []
    for (layer, level), values in sorted(features.items()):
        probe = train_probe(values[fit], train_set.labels[fit], classes, settings)
        top1, _ = accuracy(probe, values[held], train_set.labels[held], classes)
        sweep.append({"method": backbone.name, "layer": layer, "noise_level": level, "validation_top1": top1})
    chosen = max(sweep, key=lambda r: r["validation_top1"])
    values = features[(chosen["layer"], chosen["noise_level"])]
    train_values, test_values = values[:n_train], values[n_train:]
    probe = train_probe(train_values, train_set.labels, classes, settings)
    top1, top5 = accuracy(probe, test_values, test_set.labels, classes)
    result = {"method": backbone.name, "params": backbone.params, "note": backbone.note, "layer": chosen["layer"],
              "noise_level": chosen["noise_level"], "validation_top1": chosen["validation_top1"], "top1": top1,
              "top5": top5}  # fmt: skip
    smallest = int(torch.bincount(train_set.labels, minlength=classes).min())
    for shots in SHOTS:
        if shots > smallest:  # a quick look on a subset: not enough images of some class
            result |= {f"top1_{shots}shot": float("nan"), f"top1_{shots}shot_sd": float("nan"),
                       f"top5_{shots}shot": float("nan")}  # fmt: skip
            continue
        scores = []
        for seed in range(seeds):
            subset = few_shot(LabelledImages(train_values, train_set.labels, train_set.classes), shots, seed)
            few = train_probe(subset.images, subset.labels, classes, settings, seed)
            scores.append(accuracy(few, test_values, test_set.labels, classes))
        result[f"top1_{shots}shot"] = float(np.mean([s[0] for s in scores]))
        result[f"top1_{shots}shot_sd"] = float(np.std([s[0] for s in scores]))
        result[f"top5_{shots}shot"] = float(np.mean([s[1] for s in scores]))
    return {"result": result, "sweep": sweep}


@dataclass(frozen=True)
class ProbeOptions:
    """How every probe is optimised (``settings``); the first ``limit`` training images only (a quick look);
    ``folder``: an ImageFolder tree (``train/`` and ``val/`` of class sub-folders, e.g. ImageNet) instead of
    Fashion-MNIST, on whose ``train/`` images the backbones then pre-train (in colour); ``warm``: the EBT stage of
    a two-stage pre-training; ``dit_steps``: the DiTs' pre-training steps (see ``pretrain``)."""

    settings: ProbeSettings = field(default_factory=ProbeSettings)
    limit: int | None = None
    folder: str | Path | None = None
    stem: str = "probe"
    warm: ImageConfig | None = None
    dit_steps: tuple[int, ...] = ()


def folder_config(cfg: ImageConfig, folder: str | Path) -> ImageConfig:
    """``cfg`` pre-training on an ImageFolder tree's ``train/`` images, in colour, under its own run name."""
    folder = Path(folder)
    if not (folder / "train").is_dir() or not (folder / "val").is_dir():
        raise InputError(f"--data {folder}: expected train/ and val/ folders of class sub-folders")
    return with_overrides(cfg, [f"name={cfg.name}-{folder.name}", f"data.source={folder / 'train'}",
                                "model.channels=3"])  # fmt: skip


def _probe_sets(cfg: ImageConfig, folder: str | Path | None) -> tuple[LabelledImages, LabelledImages, str]:
    """(probe-training set, test set, what they are)."""
    size, channels = cfg.data.crop_size, cfg.model.channels
    if folder is None:
        dataset = "Fashion-MNIST (Debian dataset-fashion-mnist)"
        return fashion_mnist("train", size, channels), fashion_mnist("test", size, channels), dataset
    train_set, test_set = image_folder(folder, "train", size, channels), image_folder(folder, "val", size, channels)
    return train_set, test_set, f"ImageFolder {folder} ({len(train_set.classes)} classes; train/ to fit, val/ to test)"


def run_probe(cfg: ImageConfig, runs: str | Path | None = None, out: str | Path | None = None,
              options: ProbeOptions = ProbeOptions(), progress: bool = True) -> Path:  # fmt: skip
    """``ebt-vision probe``: pre-train, extract, sweep, probe; write ``<stem>.{md,json,png}`` to ``out`` (default:
    ``runs``, itself by default ``runs/<config name>``)."""
    if options.folder is not None:
        cfg = folder_config(cfg, options.folder)
    check_data(cfg)  # the pre-training images and the probe's train and test sets, before pre-training
    run_root = Path(runs or f"runs/{cfg.name}")
    settings, limit = options.settings, options.limit
    trained = pretrain(cfg, run_root, progress, options.warm, options.dit_steps)
    train_set, test_set, dataset = _probe_sets(cfg, options.folder)
    if limit:
        train_set = train_set.subset(torch.arange(min(limit, len(train_set))))
        test_set = test_set.subset(torch.arange(min(limit // 6 + 1, len(test_set))))
    results, sweeps = [], []
    cache = run_root / f"features-{len(train_set)}-{len(test_set)}"
    for backbone in progress_bar(backbones(cfg, trained), desc="probe", unit="method", disable=not progress):
        evaluated = evaluate_backbone(backbone, train_set, test_set, cache, settings)
        results.append(evaluated["result"])
        sweeps += evaluated["sweep"]
    held = len(split_validation(train_set)[1])
    data = (f"{dataset}: probe trained on {len(train_set)} training images "
            f"(layer and noise level chosen on {held:,} of them held out), reported on {len(test_set)} test images, "
            f"{cfg.data.crop_size}px")  # fmt: skip
    meta = make_meta(torch.device("cpu"), cfg.train.seed, data, _budget(cfg, trained, run_root))
    return write_probe_report(results, sweeps, meta, settings, Path(out or run_root), options.stem)


def _budget(cfg: ImageConfig, trained: dict[str, torch.nn.Module], run_root: Path) -> str:
    """Each pre-trained model's steps and counted training FLOPs (the EBT's trunk included)."""
    from .compare.costs import training_compute

    ebt = trained["ebt"].cfg
    if ebt.train.init_from:
        parts = [f"the EBT's trunk {cfg.train.steps} steps, then {ebt.train.steps} EBT steps on 1-"
                 f"{ebt.descent.num_steps} step descents"]  # fmt: skip
    else:
        parts = [f"the EBT {ebt.train.steps} steps"]
    parts += [f"{name} {model.cfg.train.steps} steps" for name, model in trained.items() if name.startswith("dit")]
    flops = [f"{name} {training_compute(model, model.cfg.train.steps, run_root / name)[0] / 1e15:.3f}"
             for name, model in trained.items() if name != "trunk"]  # fmt: skip
    return f"pre-training, batch {cfg.data.batch_size}: {'; '.join(parts)}; counted training PFLOP: {', '.join(flops)}"


def _shots(row: dict, shots: int) -> str:
    mean, sd = row[f"top1_{shots}shot"], row[f"top1_{shots}shot_sd"]
    return "-" if mean != mean else f"{mean:.2f} ± {sd:.2f}"


def write_probe_report(results, sweeps, meta, settings: ProbeSettings, out: Path, stem: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    headers = ["method", "parameters", "layer (level)", "validation top-1", "test top-1", "test top-5",
               "10-shot top-1", "100-shot top-1", "what it is"]  # fmt: skip
    table = [[r["method"], f"{r['params'] / 1e6:.3f}M" if r["params"] else "-",
              f"{r['layer']} ({r['noise_level']:g})", f"{r['validation_top1']:.2f}", f"{r['top1']:.2f}",
              f"{r['top5']:.2f}", _shots(r, 10), _shots(r, 100), r["note"]] for r in results]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, method in enumerate(r["method"] for r in results if r["method"] != "pixels"):
        rows = [s for s in sweeps if s["method"] == method]
        layers = sorted({s["layer"] for s in rows})
        best = [max(s["validation_top1"] for s in rows if s["layer"] == layer) for layer in layers]
        ax.plot(layers, best, "o-", color=f"C{i}", label=method)
    pixels = next((r for r in results if r["method"] == "pixels"), None)
    if pixels:
        ax.axhline(pixels["validation_top1"], color="grey", linestyle=":", label="raw pixels")
    ax.set_xlabel("layer (0 = patch embedding)")
    ax.set_ylabel("validation top-1 (%), best noise level")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{stem}.png", dpi=110)
    plt.close(fig)
    body = (
        "Linear probes (BatchNorm1d without affine + linear head, AdamW without weight decay, "
        f"{settings.steps} steps of batch {settings.batch}, lr {settings.lr:g}, cosine) on frozen, mean-pooled token "
        "features. Each method's layer and noise level are "
        "chosen on the validation split; test top-1/top-5 in %; few-shot: mean ± sd over 3 draws.\n\n"
        f"{markdown_table(headers, table)}\n\n![validation top-1 per layer]({stem}.png)\n"
    )
    return write_report(out, stem, meta, results, body, sweep=sweeps)
