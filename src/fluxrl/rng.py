"""Gaussian noise that compiles to one fused elementwise kernel on CPU.

``jax.random.normal`` with the threefry PRNG lowers, on the CPU backend, to an XLA ``while`` loop
over threefry's five groups of four rounds (``use_rolled_loops=True`` in
``jax/_src/random/threefry2x32.py``). The loop body cannot be fused with its producers or
consumers, so every draw costs a loop with several materialised ``uint32`` temporaries; in the SAC
update that was two loops of ~160 us each for five vmapped seeds. :func:`normal` computes the same
threefry-2x32 hash with the rounds unrolled in ``jax.numpy``, which XLA fuses into a single
elementwise kernel (together with the uniform -> normal map and usually with the consumer).

The numbers are bit-identical to ``jax.random.normal(key, shape, jnp.float32)`` under JAX's default
``jax_threefry_partitionable=True`` (the default since JAX 0.5): same counters, same hash, same
mantissa trick, same ``sqrt(2) erfinv(u)`` map. The point is the compiled program, not the stream.
Because the hash is elementwise in (key, counter), a ``vmap`` over keys is plain batched
elementwise work and seed ``k`` of a vmapped group gets exactly the numbers it gets alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["normal", "threefry2x32", "uniform"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k0: jax.Array, k1: jax.Array, x0: jax.Array,
                 x1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 (20 rounds) of the counter pair ``(x0, x1)`` under key ``(k0, k1)``.

    All arguments are ``uint32`` and broadcast against each other; the rounds are unrolled so the
    result is a single fusible elementwise expression. Matches JAX's ``threefry2x32_p``.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x0, x1


def _key_words(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The two ``uint32`` words of one threefry key (raw ``uint32[2]`` or typed)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        if "threefry" not in impl:
            raise ValueError(f"fluxrl.rng.normal needs a threefry2x32 key, got impl {impl}")
        key = jax.random.key_data(key)
    if key.shape != (2,) or key.dtype != jnp.uint32:
        raise ValueError(
            f"fluxrl.rng.normal needs one threefry key (uint32[2] or a typed key of shape ()), got "
            f"{key.dtype}{list(key.shape)}; vmap over a batch of keys instead of passing it")
    return key[0], key[1]


def normal(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Standard normal ``float32`` samples of ``shape``; equal to ``jax.random.normal(key, shape)``.

    Args:
        key: one threefry key, raw ``uint32[2]`` (``jax.random.PRNGKey``) or typed
            (``jax.random.key``). Batch over keys with ``jax.vmap``.
        shape: static output shape (a non-empty tuple of non-negative ints).
    """
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    k0, k1 = _key_words(key)
    n = math.prod(shape)
    if n >= 2**32:
        raise ValueError(f"shape {shape} has more than 2**32 elements")
    # flat element index as the 64-bit counter (hi word 0 below 2**32 elements), like
    # jax._src.random.prng.iota_2x32_shape
    # generated flat: XLA:CPU vectorises a fused elementwise loop over one long axis but emits
    # scalar code when the innermost axis is short (e.g. an action dimension of 6)
    lo = jax.lax.iota(jnp.uint32, n)
    b0, b1 = threefry2x32(k0, k1, jnp.zeros_like(lo), lo)
    bits = b0 ^ b1
    # 23 random mantissa bits with exponent 0 -> [1, 2) -> [0, 1), then map to [nextafter(-1), 1)
    u = jax.lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000),
                                     jnp.float32) - np.float32(1.0)
    lo_val = np.nextafter(np.float32(-1.0), np.float32(0.0), dtype=np.float32)
    u = jnp.maximum(lo_val, u * (np.float32(1.0) - lo_val) + lo_val)
    return (np.float32(np.sqrt(2)) * jax.lax.erf_inv(u)).reshape(shape)


def uniform(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Uniform ``float32`` samples in [0, 1) of ``shape``; equal to ``jax.random.uniform(key,
    shape)`` (the same bits as :func:`normal`, mapped by the same mantissa trick), fused."""
    shape = tuple(int(d) for d in shape)
    k0, k1 = _key_words(key)
    lo = jax.lax.iota(jnp.uint32, math.prod(shape))
    b0, b1 = threefry2x32(k0, k1, jnp.zeros_like(lo), lo)
    u = jax.lax.bitcast_convert_type(((b0 ^ b1) >> np.uint32(9)) | np.uint32(0x3F800000),
                                     jnp.float32) - np.float32(1.0)
    return u.reshape(shape)
