"""Load: many scripted inbound calls at a given rate against a served app, measured.

    async with LoadGenerator() as load, load.serve() as platform_url:
        ...  # serve the app with platform_url; it points its numbers at the simulator
        result = await load.run("+34900000001", calls=1000, rate=200,
                                script=["wait:opening hours", "press:3"], expect="Goodbye")
    print(result.render())

The simulators run on virtual clocks: speech, waits and timeouts take no real time, so
what is measured is the application (and the HTTP between the two), not the length of its
prompts. Calls are *started* at `rate` per real second.

Latency is the simulator's view of each notification POST: from the moment it is sent
until the response body is read, including connection set-up when no kept-alive
connection is free (notifications go through `LeanTransport`: no pool limit, no pool
scans). Put the application in another process (as `bench/load.py` does) for honest
numbers: in one process the generator, which does more work per notification than the
app, shares its event loop and core.

A call *completes* when it ends with no notification failure (no answer, timeout, bad
commands) and, if `expect` is given, having heard a prompt containing `expect`. Anything
else is a failure, with its reason kept (the first `keep_failures` transcripts too).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

import anyio
import httpx

from ._asgi import Receive, Scope, Send
from ._clock import Clock
from ._engine import SimCall
from ._errors import ConfigError
from ._lean_http import LeanTransport
from ._network import Step, parse_script
from ._serving import serve_asgi
from ._simulator import Simulator
from ._transcript import Transcript
from ._wire import normalize_number

__all__ = ("LatencyStats", "LoadGenerator", "LoadResult", "percentile")

_START = "callflow.load.start"


def percentile(ordered: list[float], p: float) -> float:
    """The `p`-th percentile (0-100) of ascending `ordered`, by the nearest-rank method."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(min(rank, len(ordered))) - 1]


@dataclass(frozen=True)
class LatencyStats:
    """Notification response times, in seconds."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[float]) -> LatencyStats | None:
        """The stats of `samples`; None when there are none."""
        ordered = sorted(samples)
        if not ordered:
            return None
        return cls(
            count=len(ordered),
            mean=sum(ordered) / len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
        )


@dataclass(frozen=True)
class LoadResult:
    """What a load run did and how fast."""

    calls: int
    """Calls placed."""
    completed: int
    failed: int
    notifications: int
    """Notification POSTs sent (each one answered or not)."""
    notification_failures: int
    latency: LatencyStats | None
    seconds: float
    """Real seconds from the first call placed to the last one over."""
    rate: float | None
    """The requested rate, calls started per second (None: all at once)."""
    peak_concurrency: int
    """The most calls up at the same time."""
    simulated_seconds: float
    """Virtual time that went by (in the busiest shard; the calls' lengths add up to far
    more)."""
    failures: tuple[str, ...] = ()
    """The reasons of the first failures (one line each)."""
    failed_transcripts: tuple[Transcript, ...] = field(default=(), repr=False)

    @property
    def calls_per_second(self) -> float:
        """Completed calls per real second."""
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def notifications_per_second(self) -> float:
        return self.notifications / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (latencies in seconds), with the derived rates."""
        data = asdict(self)
        data["failed_transcripts"] = [t.to_dict() for t in self.failed_transcripts]
        data["calls_per_second"] = self.calls_per_second
        data["notifications_per_second"] = self.notifications_per_second
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def render(self) -> str:
        """A table for the terminal."""
        rows = [
            ("calls placed", f"{self.calls}"),
            ("completed", f"{self.completed}"),
            ("failed", f"{self.failed}"),
            ("requested rate", "all at once" if self.rate is None else f"{self.rate:g} calls/s"),
            ("peak concurrent calls", f"{self.peak_concurrency}"),
            ("wall time", f"{self.seconds:.2f} s"),
            ("calls/s (completed)", f"{self.calls_per_second:.1f}"),
            ("notifications", f"{self.notifications} ({self.notification_failures} failed)"),
            ("notifications/s", f"{self.notifications_per_second:.1f}"),
        ]
        if self.latency is not None:
            lat = self.latency
            rows += [
                ("latency p50", _ms(lat.p50)),
                ("latency p90", _ms(lat.p90)),
                ("latency p99", _ms(lat.p99)),
                ("latency max", _ms(lat.max)),
                ("latency mean", _ms(lat.mean)),
            ]
        rows.append(("simulated time", f"{self.simulated_seconds:.1f} s"))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {value}" for name, value in rows]
        lines += [f"failure: {reason}" for reason in self.failures]
        return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


