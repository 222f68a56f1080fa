"""One App per platform, and notifications each platform would sign, for the hostile-input tests.

Signatures are made the way each provider makes them: Twilio's with its own SDK's
``RequestValidator``, Telnyx's with a real Ed25519 key.  The platforms' REST APIs answer
every request ``200 {}`` (these tests look at what the app accepts, not at what it sends).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from twilio.request_validator import RequestValidator

from callflow import App, Settings

from ._support import CALLER, NUMBER, PUBLIC, SECRET, note

PLATFORMS = ("bluevia", "twilio", "telnyx")
EVENTS = f"{PUBLIC}/callflow/{SECRET}/events"

TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token"
VALIDATOR = RequestValidator(TWILIO_TOKEN)
TELNYX_KEY = Ed25519PrivateKey.generate()
TELNYX_PUBLIC = base64.b64encode(
    TELNYX_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


def platform_app(platform: str, **settings: Any) -> App:
    """An App on ``platform``, with the shared public URL and secret."""
    return App(settings=Settings(
        platform=platform, public_url=PUBLIC, platform_url="https://platform.example",
        secret=SECRET, twilio_account_sid=TWILIO_SID, twilio_auth_token=TWILIO_TOKEN,
        telnyx_api_key="KEY", telnyx_public_key=TELNYX_PUBLIC, telnyx_connection_id="conn",
        **settings), transport=httpx.MockTransport(_ok))


def telnyx_headers(body: bytes, stamp: str | None = None) -> dict[str, str]:
    stamp = str(int(time.time())) if stamp is None else stamp
    signature = TELNYX_KEY.sign(f"{stamp}|".encode() + body)
    return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": stamp, "content-type": "application/json"}


def incoming(platform: str, call_id: str, *, url: str = EVENTS
             ) -> tuple[str, bytes, dict[str, str]]:
    """A new inbound call's first notification, signed: ``(url, body, headers)``."""
    if platform == "bluevia":
        return url, json.dumps(note("CalledNumber", call_id)).encode(), {
            "content-type": "application/json"}
    if platform == "twilio":
        params = {"CallSid": call_id, "AccountSid": TWILIO_SID, "From": CALLER, "To": NUMBER,
                  "CallStatus": "ringing", "Direction": "inbound"}
        return url, urlencode(params).encode(), twilio_headers(url, params)
    body = json.dumps({"data": {
        "record_type": "event", "event_type": "call.initiated", "id": f"ev-{call_id}",
        "occurred_at": "2024-01-01T00:00:00Z",
        "payload": {"call_control_id": call_id, "call_leg_id": f"leg-{call_id}",
                    "from": CALLER, "to": NUMBER, "direction": "incoming"}}}).encode()
    return url, body, telnyx_headers(body)


def twilio_headers(url: str, params: Any) -> dict[str, str]:
    return {"x-twilio-signature": VALIDATOR.compute_signature(url, params),
            "content-type": "application/x-www-form-urlencoded"}
