"""mkdocs hooks: what the docs need beyond plain mkdocs.

- A page in docs/ that the nav in mkdocs.yml leaves out joins its folder's section. Pages are
  added often; without this, a page missing from the nav is built but unlisted (and
  ``omitted_files: warn`` would fail the strict build). Its place in mkdocs.yml's nav wins.
- A file outside docs/ that a page shows (``bench/results/compare.png``, which the benchmarks
  write) is copied into the site at the same place relative to the repository, so the page
  reads the same on GitHub and on the site and the strict build still checks the link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

_LINK = re.compile(r"\]\((\.\./[^)#\s]+)")
_OUTSIDE = "_repo"


def _pages(entries: list[Any]) -> list[str]:
    found: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            found.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                found.extend(_pages(value) if isinstance(value, list) else [value])
    return found


def on_config(config: Any) -> Any:
    nav: list[Any] = config["nav"] or []
    listed = set(_pages(nav))
    docs = Path(config["docs_dir"])
    sections = {}
    for entry in nav:
        if isinstance(entry, dict):
            for value in entry.values():
                if isinstance(value, list):
                    for page in _pages(value):
                        sections.setdefault(Path(page).parent.as_posix(), value)
    for path in sorted(docs.rglob("*.md")):
        page = path.relative_to(docs).as_posix()
        if page in listed:
            continue
        folder = Path(page).parent.as_posix()
        if folder in sections:
            sections[folder].append(page)
        else:
            nav.append(page)
    config["nav"] = nav
    return config


def _outside(docs: Path, page: str, target: str) -> Path | None:
    """The repository file (not a page) a relative link from ``page`` reaches outside docs/."""
    path = (docs / page).parent.joinpath(target).resolve()
    root = docs.resolve().parent
    if path.is_relative_to(docs.resolve()) or not path.is_relative_to(root):
        return None
    return path if path.is_file() and path.suffix != ".md" else None


def on_files(files: Files, config: Any) -> Files:
    docs = Path(config["docs_dir"])
    root = docs.resolve().parent
    for page in [f for f in files if f.src_uri.endswith(".md")]:
        text = (docs / page.src_uri).read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            path = _outside(docs, page.src_uri, target)
            uri = f"{_OUTSIDE}/{path.relative_to(root).as_posix()}" if path else None
            if uri and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs = Path(config["docs_dir"])
    root = docs.resolve().parent
    depth = page.file.src_uri.count("/")

    def relink(match: re.Match[str]) -> str:
        path = _outside(docs, page.file.src_uri, match.group(1))
        if path is None:
            return match.group(0)
        return f"]({'../' * depth}{_OUTSIDE}/{path.relative_to(root).as_posix()}"

    return _LINK.sub(relink, markdown)
