"""A 2-D action bandit with a multimodal reward: the toy of ``fluxrl toy`` (issue 3).

Every episode is one step. The observation is the constant ``[0.0]``; the action is a point of
``[-1, 1]^2`` and the reward is a sum of four equal Gaussian bumps of height 1 and standard
deviation :data:`BUMP_STD` = 0.2 at the corners of a square of side 1, :data:`MODES` =
``(+-0.5, +-0.5) + (0.1, 0.1)``::

    r(a) = sum_k exp(-|a - m_k|^2 / (2 * 0.2^2))

Neighbouring bumps are 1 apart (5 std), so the optimum is four separate, equally good modes: a
policy that can represent several modes may keep mass on all of them, a unimodal one (SAC's
tanh-Gaussian) has to pick one. The square is shifted off the origin by :data:`SHIFT` so that a
policy initialised around ``a = 0`` does not sit at a saddle of exact symmetry: centred, a broad
tanh-Gaussian is a stationary point of ``E[r]`` and SAC stays there (measured).

Importing this module registers the task with Gymnasium as ``fluxrl/Bandit2D-v0``, so it trains as
``env=gym/fluxrl/Bandit2D-v0``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

ENV_ID = "fluxrl/Bandit2D-v0"  #: Gymnasium id of the bandit
ENV_NAME = f"gym/{ENV_ID}"  #: fluxrl env name of the bandit
SHIFT = np.array([0.1, 0.1])  #: offset of the square of bumps from the origin
MODES = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]], np.float64) + SHIFT  #: bump centres
BUMP_STD = 0.2  #: standard deviation of every bump
OBS_DIM = 1  #: size of the constant observation


def reward(actions: np.ndarray) -> np.ndarray:
    """Reward of actions ``[..., 2]``: the sum of the four bumps, shape ``[...]``."""
    a = np.asarray(actions, np.float64)[..., None, :]
    d2 = ((a - MODES) ** 2).sum(-1)
    return np.exp(-d2 / (2 * BUMP_STD**2)).sum(-1)


def reward_grid(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reward on an ``n x n`` grid over ``[-1, 1]^2``: ``(x [n], y [n], r [n, n])`` with
    ``r[i, j] = reward((x[j], y[i]))`` (row = y), ready for ``imshow``/``pcolormesh``."""
    x = np.linspace(-1.0, 1.0, n)
    y = np.linspace(-1.0, 1.0, n)
    xx, yy = np.meshgrid(x, y)
    return x, y, reward(np.stack([xx, yy], -1))


class Bandit2D(gymnasium.Env):
    """One-step bandit with a constant observation and the four-bump reward of :func:`reward`."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, render_mode: str | None = None):
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(OBS_DIM, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        return np.zeros(OBS_DIM, np.float32), float(reward(a)), True, False, {}


if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=Bandit2D, max_episode_steps=1)
