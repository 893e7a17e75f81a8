"""One logging API: per-seed JSONL (always), TensorBoard, Weights & Biases, console.

Run-directory layout (docs/run_dir.md)::

    run_dir/config.yaml          resolved config (what ``resume=`` reloads)
    run_dir/meta.json            versions, devices, command line
    run_dir/seed_<s>/train.jsonl training metrics, one row per log interval (``frame`` first)
    run_dir/seed_<s>/eval.jsonl  evaluation return mean/std per evaluation
    run_dir/tb/seed_<s>/         TensorBoard event files
    run_dir/checkpoints/         orbax checkpoints + host state, LATEST names the newest
    run_dir/curves.png           learning curves (mean and spread over seeds)
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np


def _truncate_jsonl(path: Path, max_frame: int) -> None:
    """Drop rows logged after ``max_frame`` (written by a run that crashed after its checkpoint)."""
    if not path.exists():
        return
    keep = [json.dumps(row) for row in read_jsonl(path) if row["frame"] <= max_frame]
    path.write_text("".join(line + "\n" for line in keep))


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSONL file (empty list if missing). Rows of runs written before fluxrl
    named the column ``frame`` carry it as ``step``; they are read as ``frame``."""
    if not Path(path).exists():
        return []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [{"frame": r.pop("step"), **r} if "step" in r and "frame" not in r else r for r in rows]


class RunLogger:
    """Writes metrics for every seed of a run to every configured sink."""

    def __init__(self, run_dir: Path, seeds: list[int], tensorboard: bool, wandb: bool,
                 wandb_project: str, config: dict, resume_frame: int | None = None):
        self.run_dir = Path(run_dir)
        self.seeds = seeds
        self.files = {}
        for s in seeds:
            d = self.run_dir / f"seed_{s}"
            d.mkdir(parents=True, exist_ok=True)
            for kind in ("train", "eval"):
                if resume_frame is not None:
                    _truncate_jsonl(d / f"{kind}.jsonl", resume_frame)
                self.files[(s, kind)] = open(d / f"{kind}.jsonl", "a", buffering=1)  # noqa: SIM115
        self.tb = {}
        if tensorboard:
            from tensorboardX import SummaryWriter

            for s in seeds:
                # TensorBoard drops events at and after purge_step: keep the checkpoint's own
                # a unique suffix: two writers opened in the same second would share a file name
                self.tb[s] = SummaryWriter(str(self.run_dir / "tb" / f"seed_{s}"),
                                           purge_step=None if resume_frame is None
                                           else resume_frame + 1,
                                           filename_suffix=f".{os.getpid()}.{time.time_ns()}")
        self.wandb = None
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                from fluxrl.errors import FluxError

                raise FluxError("wandb=true needs the wandb package: pip install 'fluxrl[wandb]'") from None
            self.wandb = wb.init(project=wandb_project, config=config, dir=str(self.run_dir),
                                 name=self.run_dir.name, resume="allow", id=self.run_dir.name)

    def _write(self, kind: str, frame: int, per_seed: dict[str, np.ndarray]) -> None:
        for i, s in enumerate(self.seeds):
            row = {"frame": int(frame)}
            row.update({k: float(v[i]) for k, v in per_seed.items()})
            self.files[(s, kind)].write(json.dumps(row) + "\n")
            if s in self.tb:
                for k, v in row.items():
                    if k != "frame" and math.isfinite(v):
                        self.tb[s].add_scalar(f"{kind}/{k}", v, frame)
        if self.wandb is not None:
            summary = {f"{kind}/{k}": float(np.mean(v)) for k, v in per_seed.items()}
            self.wandb.log(summary, step=int(frame))

    def train(self, frame: int, per_seed: dict[str, np.ndarray]) -> None:
        """Training metrics, each an array over seeds."""
        self._write("train", frame, per_seed)

    def eval(self, frame: int, returns: np.ndarray, lengths: np.ndarray) -> None:
        """Evaluation returns and lengths shaped ``[seeds, episodes]``."""
        self._write("eval", frame, {"return_mean": returns.mean(1), "return_std": returns.std(1),
                                   "length_mean": lengths.mean(1)})

    def flush(self) -> None:
        """Flush TensorBoard writers."""
        for w in self.tb.values():
            w.flush()

    def close(self) -> None:
        """Close every sink."""
        for f in self.files.values():
            f.close()
        for w in self.tb.values():
            w.close()
        if self.wandb is not None:
            self.wandb.finish()
