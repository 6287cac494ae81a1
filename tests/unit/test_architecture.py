"""The dependency direction (README, "Development"), checked on imgq's own import graph.

The layers themselves are import-linter contracts in pyproject.toml; what import-linter has no
contract for (another package's private modules) is checked here with grimp, the graph library
import-linter is built on. Imports inside functions count like any other.
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
