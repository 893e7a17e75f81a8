"""Reparameterisation: the actor maximises Q of an action generated through the whole chain
(paper Table 1)."""

from fluxrl.agents.reparam import dime  # noqa: F401
