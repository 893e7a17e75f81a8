"""Classic baselines: SAC and TD3."""

from fluxrl.agents.baselines import sac, td3  # noqa: F401
