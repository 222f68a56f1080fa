"""Call records: ``App.on_call_end`` hooks see every call end, on every platform.

The app and the simulator run under hypercorn on ports the OS picks; each platform's
inbound call, answered outbound call and unanswered outbound call must give the hooks
one ``CallRecord`` each, with what happened on the call.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

import callflow
from callflow import App, Call, CallRecord
from callflow._loader import load_app
from callflow.simulator import Phone, Simulator, serve_asgi, serve_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CALLER = "+34600000001"
CALLER_ID = "+34900000000"
PLATFORMS = ["bluevia", "twilio", "telnyx"]


@asynccontextmanager
async def served(app: App, platform: str) -> AsyncIterator[Simulator]:
    sim = Simulator(platform=platform)
    async with serve_simulator(sim) as sim_url:
        app.configure(callflow.Settings(platform_url=sim_url, response_budget=1.0,
                                        **sim.app_settings()))
        async with serve_asgi(app) as app_url:
            app.settings.public_url = app_url
            for number in app.numbers:
                sim.add_account_number(number)
            await app.configure_numbers()
            yield sim


async def flows_done(app: App) -> None:
    """Wait until every flow has finished; leaving the app then hands their records over."""
    with anyio.fail_after(10):
        for call_id in list(app.sessions):
            await app.wait_ended(call_id)


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_an_inbound_call_ends_with_one_record(platform: str) -> None:
    app = load_app(EXAMPLES / "ivr.py")
    records: list[CallRecord] = []
    app.on_call_end(records.append)
    before = datetime.now().astimezone()
    async with served(app, platform) as sim:
        sim.add_phone("+34910000001", Phone.answers(after=2, hang_up_after=5))
        call = await sim.place_inbound_call(CALLER, "+34900000001", script=["press-next:1"])
        with anyio.fail_after(10):
            await call.wait_ended()
        await flows_done(app)
    [record] = records
    assert (record.caller, record.callee, record.flow, record.direction) == (
        CALLER, "+34900000001", "reception", "inbound")
    assert record.outcome == "answered" and record.answered
    assert record.hung_up_by == "app"  # the flow said goodbye and hung up
    assert record.error is None
    assert record.data["choice"] == "sales"
    assert record.data["dial"]["status"] == "answered"  # a DialResult, as JSON data
    assert before <= record.started_at <= record.answered_at <= record.ended_at  # type: ignore[operator]
    assert record.duration == pytest.approx(
        (record.ended_at - record.answered_at).total_seconds(), abs=0.01)  # type: ignore[operator]
    if platform == "bluevia":  # its call and its caller's leg have ids of their own
        assert record.platform_call_id is not None
        assert record.platform_call_id != record.call_id
    json.dumps(record.to_json())  # one line of a log, as is


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_outbound_calls_answered_or_not_end_with_one_record_each(platform: str) -> None:
    app = load_app(EXAMPLES / "reminder.py")
    records: list[CallRecord] = []

    @app.on_call_end
    async def keep(record: CallRecord) -> None:  # an async hook
        await anyio.lowlevel.checkpoint()
        records.append(record)

    async with served(app, platform) as sim:
        sim.add_account_number(CALLER_ID, callback_url=app.callback_url)
        sim.add_phone(CALLER, Phone.answers(after=1, script=["press-next:1"]))
        sim.add_phone("+34600000002", Phone.busy())
        answered = await app.call(CALLER, caller_id=CALLER_ID, data={"name": "Ana"})
        busy = await app.call("+34600000002", caller_id=CALLER_ID)
        assert (answered.status, busy.status) == ("answered", "busy")
        await flows_done(app)
    by_callee = {r.callee: r for r in records}
    assert len(records) == 2
    done, failed = by_callee[CALLER], by_callee["+34600000002"]
    assert (done.direction, done.outcome, done.flow, done.caller) == (
        "outbound", "answered", "reminder", CALLER_ID)
    assert done.call_id == answered.call_id
    assert done.data == {"name": "Ana", "confirmed": True}
    assert done.answered_at is not None and done.started_at <= done.answered_at
    assert (failed.outcome, failed.answered_at, failed.duration, failed.hung_up_by) == (
        "busy", None, 0.0, None)
    assert failed.call_id == busy.call_id


async def test_a_flow_that_raises_and_hooks_that_fail(caplog: pytest.LogCaptureFixture) -> None:
    app = App()
    records: list[CallRecord] = []

    @app.flow(number="+34900000001")
    async def broken(call: Call) -> None:
        call.data["when"] = datetime(2026, 12, 3)  # not JSON: the record says it as text
        call.data["keys"] = {1, 2}
        await call.say("One moment.")
        raise LookupError("no such customer")

    @app.on_call_end
    def fails(record: CallRecord) -> None:
        raise RuntimeError("the hook's database is down")

    app.on_call_end(records.append)
    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with served(app, "bluevia") as sim:
            call = await sim.place_inbound_call(CALLER, "+34900000001")
            with anyio.fail_after(10):
                transcript = await call.wait_ended()
            await flows_done(app)
    assert "One moment." in transcript.spoken  # the failing hook broke nothing
    [record] = records
    assert record.error == "LookupError: no such customer"
    assert record.data == {"when": "2026-12-03T00:00:00", "keys": [1, 2]}
    assert "a call-end hook" in caplog.text and "the hook's database is down" in caplog.text


async def test_hooks_are_registered_before_the_app_starts() -> None:
    app = App(platform_url="http://127.0.0.1:9")

    @app.flow
    async def flow(call: Call) -> None:
        pass

    async with app:
        with pytest.raises(callflow.ConfigurationError, match="before the app starts"):
            app.on_call_end(print)
