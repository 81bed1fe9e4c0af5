"""What the app's tabs share: the threads every model runs on, user errors shown as one clean message (never with a
server path), uploads checked, finding a tab's trained checkpoint (and saying how to train one), a tab that shows why
its model is missing, the gallery of descent steps."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..core.errors import InputError, UserError
from ..core.paths import resolve_path

Handler = TypeVar("Handler")
MODELS = "models"  # the queue's concurrency group of every event that runs a model: at most ``Workers.count`` at once


class Workers:
    """The threads every model computation of the app runs on: ``count`` of them, made once.

    Gradio runs an event on any thread of its pool (up to 40), and glibc gives each thread that allocates large
    tensors a heap of its own that keeps what it freed: ten threads taking turns at the image tab held 3.5 GB, one
    thread 1.2 GB (measured). The queue lets ``count`` model events run at once (``MODELS``), and each runs here.
    """

    def __init__(self, count: int = 1) -> None:
        self.count = count
        self.pool = ThreadPoolExecutor(count, thread_name_prefix="ebt-model")

    def run(self, handler: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(handler, *args).result()


def write_cache_files_atomically() -> None:
    """Make Gradio write each output picture to its cache losslessly, under a temporary name renamed into place.

    Lossless: Gradio's default picture format is WebP at quality 80, so a denoising demo showed the codec's blocks on
    top of the model's pixels. Lossless WebP at its fastest method keeps every pixel and costs less CPU: the image
    tab's 12 pictures per request took 35 ms to encode against 122 ms lossy and 153 ms as PNG (measured on this
    project's 2-core CPU), which counts when 20 users share two cores (reports/app_load.md).

    Gradio files an output picture under the hash of its bytes and rewrites that file each time. Two users who get
    the same picture at once (the sample photo every default request shows, or the same settings and seed) then race:
    one is sent the file while the other's request truncates it ("peer closed connection without sending complete
    message body (received 0 bytes ...)" in 1 of 12 requests at 4 users). A rename replaces the file whole, and a
    reader keeps the complete file it opened.
    """
    from gradio import processing_utils

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:  # noqa: A002
        data = encode_picture(img, format)
        folder = Path(cache_dir) / processing_utils.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return str(path)

    processing_utils.save_pil_to_cache = save_pil_to_cache


def encode_picture(img, format: str) -> bytes:  # noqa: A002
    """The bytes of a PIL picture in ``format``; WebP lossless at the fastest method, other formats as Gradio does."""
    if format.lower() != "webp":
        from gradio import processing_utils

        return processing_utils.encode_pil_to_bytes(img, format)
    with io.BytesIO() as out:
        img.save(out, "webp", lossless=True, method=0)
        return out.getvalue()


def without_traceback(handler: Callable[..., Any], workers: Workers | None = None) -> Callable[..., Any]:
    """``handler`` for a Gradio event, run on ``workers`` when given: a user error (bad input, missing data) becomes
    a message in the UI, with no stack trace there or in the console; anything else is a bug and keeps its
    traceback."""
    import gradio as gr

    @functools.wraps(handler)
    def run(*args: Any) -> Any:
        try:
            return workers.run(handler, *args) if workers else handler(*args)
        except UserError as error:
            raise gr.Error(str(error), print_exception=False) from None

    return run


def find_checkpoint(path: str | Path | None, what: str, command: str, option: str) -> Path:
    """The checkpoint at ``path`` (as given, else in the project checkout), or a ``UserError`` whose message names
    the path, the command that trains it (``command``) and the app option (``option``) that points elsewhere."""
    if not path:
        raise UserError(f"no {what} given: start the app with `{option} PATH` to use this tab")
    try:
        found = resolve_path(path, what)
    except UserError:
        found = None
    if found is None or not found.exists():  # resolve_path returns an absolute path as given, even a missing one
        raise UserError(
            f"No {what} at `{path}` yet. Train one with `{command}`, or start the app with `{option} PATH` "
            "(a model folder or .safetensors file)."
        )
    return found


def check_upload(path: str | Path, max_bytes: int) -> Path:
    """An uploaded file that arrived and is at most ``max_bytes`` large, or an ``InputError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"the upload {path.name} is not on the server (uploads are deleted after a while); please "
                         "upload it again")  # fmt: skip
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {max_bytes // 2**20} MiB")
    return path


@contextlib.contextmanager
def upload_errors(path: str | Path) -> Iterator[None]:
    """Around the reading of an upload: an error names the file alone, never the server's temporary folder."""
    path = Path(path)
    try:
        yield
    except UserError as error:
        message = str(error)
        for where in sorted({str(path.resolve()), str(path)}, key=len, reverse=True):
            message = message.replace(where, path.name)
        for folder in sorted({str(path.resolve().parent), str(path.parent)}, key=len, reverse=True):
            message = message.replace(folder, "the upload folder")
        raise type(error)(message) from None


def train_command(config: str, kind: str, path: str | Path) -> str:
    """The command that trains the ``kind`` model of ``config`` into ``path``."""
    model = "" if kind == "ebt" else f" --model {kind}"
    return f"ebt-vision train --config {config}{model} --out {path}"


def unavailable_message(tab: str, reason: str) -> str:
    """Markdown shown in place of a tab whose model cannot be loaded."""
    return f"### The {tab} tab is not available\n\n{reason}"


def open_tab(tab: str, build: Callable[[], Handler]) -> Handler | str:
    """The tab's handler, or (when its model cannot be loaded: a ``UserError``) the Markdown message the tab shows
    instead."""
    try:
        return build()
    except UserError as error:
        return unavailable_message(tab, str(error))


def legend_above(ax, lines: list) -> None:
    """The legend of ``lines`` above the axes, where it cannot hide the curves' last points."""
    ax.legend(lines, [line.get_label() for line in lines], loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
              fontsize=8, frameon=False)  # fmt: skip


def step_gallery(label: str, columns: int, elem_id: str, **options: Any):
    """A gallery of pictures (descent steps, energy maps), each shown whole."""
    import gradio as gr

    options.setdefault("height", "auto")
    return gr.Gallery(label=label, columns=columns, object_fit="contain", elem_id=elem_id, **options)


def initial_result(handler: Callable[..., Any], *inputs: Any) -> tuple | None:
    """``handler``'s outputs for a tab's default inputs, computed once when the app is built, so the tab opens showing
    a result (as Gradio demos show their examples) instead of empty panels until the first click. None (the panels
    open empty, with a line on the console) when the defaults cannot run, e.g. sample data that is not installed."""
    try:
        return tuple(handler(*inputs))
    except UserError as error:
        print(f"warning: the tab opens empty: {error}", file=sys.stderr)
        return None


def initial(result: tuple | None, index: int) -> Any:
    """The ``index``-th initial output (None without an initial result)."""
    return None if result is None else result[index]


def gallery_height(count: int, columns: int, tile: int = 400) -> int:
    """Pixels that show ``count`` gallery pictures in ``columns`` whole, without a scroll box (Gradio's default
    height showed one row and a half of the descent steps)."""
    return max(1, -(-count // columns)) * tile + 40
