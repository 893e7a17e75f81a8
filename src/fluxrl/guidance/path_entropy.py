"""An entropy lower bound for a stochastic sampling chain (DIME, Celik et al. 2025, arXiv
2502.02316, Sec. 3; the bound of diffusion-based samplers, e.g. Berner et al. 2024).

A first-order sampler with ``eta > 0`` is a Gaussian Markov chain ``x_0 ~ N(0, sigma(t_0)^2 I)``,
``x_{k+1} ~ p(x_{k+1} | x_k) = N(m_theta(x_k), c_k^2 I)`` on a decreasing time grid ``t_0 > ... >
t_N``. Against the model's noising kernels ``q(x_k | x_{k+1}) = N(alpha_{t|s} x_{k+1},
sigma_{t|s}^2 I)`` (``t = t_k``, ``s = t_{k+1}``, ``alpha_{t|s} = alpha_t / alpha_s``,
``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``, any Gaussian path) the marginal density of
the last state satisfies

    log pi(x_N) <= E[ log N(x_0; 0, sigma(t_0)^2) + sum_k log p(x_{k+1} | x_k) - log q(x_k | x_{k+1}) ]

(the gap is ``KL(pi(x_{0:N-1} | x_N) || q(x_{0:N-1} | x_N)) >= 0``), so minus the right-hand side
is a lower bound on the entropy. :func:`chain_log_ratio` returns the quantity inside the
expectation for a sampled chain. Every step must be stochastic (``c_k > 0``), so the grid has to
stop at a positive time: :func:`stochastic_grid`.

``log p(x_{k+1} | x_k)`` is replaced by its conditional mean ``-d/2 log(2 pi e c_k^2)``: with the
reparameterised draw ``x_{k+1} = m_theta(x_k) + c_k z`` it equals ``-|z|^2 / 2 - d log c_k - d/2
log 2 pi``, whose gradient in the parameters is zero, so the swap keeps the estimate unbiased and
the gradient identical, and only removes noise.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fluxrl.generative import GenerativeModel

Array = jax.Array
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x: Array, mean: Array, std: Array) -> Array:
    """``log N(x; mean, std^2 I)`` summed over the last axis (``std`` broadcasts)."""
    z = (x - mean) / std
    return jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * LOG_2PI + jnp.zeros_like(x), axis=-1)


def reverse_std(model: GenerativeModel, t: Array, s: Array, eta: float = 1.0) -> Array:
    """Std of the noise the first-order sampler adds on its step from time ``t`` to ``s < t``
    (:meth:`GenerativeModel.step_std`): ``eta sigma_s sqrt(1 - (alpha_t sigma_s / (alpha_s
    sigma_t))^2)``, the DDPM posterior std at ``eta = 1``, or ``eta sqrt(beta)`` for a VP model
    with ``ddpm_variance="beta"``."""
    return model.step_std(t, s, eta)[1]


def noising_log_prob(model: GenerativeModel, x_s: Array, x_t: Array, s: Array, t: Array) -> Array:
    """``log q(x_t | x_s)`` of the model's Gaussian path from time ``s`` to ``t > s``, summed over
    the last axis; ``s`` and ``t`` broadcast against ``x_s.shape[:-1]``."""
    a_t, s_t = model.alpha_sigma(t)
    a_s, s_s = model.alpha_sigma(s)
    ratio = a_t / a_s
    std = jnp.sqrt(jnp.maximum(s_t**2 - ratio**2 * s_s**2, 1e-12))
    return gaussian_log_prob(x_t, ratio[..., None] * x_s, std[..., None])


def stochastic_grid(model: GenerativeModel, steps: int) -> Array:
    """``[steps + 1]`` decreasing times: the model's grid for ``steps + 1`` steps without its final
    0, so that every one of the ``steps`` transitions adds noise."""
    return model.time_grid(steps + 1)[:-1]


def chain_log_ratio(model: GenerativeModel, history: Array, grid: Array,
                    eta: float = 1.0) -> Array:
    """Upper bound estimate of ``log pi(x_N)`` for each chain (module docstring): ``history
    [N + 1, ..., d]`` is the sampler's chain on ``grid [N + 1]`` with stochasticity ``eta``.
    Returns ``[...]``; its negated mean is an entropy lower bound in nats."""
    d = history.shape[-1]
    lead = (1,) * (history.ndim - 2)
    t = grid[:-1].reshape((-1,) + lead)
    s = grid[1:].reshape((-1,) + lead)
    prior = gaussian_log_prob(history[0], 0.0, model.alpha_sigma(grid[0])[1])
    step_log_p = -0.5 * d * (1.0 + LOG_2PI) - d * jnp.log(reverse_std(model, t, s, eta))
    log_q = noising_log_prob(model, history[1:], history[:-1], s, t)
    return prior + jnp.sum(step_log_p - log_q, axis=0)


def tanh_log_det(x: Array) -> Array:
    """``sum log(1 - tanh(x)^2)`` over the last axis, stably: the log-Jacobian of ``a = tanh(x)``
    (subtract it from ``log pi(x)`` to get ``log pi(a)``)."""
    return jnp.sum(2.0 * (math.log(2.0) - x - jax.nn.softplus(-2.0 * x)), axis=-1)
