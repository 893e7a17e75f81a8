"""Pure conversions between what a denoiser can predict: noise ``eps``, clean sample ``x0``, score
``grad_x log p_t(x)`` and velocity ``dx/dt``.

Every model here is a Gaussian path ``x_t = alpha_t x0 + sigma_t eps`` with ``t = 0`` data and the
largest ``t`` noise: VP / DDPM ``alpha^2 + sigma^2 = 1``; flow matching ``alpha = 1 - t, sigma =
t``; EDM ``alpha = 1, sigma = t``. For such a path ``score = -E[eps | x_t] / sigma_t`` (Vincent
2011; Song et al. 2021, arXiv 2011.13456), which is how Q-guidance adds ``grad_a Q`` to a model's
prediction: convert to the score, add, convert back. ``alpha`` and ``sigma`` must broadcast
against ``x_t``. The functions divide by ``sigma`` (or ``alpha``): the score does not exist at
``sigma = 0`` and ``x0`` is not identified at ``alpha = 0``.
"""

from __future__ import annotations

import jax

Array = jax.Array


def eps_to_score(eps: Array, sigma: Array) -> Array:
    """Score from predicted noise: ``-eps / sigma``."""
    return -eps / sigma


def score_to_eps(score: Array, sigma: Array) -> Array:
    """Noise from a score: ``-sigma * score``."""
    return -sigma * score


def eps_to_x0(eps: Array, x_t: Array, alpha: Array, sigma: Array) -> Array:
    """Clean sample from noise: ``(x_t - sigma eps) / alpha``."""
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x0: Array, x_t: Array, alpha: Array, sigma: Array) -> Array:
    """Noise from a clean sample: ``(x_t - alpha x0) / sigma``."""
    return (x_t - alpha * x0) / sigma


def x0_to_score(x0: Array, x_t: Array, alpha: Array, sigma: Array) -> Array:
    """Score from a clean-sample prediction (Tweedie): ``(alpha x0 - x_t) / sigma^2``."""
    return (alpha * x0 - x_t) / sigma**2


def score_to_x0(score: Array, x_t: Array, alpha: Array, sigma: Array) -> Array:
    """Clean sample from a score (Tweedie): ``(x_t + sigma^2 score) / alpha``."""
    return (x_t + sigma**2 * score) / alpha


def ode_velocity(x0: Array, eps: Array, d_alpha: Array, d_sigma: Array) -> Array:
    """Probability-flow velocity ``dx_t/dt = alpha'(t) x0 + sigma'(t) eps`` of any Gaussian path,
    with ``x0, eps`` the model's estimates (Lipman et al. 2023, arXiv 2210.02747, eq. 20)."""
    return d_alpha * x0 + d_sigma * eps


def velocity_to_x0(v: Array, x_t: Array, t: Array) -> Array:
    """Linear path ``x_t = (1 - t) x0 + t eps``, ``v = eps - x0``: ``x0 = x_t - t v``."""
    return x_t - t * v


def velocity_to_eps(v: Array, x_t: Array, t: Array) -> Array:
    """Linear path: ``eps = x_t + (1 - t) v``."""
    return x_t + (1 - t) * v


def x0_eps_to_velocity(x0: Array, eps: Array) -> Array:
    """Linear path: ``v = eps - x0`` (pointing from data to noise, since ``t = 1`` is noise)."""
    return eps - x0


def velocity_to_score(v: Array, x_t: Array, t: Array) -> Array:
    """Linear path: score ``-(x_t + (1 - t) v) / t``."""
    return eps_to_score(velocity_to_eps(v, x_t, t), t)


def score_to_velocity(score: Array, x_t: Array, t: Array) -> Array:
    """Linear path: ``v = (eps - x_t) / (1 - t)`` with ``eps = -t score`` (undefined at ``t = 1``)."""
    return (score_to_eps(score, t) - x_t) / (1 - t)
