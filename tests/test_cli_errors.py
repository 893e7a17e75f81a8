"""The ``fluxrl`` command on bad input: exit code 2 and one ``fluxrl: error:`` line, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fluxrl.config import compose, resolve, to_dict

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
#: A valid, tiny run: if a guard under test were missing, the command would finish quickly.
QUICK = ["env=gym/Pendulum-v1", "frames=120", "off_policy.warmup_frames=100",
         "off_policy.batch_size=16", "eval_every=100", "eval_episodes=1", "algo.actor.width=8", "algo.critic.width=8", "progress=false",
         "tensorboard=false", "plot=false"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fluxrl", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=60)


def assert_user_error(proc: subprocess.CompletedProcess) -> str:
    """Exit 2, exactly one non-empty stderr line starting with 'fluxrl: error:', no traceback."""
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("fluxrl: error:") and lines[0].strip() != "fluxrl: error:"
    assert proc.returncode == 2, (proc.returncode, out)
    return lines[0]


@pytest.mark.parametrize("overrides,expect", [
    (["algo=sacc"], "sac"),
    (["env=gym/Hoper-v5"], "gym/Hopper-v5"),
    (["foo=1"], "'foo'"),
    (["algo.lr_actorr=1"], "lr_actorr"),
    (["seeds=abc"], "seeds"),
    (["frames=0"], "frames"),
    (["steps=1000"], "steps is now frames; write frames=1000"),
    (["steps"], "key=value"),
])
def test_train_bad_config(tmp_path, overrides, expect):
    line = assert_user_error(run_cli("train", *overrides, cwd=tmp_path))
    assert expect in line
    assert list(tmp_path.iterdir()) == [], "a rejected config must not create any run directory"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_run_dir_in_unwritable_directory(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = assert_user_error(run_cli("train", *QUICK,
                                         f"run_dir={locked / 'run'}", cwd=tmp_path))
        assert "run_dir" in line and "writable" in line
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_run_dir_below_a_regular_file(tmp_path):
    """Unwritable for every user, root included: the parent of run_dir is a file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    line = assert_user_error(run_cli("train", *QUICK,
                                     f"run_dir={blocker / 'run'}", cwd=tmp_path))
    assert "run_dir" in line and str(blocker) in line
    assert blocker.read_text() == "not a directory"


def test_resume_from_directory_without_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = assert_user_error(run_cli("train", f"resume={empty}", cwd=tmp_path))
    assert str(empty) in line and "no fluxrl run" in line
    assert list(empty.iterdir()) == []


def _write_saved_config(run_dir: Path) -> None:
    run_dir.mkdir()
    cfg = resolve(compose(["env=gym/Pendulum-v1", "algo.actor.width=8", "algo.critic.width=8"]))
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def test_resume_from_run_without_checkpoint_starts_it_again(tmp_path):
    """A run killed before its first checkpoint: resume= says so in one line and starts over."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = resolve(compose(QUICK))
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    proc = run_cli("train", f"resume={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no intact checkpoint" in proc.stderr and "starting it again" in proc.stderr
    assert (run / "checkpoints").is_dir() and (run / "seed_0" / "eval.jsonl").exists()


def test_rerunning_the_same_command_with_resume_appended_is_accepted(tmp_path):
    """Only a real change is refused: the original command line plus resume= continues."""
    run = tmp_path / "run"
    first = run_cli("train", *QUICK, f"run_dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = run_cli("train", *QUICK, f"run_dir={run}", f"resume={run}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already reached its budget" in again.stderr
    line = assert_user_error(run_cli("train", *QUICK, f"resume={run}", "seeds=2", cwd=tmp_path))
    assert "cannot change seeds (1 -> 2)" in line


def test_eval_directory_without_run(tmp_path):
    line = assert_user_error(run_cli("eval", str(tmp_path), cwd=tmp_path))
    assert str(tmp_path) in line and "no fluxrl run" in line


def test_eval_run_without_checkpoint(tmp_path):
    run = tmp_path / "run"
    _write_saved_config(run)
    line = assert_user_error(run_cli("eval", str(run), cwd=tmp_path))
    assert "no checkpoint" in line


def test_plot_missing_directory(tmp_path):
    missing = tmp_path / "nope"
    line = assert_user_error(run_cli("plot", str(missing), cwd=tmp_path))
    assert str(missing) in line and "not a directory" in line
    assert not missing.exists()


def test_existing_run_dir_is_refused_untouched(tmp_path):
    run = tmp_path / "run"
    first = run_cli("train", *QUICK, f"run_dir={run}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (run / "notes.txt").write_text("keep")
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    line = assert_user_error(run_cli("train", *QUICK, f"run_dir={run}", cwd=tmp_path))
    assert "already holds a run" in line and f"resume={run}" in line
    assert (run / "notes.txt").read_text() == "keep"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_run_dir_without_checkpoint_is_taken_over(tmp_path):
    """A directory whose run died before its first checkpoint can simply be started again."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("env: gym/Pendulum-v1\n")
    (run / "notes.txt").write_text("keep")
    proc = run_cli("train", *QUICK, f"run_dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "stopped before its first checkpoint; starting over" in proc.stderr
    assert (run / "notes.txt").read_text() == "keep"


def test_unbuildable_gym_env_is_a_user_error(tmp_path):
    assert_user_error(run_cli("train", *QUICK, "env=gym/Hopper-v3", f"run_dir={tmp_path / 'run'}",
                              cwd=tmp_path))


def test_help_lists_commands(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ")
              and line.split()}
    assert {"train", "eval", "plot", "demo"} <= listed, proc.stdout
    assert "Traceback" not in proc.stderr
