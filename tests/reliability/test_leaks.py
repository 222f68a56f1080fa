"""Leaks: after 10,000 completed calls the App holds no session, and no more memory than it
held before them (tracemalloc's current size, within 10 %).

The scenario is ``_leak_run.py``, run in a process per backend (see there why); conftest.py
starts both early, in the background, and each test here checks its backend's result.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

TIMEOUT = 180


def test_ten_thousand_calls_leave_no_session_and_no_memory(
    anyio_backend: str, leak_runs: dict[str, subprocess.Popen[str]]
) -> None:
    run = leak_runs[anyio_backend]
    out, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    before, after = result["before"], result["after"]
    print(f"{anyio_backend}: {result['calls']} calls in {result['seconds']} s (traced); "
          f"{before / 1024:.0f} KiB before, {after / 1024:.0f} KiB after, "
          f"{(after - before) / result['calls']:+.2f} B per call")
    assert result["sessions"] == 0
    assert after <= before * 1.10, "\n".join(
        [f"traced memory grew from {before} to {after} bytes; largest growth:",
         *result["growth"]])
