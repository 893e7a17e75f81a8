"""The agent contracts, one per setting, and the record each algorithm registers.

An agent is a few pure functions of one seed's state (a pytree); programs ``vmap`` them over seeds.
Agents are built from the sizes they need (:class:`Shapes`), never from an environment object, so
no agent can read a task's name: what depends on the task is in :mod:`fluxrl.task_defaults`.
Each algorithm declares its cell in the paper's grid (protocol.md section 1), guidance family x
reference policy, and the setting it trains in; the setting picks the contract its ``make``
returns and the program that trains it (:mod:`fluxrl.train.run`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
from flax import struct

#: Guidance mechanisms (rows of paper Table 1), plus classic baselines outside the grid.
FAMILIES = ("best_of_n", "q_guidance", "weighted_matching", "reparam", "policy_gradient",
            "baseline")
#: Reference policies (columns of paper Table 1): Unif(A), pi_{k-1}, pi_D; ``none`` for TD3.
REFERENCES = ("uniform", "previous", "dataset", "none")
#: Training settings, each with its own agent contract and program.
SETTINGS = ("off_policy", "on_policy", "offline")
#: Whose code an algorithm's defaults follow (``AlgoInfo.follows``).
FOLLOWS = {"flowrl": "FlowRL protocol", "authors": "original authors",
           "brax": "Brax (google/brax)"}


@dataclass(frozen=True)
class Shapes:
    """What an agent may know about its task: the sizes of its inputs and outputs."""

    obs_dim: int  #: length of the flattened float32 observation
    act_dim: int  #: action dimensions, each in [-1, 1]


@dataclass(frozen=True)
class OffPolicyAgent:
    """Off-policy contract: act on single states, update on replay minibatches."""

    #: ``init(key) -> state``
    init: Callable[[jax.Array], Any]
    #: ``act(state, obs[n, obs_dim], key, deterministic) -> action[n, act_dim]`` in [-1, 1]
    act: Callable[[Any, jax.Array, jax.Array, bool], jax.Array]
    #: ``update(state, batch, key, update_index) -> (state, metrics)``; ``batch`` holds ``obs,
    #: action, reward, next_obs, terminated``; ``update_index`` counts gradient updates from 0,
    #: the same for every seed (so schedules stay real branches under vmap)
    update: Callable[[Any, dict, jax.Array, jax.Array], tuple[Any, dict]]
    #: ``value(state, obs[..., obs_dim], action[..., act_dim]) -> [...]``: the online critics'
    #: value (reduced by ``critic_agg``) that best-of-N picks by
    value: Callable[[Any, jax.Array, jax.Array], jax.Array]
    #: ``sample(state, obs[n, obs_dim], key, k) -> [n, k, act_dim]``: k draws of the policy itself
    #: (no added exploration noise), the candidates of best-of-N at evaluation; None means
    #: ``act(..., deterministic=False)`` drawn k times
    sample: Callable[[Any, jax.Array, jax.Array, int], jax.Array] | None = None


@struct.dataclass
class Rollout:
    """Steps of a rollout with their advantages. The on-policy program collects ``[T, N, ...]``
    (time-major), computes the advantages, flattens and shuffles the steps and hands
    ``OnPolicyAgent.update`` minibatches of this type whose arrays are ``[B, ...]``."""

    obs: jax.Array  #: ``[T, N, obs_dim]`` (normalised as the agent saw them)
    action: jax.Array  #: ``[T, N, act_dim]`` in [-1, 1]
    reward: jax.Array  #: ``[T, N]``
    terminated: jax.Array  #: ``[T, N]``, 1 where the episode ended (no bootstrap)
    truncated: jax.Array  #: ``[T, N]``, 1 where a time limit cut it (bootstrap from the value)
    extras: dict  #: what ``act`` returned besides the action, each ``[T, N, ...]``
    advantage: jax.Array  #: ``[T, N]`` GAE advantages
    target: jax.Array  #: ``[T, N]`` value targets (advantage + value)


@dataclass(frozen=True)
class OnPolicyAgent:
    """On-policy contract: acting returns what the update needs besides the action (a
    log-probability or its surrogate, the value, a denoising chain, ...), and the update takes a
    whole :class:`Rollout`."""

    #: ``init(key) -> state``
    init: Callable[[jax.Array], Any]
    #: ``act(state, obs[n, obs_dim], key, deterministic) -> (action[n, act_dim], extras)``;
    #: ``extras`` is a dict of ``[n, ...]`` arrays (e.g. ``log_prob``, ``value``, ``chain``)
    act: Callable[[Any, jax.Array, jax.Array, bool], tuple[jax.Array, dict]]
    #: ``value(state, obs[..., obs_dim]) -> [...]``: the state value, to bootstrap truncations
    value: Callable[[Any, jax.Array], jax.Array]
    #: ``update(state, minibatch, key, update_index) -> (state, metrics)``: one gradient step on
    #: a :class:`Rollout` minibatch ``[B, ...]``; ``update_index`` counts minibatch updates from 0
    update: Callable[[Any, Rollout, jax.Array, jax.Array], tuple[Any, dict]]


#: The contract an algorithm of each setting implements (offline agents share the off-policy one:
#: their updates take minibatches of a dataset in the same replay layout).
CONTRACTS: dict[str, type] = {"off_policy": OffPolicyAgent, "on_policy": OnPolicyAgent,
                              "offline": OffPolicyAgent}


@dataclass(frozen=True)
class AlgoInfo:
    """A registered algorithm and its place in the taxonomy."""

    name: str  #: name in the registry, ``algo=<name>``
    family: str  #: guidance mechanism, one of :data:`FAMILIES`
    reference: str  #: reference policy, one of :data:`REFERENCES`
    setting: str  #: one of :data:`SETTINGS`; picks the contract and the program
    make: Callable[..., Any]  #: ``make(algo_cfg, shapes: Shapes) -> CONTRACTS[setting]``
    paper: str  #: citation of the method
    config: type  #: the algorithm's config dataclass (a subclass of ``fluxrl.agents.config.AlgoConfig``)
    follows: str = ""  #: whose implementation the defaults and update follow: ``flowrl`` (the FlowRL protocol: typoverflow/flow-rl at b1385e0 / bae22f4, which departs from the authors' code as the agent's docstring lists) or ``authors`` (the original authors' code)

    def __post_init__(self):
        for value, allowed in ((self.family, FAMILIES), (self.reference, REFERENCES),
                               (self.setting, SETTINGS), (self.follows, tuple(FOLLOWS))):
            if value not in allowed:
                raise ValueError(f"{self.name}: {value!r} is not one of {allowed}")
