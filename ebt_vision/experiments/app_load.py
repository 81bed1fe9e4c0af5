"""The app under load: many users click the image tab's Denoise at the same moment, for a few rounds; the latency of
each request (from the click to the result, as a user waits for it) and the server's memory after every round.

    python -m ebt_vision.experiments.app_load --users 20 --rounds 4 --out reports     # reports/app_load.md, .json, .png
    python -m ebt_vision.experiments.app_load --app-root /path/to/other/checkout --stem app_load_before ...

The app runs as its own process (``python -m ebt_vision demo`` with the shipped models, or the app options given
after ``--``), served on 127.0.0.1, from this checkout or from ``--app-root`` (another checkout, for a before/after
comparison); each user is its own Gradio client (its own session), and every user of every round asks for the tab's
default settings (``image_tab.DEFAULTS``) with its own noise seed, so no two requests are the same computation.
Memory is the server's resident set (``VmRSS``) after each round and its peak (``VmHWM``), read from ``/proc``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core.reports import make_meta, markdown_table, write_report

API = "/denoise"  # the image tab's Denoise event
CLIENTS = {"http": "HTTP requests as a browser makes them, every result picture downloaded",
           "gradio": "gradio_client.Client instances, every result picture downloaded"}  # fmt: skip


@dataclass(frozen=True)
class LoadOptions:
    users: int = 20  # simultaneous requests per round
    rounds: int = 4
    app_args: tuple[str, ...] = ()  # options of `ebt-vision demo` (checkpoints, --concurrency, --threads)
    app_root: Path | None = None  # serve the app of this checkout (None: the one imported here)
    api: str = API  # the Denoise event's API name (an older checkout's may differ: "/run")
    same_request: bool = False  # every user the same request (noise seed 0), as users who all click the default
    app_label: str = ""  # what the served code is, for the report (e.g. the commit an --app-root was taken from)
    note: str = ""  # what else ran on the machine meanwhile, in words, for the report
    client: str = "http"  # "http": each user as a browser is (HttpUser); "gradio": gradio_client.Client per user
    startup_s: float = 300.0  # the app must answer within this (it loads every tab's models first)
    request_timeout_s: float = 600.0


@dataclass
class Round:
    """One round: every user's latency (s) in submission order, failures as text, the server's memory after it."""

    index: int
    latencies: list[float]
    failures: list[str]
    rss_mib: float
    peak_rss_mib: float
    seconds: float  # from the first submission to the last answer
    cpu_s: float  # CPU time the server spent in the round (all its threads): what the round costs, however busy
    others_cpu_s: float = float("nan")  # CPU time the rest of the machine spent meanwhile (other jobs), see busy_cpu
    client_cpu_s: float = float("nan")  # CPU time this load test's own clients spent (they share the server's cores)

    @property
    def p50(self) -> float:
        return percentile(self.latencies, 50)

    @property
    def p90(self) -> float:
        return percentile(self.latencies, 90)


@dataclass
class LoadResult:
    options: LoadOptions
    idle_rss_mib: float  # after the app started, before any request
    load_before: float  # the machine's 1-minute load average (other jobs share the CPU)
    rounds: list[Round] = field(default_factory=list)
    load_after: float = float("nan")
    server_nice: int = 0  # the server's scheduling priority (the load test's own, inherited)
    pictures: int = 0  # result pictures the users downloaded (HTTP users; gradio_client downloads its own)

    @property
    def latencies(self) -> list[float]:
        return [latency for r in self.rounds for latency in r.latencies]

    @property
    def failures(self) -> int:
        return sum(len(r.failures) for r in self.rounds)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def memory_mib(pid: int) -> tuple[float, float]:
    """(resident set, its peak) of process ``pid`` in MiB, from /proc (Linux)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def machine_cpu_seconds(stat: str | None = None) -> float:
    """CPU time all cores spent busy since boot (user, nice, system, irq, softirq, steal), from /proc/stat (Linux)."""
    text = stat if stat is not None else Path("/proc/stat").read_text()
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    busy = sum(values[k] for k in (0, 1, 2, 5, 6, 7) if k < len(values))  # not idle (3), iowait (4), guest (in user)
    return busy / os.sysconf("SC_CLK_TCK")


