"""scripts/validation-levers.py: candidates' best validation PSNR per sigma, and their gap to a reference row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import load_script


def _evaluation(path: Path, method: str, psnr: dict[tuple[float, int], float], split: str = "validation") -> str:
    meta = {"command": f"eval {path.name}", "data": "five photos", "seed": 0}
    rows = [{"eval_split": split, "method": method, "sigma": s, "steps": k, "psnr": p} for (s, k), p in psnr.items()]
    path.write_text(json.dumps({"meta": meta, "rows": rows}))
    return str(path)


def test_each_candidate_is_read_at_its_best_step_count_against_the_reference(tmp_path):
    dit = _evaluation(tmp_path / "dit.json", "dit_ddim", {(15.0, 1): 34.0, (15.0, 2): 34.5, (25.0, 2): 32.0})
    low = _evaluation(tmp_path / "a15.json", "ebt", {(15.0, 1): 33.0, (15.0, 3): 34.25})
    high = _evaluation(tmp_path / "a25.json", "ebt", {(25.0, 2): 32.5})
    test_rows = _evaluation(tmp_path / "test.json", "ebt", {(15.0, 1): 99.0}, split="test")  # never read
    out, levers = tmp_path / "reports", load_script("validation-levers.py")
    assert levers.main(["--reference", f"DiT:{dit}:dit_ddim", "--row", f"EBT:{low},{high},{test_rows}:ebt",
                        "--out", str(out), "--stem", "levers"]) == 0  # fmt: skip
    report = json.loads((out / "levers.json").read_text())
    got = {(row["sigma"], row["steps"]): row["gap_to_reference"] for row in report["rows"]}
    assert got == pytest.approx({(15.0, 3): -0.25, (25.0, 2): 0.5})
    assert (out / "levers.png").stat().st_size > 0 and "34.25 (3) -0.25" in (out / "levers.md").read_text()
    with pytest.raises(SystemExit, match="no validation rows"):
        levers.main(["--reference", f"DiT:{dit}:dit_ddim", "--row", f"EBT:{low}:transformer", "--out", str(out)])
