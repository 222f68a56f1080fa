"""The command line and the server under it.

In-process: parsing, --help/--version, settings precedence, error rendering, and the server
helpers (``serving`` is ready when it yields). As real subprocesses: ``callflow serve`` answers
a notification on the URL it prints and stops cleanly on SIGTERM/SIGINT, fails clearly on an
unreachable platform, configures numbers on a platform, and ``callflow dial`` places a call.
Readiness is read from the process's output, never waited for with sleep.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import callflow
from callflow import App, ConfigurationError, PlatformError, Settings
from callflow._server import Listener, serving
from callflow._types import Message, Receive, Scope, Send
from callflow.cli._main import build_parser, main, settings_from_args

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0  # generous bound for CI machines; nothing here waits for it when things work

FLOWS = """\
    from callflow import App, Call

    app = App()

    @app.flow(number="+34900000001")
    async def reception(call: Call) -> None:
        await call.say("Welcome to Acme.")
        choice = await call.gather(prompt="Press 1 for sales, 2 for support.", num_digits=1)
        await call.say(f"You chose {choice.digits}.")

    @app.flow
    async def reminder(call: Call) -> None:
        await call.say("Your appointment is tomorrow at ten.")
"""

CALLED_NUMBER = {
    "timestamp": "2024-05-01T10:00:00Z",
    "eventName": "CalledNumber",
    "callId": "call-1",
    "legId": "leg-1",
    "callerId": "tel:+34600000001",
    "destination": "tel:+34900000001",
}


@pytest.fixture
def flows_file(tmp_path: Path) -> Path:
    path = tmp_path / "flows.py"
    path.write_text(textwrap.dedent(FLOWS))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
    env.update(extra)
    return env


# -- parsing, help, version ------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"callflow {callflow.__version__}"


def test_help_lists_the_commands_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: callflow ")
    for text in ("serve", "dial", "callflow serve examples/ivr.py", "CALLFLOW_"):
        assert text in out


@pytest.mark.parametrize("command", ["serve", "dial"])
def test_command_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: callflow {command} ")
    for option in ("--host", "--port", "--public-url", "--platform-url", "--api-key",
                   "--api-secret", "--secret", "--response-budget", "--log-level", "examples:"):
        assert option in out
    assert "--no-configure" in out
    assert ("--flow" in out) == (command == "dial")
    assert ("--numbers" in out) == (command == "dial")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_python_dash_m_callflow() -> None:
    done = subprocess.run([sys.executable, "-m", "callflow", "--version"], capture_output=True,
                          text=True, timeout=TIMEOUT, env=clean_env())
    assert done.returncode == 0
    assert done.stdout.strip() == f"callflow {callflow.__version__}"


@pytest.mark.parametrize("bad", ["-1", "65536", "eighty"])
def test_bad_port_is_a_usage_error(bad: str, flows_file: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", str(flows_file), "--port", bad]) == 2
    assert "--port" in capsys.readouterr().err


def test_commands_are_added_by_one_function_each() -> None:
    from callflow.cli import _main as _cli

    def add_hello(subparsers: Any) -> None:
        parser = subparsers.add_parser("hello", help="say hello")
        parser.set_defaults(run=lambda args: 0)

    _cli.__dict__["add_hello_for_test"] = add_hello
    commands = dict(_cli.COMMANDS)
    try:
        _cli.COMMANDS["hello"] = "callflow.cli._main:add_hello_for_test"
        assert "hello" in build_parser().format_help()
        assert main(["hello"]) == 0
    finally:
        _cli.COMMANDS.clear()
        _cli.COMMANDS.update(commands)
        del _cli.__dict__["add_hello_for_test"]


# -- errors: one line, exit status 2, no traceback -------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callflow", *args], capture_output=True,
                          text=True, timeout=TIMEOUT, env=env or clean_env())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "missing.py"], "callflow: error: no such file: missing.py"),
        (["serve", "{flows}", "--public-url", "ftp://example.com"],
         "callflow: error: the public URL 'ftp://example.com' is not an http:// or https:// URL"),
        (["dial", "{flows}", "600 000 001"],
         "callflow: error: NUMBER '600 000 001' is not an E.164 number like +34600000001"),
        (["dial", "{flows}", "+34600000001", "--flow", "nope"],
         "callflow: error: no flow named 'nope' (known: reception, reminder)"),
    ],
)
def test_errors_are_one_line_with_status_2(args: list[str], message: str,
                                           flows_file: Path) -> None:
    done = run_cli(*[a.replace("{flows}", str(flows_file)) for a in args])
    assert done.returncode == 2
    assert done.stderr.strip() == message
    assert done.stdout == ""


def test_a_broken_flows_file_is_one_line_with_status_2(tmp_path: Path) -> None:
    path = tmp_path / "flows.py"
    path.write_text("import callflow\nimport no_such_module_anywhere\n")
    done = run_cli("serve", str(path))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"callflow: error: cannot import {path}, line 2: ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere'"
    )


def test_a_port_in_use_is_one_line_with_status_2(flows_file: Path) -> None:
    with Listener.bind("127.0.0.1", 0) as taken:
        done = run_cli("serve", str(flows_file), "--port", str(taken.port), "--no-configure")
    assert done.returncode == 2
    assert done.stderr.startswith(f"callflow: error: cannot listen on 127.0.0.1:{taken.port}: ")
    assert "Traceback" not in done.stderr


# -- settings: defaults < CALLFLOW_* < App(...) < command line -------------------------------------


def parse(*args: str) -> Any:
    return build_parser().parse_args(["serve", "flows.py", *args])


def test_settings_come_from_the_environment_and_the_command_line_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLFLOW_PLATFORM_URL", "http://env-platform:8080/")
    monkeypatch.setenv("CALLFLOW_API_KEY", "env-key")
    monkeypatch.setenv("CALLFLOW_API_SECRET", "env-secret")
    monkeypatch.setenv("CALLFLOW_RESPONSE_BUDGET", "1.5")
    args = parse("--api-key", "cli-key", "--response-budget", "0.5", "--secret", "s3")
    settings = settings_from_args(App(), args, "http://127.0.0.1:4321")
    assert settings.platform_url == "http://env-platform:8080"
    assert settings.api_key == "cli-key"
    assert settings.api_secret == "env-secret"
    assert settings.response_budget == 0.5
    assert settings.secret == "s3"


def test_the_public_url_defaults_to_where_the_app_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLFLOW_PUBLIC_URL", raising=False)
    settings = settings_from_args(App(), parse(), "http://127.0.0.1:4321")
    assert settings.public_url == "http://127.0.0.1:4321"
    assert settings.secret  # random when not given


def test_a_chosen_public_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLFLOW_PUBLIC_URL", "https://env.example.net/")
    listening = "http://127.0.0.1:4321"
    assert settings_from_args(App(), parse(), listening).public_url == "https://env.example.net"
    cli = parse("--public-url", "https://cli.example.net")
    assert settings_from_args(App(), cli, listening).public_url == "https://cli.example.net"


def test_settings_given_to_the_app_in_the_flows_file_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLFLOW_APOLOGY", "from the environment")
    app = App(apology="from the flows file", public_url="https://code.example.net")
    settings = settings_from_args(app, parse(), "http://127.0.0.1:4321")
    assert settings.apology == "from the flows file"
    assert settings.public_url == "https://code.example.net"


def test_a_bad_environment_variable_is_a_clear_error(flows_file: Path) -> None:
    done = run_cli("serve", str(flows_file), "--port", "0", "--no-configure",
                   env=clean_env(CALLFLOW_RESPONSE_BUDGET="soon"))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "callflow: error: CALLFLOW_RESPONSE_BUDGET='soon' is not a valid float"
    )


# -- the server ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_serving_yields_a_url_that_answers_at_once() -> None:
    app = App()
    app.flow(number="+34900000001")(_welcome)
    listener = Listener.bind("127.0.0.1", 0)
    app.configure(Settings(public_url=listener.url, secret="s3"))
    async with serving(app, listener) as url:
        assert url == listener.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert url.rsplit(":", 1)[1] != "0"
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{url}/callflow/s3/health")
            assert health.json() == {"status": "ok", "calls": 0}
            response = await client.post(app.callback_url, json=CALLED_NUMBER)
        assert response.status_code == 200
        assert [next(iter(c)) for c in response.json()["commands"]] == [
            "notifications", "speak", "hangup"
        ]
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"{url}/callflow/health")


async def _welcome(call: callflow.Call) -> None:
    await call.say("Welcome.")


@pytest.mark.anyio
async def test_serving_serves_an_app_without_lifespan_support() -> None:
    async def hello(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan here")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})

    async with serving(hello, Listener.bind("127.0.0.1", 0)) as url, httpx.AsyncClient() as c:
        assert (await c.get(url)).text == "hello"


@pytest.mark.anyio
async def test_serving_raises_when_the_app_fails_to_start() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        assert message["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(ConfigurationError, match="the app failed to start: no database"):
        async with serving(broken, Listener.bind("127.0.0.1", 0)):
            pytest.fail("the block must not run")


@pytest.mark.anyio
async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    app = App()
    app.flow(_welcome)
    listener = Listener.bind("127.0.0.1", 0)
    app.configure(Settings(public_url=listener.url))
    with pytest.raises(PlatformError, match=r"^refused$"):
        async with serving(app, listener):
            raise PlatformError("refused")


def test_listening_on_a_port_in_use_is_a_configuration_error() -> None:
    with Listener.bind("127.0.0.1", 0) as taken, pytest.raises(
        ConfigurationError, match=f"cannot listen on 127.0.0.1:{taken.port}: .*choose another"
    ):
        Listener.bind("127.0.0.1", taken.port)


SERVE_FOREVER = """\
import sys
from callflow._server import serve_forever

async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        print("lifespan shutdown", flush=True)
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})

async def ready(url):
    print("listening on", url, flush=True)

serve_forever(hello, port=0, backend=sys.argv[1], on_ready=ready)
print("returned", flush=True)
"""


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_serve_forever_until_sigterm(backend: str, tmp_path: Path,
                                     processes: list[Process]) -> None:
    script = tmp_path / "serve.py"
    script.write_text(SERVE_FOREVER)
    process = Process(backend, command=(sys.executable, str(script)))
    processes.append(process)
    url = process.wait_for(r"^listening on (\S+)$").group(1)
    assert httpx.get(url, timeout=TIMEOUT).text == "hello"
    process.popen.send_signal(signal.SIGTERM)
    assert process.finish() == 0, process.output()
    assert process.out[-2:] == ["lifespan shutdown\n", "returned\n"]


# -- callflow serve, as a real process -------------------------------------------------------------


def own_store(args: tuple[str, ...]) -> tuple[str, ...]:
    """``callflow serve`` keeps calls under the working directory by default: give each
    process a store of its own, so that no run meets another's calls."""
    if args[:1] == ("serve",) and "--store" not in args:
        return (*args, "--store", f"sqlite:///{tempfile.mkdtemp(prefix='callflow-')}/calls.db")
    return args


