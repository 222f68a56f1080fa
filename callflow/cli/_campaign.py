"""``callflow dial FILE --numbers numbers.csv``: a campaign, one call per row of a CSV file.

Calls are placed ``--concurrency`` at a time and at most ``--rate`` a second; a busy or
unanswered number is tried again ``--retries`` times, ``--retry-delay`` seconds apart. The
progress goes to stderr (a bar on a terminal, a line every few seconds otherwise), one JSON
line per number to the results file. The first Ctrl+C stops placing calls and lets the live
ones finish; the numbers never called are written as ``not_called``, for a re-run.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .._exceptions import ConfigurationError, PlatformError
from ._dial import RETRIABLE, CallOutcome, Dialer, prepare, refusal, tell, watching_flow_errors
from ._main import EXIT_INTERRUPTED, EXIT_NOT_ANSWERED, EXIT_OK, _e164, _platform_hint, run_async

if TYPE_CHECKING:
    from .._app import App, FlowSpec

__all__ = ("read_numbers", "run_campaign")

NUMBER_COLUMNS = ("number", "phone", "to", "destination")
"""Header names taken for the column of numbers, in this order (else the first column)."""
PROGRESS_EVERY = 5.0
"""Seconds between two progress lines when stderr is not a terminal."""
REDRAW_EVERY = 0.2
"""Seconds between two redraws of the progress bar on a terminal."""

# -- the numbers file ------------------------------------------------------------------------


def read_numbers(path: str | Path) -> list[tuple[str, dict[str, str]]]:
    """The rows of a campaign's CSV file: (E.164 number, the other columns by name).

    The first row names the columns; the numbers are in the column named ``number``,
    ``phone``, ``to`` or ``destination`` (any case), else in the first. A file whose first
    row is a number has no header: one number per row, nothing else.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigurationError(f"cannot read the numbers file {path}: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
    if not rows:
        raise ConfigurationError(f"the numbers file {path} is empty")
    first = rows[0][0].strip()
    if first.startswith("+") or first.startswith("tel:"):
        header = ["number"]
        if any(len(row) > 1 for row in rows):
            raise ConfigurationError(
                f"{path}: give a header row (e.g. number,name) to name the columns that go "
                "into call.data")
        body, start = rows, 1
    else:
        header = [name.strip() for name in rows[0]]
        body, start = rows[1:], 2
    lowered = [name.lower() for name in header]
    column = next((lowered.index(n) for n in NUMBER_COLUMNS if n in lowered), 0)
    numbers: list[tuple[str, dict[str, str]]] = []
    problems: list[str] = []
    for line, row in enumerate(body, start):
        if len(row) > len(header):
            problems.append(f"line {line}: {len(row)} columns, the header names {len(header)}")
            continue
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        text = cells.pop(header[column], "")
        try:
            number = _e164(text, "the number")
        except ConfigurationError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        numbers.append((number, {k: v for k, v in cells.items() if k}))
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigurationError(f"{path}: " + "; ".join(problems[:5]) + more)
    if not numbers:
        raise ConfigurationError(f"the numbers file {path} has no numbers")
    return numbers


# -- campaigns ---------------------------------------------------------------------------------


class _Progress:
    """Counts a campaign's calls and shows them on stderr: a bar redrawn in place on a
    terminal, a plain line every few seconds otherwise (a log file, CI)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.done = self.answered = self.unanswered = self.failed = self.live = 0
        self.started = time.monotonic()
        self._last = 0.0

    def finished(self, outcome: CallOutcome) -> None:
        self.done += 1
        if outcome.outcome == "answered" and outcome.error is None:
            self.answered += 1
        elif outcome.outcome in RETRIABLE:
            self.unanswered += 1
        else:
            self.failed += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 and left else ("-" if left else "0:00")
        return (f"{self.done}/{self.total} done, {self.answered} answered, "
                f"{self.unanswered} busy or no answer, {self.failed} failed, "
                f"{self.live} live, {rate:.1f} calls/s, ETA {eta}")

    def show(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if not final and now - self._last < REDRAW_EVERY:
                return
            width = 24
            filled = width * self.done // max(self.total, 1)
            bar = "█" * filled + "░" * (width - filled)
            self.stream.write(f"\r\x1b[2K{bar} {self.line()}" + ("\n" if final else ""))
        else:
            if not final and now - self._last < PROGRESS_EVERY:
                return
            self.stream.write(f"progress: {self.line()}\n")
        self._last = now
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def run_campaign(app: App, spec: FlowSpec, caller: str, listener: Any,
                  rows: list[tuple[str, dict[str, str]]], base: dict[str, Any],
                  args: argparse.Namespace, out: TextIO) -> int:
    import signal

    import anyio

    from .._server import SHUTDOWN_SIGNALS, serving

    results_path = Path(args.results) if args.results else Path(args.numbers).with_suffix(
        ".results.jsonl")
    try:
        results = results_path.open("w", encoding="utf-8")
    except OSError as exc:
        listener.close()
        raise ConfigurationError(f"cannot write the results to {results_path}: "
                                 f"{exc.strerror or exc}") from None
    outcomes = [CallOutcome(number) for number, _ in rows]
    progress = _Progress(len(rows), sys.stderr)
    stopping = anyio.Event()
    fatal: list[PlatformError] = []
    written: set[int] = set()

    def write(index: int) -> None:
        if index not in written:
            written.add(index)
            results.write(outcomes[index].to_json() + "\n")
            results.flush()

    async def campaign(url: str) -> None:
        await prepare(app, url, caller, args, out)
        rate = f", at most {args.rate:g} a second" if args.rate else ""
        tell(out, f"calling {len(rows)} numbers from {caller} with flow {spec.name}, "
                   f"{args.concurrency} at a time{rate}; results to {results_path}")
        tell(out, "press Ctrl+C to stop placing calls (the live ones finish)")
        slots = anyio.Semaphore(args.concurrency)
        pace = _Pacer(args.rate)
        with watching_flow_errors() as errors:
            dialer = Dialer(app, spec, caller, errors, args.machine_detection)

            async def one(index: int) -> None:
                outcome = outcomes[index]
                try:
                    while True:
                        data = {**base, **rows[index][1]}
                        progress.live += 1
                        try:
                            await dialer.attempt(outcome, data)
                        finally:
                            progress.live -= 1
                            slots.release()
                        if (outcome.outcome not in RETRIABLE
                                or outcome.attempts > args.retries or stopping.is_set()):
                            break
                        with anyio.move_on_after(args.retry_delay):
                            await stopping.wait()
                        if stopping.is_set():
                            break
                        await slots.acquire()
                        if stopping.is_set():
                            slots.release()
                            break
                        await pace.wait()
                except PlatformError as exc:
                    fatal.append(exc)
                    stopping.set()
                except Exception as exc:  # this number's problem: the campaign goes on
                    outcome.outcome, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
                progress.finished(outcome)
                write(index)

            async with anyio.create_task_group() as tg:
                tg.start_soon(_redraw, progress)
                async with anyio.create_task_group() as calls:
                    for index in range(len(rows)):
                        await slots.acquire()
                        if stopping.is_set():
                            slots.release()
                            break
                        await pace.wait()
                        if stopping.is_set():
                            slots.release()
                            break
                        calls.start_soon(one, index)
                tg.cancel_scope.cancel()
        progress.show(final=True)

    async def run() -> bool:
        interrupted = False
        with anyio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
            async with serving(app, listener) as url, anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal interrupted
                    async for signum in signals:
                        interrupted = True
                        if stopping.is_set() or signum == signal.SIGTERM:
                            tg.cancel_scope.cancel()  # a second Ctrl+C: stop now
                            return
                        stopping.set()
                        sys.stderr.write("\nstopping: no new calls; waiting for the live ones "
                                         "(Ctrl+C again to stop at once)\n")

                tg.start_soon(watch)
                try:
                    await campaign(url)
                finally:
                    tg.cancel_scope.cancel()
        return interrupted

    try:
        interrupted = run_async(run, args.backend)
    finally:
        # Every number gets its line: those never placed as not_called (a re-run can pick
        # them up), those cut short by a second Ctrl+C as they stood.
        for index, outcome in enumerate(outcomes):
            if index not in written and outcome.attempts:
                outcome.error = outcome.error or "stopped before the call ended"
            write(index)
        results.close()
    if fatal:
        first = fatal[0]
        raise PlatformError(_platform_hint(app, f"cannot place the calls: {refusal(first)}",
                                           first.status, configuring=False),
                            status=first.status, body=first.body)
    return _summary(outcomes, results_path, args, out, interrupted)


def _summary(outcomes: list[CallOutcome], path: Path, args: argparse.Namespace, out: TextIO,
             interrupted: bool) -> int:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    raised = sum(1 for o in outcomes if o.outcome == "answered" and o.error)
    order = ("answered", "busy", "no_answer", "failed", "not_called")
    parts = [f"{counts[name]} {name.replace('_', ' ')}" for name in order if name in counts]
    if raised:
        parts.append(f"{raised} flow{'s' if raised != 1 else ''} raised")
    tell(out, f"{'interrupted' if interrupted else 'done'}: {len(outcomes)} numbers: "
               f"{', '.join(parts)}; results in {path}")
    if args.json:
        print(json.dumps({"numbers": len(outcomes), "outcomes": counts, "flow_errors": raised,
                          "interrupted": interrupted, "results": str(path)}), flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(o.ok for o in outcomes) else EXIT_NOT_ANSWERED


async def _redraw(progress: _Progress) -> None:
    import anyio

    while True:
        progress.show()
        await anyio.sleep(REDRAW_EVERY)


class _Pacer:
    """At most ``rate`` starts a second (None: no limit), evenly spaced."""

    def __init__(self, rate: float | None) -> None:
        self.gap = 1.0 / rate if rate else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.gap:
            return
        import anyio

        now = anyio.current_time()
        at = max(now, self.next)
        self.next = at + self.gap
        if at > now:
            await anyio.sleep(at - now)

