"""Q-value guidance: the policy's score is steered by ``grad_a Q / lambda`` (paper Table 1)."""

from fluxrl.agents.q_guidance import idem, qsm  # noqa: F401
