"""``reports/data.*``: the data benchmark's tables, their reading, and one figure."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ...core.reports import make_meta, markdown_table, write_report

NOTE = (
    "Measured on a 2-core x86_64 CPU without a GPU, shared with other jobs while this ran (load averages {load}): "
    "throughputs are medians of {repeats} runs and vary between runs by the other jobs' load. Every file was in the "
    "page cache (the generated data is a few GB on local disk; 23 GiB of memory), so these are decode-bound figures, "
    "not disk-bound ones. The clip dataset holds 200 distinct MJPEG clips hard-linked to 20,000 entries: the "
    "loader opens and decodes a clip per sample whatever its content."
)


def _select(rows: list[dict], section: str, **match) -> list[dict]:
    return [r for r in rows if r["section"] == section and all(r.get(k) == v for k, v in match.items())]


def _rate_table(rows: list[dict], options) -> str:
    lines = []
    for fmt in ("folder", "webdataset"):
        for setting in ("quickstart", "coco-128"):
            cells = {r["workers"]: r["images_per_s"] for r in _select(rows, "photo_rate", format=fmt, setting=setting)}
            lines.append([fmt, setting, *(f"{cells[w]:.0f}" for w in options.workers)])
    clips = {r["workers"]: r["clips_per_s"] for r in _select(rows, "clip_rate")}
    lines.append(["clips (decord)", "video-real-cpu", *(f"{clips[w]:.1f}" for w in options.workers)])
    headers = ["data", "setting", *(f"{w} workers: per s" for w in options.workers)]
    return markdown_table(headers, lines)


def _memory_table(rows: list[dict]) -> str:
    lines = [[r["data"], r["format"], f"{r['files']:,}", r["workers"], f"{r['main_rss_mib']:.0f}",
              f"{r['main_anon_mib']:.0f}", f"{r['workers_pss_mib']:.0f}"] for r in _select(rows, "memory")]  # fmt: skip
    for r in _select(rows, "text"):
        lines.append(["tokens", f"memmap {r['train_bin_mib']:.0f} MiB", r["corpus"], 0, f"{r['main_rss_mib']:.0f}",
                      f"{r['main_anon_mib']:.0f}", "-"])  # fmt: skip
    headers = ["data", "format", "files", "workers", "training process RSS (MiB)", "of it anonymous", "workers' PSS"]
    return markdown_table(headers, lines)


def _wait_table(rows: list[dict]) -> str:
    lines = [[r["data"], "-" if r["workers"] is None else r["workers"], f"{100 * r['data_wait']:.1f}%",
              f"{100 * r['data_wait_max']:.1f}%", f"{r['samples_per_s']:.0f}", f"{r['s_per_step']:.3f}"]
             for r in _select(rows, "data_wait")]  # fmt: skip
    headers = ["training run", "workers", "data wait (mean)", "(worst interval)", "samples/s", "s/step"]
    return markdown_table(headers, lines)


def _resume_table(rows: list[dict]) -> str:
    lines = [[r["data"], r["killed_at_step"], "yes" if r["bitwise_equal"] else "no", f"{r['max_abs_difference']:.3g}",
              r["tensors"]] for r in _select(rows, "resume")]  # fmt: skip
    return markdown_table(
        ["data (2 workers)", "killed after checkpoint", "bitwise equal", "max abs diff", "tensors"], lines
    )


def _plot(rows: list[dict], options, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for fmt in ("folder", "webdataset"):
        for setting in ("quickstart", "coco-128"):
            picked = _select(rows, "photo_rate", format=fmt, setting=setting)
            axes[0].plot([r["workers"] for r in picked], [r["images_per_s"] for r in picked], marker="o",
                         label=f"{fmt}, {setting}")  # fmt: skip
    axes[0].set(xlabel="workers", ylabel="images / s", title="photos decoded and cropped", xticks=options.workers)
    axes[0].legend(fontsize=8)
    for data in ("photos", "clips"):
        picked = _select(rows, "data_wait", data=data)
        axes[1].plot([r["workers"] for r in picked], [100 * r["data_wait"] for r in picked], marker="o", label=data)
    axes[1].axhline(5, color="grey", linestyle="--", label="goal 5%")
    axes[1].set(xlabel="workers", ylabel="% of step time", title="data wait in training", xticks=options.workers)
    axes[1].legend(fontsize=8)
    memory = _select(rows, "memory")
    labels = [f"{r['data']} {r['format']}\n{r['files']:,}" for r in memory]
    axes[2].barh(labels, [r["main_rss_mib"] for r in memory], color="C0")
    axes[2].set(xlabel="training process RSS (MiB)", title="memory at 1,000 vs 20,000 files", xscale="log")
    axes[2].tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reading(rows: list[dict], options) -> str:
    """The verdicts against the issue's goals, from the numbers."""
    memory = {(r["data"], r["format"], r["files"]): r["main_rss_mib"] for r in _select(rows, "memory")}
    small, large = options.small, options.photos
    waits = {r["workers"]: r["data_wait"] for r in _select(rows, "data_wait", data="photos")}
    resumes = _select(rows, "resume")
    folder = memory[("photos", "folder", large)] - memory[("photos", "folder", small)]
    return "\n".join([
        f"- **Memory flat**: the training process holds {memory[('photos', 'folder', small)]:.0f} MiB streaming "
        f"{small:,} photos and {memory[('photos', 'folder', large)]:.0f} MiB streaming {large:,} ({folder:+.0f} MiB); "
        f"decoded in memory (the old path), {small:,} photos took {memory[('photos', 'memory', small)]:.0f} MiB, so "
        f"{large:,} would need about {large / small:.0f} times that.",
        f"- **Data wait of a Quick-start-sized run**: {100 * waits[0]:.1f}% with the photos decoded in the training "
        f"process, {100 * waits[max(waits)]:.1f}% with {max(waits)} workers (goal: under 5%: "
        f"{'met' if waits[max(waits)] < 0.05 else 'not met'}).",
        f"- **kill -9 and resume with 2 workers**: bitwise equal to the uninterrupted run in "
        f"{sum(r['bitwise_equal'] for r in resumes)} of {len(resumes)} cases "
        f"({', '.join(r['data'] for r in resumes)}).",
    ])  # fmt: skip


