"""Hotkeys: "press 0 at any time for an operator" over a section of a flow.

``async with call.hotkeys({"0": operator}) as keys:`` makes every ``gather`` (and so
every ``menu``) inside the block listen for the hotkeys too.  When the caller's answer
to one of them is a hotkey, the gather does not return: ``HotkeyPressed`` unwinds the
block to its ``async with``, which awaits the key's handler and carries on after the
block, with ``keys.pressed`` set.

Why it is built on gather results and nothing else: a durable call is rebuilt by
replaying its history, and each gather's result is already in it (docs/discussion/
durability.md).  Replaying the same results takes the same hotkey at the same place,
so hotkeys need no history entry of their own, and behave the same under asyncio and
trio (no task, no cancel scope, only an exception through the flow's own frames).

What counts as pressing a hotkey: the whole answer is the key (the caller pressed it
and waited, or it filled a one-key gather), or the answer starts with ``*`` or ``#``
and that is a hotkey (nobody starts an account number with a star).  Keys pressed
while a plain ``say`` plays are not heard by any platform; put an announcement in a
gather's ``prompt`` (with ``barge_in=True``) to make it interruptible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from ._commands import Gather
from ._results import GatherResult

if TYPE_CHECKING:
    from ._call import Call

__all__ = ("HotkeyHandler", "HotkeyPressed", "Hotkeys")

HotkeyHandler: TypeAlias = Callable[["Call"], Awaitable[Any]]
"""What a hotkey runs: ``async def operator(call: Call) -> None``."""

_KEYS = frozenset("0123456789*#")


class HotkeyPressed(BaseException):
    """Unwinds a hotkeys block to its ``async with`` (never reaches the flow's caller).

    A ``BaseException`` on purpose: a flow's ``except Exception`` around a menu must
    not swallow the caller's "0 for an operator".
    """

    def __init__(self, owner: Hotkeys, key: str) -> None:
        super().__init__(key)
        self.owner = owner
        self.key = key


class Hotkeys:
    """The hotkeys of a section of a flow; ``pressed`` is the key that ended it, if any."""

    __slots__ = ("_call", "handlers", "pressed")

    def __init__(self, call: Call, keys: Mapping[str, HotkeyHandler | None]) -> None:
        if not keys:
            raise ValueError("hotkeys() needs at least one key")
        for key in keys:
            if not isinstance(key, str) or len(key) != 1 or key not in _KEYS:
                raise ValueError(f"hotkeys(): {key!r} is not one key of 0-9 * #")
        self._call = call
        self.handlers: dict[str, HotkeyHandler | None] = dict(keys)
        self.pressed: str | None = None

    async def __aenter__(self) -> Hotkeys:
        self._call._hotkeys.append(self)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        stack = self._call._hotkeys
        if self in stack:
            stack.remove(self)
        if not isinstance(exc, HotkeyPressed) or exc.owner is not self:
            return False
        self.pressed = exc.key
        handler = self.handlers[exc.key]
        if handler is not None:
            await handler(self._call)
        return True

    def owner_of(self, result: GatherResult, finish_on_key: str) -> str | None:
        """The hotkey this answer is, or None."""
        digits = result.digits
        if not digits and result.finish_key and result.finish_key in self.handlers:
            return result.finish_key
        if digits in self.handlers:
            return digits
        if digits and digits[0] in "*#" and digits[0] in self.handlers:
            return digits[0]
        return None

    @staticmethod
    async def gather(call: Call, command: Gather) -> GatherResult:
        """``gather`` inside hotkeys blocks: listen for the hotkeys too; unwind on one."""
        stack = list(call._hotkeys)
        keys = "".join(key for block in stack for key in block.handlers)
        valid = command.valid_digits + "".join(k for k in dict.fromkeys(keys)
                                               if k not in command.valid_digits)
        if valid != command.valid_digits:
            command = dataclasses.replace(command, valid_digits=valid)
        result = await call._gather(command)
        if result.transcript is None:
            for block in reversed(stack):  # the innermost block's keys win
                key = block.owner_of(result, command.finish_on_key)
                if key is not None:
                    raise HotkeyPressed(block, key)
        return result
