"""The README and the manual under docs/ point at things that exist: files, headings, modules, make targets.

Pure text checks (standard library only): no network, no imports of the project's modules, well under a second.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
PYTHON_M = re.compile(r"\bpython[0-9.]*\s+-m\s+([A-Za-z_][A-Za-z0-9_.]*)")
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:[A-Za-z0-9_.-]+=\S*\s+)*)([A-Za-z0-9_.-]+)")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def split_code(text: str) -> tuple[list[str], list[str]]:
    """(prose lines outside fenced blocks, lines inside fenced blocks)."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    return prose, code


def code_snippets(text: str) -> list[str]:
    """Every piece of text shown as code: fenced blocks line by line, and inline `code spans`."""
    prose, code = split_code(text)
    return code + [m.group(2) for line in prose for m in CODE_SPAN.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link syntax reduced to its text, lowercased, every character but letters,
    digits, underscores, hyphens and spaces dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings (a repeated slug gets -1, -2, ...)."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for line in prose:
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Link targets of a markdown file, outside fenced code blocks."""
    prose, _ = split_code(path.read_text(encoding="utf-8"))
    return [m.group(1) for line in prose for m in LINK.finditer(line)]


def make_targets() -> set[str]:
    """Targets the Makefile defines: `name:` rules and the names listed in .PHONY."""
    targets = set()
    for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines():
        if line.startswith(".PHONY:"):
            targets.update(line.split(":", 1)[1].split())
            continue
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line)
        if m and not m.group(1).startswith("."):
            targets.add(m.group(1))
    return targets


def module_exists(name: str) -> bool:
    """A module of the repo (<path>.py, <path>/__init__.py, <path>/__main__.py), else an installed one. Only the
    top-level package's spec is looked up through the import system; submodules are found on its search path, so
    nothing is imported."""
    base = ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() or (base / "__main__.py").is_file():
        return True
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    for part in rest:
        if spec is None or spec.submodule_search_locations is None:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


def test_docs_pages_exist():
    """The manual is there: README.md points readers into docs/, which must hold the pages."""
    assert README.is_file()
    assert DOCS, "docs/ holds no markdown pages"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page: Path):
    """Every relative link a reader follows (files, folders, #anchors on the same or another page) lands on
    something that exists: a file or folder of the repo, and a heading of the target page when an anchor is
    given (GitHub's slug rule)."""
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http(s)://, mailto:, ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file or folder")
            continue
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target}: outside the repository")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor} in {rel(dest)}")
    assert not broken, f"{rel(page)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_python_modules_exist(page: Path):
    """Every `python -m <module>` a reader copies from the docs runs a module that exists: one of the repo's
    (flows.*, deployments.*, ...) or an installed tool."""
    text = page.read_text(encoding="utf-8")
    missing = sorted({m.group(1).rstrip(".") for m in PYTHON_M.finditer(text)} - {""})
    missing = [name for name in missing if not module_exists(name)]
    assert not missing, f"{rel(page)} names modules that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_make_targets_exist(page: Path):
    """Every `make <target>` shown as a command in the docs is a target of the Makefile, so it does not fail
    with "No rule to make target"."""
    defined = make_targets()
    named = {m.group(2) for snippet in code_snippets(page.read_text(encoding="utf-8")) for m in MAKE.finditer(snippet)}
    missing = sorted(named - defined)
    assert not missing, f"{rel(page)} names make targets the Makefile lacks: {missing}"


def test_readme_is_a_front_door():
    """The README stays short (at most 160 lines) and opens with the set-up commands: its first code block is the
    bash block with `make demo` and `make test` (the command CI runs)."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160, f"README.md has {len(text.splitlines())} lines (at most 160)"
    blocks = re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)
    assert blocks, "README.md has no code block"
    lang, body = blocks[0]
    assert lang.strip() == "bash", f"the first code block of README.md is {lang.strip() or 'untyped'}, not bash"
    assert re.search(r"^make demo\b", body, re.M) and re.search(r"^make test\b", body, re.M), body


def test_readme_links_every_docs_page():
    """Each page of the manual can be reached from the README."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if t.partition("#")[0]}
    unlinked = [rel(p) for p in DOCS if p.resolve() not in linked]
    assert not unlinked, f"README.md links none of: {unlinked}"


def test_documented_commands_run_outside_make_send_no_telemetry():
    """`python -m flows.weekly_retrain` in the activated environment, without the Makefile's variables: the
    project's own Prefect settings (pyproject.toml) switch the temporary server's telemetry off, whose failed
    sends were logged as ERROR lines with no internet."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_") and k != "DO_NOT_TRACK"}
    code = "from prefect.settings import get_current_settings as s; print(s().server.analytics_enabled)"
    p = subprocess.run([sys.executable, "-c", code], cwd=README.parent, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.stdout.strip() == "False", p.stdout + p.stderr
