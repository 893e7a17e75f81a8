"""The jaxpr FLOP counter: matmuls, batch dims, scans times their length, cond, vmap, grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from fluxrl.flops import matmul_flops

W = jnp.ones((64, 32))
X = jnp.ones((16, 64))
ONE = 2.0 * 16 * 64 * 32  # one [16, 64] @ [64, 32]


def test_one_matmul_and_batched_einsum():
    assert matmul_flops(lambda x: x @ W, X) == ONE
    a, b = jnp.ones((5, 16, 64)), jnp.ones((5, 64, 32))
    assert matmul_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b), a, b) == 5 * ONE
    assert matmul_flops(jax.vmap(lambda x: x @ W), jnp.ones((5, 16, 64))) == 5 * ONE


def test_scan_counts_every_step_where_xla_counts_one():
    def scan(x):
        w = jnp.ones((64, 64))
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=7)[0]

    per_step = 2.0 * 16 * 64 * 64
    assert matmul_flops(scan, X) == 7 * per_step
    cost = jax.jit(scan).lower(X).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert cost["flops"] < 2 * per_step  # the reason this module exists


def test_nested_jit_cond_and_gradient():
    f = jax.jit(lambda x: (x @ W).sum())
    assert matmul_flops(f, X) == ONE
    # backward of x @ W: one product for dW (and none for dx, not asked)
    assert matmul_flops(jax.grad(lambda w: (X @ w).sum()), W) == pytest.approx(2 * ONE)
    both = jax.grad(lambda x, w: (x @ w).sum(), argnums=(0, 1))
    assert matmul_flops(both, X, W) == pytest.approx(3 * ONE)
    g = lambda p, x: jax.lax.cond(p, lambda v: v @ W @ W.T, lambda v: v * 2.0, x)  # noqa: E731
    assert matmul_flops(g, True, X) == 2 * ONE  # the costlier branch


def test_cond_rates_weight_each_costly_cond_in_program_order():
    costly = lambda v: v @ W @ W.T  # noqa: E731  (2 ONE)
    cheap = lambda v: v * 2.0  # noqa: E731

    def two(p, q, x):
        x = jax.lax.cond(p, costly, cheap, x)
        same = jax.lax.cond(q, lambda v: v @ W @ W.T, costly, x)  # equal branches: no rate used
        return jax.lax.cond(q, cheap, costly, same)

    assert matmul_flops(two, True, True, X) == 6 * ONE  # upper bound
    assert matmul_flops(two, True, True, X, cond_rates=[0.5, 0.1]) == pytest.approx(
        0.5 * 2 * ONE + 2 * ONE + 0.1 * 2 * ONE)
    # inside a scan, a cond's rate applies to each of its runs
    scanned = lambda x: jax.lax.scan(  # noqa: E731
        lambda c, _: (jax.lax.cond(True, costly, cheap, c), None), x, None, length=4)[0]
    assert matmul_flops(scanned, X, cond_rates=[0.25]) == pytest.approx(4 * 0.25 * 2 * ONE)
    with pytest.raises(ValueError, match="more conds"):
        matmul_flops(two, True, True, X, cond_rates=[0.5])
    with pytest.raises(ValueError, match="fewer conds"):
        matmul_flops(two, True, True, X, cond_rates=[0.5, 0.1, 0.2])
