"""floor, peer and callflow side by side: the same IVR calls over real HTTP, one worker each.

    python bench/compare.py                     # the benchmark: 3 rounds, about 2 minutes
    python bench/compare.py --seconds 2 --rounds 1 --no-chart   # a quick look

The three apps (bench/apps/floor.py, bench/apps/peer.py, examples/ivr.py under
``callflow serve``) each run in their own process under the same server code, hypercorn
with one worker on asyncio, logging at ``warning``. This process is the load generator.

1. **Record.** One complete IVR call per app, played by the simulator (CalledNumber, the
   menu, the caller presses 1, the dial to sales, the agent answers, talks and hangs up,
   the goodbye, the hang-up: 17 notifications), recorded on the wire: each notification's
   path, query and body, and the app's response.
2. **Saturate.** ``--connections`` keep-alive connections each replay complete calls back
   to back (every call with its own call id, each notification sent once the previous one
   is answered), for ``--seconds``; every response is checked byte for byte against the
   recorded one. Notifications per second here is the app's maximum; the app's CPU (from
   /proc) shows that the app, not the generator, was the bottleneck.
3. **Pace.** New calls start at a steady rate, so notifications arrive at 50 % of that
   app's maximum (``--load``), for ``--seconds``; the latency of each notification (request
   written → response read) gives p50 and p99.

The generator replays recorded bytes over raw asyncio streams rather than running the
simulator for every call: the simulator plays every caller and runs every command, which
costs more CPU than any of these apps, so it could not drive them to their limits on a
2-core machine. Rounds alternate the apps, so a noisy moment on the machine hits all three;
each figure is the median over the rounds. Writes bench/results/compare.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
from _common import ROOT, Exchange, cpu_of, own_cpu, record_call

from callflow.simulator._load import percentile

APPS = ("floor", "peer", "callflow", "callflow-sqlite", "callflow-sqlite-replay",
        "callflow-postgresql")
DEFAULT_APPS = ("floor", "peer", "callflow", "callflow-sqlite")
STORES = {
    "callflow": "memory",
    "callflow-sqlite": "sqlite",
    "callflow-sqlite-replay": "sqlite",  # with --cache-size 0: a replay on every notification
    "callflow-postgresql": "postgresql",
}
"""Each callflow row's store (``callflow serve --store``), in a place of this run's own."""
DURABLE_TARGET = 0.8
"""callflow with its default store (SQLite) must keep this share of memory mode's rate."""
POSTGRESQL = os.environ.get("CALLFLOW_BENCH_POSTGRESQL",
                            "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "bench-compare"
READY_TIMEOUT = 30.0
TARGETS = {"floor": 0.85, "peer": 1.0}
"""callflow's notifications per second must be at least this share of each other app's."""
P99_TARGET_MS = 20.0
KEEP_IDLE = 1.0
"""Seconds an idle connection is reused for (hypercorn closes idle ones after 5 s)."""


# -- the apps' processes -------------------------------------------------------------------


def store_for(app: str) -> list[str]:
    """``--store`` (and ``--cache-size``) for a callflow row: a fresh store per run."""
    kind = STORES[app]
    if kind == "memory":
        return ["--store", "memory"]
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='callflow-bench-')}/calls.db"
    else:
        import psycopg

        schema = f"callflow_bench_{os.getpid()}_{int(time.time())}"
        with psycopg.connect(POSTGRESQL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{POSTGRESQL}?options={quote(f'-csearch_path={schema}')}"
    return ["--store", url, *(["--cache-size", "0"] if app.endswith("-replay") else [])]


def command_for(app: str) -> list[str]:
    """The command line that serves `app` on a free port (one worker, warning logs)."""
    common = ["--port", "0", "--secret", SECRET, "--log-level", "warning"]
    if app.startswith("callflow"):
        # --platform-url: a port nothing listens on; nothing here pushes, and nothing may
        # reach an address the benchmark did not start.
        return [sys.executable, "-m", "callflow", "serve", str(ROOT / "examples" / "ivr.py"),
                "--no-configure", "--platform-url", "http://127.0.0.1:9", *common,
                *store_for(app)]
    return [sys.executable, str(ROOT / "bench" / "apps" / "serve.py"), app, *common]


@dataclass
class Served:
    name: str
    process: subprocess.Popen[str]
    callback_url: str

    @property
    def origin(self) -> tuple[str, int]:
        url = httpx.URL(self.callback_url)
        return url.host, url.port or 80

    def cpu(self) -> float:
        """CPU seconds the app's process has used so far (Linux /proc)."""
        return cpu_of(self.process.pid)


def start(app: str) -> Served:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    process = subprocess.Popen(command_for(app), stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    callback = None
    banner = []
    for line in process.stdout:  # the banner ends with "ready:"
        banner.append(line.rstrip())
        if line.startswith("callback URL:"):
            callback = line.split(":", 1)[1].strip()
        if line.startswith("ready:") or time.monotonic() > deadline:
            break
    if callback is None or not banner[-1].startswith("ready:"):
        process.kill()
        raise SystemExit(f"{app} did not start:\n" + "\n".join(banner))
    # The rest of its stdout is never read: the apps print nothing more at warning level.
    return Served(app, process, callback)


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(10)
    except subprocess.TimeoutExpired:
        served.process.kill()


async def record(served: Served) -> tuple[bytes, list[Exchange]]:
    """The benchmark call (bench/_common.py) into the served app, recorded."""
    try:
        return await record_call(served.callback_url)
    except SystemExit as exc:
        raise SystemExit(f"{served.name}: {exc}") from None


# -- replaying calls -------------------------------------------------------------------------


class Script:
    """A recorded call, ready to be replayed under new call ids."""

    def __init__(self, served: Served, call_id: bytes, exchanges: list[Exchange]) -> None:
        self.template = call_id
        host, port = served.origin
        self.host = f"{host}:{port}".encode()
        self.exchanges = exchanges
        self.issued = 0

    def new_call(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Requests and expected answers for one more call, with its own call id."""
        self.issued += 1
        call_id = b"%s-%09d" % (prefix, self.issued)
        out = []
        for exchange in self.exchanges:
            body = exchange.body.replace(self.template, call_id)
            request = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s"
                       % (exchange.target.replace(self.template, call_id), self.host,
                          len(body), body))
            out.append((request, exchange.answer.replace(self.template, call_id)))
        return out


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read the response's body.

    When the server closes it (hypercorn does after 1,000 requests and says so with
    ``Connection: close``), the next request opens a new one.
    """

    def __init__(self, origin: tuple[str, int]) -> None:
        self.origin = origin
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> bytes:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.origin)
        reader = self.reader
        self.writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        length = None
        chunked = closing = False
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:") and b"chunked" in line:
                chunked = True
            elif line.startswith(b"connection:") and b"close" in line:
                closing = True
        if chunked:
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            raise RuntimeError(f"a response with no length: {head!r}")
        if closing:
            self.close()
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {body[:300]!r}")
        return body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    notifications: int = 0
    calls: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def play_call(connection: Connection, requests: list[tuple[bytes, bytes]],
                    tally: Tally, counting: list[bool]) -> None:
    """One complete call: each notification once the previous one is answered."""
    for request, expected in requests:
        sent = time.perf_counter()
        answer = await connection.exchange(request)
        latency = time.perf_counter() - sent
        if answer != expected:
            raise RuntimeError(f"unexpected answer {answer[:200]!r}, expected {expected[:200]!r}")
        if counting[0]:
            tally.notifications += 1
            tally.latencies.append(latency)
    if counting[0]:
        tally.calls += 1


async def saturate(served: Served, script: Script, connections: int, seconds: float,
                   warmup: float, prefix: bytes) -> dict[str, Any]:
    """Closed loop: `connections` callers replaying calls back to back."""
    tally = Tally()
    counting = [False]
    stopping = [False]

    async def caller() -> None:
        connection = Connection(served.origin)
        try:
            while not stopping[0]:
                await play_call(connection, script.new_call(prefix), tally, counting)
        finally:
            connection.close()

    tasks = [asyncio.create_task(caller()) for _ in range(connections)]
    await asyncio.sleep(warmup)
    counting[0] = True
    cpu0, own0, t0 = served.cpu(), own_cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    counting[0] = False
    elapsed = time.perf_counter() - t0
    cpu, own = served.cpu() - cpu0, own_cpu() - own0
    stopping[0] = True
    await _finish(tasks, tally)
    return _figures(tally, elapsed, cpu, own)


async def pace(served: Served, script: Script, rate: float, seconds: float, warmup: float,
               prefix: bytes) -> dict[str, Any]:
    """Open loop: calls started at a steady rate so that notifications come at `rate`/s."""
    tally = Tally()
    counting = [False]
    idle: list[tuple[float, Connection]] = []  # (when it was last used, the connection)
    per_call = len(script.exchanges)
    interval = per_call / rate

    async def one_call() -> None:
        connection = None
        while idle and connection is None:
            used, connection = idle.pop()
            if time.monotonic() - used > KEEP_IDLE:  # the server may have closed it
                connection.close()
                connection = None
        if connection is None:
            connection = Connection(served.origin)
        try:
            await play_call(connection, script.new_call(prefix), tally, counting)
        except Exception as exc:
            connection.close()
            tally.errors.append(f"{type(exc).__name__}: {exc}")
            return
        idle.append((time.monotonic(), connection))

    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    started = loop.time()
    measure_from, end = started + warmup, started + warmup + seconds
    cpu0 = own0 = t0 = 0.0
    n = 0
    while True:
        now = loop.time()
        if not counting[0] and now >= measure_from:
            counting[0] = True
            cpu0, own0, t0 = served.cpu(), own_cpu(), time.perf_counter()
        if now >= end:
            break
        task = asyncio.create_task(one_call())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, started + n * interval - loop.time()))
    # Calls still in progress finish and count: they were started inside the window.
    await _finish(list(tasks), tally)
    counting[0] = False
    elapsed = time.perf_counter() - t0
    figures = _figures(tally, elapsed, served.cpu() - cpu0, own_cpu() - own0)
    for _, connection in idle:
        connection.close()
    figures["offered_rate"] = round(rate, 1)
    return figures


