"""The simulator's REST API (`/comms/v1`), recording downloads and its `/simulator`
extension, as raw ASGI."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import _extension
from ._asgi import Receive, Scope, Send
from ._errors import ApiError, WireError
from ._http import Response, check_auth, json_response, read_object
from ._wire import normalize_number, parse_commands, tel

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ("handle",)

PREFIX = "/comms/v1"
_CALL = re.compile(r"^/comms/v1/calls/([^/]+)$")
_SETCOMMANDS = re.compile(r"^/comms/v1/calls/([^/]+)/setcommands$")
_NUMBER = re.compile(r"^/comms/v1/me/numbers/([^/]+)$")
_RECORDING = re.compile(r"^/recordings/([0-9a-f-]+)\.wav$")


def _not_allowed() -> ApiError:
    return ApiError(405, "SVC", 3, "Method not allowed")


def _unknown(what: str, value: str) -> ApiError:
    return ApiError(404, "SVC", 4, f"Unknown {what}: %1", (value,))


async def handle(sim: Simulator, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one HTTP request; errors become BlueVia error bodies, never a crash."""
    if scope["type"] != "http":
        return
    try:
        if scope["path"] == _extension.PREFIX or scope["path"].startswith(
            _extension.PREFIX + "/"
        ):
            _base(sim, scope)
            check_auth(sim, scope)
            # not under busy(): its long poll waits for simulated time to pass
            status, headers, body = await _extension.dispatch(sim, scope, receive)
        else:
            with sim.clock.busy():
                status, headers, body = await _dispatch(sim, scope, receive)
    except ApiError as exc:
        status, headers, body = json_response(exc.status, exc.body())
    except Exception as exc:  # a bug here must not take the simulator down
        error = ApiError(500, "SVC", 0, "Internal error: %1", (type(exc).__name__,))
        status, headers, body = json_response(500, error.body())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _base(sim: Simulator, scope: Scope) -> str:
    if sim.base_url:
        return sim.base_url
    host = next((v for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
    if host:
        sim.base_url = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"
        return sim.base_url
    return "http://127.0.0.1"


def _url_field(body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise WireError(name)
        return value
    return None


def _true(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise WireError(name)


def _expired(sim: Simulator, scope: Scope) -> bool:
    """Whether a presigned recording URL (``X-Amz-Date`` + ``X-Amz-Expires`` seconds, as
    Telnyx hands them out) is past its life, in simulated time."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    signed, life = query.get("X-Amz-Date", [""])[0], query.get("X-Amz-Expires", [""])[0]
    if not signed or not life:
        return False
    try:
        at = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
        seconds = float(life)
    except ValueError:
        return True
    return sim.epoch + sim.clock.now() > at + seconds


async def _dispatch(sim: Simulator, scope: Scope, receive: Receive) -> Response:
    method: str = scope["method"]
    path: str = scope["path"]
    _base(sim, scope)
    if match := _RECORDING.match(path):
        if method not in ("GET", "HEAD"):
            raise _not_allowed()
        data = sim.recordings.get(match[1])
        if data is None:
            raise _unknown("recording", match[1])
        if _expired(sim, scope):
            return 403, [(b"content-type", b"application/xml")], (
                b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message>"
                b"</Error>")
        return 200, [(b"content-type", b"audio/wav")], data if method == "GET" else b""
    if not (path == PREFIX or path.startswith(PREFIX + "/")):
        raise _unknown("resource", path)
    check_auth(sim, scope)

    if path == PREFIX + "/calls":
        if method != "POST":
            raise _not_allowed()
        return await _create_call(sim, scope, receive)
    if match := _SETCOMMANDS.match(path):
        if method != "POST":
            raise _not_allowed()
        call = sim.calls.get(match[1])
        if call is None:
            raise _unknown("call", match[1])
        body = await read_object(sim, scope, receive)
        if call.terminated:
            raise ApiError(409, "SVC", 5, "Call already terminated: %1", (call.call_id,))
        call.set_commands(parse_commands(body))
        return 202, [], b""
    if match := _CALL.match(path):
        call = sim.calls.get(match[1])
        if method != "GET":
            raise _not_allowed()
        if call is None:
            raise _unknown("call", match[1])
        obj: dict[str, Any] = dict(call.to_object())
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "fields" in query:
            wanted = {f.strip() for v in query["fields"] for f in v.split(",") if f.strip()}
            obj = {k: v for k, v in obj.items() if k == "callId" or k in wanted}
        return json_response(200, obj)
    if match := _NUMBER.match(path):
        number = normalize_number(match[1], "number")
        if method == "GET":
            config = sim.account_numbers.get(number)
            if config is None:
                raise _unknown("number", tel(number))
            return json_response(200, {
                "number": tel(number),
                "notificationFormat": config.notification_format,
                "voiceCallbackUrl": config.callback_url,
                "voiceFallbackUrl": config.fallback_url,
            })
        if method != "POST":
            raise _not_allowed()
        body = await read_object(sim, scope, receive)
        fmt = body.get("notificationFormat", "JSON")
        if not isinstance(fmt, str) or fmt.upper() != "JSON":
            raise WireError("notificationFormat")
        callback = _url_field(body, "voiceCallbackUrl", "callbackUrl")
        if callback is None:
            raise WireError("voiceCallbackUrl")
        fallback = _url_field(body, "voiceFallbackUrl", "fallbackUrl")
        sim.add_account_number(number, callback_url=callback, fallback_url=fallback)
        return 200, [], b""
    raise _unknown("resource", path)


async def _create_call(sim: Simulator, scope: Scope, receive: Receive) -> Response:
    body = await read_object(sim, scope, receive)
    caller = normalize_number(body.get("callerId"), "callerId")
    destination = normalize_number(body.get("destination"), "destination")
    callback = _url_field(body, "callbackUrl")
    fallback = _url_field(body, "fallbackUrl")
    all_events = _true(body.get("notifications"), "notifications")
    number = sim.account_numbers.get(caller)
    if number is None:
        raise ApiError(403, "POL", 1, "%1 is not one of your numbers", (tel(caller),))
    if callback is None and number.callback_url is None:
        raise WireError("callbackUrl")
    call = sim.create_call(
        caller, destination, callback_url=callback, fallback_url=fallback, all_events=all_events
    )
    location = f"{_base(sim, scope)}{PREFIX}/calls/{call.call_id}"
    return json_response(201, {"callId": call.call_id}, [(b"location", location.encode())])
