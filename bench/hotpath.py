"""The app's own cost per notification: complete IVR calls replayed in-process, no server.

``bench/compare.py`` measures each app behind hypercorn, where the server's HTTP handling
is most of the CPU. This takes the server away: it records the notifications of one
benchmark call (the simulator plays the caller: CalledNumber, the menu, "1", the dial to
an agent who answers and hangs up, the goodbye, the hang-up: 17 notifications), then
replays them for many calls at once straight into each app's ASGI callable, the calls
interleaved (each notification of call k goes in while the other calls wait between
theirs), and times it. What is left is exactly the work an app adds on top of the server:
reading the ASGI messages, parsing, the call's state, the response. It is the figure to
watch when changing the request path (each fix on docs/discussion/performance.md was
measured with it), and the one to profile:

    python bench/hotpath.py                          # floor, peer and callflow; 3 rounds
    python bench/hotpath.py --apps callflow --calls 2000 --rounds 5
    python bench/hotpath.py --apps callflow --profile  # pyinstrument, callflow's path
    python bench/hotpath.py --log-level info          # callflow with its per-notification logs

Every response is checked against the one recorded for the same notification (call ids
put back), so a replay that went off the rails fails loudly instead of measuring an error
path.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import record_call  # noqa: E402

import callflow  # noqa: E402
from callflow._loader import load_app  # noqa: E402
from callflow._server import Listener, serving  # noqa: E402

SECRET = "bench"
BASE_URL = "http://127.0.0.1:8000"

Request = tuple[str, bytes, bytes, bytes]  # path, query, body, response body


def bench_app(name: str) -> Any:
    """The ASGI app of bench/apps/{name}.py, built for BASE_URL."""
    spec = importlib.util.spec_from_file_location(f"bench_apps_{name}",
                                                  ROOT / "bench" / "apps" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app(BASE_URL, SECRET)


def callflow_app() -> callflow.App:
    app = load_app(ROOT / "examples" / "ivr.py")
    app.configure(callflow.Settings(public_url=BASE_URL, secret=SECRET,
                                    platform_url="http://127.0.0.1:9"))
    return app


async def record() -> tuple[str, list[Request]]:
    """The benchmark call into callflow through the simulator: its call id and exchanges."""
    app = callflow_app()
    listener = Listener.bind("127.0.0.1", 0)
    app.settings.public_url = listener.url
    async with serving(app, listener) as url:
        call_id, exchanges = await record_call(f"{url}/callflow/{SECRET}/events")
    # Replays go to BASE_URL: make the recorded answers say so.
    requests = []
    for exchange in exchanges:
        path, _, query = exchange.target.partition(b"?")
        requests.append((path.decode(), query, exchange.body,
                         exchange.answer.replace(listener.url.encode(), BASE_URL.encode())))
    return call_id.decode(), requests


def _scope(path: str, query: bytes, body: bytes) -> dict[str, Any]:
    """What hypercorn hands an app for a notification POST."""
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*"),
                    (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive"),
                    (b"user-agent", b"python-httpx/0.28.1"),
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        "extensions": {},
    }


_round = 0


async def replay(app: Any, call_id: str, requests: list[Request], calls: int,
                 check: bool) -> tuple[float, int]:
    """Run `calls` interleaved calls; (seconds, notifications). Checks callflow's answers."""
    template = call_id.encode()
    global _round
    _round += 1  # fresh call ids: callflow remembers ended calls
    ids = [f"bench-{_round:03d}-{i:08d}".encode() for i in range(calls)]
    prepared = [
        [(_scope(path, query.replace(template, cid), body), body.replace(template, cid),
          answer.replace(template, cid)) for path, query, body, answer in requests]
        for cid in ids
    ]
    out: list[bytes] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            out.append(message["body"])

    count = 0
    gc.collect()
    start = time.process_time()  # CPU time: other processes on the machine do not count
    for index in range(len(requests)):
        for call in prepared:
            scope, body, answer = call[index]
            sent = False

            async def receive(body: bytes = body) -> Any:
                nonlocal sent
                if sent:
                    await anyio.sleep_forever()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, receive, send)
            count += 1
            if check and out[-1] != answer:
                raise SystemExit(f"notification {index} got {out[-1][:300]!r}, "
                                 f"expected {answer[:300]!r}")
            out.clear()
    return time.process_time() - start, count


async def measure(name: str, call_id: str, requests: list[Request], calls: int,
                  rounds: int, profile: bool) -> list[float]:
    """Microseconds per notification for each round (after a warm-up round)."""
    per_round: list[float] = []
    if name == "callflow":
        app: Any = callflow_app()
        async with app:
            await replay(app, call_id, requests, min(calls, 200), check=True)
            if profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.0002, async_mode="disabled")
                profiler.start()
            for _ in range(rounds):
                seconds, count = await replay(app, call_id, requests, calls, check=True)
                per_round.append(seconds / count * 1e6)
            if profile:
                profiler.stop()
                print(profiler.output_text(unicode=True, color=False, show_all=False))
            if app.sessions:
                raise SystemExit(f"{len(app.sessions)} calls left behind")
    else:
        app = bench_app(name)
        await replay(app, call_id, requests, min(calls, 200), check=name == "peer")
        for _ in range(rounds):
            seconds, count = await replay(app, call_id, requests, calls, check=name == "peer")
            per_round.append(seconds / count * 1e6)
    return per_round


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", nargs="+", default=["floor", "peer", "callflow"],
                        choices=("floor", "peer", "callflow"))
    parser.add_argument("--calls", type=int, default=1000, help="interleaved calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="pyinstrument on callflow")
    parser.add_argument("--log-level", default="warning",
                        help="callflow's log level (callflow serve's --log-level)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args()
    from callflow.cli._main import setup_logging

    setup_logging(args.log_level)
    call_id, requests = anyio.run(record)
    logging.getLogger("callflow").setLevel(args.log_level.upper())
    print(f"{len(requests)} notifications per call, {args.calls} calls per round, "
          f"{args.rounds} rounds, {args.backend}")
    results = {}
    for name in args.apps:
        rounds = anyio.run(measure, name, call_id, requests, args.calls, args.rounds,
                           args.profile and name == "callflow", backend=args.backend)
        # The best round is the figure (timeit's rule: noise only ever adds time); the
        # median says how noisy the machine was.
        results[name] = min(rounds)
        print(f"{name:<9} {results[name]:6.1f} µs/notification (best of {len(rounds)}; "
              f"median {statistics.median(rounds):.1f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
