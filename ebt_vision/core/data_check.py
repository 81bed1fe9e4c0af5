"""Every split's data checked before the first training step, for every workload, in one place.

A workload names what one of its configs needs (``Task.data_check`` in ``core.config.TASKS``: a function
``(cfg, splits) -> list[Missing]`` that only looks for files, never decodes them, so the check takes milliseconds).
``check_data`` asks it and raises one ``DataMissing`` line naming every missing piece by split and how to get it, so a
run without its validation footage stops before training instead of after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import UserError

SPLITS = ("train", "validation", "test")
FETCH = "run scripts/fetch-data.sh (it unpacks the offline data under $EBT_VISION_DATA, default <checkout>/data)"


class DataMissing(UserError):
    """Data a run needs is not on this machine: the message names each missing piece, its split and the fix."""


@dataclass(frozen=True)
class Missing:
    split: str  # "train", "validation", "test", "out of distribution" or "all splits"
    what: str  # the file, folder or source that is not there
    fix: str = FETCH  # how to get it


def missing_data(cfg, splits: Sequence[str] = SPLITS) -> list[Missing]:
    """What ``cfg``'s workload lacks for ``splits`` (nothing when the workload names no check)."""
    from .config import data_check_of

    check = data_check_of(cfg.task)
    return [] if check is None else check(cfg, tuple(splits))


def describe(missing: Iterable[Missing]) -> str:
    """One line: every missing piece after the splits that need it, then the distinct fixes."""
    splits_of: dict[str, list[str]] = {}
    fixes: list[str] = []
    for item in missing:
        splits_of.setdefault(item.what, []).append(item.split)
        if item.fix not in fixes:
            fixes.append(item.fix)
    pieces = "; ".join(f"{', '.join(splits)}: {what}" for what, splits in splits_of.items())
    return f"data missing, nothing was trained. {pieces}. To get it: {'; '.join(fixes)}"


def check_data(cfg, splits: Sequence[str] = SPLITS, also: Iterable[Missing] = ()) -> None:
    """Raise ``DataMissing`` (one line) when any of ``splits`` of ``cfg``'s data, or anything in ``also``, is absent."""
    missing = [*missing_data(cfg, splits), *also]
    if missing:
        raise DataMissing(describe(missing))
