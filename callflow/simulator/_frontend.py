"""Provider front ends: one simulated network, each provider's wire format.

The engine (``_engine.py``) runs calls with BlueVia's command semantics, the
model every provider maps onto.  A front end speaks one provider's wire format
at the two edges where the simulator meets the app:

- ``notify``: the engine has a notification for the app (BlueVia payload, to a
  BlueVia-style URL); the front end delivers it as its provider would (or not
  at all), and turns the app's reply into engine commands;
- ``handle_api``: a REST request from the app to the provider's API.

``BlueViaFrontEnd`` is the identity; the Twilio and Telnyx front ends live in
``_twilio.py`` and ``_telnyx.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._asgi import Receive, Scope, Send

if TYPE_CHECKING:
    from ._engine import SimCall
    from ._simulator import NotificationOutcome, Simulator

__all__ = ("BlueViaFrontEnd", "FrontEnd")


class FrontEnd(Protocol):
    """How a provider's app sees the simulated network."""

    name: str

    def call_created(self, call: SimCall) -> None:
        """A call starts (inbound or created through the API): e.g. force all-events mode."""

    async def notify(
        self, call: SimCall, url: str, payload: Mapping[str, Any]
    ) -> NotificationOutcome:
        """Deliver one engine notification; the outcome's commands go back to the engine.

        ``commands=None`` means delivery failed (fallback / hang-up), ``[]`` that the
        reply carried no commands.
        """

    async def handle_api(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve a request to this provider's REST API; False if the path is not its own."""


class BlueViaFrontEnd:
    """BlueVia itself: notifications and replies pass through unchanged."""

    name = "bluevia"

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def call_created(self, call: SimCall) -> None:
        pass

    async def notify(
        self, call: SimCall, url: str, payload: Mapping[str, Any]
    ) -> NotificationOutcome:
        return await self.sim.post_notification(url, payload)

    async def handle_api(self, scope: Scope, receive: Receive, send: Send) -> bool:
        return False
