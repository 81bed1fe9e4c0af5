"""Choosing settings on the validation split and quoting them on the test split, for every report; and averaging rows
over the images (clips, windows) of a group.

A *setting* is what a user would pick at test time: a step count, a stopping tolerance, best-of-N, a DDIM pass count.
Every row carries ``eval_split`` ("validation" or "test"). A choice is made per *group* (a condition such as the noise
level, and a model) by the best validation score, the first in row order among ties, and quoted with the test row of
the same setting under the same condition: nothing is ever chosen on the test split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np

SPLIT_SEED_OFFSET = {"validation": 1000, "test": 0}  # validation draws its own noise (and sampling noise)

Grouping = Callable[[dict], Hashable | None]  # a validation row -> the group it competes in (None: it does not)


def average(
    rows: list[dict],
    group_by: tuple[str, ...],
    means: tuple[str, ...],
    keep: tuple[str, ...] = (),
    count: str | None = "images",
) -> list[dict]:
    """One row per group of ``rows`` that agree on ``group_by`` (keys a row lacks are left out of its group): the
    group's keys, the ``keep`` fields of its first row (constant within a group), the mean of each of ``means`` that
    its rows have, and (``count``, when named) the number of rows averaged. Groups in order of first appearance."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in group_by)].append(row)
    out = []
    for key, group in groups.items():
        first = group[0]
        averaged = {
            **{k: v for k, v in zip(group_by, key, strict=True) if v is not None},
            **{k: first[k] for k in keep},
            **{k: float(np.mean([r[k] for r in group])) for k in means if k in first},
        }
        out.append({**averaged, count: len(group)} if count else averaged)
    return out


@dataclass(frozen=True)
class Choice:
    """The setting chosen in one group: its validation row, and the test row of that setting (None if not measured)."""

    validation: dict
    test: dict | None


def best_on_validation(rows: list[dict], group: Grouping, score: str, lowest: bool = False) -> dict[Hashable, dict]:
    """Per group (``group(row)`` of each validation row): the validation row with the best ``score`` (the highest,
    or with ``lowest`` the lowest; the first among ties)."""
    best: dict[Hashable, dict] = {}
    for row in rows:
        key = group(row) if row["eval_split"] == "validation" else None
        if key is None:
            continue
        held = best.get(key)
        if held is None or (row[score] < held[score] if lowest else row[score] > held[score]):
            best[key] = row
    return best


def best_setting_overall(rows: list[dict], setting: Grouping, score: str = "psnr") -> Hashable | None:
    """The setting (``setting(row)`` of each validation row; None: not a candidate) with the highest validation
    ``score`` averaged over its rows, e.g. over every noise level: one setting for all conditions, as a blind model
    must use (the first in row order among ties; None without candidates)."""
    scores: dict[Hashable, list[float]] = defaultdict(list)
    for row in rows:
        key = setting(row) if row["eval_split"] == "validation" else None
        if key is not None:
            scores[key].append(row[score])
    return max(scores, key=lambda key: float(np.mean(scores[key])), default=None)


def choose(
    rows: list[dict],
    group: Grouping,
    setting: tuple[str, ...],
    condition: tuple[str, ...] = (),
    score: str = "psnr",
    lowest: bool = False,
) -> dict[Hashable, Choice]:
    """Per group: the setting (the values of ``setting``) with the best validation ``score``, with the test row that
    has the same setting and the same ``condition`` values (e.g. the noise level)."""

    def values(row: dict, keys: tuple[str, ...]) -> tuple:
        return tuple(row.get(k) for k in keys)

    test: dict[tuple, dict] = {}
    for row in rows:
        if row["eval_split"] == "test":
            test.setdefault((values(row, condition), values(row, setting)), row)
    return {
        key: Choice(row, test.get((values(row, condition), values(row, setting))))
        for key, row in best_on_validation(rows, group, score, lowest).items()
    }
