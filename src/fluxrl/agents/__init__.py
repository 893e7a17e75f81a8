"""Agents, one short file per algorithm, grouped by guidance family."""

from fluxrl.agents.base import REGISTRY, Agent, AlgoInfo, get_algo

__all__ = ["REGISTRY", "Agent", "AlgoInfo", "get_algo"]
