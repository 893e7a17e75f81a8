"""Evaluate a function over a large leading batch in cache-sized blocks.

Valuing many candidate actions per state (SDAC's 500 reverse samples for 256 states, particle
methods) is a few dense layers on ~10^5 rows. On the CPU backend one call on all rows writes every
hidden activation to memory (2 x 128000 x 256 float32 is 262 MB per layer) and runs at a fraction
of the matmul rate; the same layers on blocks of a few hundred rows, one ``lax.map`` iteration
each, keep the activations in cache and run at about the rate of a 256^3 matmul (measured 4x
faster for SDAC's critic on a 2-core CPU). Each block is still one batched matmul per layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def map_blocks(fn: Callable[..., Any], *args: Array, block: int) -> Any:
    """``fn(*args)`` computed on blocks of ``block`` items of the leading axis, by ``lax.map``.

    ``fn`` must treat the leading axis as a batch (item ``i`` of the output depends only on item
    ``i`` of the inputs); every ``arg`` shares that axis. A leading size that ``block`` does not
    divide is padded by repeating the last item, and the padding is cut from the output. ``block``
    at least the leading size means one plain call."""
    n = args[0].shape[0]
    block = max(1, int(block))
    if block >= n:
        return fn(*args)
    blocks = -(-n // block)
    pad = blocks * block - n

    def split(x: Array) -> Array:
        if pad:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])
        return x.reshape((blocks, block) + x.shape[1:])

    out = jax.lax.map(lambda xs: fn(*xs), tuple(split(x) for x in args))
    return jax.tree.map(lambda y: y.reshape((blocks * block,) + y.shape[2:])[:n], out)
