"""Keep the public namespaces honest: what ``__all__`` promises, the package delivers."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import tomllib
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import pytest

import callflow
import callflow.platforms
import callflow.testing
from callflow import CallflowError

ROOT = Path(callflow.__file__).parent
PYPROJECT = ROOT.parent / "pyproject.toml"

# Every private module of the core, sorted into what users write flows with (whose
# public names must be exported from ``callflow``) and the machinery behind it.
USER_MODULES = {
    "_app", "_call", "_commands", "_events", "_exceptions", "_hotkeys", "_machine", "_records",
    "_recording", "_results", "_settings", "_ssml",
}
INTERNAL_MODULES = {
    "_asgi",      # ASGI plumbing of the app
    "_awaited",   # verbs that notice a missing await; flows that are not coroutines
    "_checks",    # what a verb checks about its arguments (E.164 numbers, voices, ranges)
    "_durable",   # durable calls: leases, replay, the cache, the sweep
    "_expiry",    # memory mode: ends the calls whose hang-up was lost
    "_journal",   # a call's history entries, and replaying a flow against them
    "_loader",    # loads a flows file for the command line
    "_logformat", # --log-format json: one JSON object per line, with call id and flow
    "_loopwatch", # warns when a flow blocks the event loop
    "_recognise", # the simulated speech recogniser (simulator and FakeCall)
    "_metrics",   # Prometheus metrics (--metrics), shared across --workers
    "_logsafe",   # escapes control characters in what callflow logs
    "_runner",    # executes a call's commands on an execute-mode platform (Telnyx)
    "_shutdown",  # memory mode: hangs up every live call when the app stops
    "_server",    # runs an app under hypercorn for the command line
    "_session",   # the session runtime
    "_spawner",   # cheap per-call tasks
    "_types",     # raw ASGI types
    "_waiter",    # cheap per-call wake-ups
    "_workers",   # callflow serve --workers: forked processes on one socket
}
# Names in a user module's ``__all__`` that stay out of the top-level namespace, and why.
NOT_EXPORTED = {
    "BlockingCommand": "a union the session runtime dispatches on; flows never build commands",
    "HangupBy": "the Literal behind Event.by; the values are documented on Event",
    "CallEndHook": "the type of App.on_call_end's argument; a plain callable",
    "CallLog": "the app's machinery that hands records to the hooks",
}
# Exceptions that are not CallflowErrors, and why.
NOT_CALLFLOW_ERRORS = {
    "callflow._asgi.BodyTooLarge": "caught inside the app and answered 413; never escapes",
    "callflow._session.Evicted": "a BaseException on purpose: a flow's 'except Exception' "
                                 "must not take a cache eviction for a failure",
    "callflow._asgi.BodyTimeout": "caught inside the app and answered 408; never escapes",
    "callflow._hotkeys.HotkeyPressed": "a BaseException on purpose: it unwinds a hotkeys "
                                       "block, and a flow's 'except Exception' must not stop it",
}


def names_bound_in(module: ModuleType) -> set[str]:
    """The public names an ``__init__.py`` imports or defines (ignoring ``__all__`` itself)."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    names: set[str] = set()
    nodes = list(tree.body)
    for node in tree.body:  # what `if TYPE_CHECKING:` imports, the module gives lazily
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            nodes += node.body
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") or n == "__version__"} - {
        "__all__", "TYPE_CHECKING"}


def defined_in(module: ModuleType) -> dict[str, object]:
    """The public classes and functions a module defines itself."""
    return {
        name: obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ == module.__name__
    }


NAMESPACES = [callflow, callflow.platforms, callflow.testing]


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_all_is_a_sorted_tuple_of_existing_names(namespace: ModuleType) -> None:
    exported = namespace.__all__
    assert isinstance(exported, tuple)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert list(exported) == sorted(exported)
    missing = [name for name in exported if not hasattr(namespace, name)]
    assert missing == []


@pytest.mark.parametrize("namespace", NAMESPACES, ids=lambda m: m.__name__)
def test_all_matches_what_the_namespace_imports(namespace: ModuleType) -> None:
    assert set(namespace.__all__) == names_bound_in(namespace)


def test_star_import_gives_exactly_all() -> None:
    scope: dict[str, object] = {}
    exec("from callflow import *", scope)
    assert set(scope) - {"__builtins__"} == set(callflow.__all__)


def test_every_core_module_is_classified() -> None:
    modules = {p.stem for p in ROOT.glob("_*.py")} - {"__init__", "__main__"}
    assert USER_MODULES.isdisjoint(INTERNAL_MODULES)
    assert modules == USER_MODULES | INTERNAL_MODULES, (
        "a new private module: add it to USER_MODULES (and export its public names) "
        "or to INTERNAL_MODULES"
    )


