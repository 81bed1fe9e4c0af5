"""The seeds report: mean and spread of each contender's chosen test figures over reports of different seeds."""

from __future__ import annotations

import json
import statistics

import pytest

from ebt_vision.core.errors import UserError
from ebt_vision.experiments import seeds


def _report(path, mses, clips=13):
    chosen = [{"method": m, "mse": v, "psnr": 40.0 - v, "chosen": f"{m}@1", "clips": clips} for m, v in mses.items()]
    path.write_text(json.dumps({"meta": {"machine": "cpu box", "device": "cpu", "data": "clips"}, "chosen": chosen}))
    return str(path)


def test_seeds_report_means_and_spreads(tmp_path):
    runs = [{"copy_last": 8.0, "ebt": e, "dit": d} for e, d in ((7.9, 8.7), (8.1, 9.1), (7.7, 8.2))]
    paths = [_report(tmp_path / f"r{i}.json", r) for i, r in enumerate(runs)]
    md = seeds.main([*paths, "--seeds", "0", "1", "2", "--metrics", "mse", "psnr", "--out", str(tmp_path / "out"),
                     "--stem", "s"])  # fmt: skip
    payload = json.loads(md.with_suffix(".json").read_text())
    ebt = next(r for r in payload["rows"] if r["method"] == "ebt")
    assert ebt["mse"] == [7.9, 8.1, 7.7]
    assert ebt["mse_mean"] == pytest.approx(7.9)
    assert ebt["mse_sd"] == pytest.approx(statistics.stdev([7.9, 8.1, 7.7]))
    text = md.read_text()
    assert "| ebt | ebt@1, ebt@1, ebt@1 | **7.90 ± 0.20** | **32.10 ± 0.20** | 7.90 / 8.10 / 7.70 |" in text
    assert payload["meta"]["seed"] == "0, 1, 2" and md.with_suffix(".png").is_file()


def test_seeds_report_refuses_reports_that_do_not_match(tmp_path):
    a = _report(tmp_path / "a.json", {"copy_last": 8.0, "ebt": 7.9})
    b = _report(tmp_path / "b.json", {"copy_last": 8.0, "dit": 7.9})
    with pytest.raises(UserError, match="not the same run"):
        seeds.main([a, b, "--seeds", "0", "1", "--metrics", "mse", "--out", str(tmp_path)])
    c = _report(tmp_path / "c.json", {"copy_last": 8.0, "ebt": 7.9}, clips=12)
    with pytest.raises(UserError, match="different numbers of clips"):
        seeds.main([a, c, "--seeds", "0", "1", "--metrics", "mse", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="at least two"):
        seeds.main([a, "--seeds", "0", "--metrics", "mse", "--out", str(tmp_path)])
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="not a readable report"):
        seeds.main([a, str(tmp_path / "bad.json"), "--seeds", "0", "1", "--metrics", "mse", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        seeds.main([a, a, "--seeds", "0", "0", "--out", str(tmp_path)])
