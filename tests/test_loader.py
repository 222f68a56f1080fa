"""load_app: a flows file by path → its App, or an App built from module-level flows."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from callflow import App, ConfigurationError
from callflow._loader import load_app


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_app puts each flows file's directory on sys.path; keep the tmp ones out of it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(directory: Path, name: str, *sources: str) -> Path:
    path = directory / name
    path.write_text("".join(textwrap.dedent(source) for source in sources))
    return path


APP_FILE = """\
    from callflow import App, Call

    app = App()

    @app.flow(number="+34900000001")
    async def reception(call: Call) -> None:
        await call.say("Welcome.")

    @app.flow
    async def reminder(call: Call) -> None:
        await call.say("Reminder.")
"""


def test_returns_the_module_level_app(tmp_path: Path) -> None:
    app = load_app(str(write(tmp_path, "flows.py", APP_FILE)))
    assert isinstance(app, App)
    assert list(app.flows) == ["reception", "reminder"]
    assert dict(app.numbers) == {"+34900000001": "reception"}
    assert app.get_flow().name == "reminder"


def test_accepts_a_path_object(tmp_path: Path) -> None:
    assert list(load_app(write(tmp_path, "flows.py", APP_FILE)).flows) == [
        "reception", "reminder"
    ]


def test_one_app_under_two_names_is_one_app(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", APP_FILE, "application = app\n")
    assert list(load_app(str(path)).flows) == ["reception", "reminder"]


def test_builds_an_app_from_module_level_flows(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", """\
        import callflow

        @callflow.flow(number="+34900000001")
        async def reception(call: callflow.Call) -> None:
            await call.say("Welcome.")

        @callflow.flow(numbers=("+34900000002", "tel:+34900000003"), name="sales")
        async def sales_line(call: callflow.Call) -> None:
            await call.say("Sales.")

        @callflow.flow
        async def fallback(call: callflow.Call) -> None:
            await call.hangup()
    """)
    app = load_app(str(path))
    assert list(app.flows) == ["reception", "sales", "fallback"]
    assert dict(app.numbers) == {
        "+34900000001": "reception", "+34900000002": "sales", "+34900000003": "sales",
    }
    assert app.flow_for_number("+34911111111") is app.flows["fallback"]


def test_module_level_flows_of_one_file_do_not_leak_into_the_next(tmp_path: Path) -> None:
    first = write(tmp_path, "first.py", """\
        import callflow

        @callflow.flow
        async def first(call: callflow.Call) -> None: ...
    """)
    second = write(tmp_path, "second.py", """\
        import callflow

        @callflow.flow
        async def second(call: callflow.Call) -> None: ...
    """)
    assert list(load_app(str(first)).flows) == ["first"]
    assert list(load_app(str(second)).flows) == ["second"]


def test_loading_a_file_twice_gives_two_apps(tmp_path: Path) -> None:
    path = str(write(tmp_path, "flows.py", APP_FILE))
    assert load_app(path) is not load_app(path)


def test_a_flows_file_imports_its_siblings(tmp_path: Path) -> None:
    write(tmp_path, "greetings_for_loader_test.py", 'WELCOME = "Welcome to Acme."\n')
    path = write(tmp_path, "flows.py", """\
        from dataclasses import dataclass

        import callflow
        from greetings_for_loader_test import WELCOME

        @dataclass
        class Customer:  # dataclasses look their module up in sys.modules
            name: str

        @callflow.flow
        async def reception(call: callflow.Call) -> None:
            await call.say(WELCOME)
    """)
    try:
        assert list(load_app(str(path)).flows) == ["reception"]
    finally:
        sys.modules.pop("greetings_for_loader_test", None)


def test_a_file_named_like_a_stdlib_module_shadows_nothing(tmp_path: Path) -> None:
    import json

    path = write(tmp_path, "json.py", APP_FILE)
    assert list(load_app(str(path)).flows) == ["reception", "reminder"]
    assert sys.modules["json"] is json


def test_several_apps_are_an_error_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", APP_FILE, """\
        other = App()

        @other.flow
        async def other_flow(call: Call) -> None: ...
    """)
    with pytest.raises(ConfigurationError, match=r"several apps \(app, other\)"):
        load_app(str(path))


def test_an_app_and_module_level_flows_are_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", APP_FILE, """\
        import callflow

        @callflow.flow
        async def stray(call: Call) -> None: ...
    """)
    with pytest.raises(ConfigurationError, match=r"module-level @callflow.flow \(stray\)"):
        load_app(str(path))


def test_an_app_without_flows_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", "import callflow\n\napp = callflow.App()\n")
    with pytest.raises(ConfigurationError, match=r"'app' .* has no flows"):
        load_app(str(path))


def test_no_flows_at_all_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", "GREETING = 'hello'\n")
    with pytest.raises(ConfigurationError, match="defines no flows") as info:
        load_app(str(path))
    assert "@app.flow" in str(info.value)
    assert "@callflow.flow" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(ConfigurationError, match="no such file") as info:
        load_app(str(missing))
    assert str(missing) in str(info.value)


def test_a_directory_is_not_a_flows_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is a directory"):
        load_app(str(tmp_path))


def test_not_a_python_file(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.txt", APP_FILE)
    with pytest.raises(ConfigurationError, match=r"not a Python file.*\.py"):
        load_app(str(path))


def test_syntax_error_names_the_line_and_the_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", """\
        import callflow

        async def reception(call:
    """)
    with pytest.raises(ConfigurationError) as info:
        load_app(str(path))
    message = str(info.value)
    assert message.startswith(f"syntax error in {path}, line 3: ")
    assert "was never closed" in message
    assert isinstance(info.value.__cause__, SyntaxError)


def test_import_error_names_the_line_and_the_original_message(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", """\
        import callflow
        import a_module_that_does_not_exist
    """)
    with pytest.raises(ConfigurationError) as info:
        load_app(str(path))
    assert str(info.value) == (
        f"cannot import {path}, line 2: ModuleNotFoundError: "
        "No module named 'a_module_that_does_not_exist'"
    )


def test_an_error_raised_while_registering_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", """\
        from callflow import App

        app = App()

        @app.flow(number="900 000 001")
        async def reception(call) -> None: ...
    """)
    with pytest.raises(ConfigurationError, match=r"line 5: flow 'reception': .* E\.164"):
        load_app(str(path))


def test_a_failed_import_leaves_no_module_behind(tmp_path: Path) -> None:
    path = write(tmp_path, "broken_flows.py", "raise RuntimeError('boom')\n")
    before = set(sys.modules)
    with pytest.raises(ConfigurationError, match="line 1: RuntimeError: boom"):
        load_app(str(path))
    assert not [name for name in set(sys.modules) - before if "broken_flows" in name]


def test_sys_exit_in_a_flows_file_is_an_error_not_an_exit(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", "import sys\nsys.exit(3)\n")
    with pytest.raises(ConfigurationError, match="line 2: SystemExit: 3"):
        load_app(str(path))


def test_the_main_block_does_not_run(tmp_path: Path) -> None:
    path = write(tmp_path, "flows.py", APP_FILE, """\
        if __name__ == "__main__":
            raise SystemExit("the main block ran")
    """)
    assert list(load_app(str(path)).flows) == ["reception", "reminder"]
