"""The command line's user experience: fast help without JAX, float32 matmuls wherever JAX runs,
``fluxrl plot`` outputs, ``fluxrl toy --out`` checked up front, the demo's stated duration, and
mp4s written without JAX's ``os.fork()`` warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
ENV.pop("JAX_DEFAULT_MATMUL_PRECISION", None)  # each child must get float32 from fluxrl itself


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


# --- fast help, no JAX ---------------------------------------------------------------------------

def test_cli_and_help_do_not_import_jax():
    """``import fluxrl.cli`` and every ``--help`` leave JAX (and the trainers) unimported."""
    code = """
import sys
import fluxrl.cli
assert "jax" not in sys.modules, "import fluxrl.cli imported jax"
from fluxrl.cli import main
for argv in (["--help"], ["train", "--help"], ["demo", "--help"], ["toy", "--help"],
             ["plot", "--help"], ["docs", "--help"], ["eval", "--help"], ["algos", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
    heavy = sorted(m for m in ("jax", "flax", "optax", "gymnasium", "matplotlib", "fluxrl.train")
                   if m in sys.modules)
    assert not heavy, (argv, heavy)
print("ok")
"""
    proc = _python(code)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


@pytest.mark.parametrize("module", ["fluxrl.train.run", "fluxrl.agents", "fluxrl.rng"])
def test_jax_users_get_float32_matmuls(module):
    """Whatever fluxrl module brings JAX in, matmuls default to float32 precision."""
    proc = _python(f"import {module}, jax; print(jax.config.jax_default_matmul_precision)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "float32", proc.stdout


def test_jax_imported_before_fluxrl_gets_float32_matmuls():
    proc = _python("import jax; import fluxrl; print(jax.config.jax_default_matmul_precision)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "float32", proc.stdout


def test_this_process_has_float32_matmuls():
    import jax

    import fluxrl  # noqa: F401

    assert jax.config.jax_default_matmul_precision == "float32"


# --- demo duration -------------------------------------------------------------------------------

def test_demo_duration_is_stated_once_and_the_same():
    """README and ``fluxrl demo --help`` state the same measured duration."""
    from fluxrl.cli import DEMO_DURATION, parser

    readme = (ROOT / "README.md").read_text()
    assert DEMO_DURATION in readme
    sub = next(a for a in parser()._actions if a.dest == "command")
    demo_help = next(c.help for c in sub._choices_actions if c.dest == "demo")
    assert DEMO_DURATION in demo_help  # fluxrl --help
    assert DEMO_DURATION in sub.choices["demo"].description  # fluxrl demo --help
    assert "30 s" not in readme and "3 min" not in demo_help


# --- fluxrl plot ---------------------------------------------------------------------------------

def _fake_run(d: Path, steps: list[int], seeds: int = 2, algo: str = "sac") -> Path:
    """A run directory with the files ``fluxrl plot`` reads."""
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"algo": {"name": algo},
                                                   "env": "gym/Pendulum-v1"}))
    for s in range(seeds):
        (d / f"seed_{s}").mkdir()
        rows = [{"frame": t, "return_mean": -1000.0 + t / 10 + 50 * s} for t in steps]
        (d / f"seed_{s}" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_plot_several_runs_leaves_run_dirs_alone(tmp_path, monkeypatch):
    from fluxrl.cli import main

    a = _fake_run(tmp_path / "a", [1000, 2000, 3000])
    b = _fake_run(tmp_path / "b", [1000, 2000], algo="td3")
    (a / "curves.png").write_bytes(b"the trainer's own curves")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["plot", str(a), str(b)]) == 0
    assert (work / "curves.png").stat().st_size > 1000
    assert (a / "curves.png").read_bytes() == b"the trainer's own curves"
    assert not (b / "curves.png").exists()
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "cmp" / "x.png")]) == 0
    assert (tmp_path / "cmp" / "x.png").exists()
    assert (a / "curves.png").read_bytes() == b"the trainer's own curves"


def test_plot_one_run_writes_its_curves(tmp_path, monkeypatch):
    from fluxrl.cli import main

    a = _fake_run(tmp_path / "a", [1000, 2000])
    monkeypatch.chdir(tmp_path)
    assert main(["plot", str(a)]) == 0
    assert (a / "curves.png").stat().st_size > 1000
    assert not (tmp_path / "curves.png").exists()


def test_plot_single_evaluation_is_visible(tmp_path):
    """One evaluation point: the mean is drawn with a marker, the spread as an error bar."""
    import matplotlib.pyplot as plt

    from fluxrl.plot import figure_runs, plot_runs

    a = _fake_run(tmp_path / "a", [1000])
    fig = figure_runs([a])
    try:
        (line,) = fig.axes[0].lines[:1]
        assert line.get_marker() == "o" and line.get_markersize() > 0
        assert len(line.get_xdata()) == 1
        assert fig.axes[0].collections, "no error bar for the min-max spread"
    finally:
        plt.close(fig)
    assert plot_runs([a], tmp_path / "one.png").stat().st_size > 1000


def test_plot_unwritable_out_is_a_user_error(tmp_path):
    from fluxrl.cli import main

    a = _fake_run(tmp_path / "a", [1000])
    (tmp_path / "file").write_text("")
    assert main(["plot", str(a), "--out", str(tmp_path / "file" / "x.png")]) == 2


# --- fluxrl toy --out ----------------------------------------------------------------------------

def _assert_user_error(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fluxrl: error:"), lines
    assert proc.returncode == 2, (proc.returncode, out)
    return lines[0]


def _cases(tmp_path: Path) -> list[Path]:
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_dir").mkdir()
    cases = [tmp_path / "a_file" / "toy.png", tmp_path / "a_dir", tmp_path / "toy.bmpx"]
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        cases.append(locked / "sub" / "toy.png")
    return cases


def test_toy_unwritable_out_fails_before_training(tmp_path):
    """One error line and exit 2 within about a second: nothing trained, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    for out in _cases(tmp_path):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "fluxrl", "toy", "algo=sac", "--out",
                               str(out)], cwd=work, env=ENV, capture_output=True, text=True,
                              timeout=60)
        elapsed = time.perf_counter() - t0
        line = _assert_user_error(proc)
        assert "--out" in line and str(out) in line, line
        assert elapsed < 5, f"took {elapsed:.1f} s: the check must come before training"
        assert list(work.iterdir()) == []
    (tmp_path / "locked").exists() and (tmp_path / "locked").chmod(0o700)


