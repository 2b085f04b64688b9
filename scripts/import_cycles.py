"""Import cycles between the project's own modules.

    python3 scripts/import_cycles.py [package ...]     (default: indexer searchsite reranker search)

Reads every module of the packages with `ast` (no import, no Django), takes every import
statement, those inside functions included (a function-level import hides a cycle from Python
but not from a reader), and builds the graph of imports between project modules. Prints each
cycle (a strongly connected component of more than one module, or a module importing itself)
and, per package, how many imports sit inside functions. Exit status 1 when there is a cycle.
"""
from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("common", "indexer", "searchsite", "reranker", "search", "relevance", "analytics")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(packages: list[str]) -> dict[str, Path]:
    modules = {}
    for package in packages:
        folder = ROOT / package
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.py")):
            if "migrations" in path.parts:
                continue  # generated; they import models only by app label
            modules[module_name(path)] = path
    return modules


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an imported dotted name lives in (`a.b.c` may be the name `c` of `a.b`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, inside a function) for every import statement of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = resolve(alias.name, known)
                    if target:
                        found.append((target, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base[: len(base) - child.level + (1 if is_package else 0)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                for alias in child.names:
                    # `from pkg import mod` imports a module; `from mod import name` imports from it.
                    target = resolve(f"{prefix}.{alias.name}", known) or resolve(prefix, known)
                    if target:
                        found.append((target, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a large graph)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def main(argv: list[str]) -> int:
    packages = argv or list(DEFAULT_PACKAGES)
    unknown = [p for p in packages if not (ROOT / p).is_dir()]
    if argv and unknown:
        print(f"no such package folder under {ROOT}: {', '.join(unknown)}", file=sys.stderr)
        return 2
    known = project_modules(packages)
    graph: dict[str, set[str]] = {name: set() for name in known}
    function_level: Counter[str] = Counter()
    for name, path in known.items():
        for target, inside in imports_of(name, path, known):
            if target != name:
                graph[name].add(target)
            if inside:
                function_level[name.split(".")[0]] += 1
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    for package in packages:
        if (ROOT / package).is_dir():
            print(f"{package}: {function_level[package]} function-level imports of project modules")
    if not cycles:
        print("no import cycle")
        return 0
    for component in cycles:
        print(f"cycle of {len(component)} modules: {', '.join(component)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
