"""A replay buffer that lives on the device: fixed-size arrays, ring insertion, uniform sampling.

All functions are pure and act on one seed's buffer; trainers ``vmap`` them over seeds and donate the
buffer so XLA updates it in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


@struct.dataclass
class Replay:
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array
    ptr: jax.Array  #: next row to write
    size: jax.Array  #: rows filled so far


def replay_init(capacity: int, obs_dim: int, act_dim: int) -> Replay:
    """An empty buffer of ``capacity`` rows."""
    z = jnp.zeros
    return Replay(z((capacity, obs_dim)), z((capacity, act_dim)), z((capacity,)),
                  z((capacity, obs_dim)), z((capacity,)), jnp.int32(0), jnp.int32(0))


def replay_add(buf: Replay, tr: dict) -> Replay:
    """Insert ``n`` transitions (leading axis ``n``), overwriting the oldest rows when full."""
    cap = buf.obs.shape[0]
    n = tr["obs"].shape[0]
    idx = (buf.ptr + jnp.arange(n)) % cap
    new = {k: getattr(buf, k).at[idx].set(tr[k].astype(jnp.float32)) for k in FIELDS}
    return buf.replace(**new, ptr=(buf.ptr + n) % cap, size=jnp.minimum(buf.size + n, cap))


def replay_sample(buf: Replay, key: jax.Array, batch_size: int) -> dict:
    """A uniform minibatch (with replacement) from the filled rows."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    return {k: getattr(buf, k)[idx] for k in FIELDS}
