"""Memory mode: ending the calls whose hang-up was lost, so that none stays forever.

A call whose hang-up notification never came (an overload, a platform fault) would hold
its session, its flow and its runner until the process ends.  A sweep ends a call that
outlived ``Settings.max_call_duration``, or that has waited on the platform (a gather, a
recording, a hold loop, Telnyx's ``call.answered``) for ``Settings.idle_timeout`` without
a single notification.  A dial or a conference is exempt from the idle limit: a
conversation may be long and silent.  An expired call is logged, hung up by REST (once;
a refusal is logged too) and forgotten at once, remembered as ended.

With a durable store, ``DurableCalls`` sweeps the store instead (``max_call_duration``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import anyio

from ._commands import Hangup
from ._exceptions import CallflowError
from .platforms import ExecutingPlatform

if TYPE_CHECKING:
    from ._app import App
    from ._session import Session

__all__ = ("Expiry",)

logger = logging.getLogger("callflow")

LONGEST_PERIOD = 60.0
"""Seconds between sweeps at most (a tenth of the shortest limit, when that is less)."""


class Expiry:
    """Ends the app's calls that outlived their limits; ``run`` sweeps until cancelled."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def period(self) -> float | None:
        s = self.app.settings
        limits = [limit for limit in (s.max_call_duration, s.idle_timeout) if limit > 0]
        return min(LONGEST_PERIOD, max(0.01, min(limits) / 10)) if limits else None

    async def run(self) -> None:
        period = self.period
        if period is None:
            return
        while True:
            await anyio.sleep(period)
            self.sweep()

    def sweep(self) -> None:
        s = self.app.settings
        now = anyio.current_time()
        for session in list(self.app.sessions.values()):
            if s.max_call_duration > 0 and now - session.born_at > s.max_call_duration:
                self.expire(session, f"the call outlived the maximum duration "
                                     f"({s.max_call_duration:.0f} s)")
            elif (s.idle_timeout > 0 and now - session.news_at > s.idle_timeout
                  and session.waits_on_platform()):
                self.expire(session, f"no notification for {s.idle_timeout:.0f} s while "
                                     "waiting on the platform")

    def expire(self, session: Session, why: str) -> None:
        app = self.app
        call_id = session.call.id
        logger.warning("%s: %s (its hang-up was lost?); hanging up and forgetting it",
                       call_id, why)
        runner = app.runner_of(call_id)
        session.end(by="app")
        app.finished(session)  # forgotten now, whatever its flow still does

        async def hang_up() -> None:
            try:
                if runner is not None:
                    await runner.interrupt()
                    platform = cast("ExecutingPlatform", app.platform)
                    _, _, request = platform.farewell(runner.leg, None)
                    response = await request.send(app.http)
                    if response.status_code >= 300:
                        raise platform.error(response)
                else:
                    await app.platform.push(app.http, call_id, [Hangup()],
                                            url_for=app.url_for(call_id))
            except CallflowError as exc:
                logger.warning("%s: the expired call's hang-up failed: %s", call_id, exc)
            else:
                logger.info("%s: hung up the expired call", call_id)

        app.spawn(hang_up)