def write_data_report(rows: list[dict], options, load: list[tuple], out: str | Path) -> Path:
    out = Path(out)
    prepare = _select(rows, "prepare_text")[0]
    loads = " -> ".join("/".join(f"{x:.1f}" for x in pair) for pair in load)
    data = (f"{options.photos:,} generated COCO-sized JPEGs (640x480 and similar, cut from the packaged photos) in "
            f"folders of 1,000 and as 20 tar shards; {options.clips:,} MJPEG clips (24 frames 160x120); the "
            f"State of the Union tokens tiled to 1 GB; all under {options.tmp}")  # fmt: skip
    budget = (f"throughput: median of {options.repeats} x {options.batches} batches; memory after "
              f"{options.memory_batches} batches; training runs of {options.image_steps} (photos), "
              f"{options.video_steps} (clips), {options.text_steps} (text) steps")  # fmt: skip
    meta = make_meta("cpu", 0, data, budget)
    body = "\n\n".join([
        NOTE.format(load=loads, repeats=options.repeats),
        "## Reading\n\n" + _reading(rows, options),
        "## Samples per second by number of workers\n\n*quickstart*: a random 32 px crop of the full-size photo "
        "(`configs/quickstart.yaml`, batch 32); *coco-128*: shorter side to 128 (JPEGs decoded at reduced scale), "
        "a 128 px crop (`configs/coco-128.yaml`); clips: 11 frames at stride 2, 64 px grey "
        "(`configs/video-real-cpu.yaml`, batch 8).\n\n" + _rate_table(rows, options),
        "## Memory: 1,000 vs 20,000 files\n\n" + _memory_table(rows),
        "## Data wait in training\n\nThe training command's own `data_wait` column (time blocked on the next batch "
        "over wall-clock), averaged over the logged intervals after the first. *photos*: the Quick-start model "
        "(`configs/quickstart.yaml`) on the 20,000-photo tree; *packaged*: the same on the packaged photos in memory; "
        "*clips*: `configs/video-real-cpu.yaml` on the clip folder; *text*: `configs/text-cpu.yaml` on the 1 GB "
        "memory map.\n\n" + _wait_table(rows),
        f"## prepare-text\n\nThe State of the Union ({prepare['corpus_mb']:.1f} MB of text) tokenised, BPE of 2,048 "
        f"trained on it, in {prepare['seconds']:.0f} s ({prepare['mb_per_s']:.2f} MB/s, training the BPE included).",
        "## kill -9 and resume with workers\n\n" + _resume_table(rows),
    ])  # fmt: skip
    report = write_report(out, options.stem, meta, rows, body, options=dataclasses.asdict(options), load=load)
    _plot(rows, options, out / f"{options.stem}.png")
    (out / f"{options.stem}.md").write_text(report.read_text() + f"\n![data benchmark]({options.stem}.png)\n")
    return report
