"""Entropy of a sampled policy by a Gaussian-mixture fit, inside JAX (pure, jittable, vmappable).

A diffusion or flow policy has no tractable density, so its entropy is estimated from samples:
fit a K-component Gaussian mixture by EM to N actions drawn for one state, then take

    H ~= sum_k w_k H(N(mu_k, Sigma_k)) - sum_k w_k log w_k,
    H(N(mu, Sigma)) = d (1 + log 2 pi) / 2 + log det(Sigma) / 2,

the upper bound on a mixture's entropy that DACER uses (Wang et al. 2024, arXiv 2405.15177,
section 4.3: 3 components, 200 samples; flow-rl ``agent/online/dacer.py`` ``estimate_entropy``).
The reference implementations fit with scikit-learn on the host through ``jax.pure_callback``;
this module runs the same fit as XLA code instead, with scikit-learn's defaults:

- initialisation: hard k-means assignments turned into the first M-step (sklearn
  ``init_params="kmeans"``); here k-means++ seeding (D^2 sampling, Arthur & Vassilvitskii 2007,
  one candidate per centre rather than sklearn's greedy 2 + log K) and ``kmeans_iter`` Lloyd steps;
- EM until the mean log-likelihood changes by less than ``tol = 1e-3`` or ``max_iter = 100``
  iterations; ``reg_covar = 1e-6`` added to every covariance's diagonal; component counts
  floored by ``10 eps`` (sklearn ``_estimate_gaussian_parameters``);
- ``covariance="full"`` (sklearn's default and DACER's) or ``"diag"``.

Everything is float32 (sklearn: float64). All loops are ``lax`` loops; :func:`mixture_entropy`
vmaps the fit over any leading axes (states, seeds).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp

from fluxrl.errors import FluxError

Array = jax.Array
COVARIANCES = ("full", "diag")
_LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture(NamedTuple):
    """A fitted mixture: ``weights [K]``, ``means [K, d]``, ``covs [K, d, d]`` (full) or ``[K, d]``
    (diagonal variances); ``log_likelihood`` is the mean log-density of the fitted samples at the
    last E-step and ``iterations`` the number of EM iterations run."""

    weights: Array
    means: Array
    covs: Array
    log_likelihood: Array
    iterations: Array


def _is_full(covs: Array) -> bool:
    return covs.ndim == 3


def component_log_prob(means: Array, covs: Array, x: Array) -> Array:
    """``log N(x_n; mu_k, Sigma_k)`` for samples ``x [N, d]``: ``[N, K]``."""
    d = x.shape[-1]
    diff = x[None, :, :] - means[:, None, :]  # [K, N, d]
    if _is_full(covs):
        chol = jnp.linalg.cholesky(covs)  # [K, d, d]
        z = solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)  # [K, d, N]
        maha = jnp.sum(z**2, axis=1)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=-1)
    else:
        maha = jnp.sum(diff**2 / covs[:, None, :], axis=-1)
        logdet = jnp.sum(jnp.log(covs), axis=-1)
    return (-0.5 * (d * _LOG_2PI + logdet[:, None] + maha)).T


def gmm_log_prob(gmm: GaussianMixture, x: Array) -> Array:
    """Log-density of the mixture at ``x [N, d]``: ``[N]``."""
    return logsumexp(component_log_prob(gmm.means, gmm.covs, x) + jnp.log(gmm.weights), axis=-1)


def gaussian_entropy(covs: Array, full: bool = True) -> Array:
    """Differential entropy of Gaussians: ``covs [..., d, d]`` covariances (``full``) or
    ``[..., d]`` diagonal variances -> ``[...]``."""
    d = covs.shape[-1]
    logdet = jnp.linalg.slogdet(covs)[1] if full else jnp.sum(jnp.log(covs), axis=-1)
    return 0.5 * d * (1.0 + _LOG_2PI) + 0.5 * logdet


def gmm_entropy_bound(gmm: GaussianMixture) -> Array:
    """``sum_k w_k H_k - sum_k w_k log w_k``: DACER's mixture entropy (an upper bound, exact when
    the components do not overlap)."""
    w = gmm.weights
    return jnp.sum(w * gaussian_entropy(gmm.covs, _is_full(gmm.covs))) - jnp.sum(w * jnp.log(w))


def _m_step(x: Array, resp: Array, reg_covar: float, full: bool) -> tuple[Array, Array, Array]:
    """Weights, means and covariances from responsibilities ``resp [N, K]`` (sklearn's M-step)."""
    nk = resp.sum(0) + 10.0 * jnp.finfo(x.dtype).eps
    means = (resp.T @ x) / nk[:, None]
    diff = x[None, :, :] - means[:, None, :]  # [K, N, d]
    if full:
        covs = jnp.einsum("nk,kni,knj->kij", resp, diff, diff) / nk[:, None, None]
        covs = covs + reg_covar * jnp.eye(x.shape[-1], dtype=x.dtype)
    else:
        covs = jnp.einsum("nk,kni->ki", resp, diff**2) / nk[:, None] + reg_covar
    return nk / nk.sum(), means, covs


def kmeans_labels(x: Array, key: Array, k: int, iters: int = 10) -> Array:
    """Hard k-means assignments of ``x [N, d]`` as one-hot ``[N, k]``: k-means++ seeding, then
    ``iters`` Lloyd steps (an empty cluster keeps its centre)."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = jax.random.randint(keys[0], (), 0, n)
    centres = jnp.zeros((k, x.shape[-1]), x.dtype).at[0].set(x[first])
    d2 = jnp.sum((x - x[first]) ** 2, -1)
    for j in range(1, k):  # D^2 sampling; uniform when every point sits on a centre
        logits = jnp.where(d2.sum() > 0, jnp.log(jnp.maximum(d2, 1e-30)), 0.0)
        pick = jax.random.categorical(keys[j], logits)
        centres = centres.at[j].set(x[pick])
        d2 = jnp.minimum(d2, jnp.sum((x - x[pick]) ** 2, -1))

    def assign(c: Array) -> Array:
        dist = jnp.sum((x[:, None, :] - c[None]) ** 2, -1)
        return jax.nn.one_hot(jnp.argmin(dist, -1), k, dtype=x.dtype)

    def lloyd(_, c: Array) -> Array:
        onehot = assign(c)
        counts = onehot.sum(0)
        new = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, c)

    return assign(jax.lax.fori_loop(0, iters, lloyd, centres))


def fit_gmm(x: Array, key: Array, components: int = 3, covariance: str = "full",
            max_iter: int = 100, tol: float = 1e-3, reg_covar: float = 1e-6,
            kmeans_iter: int = 10) -> GaussianMixture:
    """Fit a ``components``-Gaussian mixture to samples ``x [N, d]`` by EM (see the module doc)."""
    if covariance not in COVARIANCES:
        raise FluxError(f"unknown covariance type {covariance!r}; choose one of: "
                        + ", ".join(COVARIANCES))
    if x.ndim != 2 or x.shape[0] < components or components < 1:
        raise FluxError(f"a {components}-component mixture needs samples [N >= {components}, d], "
                        f"got shape {x.shape}")
    full = covariance == "full"
    x = jnp.asarray(x, jnp.float32)
    params = _m_step(x, kmeans_labels(x, key, components, kmeans_iter), reg_covar, full)

    def e_step(p: tuple) -> tuple[Array, Array]:
        w, mu, cov = p
        log_joint = component_log_prob(mu, cov, x) + jnp.log(w)
        norm = logsumexp(log_joint, axis=-1)
        return norm.mean(), jnp.exp(log_joint - norm[:, None])

    def cond(carry: tuple) -> Array:
        _, _, change, it = carry
        return (it < max_iter) & (jnp.abs(change) >= tol)

    def body(carry: tuple) -> tuple:
        p, lower, _, it = carry
        new_lower, resp = e_step(p)
        return _m_step(x, resp, reg_covar, full), new_lower, new_lower - lower, it + 1

    init = (params, jnp.float32(-jnp.inf), jnp.float32(jnp.inf), jnp.int32(0))
    params, _, _, it = jax.lax.while_loop(cond, body, init)
    return GaussianMixture(*params, e_step(params)[0], it)


def mixture_entropy(samples: Array, key: Array, components: int = 3, covariance: str = "full",
                    **fit_kw) -> Array:
    """DACER's entropy estimate for each set of samples: ``samples [..., N, d] -> [...]``, one
    mixture fit (:func:`fit_gmm`) and :func:`gmm_entropy_bound` per leading index."""
    lead = samples.shape[:-2]
    flat = samples.reshape((-1,) + samples.shape[-2:])
    keys = jax.random.split(key, flat.shape[0])

    def one(x: Array, k: Array) -> Array:
        return gmm_entropy_bound(fit_gmm(x, k, components, covariance, **fit_kw))

    return jax.vmap(one)(flat, keys).reshape(lead)
