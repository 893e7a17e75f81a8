"""The harness (train/harness.py) on what happens to real runs: a budget extended on resume, a
corrupt newest checkpoint, Ctrl-C, two writers, old or edited config files, a full disk, a state
too big for the machine."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fluxrl.config import compose
from fluxrl.errors import FluxError
from fluxrl.logger import read_jsonl
from fluxrl.train import checkpoint
from fluxrl.train.harness import locked
from fluxrl.train.run import load_run_config, prepare, train

BASE = ["env=gym/Pendulum-v1", "algo.actor.width=16", "algo.critic.width=16", "seeds=2",
        "progress=false", "tensorboard=false", "plot=false", "eval_episodes=2",
        "off_policy.warmup_frames=300", "eval_every=300", "log_every=100"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _train(run_dir: Path, *extra: str):
    ov = [*BASE, *extra, f"run_dir={run_dir}"]
    return train(compose(ov), ov)


def _resume(run_dir: Path, *extra: str):
    ov = [f"resume={run_dir}", *extra]
    return train(compose(ov), ov)


def _curves(run_dir: Path) -> dict:
    return {(s, k): read_jsonl(run_dir / f"seed_{s}" / f"{k}.jsonl")
            for s in (0, 1) for k in ("eval", "train")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted 1,200-frame run: what every interrupted or extended run must equal."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    _train(run_dir, "frames=1200", "checkpoint_every=0")
    return run_dir


def test_resume_with_a_larger_budget_extends_the_run_exactly(tmp_path, reference):
    """600 frames, then resume to 1,200: the replay buffer sized for 600 grows, and the curves
    equal the 1,200-frame run's, bit for bit."""
    run_dir = tmp_path / "run"
    _train(run_dir, "frames=600", "checkpoint_every=300")
    assert checkpoint.latest_step(run_dir) == 600
    _resume(run_dir, "frames=1200")
    assert _curves(run_dir) == _curves(reference)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["resumes"][0]["frame"] == 600 and meta["resumes"][0]["changed"] == {"frames": 1200}
    with pytest.raises(FluxError, match="cannot be shortened"):
        _resume(run_dir, "frames=900")


def test_a_corrupt_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
        tmp_path, reference, capsys):
    run_dir = tmp_path / "run"
    _train(run_dir, "frames=900", "checkpoint_every=300")
    newest = checkpoint.ckpt_root(run_dir) / "900"
    victim = max((p for p in newest.rglob("*") if p.is_file() and p.name != "MANIFEST.json"),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # truncated mid-write
    capsys.readouterr()
    _resume(run_dir, "frames=1200")
    err = capsys.readouterr().err
    assert "checkpoint 900" in err and "600" in err
    assert any(p.name.startswith("900") for p in (checkpoint.ckpt_root(run_dir) / "bad").iterdir())
    assert _curves(run_dir) == _curves(reference)


def test_ctrl_c_writes_a_checkpoint_and_the_resumed_run_equals_the_uninterrupted_one(
        tmp_path, reference):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "fluxrl", "train", *BASE, "frames=1200", "checkpoint_every=0",
           f"run_dir={run_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                            text=True)
    t0 = time.time()
    while not read_jsonl(run_dir / "seed_0" / "eval.jsonl") and time.time() - t0 < 240:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    frame = checkpoint.latest_step(run_dir)
    assert frame is not None and 300 <= frame < 1200
    assert f"at frame {frame}: wrote a checkpoint" in err and f"resume={run_dir}" in err
    assert len(err.strip().splitlines()) == 1, err
    out = subprocess.run([sys.executable, "-m", "fluxrl", "train", f"resume={run_dir}"],
                         capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    assert _curves(run_dir) == _curves(reference)


def test_a_second_writer_is_refused_and_told_who_holds_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with locked(run_dir), pytest.raises(FluxError) as info:
        _train(run_dir, "frames=600")
    msg = str(info.value)
    assert f"pid {os.getpid()}" in msg and "in use" in msg and "\n" not in msg
    assert not (run_dir / "config.yaml").exists()


def test_resume_may_change_learning_rates_and_records_what_changed(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, "frames=600", "checkpoint_every=300")
    ov = [f"resume={run_dir}", "algo.lr_critic=1e-4", "frames=900"]
    cfg, _, resume, changes = prepare(compose(ov), ov)
    assert resume and cfg.algo.lr_critic == pytest.approx(1e-4)
    assert changes == {"algo.lr_critic": pytest.approx(1e-4), "frames": 900}
    with pytest.raises(FluxError, match=r"cannot change algo.tau \(0.005 -> 0.5\)"):
        ov = [f"resume={run_dir}", "algo.tau=0.5"]
        prepare(compose(ov), ov)


def test_meta_records_the_fluxrl_version_and_commit(tmp_path):
    run_dir = tmp_path / "run"
    _train(run_dir, "frames=400", "checkpoint_every=0")
    meta = json.loads((run_dir / "meta.json").read_text())
    import fluxrl

    assert meta["fluxrl"] == fluxrl.__version__ and "commit" in meta and meta["jax"]


def _saved(tmp_path: Path, edit) -> Path:
    run_dir = tmp_path / "edited"
    run_dir.mkdir()
    from fluxrl.config import resolve, to_dict

    data = to_dict(resolve(compose([*BASE, "frames=600"])))
    edit(data)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    return run_dir


def test_an_unknown_key_in_a_saved_config_is_one_clear_line(tmp_path):
    run_dir = _saved(tmp_path, lambda d: d["algo"].update(shiny_new_option=3))
    with pytest.raises(FluxError) as info:
        load_run_config(run_dir)
    msg = str(info.value)
    assert "algo.shiny_new_option" in msg and "config.yaml" in msg and "\n" not in msg


def test_a_missing_key_takes_todays_default_with_a_warning_naming_it(tmp_path, capsys):
    run_dir = _saved(tmp_path, lambda d: d.pop("eval_episodes"))
    cfg = load_run_config(run_dir)
    assert cfg.eval_episodes == 10
    assert "no eval_episodes; using today's default 10" in capsys.readouterr().err


def test_a_config_of_an_earlier_version_is_read_with_its_renamed_keys(tmp_path, capsys):
    def old(d):
        d["steps"] = d.pop("frames")
        d["warmup"] = d["off_policy"].pop("warmup_frames")
        d["batch_size"] = d["off_policy"].pop("batch_size")

    cfg = load_run_config(_saved(tmp_path, old))
    assert cfg.frames == 600 and cfg.off_policy.warmup_frames == 300
    assert "read steps as frames" in capsys.readouterr().err


def test_a_full_disk_is_one_line_naming_the_way_out(tmp_path, monkeypatch):
    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full)
    with pytest.raises(FluxError) as info:
        _train(tmp_path / "run", "frames=400", "checkpoint_every=0")
    msg = str(info.value)
    assert "no space left" in msg and "resume=" in msg and "\n" not in msg


def test_a_state_too_big_for_the_machine_is_refused_before_compiling(tmp_path):
    with pytest.raises(FluxError) as info:
        _train(tmp_path / "run", "frames=2000000000", "off_policy.buffer_size=2000000000")
    assert "GiB" in str(info.value) and "buffer_size" in str(info.value)
