"""A replay buffer that lives on the device: one packed array, ring insertion, uniform sampling.

A transition is one row ``[obs | action | reward | next_obs | terminated]`` of a single float32
array, so an insert is one in-place dynamic update and a minibatch is one gather. All functions are
pure and act on one seed's buffer; trainers ``vmap`` them over seeds and donate the buffer so XLA
updates it in place (a per-field layout made XLA copy some fields on every step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

FIELDS = ("obs", "action", "reward", "next_obs", "terminated")


def _widths(obs_dim: int, act_dim: int) -> dict[str, int]:
    return {"obs": obs_dim, "action": act_dim, "reward": 1, "next_obs": obs_dim, "terminated": 1}


@struct.dataclass
class Replay:
    data: jax.Array  #: ``[capacity, 2 obs_dim + act_dim + 2]`` packed transitions
    ptr: jax.Array  #: next row to write
    size: jax.Array  #: rows filled so far
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)


def replay_init(capacity: int, obs_dim: int, act_dim: int) -> Replay:
    """An empty buffer of ``capacity`` rows."""
    width = sum(_widths(obs_dim, act_dim).values())
    return Replay(jnp.zeros((capacity, width), jnp.float32), jnp.int32(0), jnp.int32(0), obs_dim,
                  act_dim)


def replay_add(buf: Replay, tr: dict) -> Replay:
    """Insert ``n`` transitions (leading axis ``n``), overwriting the oldest rows when full."""
    cap = buf.data.shape[0]
    n = tr["obs"].shape[0]
    rows = jnp.concatenate([tr[k].reshape(n, -1).astype(jnp.float32) for k in FIELDS], axis=-1)
    idx = (buf.ptr + jnp.arange(n)) % cap
    return buf.replace(data=buf.data.at[idx].set(rows), ptr=(buf.ptr + n) % cap,
                       size=jnp.minimum(buf.size + n, cap))


def replay_grow(buf: Replay, capacity: int) -> Replay:
    """The same transitions in a buffer of ``capacity >= `` the current rows, oldest first, as if
    it had had that capacity from the start (exactly so when it never wrapped)."""
    cap = buf.data.shape[0]
    if capacity < cap:
        raise ValueError(f"cannot shrink a replay buffer from {cap} to {capacity} rows")
    # a full ring starts at ptr; one that never wrapped starts at 0 (and then ptr == size)
    data = jnp.roll(buf.data, -jnp.where(buf.size == cap, buf.ptr, 0), axis=0)
    data = jnp.concatenate([data, jnp.zeros((capacity - cap, data.shape[1]), data.dtype)])
    return buf.replace(data=data, ptr=buf.size % capacity, size=buf.size)


def replay_sample(buf: Replay, key: jax.Array, batch_size: int) -> dict:
    """A uniform minibatch (with replacement) from the filled rows, as a dict of fields."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buf.size, 1))
    rows = buf.data[idx]
    out, start = {}, 0
    for k, w in _widths(buf.obs_dim, buf.act_dim).items():
        out[k] = rows[:, start:start + w]
        start += w
    out["reward"], out["terminated"] = out["reward"][:, 0], out["terminated"][:, 0]
    return out
