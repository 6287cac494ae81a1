"""The dependency direction (README, "Development"), checked on imgq's own import graph.

The layers themselves are import-linter contracts in pyproject.toml; what import-linter has no
contract for (cycles, another package's private modules) is checked here with grimp, the graph
library import-linter is built on. Imports inside functions count like any other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph("imgq", cache_dir=None)


def test_imports_follow_the_layers_in_pyproject() -> None:
    # In a process of its own: import-linter configures logging and would disable imgq's loggers.
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")
    run = subprocess.run([sys.executable, "-c", code, str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_no_module_imports_another_packages_private_module() -> None:
    graph = _graph()
    offending = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            parts = imported.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if not private:
                continue
            owner = ".".join(parts[:private[0]])
            if module != owner and not module.startswith(owner + "."):
                offending.append(f"{module} -> {imported}")
    assert offending == []

def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    cycles = [component for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def _strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def test_a_worker_process_imports_none_of_the_servers_frameworks() -> None:
    """A worker process the pool spawns imports the `imgq` command (its main module) and the
    item path, not Alembic (only the process that migrates needs it), the web framework or a
    model runtime: every server start spawns such processes, and each import costs CPU."""
    heavy = ("alembic", "fastapi", "uvicorn", "torch", "openvino", "onnxruntime", "celery")
    code = ("import sys, imgq.cli, imgq.dispatch.pool; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == []
