"""``callflow serve`` worker processes for the durable tests, and haproxy in front of them.

Readiness is read from each process's output (its "ready" line), never slept for; the
blocking reads run in a thread, so the simulator in the test's own event loop goes on.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

REPO = Path(__file__).resolve().parents[2]
FLOWS = Path(__file__).resolve().parent / "flows_survey.py"
TIMEOUT = 30.0


STARTED: list[subprocess.Popen[str]] = []
"""Every worker process started, so that none outlives its test (see conftest.py)."""


class Worker:
    """One ``python -m callflow serve`` whose output lines are read as they come."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLFLOW_")}
        environ.update(env or {})
        self.args = args
        self.popen = subprocess.Popen([sys.executable, "-m", "callflow", *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=environ, cwd=REPO)
        STARTED.append(self.popen)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def _wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output}"
                                     ) from None
            if line is None:
                raise AssertionError(f"exited without {pattern!r}:\n{self.output}")
            if match := re.search(pattern, line):
                return match

    async def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match[str]:
        return await anyio.to_thread.run_sync(self._wait_for, pattern, timeout)

    async def started(self) -> int:
        """Wait until it serves; its port."""
        port = int((await self.wait_for(r"serving .* on http://127\.0\.0\.1:(\d+)"))[1])
        await self.wait_for(r"^ready")
        return port

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    async def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return await anyio.to_thread.run_sync(self.popen.wait, 15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return await anyio.to_thread.run_sync(self.popen.wait, 5)

    async def killed(self) -> None:
        self.popen.kill()  # SIGKILL: no shutdown of any kind
        await anyio.to_thread.run_sync(self.popen.wait, 5)


def serve_args(store: str, sim_url: str, settings: dict[str, Any], *, port: int = 0,
               public_url: str | None = None) -> list[str]:
    args = ["serve", str(FLOWS), "--port", str(port), "--store", store,
            "--platform-url", sim_url]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    if public_url:
        args += ["--public-url", public_url]
    return args


def free_port() -> int:
    """A port free right now (for haproxy, whose configuration needs a number)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HAProxy:
    """haproxy (Debian's) balancing each request round robin over the workers."""

    def __init__(self, directory: Path, port: int, ports: list[int], *,
                 server_timeout: float = 9.0) -> None:
        self.port = port
        self.ports = ports
        # Health checks take a stopped or dead worker out of the rotation within a
        # fraction of a second, as a load balancer in front of callflow should.
        servers = "\n".join(f"  server w{i} 127.0.0.1:{p} check inter 200ms fall 1 rise 1"
                            for i, p in enumerate(ports))
        config = directory / "haproxy.cfg"
        config.write_text(f"""\
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server {int(server_timeout * 1000)}ms
  timeout check 300ms
  retries 3
  option redispatch
  option http-server-close
frontend calls
  bind 127.0.0.1:{self.port}
  default_backend workers
backend workers
  balance roundrobin
  option httpchk GET /callflow/health
{servers}
""")
        self.popen = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def started(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:  # haproxy says nothing when it is ready: its port answering tells
            if self.popen.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.popen.stdout.read()!r}"
                                     if self.popen.stdout else "haproxy exited")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("haproxy did not start listening") from None
                await anyio.sleep(0.05)

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(5)
