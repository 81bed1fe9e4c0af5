"""``ebt-vision bench-data``: the streaming loaders measured on generated datasets of the size the issue asks for
(20,000 COCO-sized JPEGs and their tar shards, 20,000 clips, a 1 GB token file), written to ``reports/data.*``.

Every figure is measured here, on this machine, with the files in the page cache: images (clips, windows) per second
with 0, 1 and 2 workers (median of ``repeats``); the training process's resident memory at 1,000 vs 20,000 files;
the data-wait fraction of training runs the size of the Quick start (and of the real-footage video and the text
configs); kill -9 and resume with workers against an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.config import read_yaml
from ...core.paths import data_root, resolve_path
from ...text.corpora import SOTU_FOLDER
from . import generate, measure
from .report import write_data_report


@dataclass(frozen=True)
class DataBenchOptions:
    tmp: str = "/tmp/ebt-bench-data"  # generated data and runs (never the repository)
    photos: int = 20_000
    small: int = 1_000  # the smaller tree of the memory comparison
    clips: int = 20_000
    workers: tuple[int, ...] = (0, 1, 2)
    repeats: int = 3  # throughput measurements per case (the median is reported)
    batches: int = 20  # batches per throughput measurement
    memory_batches: int = 200  # batches read before memory is measured
    image_steps: int = 150  # steps of each data-wait training run
    video_steps: int = 30
    text_steps: int = 60
    resume_steps: int = 40  # each kill -9 run: killed after half of them, checkpoints every tenth
    stem: str = "data"


def config_values(path: str, **data) -> dict:
    """A shipped config as a dict, with ``data`` settings replaced."""
    values = read_yaml(resolve_path(path, "config file"))
    return {**values, "data": {**values.get("data", {}), **data}}


def _median_rate(values: dict, options: DataBenchOptions) -> dict:
    runs = [measure.stream_rate(values, options.batches) for _ in range(options.repeats)]
    return {"per_s": float(np.median(runs)), "runs": runs}


PHOTO_SETTINGS = {
    "quickstart": dict(crop_size=32, batch_size=32),  # random 32 px crops of the full-size photo
    "coco-128": dict(crop_size=128, resize=128, batch_size=32),  # shorter side to 128 (JPEG draft decoding), crop 128
}


def photo_rates(tree: Path, shards: Path, options: DataBenchOptions) -> list[dict]:
    rows = []
    for fmt, source in (("folder", tree), ("webdataset", shards)):
        for setting, data in PHOTO_SETTINGS.items():
            for workers in options.workers:
                values = config_values("configs/quickstart.yaml", source=str(source), workers=workers, **data)
                rate = _median_rate(values, options)
                rows.append({"section": "photo_rate", "format": fmt, "setting": setting, "workers": workers,
                             "images_per_s": rate["per_s"], "runs": rate["runs"]})  # fmt: skip
    return rows


def photo_memory(tree: Path, tmp: Path, options: DataBenchOptions) -> list[dict]:
    small_tree = tree / "part00"
    small_shards = generate.shard_copy(small_tree, tmp / "shards-1k")
    cases = [
        ("folder", options.small, small_tree, 2), ("folder", options.photos, tree, 2),
        ("webdataset", options.small, small_shards, 2), ("webdataset", options.photos, tmp / "shards", 2),
        ("memory", options.small, small_tree, 0),
    ]  # fmt: skip
    rows = []
    for fmt, count, source, workers in cases:
        values = config_values("configs/quickstart.yaml", source=str(source), format=fmt, workers=workers)
        batches = options.memory_batches if fmt != "memory" else 20
        rows.append({"section": "memory", "data": "photos", "format": fmt, "files": count, "workers": workers,
                     "batches": batches, **measure.memory_probe(values, batches)})  # fmt: skip
    return rows


def data_wait_runs(name: str, config: str, overrides: list[str], workers: tuple, steps: int, tmp: Path) -> list:
    rows = []
    for count in workers:
        out = tmp / "runs" / f"{name}-w{count}"
        shutil.rmtree(out, ignore_errors=True)
        workers_set = [] if count is None else [f"data.workers={count}"]  # text reads its memory map in-process
        sets = [*overrides, *workers_set, f"train.steps={steps}", f"train.log_every={max(1, steps // 10)}",
                f"train.checkpoint_every={steps}"]  # fmt: skip
        rows.append({"section": "data_wait", "data": name, "workers": count, **measure.training_run(config, sets, out)})
    return rows


def video_rows(clips: Path, options: DataBenchOptions, tmp: Path) -> list[dict]:
    data = dict(source=str(clips), format="clips")
    rows = []
    for workers in options.workers:
        rate = _median_rate(config_values("configs/video-real-cpu.yaml", workers=workers, **data), options)
        rows.append({"section": "clip_rate", "workers": workers, "clips_per_s": rate["per_s"], "runs": rate["runs"]})
    batches = options.memory_batches // 2
    for count, source in ((options.small, clips / "part00"), (options.clips, clips)):
        values = config_values("configs/video-real-cpu.yaml", workers=2, source=str(source), format="clips")
        probe = measure.memory_probe(values, batches)
        rows.append({"section": "memory", "data": "clips", "format": "clips", "files": count, "workers": 2,
                     "batches": batches, **probe})  # fmt: skip
    overrides = [f"data.source={clips}", "data.format=clips"]
    return rows + data_wait_runs("clips", "configs/video-real-cpu.yaml", overrides, options.workers,
                                 options.video_steps, tmp)  # fmt: skip


def text_rows(small: Path, large: Path, prepare_seconds: float, options: DataBenchOptions, tmp: Path) -> list[dict]:
    rows = []
    for name, corpus in (("sotu", small), ("tiled-1gb", large)):
        values = config_values("configs/text-cpu.yaml", corpus=str(corpus))
        rate = _median_rate(values, DataBenchOptions(repeats=options.repeats, batches=options.batches * 50))
        size = (corpus / "train.bin").stat().st_size / 2**20
        rows.append({"section": "text", "corpus": name, "train_bin_mib": size, "windows_per_s": rate["per_s"],
                     **measure.memory_probe(values, options.memory_batches * 25)})  # fmt: skip
    corpus_mb = sum(f.stat().st_size for f in (data_root() / SOTU_FOLDER).glob("*.txt")) / 1e6
    rows.append({"section": "prepare_text", "corpus_mb": corpus_mb, "seconds": prepare_seconds,
                 "mb_per_s": corpus_mb / prepare_seconds if prepare_seconds > 0 else float("nan")})  # fmt: skip
    return rows + data_wait_runs("text", "configs/text-cpu.yaml", [f"data.corpus={large}"], (None,),
                                 options.text_steps, tmp)  # fmt: skip


def resume_rows(tree: Path, shards: Path, clips: Path, tmp: Path, steps: int) -> list[dict]:
    small = ["model.width=32", "model.depth=1", "model.heads=2"]
    every = max(1, steps // 10)
    loop = ["data.workers=2", f"train.steps={steps}", f"train.checkpoint_every={every}", f"train.log_every={every}"]
    cases = [
        ("photos, folder", "configs/quickstart.yaml", [f"data.source={tree}", *loop]),
        ("photos, tar shards", "configs/quickstart.yaml", [f"data.source={shards}", *loop]),
        ("clips", "configs/video-real-cpu.yaml", [f"data.source={clips}", "data.format=clips", *small, *loop]),
    ]
    rows = []
    for name, config, overrides in cases:
        folder = tmp / "resume" / name.replace(", ", "-").replace(" ", "-")
        shutil.rmtree(folder, ignore_errors=True)
        result = measure.kill_and_resume(config, overrides, folder, steps // 2)
        rows.append({"section": "resume", "data": name, "steps": steps, **result})
    return rows


def run_data_bench(out: str | Path, options: DataBenchOptions = DataBenchOptions()) -> Path:
    """Generate (or reuse) the datasets under ``options.tmp``, measure everything, write ``out/<stem>.*``."""
    tmp = Path(options.tmp)
    load = [os.getloadavg()]
    tree = generate.photo_tree(tmp / "photos", options.photos)
    shards = generate.shard_copy(tree, tmp / "shards")
    clips = generate.clip_tree(tmp / "clips", options.clips) / "clips"
    small, large, prepare_seconds = generate.token_files(tmp / "tokens")
    rows = photo_rates(tree, shards, options) + photo_memory(tree, tmp, options)
    quickstart = [f"data.source={tree}"]
    rows += data_wait_runs("photos", "configs/quickstart.yaml", quickstart, options.workers, options.image_steps, tmp)
    rows += data_wait_runs("packaged", "configs/quickstart.yaml", [], (0,), options.image_steps, tmp)
    rows += video_rows(clips, options, tmp) + text_rows(small, large, prepare_seconds, options, tmp)
    rows += resume_rows(tree, shards, clips, tmp, options.resume_steps)
    load.append(os.getloadavg())
    (tmp / "rows.json").write_text(json.dumps({"rows": rows, "load": load}))  # to rewrite the report without rerunning
    return write_data_report(rows, options, load, out)
