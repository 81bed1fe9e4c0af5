"""The whole video comparison: train (or load) the contenders, evaluate on validation and test, write the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...core.config import with_overrides
from ...core.data_check import check_data
from ...core.reports import make_meta
from ...core.train import resolve_device
from ...video.config import VideoConfig
from ...video.data import describe_source
from ...video.loading import write_chosen_steps
from .contenders import COMPUTE_MATCHED, kind_of, load_contenders, train_contenders
from .evaluation import EvalOptions, evaluate_split, predictions_for_strips, setting_costs, settings
from .report import choose, summarise, write_strips, write_video_report


@dataclass(frozen=True)
class VideoCompareOptions:
    evaluation: EvalOptions = field(default_factory=EvalOptions)
    compute_matched: bool = True  # also train the DiT for the EBT's training FLOPs
    strip_clips: int = 3  # test clips shown as GIF strips
    load: bool = False  # evaluate finished runs without training
    device: str = "auto"
    stem: str = ""  # default: video_mmnist for Moving MNIST, video_real otherwise


def default_stem(cfg: VideoConfig) -> str:
    return "video_mmnist" if cfg.data.source == "moving-mnist" else "video_real"


def is_standard_protocol(cfg: VideoConfig) -> bool:
    """Moving MNIST as OpenSTL evaluates it: 64x64, 10 frames in, 10 out."""
    d = cfg.data
    return d.source == "moving-mnist" and (d.frame_size, d.frames, d.context_frames, d.digits) == (64, 20, 10, 2)


RECORDED = {"ebt": "ebt", "dit": "dit_ddim"}  # model folder -> the method whose steps per frame are recorded there


def _record_chosen_steps(summary: list[dict], runs: Path, chosen_on: str, metric: str) -> None:
    """Write the step counts chosen on validation (the EBT's plain descent, the DiT's DDIM) into the models' folders
    (``predict``'s and the app's defaults), when the folders are there."""
    for folder, method in RECORDED.items():
        # (folders are named by model)
        plain = choose(summary, lambda row, m=method: row["method"] == m, metric).get(folder)
        if plain is not None and (runs / folder / "model.safetensors").is_file():
            write_chosen_steps(runs / folder, int(plain["steps"]), chosen_on)


def run_video_comparison(
    cfg: VideoConfig, runs: str | Path, out: str | Path, options: VideoCompareOptions, progress: bool = True
) -> Path:
    """Train (or resume, or load) every contender under ``runs`` on one clip stream, evaluate every setting on the
    validation and test splits, and write ``<stem>.{md,json,png}`` and GIF strips to ``out``. Returns the .md path."""
    check_data(cfg, ("validation", "test") if options.load else ("train", "validation", "test"))  # before training
    device = resolve_device(options.device if options.device != "auto" else cfg.train.device)
    if options.load:
        contenders = load_contenders(runs, device)
    else:
        run_cfg = cfg if options.device == "auto" else with_overrides(cfg, [f"train.device={device}"])
        contenders = train_contenders(run_cfg, runs, options.compute_matched, progress)
    found = settings(contenders, cfg, options.evaluation)
    costs = setting_costs(contenders, cfg, found)
    rows, uncertainty, names = [], [], {}
    for split in ("validation", "test"):
        result = evaluate_split(contenders, cfg, split, found, costs, options.evaluation, progress)
        rows += result.rows
        uncertainty += result.uncertainty
        names[split] = result.names
    stem = options.stem or default_stem(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, strips = summarise(rows), []
    _record_chosen_steps(summary, Path(runs), f"{len(names['validation'])} validation clips, {stem}.md", cfg.select_by)
    if options.strip_clips:
        by_label = {s.label: s for s in found}
        chosen = {model: by_label[row["chosen"]] for model, row in choose(summary, metric=cfg.select_by).items()}
        frames = predictions_for_strips(contenders, cfg, chosen, options.strip_clips, options.evaluation.seed)
        strips = write_strips(out, stem, frames, cfg.data.context_frames)
    parts = [f"{contenders['ebt'].steps} steps of {cfg.data.batch_size} clips of {cfg.data.frames} frames per model"]
    matched = [f"{kind_of(name)} {contenders[name].steps}" for name in COMPUTE_MATCHED if name in contenders]
    if matched:
        parts.append(f"compute-matched (the EBT's training FLOPs): {', '.join(matched)} steps")
    parts.append(", ".join(f"{c.name} {c.seconds / 60:.1f} min" for c in contenders.values()))
    budget = "; ".join(parts)
    meta = make_meta(device, options.evaluation.seed, describe_source(cfg), budget)
    return write_video_report(
        rows,
        uncertainty,
        contenders,
        meta,
        out,
        stem,
        cfg.descent.num_steps,
        names,
        strips,
        mmnist_protocol=is_standard_protocol(cfg),
        select_by=cfg.select_by,
    )
