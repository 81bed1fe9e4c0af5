"""A run folder and what training may do with it: never replace a model or a run unasked (``--resume`` continues one,
``--overwrite`` first moves it to a backup folder), resume from the newest checkpoint that can be read whatever
``latest`` says, say so when an older one had to do, and stop with one line (never start over) when none can."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from .checkpoint import (
    WEIGHTS,
    CheckpointError,
    checkpoint_config,
    first_line,
    missing_files,
    name_list,
    step_folders,
)
from .config import ExperimentConfig, config_differences
from .errors import UserError

# What a finished run leaves (a loadable model folder) and what a run in progress writes.
MODEL_FILES = (WEIGHTS, "config.json")
RUN_FILES = ("checkpoints", "config.yaml", "metrics.csv", "loss.png")
# What restoring a damaged but loadable training state can raise (a key it lacks, a tensor of the wrong size).
RESTORE_ERRORS = (CheckpointError, KeyError, ValueError, TypeError, RuntimeError, IndexError)


class RunConflict(UserError):
    """The run folder holds a model or a run this call must not silently continue or overwrite."""


class RunFolderError(UserError):
    """The run folder cannot be created or written."""


def run_content(run_dir: str | Path) -> list[str]:
    """What of a model or a run ``run_dir`` holds: file names, and the newest checkpoint folder's name."""
    run_dir = Path(run_dir)
    found = [name for name in (*MODEL_FILES, *RUN_FILES) if (run_dir / name).exists()]
    steps = step_folders(run_dir)
    return [f"checkpoints/{steps[-1].name}" if name == "checkpoints" and steps else name for name in found]


def check_run_folder(run_dir: str | Path, resume: bool) -> None:
    """Refuse to train into a folder that holds a model or a run, unless ``resume`` and it holds checkpoints to resume
    from (a run killed before its first checkpoint has nothing to lose and starts over)."""
    run_dir = Path(run_dir)
    found = run_content(run_dir)
    if not found:
        return
    has_model = any(name in found for name in MODEL_FILES)
    if resume and (step_folders(run_dir) or not has_model):
        return
    overwrite = "--overwrite to move it to a backup folder first"
    if resume:
        raise RunConflict(f"{run_dir} holds a model ({', '.join(found)}) but no checkpoint to resume from; pass "
                          f"{overwrite}, or choose another run folder (--out)")  # fmt: skip
    what = "a run" if any(name not in MODEL_FILES for name in found) else "a model"
    resume_hint = "--resume to continue it, " if what == "a run" else ""
    raise RunConflict(f"{run_dir} already holds {what} ({', '.join(found)}); pass {resume_hint}{overwrite}, or choose "
                      "another run folder (--out)")  # fmt: skip


def move_aside(run_dir: str | Path) -> Path | None:
    """Rename ``run_dir`` to a new sibling ``<name>.backup-<YYYYmmdd-HHMMSS>`` when it holds a model or a run, so a
    fresh run starts in an empty folder and nothing is lost (a rename: nothing is copied or deleted). -> the backup
    folder, or None when there was nothing to move."""
    if not run_content(run_dir):
        return None
    run_dir = Path(os.path.abspath(run_dir))
    if Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        raise RunConflict(f"cannot move {run_dir} aside: the working directory is inside it")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, copies = run_dir.with_name(f"{run_dir.name}.backup-{stamp}"), 1
    while backup.exists():
        backup, copies = run_dir.with_name(f"{run_dir.name}.backup-{stamp}-{copies}"), copies + 1
    with writing(run_dir):
        os.rename(run_dir, backup)
    return backup


@contextlib.contextmanager
def writing(run_dir: Path, consequence: str = "") -> Iterator[None]:
    """Turn a failed write under ``run_dir`` (not writable, a file where a folder should be, disk full) into one
    line naming the folder, the reason and what is kept."""
    try:
        yield
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        raise RunFolderError(
            f"cannot write the run folder {run_dir} ({error.strerror or error}{where}){consequence}"
        ) from None


def resume_checkpoint(run_dir: Path, cfg: ExperimentConfig, restore: Callable[[Path], dict]) -> dict | None:
    """The training state of the run's newest checkpoint (by step number) that can be read and restored; None when
    the run has no checkpoint folder at all. ``restore(folder)`` loads a checkpoint into the model, optimiser and the
    rest and returns its state; any error there means that checkpoint cannot be used and the previous one is tried
    (each restore replaces everything the failed one touched). Newer checkpoints that could not be used are named in
    one warning and left in place; when none can be used, one CheckpointError says why: nothing starts over. A
    checkpoint whose stored config differs from ``cfg`` is refused (RunConflict), not skipped."""
    folders = step_folders(run_dir)
    skipped: list[str] = []
    for folder in reversed(folders):
        try:
            missing = missing_files(folder)
            if missing:
                raise CheckpointError(f"incomplete: it lacks {name_list(missing)}")
            stored = checkpoint_config(folder)
        except CheckpointError as error:
            skipped.append(f"{folder.name}: {str(error).replace(f'{folder}/', '')}")
            continue
        check_same_config(run_dir, stored, cfg)
        try:
            state = restore(folder)
        except RESTORE_ERRORS as error:
            reason = f"its training state lacks {error}" if isinstance(error, KeyError) else first_line(error)
            skipped.append(f"{folder.name}: {reason.replace(f'{folder}/', '')}")
            continue
        if skipped:
            warnings.warn(
                f"{run_dir}: resuming from {folder.name}, the newest checkpoint that can be read; left in place: "
                + "; ".join(skipped),
                stacklevel=2,
            )
        return state
    if folders:
        raise CheckpointError(
            f"cannot resume {run_dir}: none of its {len(folders)} checkpoint(s) can be read ({'; '.join(skipped)}); "
            "restore one, or pass --overwrite to move the run to a backup folder and start afresh"
        )
    return None


def check_same_config(run_dir: Path, stored: ExperimentConfig, cfg: ExperimentConfig) -> None:
    """Refuse to continue a run whose stored config differs from the requested one (except run length and logging)."""
    changed = config_differences(stored, cfg)
    if changed:
        raise RunConflict(
            f"cannot resume {run_dir}: its stored config differs from the requested one in {len(changed)} setting(s): "
            + "; ".join(changed)
            + f". Resume without those changes (the stored config is {run_dir / 'config.yaml'}), or start fresh in "
            "another run folder (--out)"
        )
