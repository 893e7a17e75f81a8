"""map_blocks: the same numbers as one call, for divisible and ragged leading sizes, pytrees out,
under vmap and grad."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.nets.backbones import make_backbone
from fluxrl.nets.blocked import map_blocks
from fluxrl.nets.critics import QEnsemble


@pytest.mark.parametrize("n, block", [(12, 4), (13, 4), (5, 1), (6, 6), (6, 100), (7, 0)])
def test_blocks_equal_one_call(n, block):
    critic = QEnsemble(make_backbone("mlp", 16, 2, "relu", False), 2)
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(n, 9, 3)), jnp.float32)
    act = jnp.asarray(rng.uniform(-1, 1, (n, 9, 2)), jnp.float32)
    p = critic.init(jax.random.PRNGKey(0), obs, act)["params"]

    def f(o, a):
        q = critic.apply({"params": p}, o, a)  # [2, b, 9]
        return {"min": q.min(0), "both": jnp.moveaxis(q, 0, 1)}

    ref = f(obs, act)
    out = jax.jit(lambda o, a: map_blocks(f, o, a, block=block))(obs, act)
    assert out["min"].shape == (n, 9) and out["both"].shape == (n, 2, 9)
    np.testing.assert_allclose(np.asarray(out["min"]), np.asarray(ref["min"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["both"]), np.asarray(ref["both"]), rtol=1e-5, atol=1e-6)


def test_vmap_and_grad_pass_through():
    x = jnp.arange(30.0).reshape(3, 10)  # [seeds, items]

    def per_seed(w, x):
        return map_blocks(lambda v: jnp.sin(w * v), x, block=3).sum()

    got = jax.vmap(jax.grad(per_seed), in_axes=(None, 0))(0.5, x)
    ref = jnp.sum(x * jnp.cos(0.5 * x), axis=1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5)
