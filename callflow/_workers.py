"""``callflow serve --workers N``: N processes accepting on one listening socket.

The parent binds the socket and loads the flows file, then forks the workers,
which inherit both; the kernel spreads connections among them.  Calls are not
tied to a worker: each one's state is in the store, so any worker answers any
notification.  The parent passes SIGINT/SIGTERM on to the workers, and starts a
new worker in place of one that dies unexpectedly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType

__all__ = ("serve_workers",)

logger = logging.getLogger("callflow")


def serve_workers(count: int, serve: Callable[[int], int]) -> int:
    """Run ``serve(index)`` in ``count`` forked processes until a signal; the exit status."""
    children: dict[int, int] = {}
    stopping = False

    def start(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, signal.SIG_DFL)
            status = 1
            try:
                status = serve(index)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        children[pid] = index

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {signum: signal.signal(signum, forward)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(count):
            start(index)
        failed = 0
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = children.pop(pid, -1)
            code = os.waitstatus_to_exitcode(status)
            if stopping or index < 0:
                failed = failed or (code not in (0, -signal.SIGINT, -signal.SIGTERM))
                continue
            logger.warning("worker %d (pid %d) stopped with status %d; starting another",
                           index, pid, code)
            start(index)
        return 1 if failed else 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
