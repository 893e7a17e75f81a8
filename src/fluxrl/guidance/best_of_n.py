"""Best-of-N: draw N actions per state from a generative actor and keep the one a critic values most.

It is a guidance mechanism of its own (IDQL, SfBC: fit the reference policy, pick the argmax-Q
sample) and an acting-time add-on for any generative policy (QSM evaluates with the best of 10,
flow-rl ``agent/online/qsm.py``). Pure functions, written once for every agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError
from fluxrl.generative.base import GenerativeModel

Array = jax.Array
#: ``value(obs[..., N, obs_dim], actions[..., N, act_dim]) -> [..., N]``, e.g. the min of a Q
#: ensemble.
ValueFn = Callable[[Array, Array], Array]


def sample_n(model: GenerativeModel, actor: Any, params: Any, obs: Array, key: Array, n: int,
             act_dim: int, **sample_kw: Any) -> Array:
    """``n`` actions per state, ``obs [..., obs_dim] -> [..., n, act_dim]``, by one sampler call
    that embeds each state once (``cond [..., 1, obs_dim]``). ``sample_kw`` goes to
    :meth:`GenerativeModel.sample` (steps, method, eta, ...)."""
    shape = obs.shape[:-1] + (n, act_dim)
    return model.sample(actor, params, obs[..., None, :], key, shape, **sample_kw)


def select_best(actions: Array, values: Array) -> Array:
    """The action with the largest value along the sample axis: ``[..., N, A], [..., N] ->
    [..., A]`` (ties go to the first)."""
    if values.shape != actions.shape[:-1]:
        raise FluxError(f"values must have shape {actions.shape[:-1]}, got {values.shape}")
    best = jnp.argmax(values, axis=-1)
    return jnp.take_along_axis(actions, best[..., None, None], axis=-2)[..., 0, :]


def best_of_n(model: GenerativeModel, actor: Any, params: Any, obs: Array, key: Array, n: int,
              act_dim: int, value: ValueFn, **sample_kw: Any) -> Array:
    """Sample ``n`` actions per state and return the best by ``value``: ``[..., obs_dim] ->
    [..., act_dim]``. With ``n = 1`` the critic is not evaluated."""
    if n < 1:
        raise FluxError(f"best-of-N needs n >= 1 samples, got {n}")
    actions = sample_n(model, actor, params, obs, key, n, act_dim, **sample_kw)
    if n == 1:
        return actions[..., 0, :]
    obs_n = jnp.broadcast_to(obs[..., None, :], actions.shape[:-1] + obs.shape[-1:])
    return select_best(actions, value(obs_n, actions))


def with_best_of_n(agent: Any, n_eval: int = 1, n_act: int = 1) -> Any:
    """Wrap any agent (an off-policy contract: ``act``, ``value``, ``sample`` fields of a frozen
    dataclass) so that evaluation (``n_eval > 1``) and / or training-time acting (``n_act >
    1``) draw N candidate actions per state and take the one ``agent.value`` rates highest.

    Evaluation candidates are the policy's own samples (``agent.sample``: for a diffusion actor its
    sampler, for SAC the tanh-Gaussian); acting candidates are exploratory actions (``agent.act``
    with ``deterministic=False``). ``n = 1`` leaves that path untouched."""
    if n_eval < 1 or n_act < 1:
        raise FluxError(f"best-of-N needs n >= 1 samples, got n_eval={n_eval}, n_act={n_act}")
    if n_eval == 1 and n_act == 1:
        return agent

    def explore_n(state: Any, obs: Array, key: Array, n: int) -> Array:
        acts = jax.vmap(lambda k: agent.act(state, obs, k, False))(jax.random.split(key, n))
        return jnp.swapaxes(acts, 0, 1)  # [n, B, A] -> [B, n, A]

    sample = agent.sample or explore_n

    def act(state: Any, obs: Array, key: Array, deterministic: bool) -> Array:
        n = n_eval if deterministic else n_act
        if n == 1:
            return agent.act(state, obs, key, deterministic)
        cands = (sample if deterministic else explore_n)(state, obs, key, n)
        obs_n = jnp.broadcast_to(obs[..., None, :], cands.shape[:-1] + obs.shape[-1:])
        return select_best(cands, agent.value(state, obs_n, cands))

    return dataclasses.replace(agent, act=act)
