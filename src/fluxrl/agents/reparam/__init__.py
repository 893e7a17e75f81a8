"""Reparameterisation: the actor maximises Q of an action generated through the whole chain
(paper Table 1)."""

from fluxrl.agents.reparam import dacer, dime  # noqa: F401
