"""``ebt-vision generate``: a prompt that cannot be used is one line, before any model loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_prompt_whose_bytes_are_not_utf8_is_one_line_before_the_model_loads(tmp_path):
    """Issue 27: such a prompt (a shell passes bytes as they are) ended in a traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable.encode(),
        b"-m",
        b"ebt_vision",
        b"generate",
        b"caf\xe9 au lait",
        b"--checkpoint",
        b"no/such/model",
    ]  # fmt: skip  (a missing model: the prompt is refused first)
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the prompt is not UTF-8 text (invalid continuation byte at byte 3)"
    ]
