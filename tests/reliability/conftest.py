"""The leak scenario's processes start as soon as the run knows it will check them.

``test_leaks.py`` runs 10,000 calls per backend under tracemalloc, which makes each call
about five times as costly: some 20 s of CPU per backend. Started when collection ends, at a
lower priority, the two runs use the CPU the rest of the suite leaves idle (it often waits
on sockets, timers and subprocesses); their tests are moved to the end of the run, and
find the results ready or nearly. A run that selects no leak test starts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_leak_run.py"
BACKENDS = ("asyncio", "trio")
RUNS = pytest.StashKey[dict[str, subprocess.Popen[str]]]()


def _start(root: Path) -> dict[str, subprocess.Popen[str]]:
    # The callflow under test (the rootdir's), not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return {
        backend: subprocess.Popen(
            [sys.executable, str(SCRIPT), backend], cwd=root, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for backend in BACKENDS
    }


def _is_leak_test(item: pytest.Item) -> bool:
    return Path(item.path).resolve() == HERE / "test_leaks.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Checked last, so the background runs have as long as possible to finish.
    items.sort(key=_is_leak_test)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(_is_leak_test(item) for item in session.items):
        session.config.stash[RUNS] = _start(session.config.rootpath)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for process in session.config.stash.get(RUNS, {}).values():
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def leak_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The two leak runs: started at collection, or now if the hook did not."""
    runs = request.config.stash.get(RUNS, None)
    if runs is None:
        runs = request.config.stash[RUNS] = _start(request.config.rootpath)
    yield runs
