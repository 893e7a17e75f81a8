"""Weighted matching: a diffusion / flow loss on actions weighted by how good they are (paper
Table 1)."""

from fluxrl.agents.weighted_matching import dpmd, qvpo, sdac  # noqa: F401