class Process:
    """A subprocess (by default ``python -m callflow``) whose output lines are read as they
    come, so tests wait for what it prints, with a timeout."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 command: tuple[str, ...] = (sys.executable, "-m", "callflow")) -> None:
        self.popen = subprocess.Popen(
            [*command, *own_store(args)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env or clean_env(), cwd=REPO,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.popen.stdout, self.out, True)),
            threading.Thread(target=self._read, args=(self.popen.stderr, self.err, False)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str], announce: bool) -> None:
        for line in stream:
            into.append(line)
            if announce:
                self._lines.put(line)
        if announce:
            self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        """Read stdout until a line matches ``pattern``; fail on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s"
                                     f"\n{self.output()}") from None
            if line is None:
                raise AssertionError(f"exited without printing {pattern!r}\n{self.output()}")
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout: float = TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    def output(self) -> str:
        return f"stdout:\n{''.join(self.out)}stderr:\n{''.join(self.err)}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.finish()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def start(processes: list[Process], *args: str, env: dict[str, str] | None = None) -> Process:
    process = Process(*args, env=env)
    processes.append(process)
    return process


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_a_notification_and_stops_cleanly(
    backend: str, stop: signal.Signals, flows_file: Path, processes: list[Process]
) -> None:
    server = start(processes, "serve", str(flows_file), "--no-configure", "--port", "0",
                   "--backend", backend)
    url = server.wait_for(r" on (http://127\.0\.0\.1:\d+)$").group(1)
    callback = server.wait_for(r"^callback URL: (\S+)$").group(1)
    assert callback.startswith(f"{url}/callflow/")
    server.wait_for(r"^ready")

    response = httpx.post(callback, json=CALLED_NUMBER, timeout=TIMEOUT)
    assert response.status_code == 200
    commands = response.json()["commands"]
    assert commands[0] == {"notifications": "true"}
    assert commands[1] == {"speak": {"text": "Welcome to Acme.", "voice": "female", "repeat": 1}}
    assert commands[2]["getDigits"]["speak"]["text"] == "Press 1 for sales, 2 for support."
    assert commands[2]["getDigits"]["actionUrl"].startswith(callback)

    started = time.monotonic()
    server.popen.send_signal(stop)
    assert server.finish() == 0, server.output()
    assert time.monotonic() - started < 10
    err = "".join(server.err)
    assert re.search(r"^\d\d:\d\d:\d\d callflow call-1 ← CalledNumber$", err, re.M), err
    assert re.search(r"^\d\d:\d\d:\d\d callflow call-1 → 4 commands: notifications, speak, "
                     r"getDigits, redirect$", err, re.M), err
    assert f"{stop.name}: shutting down" in err
    assert "Traceback" not in err
    assert server.out[-1] == "stopped\n"


