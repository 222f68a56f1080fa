"""The simulator's own HTTP extension, `/simulator`: what the telephones do, from outside.

Not part of BlueVia (the platform API is `/comms/v1`): these endpoints let another process
(`callflow call --against URL`, an end-to-end test, curl) place inbound calls into a running
simulator, set how numbers behave, and read transcripts. Same Basic auth as the REST API.

    POST /simulator/calls                   {"from"?, "to", "script"?: [step, ...]}
                                            → 201 {"callId"}, Location: /simulator/calls/{id}
    GET  /simulator/calls/{id}/transcript   → 200 transcript (`Transcript.to_dict()`);
                                              `?wait=true` holds the request until the call
                                              has ended (at most `timeout` s, default 30)
    POST /simulator/phones/{number}         "busy" or {"behaviour", "after", "press",
                                            "hang_up_after", "script"} (the config file's form)
                                            → 200
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio

from ._asgi import Receive, Scope
from ._errors import ApiError, ConfigError, WireError
from ._http import Response, json_response, read_json, read_object
from ._network import Phone, parse_script
from ._wire import normalize_number

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ("DEFAULT_CALLER", "PREFIX", "dispatch")

PREFIX = "/simulator"
DEFAULT_CALLER = "+34600000001"
MAX_WAIT = 300.0
"""The longest a `?wait=true` request is held, in real seconds."""

_CALLS = PREFIX + "/calls"
_TRANSCRIPT = re.compile(r"^/simulator/calls/([^/]+)/transcript$")
_PHONE = re.compile(r"^/simulator/phones/([^/]+)$")


def _query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


async def dispatch(sim: Simulator, scope: Scope, receive: Receive) -> Response:
    """Answer a request under `/simulator` (authenticated by the caller).

    Only the long poll runs outside `clock.busy()`: it waits for the simulation to move on,
    so it must not hold virtual time still.
    """
    method: str = scope["method"]
    path: str = scope["path"].rstrip("/")
    if path == _CALLS:
        if method != "POST":
            raise ApiError(405, "SVC", 3, "Method not allowed")
        with sim.clock.busy():
            return await _place_call(sim, await read_object(sim, scope, receive))
    if match := _TRANSCRIPT.match(path):
        if method != "GET":
            raise ApiError(405, "SVC", 3, "Method not allowed")
        call = sim.calls.get(match[1])
        if call is None:
            raise ApiError(404, "SVC", 4, "Unknown call: %1", (match[1],))
        query = _query(scope)
        if query.get("wait", ["false"])[-1].lower() in ("true", "1", "yes"):
            try:
                timeout = float(query.get("timeout", ["30"])[-1])
            except ValueError:
                raise WireError("timeout") from None
            if not 0 <= timeout <= MAX_WAIT:
                raise WireError("timeout")
            with anyio.move_on_after(timeout):
                await call.wait_ended()
        return json_response(200, call.transcript.to_dict())
    if match := _PHONE.match(path):
        if method not in ("POST", "PUT"):
            raise ApiError(405, "SVC", 3, "Method not allowed")
        number = normalize_number(match[1], "number")
        body = await read_json(sim, scope, receive)
        if not isinstance(body, str | dict):
            raise WireError("body", detail="a behaviour name or a JSON object")
        try:
            phone = Phone.from_config(body)
        except ConfigError as exc:
            raise WireError("phone", detail=str(exc)) from None
        sim.add_phone(number, phone)
        return 200, [], b""
    raise ApiError(404, "SVC", 4, "Unknown resource: %1", (path,))


async def _place_call(sim: Simulator, body: dict[str, Any]) -> Response:
    caller = normalize_number(body.get("from", DEFAULT_CALLER), "from")
    to = normalize_number(body.get("to"), "to")
    script = body.get("script", [])
    if isinstance(script, str):
        script = [script]
    if not isinstance(script, list) or not all(isinstance(s, str) for s in script):
        raise WireError("script")
    try:
        steps = parse_script(script)
    except ConfigError as exc:
        raise WireError("script", detail=str(exc)) from None
    number = sim.account_numbers.get(to)
    if number is None or not number.callback_url:
        raise ApiError(404, "SVC", 4, "Not an account number with a callback URL: %1", (to,))
    call = await sim.place_inbound_call(caller, to, script=steps)
    location = f"{sim.base_url or ''}{PREFIX}/calls/{call.call_id}"
    return json_response(201, {"callId": call.call_id}, [(b"location", location.encode())])
