"""Verbs that notice when a flow forgot to ``await`` them, and flows that are not coroutines.

``call.say("Hello")`` without ``await`` makes a coroutine that never runs: the caller
hears nothing, and Python's only word is a ``RuntimeWarning`` at garbage collection,
far from the line.  Each verb of ``Call`` is decorated with ``verb``: calling it
returns a ``_Verb``, a coroutine that notes where it was made (file and line) and
whether it was awaited.  The next verb the flow calls, and the flow's end, look at
the one before: never awaited, it becomes a ``FlowError`` naming that line.  The
check needs no event loop, so it works alike under asyncio, trio and in replay.

Awaiting a verb later (``coro = call.say(...)``, then another verb, then
``await coro``) is refused too: a call is one coroutine, and its verbs run in the
order the flow calls them.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from ._exceptions import ConfigurationError, FlowError

if TYPE_CHECKING:
    from ._call import Call

__all__ = ("check_awaited", "check_flow", "verb")

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", bound="Call[Any]")


class _Verb(Coroutine[Any, Any, T]):
    """A verb's coroutine that knows where it was called, and whether it was awaited."""

    __slots__ = ("_coro", "awaited", "file", "line", "name")

    def __init__(self, coro: Coroutine[Any, Any, T], name: str, file: str, line: int) -> None:
        self._coro = coro
        self.name, self.file, self.line = name, file, line
        self.awaited = False

    def __await__(self) -> Generator[Any, None, T]:
        self.awaited = True
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        self.awaited = True
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self.awaited = True
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def error(self) -> FlowError:
        self.close()  # no second word from Python ("coroutine ... was never awaited")
        return FlowError(
            f"{self.file}:{self.line}: call.{self.name}() was called without 'await', so it "
            f"never ran; write 'await call.{self.name}(...)'"
        )


def verb(method: Callable[Concatenate[C, P], Coroutine[Any, Any, T]]
         ) -> Callable[Concatenate[C, P], Coroutine[Any, Any, T]]:
    """Make a ``Call`` verb refuse to be left un-awaited (see the module docstring)."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(call: C, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        before = call._unawaited
        if before is not None and not before.awaited:
            call._unawaited = None
            raise before.error()
        frame = sys._getframe(1)
        made = _Verb(method(call, *args, **kwargs), name, frame.f_code.co_filename,
                     frame.f_lineno)
        call._unawaited = made
        return made

    return wrapper


def check_awaited(call: Call[Any]) -> None:
    """At the flow's end: raise ``FlowError`` if its last verb was never awaited."""
    before = call._unawaited
    if before is not None:
        call._unawaited = None
        if not before.awaited:
            raise before.error()


def check_flow(func: Callable[..., Any], name: str) -> None:
    """Refuse a flow that is not an ``async def`` (it would fail on its first call)."""
    target = inspect.unwrap(func)
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            type(target).__call__):  # an object with an async __call__
        return
    if isinstance(target, functools.partial) and inspect.iscoroutinefunction(target.func):
        return
    where = ""
    try:
        file = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
        where = f" ({file}:{line})" if file else ""
    except (OSError, TypeError):
        pass
    raise ConfigurationError(
        f"flow {name!r}{where} is a plain function: a flow is a coroutine that awaits its "
        f"verbs; write 'async def {getattr(target, '__name__', name)}(call): ...'"
    )
