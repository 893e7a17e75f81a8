"""Agents, one short file per algorithm, grouped by guidance family; the contracts live in
:mod:`fluxrl.agents.base`, the registry in :mod:`fluxrl.agents.registry`."""
