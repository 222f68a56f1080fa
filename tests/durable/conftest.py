"""Stores for the durable tests: a SQLite file per test, and a PostgreSQL schema per test.

PostgreSQL is the one the machine runs (``CALLFLOW_TEST_POSTGRESQL``, by default
``postgresql://postgres@127.0.0.1:5432/test``). Where it does not answer, its tests are
skipped with the reason, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

POSTGRESQL = os.environ.get("CALLFLOW_TEST_POSTGRESQL",
                            "postgresql://postgres@127.0.0.1:5432/test")


def _postgresql_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    try:
        with psycopg.connect(POSTGRESQL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRESQL} does not answer: {exc}"


@pytest.fixture(scope="session")
def postgresql_ready() -> None:
    problem = _postgresql_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem} (under CI=true PostgreSQL must be there)")
    pytest.skip(problem)


@pytest.fixture
def postgresql_url(postgresql_ready: None) -> Iterator[str]:
    """A PostgreSQL store URL whose tables live in a schema of this test's own."""
    import psycopg

    schema = f"callflow_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRESQL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRESQL else "?"
    yield f"{POSTGRESQL}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRESQL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def haproxy_ready() -> None:
    """Debian's haproxy, for the tests that put two workers behind a load balancer."""
    if shutil.which("haproxy"):
        return
    problem = "haproxy is not installed (apt-get install haproxy)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}; .ci/run installs it")
    pytest.skip(problem)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each durable store in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "postgresql_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """Kill whatever ``callflow serve`` a test started and did not stop (a failed test)."""
    from ._process import STARTED

    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(10)
