"""The project's import rules, checked on the source (no service, no Django set-up).

- No cycle: scripts/import_cycles.py (the module graph read with `ast`, function-level imports
  included) finds no strongly connected component of more than one module.
- The contracts in .importlinter (the apps in layers: searchsite -> relevance -> search ->
  reranker -> indexer -> common; entry points above services inside each app; the reranker app
  free of the query path and the relevance app; its model code free of Django; the settings
  importing no app) hold: `lint-imports` passes.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "import_cycles.py"


def load_script():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_graph_sees_function_level_and_relative_imports():
    cycles = load_script()
    known = cycles.project_modules(list(cycles.DEFAULT_PACKAGES))

    def imports(module: str) -> dict[str, bool]:
        return dict(cycles.imports_of(module, known[module], known))

    assert "search.retrieval" in imports("search.params")  # from .retrieval import ...
    assert imports("reranker.warm_up")["reranker.cross_encoder"] is True  # inside a function
    assert "search.offline" in imports("relevance.management.commands.evaluate")  # from search import offline


def test_strongly_connected_finds_a_cycle():
    components = load_script().strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert sorted(c for c in components if len(c) > 1) == [["a", "b", "c"]]


def test_no_import_cycles():
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--no-cache", "--config", str(ROOT / ".importlinter")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
