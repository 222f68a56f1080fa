"""Load: N scripted inbound calls at R calls/s against a served app; latency and throughput.

The app runs in its own process, exactly as deployed: ``callflow serve FILE`` (hypercorn,
one worker), started here with ``--port 0`` and pointed at this process's simulator. This
process is the load generator: a ``callflow.simulator.LoadGenerator`` (the simulator on a
virtual clock, so prompts and timeouts take no real time) served over loopback HTTP. Two
processes because the numbers are then the app's own: in one process the generator's work
(it is the heavier side: it plays every caller and runs every command) would share the
app's event loop and core. ``--in-process`` does that anyway, for a quick look.

Latency is each notification POST as the simulator sees it: sent → response body read.

Run:
    python bench/load.py                                  # 500 IVR calls at 100 calls/s
    python bench/load.py --calls 2000 --rate 300 --app-backend trio
    python bench/load.py flows.py --to +34900000001 --script wait:menu --script press:1 \\
        --expect goodbye
Writes bench/results/load.json and load.md (override with --out) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_of, own_cpu  # noqa: E402

import callflow  # noqa: E402
from callflow._loader import load_app  # noqa: E402
from callflow.simulator import LoadGenerator, LoadResult, serve_asgi  # noqa: E402

IVR = ROOT / "examples" / "ivr.py"
IVR_SCRIPT = ["wait:opening hours", "press:3"]
IVR_EXPECT = "Goodbye"
READY_TIMEOUT = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", nargs="?", type=Path, default=IVR,
                        help="the flows file (default: examples/ivr.py)")
    parser.add_argument("--calls", type=int, default=500, help="calls to place (default 500)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="calls started per second (default 100; 0: all at once)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="at most this many calls up at once")
    parser.add_argument("--to", help="the number to call (default: the app's first number)")
    parser.add_argument("--script", action="append", metavar="STEP",
                        help="a caller script step, repeatable (default for the IVR: "
                             f"{' '.join(IVR_SCRIPT)})")
    parser.add_argument("--expect", help="text every caller must hear (default for the IVR: "
                                         f"{IVR_EXPECT!r})")
    parser.add_argument("--in-process", action="store_true",
                        help="serve the app in this process (quick; shares the CPU)")
    parser.add_argument("--app-backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio",
                        help="the load generator's event loop")
    parser.add_argument("--shards", type=int, default=8,
                        help="simulators (each with its own virtual clock) the calls are "
                             "spread over (default 8)")
    parser.add_argument("--call-timeout", type=float, default=60.0,
                        help="real seconds a call may take before it counts as failed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args(argv)
    is_ivr = args.file.resolve() == IVR
    if args.script is None:
        args.script = IVR_SCRIPT if is_ivr else []
    if args.expect is None and is_ivr:
        args.expect = IVR_EXPECT
    return args


async def run_load(load: LoadGenerator, args: argparse.Namespace) -> LoadResult:
    to = args.to or next(iter(load.sim.account_numbers), None)
    if to is None:
        raise SystemExit("the app configured no numbers: pass --to NUMBER")
    return await load.run(
        to, calls=args.calls, rate=args.rate or None, script=args.script, expect=args.expect,
        max_concurrent=args.max_concurrent, call_timeout=args.call_timeout,
    )


async def in_process(args: argparse.Namespace) -> tuple[LoadResult, dict[str, float]]:
    app = load_app(args.file)
    async with LoadGenerator(shards=args.shards) as load, load.serve() as platform_url:
        app.configure(callflow.Settings(platform_url=platform_url))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            await app.configure_numbers()
            before = own_cpu()
            result = await run_load(load, args)
            return result, {"process_cpu_seconds": own_cpu() - before}


async def in_subprocess(args: argparse.Namespace) -> tuple[LoadResult, dict[str, float]]:
    async with LoadGenerator(shards=args.shards) as load, load.serve() as platform_url:
        command = [
            sys.executable, "-m", "callflow", "serve", str(args.file), "--port", "0",
            "--platform-url", platform_url, "--api-key", load.sim.api_key,
            "--api-secret", load.sim.api_secret, "--backend", args.app_backend,
            "--log-level", "warning",
        ]
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        # stderr stays ours, so the app's warnings show and never fill a pipe.
        process = await anyio.open_process(command, stdout=subprocess.PIPE, stderr=None,
                                           env=env)
        async with process, anyio.create_task_group() as tg:
            try:
                await wait_ready(process, tg)
                before, app_before = own_cpu(), cpu_of(process.pid)
                result = await run_load(load, args)
                cpu = {"generator_cpu_seconds": own_cpu() - before,
                       "app_cpu_seconds": cpu_of(process.pid) - app_before}
                return result, cpu
            finally:
                if process.returncode is None:
                    process.terminate()  # SIGTERM: callflow serve stops cleanly
                with anyio.move_on_after(10) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    process.kill()
                tg.cancel_scope.cancel()
    raise AssertionError("unreachable")


async def wait_ready(process: Process, tg: Any) -> None:
    """Read the app's banner until "ready:" (its numbers then point at our simulator)."""
    assert process.stdout is not None
    lines = _lines(TextReceiveStream(process.stdout))
    banner: list[str] = []
    with anyio.fail_after(READY_TIMEOUT):
        async for line in lines:
            banner.append(line)
            if line.startswith("ready:"):
                break
        else:
            code = await process.wait()
            raise SystemExit("the app stopped before it was ready (exit status "
                             f"{code}):\n" + "\n".join(banner))

    async def drain() -> None:
        async for _ in lines:
            pass

    tg.start_soon(drain)


