"""The lent-GPU check's planning: throughput from a run's log, steps that fill a slot, at most 8 result files."""

from __future__ import annotations

import json
import tarfile

import pytest

from ebt_vision.core.errors import UserError
from ebt_vision.experiments import gpu_check


def write_log(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["step,loss,seconds,samples_per_s"] + [f"{s},0.1,{t},100" for s, t in rows]
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_throughput_leaves_out_the_first_interval_and_plans_steps_with_a_margin(tmp_path):
    run = write_log(tmp_path / "run", [(5, 3.0), (10, 3.5), (15, 4.0)])  # 3 s of start-up in the first interval
    assert gpu_check.measured_rate(gpu_check.logged_rows(run)) == pytest.approx(10.0)
    assert gpu_check.trained_steps(run) == 15
    assert gpu_check.measured_rate(gpu_check.logged_rows(write_log(tmp_path / "one", [(8, 2.0)]))) == pytest.approx(4.0)
    assert gpu_check.planned_steps(10.0, 100) == 900 and gpu_check.planned_steps(0.01, 10) == 20
    with pytest.raises(UserError, match="no training log"):
        gpu_check.logged_rows(tmp_path / "missing")
    with pytest.raises(UserError, match="no logged steps"):
        gpu_check.logged_rows(write_log(tmp_path / "empty", []))
    with pytest.raises(UserError, match="cannot plan"):
        gpu_check.planned_steps(0.0, 10)


def test_results_are_packed_into_few_files_without_training_checkpoints(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    out.mkdir()
    for name in ("ebt", "dit", "video/ebt", "video/dit"):
        folder = work / name
        (folder / "checkpoints" / "step_0000010").mkdir(parents=True)
        (folder / "checkpoints" / "step_0000010" / "optimizer.pt").write_bytes(b"x" * 100)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "config.json").write_text("{}")
    (work / "image_report").mkdir()
    (work / "image_report" / "denoise_gpu.md").write_text("# report")
    (work / "logs").mkdir()
    (work / "logs" / "ebt.log").write_text("log")
    files = gpu_check.collect(work, out, "ebt")
    assert files == ["ebt-image-gpu.tar.gz", "dit-image-gpu.tar.gz", "image-report.tar.gz", "video-ebt.tar.gz",
                     "video-dit.tar.gz", "logs.tar.gz"]  # fmt: skip
    with tarfile.open(out / "ebt-image-gpu.tar.gz") as tar:  # paths relative to the work folder, no checkpoints
        assert sorted(tar.getnames()) == ["ebt/config.json", "ebt/model.safetensors"]
    with tarfile.open(out / "video-ebt.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["video/ebt/config.json", "video/ebt/model.safetensors"]


def test_the_report_reads_the_unpacked_results(tmp_path):
    results = tmp_path / "results"
    write_log(results / "ebt1", [(10, 2.0), (20, 3.0), (30, 4.0)])
    write_log(results / "video" / "ebt", [(5, 1.0), (10, 2.0)])
    summary = {"budget_s": 540, "used_s": 500, "environment": {"card": "NVIDIA H200", "cuda": True}, "image": {},
               "video": {}, "stages": [{"name": "ebt", "status": "ok", "seconds": 9.0, "timeout": 20}]}  # fmt: skip
    (results / "gpu_check.json").write_text(json.dumps(summary))
    md = gpu_check.report(results, tmp_path / "reports")
    payload = json.loads(md.with_suffix(".json").read_text())
    assert [(r["method"], r["steps"], r["steps_per_s"]) for r in payload["rows"]] == [
        ("image EBT, stage 1", 30, 10.0), ("video EBT", 10, 5.0)]  # fmt: skip
    assert payload["meta"]["device"] == "cuda:NVIDIA H200" and md.with_suffix(".png").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no gpu_check.json"):
        gpu_check.report(tmp_path / "empty", tmp_path)
    (tmp_path / "empty" / "gpu_check.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="no trained model folders"):
        gpu_check.report(tmp_path / "empty", tmp_path)


def test_the_summary_names_the_card_and_every_stage(tmp_path):
    summary = {
        "budget_s": 60,
        "used_s": 5,
        "environment": {"card": "NVIDIA H200"},
        "image": {},
        "video": {},
        "stages": [
            {"name": "ebt", "status": "ok", "seconds": 3.0, "timeout": 10, "command": ["p", "-m", "e", "train"]}
        ],
    }
    text = gpu_check.summary_markdown(summary)
    assert "**card**: NVIDIA H200" in text and "| ebt | ok |" in text and json.dumps({"card": "NVIDIA H200"}) in text
