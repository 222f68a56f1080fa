"""`SimulatorClient`: drive a simulator running in another process, over its HTTP API."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from ._errors import ApiError, SimulatorError
from ._transcript import Transcript
from ._wire import tel

__all__ = ("SimulatorClient",)

_POLL = 30.0  # seconds each long poll may be held by the simulator


class SimulatorClient:
    """Place calls into a running simulator and read their transcripts, over HTTP.

        async with SimulatorClient("http://127.0.0.1:8080") as sim:
            call_id = await sim.place_call("+34600000001", "+34900000001", script=["press:1"])
            print(await sim.wait_ended(call_id))

    Uses the simulator's `/simulator` extension and its BlueVia REST API, with the same
    credentials. Errors the simulator reports raise `ApiError`; an unreachable simulator
    raises `SimulatorError`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "key",
        api_secret: str = "secret",
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = (api_key, api_secret)
        self._client = http_client
        self._owns_client = http_client is None

    async def __aenter__(self) -> SimulatorClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=_POLL + 10.0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._client is None:
            raise SimulatorError("use the client inside 'async with'")
        url = self.base_url + path
        try:
            response = await self._client.request(method, url, auth=self._auth, **kwargs)
        except httpx.HTTPError as exc:
            raise SimulatorError(
                f"cannot reach the simulator at {self.base_url}: {type(exc).__name__}: {exc}"
                ". Is 'callflow simulator' running there?"
            ) from exc
        if response.status_code >= 300:
            raise _api_error(response)
        return response

    async def configure_number(
        self, number: str, callback_url: str, fallback_url: str | None = None
    ) -> None:
        """Point an account number at an app (`POST /comms/v1/me/numbers/{number}`)."""
        body = {"notificationFormat": "JSON", "voiceCallbackUrl": callback_url}
        if fallback_url:
            body["voiceFallbackUrl"] = fallback_url
        await self._request("POST", f"/comms/v1/me/numbers/{quote(tel(number), safe=':')}",
                            json=body)

    async def number(self, number: str) -> dict[str, Any] | None:
        """An account number's configuration (`GET /comms/v1/me/numbers/{number}`), or None
        if it is not one."""
        try:
            response = await self._request(
                "GET", f"/comms/v1/me/numbers/{quote(tel(number), safe=':')}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, Any] = response.json()
        return data

    async def set_phone(self, number: str, phone: str | Mapping[str, Any]) -> None:
        """How `number` behaves when dialled: `"busy"`, or a table of the config file's form,
        e.g. `{"behaviour": "answer", "after": 2, "press": "1"}`."""
        body: Any = phone if isinstance(phone, str) else dict(phone)
        await self._request("POST", f"/simulator/phones/{quote(number, safe='')}", json=body)

    async def place_call(self, from_: str, to: str, *, script: Iterable[str] = ()) -> str:
        """A simulated phone `from_` calls the account number `to`; returns the call id."""
        body = {"from": from_, "to": to, "script": list(script)}
        response = await self._request("POST", "/simulator/calls", json=body)
        return str(response.json()["callId"])

    async def transcript(self, call_id: str, *, wait: float | None = None) -> Transcript:
        """The call's transcript; with `wait`, first wait up to `wait` s for it to end."""
        params = {} if wait is None else {"wait": "true", "timeout": f"{wait:g}"}
        response = await self._request(
            "GET", f"/simulator/calls/{quote(call_id, safe='')}/transcript", params=params
        )
        try:
            return Transcript.from_dict(response.json())
        except ValueError as exc:
            raise SimulatorError(f"the simulator sent a bad transcript: {exc}") from exc

    async def wait_ended(self, call_id: str, *, timeout: float | None = None) -> Transcript:
        """Wait until the call is over (its last notifications delivered); its transcript.

        Raises `TimeoutError` after `timeout` real seconds, if given."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            transcript = await self.transcript(call_id, wait=max(0.0, left))
            if transcript.ended:
                return transcript
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"call {call_id} did not end within {timeout:g}s")
            await anyio.lowlevel.checkpoint()


def _api_error(response: httpx.Response) -> ApiError:
    try:
        data = response.json()
        ((_, error),) = data.items()
        variables = tuple(str(v) for v in error.get("variables", []))
        return ApiError(response.status_code, str(error["exceptionCategory"]),
                        int(error["exceptionId"]), str(error["text"]), variables)
    except Exception:
        return ApiError(response.status_code, "SVC", 0,
                        f"HTTP {response.status_code}: {response.text[:200]}")
