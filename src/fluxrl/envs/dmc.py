"""DeepMind Control adapter: flattened observations, action repeat, time-limit truncation."""

from __future__ import annotations

import os
import pickle

import numpy as np

from fluxrl.envs.base import EnvSpec, HostEnv

#: The DMC tasks of the benchmark protocol (protocol.md section 2).
PROTOCOL = ["cartpole-balance", "hopper-stand", "cheetah-run", "quadruped-run", "humanoid-walk",
            "humanoid-run", "humanoid-stand", "dog-run"]


def available() -> list[str]:
    """Every ``domain-task`` in the dm_control suite."""
    from dm_control import suite

    return [f"{d}-{t}" for d, t in suite.ALL_TASKS]


class DMCEnv(HostEnv):
    """A dm_control suite task; actions rescaled from [-1, 1] to the task's action spec."""

    def __init__(self, task: str, action_repeat: int = 2, render: bool = False):
        if render:
            os.environ.setdefault("MUJOCO_GL", "egl")
        from dm_control import suite

        self._domain, self._task = task.split("-", 1)
        self._env = suite.load(self._domain, self._task, task_kwargs={"random": 0})
        aspec = self._env.action_spec()
        self._low = np.asarray(aspec.minimum, np.float64)
        self._high = np.asarray(aspec.maximum, np.float64)
        obs_dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
        limit = int(round(self._env._step_limit)) if np.isfinite(self._env._step_limit) else 1000
        self.spec = EnvSpec(f"dmc/{task}", "dmc", obs_dim, int(aspec.shape[0]), action_repeat,
                            -(-limit // action_repeat))
        self._repeat = action_repeat

    @staticmethod
    def _flat(obs) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in obs.values()])

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        return self._flat(self._env.reset().observation)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        total = 0.0
        for _ in range(self._repeat):
            ts = self._env.step(a)
            total += float(ts.reward or 0.0)
            if ts.last():
                break
        last = ts.last()
        terminated = bool(last and ts.discount == 0.0)
        return self._flat(ts.observation), total, terminated, bool(last and not terminated)

    def get_state(self) -> object:
        return pickle.dumps(self._env)

    def set_state(self, state: object) -> None:
        self._env = pickle.loads(state)

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        return self._env.physics.render(height=height, width=width, camera_id=0)

    def close(self) -> None:
        self._env.close()
