"""The DEM score estimator (fluxrl.guidance.energy_score): exact values on known inputs, the
candidates it values, and convergence to the score of a known noised target."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.generative import make_model
from fluxrl.guidance.energy_score import dem_score, energy_score

C = np.array([0.3, -0.5])


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def quadratic_q(a: jax.Array) -> jax.Array:
    """Q(a) = -|a - c|^2 / 2, so grad_a Q = c - a."""
    return -0.5 * jnp.sum((a - jnp.asarray(C, a.dtype)) ** 2, -1)


@pytest.mark.parametrize("shift", [0.0, 50.0])
def test_dem_score_is_the_softmax_weighted_gradient_over_lambda_alpha(shift):
    """sum_k softmax(q / lambda)_k g_k / (lambda alpha) against float64 numpy; a huge common shift
    of q (q / lambda ~ 2500, exp of it overflows float32) changes nothing: the softmax is taken
    in log space."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 7)) * 0.05
    g = rng.normal(size=(5, 7, 3))
    alpha = rng.uniform(0.05, 1.0, 5)
    lam = 0.02
    got = dem_score(jnp.asarray(q + shift, jnp.float32), jnp.asarray(g, jnp.float32), lam,
                    jnp.asarray(alpha, jnp.float32))
    want = np.einsum("bk,bka->ba", np_softmax(q / lam), g) / (lam * alpha[:, None])
    assert got.shape == (5, 3) and np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["vp-cosine", "ddpm"])
def test_energy_score_values_boxed_posterior_candidates(name):
    """The candidates are K draws of a0 | a_t under the uniform prior (in [-1, 1], centred on a_t /
    alpha_t); the score is rebuilt in numpy from them with grad Q = c - a."""
    model = make_model(name)
    rng = np.random.default_rng(1)
    x_t = jnp.asarray(rng.uniform(-1.2, 1.2, (6, 2)), jnp.float32)
    t = model.sample_time(jax.random.PRNGKey(3), (6,))
    lam, k = 0.1, 64
    score, info = energy_score(model, jax.random.PRNGKey(4), x_t, t, quadratic_q, k, lam)
    a0 = np.asarray(info["candidates"], np.float64)
    assert a0.shape == (6, k, 2) and score.shape == (6, 2) and np.all(np.abs(a0) <= 1.0)
    q = -0.5 * np.sum((a0 - C) ** 2, -1)
    np.testing.assert_allclose(np.asarray(info["q"]), q, rtol=1e-5, atol=1e-6)
    w = np_softmax(q / lam)
    np.testing.assert_allclose(np.asarray(info["weights"]), w, rtol=1e-4, atol=1e-7)
    alpha = np.asarray(model.alpha_sigma(t)[0], np.float64)
    want = np.einsum("bk,bka->ba", w, C - a0) / (lam * alpha[:, None])
    np.testing.assert_allclose(np.asarray(score), want, rtol=1e-4, atol=1e-4)


def test_energy_score_converges_to_the_noised_gaussian_score():
    """Q = -|a - c|^2 / 2 with lambda = 0.04 and c = (0.2, -0.1) makes pi* = N(c, lambda I) (its
    density on the box's faces is below e^-8 of the peak); noised, p_t = N(alpha c, alpha^2 lambda
    + sigma^2), whose score is -(a_t - alpha c) / (alpha^2 lambda + sigma^2). With 20000
    candidates the estimate is within 4 standard errors of it (the self-normalised estimator's
    delta-method error, from the returned weights; seeds 0-2 land within 2.6), and those errors
    are 1-4% of the score (the exact factors are checked by the test above)."""
    model = make_model("vp-cosine")
    lam, c = 0.04, np.array([0.2, -0.1])
    t = jnp.array([0.05, 0.15, 0.3, 0.3])
    alpha, sigma = (np.asarray(v, np.float64) for v in model.alpha_sigma(t))
    x_t = alpha[:, None] * c + np.array([[0.05, -0.08], [0.2, 0.1], [-0.3, 0.2], [0.4, 0.4]])
    x_t = jnp.asarray(x_t, jnp.float32)
    score, info = energy_score(model, jax.random.PRNGKey(0), x_t, t,
                               lambda a: -0.5 * jnp.sum((a - c) ** 2, -1), 20_000, lam)
    exact = -(np.asarray(x_t, np.float64) - alpha[:, None] * c) / (alpha**2 * lam + sigma**2)[:, None]
    w = np.asarray(info["weights"], np.float64)[..., None]
    h = (c - np.asarray(info["candidates"], np.float64)) / (lam * alpha[:, None, None])
    se = np.sqrt(np.sum(w**2 * (h - np.sum(w * h, 1, keepdims=True)) ** 2, 1))
    assert np.all(se < 0.05 * np.abs(exact) + 0.03), (se, exact)
    assert np.all(np.abs(np.asarray(score) - exact) < 4 * se + 1e-3), (np.asarray(score), exact, se)


def test_energy_score_is_a_constant_target():
    """No gradient reaches the critic's parameters or the noisy action through the estimate."""
    model = make_model("vp-cosine")
    x_t = jnp.array([[0.1, -0.2], [0.5, 0.4]])
    t = jnp.array([0.2, 0.6])

    def total(c, x):
        score, _ = energy_score(model, jax.random.PRNGKey(0), x, t,
                                lambda a: -0.5 * jnp.sum((a - c) ** 2, -1), 16, 0.1)
        return score.sum()

    g_c, g_x = jax.grad(total, argnums=(0, 1))(jnp.asarray(C, jnp.float32), x_t)
    np.testing.assert_array_equal(np.asarray(g_c), 0.0)
    np.testing.assert_array_equal(np.asarray(g_x), 0.0)


def test_blocked_valuation_matches_one_call_and_passes_per_state_arrays():
    """``block`` values the candidates a few states at a time (7 states of 3 per block, the last
    block padded); per-state arrays reach ``value`` block by block. Same numbers as one call."""
    model = make_model("vp-cosine")
    rng = np.random.default_rng(2)
    x_t = jnp.asarray(rng.uniform(-1.0, 1.0, (7, 2)), jnp.float32)
    t = model.sample_time(jax.random.PRNGKey(5), (7,))
    centres = jnp.asarray(rng.uniform(-0.5, 0.5, (7, 2)), jnp.float32)  # a different Q per state

    def value(a, c):
        return -0.5 * jnp.sum((a - c[:, None, :]) ** 2, -1)

    key = jax.random.PRNGKey(6)
    one, info1 = energy_score(model, key, x_t, t, value, 16, 0.1, per_state=(centres,))
    blocked, info2 = energy_score(model, key, x_t, t, value, 16, 0.1, per_state=(centres,),
                                  block=48)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(one), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(info2["q"]), np.asarray(info1["q"]), rtol=1e-6)
    want_q = -0.5 * np.sum((np.asarray(info1["candidates"]) - np.asarray(centres)[:, None]) ** 2, -1)
    np.testing.assert_allclose(np.asarray(info2["q"]), want_q, rtol=1e-5, atol=1e-6)
