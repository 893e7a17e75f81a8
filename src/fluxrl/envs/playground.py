"""MuJoCo Playground's DeepMind Control suite as JAX tasks: ``playground/<Name>``, e.g.
``playground/CheetahRun`` (PyPI ``playground`` 0.2.0, ``mujoco_playground.dm_control_suite``).

Each task is Playground's raw environment (no Brax wrapper): its ``reset`` and ``step`` are the
task's two functions; :class:`fluxrl.envs.jax_env.JaxEnv` adds the time limit (Playground's
``episode_length``, 1000 for every suite task), auto-reset with a fresh random start and episode
bookkeeping. Playground's ``done`` (a non-finite state) is the termination; its Brax wrapper
instead resets every environment to the first state it drew (``BraxAutoResetWrapper`` without
``full_reset``), which fluxrl does not copy.

The physics implementation is Playground's ``impl`` config, ``jax`` (MJX in JAX) or ``warp``
(MuJoCo Warp); fluxrl uses ``jax`` (the run config's ``physics`` key), the one that runs on a CPU
(benchmarks/results/on-policy-*.md).

Playground's robot tasks (locomotion, manipulation) load MuJoCo Menagerie assets, which Playground
clones from GitHub at first use into ``mujoco_playground/external_deps/mujoco_menagerie`` (commit
1b86ece): they are not offered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from fluxrl.errors import FluxError

PHYSICS = ("jax", "warp")  #: Playground ``impl`` values


def _suite() -> Any:
    try:
        from mujoco_playground import dm_control_suite
    except ImportError as exc:
        raise FluxError(f"playground/ environments need MuJoCo Playground ({exc}); install "
                        "fluxrl with its default dependencies (pip install -e .)") from None
    return dm_control_suite


def available() -> list[str]:
    """Names of the DM Control suite tasks Playground registers."""
    return sorted(_suite().ALL_ENVS)


def unavailable_reason(task: str) -> str | None:
    """Why ``playground/<task>`` cannot be made here, if it is one of Playground's robot tasks."""
    from mujoco_playground import locomotion, manipulation

    if task in set(locomotion.ALL_ENVS) | set(manipulation.ALL_ENVS):
        return (f"playground/{task} is a Playground robot task; it needs MuJoCo Menagerie assets "
                "(Playground clones them from GitHub into mujoco_playground/external_deps/"
                "mujoco_menagerie at first load), and this version of fluxrl offers Playground's "
                "DM Control suite only (fluxrl's docs/environments.md)")
    return None


@dataclass(frozen=True)
class PlaygroundTask:
    """One Playground environment behind :class:`fluxrl.envs.jax_env.JaxTask`."""

    env: Any  #: the ``mujoco_playground`` environment
    obs_dim: int
    act_dim: int
    episode_length: int
    fps: int = 50  #: 1 / Playground's control step, for videos

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        """Playground's reset: ``(its State, observation)``."""
        state = self.env.reset(key)
        return state, state.obs

    def step(self, sim: Any, action: jax.Array):
        """Playground's step; its ``done`` is the termination."""
        state = self.env.step(sim, action)
        return state, state.obs, state.reward, state.done > 0

    def render(self, sims: Any, width: int = 320, height: int = 240) -> list[Any]:
        """Frames of a trajectory of Playground States stacked over time (Playground's own
        renderer, ``MjxEnv.render``: MuJoCo's, headless with ``MUJOCO_GL=egl``)."""
        n = len(jax.tree.leaves(sims)[0])
        states = [jax.tree.map(lambda x, i=i: x[i], sims) for i in range(n)]
        return list(self.env.render(states, height=height, width=width))


def make_task(name: str, physics: str = "jax") -> PlaygroundTask:
    """The Playground DM Control task ``name`` with physics implementation ``physics``."""
    if physics not in PHYSICS:
        raise FluxError(f"physics={physics!r} is not a Playground implementation; choose one of: "
                        + ", ".join(PHYSICS))
    suite = _suite()
    cfg = suite.get_default_config(name)
    cfg.impl = physics
    if int(cfg.get("action_repeat", 1)) != 1:
        raise FluxError(f"playground/{name} repeats actions {cfg.action_repeat} times in "
                        "Playground's config, which fluxrl does not support yet")
    env = suite.load(name, config=cfg)
    obs = env.observation_size
    if not isinstance(obs, int):
        raise FluxError(f"playground/{name} has dict observations {obs}; fluxrl needs a vector")
    return PlaygroundTask(env, obs, env.action_size, int(cfg.episode_length),
                          max(1, int(round(1.0 / float(env.dt)))))
