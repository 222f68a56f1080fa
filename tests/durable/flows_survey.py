"""A flows file for the durable process tests: three questions, a step after each.

``SURVEY_STEPS`` names a file each step appends ``<what> <pid>`` to, so a test sees which
process ran which step and how often. ``SURVEY_SLOW`` makes the step after the first
question take that many seconds (a worker can be paused in it). ``SURVEY_CRASH`` kills the
process (SIGKILL, once: a file beside the steps file remembers it) at one point of the step
after the first question: ``inside-step``, or ``after-record`` (the step's outcome is in
the store, the notification not answered yet).
"""

import os
import signal
from pathlib import Path
from typing import Any

import anyio

import callflow
from callflow import Call
from callflow._durable import DurableCalls

app = callflow.App()
CRASH = os.environ.get("SURVEY_CRASH", "")


def crash(point: str) -> None:
    if point != CRASH:
        return
    done = Path(os.environ["SURVEY_STEPS"] + ".crashed")
    if done.exists():
        return
    done.write_text(point)
    os.kill(os.getpid(), signal.SIGKILL)


if CRASH == "after-record":
    commit = DurableCalls._commit

    async def commit_then_crash(self: DurableCalls, session: Any) -> None:
        recorded = any(e.get("t") == "step" and e.get("name") == "note"
                       for e in (session.journal.new if session.journal else []))
        await commit(self, session)
        if recorded and len(_ran()) >= 2:
            crash("after-record")

    DurableCalls._commit = commit_then_crash  # type: ignore[method-assign]


def _ran() -> list[str]:
    path = Path(os.environ["SURVEY_STEPS"])
    return path.read_text().splitlines() if path.exists() else []


def write(line: str) -> None:
    with Path(os.environ["SURVEY_STEPS"]).open("a") as steps:
        steps.write(f"{line} {os.getpid()}\n")


async def note(what: str) -> str:
    write(what)
    if what == "after one":
        crash("inside-step")  # its side effect done, its outcome not recorded
    if what == "after one" and os.environ.get("SURVEY_SLOW"):
        await anyio.sleep(float(os.environ["SURVEY_SLOW"]))  # slow I/O, say
        write("slow step done")
    return what


@app.flow(number="+34900000077")
async def survey(call: Call) -> None:
    answers = []
    await call.step(note, "start")
    for question in ("one", "two", "three"):
        result = await call.gather(prompt=f"Question {question}.", num_digits=1, timeout=30)
        answers.append(result.digits or "-")
        await call.step(note, f"after {question}")
    await call.say(f"You answered {' '.join(answers)}. Goodbye.")
