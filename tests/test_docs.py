"""The code in the docs runs: every Python block in docs/ and the README, and every flow in them.

How a page marks its blocks (see docs/index.md's note for writers):

- ```` ```python title="hello.py" ```` is a file of the page's program: it is written under that
  name beside the page's other files, so later blocks import it (``from hello import hello``).
  Blocks with the same title add to one file (test-flows.md builds ``test_flows.py`` up).
- A block with no title is a program of its own.
- ``<!-- fragment -->`` on the line before the fence: an excerpt (a signature, a line out of a
  flow) that is shown, not run. The tutorial has none.

Each page's files run under pytest in a fresh directory with ``examples/`` importable: the test
functions in them run under asyncio and trio, a block with top-level code runs it, and every
flow they define (on an ``App`` or as an ``async def f(call: Call)``) runs through ``FakeCall``
with a silent caller and must end without an error.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import callflow
import callflow.platforms
import callflow.simulator
import callflow.stores
import callflow.testing

pytest_plugins = ("pytester",)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^(?P<indent>\s*)```python\b(?P<info>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
FRAGMENT = "<!-- fragment -->"


@dataclass
class Block:
    line: int
    source: str
    title: str | None
    fragment: bool


@dataclass
class Program:
    files: dict[str, str] = field(default_factory=dict)


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        end = index + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        before = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
        title = TITLE.search(match["info"])
        source = textwrap.dedent("\n".join(lines[index + 1:end]))
        found.append(Block(index + 1, source + "\n",
                           title["title"] if title else None, before == FRAGMENT))
        index = end + 1
    return found


def program(page: Path) -> Program:
    result = Program()
    for block in blocks(page):
        if block.fragment:
            continue
        name = block.title or f"doc_line_{block.line}.py"
        result.files[name] = result.files.get(name, "") + block.source
    return result


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


RUNNABLE = [page for page in PAGES if program(page).files]

# Runs every flow the page's files define through FakeCall, with a silent caller.
FLOWS_RUN = '''
import importlib, inspect, pathlib
import pytest
import callflow
from callflow.testing import FakeCall

def _flows():
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        if path.stem in ("conftest", "test_zz_flows_run") or path.stem.startswith("test_"):
            continue
        module = importlib.import_module(path.stem)
        for attr, value in vars(module).items():
            if isinstance(value, callflow.App):
                for spec in value.flows.values():
                    yield f"{path.stem}.{attr}.{spec.name}", spec.func
            elif (inspect.iscoroutinefunction(value) and value.__module__ == module.__name__
                  and list(inspect.signature(value).parameters) == ["call"]):
                yield f"{path.stem}.{attr}", value

FLOWS = dict(_flows())

@pytest.mark.anyio
@pytest.mark.parametrize("flow", sorted(FLOWS))
async def test_flow_runs_with_a_silent_caller(flow):
    fake = await FakeCall(FLOWS[flow], data={"name": "Ana"}).run()
    # A flow may fail on purpose (test-flows.md's ``broken``); one that no longer fits the
    # API fails with one of these.
    if isinstance(fake.error, (NameError, AttributeError, TypeError, ImportError)):
        raise fake.error
'''

CONFTEST = '''
import pytest

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
'''


def test_the_docs_have_code_to_run() -> None:
    assert {name(page) for page in RUNNABLE} >= {"docs/tutorial/first-call.md",
                                                  "docs/how-to/test-flows.md", "README.md"}


def test_the_tutorial_has_no_fragment() -> None:
    tutorial = blocks(DOCS / "tutorial" / "first-call.md")
    assert tutorial and not [block.line for block in tutorial if block.fragment]


@pytest.mark.parametrize("page", RUNNABLE, ids=name)
def test_the_code_of_a_page_runs(page: Path, pytester: pytest.Pytester,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = program(page).files
    for file, source in files.items():
        (pytester.path / file).write_text(source, encoding="utf-8")
    conftest = pytester.path / "conftest.py"
    conftest.write_text(files.get("conftest.py", CONFTEST), encoding="utf-8")
    (pytester.path / "test_zz_flows_run.py").write_text(FLOWS_RUN, encoding="utf-8")
    pytester.makeini("[pytest]\npython_files = *.py\n")
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    monkeypatch.syspath_prepend(str(pytester.path))
    # In this process (a pytest per page would cost seconds of start-up each); pytester
    # restores sys.modules after, so pages' modules of one name (flows, hello) do not mix.
    # Only the plugins a reader's project has: anyio's and callflow's (autoloading every
    # installed plugin costs seconds a page).
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-p", "anyio",
                                          "-p", "callflow.testing._plugin",
                                          "--import-mode=prepend")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, f"{name(page)}:\n" + "\n".join(result.outlines[-80:])
    assert outcomes.get("passed", 0) > 0


def test_the_python_api_page_lists_every_public_name() -> None:
    page = (DOCS / "reference" / "python-api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: (\S+)$", page, re.MULTILINE))
    public = {f"callflow.{n}" for n in callflow.__all__ if n != "__version__"}
    for module in (callflow.testing, callflow.platforms, callflow.simulator, callflow.stores):
        public |= {f"{module.__name__}.{n}" for n in module.__all__
                   if not (module is callflow.stores and n in callflow.__all__)}
    assert sorted(public - documented) == []


def test_a_page_left_out_of_the_nav_joins_its_folders_section(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("_docs_hooks", DOCS / "_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    for page in ("index.md", "how-to/deploy.md", "how-to/new-task.md", "reference/api.md",
                 "faq.md"):
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / page).write_text("# A page\n", encoding="utf-8")
    nav = [{"Home": "index.md"}, {"How-to guides": ["how-to/deploy.md"]},
           {"Reference": ["reference/api.md"]}]
    config = hooks.on_config({"nav": nav, "docs_dir": str(tmp_path)})
    assert config["nav"] == [{"Home": "index.md"},
                             {"How-to guides": ["how-to/deploy.md", "how-to/new-task.md"]},
                             {"Reference": ["reference/api.md"]}, "faq.md"]
