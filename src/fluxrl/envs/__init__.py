"""Environments: host ones (``gym/<Gymnasium id>``, ``dmc/<domain>-<task>``) behind
:class:`HostEnv`, JAX ones (``jax/<Name>``, ``playground/<Name>``) behind
:class:`fluxrl.envs.jax_env.JaxEnv`, and batched torch ones (``isaaclab/<Task>``) behind
:class:`fluxrl.envs.isaaclab.TorchVecEnv`."""

from __future__ import annotations

from functools import partial

from fluxrl.envs.base import EnvSpec, HostEnv, Transition, VecEnv
from fluxrl.errors import FluxError, close_matches

SUITES = ("gym", "dmc", "jax", "playground", "isaaclab")
#: Suites whose environments are JAX functions (stepped on the device inside a jitted program);
#: the others are host simulators.
JAX_SUITES = ("jax", "playground")
#: Suites of batched torch simulators stepped from the host by the on-policy program's
#: host-stepped form (:mod:`fluxrl.train.on_policy_host`).
TORCH_SUITES = ("isaaclab",)

#: Frame skip per suite (protocol.md section 2, paper Table 3): Gym 1, DMC 2; JAX envs 1.
DEFAULT_ACTION_REPEAT = {"gym": 1, "dmc": 2, "jax": 1, "playground": 1, "isaaclab": 1}

__all__ = ["EnvSpec", "HostEnv", "Transition", "VecEnv", "check_env_name", "make_env",
           "make_jax_env", "make_vec_env", "DEFAULT_ACTION_REPEAT", "JAX_SUITES", "TORCH_SUITES"]


def _available(suite: str) -> list[str]:
    if suite == "jax":
        from fluxrl.envs.jax_tasks import TASKS

        return list(TASKS)
    if suite == "playground":
        from fluxrl.envs import playground

        return playground.available()
    if suite == "isaaclab":
        from fluxrl.envs import isaaclab

        return isaaclab.available()
    if suite == "gym":
        from fluxrl.envs import gym

        return gym.available()
    from fluxrl.envs import dmc

    return dmc.available()


def check_env_name(name: str) -> tuple[str, str]:
    """Split ``suite/task`` and check it exists; raise :class:`FluxError` with close matches."""
    if not isinstance(name, str) or "/" not in name:
        raise FluxError(
            f"env={name!r} is not of the form suite/task; use e.g. gym/HalfCheetah-v5 or "
            "dmc/cheetah-run")
    suite, task = name.split("/", 1)
    if suite not in SUITES:
        raise FluxError(f"unknown env suite {suite!r} in env={name}; {close_matches(suite, SUITES)}")
    options = _available(suite)
    if task not in options and suite in ("playground", "isaaclab"):
        if suite == "playground":
            from fluxrl.envs.playground import unavailable_reason
        else:
            from fluxrl.envs.isaaclab import unavailable_reason
        reason = unavailable_reason(task)
        if reason:
            raise FluxError(reason)
    if task not in options:
        raise FluxError(f"unknown env {name!r}; {close_matches(task, options, prefix=suite + '/')}")
    return suite, task


def make_env(name: str, action_repeat: int | None = None, render: bool = False) -> HostEnv:
    """Build one host environment from its full name."""
    suite, task = check_env_name(name)
    if suite in JAX_SUITES + TORCH_SUITES:
        raise FluxError(f"env={name} is a batched environment, trained by the on-policy "
                        "algorithms (fluxrl algos); off-policy algorithms need a host env "
                        "(gym/..., dmc/...)")
    repeat = action_repeat or DEFAULT_ACTION_REPEAT[suite]
    if suite == "gym":
        from fluxrl.envs.gym import GymEnv

        return GymEnv(task, repeat, render)
    from fluxrl.envs.dmc import DMCEnv

    return DMCEnv(task, repeat, render)


def make_vec_env(name: str, seeds: list[int], envs_per_seed: int = 1,
                 action_repeat: int | None = None) -> VecEnv:
    """``len(seeds) x envs_per_seed`` environments; seed ``s`` owns row ``s``."""
    check_env_name(name)
    return VecEnv(partial(make_env, name, action_repeat), seeds, envs_per_seed)


def make_jax_env(name: str, physics: str = "jax"):
    """Build one JAX environment (:class:`fluxrl.envs.jax_env.JaxEnv`) from its full name;
    ``physics`` picks MuJoCo Playground's implementation (``jax`` or ``warp``)."""
    from fluxrl.envs.jax_env import JaxEnv

    suite, task = check_env_name(name)
    if suite not in JAX_SUITES:
        raise FluxError(f"env={name} is a host simulator; the on-policy program steps JAX "
                        f"environments on the device: choose one of "
                        f"{', '.join(f'{s}/{t}' for s in JAX_SUITES for t in _available(s))}")
    if suite == "playground":
        from fluxrl.envs.playground import make_task

        return JaxEnv(make_task(task, physics), name)
    from fluxrl.envs.jax_tasks import TASKS

    return JaxEnv(TASKS[task](), name)
