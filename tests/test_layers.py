"""The code's layers (pyproject.toml ``[tool.importlinter]``) hold: cli -> docs / toy -> train ->
plot / video -> taxonomy -> config -> task_defaults / envs / logger -> agents -> guidance ->
generative / nets -> rng / flops -> errors, and inside agents: registry -> families -> common ->
config -> base. An upward import (the way an import cycle starts) fails this test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports missing: pip install -e '.[dev]' (import-linter)"
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_no_import_cycle():
    """No group of fluxrl modules imports itself round (before issue 9: one cycle of 19 modules
    through config.py and the agent registry)."""
    import grimp

    graph = grimp.build_graph("fluxrl")
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert cycles == []