def test_check_output_file_accepts_new_nested_path(tmp_path):
    from fluxrl.plot import check_output_file

    out = tmp_path / "new" / "dir" / "toy.png"
    assert check_output_file(out) == out
    assert not (tmp_path / "new").exists(), "the check must not create directories"


# --- mp4s without JAX's fork warning -------------------------------------------------------------

def _fork_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "os.fork()" in str(w.message)]


@pytest.mark.parametrize("size", [(48, 64), (33, 17)])
def test_write_mp4_is_playable_and_does_not_warn(tmp_path, size):
    """A few random frames make an mp4 that decodes back to as many frames of that size, and
    writing it triggers no JAX ``os.fork()`` RuntimeWarning (while a Python-level fork does)."""
    import imageio_ffmpeg
    import jax

    from fluxrl.video import write_mp4

    jax.devices()  # starts the backend: JAX's at-fork warning handler is now installed
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        subprocess.run(["true"], preexec_fn=lambda: None, check=True)
    assert _fork_warnings(caught), "the test cannot see JAX's fork warning"
    path = tmp_path / "clip.mp4"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_mp4(path, frames, fps=25) == path
    assert not _fork_warnings(caught), _fork_warnings(caught)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # imageio's reader forks via preexec_fn
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        n = sum(1 for _ in reader)
    h, w = size
    assert tuple(meta["size"]) == (w + w % 2, h + h % 2)
    assert meta["codec"].startswith("h264") and round(meta["fps"]) == 25
    assert n == len(frames)


def test_write_mp4_rejects_bad_frames(tmp_path):
    from fluxrl.video import write_mp4

    with pytest.raises(ValueError, match="at least one frame"):
        write_mp4(tmp_path / "a.mp4", [])
    frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="differ in size"):
        write_mp4(tmp_path / "b.mp4", frames)
    assert not (tmp_path / "b.mp4").exists()
