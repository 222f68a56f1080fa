"""Start-up stays lazy: ``import callflow`` and ``callflow --help`` import only what they use.

Each check runs in a fresh interpreter and reads ``sys.modules``; the timing itself is
bench/startup.py's (a figure, not a test: the machine's load decides it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

HEAVY = ("callflow.simulator", "callflow.platforms", "callflow._app", "callflow.cli._call",
         "cryptography", "hypercorn", "httpx", "asyncio", "trio")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, cwd=REPO, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_import_callflow_imports_no_adapter_simulator_or_server() -> None:
    modules = modules_after("import callflow")
    assert "callflow" in modules
    assert heavy_in(modules) == []


def test_the_help_imports_no_command_module() -> None:
    modules = modules_after(
        "import contextlib, io, sys\n"
        "from callflow.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    assert main(['--help']) == 0\n"
        "assert 'place an outbound call' in out.getvalue()\n"
    )
    assert heavy_in(modules) == []
    assert not [m for m in modules if m.startswith("callflow.cli.") and m != "callflow.cli._main"]


@pytest.mark.parametrize("name", ["App", "Call", "flow", "FlowSpec", "OutboundCallResult"])
def test_the_lazy_names_are_there_on_first_use(name: str) -> None:
    import callflow

    module = "callflow" + callflow._LAZY[name]
    assert module not in modules_after("import callflow")
    assert module in modules_after(f"import callflow\nassert callflow.{name}")
    assert module in modules_after(f"from callflow import {name}")


def test_a_misspelt_name_is_an_attribute_error() -> None:
    import callflow

    with pytest.raises(AttributeError, match="'Ap'"):
        callflow.Ap  # type: ignore[attr-defined]  # noqa: B018


def test_the_summaries_are_each_command_s_help() -> None:
    import argparse

    from callflow.cli import _main

    parser = _main.build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    assert helps == _main.SUMMARIES