@pytest.mark.e2e
def test_serve_the_ivr_example(processes: list[Process]) -> None:
    """The issue's "done when": `callflow serve examples/ivr.py` answers a CalledNumber."""
    server = start(processes, "serve", "examples/ivr.py", "--no-configure", "--port", "0")
    callback = server.wait_for(r"^callback URL: (\S+)$").group(1)
    server.wait_for(r"^ready")
    response = httpx.post(callback, json=CALLED_NUMBER, timeout=TIMEOUT)
    assert response.status_code == 200
    step = f"{callback}?call=call-1&step=1"
    assert response.json() == {"commands": [
        {"notifications": "true"},
        {"speak": {"text": "Welcome to Acme.", "voice": "female", "repeat": 1}},
        {"getDigits": {
            "actionUrl": step, "timeout": 5, "finishOnKey": "#", "numberOfDigits": 1,
            "validDigits": "0123456789*#", "retries": 1,
            "speak": {"text": "For sales, press 1. For support, press 2. For our opening "
                              "hours, press 3.", "voice": "female", "repeat": 1},
        }},
        {"redirect": {"actionUrl": step}},
    ]}
    server.popen.send_signal(signal.SIGTERM)
    assert server.finish() == 0, server.output()


def closed_port() -> Iterator[int]:
    # Bound but not listening: connecting to it is refused at once, and nobody else can take it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def refused_url() -> Iterator[str]:
    for port in closed_port():
        yield f"http://127.0.0.1:{port}"


@pytest.mark.e2e
def test_serve_with_an_unreachable_platform_fails_clearly(
    flows_file: Path, refused_url: str, processes: list[Process]
) -> None:
    server = start(processes, "serve", str(flows_file), "--port", "0",
                   "--platform-url", refused_url)
    assert server.finish() == 2, server.output()
    err = "".join(server.err)
    assert "Traceback" not in err
    (line,) = [line for line in server.err if line.startswith("callflow: error:")]
    assert f"could not reach the platform at {refused_url}" in line
    assert "'callflow simulator'" in line
    assert "--no-configure" in line
    assert "ready" not in "".join(server.out)


# -- against a stand-in platform -------------------------------------------------------------------