async def _finish(tasks: Sequence[asyncio.Task[None]], tally: Tally) -> None:
    """Wait for the callers; any call that failed fails the benchmark."""
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            tally.errors.append(f"{type(outcome).__name__}: {outcome}")
    if tally.errors:
        raise SystemExit(f"{len(tally.errors)} calls failed, e.g. {tally.errors[0]}")


def _figures(tally: Tally, elapsed: float, cpu: float, own: float) -> dict[str, Any]:
    latencies = sorted(tally.latencies)
    return {
        "notifications_per_second": round(tally.notifications / elapsed, 1),
        "calls_per_second": round(tally.calls / elapsed, 2),
        "notifications": tally.notifications,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 3),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 3),
        "app_cpu": round(cpu / elapsed, 3),
        "generator_cpu": round(own / elapsed, 3),
    }


def _percentile(ordered: list[float], p: float) -> float:
    return percentile(ordered, p) if ordered else float("nan")


# -- the run ---------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """Each app's figures, and the notifications of one call."""
    servers = {name: start(name) for name in args.apps}
    try:
        scripts = {}
        for name, served in servers.items():
            call_id, exchanges = anyio.run(record, served)
            scripts[name] = Script(served, call_id, exchanges)
            print(f"{name:<22} recorded: {len(exchanges)} notifications per call", flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in args.apps}
        for r in range(args.rounds):
            for name in args.apps:
                figures = asyncio.run(saturate(
                    servers[name], scripts[name], args.connections, args.seconds,
                    args.warmup, b"max%d" % r))
                rounds[name].append(figures)
                print(f"{name:<22} round {r + 1}: {_line(figures)}", flush=True)
        result: dict[str, Any] = {}
        for name in args.apps:
            best = {key: statistics.median(f[key] for f in rounds[name])
                    for key in rounds[name][0]}
            rate = best["notifications_per_second"] * args.load
            paced = asyncio.run(pace(servers[name], scripts[name], rate, args.seconds,
                                     args.warmup, b"paced"))
            print(f"{name:<22} at {args.load:.0%}: {_line(paced)}", flush=True)
            result[name] = {"max": best, "rounds": rounds[name], "paced": paced}
        return result, len(scripts[args.apps[-1]].exchanges)
    finally:
        for served in servers.values():
            stop(served)


