"""Durable calls across real processes: kill -9, restarts, two workers behind haproxy.

The simulator runs in the test's own event loop, on a real clock and real sockets; the
app runs as ``callflow serve`` processes sharing one store (SQLite or PostgreSQL). The
caller reacts to what it hears (``LiveCaller``), so the test decides when a worker dies.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from callflow.simulator import Clock, LiveCaller, Simulator, serve_simulator
from callflow.simulator._engine import SimCall

from ._process import HAProxy, Worker, free_port, serve_args

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

NUMBER, CALLER = "+34900000077", "+34600000001"
WAIT = 20.0


@asynccontextmanager
async def simulator(platform: str) -> AsyncIterator[tuple[Simulator, str]]:
    # A real clock: the workers are other processes, whose time a virtual clock cannot see.
    sim = Simulator(platform=platform, clock=Clock.real())
    async with serve_simulator(sim) as url:
        sim.add_account_number(NUMBER)
        yield sim, url


def steps(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in lines]


async def delivered(sim: Simulator, call: SimCall, event_name: str, count: int) -> None:
    """Wait until the simulator has delivered ``count`` notifications named ``event_name``."""

    def seen() -> bool:
        return sum(1 for e in call.transcript.entries if e.kind == "notification"
                   and e.data.get("eventName") == event_name and e.data.get("ok")) >= count

    with sim.subscribe() as events, anyio.fail_after(WAIT):
        if seen():
            return
        async for _ in events:
            if seen():
                return


async def step_started(log: Path, what: str) -> int:
    """Wait until a worker starts the step ``what``; its pid."""
    with anyio.fail_after(WAIT):
        while not any(done == what for done, _ in steps(log)):  # noqa: ASYNC110
            # The step's own file is the only signal that it has started.
            await anyio.sleep(0.01)
    [pid] = [pid for done, pid in steps(log) if done == what]
    return pid


async def finish(call: SimCall, caller: LiveCaller, workers: list[Worker],
                 answers: tuple[tuple[str, str], ...]) -> None:
    """Answer the questions and wait for the end; on failure, show what happened where."""
    try:
        for question, key in answers:
            await answer(caller, question, key)
        assert await caller.wait_ended(timeout=WAIT)
    except AssertionError:
        print(call.transcript.render(), *(w.output for w in workers), sep="\n")
        raise


async def answer(caller: LiveCaller, question: str, key: str) -> None:
    assert await caller.wait_for(f"Question {question}.", timeout=WAIT), caller.heard
    assert await caller.press(key)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("platform", ["bluevia", "twilio"])
async def test_kill_9_between_two_prompts_then_a_restart_lets_the_call_go_on(
    platform: str, store_url: str, tmp_path: Path,
) -> None:
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log)}
    async with simulator(platform) as (sim, sim_url):
        args = serve_args(store_url, sim_url, sim.app_settings())
        first = Worker(*args, env=env)
        port = await first.started()
        call = await sim.place_inbound_call(CALLER, NUMBER)
        caller = LiveCaller(call.main)
        await answer(caller, "one", "1")
        assert await caller.wait_for("Question two.", timeout=WAIT)
        # Once the prompt is over (BlueVia reports it: PlaybackStopped) and the platform
        # waits for keys, nothing goes to the app until the caller presses.
        assert await caller.wait_listening(timeout=WAIT)
        if platform == "bluevia":
            await delivered(sim, call, "PlaybackStopped", 2)
        await first.killed()  # between two prompts: no shutdown, no goodbye
        second = Worker(*serve_args(store_url, sim_url, sim.app_settings(), port=port),
                        env=env)
        try:
            await second.started()
            assert await caller.press("2")
            await answer(caller, "three", "3")
            assert await caller.wait_ended(timeout=WAIT)
        finally:
            await second.stop()
    assert caller.heard[-1] == "You answered 1 2 3. Goodbye.", caller.heard
    ran = steps(log)
    assert [what for what, _ in ran] == ["start", "after one", "after two", "after three"]
    pids = [pid for _, pid in ran]
    assert pids[:2] == [first.popen.pid] * 2 and pids[2:] == [second.popen.pid] * 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_two_workers_behind_haproxy_take_a_calls_notifications_alternately(
    haproxy_ready: None, store_url: str, tmp_path: Path,
) -> None:
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log)}
    front = free_port()
    async with simulator("bluevia") as (sim, sim_url):
        public = f"http://127.0.0.1:{front}"
        workers = [Worker(*serve_args(store_url, sim_url, sim.app_settings(),
                                      public_url=public), env=env) for _ in range(2)]
        ports = [await w.started() for w in workers]
        proxy = HAProxy(tmp_path, front, ports)
        try:
            await proxy.started()
            calls = [await sim.place_inbound_call(CALLER, NUMBER) for _ in range(3)]
            callers = [LiveCaller(c.main) for c in calls]

            async def take(caller: LiveCaller, keys: str) -> None:
                for question, key in zip(("one", "two", "three"), keys, strict=True):
                    await answer(caller, question, key)
                assert await caller.wait_ended(timeout=WAIT)

            async with anyio.create_task_group() as tg:
                for caller, keys in zip(callers, ("123", "456", "789"), strict=True):
                    tg.start_soon(take, caller, keys)
        finally:
            proxy.stop()
            for worker in workers:
                await worker.stop()
    heard = sorted(c.heard[-1] for c in callers)
    assert heard == [f"You answered {a} {b} {c}. Goodbye." for a, b, c in ("123", "456", "789")]
    # Each call's notifications went to both workers, and each step ran once per call.
    for call in calls:
        assert all(call.call_id in w.output for w in workers), call.call_id
    assert Counter(what for what, _ in steps(log)) == {
        "start": 3, "after one": 3, "after two": 3, "after three": 3}


async def behind_haproxy(store_url: str, sim: Simulator, sim_url: str, tmp_path: Path,
                         env: dict[str, str], count: int = 2, server_timeout: float = 9.0,
                         ) -> tuple[list[Worker], HAProxy]:
    front = free_port()
    public = f"http://127.0.0.1:{front}"
    workers = [Worker(*serve_args(store_url, sim_url, sim.app_settings(), public_url=public),
                      env=env) for _ in range(count)]
    ports = [await w.started() for w in workers]
    proxy = HAProxy(tmp_path, front, ports, server_timeout=server_timeout)
    await proxy.started()
    return workers, proxy


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("point", ["inside-step", "after-record"])
async def test_a_worker_killed_mid_notification_is_replaced_by_another(
    haproxy_ready: None, point: str, store_url: str, tmp_path: Path,
) -> None:
    """SIGKILL inside a step, or after its record before the answer: the platform's
    retry (BlueVia's fallback request) reaches the other worker, which waits out the
    dead one's lease, takes the call over from the store and answers it."""
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log), "SURVEY_CRASH": point, "CALLFLOW_LEASE": "1"}
    async with simulator("bluevia") as (sim, sim_url):
        workers, proxy = await behind_haproxy(store_url, sim, sim_url, tmp_path, env)
        try:
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            await finish(call, caller, workers, (("one", "1"), ("two", "2"), ("three", "3")))
        finally:
            proxy.stop()
            for worker in workers:
                await worker.stop()
    assert caller.heard[-1] == "You answered 1 2 3. Goodbye.", (caller.heard,
                                                                 call.transcript.render())
    assert (tmp_path / "steps.txt.crashed").read_text() == point
    dead = [w for w in workers if w.popen.returncode == -signal.SIGKILL]
    assert len(dead) == 1, [w.popen.returncode for w in workers]
    ran = [what for what, _ in steps(log)]
    # At least once: a step the dying worker was inside runs again; a recorded one not.
    assert ran.count("after one") == (1 if point == "after-record" else 2)
    assert ran.count("after two") == 1 and ran.count("after three") == 1
    assert "the platform fell back" in "".join(w.output for w in workers)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_worker_paused_past_its_lease_cannot_write_and_drops_its_copy(
    haproxy_ready: None, store_url: str, tmp_path: Path,
) -> None:
    """SIGSTOP a worker inside a step, past its lease: the other worker takes the call over
    (through the platform's fallback request) and advances it; on SIGCONT the first one's
    append carries an old fence, is refused, and it drops its stale copy of the call."""
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log), "SURVEY_SLOW": "1.5", "CALLFLOW_LEASE": "1"}
    async with simulator("bluevia") as (sim, sim_url):
        # haproxy gives up on the paused worker after 4 s (BlueVia would wait 10 s), and
        # the platform's fallback request goes to the other one.
        workers, proxy = await behind_haproxy(store_url, sim, sim_url, tmp_path, env,
                                              server_timeout=4)
        try:
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            await answer(caller, "one", "1")
            paused_pid = await step_started(log, "after one")
            paused = next(w for w in workers if w.popen.pid == paused_pid)
            other = next(w for w in workers if w is not paused)
            paused.signal(signal.SIGSTOP)
            try:
                await other.wait_for("the platform fell back after DigitsCollected failed")
            finally:
                paused.signal(signal.SIGCONT)
            await paused.wait_for("another worker took the call over; dropping this "
                                  "worker's copy")
            await finish(call, caller, workers, (("two", "2"), ("three", "3")))
        finally:
            proxy.stop()
            for worker in workers:
                await worker.stop()
    assert caller.heard[-1] == "You answered 1 2 3. Goodbye.", caller.heard
    ran = steps(log)
    assert [pid for what, pid in ran if what == "after one"] == [paused_pid, other.popen.pid]
    assert [what for what, _ in ran].count("slow step done") == 2  # both ran it to the end


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_rolling_restart_of_both_workers_under_load_loses_no_call(
    haproxy_ready: None, store_url: str, tmp_path: Path,
) -> None:
    """Calls in progress while each worker in turn gets SIGTERM and a successor on its
    port: haproxy's health checks move the traffic, the store carries the calls over."""
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log)}
    async with simulator("bluevia") as (sim, sim_url):
        workers, proxy = await behind_haproxy(store_url, sim, sim_url, tmp_path, env)
        ports = proxy.ports
        public = f"http://127.0.0.1:{proxy.port}"
        replaced: list[Worker] = []
        try:
            calls = [await sim.place_inbound_call(CALLER, NUMBER) for _ in range(4)]
            callers = [LiveCaller(c.main) for c in calls]
            restarted = anyio.Event()

            async def take(caller: LiveCaller, keys: str) -> None:
                await answer(caller, "one", keys[0])
                await answer(caller, "two", keys[1])
                await restarted.wait()  # the third answer goes to the new workers
                await answer(caller, "three", keys[2])
                assert await caller.wait_ended(timeout=WAIT)

            async with anyio.create_task_group() as tg:
                for caller, keys in zip(callers, ("123", "456", "789", "147"), strict=True):
                    tg.start_soon(take, caller, keys)
                for index, worker in enumerate(workers):
                    assert await worker.stop() == 0, worker.output
                    successor = Worker(*serve_args(store_url, sim_url, sim.app_settings(),
                                                   port=ports[index], public_url=public),
                                       env=env)
                    replaced.append(successor)
                    await successor.started()
                restarted.set()
        finally:
            proxy.stop()
            for worker in (*workers, *replaced):
                await worker.stop()
    heard = sorted(c.heard[-1] for c in callers)
    assert heard == sorted(f"You answered {' '.join(k)}. Goodbye."
                           for k in ("123", "456", "789", "147"))
    assert "hung up on shutdown" not in "".join(w.output for w in workers)
    assert Counter(what for what, _ in steps(log)) == {
        "start": 4, "after one": 4, "after two": 4, "after three": 4}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_flow_whose_worker_died_in_its_own_code_is_taken_over_by_the_sweep(
    haproxy_ready: None, store_url: str, tmp_path: Path,
) -> None:
    """The setcommands path: the flow missed the response budget inside a slow step, so
    its notification was answered and no request waits for it. Its worker dies there;
    the other worker's sweep finds the call orphaned once the lease runs out, replays it,
    runs the unfinished step again and pushes the next prompt through the REST API."""
    log = tmp_path / "steps.txt"
    env = {"SURVEY_STEPS": str(log), "SURVEY_SLOW": "3", "CALLFLOW_LEASE": "1"}
    async with simulator("bluevia") as (sim, sim_url):
        workers, proxy = await behind_haproxy(store_url, sim, sim_url, tmp_path, env)
        try:
            call = await sim.place_inbound_call(CALLER, NUMBER)
            caller = LiveCaller(call.main)
            await answer(caller, "one", "1")
            pid = await step_started(log, "after one")
            owner = next(w for w in workers if w.popen.pid == pid)
            # Answered empty once the budget is spent (and received: the platform says so),
            # while the step runs on in the worker.
            await delivered(sim, call, "DigitsCollected", 1)
            await owner.killed()
            await answer(caller, "two", "2")
            await answer(caller, "three", "3")
            assert await caller.wait_ended(timeout=WAIT)
        finally:
            proxy.stop()
            for worker in workers:
                await worker.stop()
    assert caller.heard[-1] == "You answered 1 2 3. Goodbye.", caller.heard
    survivor = next(w for w in workers if w is not owner)
    assert "its worker died while the flow was running" in survivor.output, (
        survivor.output + owner.output)
    ran = [what for what, _ in steps(log)]
    assert ran.count("after one") == 2 and ran.count("slow step done") == 1

