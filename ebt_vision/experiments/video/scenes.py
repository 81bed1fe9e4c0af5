"""Which footage rewards continuing the last change? The classical references, scene by scene.

For every scene of the offline real footage (every split; held-out windows, centre-cropped, as the video comparison
reads them): the mean next-frame MSE of copying the last frame, of the fixed extrapolation last + a (last -
previous) and of its adaptive form (``video.rollout.Reference``), the share of clips where the fixed extrapolation
beats copy-last, and the clip where copying the last frame errs most. It shows why a validation split must hold both
kinds of footage the test split has. No model and no training: a classical measurement on the data alone.

    python -m ebt_vision.experiments.video.scenes --out reports
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ...core.config import load_config
from ...core.reports import make_meta, markdown_table, write_report
from ...video.clips import SPLITS, footage_for, held_out_clips
from ...video.data import describe_source
from ...video.metrics import frame_errors
from ...video.rollout import copy_last_frame, extrapolate_frames


def scene_rows(cfg, gain: float) -> list[dict]:
    """One row per scene of every split: the references' mean MSE, the share of clips where the fixed extrapolation
    beats copy-last, and the worst copy-last clip with the fixed extrapolation's error there."""
    context = cfg.data.context_frames
    rows = []
    for split in SPLITS:
        for scene in footage_for(split, cfg.data, cfg.model.channels):
            names, clips = held_out_clips([scene], cfg.data)
            past, truth = clips[:, :context], clips[:, context : context + 1]
            copied = frame_errors(copy_last_frame(past, 1).predictions, truth)["mse"][:, 0]
            fixed = frame_errors(extrapolate_frames(past, 1, gain).predictions, truth)["mse"][:, 0]
            adaptive = frame_errors(extrapolate_frames(past, 1, gain, adaptive=True).predictions, truth)["mse"][:, 0]
            worst = int(copied.argmax())
            rows.append({"split": split, "scene": scene.name, "clips": len(names),
                         "copy_last_mse": float(copied.mean()), "extrapolate_mse": float(fixed.mean()),
                         "adaptive_mse": float(adaptive.mean()),
                         "extrapolate_wins": float((fixed < copied).float().mean()), "worst_clip": names[worst],
                         "worst_copy_last_mse": float(copied[worst]),
                         "worst_extrapolate_mse": float(fixed[worst])})  # fmt: skip
    return rows


def body(rows: list[dict], gain: float) -> str:
    table = markdown_table(
        ["split", "scene", "clips", "copy-last MSE", f"extrapolate (a={gain:g}) MSE", f"adaptive (a={gain:g}) MSE",
         "clips where extrapolating beats copy-last", "worst copy-last clip: copy-last / extrapolate MSE"],
        [[r["split"], r["scene"], r["clips"], f"{r['copy_last_mse']:.3f}", f"{r['extrapolate_mse']:.3f}",
          f"{r['adaptive_mse']:.3f}", f"{100 * r['extrapolate_wins']:.0f}%",
          f"{r['worst_clip']}: {r['worst_copy_last_mse']:.2f} / {r['worst_extrapolate_mse']:.2f}"] for r in rows],
    )  # fmt: skip
    return (
        "Next-frame MSE (OpenSTL's convention: pixels in [0, 1], summed over the frame) of the classical references "
        "on every scene's held-out windows, one predicted frame per clip. *extrapolate*: last + a (last - previous); "
        "*adaptive*: a scaled by the least-squares gain of the last change on the change before it, in [0, 1].\n\n"
        f"{table}"
    )


def plot(rows: list[dict], gain: float, path: Path) -> Path:
    """Per scene: the three references' mean MSE (log scale), scenes grouped by split."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.8))
    ax = figure.subplots()
    width = 0.27
    for index, (key, label) in enumerate((("copy_last_mse", "copy last frame"),
                                          ("extrapolate_mse", f"extrapolate (a={gain:g})"),
                                          ("adaptive_mse", f"adaptive (a={gain:g})"))):  # fmt: skip
        ax.bar([x + (index - 1) * width for x in range(len(rows))], [r[key] for r in rows], width, label=label)
    labels = [f"{r['scene']}\n({r['split']})" for r in rows]
    ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=25, ha="right")
    ax.set(yscale="log", ylabel="next-frame MSE (mean over clips)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/video-real-cpu.yaml", help="the clip protocol (frames, stride)")
    parser.add_argument("--gain", type=float, default=0.5, help="the extrapolation gain a")
    parser.add_argument("--out", default="runs/video_scenes")
    parser.add_argument("--stem", default="video_real_scenes")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    rows = scene_rows(cfg, args.gain)
    command = shlex.join(["python", "-m", "ebt_vision.experiments.video.scenes", *(argv or sys.argv[1:])])
    meta = make_meta("cpu", 0, describe_source(cfg), "none: no model is trained or run", command)
    text = body(rows, args.gain) + f"\n\n![MSE per scene]({args.stem}.png)"
    md = write_report(args.out, args.stem, meta, rows, text)
    plot(rows, args.gain, md.with_suffix(".png"))
    print(md)
    return md


if __name__ == "__main__":
    main()
