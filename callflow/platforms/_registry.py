"""Which adapter a ``Settings`` asks for, built with its credentials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exceptions import ConfigurationError
from ._base import Platform
from ._bluevia import BlueVia
from ._telnyx import Telnyx
from ._twilio import Twilio

if TYPE_CHECKING:
    from .._settings import Settings

__all__ = ("NAMES", "get_platform")

NAMES = ("bluevia", "twilio", "telnyx")


def get_platform(settings: Settings | str) -> Platform:
    """The adapter for ``settings.platform``, with its credentials; checks they are there.

    Given a bare name, the adapter with default (empty) credentials: enough for
    its pure functions.
    """
    if isinstance(settings, str):
        from .._settings import Settings

        settings = Settings(platform=settings)
        check = False
    else:
        check = True
    name = settings.platform
    url = settings.api_url
    if name == "bluevia":
        return BlueVia(api_url=url, api_key=settings.api_key, api_secret=settings.api_secret)
    if name == "twilio":
        if check:
            _require(settings, "twilio_account_sid", "twilio_auth_token")
        return Twilio(account_sid=settings.twilio_account_sid,
                      auth_token=settings.twilio_auth_token, api_url=url,
                      language=settings.language)
    if name == "telnyx":
        if check:
            _require(settings, "telnyx_api_key", "telnyx_public_key", "telnyx_connection_id")
        return Telnyx(api_key=settings.telnyx_api_key, public_key=settings.telnyx_public_key,
                      connection_id=settings.telnyx_connection_id, api_url=url,
                      language=settings.language, tolerance=settings.signature_tolerance,
                      command_timeout=settings.command_timeout)
    raise ConfigurationError(f"unknown platform {name!r}; choose one of: {', '.join(NAMES)}")


def _require(settings: Settings, *fields: str) -> None:
    missing = [f for f in fields if not getattr(settings, f)]
    if missing:
        names = ", ".join(f"{f} (CALLFLOW_{f.upper()})" for f in missing)
        raise ConfigurationError(f"the {settings.platform} platform needs {names}")
