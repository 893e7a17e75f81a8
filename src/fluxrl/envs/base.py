"""The host-environment interface every suite adapter implements, and the vectorised driver.

Conventions (design.md section 3): actions live in [-1, 1] and adapters rescale; termination and
truncation are distinct (the learner bootstraps on truncation); one adapter step may repeat the
action ``action_repeat`` times and sums the rewards.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about a task that networks and trainers need."""

    name: str  #: full name, e.g. ``gym/HalfCheetah-v5``
    suite: str  #: ``gym`` or ``dmc``
    obs_dim: int  #: length of the flattened float32 observation
    act_dim: int  #: number of action dimensions, each in [-1, 1]
    action_repeat: int  #: simulator frames per agent step
    max_episode_steps: int  #: agent steps before truncation


class HostEnv(abc.ABC):
    """One simulator instance on the host, with actions in [-1, 1]."""

    spec: EnvSpec

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode (seeding the simulator when ``seed`` is given); return the observation."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """Apply ``action`` (in [-1, 1]) ``action_repeat`` times: obs, summed reward, terminated, truncated."""

    @abc.abstractmethod
    def get_state(self) -> object:
        """Everything needed to continue this episode bit-exactly, as plain data.

        Plain data is nested dicts (str keys), lists and tuples of numpy arrays, Python ints (any
        size), floats, bools, str and None: what :mod:`fluxrl.train.checkpoint` stores as json +
        npz without pickle. Restoring it into a fresh instance of the same task and stepping the
        same actions must give the same observations and rewards, bit for bit."""

    @abc.abstractmethod
    def set_state(self, state: object) -> None:
        """Restore what :meth:`get_state` returned, also after it went through a checkpoint (so
        arrays may come back as copies and nothing else of the original object survives)."""

    @abc.abstractmethod
    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        """An RGB frame of the current state (headless)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release simulator and renderer resources."""


@dataclass
class Transition:
    """One vectorised step, shaped ``[seeds, envs, ...]``; ``next_obs`` is the true successor."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray


class VecEnv:
    """``seeds x envs`` host environments stepped in lockstep with automatic reset.

    Seed ``s`` (the run's ``seed + k`` for group member ``k``) owns its own simulators and its own
    random-action generator, so a seed trained inside a group sees exactly what it sees alone.
    """

    def __init__(self, make, seeds: list[int], envs_per_seed: int = 1):
        self.seeds = list(seeds)
        self.envs_per_seed = envs_per_seed
        self.envs: list[list[HostEnv]] = [
            [make() for _ in range(envs_per_seed)] for _ in self.seeds
        ]
        self.spec: EnvSpec = self.envs[0][0].spec
        shape = (len(self.seeds), envs_per_seed)
        self.rngs = [np.random.default_rng([s, 7]) for s in self.seeds]
        self.obs = np.zeros(shape + (self.spec.obs_dim,), np.float32)
        self.ep_return = np.zeros(shape, np.float64)
        self.ep_length = np.zeros(shape, np.int64)
        self.finished: list[list[tuple[float, int]]] = [[] for _ in self.seeds]

    def reset(self) -> np.ndarray:
        """Seed and reset every simulator; return observations ``[seeds, envs, obs_dim]``."""
        for i, seed in enumerate(self.seeds):
            for j, env in enumerate(self.envs[i]):
                self.obs[i, j] = env.reset(seed=seed * 1000 + j)
        self.ep_return[:] = 0
        self.ep_length[:] = 0
        return self.obs.copy()

    def random_actions(self) -> np.ndarray:
        """Uniform actions in [-1, 1] from each seed's own generator."""
        a = [r.uniform(-1, 1, (self.envs_per_seed, self.spec.act_dim)) for r in self.rngs]
        return np.asarray(a, np.float32)

    def step(self, actions: np.ndarray) -> tuple[Transition, np.ndarray]:
        """Step all simulators; return the transition and the observations to act on next."""
        shape = self.obs.shape[:2]
        next_obs = np.empty_like(self.obs)
        reward = np.empty(shape, np.float32)
        terminated = np.zeros(shape, np.float32)
        obs_prev = self.obs.copy()
        for i in range(shape[0]):
            for j in range(shape[1]):
                env = self.envs[i][j]
                o, r, term, trunc = env.step(actions[i, j])
                next_obs[i, j] = o
                reward[i, j] = r
                terminated[i, j] = float(term)
                self.ep_return[i, j] += r
                self.ep_length[i, j] += 1
                if term or trunc:
                    self.finished[i].append((float(self.ep_return[i, j]), int(self.ep_length[i, j])))
                    self.ep_return[i, j] = 0
                    self.ep_length[i, j] = 0
                    o = env.reset()
                self.obs[i, j] = o
        tr = Transition(obs_prev, np.asarray(actions, np.float32), reward, next_obs, terminated)
        return tr, self.obs.copy()

    def pop_finished(self) -> list[list[tuple[float, int]]]:
        """Episodes (return, length) finished since the last call, per seed."""
        out, self.finished = self.finished, [[] for _ in self.seeds]
        return out

    def get_state(self) -> dict:
        """Simulator states, bookkeeping and random-action generators, for exact resume.

        Plain data (see :meth:`HostEnv.get_state`): ``envs`` (per seed, per env), ``obs``,
        ``ep_return``, ``ep_length`` (arrays) and ``rngs`` (each generator's bit-generator state,
        a dict with 128-bit ints for PCG64). Episodes finished but not yet popped are not kept."""
        return {
            "envs": [[e.get_state() for e in row] for row in self.envs],
            "obs": self.obs.copy(),
            "ep_return": self.ep_return.copy(),
            "ep_length": self.ep_length.copy(),
            "rngs": [r.bit_generator.state for r in self.rngs],
        }

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (``seeds x envs`` must match)."""
        shape = (len(self.seeds), self.envs_per_seed)
        got = (len(state["envs"]), len(state["envs"][0]) if state["envs"] else 0)
        if got != shape:
            from fluxrl.errors import FluxError

            raise FluxError(f"the saved environment state is for {got[0]} seeds x {got[1]} envs, "
                            f"this run has {shape[0]} x {shape[1]}")
        for row, srow in zip(self.envs, state["envs"], strict=True):
            for env, s in zip(row, srow, strict=True):
                env.set_state(s)
        self.obs[:] = state["obs"]
        self.ep_return[:] = state["ep_return"]
        self.ep_length[:] = state["ep_length"]
        for r, s in zip(self.rngs, state["rngs"], strict=True):
            r.bit_generator.state = s

    def close(self) -> None:
        """Close every simulator."""
        for row in self.envs:
            for env in row:
                env.close()
