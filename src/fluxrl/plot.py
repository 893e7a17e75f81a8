"""Learning curves: evaluation return vs frames, mean and min-max spread over seeds, one PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fluxrl.errors import FluxError
from fluxrl.logger import read_jsonl


def load_curves(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[T]`` and returns ``[seeds, T]`` of a run (seeds cut to their common length)."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("seed_*/eval.jsonl"))
    if not files:
        raise FluxError(f"{run_dir} holds no evaluation logs (seed_*/eval.jsonl); pass a run_dir "
                        "written by `fluxrl train`")
    rows = [read_jsonl(f) for f in files]
    n = min(len(r) for r in rows)
    steps = np.array([r["step"] for r in rows[0][:n]])
    rets = np.array([[r["return_mean"] for r in rs[:n]] for rs in rows])
    return steps, rets


def _label(run_dir: Path) -> str:
    import yaml

    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists():
        cfg = yaml.safe_load(cfg_file.read_text())
        return f"{cfg['algo']['name']} ({len(list(run_dir.glob('seed_*')))} seeds)"
    return run_dir.name


def plot_runs(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    """Plot every run's mean return with a min-max band over seeds; runs of several envs get
    one panel each. Returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import yaml

    groups: dict[str, list[Path]] = {}
    for d in map(Path, run_dirs):
        cfg_file = d / "config.yaml"
        env = yaml.safe_load(cfg_file.read_text())["env"] if cfg_file.exists() else "?"
        groups.setdefault(env, []).append(d)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    for ax, (env, dirs) in zip(axes[0], groups.items(), strict=True):
        for d in dirs:
            steps, rets = load_curves(d)
            if len(steps) == 0:
                continue
            mean = rets.mean(0)
            (line,) = ax.plot(steps, mean, label=_label(d))
            ax.fill_between(steps, rets.min(0), rets.max(0), alpha=0.2, color=line.get_color())
        ax.set_title(title or env)
        ax.set_xlabel("frames")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
