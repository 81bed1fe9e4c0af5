"""Has a next-frame model learned the motion? Its predicted change from the last frame against the true change.

For every model (a shipped EBT, transformer and DiT, or any trained folders) on the validation and test clips: the
cosine between the predicted change (prediction - last context frame) and the true one (next frame - last context
frame), over all pixels of all clips; and the error of the *damped* prediction ``last + a * (prediction - last)`` for
``a`` in ``DAMPING``, the factor chosen on validation. A prediction whose change points the right way (cosine > 0)
gains from some damping over copy-last: the best ``a`` is cos * |true| / |predicted| and it lowers the error by
cos^2 * |true|^2. A cosine near zero says the model has not learned where things move, and no damping can beat
copying the last frame. One predicted frame per clip (the first of the horizon), each model at its given setting.

    python -m ebt_vision.experiments.video.change --out reports        # the shipped real-footage models
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ...core.inference import Thinking
from ...core.reports import make_meta, markdown_table, write_report
from ...video.data import describe_source, held_out
from ...video.loading import chosen_steps, load_video_model
from ...video.metrics import frame_errors
from .. import selection

DAMPING = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SHIPPED = {
    "ebt": "checkpoints/video-real-s",
    "transformer": "checkpoints/video-real-s-transformer",
    "dit": "checkpoints/video-real-s-dit",
}


@dataclass(frozen=True)
class ChangeOptions:
    ebt_steps: int | None = None  # None: the step count the EBT's folder records (chosen on validation), else trained
    dit_steps: int = 1
    batch: int = 64


def predicted_frame(kind: str, model, context: Tensor, options: ChangeOptions, steps: int | None) -> Tensor:
    """(B, T, C, H, W) context -> (B, C, H, W): the model's next frame."""
    if kind == "ebt":
        return model.rollout(context, 1, Thinking(steps), energy_maps=False).predictions[:, 0].detach()
    with torch.no_grad():
        if kind == "dit":
            return model.rollout(context, 1, options.dit_steps).predictions[:, 0]
        return model.rollout(context, 1).predictions[:, 0]


def change_rows(kind: str, model, split: str, options: ChangeOptions, steps: int | None) -> list[dict]:
    """One row per damping factor: mean MSE (OpenSTL's convention) of the damped prediction, and the cosine."""
    cfg = model.cfg
    _, clips = held_out(cfg, split)
    context_frames = cfg.data.context_frames
    predicted = torch.cat([
        predicted_frame(kind, model, clips[i : i + options.batch, :context_frames], options, steps).cpu()
        for i in range(0, len(clips), options.batch)
    ])  # fmt: skip
    last, truth = clips[:, context_frames - 1], clips[:, context_frames]
    moved, true = (predicted - last).flatten(), (truth - last).flatten()
    cosine = float(moved @ true / (moved.norm() * true.norm()).clamp_min(1e-12))
    rows = []
    for a in DAMPING:
        damped = (last + a * (predicted - last)).clamp(-1, 1)
        mse = float(frame_errors(damped[:, None], truth[:, None])["mse"].mean())
        rows.append({"eval_split": split, "method": kind, "damping": a, "mse": mse, "change_cosine": cosine,
                     "clips": len(clips)})  # fmt: skip
    return rows


def choose_damping(rows: list[dict]) -> dict[str, dict]:
    """Per model: the damping factor with the lowest validation MSE, its test MSE, the undamped and copy-last test
    MSEs and the cosines (``selection.choose``: chosen on validation, quoted on test)."""
    chosen = {}
    for kind, choice in selection.choose(
        rows, lambda r: r["method"], ("method", "damping"), score="mse", lowest=True
    ).items():
        test = {r["damping"]: r for r in rows if r["method"] == kind and r["eval_split"] == "test"}
        chosen[kind] = {"damping": choice.validation["damping"], "test_mse": choice.test["mse"],
                        "test_mse_undamped": test[1.0]["mse"], "copy_last_test_mse": test[0.0]["mse"],
                        "test_change_cosine": test[1.0]["change_cosine"],
                        "validation_change_cosine": choice.validation["change_cosine"]}  # fmt: skip
    return chosen


