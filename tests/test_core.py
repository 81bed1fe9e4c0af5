"""Core plumbing: the objective interface, progress output in logs, user errors on the command line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from ebt_vision.core.objective import Objective
from ebt_vision.core.progress import progress
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.image.plain import PlainDenoisingObjective

REPO = Path(__file__).resolve().parents[1]


def test_every_objective_implements_the_interface_the_loop_depends_on(tiny_cfg):
    for cls in (DenoisingObjective, DiTObjective, PlainDenoisingObjective):
        assert isinstance(cls(tiny_cfg), Objective), cls.__name__
    assert not isinstance(object(), Objective)


def test_progress_in_a_log_prints_whole_lines_not_carriage_returns():
    log = io.StringIO()  # not a terminal
    for _ in progress(range(2000), desc="work", file=log):
        pass
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.strip().splitlines()
    assert 1 <= len(lines) <= 5 and "2000/2000" in lines[-1]  # a line every few seconds, and the final state


def test_a_yaml_syntax_error_is_one_line_naming_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("descent:\n  num_steps: [2\noptim:\n  lr: 1e-3\n")
    done = subprocess.run([sys.executable, "-m", "ebt_vision", "train", "--config", str(bad)], capture_output=True,
                          text=True, cwd=REPO)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"{bad}:3:6" in line and "YAML syntax error" in line


def test_an_unknown_key_suggests_the_closest_valid_one():
    from ebt_vision.core.config import ConfigError, from_dict

    try:
        from_dict({"descent": {"num_step": 3}})
    except ConfigError as error:
        assert "did you mean 'num_steps'" in str(error)
    else:
        raise AssertionError("an unknown key was accepted")


def test_markdown_table_refuses_a_row_wider_or_narrower_than_its_header():
    from ebt_vision.core.reports import markdown_table

    assert markdown_table(["a", "b"], [[1, 2.5]]) == "| a | b |\n|---|---|\n| 1 | 2.50 |"
    for row in ([1], [1, 2, 3]):
        with pytest.raises(ValueError, match="cells for 2 headers"):
            markdown_table(["a", "b"], [row])


def test_a_report_names_the_command_as_it_was_typed(monkeypatch):
    """`make_meta`'s command: `ebt-vision ...` for the program, `python scripts/x.py ...` for a script (the program
    is not quoted as one word), and arguments with spaces quoted so the line can be pasted back."""
    from ebt_vision.core.reports import make_meta

    monkeypatch.setattr("sys.argv", ["scripts/dit-crop-steps.py", "--sigmas", "15", "--intro", "two words"])
    typed = "python scripts/dit-crop-steps.py --sigmas 15 --intro 'two words'"
    assert make_meta("cpu", 0, "d", "b")["command"] == typed
    monkeypatch.setattr("sys.argv", ["/venv/bin/ebt-vision", "eval"])
    assert make_meta("cpu", 0, "d", "b")["command"] == "ebt-vision eval"
    assert make_meta("cpu", 0, "d", "b", command="pytest")["command"] == "pytest"