def busy_cpu(pid: int) -> tuple[float, float]:
    """(the server's CPU seconds, the CPU seconds of everything else but this load test) so far: the difference over
    a round says how much CPU other jobs took from the server while it ran."""
    server = cpu_seconds(pid)
    return server, machine_cpu_seconds() - server - cpu_seconds(os.getpid())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(
    app_args: tuple[str, ...], log_path: Path, startup_s: float = 300.0, app_root: Path | None = None
) -> Iterator[tuple[str, int]]:
    """Start ``python -m ebt_vision demo`` on 127.0.0.1 (from ``app_root`` when given) and yield (its URL, its pid)
    once it answers; stop it after."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    if app_root is not None:
        env["PYTHONPATH"] = str(app_root)
    command = [sys.executable, "-m", "ebt_vision", "demo", "--host", "127.0.0.1", "--port", str(port), *app_args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, cwd=app_root, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + startup_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the app exited: {log_path.read_text()[-2000:]}")
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the app did not answer within {startup_s:.0f} s") from None
                    time.sleep(0.5)
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def default_request(seed: int) -> list:
    """The image tab's inputs at its default settings (the sample photo, calibrated steps, fast tiling), with
    ``seed`` as the noise seed."""
    from ..app.image_tab import DEFAULTS

    return [DEFAULTS[name] if name != "seed" else seed for name in DEFAULTS]


def run_round(clients: list, index: int, pid: int, options: LoadOptions) -> Round:
    """All clients submit at once (released together by a barrier); each waits for its own result."""
    latencies: list[float | None] = [None] * len(clients)
    failures: list[str] = []
    barrier = threading.Barrier(len(clients) + 1)

    def user(k: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            seed = 0 if options.same_request else 1000 * index + k
            request = clients[k].submit(*default_request(seed), api_name=options.api)
            request.result(timeout=options.request_timeout_s)
            latencies[k] = time.perf_counter() - started
        except Exception as error:  # a failed request is a result of the test, not a reason to stop it
            failures.append(f"user {k}: {type(error).__name__}: {str(error)[:200]}")

    threads = [threading.Thread(target=user, args=(k,)) for k in range(len(clients))]
    for thread in threads:
        thread.start()
    cpu, others = busy_cpu(pid)
    client = cpu_seconds(os.getpid())
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    rss, peak = memory_mib(pid)
    cpu_after, others_after = busy_cpu(pid)
    return Round(index, [t for t in latencies if t is not None], failures, rss, peak, seconds, cpu_after - cpu,
                 others_after - others, cpu_seconds(os.getpid()) - client)  # fmt: skip


class HttpUser:
    """One user as a browser is to the server: a request to the Denoise event over Gradio's HTTP API, the wait on
    its event stream, then a download of every picture of the result. The server does the same work for it as for
    ``gradio_client.Client``, which on this 2-core machine itself took ~0.85 CPU-seconds per request (its threads,
    its JSON, decoding what it downloads), CPU that a remote browser takes from its own machine."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.downloaded = 0  # pictures fetched so far

    def submit(self, *inputs, api_name: str = API) -> HttpUser:
        self._inputs, self._api = list(inputs), api_name.strip("/")
        return self

    def result(self, timeout: float) -> list:
        import httpx

        with httpx.Client(timeout=timeout) as http:
            call = f"{self.url}/gradio_api/call/{self._api}"
            event = http.post(call, json={"data": self._inputs}).raise_for_status().json()["event_id"]
            outputs, kind = None, ""
            with http.stream("GET", f"{call}/{event}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        kind = line.partition(":")[2].strip()
                    elif line.startswith("data:") and kind in ("complete", "error"):
                        if kind == "error":
                            raise RuntimeError(f"the app answered with an error: {line[5:].strip()[:200]}")
                        outputs = json.loads(line[5:])
                        break
            if outputs is None:
                raise RuntimeError("the event stream ended without a result")
            urls = _file_urls(outputs)
            for file_url in urls:
                http.get(file_url).raise_for_status()
            self.downloaded += len(urls)
        return outputs


def _file_urls(value) -> list[str]:
    """Every file URL in a Gradio result (pictures, the gallery's items), as a browser would fetch them."""
    if isinstance(value, dict):
        found = [value["url"]] if isinstance(value.get("url"), str) and value.get("meta") else []
        return found + [url for item in value.values() for url in _file_urls(item)]
    if isinstance(value, list):
        return [url for item in value for url in _file_urls(item)]
    return []


def run_load_test(options: LoadOptions, log_path: Path, progress: bool = True) -> LoadResult:
    """Serve the app and run ``options.rounds`` rounds of ``options.users`` simultaneous default denoise requests."""
    served = serve(options.app_args, log_path, options.startup_s, options.app_root)
    with served as (url, pid), tempfile.TemporaryDirectory() as tmp:
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        result = LoadResult(options, memory_mib(pid)[0], os.getloadavg()[0], server_nice=nice)
        if options.client == "gradio":
            from gradio_client import Client

            clients = [Client(url, verbose=False, download_files=tmp) for _ in range(options.users)]
        else:
            clients = [HttpUser(url) for _ in range(options.users)]
        for index in range(options.rounds):
            done = run_round(clients, index, pid, options)
            result.rounds.append(done)
            if progress:
                print(f"round {index}: p50 {done.p50:.1f} s, p90 {done.p90:.1f} s, {len(done.failures)} failed, "
                      f"server RSS {done.rss_mib:.0f} MiB", flush=True)  # fmt: skip
        result.load_after = os.getloadavg()[0]
        result.pictures = sum(getattr(client, "downloaded", 0) for client in clients)
        return result


def batching_cost(
    ebt_path: str | Path, dit_path: str | Path | None, batches: tuple[int, ...] = (1, 2, 4), repeats: int = 3
) -> list[dict]:
    """CPU seconds per image of the image tab's model work (the EBT's 3-step descent with its energy maps, the DiT's 2
    DDIM steps; 256 px, tiles side by side, one thread) when ``batch`` requests' photos run as one batch: what
    batching queued requests into one forward pass would save. The median of ``repeats``, batch sizes interleaved."""
    import torch

    from ..core.inference import Thinking
    from ..image.dit import dit_denoise, load_dit
    from ..image.inference import Tiling, denoise, load_denoiser

    objective, dit = load_denoiser(ebt_path), load_dit(dit_path) if dit_path else None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds: dict[int, list[float]] = {batch: [] for batch in batches}
    try:
        for _ in range(repeats):
            for batch in batches:
                noisy = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch)) * 2 - 1
                started = time.process_time()
                denoise(objective, noisy, Thinking(num_steps=3), tiling=Tiling(overlap=1, record_maps=True))
                if dit is not None:
                    dit_denoise(dit, noisy, 25.0, num_steps=2, tile_overlap=1)
                seconds[batch].append((time.process_time() - started) / batch)
    finally:
        torch.set_num_threads(threads)
    return [{"batch": batch, "cpu_s_per_image": statistics.median(values), "repeats": repeats}
            for batch, values in seconds.items()]  # fmt: skip


