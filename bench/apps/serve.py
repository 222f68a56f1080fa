"""Serve a bench app (floor or peer) exactly as ``callflow serve`` serves a flows file.

    python bench/apps/serve.py floor --port 0 --secret s3cret

Same server code (``callflow._server.serve_until_signal``: hypercorn, one worker, the same
``Config``), same event loop, same logging set-up at the same level, same banner line
``ready:`` once it accepts requests; only the ASGI app differs. The app module's
``create_app(base_url, secret)`` builds the app once the port is known. Stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from callflow._server import Listener, serve_until_signal  # noqa: E402
from callflow.cli._main import run_async, setup_logging  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("app", choices=("floor", "peer"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", default="bench")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    setup_logging(args.log_level)
    listener = Listener.bind(args.host, args.port)
    app = importlib.import_module(args.app).create_app(listener.url, args.secret)

    async def ready(url: str) -> None:
        print(f"serving {args.app} on {url}", flush=True)
        print(f"callback URL: {url}/callflow/{args.secret}/events", flush=True)
        print("ready: press Ctrl+C to stop", flush=True)
        import anyio

        await anyio.sleep_forever()

    async def run() -> None:
        await serve_until_signal(app, listener, ready)

    run_async(run, args.backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
