"""Learning curves: evaluation return vs frames, mean and min-max spread over seeds, one PNG."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fluxrl.errors import FluxError
from fluxrl.logger import read_jsonl

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: File name suffixes matplotlib's ``savefig`` can write (its ``get_supported_filetypes``).
IMAGE_SUFFIXES = ("avif", "eps", "gif", "jpeg", "jpg", "pdf", "pgf", "png", "ps", "raw", "rgba",
                  "svg", "svgz", "tif", "tiff", "webp")


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """``path`` if a picture can be saved there, else a :class:`FluxError` naming ``option``.

    Checks, without creating anything that stays, that ``path`` is not a directory, has an
    image suffix, and that it (or the nearest existing directory above it, where the missing
    ones would be created) is writable. Cheap: meant to run before any training."""
    path = Path(path)
    hint = f"pass {option} PATH.png in a writable directory"
    if path.suffix and path.suffix[1:].lower() not in IMAGE_SUFFIXES:
        raise FluxError(f"{option} {path}: unknown image type {path.suffix!r}; use one of "
                        f".{', .'.join(IMAGE_SUFFIXES)}")
    if path.is_dir():
        raise FluxError(f"{option} {path} is a directory; {hint}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise FluxError(f"{option} {path} is not writable; {hint}")
        return path
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise FluxError(f"{option} {path}: {anc} is not a directory; {hint}")
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as exc:
        raise FluxError(f"{option} {path}: cannot write in {anc} ({exc.strerror or exc}); "
                        f"{hint}") from None
    return path


def default_plot_path(run_dirs: list[Path]) -> Path:
    """Where ``fluxrl plot`` writes without ``--out``: ``RUN_DIR/curves.png`` for one run (the
    file the trainer writes too), ``./curves.png`` for several, so that no run's own curves are
    overwritten by a comparison."""
    return Path(run_dirs[0]) / "curves.png" if len(run_dirs) == 1 else Path("curves.png")


def load_curves(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``[T]`` and returns ``[seeds, T]`` of a run (seeds cut to their common length)."""
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("seed_*/eval.jsonl"))
    if not files:
        raise FluxError(f"{run_dir} holds no evaluation logs (seed_*/eval.jsonl); pass a run_dir "
                        "written by `fluxrl train`")
    rows = [read_jsonl(f) for f in files]
    n = min(len(r) for r in rows)
    steps = np.array([r["frame"] for r in rows[0][:n]])
    rets = np.array([[r["return_mean"] for r in rs[:n]] for rs in rows])
    return steps, rets


def _label(run_dir: Path) -> str:
    import yaml

    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists():
        cfg = yaml.safe_load(cfg_file.read_text())
        return f"{cfg['algo']['name']} ({len(list(run_dir.glob('seed_*')))} seeds)"
    return run_dir.name


def figure_runs(run_dirs: list[Path], title: str | None = None) -> Figure:
    """The learning-curve figure of :func:`plot_runs` (a matplotlib ``Figure``, not saved):
    each run's mean return over seeds as a line with a marker on every evaluation (so a run
    with a single evaluation shows), and its min-max spread over seeds as a band (an error bar
    when there is one evaluation); runs of several envs get one panel each."""
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
            mean, lo, hi = rets.mean(0), rets.min(0), rets.max(0)
            (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=_label(d))
            if len(steps) == 1:
                ax.errorbar(steps, mean, yerr=[mean - lo, hi - mean], fmt="none", capsize=3,
                            alpha=0.6, color=line.get_color())
            else:
                ax.fill_between(steps, lo, hi, alpha=0.2, color=line.get_color())
        ax.set_title(title or env)
        ax.set_xlabel("frames")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_runs(run_dirs: list[Path], out: Path, title: str | None = None) -> Path:
    """Save :func:`figure_runs` of ``run_dirs`` to ``out`` (parent directories created).
    Returns the PNG path."""
    import matplotlib.pyplot as plt

    fig = figure_runs(run_dirs, title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
