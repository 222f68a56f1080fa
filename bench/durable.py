"""Durable calls: rebuilding a call from its history, and 100,000 live calls in SQLite mode.

1. **Rebuild**: a call 50 verbs deep (a flow asking 50 questions) is rebuilt from its
   history as a worker does after a restart or an eviction: the history is read back,
   the flow replayed to where it waits. Reported: CPU per rebuild (p50, p99), apart from
   the store's round trip (read separately).
2. **Many calls**: N calls (default 100,000) start into a flow and wait on its first
   gather, with a durable SQLite store and a cache of C calls (default 10,000): RSS, the
   longest garbage-collector pause seen during the run (``gc.callbacks``), a full
   ``gc.collect()`` at the end, and the time to resume a cached call and an evicted one.

Notifications go to ``App.handle_webhook`` in-process (no HTTP), so the figures are the
calls' own cost. The app's platform URL is a port nothing listens on: nothing leaves.

Run:  python bench/durable.py [--calls 100000] [--cache 10000] [--backend asyncio|trio]
Writes bench/results/durable.md (and .json).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import callflow  # noqa: E402
from callflow import App, Call  # noqa: E402
from callflow.platforms import Webhook  # noqa: E402

NUMBER = "+34900000001"
DEPTH = 50
NOWHERE = "http://127.0.0.1:9"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _body(call_id: str, event: str, **extra: Any) -> bytes:
    return json.dumps({"timestamp": "2026-12-03T10:00:00Z", "eventName": event,
                       "callId": call_id, "legId": f"leg-{call_id}",
                       "callerId": "tel:+34600000001", "destination": f"tel:{NUMBER}",
                       **extra}).encode()


async def _post(app: App, body: bytes, query: dict[str, str] | None = None) -> Any:
    reply = await app.handle_webhook(Webhook("POST", "http://bench/", "/", query or {}, {},
                                             body))
    if reply.status != 200:
        raise SystemExit(f"the app answered {reply.status}: {reply.body[:200]!r}")
    return reply.json_body()


def _app(store: str, cache: int) -> App:
    app = callflow.App(store=store, cache_size=cache, platform_url=NOWHERE,
                       response_budget=None, secret="bench")

    @app.flow(number=NUMBER)
    async def survey(call: Call) -> None:
        for question in range(DEPTH + 1):
            await call.gather(prompt=f"Question {question}.", num_digits=1)

    return app


def _pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": ordered[len(ordered) // 2],
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": ordered[-1]}


async def rebuild(samples: int) -> dict[str, Any]:
    """CPU to rebuild a 50-verb call, and the store's read of its history."""
    store = f"sqlite:///{tempfile.mkdtemp(prefix='callflow-bench-')}/calls.db"
    app = _app(store, cache=0)
    async with app:
        assert app.durable is not None and app.store is not None
        await _post(app, _body("deep", "CalledNumber"))
        for step in range(1, DEPTH + 1):  # with cache 0, each one is already a replay
            await _post(app, _body("deep", "DigitsCollected", digits="1"),
                        {"step": str(step)})
        durable, cpu, reads = app.durable, [], []
        for _ in range(samples):
            t0 = time.perf_counter()
            begin = await app.store.begin("deep", durable.owner, 5.0, None)
            reads.append(time.perf_counter() - t0)
            c0 = time.process_time()
            session, _ = await durable._rebuild("deep", begin.entries, begin.fence, None)
            cpu.append(time.process_time() - c0)
            assert session.pending is not None and session.step == DEPTH + 1
            await durable._commit(session)  # releases the lease
            durable.evict(session)
        entries = len(begin.entries)
    return {"verbs": DEPTH, "entries": entries,
            "cpu_ms": {k: v * 1000 for k, v in _pcts(cpu).items()},
            "store_read_ms": {k: v * 1000 for k, v in _pcts(reads).items()}}


