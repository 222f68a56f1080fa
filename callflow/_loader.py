"""Load a flows file given by path: its ``App``, or an app built from module-level flows.

A flows file either creates an app::

    app = callflow.App()

    @app.flow(number="+34900000001")
    async def reception(call): ...

or registers flows with the module-level decorator, and the loader builds the app::

    @callflow.flow(number="+34900000001")
    async def reception(call): ...
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType, TracebackType

from ._app import App, _module_flows
from ._exceptions import ConfigurationError

__all__ = ("load_app",)

_counter = itertools.count(1)


def load_app(path: str | Path) -> App:
    """Import the flows file at ``path`` and return its app.

    The file's directory goes on ``sys.path`` so it can import its siblings. Raises
    ``ConfigurationError`` with a message fit for a terminal when the file is missing,
    does not import, defines several apps, or defines no flows at all.
    """
    file = Path(path)
    shown = str(path)
    if not file.exists():
        raise ConfigurationError(f"no such file: {shown}")
    if file.is_dir():
        raise ConfigurationError(f"{shown} is a directory; give the path of a .py flows file")
    if file.suffix != ".py":
        raise ConfigurationError(f"{shown} is not a Python file: a flows file ends in .py")
    file = file.resolve()

    before = len(_module_flows)
    module = _import(file, shown)
    new_flows = _module_flows[before:]

    apps: dict[int, tuple[str, App]] = {}
    for attr, value in vars(module).items():
        if isinstance(value, App) and id(value) not in apps:
            apps[id(value)] = (attr, value)
    if len(apps) > 1:
        names = ", ".join(name for name, _ in apps.values())
        raise ConfigurationError(
            f"{shown} defines several apps ({names}); keep one App per flows file"
        )
    if apps:
        ((name, app),) = apps.values()
        if new_flows:
            # Serving the App would silently drop these flows: say so instead.
            loose = ", ".join(getattr(f, "__name__", "?") for f, _, _ in new_flows)
            raise ConfigurationError(
                f"{shown} defines the app {name!r} and also registers flows with the "
                f"module-level @callflow.flow ({loose}); register them with @{name}.flow"
            )
        if not app.flows:
            raise ConfigurationError(
                f"the app {name!r} in {shown} has no flows; register one with @{name}.flow"
            )
        return app

    if not new_flows:
        raise ConfigurationError(
            f"{shown} defines no flows: create an app (app = callflow.App()) and decorate "
            "flows with @app.flow, or decorate them with @callflow.flow"
        )
    app = App()
    for func, numbers, flow_name in new_flows:
        try:
            app.add_flow(func, numbers=numbers, name=flow_name)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{shown}: {exc}") from exc
    return app


def _import(file: Path, shown: str) -> ModuleType:
    # A name of our own, so a flows file called e.g. "json.py" shadows nothing, and loading
    # two files with the same name (or one file twice) gives two modules.
    stem = re.sub(r"\W", "_", file.stem)
    name = f"callflow_flows_{stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"cannot import {shown}")
    directory = str(file.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as an import does: dataclasses and pickling look it up.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ConfigurationError(_syntax_message(exc, file, shown)) from exc
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        where = _line_in(exc.__traceback__, file)
        at = f", line {where}" if where else ""
        what = str(exc) if isinstance(exc, ConfigurationError) else _describe(exc)
        raise ConfigurationError(f"cannot import {shown}{at}: {what}") from exc
    return module


def _syntax_message(exc: SyntaxError, file: Path, shown: str) -> str:
    where = shown if exc.filename in (None, str(file)) else str(exc.filename)
    line = f", line {exc.lineno}" if exc.lineno else ""
    text = (exc.text or "").strip()
    code = f": {text}" if text else ""
    return f"syntax error in {where}{line}: {exc.msg}{code}"


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _line_in(tb: TracebackType | None, file: Path) -> int | None:
    """The last line of ``file`` the traceback passes through (where the flows file failed)."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == str(file):
            line = lineno
    return line
