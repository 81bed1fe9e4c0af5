"""The seeds report: mean and spread of each contender's chosen test figures over reports of different seeds."""

from __future__ import annotations

import json
import statistics

import pytest

from ebt_vision.core.errors import UserError
from ebt_vision.experiments import seeds


def _report(path, mses, clips=13):
    chosen = [{"method": m, "mse": v, "psnr": 40.0 - v, "chosen": f"{m}@1", "clips": clips} for m, v in mses.items()]
    verdicts = [{"baseline": "copy_last", "ebt_wins": True}]  # video reports carry verdicts too; chosen rows count
    meta = {"machine": "cpu box", "device": "cpu", "data": "clips"}
    path.write_text(json.dumps({"meta": meta, "chosen": chosen, "verdicts": verdicts}))
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


def _text_report(path, figures, windows=64):
    """A text report's JSON: ``figures`` {corpus: (transformer ppl, ebt ppl)}; bits per byte = ppl / 100."""
    verdicts = [{"corpus": c, "split": "id", "transformer_perplexity": t, "transformer_bits_per_byte": t / 100,
                 "ebt_chosen": "ebt@2", "ebt_chosen_perplexity": e, "ebt_chosen_bits_per_byte": e / 100}
                for c, (t, e) in figures.items()]  # fmt: skip
    rows = [{"corpus": c, "method": "ebt", "windows": windows} for c in figures]
    path.write_text(json.dumps({"meta": {"machine": "cpu box", "device": "cpu"}, "rows": rows, "verdicts": verdicts}))
    return str(path)


def test_seeds_report_reads_text_reports_and_marks_the_best_per_corpus(tmp_path):
    runs = [{"sotu_test": (50.0, 70.0 + i), "bible": (130.0 + i, 120.0)} for i in range(3)]
    paths = [_text_report(tmp_path / f"t{i}.json", r) for i, r in enumerate(runs)]
    md = seeds.main([*paths, "--seeds", "0", "1", "2", "--metrics", "perplexity", "bits_per_byte", "--out",
                     str(tmp_path / "out"), "--stem", "t"])  # fmt: skip
    payload = json.loads(md.with_suffix(".json").read_text())
    ebt = next(r for r in payload["rows"] if r["method"] == "sotu_test: ebt")
    assert ebt["perplexity"] == [70.0, 71.0, 72.0] and ebt["bits_per_byte_mean"] == pytest.approx(0.71)
    text = md.read_text()
    # the Transformer++ wins on sotu_test, the EBT on bible: one bold mean per corpus and metric
    best = "| sotu_test: transformer | transformer, transformer, transformer | **50.00 ± 0.00** | **0.500 ± 0.000** |"
    assert best in text
    assert "| bible: ebt | ebt@2, ebt@2, ebt@2 | **120.00 ± 0.00** | **1.200 ± 0.000** |" in text
    assert "| sotu_test: ebt | ebt@2, ebt@2, ebt@2 | 71.00 ± 1.00 | 0.710 ± 0.010 |" in text
    fewer = _text_report(tmp_path / "fewer.json", runs[0], windows=32)
    with pytest.raises(UserError, match="different numbers of clips"):
        seeds.main([paths[0], fewer, "--seeds", "0", "1", "--metrics", "perplexity", "--out", str(tmp_path)])
