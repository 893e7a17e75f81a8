"""Checkpoints: the device state through orbax, the host state (simulators, counters, pending
action) through pickle, and a ``LATEST`` file written last so a crash mid-save is harmless."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

KEEP = 2


def ckpt_root(run_dir: Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(run_dir) / "checkpoints"


def latest_step(run_dir: Path) -> int | None:
    """The newest complete checkpoint's step, or None."""
    f = ckpt_root(run_dir) / "LATEST"
    if not f.exists():
        return None
    return int(f.read_text().strip())


def save(run_dir: Path, step: int, device_state: Any, host_state: dict) -> None:
    """Write checkpoint ``step`` and point ``LATEST`` at it; keep the newest :data:`KEEP`."""
    root = ckpt_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = (root / str(step)).absolute()
    if path.exists():
        shutil.rmtree(path)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path / "device", jax.device_get(device_state))
    ckptr.wait_until_finished()
    ckptr.close()
    with open(path / "host.pkl", "wb") as f:
        pickle.dump(host_state, f)
        f.flush()
        os.fsync(f.fileno())
    tmp = root / "LATEST.tmp"
    tmp.write_text(str(step))
    os.replace(tmp, root / "LATEST")
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    for old in steps[:-KEEP]:
        shutil.rmtree(root / str(old), ignore_errors=True)


def restore(run_dir: Path, target: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Load checkpoint ``step`` (default: LATEST) into the structure of ``target``."""
    step = latest_step(run_dir) if step is None else step
    path = (ckpt_root(run_dir) / str(step)).absolute()
    ckptr = ocp.StandardCheckpointer()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    device_state = ckptr.restore(path / "device", abstract)
    ckptr.close()
    with open(path / "host.pkl", "rb") as f:
        host = pickle.load(f)
    device_state = jax.tree.map(lambda x: np.asarray(x) if np.ndim(x) == 0 else x, device_state)
    return device_state, host, step
