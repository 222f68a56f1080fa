"""Platform adapters: each turns webhooks into events and commands into wire formats.

``BlueVia`` and ``Twilio`` answer webhooks with commands (``respond`` mode);
``Telnyx`` takes every command as a REST call (``execute`` mode).  See
``callflow.platforms._base`` for the interface.
"""

from ._base import ApiRequest, ExecutingPlatform, Mode, Platform, Reply, UrlFor, Webhook
from ._bluevia import BlueVia
from ._registry import get_platform
from ._telnyx import Telnyx
from ._twilio import Twilio

__all__ = (
    "ApiRequest",
    "BlueVia",
    "ExecutingPlatform",
    "Mode",
    "Platform",
    "Reply",
    "Telnyx",
    "Twilio",
    "UrlFor",
    "Webhook",
    "get_platform",
)