def _line(f: dict[str, Any]) -> str:
    return (f"{f['notifications_per_second']:8.0f} notifications/s, "
            f"{f['calls_per_second']:6.1f} calls/s, p50 {f['p50_ms']:.2f} ms, "
            f"p99 {f['p99_ms']:.2f} ms, app CPU {f['app_cpu']:.0%}, "
            f"generator CPU {f['generator_cpu']:.0%}")


def verdicts(result: dict[str, Any], load: float) -> list[tuple[str, bool, str]]:
    """Each target: (what, met, the figure)."""
    out = []
    if "callflow" not in result:
        return out
    ours = result["callflow"]["max"]["notifications_per_second"]
    for other, target in TARGETS.items():
        if other in result:
            ratio = ours / result[other]["max"]["notifications_per_second"]
            out.append((f"callflow ≥ {target:.2f} x {other} in notifications/s",
                        ratio >= target, f"{ratio:.2f} x"))
    p99 = result["callflow"]["paced"]["p99_ms"]
    out.append((f"callflow p99 < {P99_TARGET_MS:.0f} ms at {load:.0%} of its maximum",
                p99 < P99_TARGET_MS, f"{p99:.2f} ms"))
    if "callflow-sqlite" in result:
        ratio = result["callflow-sqlite"]["max"]["notifications_per_second"] / ours
        out.append((f"callflow-sqlite ≥ {DURABLE_TARGET:.2f} x callflow (memory) in "
                    "notifications/s", ratio >= DURABLE_TARGET, f"{ratio:.2f} x"))
    return out


