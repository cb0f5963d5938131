"""The import graph keeps the project's design: data flows service -> workers -> pixelscene.

Read with `ast` only (nothing is imported), so it is fast and sees lazy imports inside
functions too: an import that runs later still makes a cycle or a wrong-way dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pixelscene", "service", "workers")
# What the API imports to enqueue and read jobs; the rest of workers/ runs them.
JOBSTORE = "workers.jobstore"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


MODULES = source_files()


def imports_of(name: str) -> set[str]:
    """The modules `name` imports anywhere in its body (`from a import b` is a.b if that is a
    module of ours, else a); relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in MODULES else base)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def top(name: str) -> str:
    return name.partition(".")[0]


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def find_cycle(package: str) -> list[str] | None:
    """One import cycle among the modules of `package`, as a path that returns to its start."""
    nodes = [m for m in MODULES if top(m) == package]
    edges = {m: sorted(d for d in GRAPH[m] if d in MODULES and top(d) == package) for m in nodes}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in edges[m]:
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in nodes:
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def wrong_way(sources: str, targets: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{m} imports {d}"
        for m in MODULES
        if top(m) == sources
        for d in GRAPH[m]
        if top(d) in targets
    )


def test_the_graph_sees_the_packages():
    assert {"pixelscene.cli", "service.app", "workers.jobs"} <= set(GRAPH)
    assert "pixelscene.errors" in GRAPH["workers.jobs"]


def test_the_library_imports_neither_the_service_nor_the_workers():
    assert wrong_way("pixelscene", ("service", "workers")) == []


def test_the_workers_never_import_the_service():
    assert wrong_way("workers", ("service",)) == []


@pytest.mark.parametrize("package", ["pixelscene", "service", "workers"])
def test_no_import_cycles(package):
    cycle = find_cycle(package)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_api_reaches_the_workers_only_through_the_jobstore():
    """The app and its blueprints import `workers.jobstore` and nothing else of workers/; the
    jobstore imports nothing else of workers/ either. (`service.commands` start processes:
    `up` runs Redis and the workers, so it may use their process plumbing.)"""
    api = [m for m in MODULES if top(m) == "service" and not within(m, "service.commands")]
    leaks = [
        f"{m} imports {d}"
        for m in api
        for d in GRAPH[m]
        if top(d) == "workers" and not within(d, JOBSTORE)
    ]
    leaks += [
        f"{m} imports {d}"
        for m in MODULES
        if within(m, JOBSTORE)
        for d in GRAPH[m]
        if top(d) == "workers" and not within(d, JOBSTORE)
    ]
    assert leaks == []
    assert any(within(d, JOBSTORE) for m in api for d in GRAPH[m])


def test_the_cli_names_neither_the_service_nor_the_workers():
    """Their commands reach `pixelscene` through the `pixelscene.commands` entry points."""
    source = MODULES["pixelscene.cli"].read_text()
    assert re.findall(r"\b(?:service|workers)\.\w", source) == []