@pytest.mark.parametrize("name", sorted(USER_MODULES))
def test_user_modules_are_exported(name: str) -> None:
    module = importlib.import_module(f"callflow.{name}")
    own = set(module.__all__)
    # The module's own __all__ lists every public class and function it defines...
    assert set(defined_in(module)) <= own
    # ...and each of them reaches the top-level namespace as the same object.
    for public in sorted(own - set(NOT_EXPORTED)):
        assert public in callflow.__all__, f"callflow.{name}.{public} is not exported"
        assert getattr(callflow, public) is getattr(module, public)


@pytest.mark.parametrize(
    ("namespace", "private"),
    [
        (callflow.platforms, ["_base", "_bluevia", "_registry", "_twilio", "_telnyx"]),
        (callflow.testing, ["_fake"]),
    ],
    ids=["platforms", "testing"],
)
def test_subpackages_export_their_classes(namespace: ModuleType, private: list[str]) -> None:
    # BlueVia's own wire helpers and payload type: another platform has its own,
    # so they stay in the adapter's module rather than in ``callflow.platforms``.
    internal = {"tel", "Notification"}
    for name in private:
        module = importlib.import_module(f"{namespace.__name__}.{name}")
        for public, obj in defined_in(module).items():
            if public in internal:
                continue
            assert public in namespace.__all__, f"{module.__name__}.{public} is not exported"
            assert getattr(namespace, public) is obj


def test_version() -> None:
    with PYPROJECT.open("rb") as f:
        project = tomllib.load(f)["project"]
    assert callflow.__version__ == project["version"]


def test_py_typed_ships() -> None:
    assert files("callflow").joinpath("py.typed").is_file()
    with PYPROJECT.open("rb") as f:
        config = tomllib.load(f)
    wheel = config["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["callflow"]
    assert not any("py.typed" in pattern for pattern in wheel.get("exclude", []))
    assert "Typing :: Typed" in config["project"]["classifiers"]


# -- the exception tree -------------------------------------------------------------------------


def framework_modules() -> list[ModuleType]:
    """Every module of the framework (the simulator plays the platform and has its own tree)."""
    found = [callflow]
    for info in pkgutil.walk_packages(callflow.__path__, "callflow."):
        if info.name == "callflow.__main__" or info.name.startswith("callflow.simulator"):
            continue
        found.append(importlib.import_module(info.name))
    return found


def test_every_exception_is_a_callflow_error() -> None:
    exceptions = {
        f"{module.__name__}.{name}": obj
        for module in framework_modules()
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    }
    assert "callflow._exceptions.CallflowError" in exceptions
    strays = sorted(
        qualname for qualname, cls in exceptions.items()
        if not issubclass(cls, CallflowError) and qualname not in NOT_CALLFLOW_ERRORS
    )
    assert strays == []
    assert set(NOT_CALLFLOW_ERRORS) <= set(exceptions), "stale NOT_CALLFLOW_ERRORS entry"


def test_every_callflow_error_is_exported() -> None:
    from callflow import _exceptions

    errors = {n for n, o in defined_in(_exceptions).items() if issubclass(o, BaseException)}
    assert errors <= set(callflow.__all__)
    assert CallflowError.__bases__ == (Exception,)


def docstring_tree() -> dict[str, str | None]:
    """Each exception in ``_exceptions``' docstring tree, with its drawn parent."""
    from callflow import _exceptions

    doc = _exceptions.__doc__ or ""
    assert "The tree::" in doc
    block = doc.split("The tree::", 1)[1].strip("\n").split("\n\n", 1)[0]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in block.splitlines():
        stripped = line.lstrip(" │├└─")
        name = stripped.split()[0]
        depth = len(line) - len(stripped)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def test_the_drawn_tree_is_the_real_tree() -> None:
    from callflow import _exceptions

    drawn = docstring_tree()
    real = {
        name: (None if cls is CallflowError else cls.__bases__[0].__name__)
        for name, cls in defined_in(_exceptions).items()
        if issubclass(cls, BaseException)
    }
    assert drawn == real


def test_expected_outcomes_are_not_exceptions() -> None:
    from callflow import DialResult, GatherResult, OutboundCallResult, RecordResult

    for result in (DialResult, GatherResult, OutboundCallResult, RecordResult):
        assert not issubclass(result, BaseException)
        assert result.__name__.endswith("Result")
