"""What the data benchmark measures: a stream's samples per second, a training process's memory after it has read a
stream for a while (in a fresh process), the data-wait fraction of a real training run (the ``train`` command, its
``metrics.csv``), and kill -9 / resume against an uninterrupted run (bitwise)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

import ebt_vision

from ...core.checkpoint import latest_checkpoint
from ...core.config import from_dict
from ...core.train import batch_rows

PACKAGE_ROOT = str(Path(ebt_vision.__file__).resolve().parents[1])


def training_stream(values: dict):
    """The training stream a config (as a dict) trains on, whatever its task."""
    cfg = from_dict(values)
    if cfg.task == "image":
        from ...image.training import make_sampler

        return make_sampler(cfg)
    if cfg.task == "video":
        from ...video.data import training_stream as video_stream

        return video_stream(cfg)
    from ...text.data import WindowSampler
    from ...text.prepare import prepared_tokens

    tokens = prepared_tokens(cfg.data.corpus, "train")
    return WindowSampler(tokens, cfg.data.seq_len, cfg.data.batch_size, cfg.train.seed)


def stream_rate(values: dict, batches: int, warmup: int = 2) -> float:
    """Samples per second of the config's training stream over ``batches`` batches, after ``warmup`` (worker start)."""
    iterator = iter(training_stream(values))
    for _ in range(warmup):
        next(iterator)
    started, samples = time.perf_counter(), 0
    for _ in range(batches):
        samples += batch_rows(next(iterator))
    rate = samples / (time.perf_counter() - started)
    if hasattr(iterator, "close"):
        iterator.close()  # stops the workers
    return rate


def _field_kib(path: str, field: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def _memory_probe(values: dict, batches: int) -> dict:
    """In a fresh process: read ``batches`` batches of the stream, then this process's resident memory (anonymous
    and file-backed) and its data workers' proportional share (PSS, so pages shared by fork count once)."""
    started = time.perf_counter()
    iterator = iter(training_stream(values))
    for _ in range(batches):
        next(iterator)
    pid = os.getpid()
    mib = 1 / 1024
    result = {
        "main_rss_mib": _field_kib(f"/proc/{pid}/status", "VmRSS") * mib,
        "main_anon_mib": _field_kib(f"/proc/{pid}/status", "RssAnon") * mib,
        "main_file_mib": _field_kib(f"/proc/{pid}/status", "RssFile") * mib,
        "workers_pss_mib": sum(_field_kib(f"/proc/{c}/smaps_rollup", "Pss") for c in _children(pid)) * mib,
        "seconds": time.perf_counter() - started,
    }
    if hasattr(iterator, "close"):
        iterator.close()
    return result


PROBE = (
    "import json, sys; from ebt_vision.experiments.databench.measure import _memory_probe; "
    "print(json.dumps(_memory_probe(json.loads(sys.argv[1]), int(sys.argv[2]))))"
)


def memory_probe(values: dict, batches: int) -> dict:
    """``_memory_probe`` in a fresh Python process (nothing else loaded, no helper threads to fork)."""
    command = [sys.executable, "-c", PROBE, json.dumps(values), str(batches)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _train_command(config: str, overrides: list[str], out: Path, *extra: str) -> list[str]:
    sets = [item for override in overrides for item in ("--set", override)]
    return [
        sys.executable,
        "-m",
        "ebt_vision",
        "train",
        "--config",
        config,
        *sets,
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def metrics_rows(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def training_run(config: str, overrides: list[str], out: Path) -> dict:
    """Train with the ``train`` command; its data-wait fraction and samples/s over the logged intervals after the
    first (which holds the worker start), and its seconds per step."""
    done = subprocess.run(_train_command(config, overrides, out), capture_output=True, text=True, env=_env())
    if done.returncode != 0:
        raise RuntimeError(f"training run failed: {done.stderr[-2000:]}")
    rows = metrics_rows(out)[1:]
    steps = rows[-1]["step"] - rows[0]["step"]
    return {
        "data_wait": float(np.mean([r["data_wait"] for r in rows])),
        "data_wait_max": float(np.max([r["data_wait"] for r in rows])),
        "samples_per_s": float(np.median([r["samples_per_s"] for r in rows])),
        "s_per_step": (rows[-1]["seconds"] - rows[0]["seconds"]) / steps if steps else float("nan"),
    }


def kill_and_resume(config: str, overrides: list[str], folder: Path, kill_after: int) -> dict:
    """An uninterrupted run, and a run killed (kill -9, its data workers too) once checkpoint ``kill_after`` exists
    and resumed: are the final weights bitwise equal?"""
    reference = subprocess.run(_train_command(config, overrides, folder / "reference"), env=_env(), capture_output=True)
    if reference.returncode != 0:
        raise RuntimeError(f"reference run failed: {reference.stderr[-2000:]}")
    killed = folder / "killed"
    process = subprocess.Popen(_train_command(config, overrides, killed), env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        found = latest_checkpoint(killed)
        if found is not None and int(found.name.split("_")[1]) >= kill_after:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    stopped = latest_checkpoint(killed)
    resumed = subprocess.run(_train_command(config, overrides, killed, "--resume"), env=_env(), capture_output=True)
    if resumed.returncode != 0:
        raise RuntimeError(f"resumed run failed: {resumed.stderr[-2000:]}")
    want, got = load_file(folder / "reference" / "model.safetensors"), load_file(killed / "model.safetensors")
    return {
        "killed_at_step": int(stopped.name.split("_")[1]) if stopped else 0,
        "bitwise_equal": all(torch.equal(got[name], want[name]) for name in want),
        "max_abs_difference": max(float((got[n] - want[n]).abs().max()) for n in want),
        "tensors": len(want),
    }
