"""The pytest plugin callflow registers (entry point ``pytest11``): the ``fake_call`` fixture."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from .._call import Call
from ._fake import FakeCall

__all__ = ("fake_call",)


@pytest.fixture
def fake_call() -> Callable[..., FakeCall]:
    """A factory: ``fake_call(flow, caller=..., callee=...)`` returns a new ``FakeCall``."""

    def make(flow: Callable[[Call], Awaitable[None]], **options: Any) -> FakeCall:
        return FakeCall(flow, **options)

    return make