def measure(folders: dict[str, str], options: ChangeOptions) -> tuple[list[dict], dict, object]:
    """Every model's rows on both splits -> (rows, {model: chosen damping and its test MSE}, the EBT's config)."""
    rows, cfg = [], None
    for kind, folder in folders.items():
        model = load_video_model(folder, kind)
        cfg = cfg or model.cfg
        steps = options.ebt_steps
        if kind == "ebt" and steps is None:
            recorded = chosen_steps(folder)
            steps = recorded[0] if recorded else None
        for split in ("validation", "test"):
            rows += change_rows(kind, model, split, options, steps)
    return rows, choose_damping(rows), cfg


def body(rows: list[dict], chosen: dict) -> str:
    per_model = [[kind, f"{c['validation_change_cosine']:+.3f}", f"{c['test_change_cosine']:+.3f}",
                  f"{c['copy_last_test_mse']:.3f}", f"{c['test_mse_undamped']:.3f}", c["damping"],
                  f"{c['test_mse']:.3f}"]
                 for kind, c in chosen.items()]  # fmt: skip
    table = markdown_table(["model", "cosine, validation", "cosine, test", "copy-last MSE (test)",
                            "model MSE (test)", "damping chosen on validation", "damped MSE (test)"],
                           per_model)  # fmt: skip
    sweep = [[r["method"], r["eval_split"], r["damping"], f"{r['mse']:.3f}"] for r in rows]
    return (
        "The cosine between each model's predicted change from the last context frame and the true change (1: the "
        "right direction; 0: unrelated), and the MSE (OpenSTL's convention) of the damped prediction last + a * "
        "(prediction - last), a chosen on the validation clips. a = 0 is copy-last.\n\n"
        f"{table}\n\n## Every damping factor\n\n" + markdown_table(["model", "split", "damping a", "MSE"], sweep)
    )


def plot(rows: list[dict], path: Path) -> Path:
    """MSE against the damping factor, one line per model and split (a = 0 is copy-last)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    for ax, split in zip(figure.subplots(1, 2), ("validation", "test"), strict=True):
        for kind in dict.fromkeys(r["method"] for r in rows):
            points = [(r["damping"], r["mse"]) for r in rows if r["method"] == kind and r["eval_split"] == split]
            ax.plot(*zip(*points, strict=True), marker="o", label=kind)
        ax.set(title=f"{split} clips", xlabel="damping a (0 = copy-last, 1 = the model)", ylabel="MSE per frame")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ebt", default=SHIPPED["ebt"])
    parser.add_argument("--transformer", default=SHIPPED["transformer"])
    parser.add_argument("--dit", default=SHIPPED["dit"])
    parser.add_argument("--ebt-steps", type=int, help="default: the folder's validation-chosen count, else trained")
    parser.add_argument("--out", default="runs/video_change")
    parser.add_argument("--stem", default="video_real_change")
    args = parser.parse_args(argv)
    folders = {kind: path for kind, path in (("ebt", args.ebt), ("transformer", args.transformer),
                                             ("dit", args.dit)) if path}  # fmt: skip
    rows, chosen, cfg = measure(folders, ChangeOptions(ebt_steps=args.ebt_steps))
    command = shlex.join(["python", "-m", "ebt_vision.experiments.video.change", *(argv or sys.argv[1:])])
    budget = "the given trained models: " + ", ".join(folders.values())
    meta = make_meta("cpu", 0, describe_source(cfg), budget, command)
    text = body(rows, chosen) + f"\n\n![MSE against damping]({args.stem}.png)"
    md = write_report(args.out, args.stem, meta, rows, text, chosen=chosen)
    plot(rows, md.with_suffix(".png"))
    print(md)
    return md


if __name__ == "__main__":
    main()
