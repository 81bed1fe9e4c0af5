"""Gradio app: watch the EBTs think. ``ebt-vision demo`` or ``python -m ebt_vision.app``.

Three tabs, each a thin layer over views that are tested without a browser: **Image** (denoising, step by step, with
energy and gradient maps and the DiT baseline; ``image_tab``, ``image_view``), **Video** (next-frame prediction with
every descent step, energy maps per predicted frame and the baselines; ``video_tab``, ``video_view``) and **Text**
(generation with every token coloured by its energy, beside the Transformer++; ``text_tab``, ``text_view``).
Everything runs offline. A video or text tab whose checkpoint is missing says where it looked and which command
trains one.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from ..core import defaults
from .common import Workers, write_cache_files_atomically
from .image_tab import ImageTab, build_image_tab
from .text_tab import TextTab, build_text_tab, open_text_tab
from .video_tab import VideoTab, build_video_tab, open_video_tab

if TYPE_CHECKING:
    import gradio as gr

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no telemetry calls

__all__ = ["ImageTab", "VideoTab", "TextTab", "build_app", "add_arguments", "launch", "main"]
MAX_UPLOAD = f"{defaults.APP_MAX_VIDEO_BYTES // 2**20}mb"  # the largest upload any tab takes (a video)
MAX_WAITING = 64  # requests waiting in the queue; more are told the app is busy (bounded memory under any load)
# Uploads (rejected ones too) and results are files in Gradio's cache: every SWEEP_S seconds those older than
# KEEP_FILES_S are deleted, so the app does not keep every upload (an upload stays long enough to try settings on).
SWEEP_S, KEEP_FILES_S = 300, 1800


def build_app(
    image: ImageTab,
    video: VideoTab | str | None = None,
    text: TextTab | str | None = None,
    workers: int = 1,
    delete_cache: tuple[int, int] = (SWEEP_S, KEEP_FILES_S),
) -> gr.Blocks:
    """The Gradio app: the image tab, and the video and text tabs when given (a handler, or the message a tab shows
    in place of a model it could not load). ``workers``: model computations run at once (each on one of that many
    threads); more requests wait in the queue, up to ``MAX_WAITING``. ``delete_cache``: (every, older than) in
    seconds, how the app's files are swept."""
    import gradio as gr

    pool = Workers(workers)
    write_cache_files_atomically()  # users served at once may get the same picture
    with gr.Blocks(title="ebt-vision: watch the model think", delete_cache=delete_cache) as app:
        gr.Markdown(
            "# ebt-vision · watch the model think\n"
            "An energy-based transformer does not output its answer: it **finds** it, by gradient descent on a learned "
            "energy. Each tab shows every step of that descent, where the model is unsure, and a baseline beside it."
        )
        build_image_tab(image, pool)
        if video is not None:
            build_video_tab(video, pool)
        if text is not None:
            build_text_tab(text, pool)
    return app.queue(default_concurrency_limit=workers, max_size=MAX_WAITING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The app's options, shared by ``ebt-vision demo`` and ``python -m ebt_vision.app``."""
    parser.add_argument("--checkpoint", default=defaults.IMAGE_EBT, help="image EBT: model folder or .safetensors")
    parser.add_argument(
        "--dit-checkpoint", default=defaults.IMAGE_DIT, help="image DiT baseline checkpoint ('' for none)"
    )
    parser.add_argument(
        "--video-checkpoint", default=defaults.VIDEO_EBT, help="video EBT: model folder or .safetensors"
    )
    parser.add_argument("--video-transformer-checkpoint", default=defaults.VIDEO_TRANSFORMER,
                        help="video plain-transformer baseline ('' for none)")  # fmt: skip
    parser.add_argument("--video-dit-checkpoint", default=defaults.VIDEO_DIT, help="video DiT baseline ('' for none)")
    parser.add_argument(
        "--text-checkpoint", default=defaults.TEXT_EBT, help="text EBT: model folder with its tokenizer"
    )
    parser.add_argument("--text-transformer-checkpoint", default=defaults.TEXT_TRANSFORMER,
                        help="text Transformer++ baseline ('' for none)")  # fmt: skip
    parser.add_argument("--threads", type=_positive, default=1,
                        help="PyTorch threads per computation (more only on an idle many-core machine: on a busy "
                        "2-core CPU, two threads waiting on each other made an image-tab click 8x slower and a tiny "
                        "text model's 200x)")  # fmt: skip
    parser.add_argument("--concurrency", type=_positive, default=None,
                        help="model computations at once, each on --threads threads; more users wait in the queue "
                        "(default: the CPU cores divided by --threads)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="interface to serve on (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def launch(args: argparse.Namespace) -> int:
    """Load the models (a video or text tab without its model shows why), build the app and serve it."""
    import torch

    from ..core.memory import fix_mmap_threshold

    torch.set_num_threads(args.threads)
    fix_mmap_threshold()  # a heap that does not fragment under many requests (docs/design.md, trap 22)
    video = open_video_tab(args.video_checkpoint, args.video_transformer_checkpoint, args.video_dit_checkpoint)
    text = open_text_tab(args.text_checkpoint, args.text_transformer_checkpoint)
    for name, tab in (("video", video), ("text", text)):
        if isinstance(tab, str):  # one line on the console too: the app still starts
            print(f"{name} tab unavailable: {tab.splitlines()[-1]}", file=sys.stderr)
    workers = args.concurrency or max(1, (os.cpu_count() or 1) // args.threads)
    app = build_app(ImageTab(args.checkpoint, args.dit_checkpoint or None), video, text, workers)
    app.launch(server_name=args.host, server_port=args.port, show_error=True, max_file_size=MAX_UPLOAD)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebt_vision.app", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return launch(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
