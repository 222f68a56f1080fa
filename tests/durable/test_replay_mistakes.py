"""A verb left un-awaited is caught the same way when a durable call is replayed on
another worker: the check lives in the verbs, not in the event loop."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import callflow
from callflow.platforms import Webhook

pytestmark = pytest.mark.anyio

NUMBER = "+34900000079"
with open(__file__, encoding="utf-8") as _source:
    MISSING_AWAIT_LINE = next(n for n, text in enumerate(_source, 1)
                              if text.rstrip().endswith("# the missing await"))


def _app(store: str) -> callflow.App:
    app = callflow.App(store=store, secret="s3cret", platform_url="http://127.0.0.1:9",
                       response_budget=None)

    @app.flow(number=NUMBER)
    async def survey(call: callflow.Call) -> None:
        await call.gather(prompt="Question one.", num_digits=1)
        call.say("Thank you.")  # type: ignore[unused-coroutine]  # the missing await
        await call.gather(prompt="Question two.", num_digits=1)

    return app


def _body(event: str, **extra: Any) -> bytes:
    return json.dumps({"eventName": event, "callId": "c1", "legId": "l1",
                       "callerId": "tel:+34600000001", "destination": f"tel:{NUMBER}",
                       "timestamp": "2026-12-03T10:00:00Z", **extra}).encode()


async def test_a_replay_on_another_worker_names_the_line_too(
        store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _app(store_url), _app(store_url)
    with caplog.at_level(logging.ERROR, logger="callflow"):
        async with a, b:
            await a.handle_webhook(Webhook("POST", "http://app/", "/", {}, {},
                                           _body("CalledNumber")))
            reply = await b.handle_webhook(Webhook("POST", "http://app/", "/", {"step": "1"},
                                                   {}, _body("DigitsCollected", digits="4")))
    answer = json.dumps(reply.json_body())
    assert "Question two." not in answer and "Thank you." not in answer
    assert '"hangup"' in answer  # the apology and the end, from worker b's replay
    assert f"{__file__}:{MISSING_AWAIT_LINE}: call.say() was called without 'await'" in caplog.text
