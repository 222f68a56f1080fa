from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from callflow.simulator import (
    ConfigError,
    HangUp,
    Phone,
    Press,
    Simulator,
    WaitFor,
    load_config,
    parse_step,
    serve_asgi,
    serve_simulator,
)

from ._app import App

pytestmark = pytest.mark.anyio

NUMBER = "+34900000001"
BASE = "http://sim.test"


def rest(sim: Simulator, auth: Any = ("key", "secret")) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=sim), base_url=BASE, auth=auth)


def error(response: httpx.Response) -> tuple[int, str, int]:
    body = response.json()["ClientException"]
    return response.status_code, body["exceptionCategory"], body["exceptionId"]


async def test_rest_errors_and_number_config() -> None:
    async with Simulator() as sim, rest(sim) as client:
        assert error(await client.get("/comms/v1/calls/x", auth=("key", "bad"))) == (
            401, "SEC", 1)
        response = await client.post("/comms/v1/me/numbers/tel:%2B34900000001",
                                     json={"notificationFormat": "JSON",
                                           "callbackUrl": "http://app.test/voice"})
        assert response.status_code == 200
        got = (await client.get("/comms/v1/me/numbers/tel:%2B34900000001")).json()
        assert got == {"number": "tel:" + NUMBER, "notificationFormat": "JSON",
                       "voiceCallbackUrl": "http://app.test/voice", "voiceFallbackUrl": None}
        assert error(await client.get("/comms/v1/me/numbers/tel:%2B34900000009"))[0] == 404
        create = "/comms/v1/calls"
        assert error(await client.post(create, content=b"{nope")) == (400, "SVC", 1)
        assert error(await client.post(create, json={"callerId": "tel:+34900000009",
                                                     "destination": "tel:+34600000001"})) == (
            403, "POL", 1)
        assert error(await client.post(create, json={"callerId": "tel:+349"})) == (400, "SVC", 1)
        assert error(await client.post(create, content=b"x" * (2 << 20))) == (413, "SVC", 6)
        assert error(await client.get("/comms/v1/calls/unknown")) == (404, "SVC", 4)
        assert (await client.post("/comms/v1/calls/unknown")).status_code == 405
        response = await client.post(create, json={"callerId": "tel:+34900000001",
                                                   "destination": "tel:+34600000001"})
        assert response.status_code == 201
        call_id = response.json()["callId"]
        assert response.headers["location"] == f"{BASE}/comms/v1/calls/{call_id}"
        obj = (await client.get(f"/comms/v1/calls/{call_id}?fields=callStatus")).json()
        assert set(obj) == {"callId", "callStatus"}
        bad = await client.post(f"/comms/v1/calls/{call_id}/setcommands",
                                json={"commands": [{"sms": {"text": "hi"}}]})
        assert error(bad) == (400, "SVC", 2)
        bad = await client.post(f"/comms/v1/calls/{call_id}/setcommands",
                                json={"commands": [{"speak": {"txt": "typo"}}]})
        assert error(bad) == (400, "SVC", 2)


async def test_over_real_sockets_outbound_call() -> None:
    """The app and the simulator each behind hypercorn on an OS-chosen port."""
    answered = anyio.Event()

    def voice(n: dict[str, Any]) -> Any:
        if n["eventName"] == "Answered":
            answered.set()
            return [{"getDigits": {"actionUrl": app_url + "/digits", "numberOfDigits": 1,
                                   "speak": {"text": "Press 1 to confirm"}}}]
        return None

    app = App({"/voice": voice, "/digits": lambda n: [{"speak": {"text": "Confirmed"}},
                                                      {"hangup": {}}]})
    sim = Simulator()
    sim.add_phone("+34600000001", Phone.answers(after=2, press="1"))
    async with serve_asgi(app) as app_url, serve_simulator(sim) as sim_url:
        assert sim_url.startswith("http://127.0.0.1:") and not sim_url.endswith(":0")
        async with httpx.AsyncClient(base_url=sim_url, auth=("key", "secret")) as client:
            response = await client.post("/comms/v1/me/numbers/tel:%2B34900000001",
                                         json={"notificationFormat": "JSON",
                                               "voiceCallbackUrl": app_url + "/voice"})
            assert response.status_code == 200
            response = await client.post("/comms/v1/calls", json={
                "callerId": "tel:+34900000001", "destination": "tel:+34600000001"})
            assert response.status_code == 201
            call = sim.calls[response.json()["callId"]]
            with anyio.fail_after(10):
                transcript = await call.wait_ended()
            obj = (await client.get(f"/comms/v1/calls/{call.call_id}")).json()
    assert answered.is_set()
    assert transcript.spoken == ["Press 1 to confirm", "Confirmed"]
    assert app.events() == ["Answered", "DigitsCollected"]
    assert obj["callStatus"] == "terminated"
    assert obj["callLegs"][0]["direction"] == "Outbound"
    data = json.loads(transcript.to_json())
    assert data["entries"][0]["kind"] == "call"
    assert "☎" in str(transcript)


def test_script_steps_and_config_file(tmp_path: Path) -> None:
    assert parse_step("wait:sales") == WaitFor("sales")
    assert parse_step("press:1234#") == Press("1234#")
    assert parse_step("hangup:5") == HangUp(5.0)
    with pytest.raises(ConfigError):
        parse_step("press:abc")
    config = tmp_path / "numbers.toml"
    config.write_text(
        '[phones]\n"+34600000002" = "busy"\n'
        '"+34600000003" = {behaviour = "answer", after = 2, hang_up_after = 10, press = "1"}\n'
        '[numbers]\n"tel:+34900000001" = {callback_url = "http://app.test/voice"}\n'
    )
    loaded = load_config(config)
    assert loaded.phones["+34600000002"] == Phone.busy()
    assert loaded.phones["+34600000003"] == Phone.answers(2, press="1", hang_up_after=10)
    assert loaded.account_numbers[NUMBER].callback_url == "http://app.test/voice"
    bad = tmp_path / "bad.toml"
    bad.write_text('[phones]\n"+34600000002" = "explode"\n')
    with pytest.raises(ConfigError):
        load_config(bad)
