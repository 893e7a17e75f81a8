"""Reverse sampling: the truncated normal (also deep in a tail), candidate pairs that reproduce the
noisy action and follow the uniform-prior posterior, and the weighted candidate loss for every
generative model (including EDM's preconditioning)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fluxrl.generative import make_model
from fluxrl.guidance.reverse_sampling import candidate_loss, reverse_sample, truncated_normal
from fluxrl.rng import uniform


def test_rng_uniform_is_jax_random_uniform_and_fused():
    for shape in [(), (7,), (256, 6), (3, 4, 5)]:
        key = jax.random.PRNGKey(11)
        assert np.array_equal(np.asarray(uniform(key, shape)),
                              np.asarray(jax.random.uniform(key, shape)))
    f = jax.jit(lambda k: uniform(k, (64, 6)))
    assert " while(" not in f.lower(jax.random.PRNGKey(0)).compile().as_text()


@pytest.mark.parametrize("lo, hi", [(-1.0, 2.0), (0.5, np.inf), (-np.inf, np.inf), (8.0, 8.5),
                                    (-9.0, -8.9), (4.0, 30.0), (-0.3, -0.2999)])
def test_truncated_normal_matches_scipy_even_in_the_tails(lo, hi):
    """KS test against scipy's truncnorm; (8, 8.5) and (-9, -8.9) are where an erf-based sampler
    has no float32 resolution left (jax.random.truncated_normal returns the bound)."""
    z = np.asarray(truncated_normal(jax.random.PRNGKey(3), lo, hi, (20_000,)), np.float64)
    assert np.all((z >= np.float32(lo)) & (z <= np.float32(hi)))
    ref = stats.truncnorm(lo, hi)
    if hi - lo > 1e-3:
        assert stats.kstest(z, ref.cdf).pvalue > 1e-3
    np.testing.assert_allclose(z.mean(), ref.mean(), atol=3 * ref.std() / np.sqrt(z.size) + 1e-5)


def test_truncated_normal_without_float_mass_returns_the_end_nearest_zero():
    z = np.asarray(truncated_normal(jax.random.PRNGKey(0), jnp.array([-60.0, 50.0]),
                                    jnp.array([-40.0, 70.0]), (2,)))
    np.testing.assert_array_equal(z, [-40.0, 50.0])


@pytest.mark.parametrize("name, t", [("vp-cosine", 0.3), ("vp-cosine", 0.95), ("ddpm", 0.85),
                                     ("flow", 0.6), ("edm", 2.0), ("vp-linear", 0.05)])
def test_reverse_samples_reproduce_x_t_and_follow_the_uniform_posterior(name, t):
    """x_t = alpha x0 + sigma eps for every candidate, x0 in [-1, 1], and x0 | x_t is the
    Gaussian N(x_t / alpha, (sigma / alpha)^2) truncated to the box (KS test per dimension)."""
    model = make_model(name)
    x_t = jnp.array([[0.4, -1.3], [1.1, 0.0]])
    tt = jnp.full((2,), t)
    x0, eps = reverse_sample(model, jax.random.PRNGKey(5), x_t, tt, 4000)
    assert x0.shape == eps.shape == (2, 4000, 2)
    a, s = (float(v) for v in model.alpha_sigma(jnp.float32(t)))
    np.testing.assert_allclose(np.asarray(a * x0 + s * eps), np.broadcast_to(
        np.asarray(x_t)[:, None], x0.shape), atol=2e-5 * max(1.0, s))
    assert np.all(np.abs(np.asarray(x0)) <= 1.0)
    for b in range(2):
        for d in range(2):
            m, sd = float(x_t[b, d]) / a, s / a
            ref = stats.truncnorm((-1 - m) / sd, (1 - m) / sd, loc=m, scale=sd)
            assert stats.kstest(np.asarray(x0[b, :, d], np.float64), ref.cdf).pvalue > 1e-3


def test_reverse_samples_at_pure_noise_are_uniform():
    """Flow matching near t = 1: the box spans a tiny fraction of the posterior's width, so the
    candidates are the uniform prior (float32 could not resolve them through eps)."""
    model = make_model("flow")
    x_t = jnp.array([[0.7]])
    x0, eps = reverse_sample(model, jax.random.PRNGKey(1), x_t, jnp.array([1.0 - 1e-6]), 5000)
    assert stats.kstest(np.asarray(x0[0, :, 0], np.float64), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert np.all(np.isfinite(np.asarray(eps)))


@pytest.mark.parametrize("name", ["vp-cosine", "flow", "edm"])
def test_candidate_loss_is_the_weighted_sum_of_each_targets_regression(name):
    """A linear 'network' out = w * x_in + b; per sample sum_n w_n mean_A (out - target_n)^2 with
    the model's own target (noise / velocity / EDM's preconditioned x0); its gradient equals that
    of regressing on the weighted mean target."""
    model = make_model(name)
    rng = np.random.default_rng(0)
    x_t = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)
    t = jnp.asarray(rng.uniform(0.1, 0.9, 5), jnp.float32)
    x0 = jnp.asarray(rng.uniform(-1, 1, (5, 4, 3)), jnp.float32)
    eps = jnp.asarray(rng.normal(size=(5, 4, 3)), jnp.float32)
    w = jax.nn.softmax(jnp.asarray(rng.normal(size=(5, 4)), jnp.float32), -1)
    params = {"w": jnp.array(0.7), "b": jnp.array(-0.2)}

    def net(p, x, t_in, c):
        return p["w"] * x + p["b"]

    loss = candidate_loss(model, net, params, x_t, t, jnp.zeros((5, 2)), x0, eps, w)
    a, s = (np.asarray(v)[:, None, None] for v in model.alpha_sigma(t))
    x0n, en, xtn = np.asarray(x0), np.asarray(eps), np.asarray(x_t)[:, None]
    target = {"vp-cosine": en, "flow": en - x0n, "edm": x0n}[name]
    x_in = xtn
    if name == "edm":
        c_in, c_skip, c_out = (np.asarray(v)[:, None, None] for v in model.precondition(t))
        target, x_in = (target - c_skip * xtn) / c_out, c_in * xtn
    out = 0.7 * x_in - 0.2
    ref = np.sum(np.asarray(w) * np.mean((out - target) ** 2, -1), -1)
    np.testing.assert_allclose(np.asarray(loss), ref, rtol=1e-5)

    mean_target = np.sum(np.asarray(w)[..., None] * target, 1, keepdims=True)
    g = jax.grad(lambda p: candidate_loss(model, net, p, x_t, t, jnp.zeros((5, 2)), x0, eps,
                                          w).sum())(params)
    np.testing.assert_allclose(float(g["b"]), np.sum(2 * np.mean(out - mean_target, -1)), rtol=1e-4)