def _rows(result: LoadResult) -> list[dict]:
    return [{"round": r.index, "users": result.options.users, "p50_s": r.p50, "p90_s": r.p90,
             "max_s": max(r.latencies, default=float("nan")), "failures": len(r.failures), "round_s": r.seconds,
             "server_cpu_s": r.cpu_s, "client_cpu_s": r.client_cpu_s, "others_cpu_s": r.others_cpu_s,
             "rss_mib": r.rss_mib, "peak_rss_mib": r.peak_rss_mib}
            for r in result.rounds]  # fmt: skip


def _figure(result: LoadResult, before: dict | None, path: Path) -> None:
    """Latency of every request by round (left) and the server's memory after each round (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    runs = [("after", result.idle_rss_mib, _rows(result), [r.latencies for r in result.rounds])]
    if before:
        runs.insert(0, ("before", before["idle_rss_mib"], before["rows"], before["latencies"]))
    for k, (name, idle, rows, latencies) in enumerate(runs):
        for index, values in enumerate(latencies):
            left.scatter([index + 0.2 * k - 0.1] * len(values), values, s=8, color=f"C{k}",
                         label=name if index == 0 else None)  # fmt: skip
        right.plot(range(-1, len(rows)), [idle] + [row["rss_mib"] for row in rows], "o-", color=f"C{k}", label=name)
    left.axhline(30, color="grey", linestyle="--", linewidth=1)
    left.set(xlabel="round", ylabel="seconds from click to result", title=f"{result.options.users} users at once")
    right.set(xlabel="round (-1: idle after start)", ylabel="server RSS (MiB)", title="memory after each round")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_load_report(
    result: LoadResult,
    out: Path,
    stem: str,
    before_path: Path | None = None,
    command: str | None = None,
    batching: list[dict] | None = None,
) -> Path:
    """``stem``.md/.json/.png: latency percentiles and memory per round, against a ``before`` run when given."""
    options = result.options
    latencies = result.latencies
    before = json.loads(before_path.read_text()) if before_path else None
    table = markdown_table(["round", "p50 s", "p90 s", "max s", "failed", "round s", "server CPU s",
                            "clients' CPU s", "other jobs' CPU s", "RSS MiB after", "peak RSS MiB"],
                           [[r["round"], r["p50_s"], r["p90_s"], r["max_s"], r["failures"], r["round_s"],
                             r["server_cpu_s"], r["client_cpu_s"], r["others_cpu_s"], r["rss_mib"],
                             r["peak_rss_mib"]]
                            for r in _rows(result)])  # fmt: skip
    rss = [r.rss_mib for r in result.rounds]
    p90 = percentile(latencies, 90)
    seeds = "every request the same, noise seed 0" if options.same_request else "each request its own noise seed"
    cores = os.cpu_count() or 1
    label = f" ({options.app_label})" if options.app_label else ""
    cpu_per_round = statistics.mean(r.cpu_s for r in result.rounds)
    cpu_per_request = cpu_per_round / options.users
    others_per_round = statistics.mean(r.others_cpu_s for r in result.rounds)
    client_per_round = statistics.mean(r.client_cpu_s for r in result.rounds)
    round_s = statistics.mean(r.seconds for r in result.rounds)
    lines = [
        f"{options.users} users click the image tab's Denoise at the same moment, {options.rounds} rounds, the tab's "
        f"default settings ({seeds}). App options: `{' '.join(options.app_args) or '(none)'}`"
        f"{f' from `{options.app_root}`' if options.app_root else ''}{label}.",
        "",
        table,
        "",
        f"- all {len(latencies)} requests: p50 **{percentile(latencies, 50):.1f} s**, p90 **{p90:.1f} s** (goal: "
        f"under 30 s), {result.failures} failed",
        f"- server memory: {result.idle_rss_mib:.0f} MiB idle, then {', '.join(f'{v:.0f}' for v in rss)} MiB after "
        f"each round (growth from the first round to the last: {rss[-1] - rss[0]:+.0f} MiB)",
        f"- the server's CPU time: {cpu_per_request:.2f} s per request (all its threads); a round's "
        f"{cpu_per_round:.0f} CPU-seconds would take {cpu_per_round / cores:.0f} s on {cores} idle cores, the rounds "
        f"took {round_s:.0f} s",
        f"- the {options.users} clients of this load test ({CLIENTS[options.client]}, in one process on the same "
        f"machine: a remote browser would not take the server's cores) took {client_per_round:.0f} CPU-seconds per "
        f"round ({client_per_round / round_s:.2f} of the {cores} cores)",
        f"- other jobs on the machine took {others_per_round:.0f} CPU-seconds per round "
        f"({others_per_round / round_s:.2f} of the {cores} cores while a round ran; everything but the server and "
        f"this load test, from /proc/stat); "
        f"the server ran at nice {result.server_nice}",
        f"- machine load (1-minute average, other jobs included): {result.load_before:.1f} before, "
        f"{result.load_after:.1f} after",
    ]
    if batching:
        single = batching[0]["cpu_s_per_image"]
        lines += ["", "Batched inference: CPU seconds per image of the tab's model work (EBT 3 descent steps with "
                  "energy maps, DiT 2 DDIM steps, 256 px, one thread) when that many requests run as one batch "
                  "(median of "
                  f"{batching[0]['repeats']}, measured in the load test's process before the app started):", "",
                  markdown_table(["requests in one batch", "CPU s per image", "vs one at a time"],
                                 [[b["batch"], b["cpu_s_per_image"], f"{b['cpu_s_per_image'] / single - 1:+.0%}"]
                                  for b in batching])]  # fmt: skip
    if options.note:
        lines.insert(2, f"Shared machine: {options.note}\n")
    if before:
        b, meta = before["summary"], before["meta"]
        memory = ", ".join(f"{row['rss_mib']:.0f}" for row in before["rows"])
        lines.append(f"- before (`{meta['command']}`): p50 {b['p50_s']:.1f} s, p90 "
                     f"{b['p90_s']:.1f} s, {b['failures']} failed, memory {before['idle_rss_mib']:.0f} MiB idle then "
                     f"{memory} MiB after each round")  # fmt: skip
    summary = {"p50_s": percentile(latencies, 50), "p90_s": p90, "failures": result.failures,
               "requests": len(latencies)}  # fmt: skip
    data = ("the image tab's default request (sample photo at 256 px, calibrated steps, fast tiling, DiT 2 DDIM "
            f"steps), {seeds}")  # fmt: skip
    meta = make_meta("cpu", 0, data, f"{options.users} simultaneous users x {options.rounds} rounds", command)
    out.mkdir(parents=True, exist_ok=True)
    _figure(result, before, out / f"{stem}.png")
    return write_report(out, stem, meta, _rows(result), "\n".join(lines) + f"\n\n![latency and memory]({stem}.png)",
                        summary=summary, idle_rss_mib=result.idle_rss_mib, latencies=[r.latencies for r in
                        result.rounds], failures=[f for r in result.rounds for f in r.failures],
                        load_average=[result.load_before, result.load_after], server_nice=result.server_nice,
                        note=options.note, client=options.client, batching=batching or [])  # fmt: skip


def _tab_models(app_args: tuple[str, ...]) -> tuple[str, str | None]:
    """The image tab's (EBT, DiT) checkpoints that ``ebt-vision demo`` with ``app_args`` serves, read by the app's
    own option parser."""
    from ..app.demo import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    served = parser.parse_args(list(app_args))
    return served.checkpoint, served.dit_checkpoint or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ebt_vision.experiments.app_load", description=__doc__)
    parser.add_argument("--users", type=int, default=20, help="simultaneous requests per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="runs/app_load", help="folder for the report")
    parser.add_argument("--stem", default="app_load")
    parser.add_argument("--app-root", type=Path, default=None, help="serve the app of this checkout")
    parser.add_argument("--before", type=Path, default=None, help="an earlier report's .json to compare with")
    parser.add_argument("--api", default=API, help="the Denoise event's API name in the served app")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="http",
                        help="how each user talks to the app: http (as a browser: submit, event stream, download "
                        "every picture) or gradio (a gradio_client.Client each; heavier on this machine's "
                        "CPU)")  # fmt: skip
    parser.add_argument("--same-request", action="store_true", help="every user the same request (noise seed 0)")
    parser.add_argument("--app-label", default="", help="what the served code is (shown in the report)")
    parser.add_argument("--note", default="", help="what else ran on the machine meanwhile (shown in the report)")
    parser.add_argument("--batching", action="store_true",
                        help="first measure the CPU per image of the tab's model work run in batches of 1, 2, 4 "
                        "(the shipped models, or --checkpoint/--dit-checkpoint among the app options)")  # fmt: skip
    parser.add_argument("app_args", nargs=argparse.REMAINDER, help="after --: options of `ebt-vision demo`")
    args = parser.parse_args(argv)
    app_args = tuple(a for a in args.app_args if a != "--")
    options = LoadOptions(args.users, args.rounds, app_args, args.app_root, args.api, args.same_request,
                          args.app_label, args.note, args.client)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    batching = batching_cost(*_tab_models(app_args)) if args.batching else None
    result = run_load_test(options, Path(tempfile.gettempdir()) / f"{args.stem}-app.log")
    command = shlex.join(["python", "-m", "ebt_vision.experiments.app_load", *(argv or sys.argv[1:])])
    print(write_load_report(result, out, args.stem, args.before, command, batching))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
