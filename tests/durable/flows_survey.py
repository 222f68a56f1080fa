"""A flows file for the durable process tests: three questions, a step after each.

``SURVEY_STEPS`` names a file each step appends ``<what> <pid>`` to, so a test sees which
process ran which step and how often. ``SURVEY_SLOW`` makes the step after the first
question take that many seconds (a worker can be paused in it).
"""

import os
import time
from pathlib import Path

import callflow
from callflow import Call

app = callflow.App()


def note(what: str) -> str:
    with Path(os.environ["SURVEY_STEPS"]).open("a") as steps:
        steps.write(f"{what} {os.getpid()}\n")
    if what == "after one" and os.environ.get("SURVEY_SLOW"):
        time.sleep(float(os.environ["SURVEY_SLOW"]))
        with Path(os.environ["SURVEY_STEPS"]).open("a") as steps:
            steps.write(f"slow step done {os.getpid()}\n")
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