class Pauses:
    """The garbage collector's pauses, timed with ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._t0))


async def many(n: int, cache: int) -> dict[str, Any]:
    store = f"sqlite:///{tempfile.mkdtemp(prefix='callflow-bench-')}/calls.db"
    app = _app(store, cache)
    pauses = Pauses()
    async with app:
        await _post(app, _body("warm", "CalledNumber"))
        gc.collect()
        gc.freeze()  # as callflow serve does once the app has started
        rss0 = _rss()
        gc.callbacks.append(pauses)
        started = time.perf_counter()
        try:
            for i in range(n):
                await _post(app, _body(f"c{i}", "CalledNumber"))
        finally:
            gc.callbacks.remove(pauses)
        elapsed = time.perf_counter() - started
        rss1 = _rss()
        t0 = time.perf_counter()
        gc.collect()
        full = time.perf_counter() - t0
        cached = [i for i in range(n - 200, n)]  # the newest are in the cache
        evicted = list(range(0, min(200, n - cache))) if n > cache else []
        timings: dict[str, list[float]] = {"cached": [], "evicted": []}
        for kind, ids in (("cached", cached), ("evicted", evicted)):
            for i in ids:
                t0 = time.perf_counter()
                await _post(app, _body(f"c{i}", "DigitsCollected", digits="1"), {"step": "1"})
                timings[kind].append(time.perf_counter() - t0)
        live = len(app.sessions)
    return {
        "calls": n, "cache": cache, "in_memory_after": live,
        "start_rate_per_s": round(n / elapsed),
        "rss_mb": round((rss1 - rss0) / 2**20, 1),
        "gc_pause_max_ms": round(max((p for _, p in pauses.pauses), default=0) * 1000, 2),
        "gc_pause_gen2_max_ms": round(max((p for g, p in pauses.pauses if g == 2), default=0)
                                      * 1000, 2),
        "gc_collections": len(pauses.pauses),
        "full_collect_ms": round(full * 1000, 2),
        "resume_cached_ms": {k: round(v * 1000, 3) for k, v in _pcts(timings["cached"]).items()},
        "resume_evicted_ms": ({k: round(v * 1000, 3)
                               for k, v in _pcts(timings["evicted"]).items()}
                              if timings["evicted"] else None),
    }


def markdown(data: dict[str, Any]) -> str:
    r, m = data["rebuild"], data["many"]
    return "\n".join([
        "# Durable calls (SQLite)",
        "",
        f"`{data['command']}`, {data['date']}; Python {data['python']}, {data['backend']}.",
        "",
        f"## Rebuilding a call {r['verbs']} verbs deep ({r['entries']} history entries)",
        "",
        "| | p50 | p99 | max |",
        "|---|---:|---:|---:|",
        f"| CPU to replay to the frontier (ms) | {r['cpu_ms']['p50']:.2f} | "
        f"{r['cpu_ms']['p99']:.2f} | {r['cpu_ms']['max']:.2f} |",
        f"| the store's read of the history (ms, wall) | {r['store_read_ms']['p50']:.2f} | "
        f"{r['store_read_ms']['p99']:.2f} | {r['store_read_ms']['max']:.2f} |",
        "",
        "Target: ≤ 2 ms of CPU plus the store's round trips: "
        f"{'✔' if r['cpu_ms']['p50'] <= 2 else '✘'} {r['cpu_ms']['p50']:.2f} ms (p50).",
        "",
        f"## {m['calls']:,} live calls, a cache of {m['cache']:,}",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| calls started per second (in-process, one core) | {m['start_rate_per_s']:,} |",
        f"| sessions in memory after | {m['in_memory_after']:,} |",
        f"| RSS growth (MB) | {m['rss_mb']} |",
        f"| longest GC pause during the run (ms) | {m['gc_pause_max_ms']} |",
        f"| longest generation-2 pause (ms) | {m['gc_pause_gen2_max_ms']} |",
        f"| a full gc.collect() at the end (ms) | {m['full_collect_ms']} |",
        f"| resume a cached call, p50 / p99 (ms) | {m['resume_cached_ms']['p50']} / "
        f"{m['resume_cached_ms']['p99']} |",
        (f"| resume an evicted call (replay), p50 / p99 (ms) | "
         f"{m['resume_evicted_ms']['p50']} / {m['resume_evicted_ms']['p99']} |"
         if m["resume_evicted_ms"] else "| resume an evicted call | (none evicted) |"),
        "",
        f"Targets: RSS under 200 MB: {'✔' if m['rss_mb'] < 200 else '✘'} {m['rss_mb']} MB; "
        f"no full-GC pause over 50 ms: "
        f"{'✔' if max(m['gc_pause_gen2_max_ms'], m['full_collect_ms']) <= 50 else '✘'} "
        f"{max(m['gc_pause_gen2_max_ms'], m['full_collect_ms'])} ms.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--cache", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "durable.json")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("callflow").setLevel(logging.WARNING)
    rebuilt = anyio.run(rebuild, args.samples, backend=args.backend)
    print(f"rebuild: {rebuilt}", flush=True)
    lots = anyio.run(many, args.calls, args.cache, backend=args.backend)
    print(f"many: {lots}", flush=True)
    data = {"benchmark": "durable", "backend": args.backend,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "python": platform.python_version(), "rebuild": rebuilt, "many": lots}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
