"""The in-JAX Gaussian-mixture fit and entropy estimate (fluxrl.guidance.entropy): a known mixture
is recovered, Gaussian entropies and densities match closed forms, degenerate samples stay finite,
and the estimator is pure XLA (jit, vmap, no host callbacks)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fluxrl.errors import FluxError
from fluxrl.guidance.entropy import (
    fit_gmm,
    gaussian_entropy,
    gmm_entropy_bound,
    gmm_log_prob,
    mixture_entropy,
)

MEANS = np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], np.float32)
STDS = np.array([0.3, 0.5, 0.4], np.float32)
WEIGHTS = np.array([0.2, 0.5, 0.3])
entropy = jax.jit(mixture_entropy)


def three_blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = (WEIGHTS * n).astype(int)
    return np.concatenate([rng.normal(MEANS[i], STDS[i], (c, 2))
                           for i, c in enumerate(counts)]).astype(np.float32)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_fit_recovers_a_well_separated_mixture(covariance):
    """600 samples of three isotropic blobs: weights within 0.02, means within 0.1, stds within
    15%, for either covariance type; EM stops well before max_iter."""
    g = jax.jit(fit_gmm, static_argnums=(2, 3))(jnp.asarray(three_blobs(600)),
                                                jax.random.PRNGKey(0), 3, covariance)
    order = np.argsort(np.asarray(g.means)[:, 0])  # blobs sorted by x: -2, 0, 2
    true = [0, 2, 1]
    np.testing.assert_allclose(np.asarray(g.weights)[order], WEIGHTS[true], atol=0.02)
    np.testing.assert_allclose(np.asarray(g.means)[order], MEANS[true], atol=0.1)
    var = np.asarray(g.covs)[order]
    var = np.diagonal(var, axis1=1, axis2=2) if covariance == "full" else var
    np.testing.assert_allclose(np.sqrt(var), np.repeat(STDS[true, None], 2, 1), rtol=0.15)
    assert 1 <= int(g.iterations) < 100


def test_well_separated_mixture_entropy_is_close_to_the_true_one():
    """For non-overlapping components the bound is the entropy: sum w H_k - sum w log w."""
    true = float(np.sum(WEIGHTS * (np.log(2 * np.pi * np.e) + 2 * np.log(STDS)))
                 - np.sum(WEIGHTS * np.log(WEIGHTS)))
    h = float(entropy(jnp.asarray(three_blobs(2000)), jax.random.PRNGKey(1)))
    assert abs(h - true) < 0.05, (h, true)


def test_gaussian_entropy_and_density_match_closed_forms():
    cov = np.array([[0.5, 0.2, 0.0], [0.2, 0.3, 0.1], [0.0, 0.1, 0.4]])
    want = stats.multivariate_normal(np.zeros(3), cov).entropy()
    np.testing.assert_allclose(float(gaussian_entropy(jnp.asarray(cov, jnp.float32))), want,
                               rtol=1e-5)
    np.testing.assert_allclose(float(gaussian_entropy(jnp.asarray(np.diag(cov), jnp.float32),
                                                      full=False)),
                               stats.multivariate_normal(np.zeros(3), np.diag(np.diag(cov))).entropy(),
                               rtol=1e-5)
    g = fit_gmm(jnp.asarray(three_blobs(600)), jax.random.PRNGKey(0))
    x = three_blobs(50, seed=3)
    want = np.log(sum(float(w) * stats.multivariate_normal(np.asarray(m), np.asarray(c)).pdf(x)
                      for w, m, c in zip(g.weights, g.means, g.covs, strict=True)))
    np.testing.assert_allclose(np.asarray(gmm_log_prob(g, jnp.asarray(x))), want, rtol=1e-4,
                               atol=1e-4)


def test_entropy_of_a_known_gaussian():
    """A correlated 4-d Gaussian, H = 2 (1 + log 2 pi) + log det / 2 = 4.55 nats. One component on
    2000 samples is the maximum-likelihood Gaussian: within 0.05 nats. DACER's setting (3
    components, 200 samples, averaged over 64 states as in a batch) splits the Gaussian into
    overlapping parts, for which the bound overshoots: measured +0.28 (covariances and keys of seeds
    0-4: +0.20 to +0.31); asserted within [0, 0.6] above the truth."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T / 4 + 0.1 * np.eye(4)
    true = float(stats.multivariate_normal(np.zeros(4), cov).entropy())
    big = rng.multivariate_normal(np.zeros(4), cov, 2000).astype(np.float32)
    one = float(gmm_entropy_bound(fit_gmm(jnp.asarray(big), jax.random.PRNGKey(0), 1)))
    assert abs(one - true) < 0.05, (one, true)
    batch = rng.multivariate_normal(np.zeros(4), cov, (64, 200)).astype(np.float32)
    three = float(entropy(jnp.asarray(batch), jax.random.PRNGKey(0)).mean())
    assert 0.0 < three - true < 0.6, (three, true)


def test_degenerate_samples_stay_finite():
    """Clipped actions pile up on the box's faces: all samples equal, or some dimensions constant.
    The 1e-6 covariance floor keeps the fit finite (log det of 1e-6 I: about -13.8 per dim)."""
    rng = np.random.default_rng(0)
    same = jnp.ones((3, 200, 6))
    half = jnp.asarray(np.concatenate([np.ones((3, 200, 3)), rng.normal(0, 0.3, (3, 200, 3))], -1),
                       jnp.float32)
    for x in (same, half):
        h = np.asarray(entropy(x, jax.random.PRNGKey(0)))
        assert h.shape == (3,) and np.all(np.isfinite(h))
    np.testing.assert_allclose(np.asarray(entropy(same, jax.random.PRNGKey(0))),
                               6 * 0.5 * (1 + np.log(2 * np.pi) + np.log(1e-6)), rtol=1e-3)


def test_estimator_is_pure_xla_and_vmaps_over_seeds():
    """No host callback in the compiled estimator; a vmap over seeds equals separate calls."""
    x = jnp.asarray(np.random.default_rng(0).normal(0, 0.3, (2, 5, 40, 2)), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    text = str(jax.make_jaxpr(jax.vmap(mixture_entropy))(x, keys))
    assert "callback" not in text and "while" in text
    batched = np.asarray(jax.jit(jax.vmap(mixture_entropy))(x, keys))
    single = np.stack([np.asarray(entropy(x[i], keys[i])) for i in range(2)])
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_flux_errors():
    x = jnp.zeros((2, 3))
    with pytest.raises(FluxError, match="3-component mixture needs"):
        fit_gmm(x, jax.random.PRNGKey(0), 3)
    with pytest.raises(FluxError, match="full, diag"):
        fit_gmm(jnp.zeros((10, 2)), jax.random.PRNGKey(0), 2, "spherical")