def markdown(data: dict[str, Any]) -> str:
    result = data["result"]
    load = data["settings"]["load"]
    lines = [
        "# floor, peer and callflow",
        "",
        f"`{data['command']}`, {data['date']}; Python {data['python']}, {data['cpus']} CPUs, "
        f"{data['machine']}. Each app: hypercorn, one worker, asyncio. Generator: "
        f"{data['settings']['connections']} keep-alive connections replaying complete IVR "
        f"calls ({data['notifications_per_call']} notifications each) for "
        f"{data['settings']['seconds']} s per round, median of {data['settings']['rounds']} "
        "rounds; then calls paced at "
        f"{load:.0%} of each app's maximum.",
        "",
        "| app | notifications/s | calls/s | p50 / p99 at max (ms) | app CPU | "
        f"offered at {load:.0%} (notif/s) | p50 / p99 at {load:.0%} (ms) | callflow ÷ app |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours = result.get("callflow", {}).get("max", {}).get("notifications_per_second")
    for name, r in result.items():
        m, p = r["max"], r["paced"]
        ratio = f"{ours / m['notifications_per_second']:.2f}" if ours else "-"
        lines.append(
            f"| {name} | {m['notifications_per_second']:,.0f} | {m['calls_per_second']:,.1f} | "
            f"{m['p50_ms']:.2f} / {m['p99_ms']:.2f} | {m['app_cpu']:.0%} | "
            f"{p['offered_rate']:,.0f} | {p['p50_ms']:.2f} / {p['p99_ms']:.2f} | {ratio} |")
    lines += ["", "Targets:", ""]
    for what, met, figure in data["verdicts"]:
        lines.append(f"- {'✔' if met else '✘'} {what}: {figure}")
    lines.append("")
    if data.get("chart"):
        lines += [f"![floor, peer and callflow]({data['chart']})", ""]
    return "\n".join(lines)


def chart(result: dict[str, Any], load: float, path: Path) -> bool:
    """A PNG of throughput and paced latency; False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(result)
    colours = {"floor": "#9e9e9e", "peer": "#5c8fd6", "callflow": "#e07b39",
               "callflow-sqlite": "#c0562a", "callflow-sqlite-replay": "#8f3b1b",
               "callflow-postgresql": "#336699"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rates = [result[n]["max"]["notifications_per_second"] for n in names]
    bars = left.bar(names, rates, color=[colours.get(n, "#777") for n in names])
    left.bar_label(bars, labels=[f"{r:,.0f}" for r in rates])
    left.set_title("maximum notifications per second (one worker)")
    left.set_ylim(0, max(rates) * 1.15)
    xs = range(len(names))
    p50 = [result[n]["paced"]["p50_ms"] for n in names]
    p99 = [result[n]["paced"]["p99_ms"] for n in names]
    right.bar([x - 0.2 for x in xs], p50, 0.4, label="p50", color="#bbbbbb")
    right.bar([x + 0.2 for x in xs], p99, 0.4, label="p99",
              color=[colours.get(n, "#777") for n in names])
    right.set_xticks(list(xs), names)
    right.set_ylabel("ms")
    right.set_title(f"notification latency at {load:.0%} of each app's maximum")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", nargs="+", choices=APPS, default=list(DEFAULT_APPS),
                        help="the apps to compare (default: %(default)s); the callflow-* "
                             "rows are callflow serve with a durable store: SQLite, SQLite "
                             "replaying on every notification (--cache-size 0), PostgreSQL "
                             "(CALLFLOW_BENCH_POSTGRESQL)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="measured seconds per round and for the paced run (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unmeasured seconds before each (default 1)")
    parser.add_argument("--rounds", type=int, default=3, help="saturation rounds (default 3)")
    parser.add_argument("--connections", type=int, default=16,
                        help="concurrent keep-alive callers when saturating (default 16)")
    parser.add_argument("--load", type=float, default=0.5,
                        help="the paced run's share of each app's maximum (default 0.5)")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    args = parser.parse_args(argv)
    print(f"{', '.join(args.apps)}: {args.rounds} rounds of {args.seconds:g} s, "
          f"{args.connections} connections; then {args.load:.0%} load", flush=True)
    result, per_call = run(args)
    data: dict[str, Any] = {
        "benchmark": "compare",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "notifications_per_call": per_call,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "no_chart")},
        "result": result,
        "verdicts": [],
    }
    data["verdicts"] = verdicts(result, args.load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    if not args.no_chart and chart(result, args.load, png):
        data["chart"] = png.name
    elif not args.no_chart:
        print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    text = markdown(data)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    print()
    print(text)
    print(f"wrote {args.out.with_suffix('.md')}, .json" + (", .png" if data.get("chart") else ""))
    return 0 if all(met for _, met, _ in data["verdicts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
