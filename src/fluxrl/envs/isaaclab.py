"""IsaacLab tasks as ``isaaclab/<Task>`` (e.g. ``isaaclab/Isaac-Cartpole-v0``): batched torch
environments on the GPU, stepped from the host by :mod:`fluxrl.train.on_policy_host`.

The contract is IsaacLab's ``ManagerBasedRLEnv`` / ``DirectRLEnv`` (read in isaac-sim/IsaacLab
at 02dc5f7, ``source/isaaclab/isaaclab/envs/manager_based_rl_env.py``, ``step``):

- ``reset() -> (obs, extras)`` and ``step(actions[num_envs, act_dim]) -> (obs, reward,
  terminated, truncated, extras)``, all torch tensors on the simulation's device, the policy's
  observations under ``obs["policy"]``;
- environments whose episode ended are reset inside ``step``: the returned observation is the
  first of the next episode and the episode's last one is not kept. A time-out therefore
  bootstraps from the value of the step's own observation, ``r + gamma V(s_t)`` (as rsl_rl
  does), which :class:`TorchVecEnv` encodes by handing back ``s_t`` as the "next observation"
  of a truncated step.

Tensors cross between torch and JAX through DLPack without a host copy (``torch.from_dlpack``
and ``jax.dlpack.from_dlpack``; on a GPU both sides stay on it). Booleans become float32, and
int64 becomes int32 unless JAX's x64 mode is on (JAX's own rule); float64 becomes float32.

IsaacLab itself (3.0: Python 3.12, torch built for CUDA 13, Isaac Sim) cannot be installed on a
CPU-only machine: docs/environments.md says how to install it beside fluxrl. Any other batched
torch environment with the same contract can be plugged in under a name of its own through
:data:`FACTORIES` (the tests do that with a small torch-CPU task).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError

#: ``name -> factory(num_envs, device) -> env`` for batched torch environments of IsaacLab's
#: contract that are not IsaacLab tasks; ``isaaclab/<name>`` looks here before IsaacLab's registry.
FACTORIES: dict[str, Callable[[int, str], Any]] = {}

INSTALL = ("isaaclab/ tasks need IsaacLab 3.0 (Python 3.12, torch with CUDA 13, Isaac Sim) "
           "installed beside fluxrl; see docs/environments.md, section IsaacLab")


class TorchEnv(Protocol):
    """What fluxrl reads of an IsaacLab environment (``env.unwrapped`` of ``gym.make``)."""

    num_envs: int  #: environments stepped together
    max_episode_length: int  #: time limit in steps
    single_action_space: Any  #: a Box of shape ``(act_dim,)``
    single_observation_space: Any  #: a Dict with a ``policy`` Box of shape ``(obs_dim,)``

    def reset(self) -> tuple[dict, dict]: ...

    def step(self, action: Any) -> tuple[dict, Any, Any, Any, dict]: ...


def to_jax(tensor: Any) -> jax.Array:
    """A torch tensor as a JAX array on the same device, without a copy where the dtype is kept
    (booleans become float32, float64 float32, int64 int32 unless x64 is on)."""
    import torch

    if tensor.dtype == torch.bool or tensor.dtype == torch.float64:
        tensor = tensor.to(torch.float32)
    elif tensor.dtype == torch.int64 and not jax.config.jax_enable_x64:
        tensor = tensor.to(torch.int32)
    return jax.dlpack.from_dlpack(tensor.contiguous())


def to_torch(array: jax.Array) -> Any:
    """A JAX array as a torch tensor sharing its buffer."""
    import torch

    return torch.from_dlpack(array)


def available() -> list[str]:
    """Task names ``isaaclab/`` accepts: plugged-in factories, and IsaacLab's registered
    ``Isaac-*`` tasks when IsaacLab is importable."""
    names = list(FACTORIES)
    try:
        import gymnasium as gym
        import isaaclab_tasks  # noqa: F401  (registers the tasks)
    except ImportError:
        return names
    return names + sorted(k for k in gym.registry if k.startswith("Isaac-"))


def unavailable_reason(task: str) -> str | None:
    """A line for an ``Isaac-*`` task asked for while IsaacLab is not installed."""
    if task.startswith("Isaac-") and task not in FACTORIES:
        try:
            import isaaclab_tasks  # noqa: F401
        except ImportError:
            return f"env=isaaclab/{task}: {INSTALL}"
    return None


def _make_isaaclab(task: str, num_envs: int, device: str) -> Any:
    """Launch Isaac Sim headless and build ``task`` with ``num_envs`` environments."""
    try:
        from isaaclab.app import AppLauncher
    except ImportError:
        raise FluxError(f"env=isaaclab/{task}: {INSTALL}") from None
    AppLauncher(headless=True, device=device)  # must start before isaaclab_tasks is imported
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401
    from isaaclab_tasks.utils import parse_env_cfg

    env_cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
    return gym.make(task, cfg=env_cfg).unwrapped


class TorchVecEnv:
    """A batched torch environment of IsaacLab's contract seen from JAX: observations, rewards
    and flags as JAX arrays, episode bookkeeping on the JAX side."""

    def __init__(self, env: TorchEnv, name: str):
        self.env, self.name = env, name
        self.num_envs = int(env.num_envs)
        self.obs_dim = int(env.single_observation_space["policy"].shape[-1])
        self.act_dim = int(env.single_action_space.shape[-1])
        self.episode_length = int(env.max_episode_length)
        self.obs: jax.Array | None = None

    def reset(self) -> jax.Array:
        """Reset every environment; returns the observations ``[num_envs, obs_dim]``."""
        obs, _ = self.env.reset()
        self.obs = to_jax(obs["policy"])
        return self.obs

    def step(self, action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
        """One step of every environment on ``action [num_envs, act_dim]`` in [-1, 1].

        Returns ``(obs, next_obs, reward, terminated, truncated)``: ``obs`` to act on next (a
        new episode's first where one ended), ``next_obs`` to bootstrap from (the step's own
        observation where a time limit cut the episode, as IsaacLab keeps no final one)."""
        if self.obs is None:
            raise RuntimeError("TorchVecEnv.step before reset")
        if action.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"{self.name}: actions of shape {action.shape}, expected "
                             f"{(self.num_envs, self.act_dim)}")
        obs, reward, terminated, truncated, _ = self.env.step(to_torch(action))
        obs, reward = to_jax(obs["policy"]), to_jax(reward).astype(jnp.float32)
        terminated, truncated = to_jax(terminated), to_jax(truncated)
        truncated = truncated * (1.0 - terminated)  # a step both ended and timed out ends
        next_obs = jnp.where(truncated[:, None] > 0, self.obs, obs)
        self.obs = obs
        return obs, next_obs, reward, terminated, truncated

    def close(self) -> None:
        """Close the simulator if it has ``close``."""
        close = getattr(self.env, "close", None)
        if close is not None:
            close()


def make_torch_env(task: str, num_envs: int, device: str) -> TorchVecEnv:
    """``isaaclab/<task>`` with ``num_envs`` environments on ``device`` (a torch device name)."""
    if task in FACTORIES:
        env = FACTORIES[task](num_envs, device)
    else:
        env = _make_isaaclab(task, num_envs, device)
    return TorchVecEnv(env, f"isaaclab/{task}")