class StandInPlatform:
    """Just enough of the platform's REST API for serve and dial, recording what it gets."""

    def __init__(self, outcome: str = "Answered") -> None:
        self.outcome = outcome
        self.requests: list[tuple[str, str, Any, str]] = []
        self.answers: list[Any] = []
        self.send_calls, self.calls = anyio.create_memory_object_stream[dict[str, Any]](10)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload: Any = json.loads(body) if body else None
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        self.requests.append((scope["method"], scope["path"], payload, auth))
        status, answer = 200, b""
        if scope["path"] == "/comms/v1/calls":
            status, answer = 201, b'{"callId": "out-1"}'
            await self.send_calls.send(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    async def run_calls(self) -> None:
        """Answer (or not) each call placed, and hang up the answered ones."""
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            async for call in self.calls:
                base = {"timestamp": "2024-05-01T10:00:00Z", "callId": "out-1",
                        "legId": "leg-1", "callerId": call["callerId"],
                        "destination": call["destination"]}
                answer = await client.post(call["callbackUrl"],
                                           json={**base, "eventName": self.outcome})
                self.answers.append(answer.json())
                if self.outcome == "Answered":
                    # The flow hangs up: the platform reports it, to an app that may be gone.
                    with suppress(httpx.HTTPError):
                        await client.post(call["callbackUrl"], json={
                            **base, "eventName": "HangUp", "direction": "fromApplication"})


@asynccontextmanager
async def stand_in_platform(outcome: str = "Answered") -> AsyncIterator[tuple[str,
                                                                             StandInPlatform]]:
    platform = StandInPlatform(outcome)
    async with serving(platform, Listener.bind("127.0.0.1", 0)) as url, \
            anyio.create_task_group() as tg:
        tg.start_soon(platform.run_calls)
        yield url, platform
        tg.cancel_scope.cancel()


@pytest.mark.e2e
@pytest.mark.anyio
async def test_serve_configures_the_numbers_on_the_platform(
    flows_file: Path, processes: list[Process]
) -> None:
    async with stand_in_platform() as (platform_url, platform):
        server = start(processes, "serve", str(flows_file), "--port", "0", "--platform-url",
                       platform_url, "--api-key", "k", "--api-secret", "s")
        callback = (await anyio.to_thread.run_sync(
            server.wait_for, r"^callback URL: (\S+)$")).group(1)
        await anyio.to_thread.run_sync(
            server.wait_for, r"^configured on the platform: \+34900000001")
        server.popen.send_signal(signal.SIGTERM)
        assert await anyio.to_thread.run_sync(server.finish) == 0, server.output()
    ((method, path, body, auth),) = platform.requests
    assert (method, path) == ("POST", "/comms/v1/me/numbers/tel:+34900000001")
    assert body["voiceCallbackUrl"] == callback
    assert body["voiceFallbackUrl"] == callback.removesuffix("/events") + "/fallback"
    assert auth == "Basic " + __import__("base64").b64encode(b"k:s").decode()


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.parametrize(("outcome", "code", "said"), [
    ("Answered", 0, "answered: call out-1; flow reminder is running"),
    ("Busy", 1, "busy: call out-1 to +34600000001 was not answered"),
])
async def test_dial_places_a_call_and_exits_with_its_outcome(
    outcome: str, code: int, said: str, flows_file: Path
) -> None:
    async with stand_in_platform(outcome) as (platform_url, platform):
        with anyio.fail_after(TIMEOUT):
            done = await anyio.run_process(
                [sys.executable, "-m", "callflow", "dial", str(flows_file), "+34600000001",
                 "--flow", "reminder", "--port", "0", "--platform-url", platform_url],
                check=False, env=clean_env(),
            )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == code, out + err
    assert "calling +34600000001 from +34900000001 with flow reminder" in out
    assert said in out
    assert ("call out-1 ended: answered" in out) == (outcome == "Answered")
    if outcome == "Answered":
        (answer,) = platform.answers
        assert answer["commands"][1:] == [
            {"speak": {"text": "Your appointment is tomorrow at ten.", "voice": "female",
                       "repeat": 1}},
            {"hangup": {"reason": "rejected"}},
        ]
    # The call is placed; an answered one's duration is then asked for.
    ((_, path, body, _),) = [r for r in platform.requests if r[0] == "POST"]
    assert path == "/comms/v1/calls"
    gets = [r[1] for r in platform.requests if r[0] == "GET"]
    assert gets == (["/comms/v1/calls/out-1"] if outcome == "Answered" else [])
    assert (body["destination"], body["callerId"]) == ("tel:+34600000001", "tel:+34900000001")
    assert "Traceback" not in err


@pytest.mark.e2e
def test_dial_with_an_unreachable_platform_fails_clearly(
    flows_file: Path, refused_url: str
) -> None:
    done = run_cli("dial", str(flows_file), "+34600000001", "--port", "0",
                   "--platform-url", refused_url)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("callflow: error: cannot place the call: could not reach the platform")
    assert refused_url in line
    assert "'callflow simulator'" in line


# -- one interface -----------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "port", "level"), [
    (["serve", "f.py"], 8000, "info"),
    (["dial", "f.py", "+34600000001"], 0, "warning"),  # beside a serve on 8000
    (["simulator"], 8080, "info"),
    (["call", "f.py"], None, "warning"),
    (["dev", "f.py"], None, "warning"),
])
def test_ports_and_log_levels_follow_one_policy(args: list[str], port: int | None,
                                                level: str) -> None:
    parsed = build_parser().parse_args(args)
    assert getattr(parsed, "port", None) == port
    assert parsed.log_level == level
    if args[0] != "dev":
        assert build_parser().parse_args([*args, "--log-level", "debug"]).log_level == "debug"
    if args[0] in ("serve", "dial", "simulator"):
        assert build_parser().parse_args([*args, "-v"]).log_level == "info"
