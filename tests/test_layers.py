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
