"""Shutting down in memory mode: every live call hears the shutdown message and is hung up.

Its calls die with the process, so the app ends each one politely: a ``respond``-mode
platform (BlueVia, Twilio) gets the message and a hang-up pushed by REST; an ``execute``
one (Telnyx) has its runner stopped and gets a ``speak`` and, once that has had time to be
heard, a ``hangup``, both by REST: at shutdown the server takes no more webhooks, so no
``call.speak.ended`` can come.

Every live call is attempted within ``Settings.shutdown_grace``, a bounded number at once
(httpx's pool scans its whole queue for every request: 10,000 hang-ups queued at once would
take minutes of CPU to hand out).  Each attempt gets an equal share of the time left, so a
platform that hangs cannot keep later calls from their turn; one that answers fast leaves
more for the rest.  The calls not confirmed ended are logged: their count as a warning,
their ids at debug.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, cast

import anyio

from ._commands import Command, Hangup, Say
from ._exceptions import PlatformError
from .platforms import ApiRequest, ExecutingPlatform

if TYPE_CHECKING:
    from ._app import App
    from ._session import Session

__all__ = ("SHUTDOWN_CONCURRENCY", "hang_up_all")

logger = logging.getLogger("callflow")

SHUTDOWN_CONCURRENCY = 64
"""Hang-up requests in flight at once when the app shuts down with calls in progress."""


class _Turns:
    """Hands out time for attempts: an equal share of what is left to those still waiting."""

    def __init__(self, waiting: int, grace: float, longest: float) -> None:
        self.waiting = waiting
        self.deadline = anyio.current_time() + grace
        self.longest = longest

    def share(self) -> float:
        rounds = math.ceil(self.waiting / SHUTDOWN_CONCURRENCY)
        self.waiting -= 1
        left = self.deadline - anyio.current_time()
        return max(0.0, min(self.longest, left / max(1, rounds)))


async def hang_up_all(app: App, sessions: Iterable[Session]) -> None:
    """End every live call among ``sessions``; log those not confirmed ended."""
    live = [session for session in sessions if not session.ended]
    if not live:
        return
    settings = app.settings
    platform = app.platform
    http = app.http
    total = len(live)
    logger.info("shutting down: hanging up %d live call%s", total, "" if total == 1 else "s")
    message = settings.shutdown_message or None
    unconfirmed = {session.call.id: None for session in live}
    limiter = anyio.CapacityLimiter(SHUTDOWN_CONCURRENCY)
    grace = settings.shutdown_grace
    turns = _Turns(total, grace, settings.push_timeout)

    async def attempt(send: Callable[[], Awaitable[None]]) -> bool:
        """One request in its turn: True when the platform confirmed it (or the call is gone)."""
        async with limiter:
            with anyio.move_on_after(turns.share()) as scope:
                try:
                    await send()
                except PlatformError as exc:
                    return exc.gone
            return not scope.cancelled_caught

    async def respond(session: Session) -> bool:
        call_id = session.call.id
        goodbye: list[Command] = [Say(message), Hangup()] if message else [Hangup()]
        return await attempt(lambda: platform.push(http, call_id, goodbye,
                                                   url_for=app.url_for(call_id)))

    async def execute(session: Session) -> bool:
        executing = cast("ExecutingPlatform", platform)
        runner = app.runner_of(session.call.id)
        leg = runner.leg if runner is not None else session.call.id
        if runner is not None:
            # No more commands of its own, and the prompt or gather in progress stopped:
            # the platform would play the farewell after it.
            async with limiter:
                with anyio.move_on_after(turns.share()):
                    await runner.interrupt()
        say, speaking, hangup = executing.farewell(leg, message)

        async def send(request: ApiRequest) -> None:
            response = await request.send(http)
            if response.status_code >= 300:
                raise executing.error(response)

        if say is not None and await attempt(lambda: send(say)):
            await anyio.sleep(speaking)  # let it be heard: no call.speak.ended will come
        return await attempt(lambda: send(hangup))

    end = execute if platform.mode == "execute" else respond

    async def hang_up(session: Session) -> None:
        session.end(by="app")
        try:
            confirmed = await end(session)
        except Exception as exc:  # one call's trouble must not keep the others up
            logger.debug("%s: could not hang up on shutdown: %s", session.call.id, exc)
            return
        if confirmed:
            del unconfirmed[session.call.id]
            logger.debug("%s: hung up on shutdown", session.call.id)

    # The shares add up to the grace; the margin is for the speaking time on Telnyx.
    with anyio.move_on_after(grace + 10.0):
        async with anyio.create_task_group() as tg:
            for session in live:
                tg.start_soon(hang_up, session)
    if unconfirmed:
        logger.warning("shutting down: %d of %d live calls not confirmed hung up within "
                       "%.1f s (the platform is slow or unreachable)", len(unconfirmed), total,
                       grace)
        logger.debug("not confirmed hung up: %s", ", ".join(unconfirmed))
    else:
        logger.info("shutting down: hung up %d live call%s", total, "" if total == 1 else "s")
