"""``fluxrl toy``: train an algorithm on the 2-D bandit of :mod:`fluxrl.envs.toy` in seconds and
picture its action samples over the reward landscape (issue 3).

:func:`run_toy` trains with :data:`TOY` (sized for seconds on a laptop CPU; overrides win), draws
:data:`SAMPLES` actions per seed from the trained exploring policy, counts the fraction of them
within :data:`RADIUS` of each bump and saves a PNG: the reward heat map with the samples on top,
each bump's circle of radius :data:`RADIUS` labelled with its fraction.

This module imports JAX only inside its functions, so ``fluxrl toy`` can reject a bad ``--out``
before the slow imports and the training.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Settings of a toy run (the bandit's episodes are one step, so steps = episodes).
TOY = ["frames=3000", "off_policy.warmup_frames=500", "off_policy.batch_size=256", "eval_every=3000", "eval_episodes=2",
       "log_every=1000", "checkpoint_every=0", "algo.actor.width=64", "algo.actor.depth=2",
       "algo.critic.width=64", "algo.critic.depth=2", "progress=false", "tensorboard=false",
       "plot=false"]
SAMPLES = 1000  #: actions drawn per seed for the picture and the mode fractions
RADIUS = 0.25  #: a sample counts for a bump when it is this close to the bump's centre


def mode_fractions(actions: np.ndarray, radius: float = RADIUS) -> list[float]:
    """Fraction of actions ``[..., 2]`` within ``radius`` of each bump of the bandit."""
    from fluxrl.envs.toy import MODES

    a = np.asarray(actions, np.float64).reshape(-1, 2)
    d = np.linalg.norm(a[:, None, :] - MODES[None], axis=-1)
    return [float(f) for f in (d < radius).mean(0)]


def sample_actions(cfg, state, n: int = SAMPLES, explore_noise: bool = True,
                   step: int = 0) -> np.ndarray:
    """``n`` actions per seed ``[seeds, n, 2]`` of the trained policy on the constant observation.

    With ``explore_noise`` these are the training-time (exploring) actions of
    ``OffPolicyPrograms.act_explore``; without it, agents with an ``explore_noise`` setting
    (QSM adds N(0, 0.1^2)) are rebuilt with that noise at 0, so the samples are the policy's own.
    ``cfg`` is the resolved config of the run and ``state`` its final ``TrainState``."""
    import jax
    import jax.numpy as jnp

    from fluxrl.agents.registry import get_algo
    from fluxrl.envs.toy import OBS_DIM
    from fluxrl.train.off_policy import ACT_STREAM, OffPolicyProgram

    program = OffPolicyProgram(cfg, [cfg.seed + k for k in range(cfg.seeds)])
    program.close()
    seeds, prog = program.seeds, program.programs
    obs = jnp.zeros((len(seeds), n, OBS_DIM), jnp.float32)
    if explore_noise or not hasattr(cfg.algo, "explore_noise"):
        return np.asarray(prog.act_explore(state, obs, step))
    agent = get_algo(cfg.algo.name).make(dataclasses.replace(cfg.algo, explore_noise=0.0),
                                         prog.spec)

    def act(s, o):
        return agent.act(s.agent, o, jax.random.fold_in(s.keys[ACT_STREAM], step), False)

    return np.asarray(jax.jit(jax.vmap(act))(state, obs))


def fractions_title(algo: str, n: int) -> str:
    """Title of the toy picture: what the numbers next to the bumps are."""
    return (f"{algo}: fraction of its {n} action samples\n"
            f"within {RADIUS} of each bump (red circles)")


def plot_samples(actions: np.ndarray, out_png: Path, title: str,
                 fractions: list[float] | None = None) -> Path:
    """Reward heat map of the bandit with ``actions [..., 2]`` scattered on it, saved as PNG.

    Each bump gets a dashed circle of radius :data:`RADIUS`; with ``fractions`` (one per bump,
    as :func:`mode_fractions` returns) each circle is labelled with its fraction of the samples.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fluxrl.envs.toy import MODES, reward_grid

    x, y, r = reward_grid(200)
    a = np.asarray(actions).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(r, origin="lower", extent=(x[0], x[-1], y[0], y[-1]), cmap="viridis")
    ax.scatter(a[:, 0], a[:, 1], s=3, c="white", alpha=0.5, linewidths=0)
    for k, m in enumerate(MODES):
        ax.add_patch(plt.Circle(m, RADIUS, fill=False, ec="red", lw=0.8, ls="--"))
        if fractions is not None:
            # outside the circle, towards the nearer corner of the action box
            ax.text(m[0] + 0.27 * np.sign(m[0]), m[1] + 0.27 * np.sign(m[1]),
                    f"{fractions[k]:.2f}", color="white", fontsize=10, ha="center",
                    va="center", bbox={"boxstyle": "round,pad=0.2", "fc": "black", "alpha": 0.6,
                                       "lw": 0})
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="action 0", ylabel="action 1", title=title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out_png


def run_toy(algo: str, overrides: list[str] | None = None, out_png: str | Path = "toy.png",
            explore_noise: bool = True,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``algo`` on the bandit and picture its action samples.

    ``overrides`` are key=value settings applied after :data:`TOY` (e.g. ``seeds=2`` or
    ``algo.diffusion_steps=5``). Without ``run_dir=`` the run goes to a temporary directory that
    is removed before returning (also on errors); with it, the run directory is kept.
    ``out_png`` is checked to be writable before anything is imported or trained (else a
    :class:`~fluxrl.errors.FluxError`). ``progress`` is called with one line per phase
    (training, sampling, picture), e.g. ``print``.
    Returns ``{"mode_fractions": [4 floats, pooled over seeds], "per_seed": [[4 floats] per seed],
    "png": path, "run_dir": path, or None when it was temporary}``."""
    from fluxrl.plot import check_output_file

    out_png = check_output_file(out_png)
    say = progress or (lambda line: None)
    overrides = list(overrides or [])
    keep = any(o.startswith("run_dir=") for o in overrides)
    with tempfile.TemporaryDirectory(prefix="fluxrl-toy-") as tmp:
        import fluxrl.envs.toy as toy_env
        from fluxrl.config import compose, resolve
        from fluxrl.train.run import load_run_config, train

        extra = [f"algo={algo}", f"env={toy_env.ENV_NAME}"] + TOY
        if not keep:
            extra.append(f"run_dir={Path(tmp) / 'run'}")
        args = extra + overrides
        cfg = compose(args)
        say(f"toy: training {algo} on the 2-D bandit ({cfg.seeds} seed(s); compiling first, "
            "then training; progress=true shows a progress bar)")
        t0 = time.perf_counter()
        result = train(cfg, args)
        say(f"toy: trained in {time.perf_counter() - t0:.1f} s; drawing {SAMPLES} actions per "
            f"seed from the policy{'' if explore_noise else ' without exploration noise'}")
        cfg = resolve(load_run_config(result.run_dir))
        actions = sample_actions(cfg, result.state, SAMPLES, explore_noise)
        run_dir = result.run_dir if keep else None
    fractions = mode_fractions(actions)
    per_seed = [mode_fractions(a) for a in actions]
    say(f"toy: drawing the picture {out_png}")
    png = plot_samples(actions, out_png, fractions_title(algo, int(np.prod(actions.shape[:-1]))),
                       fractions)
    return {"mode_fractions": fractions, "per_seed": per_seed, "png": png, "run_dir": run_dir}
