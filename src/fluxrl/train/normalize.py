"""Running observation statistics, part of a program's state (and of every checkpoint).

Batches are merged with Chan et al.'s parallel update of the mean and the summed squared
deviations, as Brax's ``training/acme/running_statistics.py`` does; observations are normalised by
the mean and the standard deviation clipped to [1e-6, 1e6] (Brax's ``std_min_value`` /
``std_max_value``), not clipped themselves (Brax PPO passes no ``max_abs_value``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

STD_MIN, STD_MAX = 1e-6, 1e6  #: clip of the standard deviation (Brax running_statistics)


@struct.dataclass
class RunningStats:
    """Count, mean and summed squared deviations of everything seen so far."""

    count: jax.Array  #: number of observations merged (float32)
    mean: jax.Array  #: ``[obs_dim]``
    m2: jax.Array  #: ``[obs_dim]`` sum of squared deviations from the mean


def stats_init(obs_dim: int) -> RunningStats:
    """No observation seen: normalising is the identity until the first update."""
    return RunningStats(jnp.float32(0.0), jnp.zeros(obs_dim), jnp.zeros(obs_dim))


def stats_update(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merge a batch ``[..., obs_dim]`` into the statistics."""
    x = batch.reshape(-1, batch.shape[-1])
    n = jnp.float32(x.shape[0])
    mean_b = x.mean(0)
    m2_b = ((x - mean_b) ** 2).sum(0)
    total = stats.count + n
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + m2_b + delta**2 * stats.count * n / total
    return RunningStats(total, mean, m2)


def normalize(stats: RunningStats, obs: jax.Array) -> jax.Array:
    """``(obs - mean) / std``; the identity before any update."""
    std = jnp.clip(jnp.sqrt(stats.m2 / jnp.maximum(stats.count, 1.0)), STD_MIN, STD_MAX)
    seen = stats.count > 0
    return jnp.where(seen, (obs - stats.mean) / jnp.where(seen, std, 1.0), obs)
