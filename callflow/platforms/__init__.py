"""Platform adapters: each turns webhooks into events and commands into wire formats."""

from ._base import ApiRequest, Platform, UrlFor
from ._bluevia import BlueVia

__all__ = ("ApiRequest", "BlueVia", "Platform", "UrlFor", "get_platform")


def get_platform(name: str) -> Platform:
    """The adapter registered under ``name`` (``bluevia``)."""
    if name == "bluevia":
        return BlueVia()
    from .._exceptions import ConfigurationError

    raise ConfigurationError(f"unknown platform {name!r}; choose one of: bluevia")