class LoadGenerator:
    """Simulators that place scripted inbound calls at a rate and measure the app.

    Enter it (`async with`), serve it (`load.serve()`, or mount it as the ASGI app it is)
    where the app reaches it as its platform, let the app point its numbers at it, then
    `await load.run(...)`. Configure phones and numbers on `load.sim`: every shard sees
    them. `transport` replaces the HTTP transport under the notifications (default
    `LeanTransport`; e.g. `httpx.ASGITransport(app=app)` for no sockets at all); extra
    keyword arguments go to each `Simulator`.

    Calls are spread over `shards` simulators, each with its own virtual clock, behind one
    router for the REST API. One clock for every call would be a barrier: virtual time
    moves only when no notification of *any* call is in flight, so under load every call
    would wait for the busiest moments of all the others. Calls in different shards share
    no conference.
    """

    def __init__(
        self,
        *,
        shards: int = 8,
        keep_failures: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
        **simulator_options: Any,
    ) -> None:
        if shards < 1:
            raise ConfigError("shards must be at least 1")
        self.latencies: list[float] = []
        self.keep_failures = keep_failures
        timeout = float(simulator_options.get("notification_timeout", 10.0))
        self._client = httpx.AsyncClient(
            transport=transport if transport is not None else LeanTransport(),
            timeout=timeout,
            event_hooks={"request": [self._sent], "response": [self._answered]},
        )
        self.sims = [
            Simulator(clock=Clock.virtual(), http_client=self._client, **simulator_options)
            for _ in range(shards)
        ]
        self.sim = self.sims[0]
        """The first shard: configure phones and account numbers here."""
        for sim in self.sims[1:]:
            sim.phones = self.sim.phones
            sim.account_numbers = self.sim.account_numbers
            sim.recordings = self.sim.recordings
        self._turn = itertools.cycle(self.sims)
        self._stack: AsyncExitStack | None = None

    async def _sent(self, request: httpx.Request) -> None:
        request.extensions[_START] = time.perf_counter()

    async def _answered(self, response: httpx.Response) -> None:
        request = response.request
        start = request.extensions.get(_START)
        if request.method == "POST" and start is not None:
            await response.aread()  # a response counts once its body is in
            self.latencies.append(time.perf_counter() - start)

    # -- running -----------------------------------------------------------------------

    async def __aenter__(self) -> LoadGenerator:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._client)
            for sim in self.sims:
                await stack.enter_async_context(sim)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3: the platform's REST API, each request handled by the right shard."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                phase = str(message["type"]).removeprefix("lifespan.")
                if phase == "startup" and self._stack is None:
                    await send({"type": "lifespan.startup.failed",
                                "message": "enter the LoadGenerator before serving it"})
                    return
                await send({"type": f"lifespan.{phase}.complete"})
                if phase == "shutdown":
                    return
        await self._shard_for(scope)(scope, receive, send)

    def _shard_for(self, scope: Scope) -> Simulator:
        """The shard holding the call named in the path (any provider's URL shape), else
        the first: new calls, numbers, and anything else shared."""
        for segment in str(scope.get("path", "")).split("/")[2:]:
            call_id = segment.partition(".")[0]  # e.g. Twilio's /Calls/{sid}.json
            for sim in self.sims:
                if call_id in sim.calls:
                    return sim
        return self.sim

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve the REST API over HTTP on `host:port` (0: any free port); yields its URL."""
        async with serve_asgi(self, host, port) as url:
            for sim in self.sims:
                sim.base_url = sim.base_url or url
            yield url

    async def run(
        self,
        to: str,
        *,
        calls: int,
        rate: float | None = None,
        script: Iterable[str | Step] = (),
        expect: str | None = None,
        caller: str = "+34600000000",
        max_concurrent: int | None = None,
        call_timeout: float = 60.0,
    ) -> LoadResult:
        """Place `calls` calls from distinct numbers to the account number `to`.

        `rate`: calls started per real second (None: as fast as possible). `script`: what
        every caller does (`parse_script` steps). `max_concurrent`: at most this many calls
        up at once (further starts wait). `call_timeout`: real seconds a call may take
        before it is hung up and counted as failed.
        """
        if calls < 1:
            raise ConfigError("calls must be at least 1")
        if rate is not None and rate <= 0:
            raise ConfigError("rate must be positive")
        steps = parse_script(script)
        base = int(normalize_number(caller)[1:])
        number = self.sim.account_numbers.get(normalize_number(to))
        if number is None or not number.callback_url:
            raise ConfigError(f"{to} is not an account number with a callback URL: has the "
                              "app pointed its numbers at this simulator?")
        self.latencies.clear()
        tally = _Tally(self.keep_failures)
        limit = anyio.Semaphore(max_concurrent) if max_concurrent else None
        clock_start = [sim.clock.now() for sim in self.sims]
        start = anyio.current_time()

        async def one(index: int) -> None:
            try:
                call = await next(self._turn).place_inbound_call(
                    f"+{base + index}", to, script=steps
                )
                tally.up(1)
                try:
                    await self._follow(call, tally, expect, call_timeout)
                finally:
                    tally.up(-1)
            finally:
                if limit is not None:
                    limit.release()

        async with anyio.create_task_group() as tg:
            for index in range(calls):
                if rate is not None:
                    await _sleep_until(start + index / rate)
                if limit is not None:
                    await limit.acquire()
                tg.start_soon(one, index)
        seconds = anyio.current_time() - start
        return LoadResult(
            calls=calls,
            completed=tally.completed,
            failed=tally.failed,
            notifications=tally.notifications,
            notification_failures=tally.notification_failures,
            latency=LatencyStats.of(self.latencies),
            seconds=seconds,
            rate=rate,
            peak_concurrency=tally.peak,
            simulated_seconds=max(
                sim.clock.now() - before for sim, before in zip(self.sims, clock_start, strict=True)
            ),
            failures=tuple(tally.reasons),
            failed_transcripts=tuple(tally.transcripts),
        )

    async def _follow(
        self, call: SimCall, tally: _Tally, expect: str | None, call_timeout: float
    ) -> None:
        with anyio.move_on_after(call_timeout) as scope:
            transcript = await call.wait_ended()
        if scope.cancelled_caught:
            call.main.hang_up()
            with anyio.move_on_after(5):
                await call.wait_ended()
            tally.fail(call.transcript, f"call {call.call_id}: not over after {call_timeout:g} s")
        else:
            tally.count(transcript, expect)
        # Forget the call: a long run must not keep every transcript.
        call.sim.calls.pop(call.call_id, None)


async def _sleep_until(deadline: float) -> None:
    delay = deadline - anyio.current_time()
    if delay > 0:
        await anyio.sleep(delay)


class _Tally:
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.completed = 0
        self.failed = 0
        self.notifications = 0
        self.notification_failures = 0
        self.current = 0
        self.peak = 0
        self.reasons: list[str] = []
        self.transcripts: list[Transcript] = []

    def up(self, delta: int) -> None:
        self.current += delta
        self.peak = max(self.peak, self.current)

    def count(self, transcript: Transcript, expect: str | None) -> None:
        notes = [e.data for e in transcript.entries if e.kind == "notification"]
        self.notifications += len(notes)
        self.notification_failures += sum(1 for data in notes if not _ok(data))
        errors = [e.text for e in transcript.entries if e.kind == "error"]
        if errors:
            self.fail(transcript, f"call {transcript.call_id}: {errors[0]}", counted=True)
        elif expect is not None and not any(
            expect.lower() in text.lower() for text in transcript.texts("speak")
        ):
            heard = transcript.spoken[-1] if transcript.spoken else "nothing"
            self.fail(transcript, f"call {transcript.call_id}: never heard {expect!r} "
                                  f"(last heard: {heard!r})", counted=True)
        else:
            self.completed += 1

    def fail(self, transcript: Transcript, reason: str, *, counted: bool = False) -> None:
        if not counted:
            notes = [e.data for e in transcript.entries if e.kind == "notification"]
            self.notifications += len(notes)
            self.notification_failures += sum(1 for data in notes if not _ok(data))
        self.failed += 1
        if len(self.reasons) < self.keep:
            self.reasons.append(reason)
            self.transcripts.append(transcript)


def _ok(data: Mapping[str, Any]) -> bool:
    return bool(data.get("ok"))
