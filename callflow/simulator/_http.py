"""Request and response helpers shared by the REST API and the `/simulator` extension."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import TYPE_CHECKING, Any

from ._asgi import Receive, Scope
from ._errors import ApiError, WireError

if TYPE_CHECKING:
    from ._simulator import Simulator

__all__ = ("Response", "check_auth", "json_response", "read_json", "read_object")

Response = tuple[int, list[tuple[bytes, bytes]], bytes]
"""Status, headers and body of an answer."""


def json_response(
    status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> Response:
    data = json.dumps(body).encode()
    return status, [(b"content-type", b"application/json"), *(headers or [])], data


async def read_body(sim: Simulator, scope: Scope, receive: Receive) -> bytes:
    too_large = ApiError(413, "SVC", 6, "Request body too large")
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                if int(value) > sim.max_body_size:
                    raise too_large
            except ValueError:
                raise WireError("Content-Length") from None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > sim.max_body_size:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def read_json(sim: Simulator, scope: Scope, receive: Receive) -> Any:
    """The JSON body (None when empty); 400 SVC/1 when it is not JSON."""
    raw = await read_body(sim, scope, receive)
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        raise WireError("body", detail="not JSON") from None


async def read_object(sim: Simulator, scope: Scope, receive: Receive) -> dict[str, Any]:
    """The JSON object body; 400 SVC/1 for anything else (a list, a string, nothing)."""
    body = await read_json(sim, scope, receive)
    if not isinstance(body, dict):
        raise WireError("body", detail="not a JSON object")
    return body


def check_auth(sim: Simulator, scope: Scope) -> None:
    """Basic auth with the API key and secret; 401 SEC/1 otherwise."""
    denied = ApiError(401, "SEC", 1, "Authentication failed")
    header = next(
        (v for k, v in scope.get("headers", []) if k.lower() == b"authorization"), None
    )
    if header is None or not header[:6].lower() == b"basic ":
        raise denied
    try:
        user, _, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
    except (binascii.Error, ValueError):
        raise denied from None
    ok_user = hmac.compare_digest(user, sim.api_key.encode())
    ok_password = hmac.compare_digest(password, sim.api_secret.encode())
    if not (ok_user and ok_password):
        raise denied
