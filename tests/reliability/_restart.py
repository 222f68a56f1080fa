"""An app that "restarts" in the middle of a call, over real HTTP, on every platform.

The platform (the simulator, speaking BlueVia, Twilio or Telnyx) posts to one public
address, a ``Switch`` served by hypercorn on a port the OS picks; the switch hands each
request to whichever App is current.  A flow that flips the switch is a process killed
(``kill -9``) mid-call and started again with the memory store: from then on every
notification about the call reaches an App that never heard of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import callflow
from callflow import App
from callflow._session import Flow
from callflow.simulator import Simulator, serve_asgi, serve_simulator

NUMBER = "+34900000001"
CALLER = "+34600000001"
APOLOGY = "Sorry, something went wrong on our side. Please call again later. Goodbye."
PLATFORMS = ("bluevia", "twilio", "telnyx")


class Switch:
    """An ASGI app that passes every request to ``current``: the app at the public address."""

    def __init__(self) -> None:
        self.current: App | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # the apps run their own lifespans
            while True:
                message = await receive()
                kind = message["type"].rsplit(".", 1)[-1]
                await send({"type": f"{message['type']}.complete"})
                if kind == "shutdown":
                    return
        assert self.current is not None
        await self.current(scope, receive, send)


@dataclass
class Restart:
    sim: Simulator
    switch: Switch
    before: App
    after: App

    def restart(self) -> None:
        """From now on the platform reaches the app as started again: it knows no call."""
        self.switch.current = self.after


@asynccontextmanager
async def restarting(platform: str, make_flow: Callable[[Restart], Flow], **settings: Any
                     ) -> AsyncIterator[Restart]:
    """A simulator, and an app on ``platform`` whose flow is ``make_flow(restart)``."""
    sim = Simulator(platform=platform)
    switch = Switch()
    async with AsyncExitStack() as stack:
        sim_url = await stack.enter_async_context(serve_simulator(sim))
        public_url = await stack.enter_async_context(serve_asgi(switch))
        apps = []
        for _ in range(2):
            app = App(settings=callflow.Settings(
                platform_url=sim_url, public_url=public_url, secret="restart",
                response_budget=1.0, **sim.app_settings(), **settings))
            apps.append(app)
        restart = Restart(sim, switch, *apps)
        for app in apps:
            app.add_flow(make_flow(restart), numbers=(NUMBER,), name="menu")
        switch.current = restart.before
        for app in reversed(apps):  # the first one out is the one that "dies"
            await stack.enter_async_context(app)
        sim.add_account_number(NUMBER)
        await restart.before.configure_numbers()
        yield restart
