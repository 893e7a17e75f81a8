"""The harness: everything about a run that does not depend on its setting.

It owns the run directory (lock, config, metadata), the logger, the progress bar, the evaluation,
logging and checkpoint cadences, resume, the stop on non-finite losses, Ctrl-C / SIGTERM and the
final plot, and drives a *program* chunk by chunk. A program is the setting-specific part
(:class:`Program`): the off-policy one (:class:`fluxrl.train.off_policy.OffPolicyProgram`) runs
one agent step per chunk, because its simulators live on the host; programs over JAX
environments run one jitted ``lax.scan`` per chunk. The host touches the device only between
chunks, and only when a cadence asks for it.

Cadences count frames: a chunk covers ``frames_per_chunk`` frames, and an event fires in the chunk
that crosses a multiple of its interval.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml

from fluxrl.errors import FluxError, Interrupted, TrainingDiverged
from fluxrl.logger import RunLogger, read_jsonl
from fluxrl.train import checkpoint


class Program(Protocol):
    """The setting-specific part of a run, driven by :func:`run`."""

    frames_per_chunk: int  #: simulator frames per seed that one chunk advances
    total_chunks: int  #: chunks in the whole budget

    def init(self) -> Any:
        """A fresh start; returns the device state (the program keeps its host state)."""

    def restore(self, ckpt: checkpoint.Checkpoint) -> Any:
        """The device state of a checkpoint (and the program's host state from ``ckpt.host``)."""

    def run_chunk(self, state: Any, chunk: int) -> Any:
        """Advance by chunk ``chunk`` (0-based); update metrics accumulate in the state."""

    def pop_metrics(self, state: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """Mean update metrics per seed since the last call (empty if no update ran)."""

    def pending_metrics(self, state: Any) -> dict[str, np.ndarray]:
        """The accumulated metrics, not reset (checked before a checkpoint is written)."""

    def evaluate(self, state: Any, envs: list | None = None,
                 frames: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One evaluation round: returns and lengths ``[seeds, episodes]`` (on ``envs`` if
        given, collecting rendered frames into ``frames``)."""

    def host_state(self) -> dict:
        """Host state a checkpoint must hold (arrays, numbers, strings: no objects)."""

    def memory_bytes(self) -> int:
        """Bytes of the device state, from shapes only."""

    def close(self) -> None:
        """Release simulators."""


@dataclass
class RunResult:
    """What a finished run leaves behind."""

    run_dir: Path
    frames: int  #: frames trained per seed
    eval_frames: list[int]  #: the frame of every evaluation
    eval_returns: np.ndarray  #: ``[evaluations, seeds]`` mean return per evaluation
    state: Any  #: the program's final device state


def crossed(interval: int, chunk: int, frames_per_chunk: int) -> bool:
    """Whether chunk ``chunk`` crosses a multiple of ``interval`` frames (never for 0)."""
    if interval <= 0:
        return False
    return ((chunk + 1) * frames_per_chunk) // interval > (chunk * frames_per_chunk) // interval


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and prove it can be written, or raise a one-line :class:`FluxError`."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FluxError(f"cannot write to {run_dir}: {exc.strerror or exc}; choose a writable "
                        "directory (run_dir=PATH)") from None


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` for the duration (one writer per run directory); the error names the
    process that holds it. The operating system releases the lock if the holder dies."""
    import fcntl

    path = run_dir / ".lock"
    f = open(path, "a+")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise FluxError(f"{run_dir} is in use by {holder}; wait for it to finish (or stop it), "
                        "or choose another run_dir") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} ({' '.join(sys.argv[:1] + sys.argv[1:4])} ...)")
        f.flush()
        yield
    finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _git_commit() -> str | None:
    src = Path(__file__).resolve().parents[3]
    if not (src / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None


def versions() -> dict:
    """What wrote a run: fluxrl's version and commit, the libraries, the machine."""
    import flax
    import jax
    import optax

    import fluxrl

    return {"fluxrl": fluxrl.__version__, "commit": _git_commit(),
            "python": platform.python_version(), "jax": jax.__version__,
            "flax": flax.__version__, "optax": optax.__version__,
            "devices": [str(d) for d in jax.devices()], "machine": platform.machine(),
            "cpus": os.cpu_count()}


def write_meta(run_dir: Path, config: dict, resumed_from: int | None, changes: dict) -> None:
    """``config.yaml`` and ``meta.json``; a resume appends to ``meta.json``'s ``resumes``."""
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    meta_file = run_dir / "meta.json"
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    if resumed_from is not None and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        meta.setdefault("resumes", []).append({"at": now, "frame": resumed_from,
                                               "argv": sys.argv, "changed": changes,
                                               **versions()})
    else:
        meta = {"argv": sys.argv, "started": now, **versions()}
    meta_file.write_text(json.dumps(meta, indent=2))


def _preflight(run_dir: Path, program: Program) -> None:
    """Refuse a run whose device state cannot fit the memory or whose checkpoint cannot fit the
    disk, before anything compiles."""
    import shutil

    need = program.memory_bytes()
    free_disk = shutil.disk_usage(run_dir).free
    if need > free_disk:
        raise FluxError(f"a checkpoint of this run takes about {need / 2**30:.2f} GiB but "
                        f"{run_dir} has {free_disk / 2**30:.2f} GiB free; free space or choose "
                        "another run_dir (or lower off_policy.buffer_size or seeds)")
    import jax

    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    limit = (stats or {}).get("bytes_limit")
    if limit is None and dev.platform == "cpu":
        with contextlib.suppress(ValueError, OSError, AttributeError):
            limit = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if limit and need > limit:
        raise FluxError(f"the run's device state needs about {need / 2**30:.2f} GiB but {dev} "
                        f"has {limit / 2**30:.2f} GiB available; lower seeds, "
                        "off_policy.buffer_size or the network sizes")


@contextlib.contextmanager
def _stop_signals() -> Iterator[dict]:
    """Turn the first Ctrl-C / SIGTERM into a flag the loop checks between chunks (a second
    Ctrl-C interrupts at once)."""
    import threading

    flag = {"signal": None}

    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        if flag["signal"] is not None:
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _one_line_os_error(exc: BaseException, run_dir: Path, frame: int) -> FluxError | None:
    """The user-facing line for a full disk or exhausted memory anywhere in ``exc``'s chain."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC or "No space left" in str(seen):
            last = checkpoint.latest_step(run_dir)
            return FluxError(f"no space left on the device holding {run_dir} (frame {frame}); "
                             f"free space, then continue with fluxrl train resume={run_dir} "
                             f"(newest checkpoint: frame {last})")
        if isinstance(seen, MemoryError) or "RESOURCE_EXHAUSTED" in str(seen):
            return FluxError(f"out of memory at frame {frame}: {str(seen).splitlines()[0][:160]}; "
                             "lower seeds, off_policy.buffer_size, network sizes or "
                             "per-update sample counts")
        seen = seen.__cause__ or seen.__context__
    return None


def _largest(run_dir: Path, seed: int, up_to: int) -> str:
    rows = [r for r in read_jsonl(run_dir / f"seed_{seed}" / "train.jsonl") if r["frame"] <= up_to]
    big = max(((abs(v), k) for r in rows for k, v in r.items()
               if k != "frame" and k.endswith("loss") and np.isfinite(v)), default=None)
    return f"max |{big[1]}| = {big[0]:.3g}" if big else "no loss logged"


def _check_finite(metrics: dict[str, np.ndarray], frame: int, seeds: list[int], run_dir: Path,
                  lr_keys: list[str]) -> None:
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v).all())
    if not bad:
        return
    bad_seeds = [s for i, s in enumerate(seeds)
                 if any(not np.isfinite(np.asarray(metrics[k])[i]).all() for k in bad)]
    last = checkpoint.latest_step(run_dir)
    if last is None:
        kept = "no checkpoint had been written yet: start again"
    else:
        kept = (f"the newest checkpoint is frame {last} (seed {bad_seeds[0]} had logged "
                f"{_largest(run_dir, bad_seeds[0], last)} by then): continue from it with lower "
                f"learning rates, fluxrl train resume={run_dir} "
                + " ".join(f"{k}=..." for k in lr_keys) + ", or start again")
    finite = [s for s in seeds if s not in bad_seeds]
    raise TrainingDiverged(
        f"{', '.join(bad)} became non-finite by frame {frame} in seed(s) "
        f"{', '.join(map(str, bad_seeds))}" + (f" (seeds {', '.join(map(str, finite))} were "
                                               "still finite)" if finite else "")
        + f"; {kept}; or check the rewards")


def run(program_factory: Callable[[], Program], *, run_dir: Path, seeds: list[int],
        config: dict, frames: int, resume: bool, changes: dict, cadence: dict, logging: dict,
        lr_keys: list[str], log: Callable[[str], None]) -> RunResult:
    """Drive a program through its budget in ``run_dir`` (see the module docs).

    ``cadence`` holds ``eval_every``, ``log_every``, ``checkpoint_every`` (frames); ``logging``
    holds ``progress``, ``tensorboard``, ``wandb``, ``wandb_project``, ``plot`` and ``desc``."""
    with locked(run_dir):
        program = program_factory()
        try:
            return _drive(program, run_dir, seeds, config, frames, resume, changes, cadence,
                          logging, lr_keys, log)
        finally:
            program.close()


def _drive(program: Program, run_dir: Path, seeds: list[int], config: dict, frames: int,
           resume: bool, changes: dict, cadence: dict, logging: dict, lr_keys: list[str],
           log: Callable[[str], None]) -> RunResult:
    fpc, total = program.frames_per_chunk, program.total_chunks
    ckpt = checkpoint.open_latest(run_dir, log=log) if resume else None
    if resume and ckpt is None:
        log(f"{run_dir} holds no intact checkpoint (the run stopped before its first); "
            "starting it again from frame 0")
    start = 0 if ckpt is None else ckpt.frame // fpc
    if ckpt is not None and ckpt.frame > frames:
        raise FluxError(f"frames={frames} is below the frame {ckpt.frame} that {run_dir} has "
                        f"reached; a run cannot be shortened: pass frames>={ckpt.frame}")
    _preflight(run_dir, program)
    state = program.init() if ckpt is None else program.restore(ckpt)
    if ckpt is not None and start >= total:
        log(f"{run_dir} already reached its budget of {frames} frames; nothing to train "
            f"(extend it with frames=N, N > {frames})")
        return _result(run_dir, seeds, frames, state)
    write_meta(run_dir, config, None if ckpt is None and not resume else start * fpc, changes)
    logger = RunLogger(run_dir, seeds, logging["tensorboard"], logging["wandb"],
                       logging["wandb_project"], config, resume_frame=start * fpc if resume
                       else None)
    bar = None
    if logging["progress"]:
        from tqdm import tqdm

        bar = tqdm(total=total * fpc, initial=start * fpc, unit="frame", dynamic_ncols=True,
                   desc=logging["desc"], smoothing=0.05, mininterval=1.0)
    frame = start * fpc

    def save(state: Any, frame: int) -> None:
        # never checkpoint a state whose losses are already non-finite
        _check_finite(program.pending_metrics(state), frame, seeds, run_dir, lr_keys)
        checkpoint.save(run_dir, frame, state, program.host_state())

    try:
        with _stop_signals() as stop:
            for t in range(start, total):
                state = program.run_chunk(state, t)
                frame = (t + 1) * fpc
                if bar is not None:
                    bar.update(fpc)
                if crossed(cadence["log_every"], t, fpc):
                    state, metrics = program.pop_metrics(state)
                    _check_finite(metrics, frame, seeds, run_dir, lr_keys)
                    if metrics:
                        logger.train(frame, metrics)
                if crossed(cadence["eval_every"], t, fpc) or t + 1 == total:
                    rets, lens = program.evaluate(state)
                    logger.eval(frame, rets, lens)
                    logger.flush()
                    if bar is not None:
                        bar.set_postfix(eval=f"{rets.mean():.1f}", refresh=False)
                if crossed(cadence["checkpoint_every"], t, fpc) or t + 1 == total:
                    save(state, frame)
                if stop["signal"] is not None and t + 1 < total:
                    save(state, frame)
                    raise Interrupted(f"{stop['signal']} at frame {frame}: wrote a checkpoint; "
                                      f"continue with fluxrl train resume={run_dir}")
    except (OSError, RuntimeError, MemoryError) as exc:
        line = _one_line_os_error(exc, run_dir, frame)
        if line is None:
            raise
        raise line from None
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    if logging["plot"]:
        from fluxrl.plot import plot_runs

        plot_runs([run_dir], run_dir / "curves.png")
    return _result(run_dir, seeds, total * fpc, state)


def _result(run_dir: Path, seeds: list[int], frames: int, state: Any) -> RunResult:
    rows = {s: read_jsonl(run_dir / f"seed_{s}" / "eval.jsonl") for s in seeds}
    eval_frames = [r["frame"] for r in rows[seeds[0]]]
    returns = np.array([[r["return_mean"] for r in rows[s]] for s in seeds]).T
    return RunResult(run_dir, frames, eval_frames, returns, state)
