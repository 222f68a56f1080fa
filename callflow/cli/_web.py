"""``callflow dev FILE --web``: the browser phone (`callflow.simulator._web.WebPhone`) wired
to the app in FILE, served on the loopback until Ctrl+C.

The app and the simulator are set up by ``_dev.run_dev`` as for the terminal telephone; this
module adds what only an app knows: which numbers answer (a call to another number is
refused with the app's numbers), and the app's outbound calls (the page's "Call out").
"""

from __future__ import annotations

from typing import TextIO

import anyio

from .._app import App
from .._server import SHUTDOWN_SIGNALS, Listener, serving
from ..simulator import ConfigError, Simulator, WebPhone

__all__ = ("serve_web_phone",)


async def serve_web_phone(
    app: App, sim: Simulator, number: str, *, default_to: str, file: str, out: TextIO,
    host: str = "127.0.0.1", port: int = 0,
) -> None:
    """Serve the browser phone at http://HOST:PORT/ and print its URL; returns on a signal."""

    def dial(to: str) -> None:
        if app.flow_for_number(to) is None:
            numbers = ", ".join(app.numbers) or "none"
            raise ConfigError(f"no flow answers {to}; the app's numbers: {numbers}")
        if to not in sim.account_numbers:
            sim.add_account_number(to, callback_url=app.callback_url,
                                   fallback_url=app.fallback_url)

    async def call_out(to: str) -> str:
        result = await app.call(to)
        reason = f" ({result.reason})" if result.reason else ""
        return f"the app's call to {to}: {result.status.replace('_', ' ')}{reason}"

    phone = WebPhone(sim, number, default_to=default_to, title=file, dial=dial,
                     call_out=call_out)
    with anyio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        # The phone stops first: it ends the pages' event streams, so the server stops at once.
        async with serving(phone, Listener.bind(host, port), graceful_timeout=1.0) as url, \
                phone.running():
            for spec in app.flows.values():
                answers = ", ".join(spec.numbers) if spec.numbers else "default flow"
                print(f"  flow {spec.name}: {answers}", file=out)
            print(f"your phone is {number} ({sim.platform}, {_pace(sim)})", file=out)
            print(f"browser phone: {url}/  (open it in a browser; Ctrl+C quits)",
                  file=out, flush=True)
            async for _ in signals:
                break
    print("bye", file=out, flush=True)


def _pace(sim: Simulator) -> str:
    clock = sim.clock
    if clock.mode == "scaled":
        return f"{clock.speed:g}x real time"
    return f"{clock.mode} time"
