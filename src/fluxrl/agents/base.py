"""The agent interface and the algorithm registry that makes the taxonomy executable.

An agent is three pure functions of one seed's state; trainers ``vmap`` them over seeds. Each
algorithm declares its cell in the paper's grid (protocol.md section 1): guidance family x reference
policy, plus the setting it trains in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

from fluxrl.errors import FluxError, close_matches

#: Guidance mechanisms (rows of paper Table 1), plus classic baselines outside the grid.
FAMILIES = ("best_of_n", "q_guidance", "weighted_matching", "reparam", "policy_gradient",
            "baseline")
#: Reference policies (columns of paper Table 1): Unif(A), pi_{k-1}, pi_D; ``none`` for TD3.
REFERENCES = ("uniform", "previous", "dataset", "none")
SETTINGS = ("off_policy", "on_policy", "offline")
#: Whose code an algorithm's defaults follow (``AlgoInfo.follows``).
FOLLOWS = {"flowrl": "FlowRL protocol", "authors": "original authors"}


@dataclass(frozen=True)
class Agent:
    """Pure functions of one seed's agent state (a pytree)."""

    #: ``init(key) -> state``
    init: Callable[[jax.Array], Any]
    #: ``act(state, obs[n, obs_dim], key, deterministic) -> action[n, act_dim]`` in [-1, 1]
    act: Callable[[Any, jax.Array, jax.Array, bool], jax.Array]
    #: ``update(state, batch, key, step) -> (state, metrics)``; ``step`` is the global update
    #: index, shared by all seeds (so schedules stay real branches under vmap)
    update: Callable[[Any, dict, jax.Array, jax.Array], tuple[Any, dict]]
    #: ``value(state, obs[..., obs_dim], action[..., act_dim]) -> [...]``: the online critics'
    #: value (reduced by ``critic_agg``) that best-of-N picks by
    value: Callable[[Any, jax.Array, jax.Array], jax.Array]
    #: ``sample(state, obs[n, obs_dim], key, k) -> [n, k, act_dim]``: k draws of the policy itself
    #: (no added exploration noise), the candidates of best-of-N at evaluation; None means
    #: ``act(..., deterministic=False)`` drawn k times
    sample: Callable[[Any, jax.Array, jax.Array, int], jax.Array] | None = None


@dataclass(frozen=True)
class AlgoInfo:
    """A registered algorithm and its place in the taxonomy."""

    name: str
    family: str
    reference: str
    setting: str
    make: Callable[..., Agent]  #: ``make(algo_cfg, env_spec) -> Agent``
    paper: str  #: citation of the method
    config: type  #: the algorithm's config dataclass (a subclass of ``fluxrl.config.AlgoConfig``)
    follows: str = ""  #: whose implementation the defaults and update follow: ``flowrl`` (the FlowRL protocol: typoverflow/flow-rl at b1385e0 / bae22f4, which departs from the authors' code as the agent's docstring lists) or ``authors`` (the original authors' code)


REGISTRY: dict[str, AlgoInfo] = {}


def register(info: AlgoInfo) -> AlgoInfo:
    """Add an algorithm to the registry (checks its cell names)."""
    assert info.family in FAMILIES and info.reference in REFERENCES and info.setting in SETTINGS
    assert info.follows in FOLLOWS, f"{info.name}: follows must be one of {list(FOLLOWS)}"
    REGISTRY[info.name] = info
    return info


def load_registry() -> dict[str, AlgoInfo]:
    """Import every agent family so the registry is complete, and return it in a fixed order
    (baselines, then the grid's rows, then by name), whatever order modules were imported in."""
    from fluxrl.agents import (  # noqa: F401 - populate the registry
        baselines,
        q_guidance,
        reparam,
        weighted_matching,
    )

    order = sorted(REGISTRY.values(), key=lambda a: (a.family != "baseline",
                                                     FAMILIES.index(a.family), a.name))
    if list(REGISTRY) != [a.name for a in order]:
        REGISTRY.clear()
        REGISTRY.update((a.name, a) for a in order)
    return REGISTRY


def get_algo(name: str) -> AlgoInfo:
    """Look an algorithm up by name; unknown names are a :class:`FluxError` with close matches."""
    load_registry()
    if name not in REGISTRY:
        raise FluxError(f"unknown algorithm {name!r}; {close_matches(name, REGISTRY)}")
    return REGISTRY[name]


def make_agent(algo_cfg: Any, spec: Any) -> Agent:
    """Build the configured algorithm's agent for one seed, with best-of-N acting and evaluation
    when ``algo_cfg.best_of_eval`` / ``best_of_act`` ask for it."""
    from fluxrl.guidance.best_of_n import with_best_of_n

    agent = get_algo(algo_cfg.name).make(algo_cfg, spec)
    return with_best_of_n(agent, algo_cfg.best_of_eval, algo_cfg.best_of_act)
