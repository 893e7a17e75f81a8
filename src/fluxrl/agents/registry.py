"""The algorithm registry: one explicit table, in the order ``fluxrl algos`` shows it.

A new algorithm is one agent file that defines ``ALGO = AlgoInfo(...)`` and one line here; the
shared tests (tests/test_agent_contract.py) then cover it.
"""

from __future__ import annotations

from typing import Any

from fluxrl.agents.base import CONTRACTS, AlgoInfo, Shapes
from fluxrl.agents.baselines import ppo, sac, td3
from fluxrl.agents.policy_gradient import dppo, fpo, genpo
from fluxrl.agents.q_guidance import idem, qsm
from fluxrl.agents.reparam import dacer, dime
from fluxrl.agents.weighted_matching import dpmd, qvpo, sdac
from fluxrl.errors import FluxError, close_matches

#: Every registered algorithm: baselines, then the grid's rows (paper Table 1) in the order of
#: :data:`fluxrl.agents.base.FAMILIES`, by name within a row.
REGISTRY: dict[str, AlgoInfo] = {a.name: a for a in (
    sac.ALGO, td3.ALGO, ppo.ALGO,
    idem.ALGO, qsm.ALGO,
    dpmd.ALGO, qvpo.ALGO, sdac.ALGO,
    dacer.ALGO, dime.ALGO,
    fpo.ALGO, fpo.ALGO_PP,
    genpo.ALGO,
    dppo.ALGO,
)}


def get_algo(name: str) -> AlgoInfo:
    """Look an algorithm up by name; unknown names are a :class:`FluxError` with close matches."""
    if name not in REGISTRY:
        raise FluxError(f"unknown algorithm {name!r}; {close_matches(name, REGISTRY)}")
    return REGISTRY[name]


def algo_configs() -> dict[str, type]:
    """``algo name -> config dataclass`` of every registered algorithm."""
    return {name: info.config for name, info in REGISTRY.items()}


def make_agent(algo_cfg: Any, shapes: Shapes) -> Any:
    """Build the configured algorithm's agent for one seed (the contract of its setting), with
    best-of-N acting and evaluation when an off-policy config's ``best_of_eval`` /
    ``best_of_act`` ask for it."""
    info = get_algo(algo_cfg.name)
    agent = info.make(algo_cfg, Shapes(shapes.obs_dim, shapes.act_dim))
    contract = CONTRACTS[info.setting]
    if not isinstance(agent, contract):
        raise TypeError(f"{info.name}.make returned {type(agent).__name__}, not the "
                        f"{info.setting} contract {contract.__name__}")
    if info.setting == "off_policy":
        from fluxrl.guidance.best_of_n import with_best_of_n

        agent = with_best_of_n(agent, algo_cfg.best_of_eval, algo_cfg.best_of_act)
    return agent
