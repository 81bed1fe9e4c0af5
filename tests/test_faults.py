"""Fault injection (``ebt_vision.experiments.faults``): kill -9 at named and random moments of a tiny run, damaged
checkpoint files, half-copied run folders. Every case resumes to the bitwise result of an uninterrupted run or stops
with one line, and no complete checkpoint is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebt_vision.experiments.faults import KILL_POINTS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """The fault matrix for one seed, run as its own process (it forks a child per run: one thread, fresh state)."""
    root = tmp_path_factory.mktemp("faults")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "ebt_vision.experiments.faults", "--work", str(root / "work"), "--out", str(root)]
    done = subprocess.run([*command, "--seeds", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    return json.loads((root / "faults.json").read_text())


def by_fault(matrix: dict, fault: str) -> dict:
    return next(row for row in matrix["rows"] if row["fault"] == fault)


def test_no_fault_loses_a_checkpoint_or_ends_in_a_traceback(matrix):
    summary = matrix["summary"]
    assert summary["cases tried"] >= 40
    assert summary["lost"] == summary["tracebacks"] == summary["inexact"] == summary["silent fallbacks"] == 0, summary
    assert summary["not killed"] == 0
    assert summary["resumed exact"] + summary["refused clearly"] == summary["cases tried"]
    assert {"kill", "damage", "copy"} == {row["family"] for row in matrix["rows"]}


def test_every_kill_point_is_covered_and_resumes_exactly(matrix):
    kills = [row for row in matrix["rows"] if row["family"] == "kill"]
    for point in (*KILL_POINTS, "at a random moment"):
        assert any(row["fault"].startswith(f"kill -9 {point}") for row in kills), point
    assert all(row["outcome"] == "resumed exact" for row in kills)
    between = next(row for row in kills if "between the two renames" in row["fault"])
    assert f"(step {between['resumed_from']})" in between["fault"]  # the renamed checkpoint, whatever latest said


def test_an_unreadable_newest_checkpoint_falls_back_with_a_warning(matrix):
    for damaged in ("model.safetensors truncated", "train_state.pt garbage", "model.safetensors with a NaN weight"):
        row = by_fault(matrix, f"checkpoints/step_0000008/{damaged}")
        assert row["outcome"] == "resumed exact" and row["resumed_from"] == 6
        assert row["said"].startswith("warning: ") and "resuming from step_0000006" in row["said"]
    assert by_fault(matrix, "checkpoints/latest garbage")["resumed_from"] == 8


def test_a_run_with_no_readable_checkpoint_is_refused_in_one_line(matrix):
    row = by_fault(matrix, "every checkpoint's train_state.pt garbage")
    assert row["outcome"] == "refused clearly" and row["said"].startswith("error: cannot resume")
    assert "|" not in row["said"]  # one line
