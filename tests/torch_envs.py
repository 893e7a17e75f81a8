"""A small batched torch-CPU environment with IsaacLab's contract (``ManagerBasedRLEnv.step``:
observations under ``obs["policy"]``, finished environments reset inside ``step`` with no final
observation), for the IsaacLab adapter's tests: jax/PointReach's task (fluxrl.envs.jax_tasks)
written in torch."""

from __future__ import annotations

import gymnasium
import numpy as np
import torch


class TorchPointReach:
    """``num_envs`` points reaching for goals; reward ``-distance``, terminated inside the goal
    radius, truncated after ``max_episode_length`` steps."""

    speed, radius = 0.1, 0.1

    def __init__(self, num_envs: int, device: str = "cpu", max_episode_length: int = 50,
                 seed: int = 0):
        self.num_envs, self.device = num_envs, device
        self.max_episode_length = max_episode_length
        self.single_action_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_observation_space = gymnasium.spaces.Dict(
            {"policy": gymnasium.spaces.Box(-np.inf, np.inf, (4,), np.float32)})
        self.gen = torch.Generator(device).manual_seed(seed)
        self.sim = torch.zeros((num_envs, 4), device=device)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.actions_seen: list[torch.Tensor] = []
        self.closed = False

    def _reset_idx(self, ids: torch.Tensor) -> None:
        self.sim[ids] = torch.rand((len(ids), 4), generator=self.gen, device=self.device) * 2 - 1
        self.episode_length_buf[ids] = 0

    def _obs(self) -> dict:
        return {"policy": torch.cat([self.sim[:, :2], self.sim[:, 2:] - self.sim[:, :2]], -1)}

    def reset(self) -> tuple[dict, dict]:
        self._reset_idx(torch.arange(self.num_envs, device=self.device))
        return self._obs(), {}

    def step(self, action: torch.Tensor):
        self.actions_seen.append(action)
        point = torch.clamp(self.sim[:, :2] + self.speed * action, -1.0, 1.0)
        self.sim[:, :2] = point
        dist = torch.linalg.norm(self.sim[:, 2:] - point, dim=-1)
        self.episode_length_buf += 1
        terminated = dist < self.radius
        truncated = self.episode_length_buf >= self.max_episode_length
        ids = (terminated | truncated).nonzero(as_tuple=False).squeeze(-1)
        if len(ids):
            self._reset_idx(ids)
        return self._obs(), -dist, terminated, truncated, {"log": {}}

    def close(self) -> None:
        self.closed = True
