"""Memory per suspended call, and resume time with many calls suspended.

Starts N calls into a flows file (default examples/ivr.py) by handing the
App CalledNumber notifications in-process (no HTTP: the figure is the call's
own cost), leaves every call suspended on its first gather, and measures:

- Python heap per call (tracemalloc, exact), and resident memory per call
  (RSS from /proc, what the machine pays);
- the time to resume one call (DigitsCollected in, response out) with N calls
  suspended, against the same with 10 calls.

Run:  python bench/memory.py --calls 10000 100000 [--backend asyncio|trio]
Writes bench/results/memory.md (and .json).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callflow import App  # noqa: E402
from callflow._loader import load_app  # noqa: E402
from callflow.platforms import Webhook  # noqa: E402

NUMBER = "+34900000001"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _notification(call_id: str, event: str, **extra: Any) -> bytes:
    body = {
        "timestamp": "2013-03-01T10:00:00Z",
        "eventName": event,
        "callId": call_id,
        "legId": f"leg-{call_id}",
        "callerId": "tel:+34600000001",
        "destination": f"tel:{NUMBER}",
        **extra,
    }
    return json.dumps(body).encode()


async def _post(app: App, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    """One notification through the app's webhook handling (no HTTP): status, JSON reply."""
    reply = await app.handle_webhook(Webhook("POST", "http://bench/", "/", query, {}, body))
    return reply.status, reply.json_body()


async def _start_calls(app: App, prefix: str, n: int) -> None:
    for i in range(n):
        status, payload = await _post(app, _notification(f"{prefix}{i}", "CalledNumber"), {})
        if status != 200 or not payload["commands"]:
            raise SystemExit(f"call {i} was not answered: {status} {payload}")


async def _resume_times(app: App, prefix: str, n: int, samples: int) -> list[float]:
    """Resume `samples` different suspended calls; seconds each, notification in to response out."""
    times = []
    for i in range(samples):
        call_id = f"{prefix}{i * max(1, n // samples) % n}"
        session = app.sessions[call_id]
        step = session.step
        body = _notification(call_id, "DigitsCollected", digits="9")
        t0 = time.perf_counter()
        status, _ = await _post(app, body, {"step": str(step)})
        times.append(time.perf_counter() - t0)
        assert status == 200
    return times


async def measure(flows_file: Path, n: int, samples: int, trace: bool) -> dict[str, Any]:
    """One run; with ``trace`` the heap is counted by tracemalloc (which inflates RSS)."""
    app = load_app(str(flows_file))
    app.configure(app.settings.__class__(response_budget=None))
    async with app:
        await _start_calls(app, "warm", 10)  # import-time and first-call allocations
        gc.collect()
        rss0 = _rss()
        if trace:
            tracemalloc.start()
        heap0 = tracemalloc.get_traced_memory()[0]
        await _start_calls(app, "c", n)
        gc.collect()
        heap1 = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rss1 = _rss()
        suspended = sum(1 for s in app.sessions.values() if s.pending is not None)
        few = await _resume_times(app, "warm", 10, 10)
        many = await _resume_times(app, "c", n, min(200, n))
        app._tg.cancel_scope.cancel()  # type: ignore[union-attr]
    return {
        "calls": n,
        "suspended": suspended,
        "heap_bytes_per_call": (heap1 - heap0) / n,
        "rss_bytes_per_call": (rss1 - rss0) / n,
        "resume_us_p50_10_calls": statistics.median(few) * 1e6,
        "resume_us_p50_n_calls": statistics.median(many) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--flows", type=Path, default=ROOT / "examples" / "ivr.py")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory")
    args = parser.parse_args()
    logging.getLogger("callflow").setLevel(logging.WARNING)
    rows = []
    for n in args.calls:
        row = anyio.run(measure, args.flows, n, args.samples, False, backend=args.backend)
        traced = anyio.run(measure, args.flows, n, args.samples, True, backend=args.backend)
        row["heap_bytes_per_call"] = traced["heap_bytes_per_call"]
        row["backend"] = args.backend
        rows.append(row)
        print(f"{n:>7} calls ({row['suspended']} suspended): "
              f"{row['heap_bytes_per_call'] / 1024:.2f} KiB heap/call, "
              f"{row['rss_bytes_per_call'] / 1024:.2f} KiB RSS/call, resume p50 "
              f"{row['resume_us_p50_n_calls']:.0f} µs (vs {row['resume_us_p50_10_calls']:.0f} µs "
              "with 10 calls)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    lines = [
        f"# Memory per suspended call ({args.backend}, {args.flows.name})",
        "",
        "Heap: Python allocations per call (tracemalloc, in a run of its own); RSS: the "
        "process's resident memory per call, without tracemalloc. Resume: one "
        "DigitsCollected in, its response out, in-process (no HTTP).",
        "",
        "| calls suspended | heap per call | RSS per call | resume p50, N calls | "
        "resume p50, 10 calls |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['calls']:,} | {r['heap_bytes_per_call'] / 1024:.2f} KiB | "
            f"{r['rss_bytes_per_call'] / 1024:.2f} KiB | {r['resume_us_p50_n_calls']:.0f} µs | "
            f"{r['resume_us_p50_10_calls']:.0f} µs |"
        )
    lines += ["", f"Command: `python bench/memory.py --calls "
              f"{' '.join(map(str, args.calls))} --backend {args.backend}`", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
