"""Durable mode: a call that moves between workers is recorded once, by the worker that saw
it end.  Two apps share one store (two workers, as far as the store can tell)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import callflow
from callflow import CallRecord
from callflow.platforms import Webhook

pytestmark = pytest.mark.anyio

NUMBER = "+34900000078"


def _app(store: str, records: list[tuple[str, CallRecord]], name: str) -> callflow.App:
    app = callflow.App(store=store, secret="s3cret", platform_url="http://127.0.0.1:9",
                       response_budget=None)

    @app.flow(number=NUMBER)
    async def survey(call: callflow.Call) -> None:
        first = await call.gather(prompt="Question one.", num_digits=1)
        call.data["first"] = first.digits
        second = await call.gather(prompt="Question two.", num_digits=1)
        call.data["second"] = second.digits
        await call.say("Thank you.")

    app.on_call_end(lambda record: records.append((name, record)))
    return app


def _body(event: str, **extra: Any) -> bytes:
    return json.dumps({"eventName": event, "callId": "c1", "legId": "l1",
                       "callerId": "tel:+34600000001", "destination": f"tel:{NUMBER}",
                       "timestamp": "2026-12-03T10:00:00Z", **extra}).encode()


async def _send(app: callflow.App, body: bytes, **query: str) -> None:
    reply = await app.handle_webhook(Webhook("POST", "http://app/", "/", query, {}, body))
    assert reply.status == 200


async def test_a_call_that_moves_between_workers_is_recorded_once(store_url: str) -> None:
    records: list[tuple[str, CallRecord]] = []
    a, b = _app(store_url, records, "a"), _app(store_url, records, "b")
    async with a, b:
        await _send(a, _body("CalledNumber"))
        await _send(b, _body("DigitsCollected", digits="4"), step="1")  # b replays, goes on
        await _send(a, _body("DigitsCollected", digits="7"), step="2")  # a catches up, ends
        await _send(b, _body("HangUp", reason="rejected"))  # b: the call is over already
    # Leaving the apps drains their hooks' task: every record is in.
    assert [name for name, _ in records] == ["a"]
    [(_, record)] = records
    assert record.data == {"first": "4", "second": "7"}  # rebuilt by replay on a
    assert (record.outcome, record.hung_up_by, record.flow) == ("answered", "app", "survey")
    assert record.answered_at is not None and record.started_at == record.answered_at


async def test_a_caller_who_hangs_up_on_another_worker_is_recorded_there(
        store_url: str) -> None:
    records: list[tuple[str, CallRecord]] = []
    a, b = _app(store_url, records, "a"), _app(store_url, records, "b")
    async with a, b:
        await _send(a, _body("CalledNumber"))
        await _send(b, _body("HangUp", reason="rejected"))
        await _send(a, _body("HangUp", reason="rejected"))  # a late copy on a: nothing
    assert [(name, r.hung_up_by, r.data) for name, r in records] == [("b", "caller", {})]