async def _lines(stream: TextReceiveStream) -> Any:
    buffer = ""
    async for chunk in stream:
        buffer += chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line
    if buffer:
        yield buffer


def report(args: argparse.Namespace, result: LoadResult, cpu: dict[str, float]
           ) -> dict[str, Any]:
    return {
        "benchmark": "load",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "file": os.path.relpath(args.file, ROOT),
        "mode": "in-process" if args.in_process else "app in a subprocess (callflow serve)",
        "app_backend": "same as generator" if args.in_process else args.app_backend,
        "generator_backend": args.backend,
        "shards": args.shards,
        "script": args.script,
        "expect": args.expect,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "result": result.to_dict(),
    }


def render_cpu(cpu: dict[str, float], seconds: float) -> str:
    lines = []
    for key, value in cpu.items():
        name = key.removesuffix("_cpu_seconds").replace("_", " ")
        lines.append(f"{name + ' CPU':<22} {value:.2f} s ({value / seconds:.0%} of a core)")
    if cpu.get("generator_cpu_seconds", 0.0) > 0.9 * seconds:
        lines.append("note: the load generator was saturated, not the app; the app's "
                     "numbers are a lower bound (lower --rate, or more cores)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runner = in_process if args.in_process else in_subprocess
    result, cpu = anyio.run(runner, args, backend=args.backend)
    data = report(args, result, cpu)
    print(f"{data['file']}: {data['mode']}, generator on {args.backend}, "
          f"{args.shards} shards, {data['cpus']} CPUs")
    print(result.render())
    print(render_cpu(cpu, result.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    markdown = args.out.with_suffix(".md")
    markdown.write_text(
        f"# Load: {data['file']}\n\n"
        f"`{data['command']}`, {data['date']}: {data['mode']}; generator on "
        f"{args.backend} with {args.shards} shards; Python {data['python']}, "
        f"{data['cpus']} CPUs.\n\nScript: {' '.join(args.script) or '(none)'}; expected: "
        f"{args.expect!r}.\n\n```\n{result.render()}\n{render_cpu(cpu, result.seconds)}\n```\n",
        encoding="utf-8",
    )
    print(f"wrote {os.path.relpath(args.out, Path.cwd())} and {markdown.name}")
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
