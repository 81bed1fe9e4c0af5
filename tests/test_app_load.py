"""The app under load, small: 4 users at once against a tiny model, served as ``ebt-vision demo`` serves it (the
full 20-user measurement with the shipped models is ``reports/app_load.md``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ebt_vision.core.checkpoint import save_pretrained_folder
from ebt_vision.experiments.app_load import (
    LoadOptions,
    batching_cost,
    percentile,
    run_load_test,
    write_load_report,
)
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.objective import DenoisingObjective

REPO = Path(__file__).resolve().parents[1]


def test_four_users_at_once_all_served_with_bounded_memory(tiny_cfg, tmp_path):
    ebt, dit = DenoisingObjective(tiny_cfg), DiTObjective(tiny_cfg)
    app_args = ("--checkpoint", str(save_pretrained_folder(ebt, tiny_cfg, tmp_path / "ebt")), "--dit-checkpoint",
                str(save_pretrained_folder(dit, tiny_cfg, tmp_path / "dit")), "--video-checkpoint", "",
                "--text-checkpoint", "", "--concurrency", "2")  # fmt: skip
    # every user the same request: the same pictures written at once (a race in Gradio's cache, fixed by the app)
    options = LoadOptions(users=4, rounds=3, app_args=app_args, app_root=REPO, same_request=True, startup_s=240,
                          request_timeout_s=240)  # fmt: skip
    result = run_load_test(options, tmp_path / "app.log", progress=False)
    assert result.pictures >= 12 * 5  # each result's pictures fetched as a browser would (clean, noisy, EBT, ...)
    assert result.failures == 0 and len(result.latencies) == 12, [r.failures for r in result.rounds]
    rss = [r.rss_mib for r in result.rounds]
    assert max(rss) - rss[0] < 150, rss  # no growth with the requests served (a tiny model: a few MiB each)
    batching = batching_cost(tmp_path / "ebt", tmp_path / "dit", batches=(1, 2), repeats=1)
    assert [b["batch"] for b in batching] == [1, 2] and all(b["cpu_s_per_image"] > 0 for b in batching)
    report = write_load_report(result, tmp_path / "report", "app_load", batching=batching)
    assert f"p90 **{percentile(result.latencies, 90):.1f} s**" in report.read_text()
    assert "| requests in one batch |" in report.read_text() and "clients of this load test" in report.read_text()
    assert (tmp_path / "report" / "app_load.json").is_file() and (tmp_path / "report" / "app_load.png").is_file()


def test_the_batching_measurement_reads_the_image_models_as_the_app_does():
    from ebt_vision.core import defaults
    from ebt_vision.experiments.app_load import _tab_models

    assert _tab_models(()) == (defaults.IMAGE_EBT, defaults.IMAGE_DIT)
    assert _tab_models(("--checkpoint=mine", "--dit-checkpoint", "", "--concurrency", "2")) == ("mine", None)


def test_machine_cpu_counts_busy_time_only_and_report_states_the_shared_machine(tmp_path):
    from ebt_vision.experiments.app_load import LoadResult, Round, machine_cpu_seconds

    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = f"cpu  {tick} {2 * tick} {3 * tick} {100 * tick} {50 * tick} {4 * tick} {5 * tick} {6 * tick} 0 0\ncpu0 1"
    assert machine_cpu_seconds(stat) == 1 + 2 + 3 + 4 + 5 + 6
    assert machine_cpu_seconds() > 0
    options = LoadOptions(users=2, rounds=2, note="a one-thread training ran on one core")
    result = LoadResult(options, idle_rss_mib=500.0, load_before=1.5, load_after=2.5, server_nice=10)
    result.rounds = [Round(k, [1.0 + k, 2.0 + k], [], 600.0, 700.0, 4.0, 6.0, 3.0) for k in range(2)]
    text = write_load_report(result, tmp_path, "app_load").read_text()
    assert "Shared machine: a one-thread training ran on one core" in text
    assert "other jobs on the machine took 3 CPU-seconds per round (0.75 of the" in text and "at nice 10" in text
    data = json.loads((tmp_path / "app_load.json").read_text())
    assert [row["others_cpu_s"] for row in data["rows"]] == [3.0, 3.0] and data["server_nice"] == 10
