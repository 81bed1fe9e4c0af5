"""``experiments.curves``: several runs' training curves compared at equal steps (the pilots' report)."""

from __future__ import annotations

import json

import pytest

from ebt_vision.core.errors import UserError
from ebt_vision.experiments.curves import main


def _run(folder, values, metric="loss_last"):
    folder.mkdir()
    lines = [f"step,{metric},lr"] + [f"{25 * (i + 1)},{v},0.001" for i, v in enumerate(values)]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_curves_compare_window_means_at_common_steps(tmp_path):
    a = _run(tmp_path / "a", [7.0, 6.0, 5.0, 4.0])
    b = _run(tmp_path / "b", [7.0, 6.5, 6.0])  # stopped earlier: only steps 25-75 are common
    md = main([f"first={a}", f"second={b}", "--window", "50", "75", "--out", str(tmp_path / "r"), "--stem", "s"])
    report = json.loads(md.with_suffix(".json").read_text())
    assert {r["step"] for r in report["rows"]} == {25, 50, 75}
    text = md.read_text()
    assert "| first | 5.500 | 5.000 |" in text and "| second | 6.250 | 6.000 |" in text
    assert md.with_suffix(".png").stat().st_size > 10_000
    with pytest.raises(UserError, match="no column 'nope'"):
        main([f"first={a}", "--metric", "nope", "--window", "1", "2", "--out", str(tmp_path / "r")])
    with pytest.raises(UserError, match="no common step in the window"):
        main([f"first={a}", f"second={b}", "--window", "100", "200", "--out", str(tmp_path / "r")])
    with pytest.raises(UserError, match="metrics.csv not found"):
        main([f"x={tmp_path}", "--window", "1", "2", "--out", str(tmp_path / "r")])
