"""JAX environments: the protocol beside the host one (:mod:`fluxrl.envs.base`).

A *task* is two pure functions of one environment, ``reset(key) -> (sim, obs)`` and
``step(sim, action) -> (sim, obs, reward, terminated)``, with actions in [-1, 1]. :class:`JaxEnv`
wraps a task with what every on-policy program needs, still as pure functions of one environment
(the program ``vmap`` s them over ``num_envs`` and over seeds):

- auto-reset: an episode that ends is replaced by a fresh one inside ``step``, and the step's
  output keeps the observation that ended it (``next_obs``), so a time-out can bootstrap from
  ``V(next_obs)``;
- termination and truncation kept apart: ``terminated`` comes from the task, ``truncated`` from
  the time limit ``episode_length`` (a step that does both counts as terminated);
- episode bookkeeping: the return and length of every episode that ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct


class JaxTask(Protocol):
    """One environment as pure functions; actions in [-1, 1]."""

    obs_dim: int  #: length of the float32 observation
    act_dim: int  #: action dimensions
    episode_length: int  #: time limit in steps (truncation)

    def reset(self, key: jax.Array) -> tuple[Any, jax.Array]:
        """A fresh episode: ``(sim state, observation)``."""

    def step(self, sim: Any, action: jax.Array) -> tuple[Any, jax.Array, jax.Array, jax.Array]:
        """``(sim state, observation, reward, terminated)`` after ``action``."""

    def render(self, sims: Any, width: int, height: int) -> list:
        """uint8 RGB frames ``[H, W, 3]`` of sim states stacked over time (on the host), for
        videos; optional."""


@struct.dataclass
class EnvState:
    """One environment between steps."""

    sim: Any  #: the task's own state
    obs: jax.Array  #: the observation to act on (the first of a new episode after a reset)
    t: jax.Array  #: steps taken in the current episode
    ep_return: jax.Array  #: return of the current episode so far
    key: jax.Array  #: key of the next reset


@struct.dataclass
class StepOut:
    """What one step produced (all scalars but ``next_obs``)."""

    next_obs: jax.Array  #: the observation the action led to, before any reset
    reward: jax.Array  #: reward of the step
    terminated: jax.Array  #: 1.0 where the episode ended by the task (no bootstrap)
    truncated: jax.Array  #: 1.0 where the time limit cut it and the task did not end it
    done_return: jax.Array  #: return of the episode that ended here, 0 where none did
    done_length: jax.Array  #: its length in steps, 0 where none ended


@dataclass(frozen=True)
class JaxEnv:
    """A task with auto-reset, the time limit and episode bookkeeping (module docs)."""

    task: Any  #: a :class:`JaxTask`
    name: str  #: full name, e.g. ``jax/Pendulum``

    @property
    def obs_dim(self) -> int:
        """Observation length."""
        return self.task.obs_dim

    @property
    def act_dim(self) -> int:
        """Action dimensions."""
        return self.task.act_dim

    @property
    def episode_length(self) -> int:
        """Time limit in steps."""
        return self.task.episode_length

    @property
    def fps(self) -> int:
        """Frames per second of real time in a video (the task's ``fps``, else 50)."""
        return int(getattr(self.task, "fps", 50))

    def reset(self, key: jax.Array) -> EnvState:
        """A fresh environment whose resets follow from ``key``."""
        k_reset, k_next = jax.random.split(key)
        sim, obs = self.task.reset(k_reset)
        return EnvState(sim, obs, jnp.int32(0), jnp.float32(0.0), k_next)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, StepOut]:
        """Step with ``action`` in [-1, 1]; an episode that ends is reset in place."""
        sim, obs, reward, terminated = self.task.step(state.sim, jnp.clip(action, -1.0, 1.0))
        terminated = terminated.astype(jnp.float32)
        t = state.t + 1
        truncated = jnp.where(terminated > 0, 0.0, (t >= self.task.episode_length).astype(jnp.float32))
        done = (terminated + truncated) > 0
        ep_return = state.ep_return + reward
        k_reset, k_next = jax.random.split(state.key)
        sim0, obs0 = self.task.reset(k_reset)
        new = EnvState(
            sim=jax.tree.map(lambda a, b: jnp.where(done, a, b), sim0, sim),
            obs=jnp.where(done, obs0, obs),
            t=jnp.where(done, 0, t),
            ep_return=jnp.where(done, 0.0, ep_return),
            key=jnp.where(done, k_next, state.key),
        )
        out = StepOut(obs, reward.astype(jnp.float32), terminated, truncated,
                      jnp.where(done, ep_return, 0.0), jnp.where(done, t, 0))
        return new, out
