"""Variance-preserving diffusion with an epsilon-predicting network: continuous time (VP SDE, Song
et al. 2021, arXiv 2011.13456) and discrete DDPM (Ho et al. 2020, arXiv 2006.11239).

``x_t = sqrt(abar(t)) x0 + sqrt(1 - abar(t)) eps``, loss ``|eps_hat - eps|^2`` (Ho's "simple"
loss). Schedules of ``abar``:

- ``linear``: ``beta(t) = beta_min + t (beta_max - beta_min)``, ``abar = exp(-int_0^t beta)`` with
  (0.1, 20) as Song et al.; it is Ho et al.'s linear betas (1e-4 .. 0.02 at T = 1000) in continuous
  time, so at small T it stays a proper schedule (as Diffusion-QL's ``vp_beta_schedule``).
- ``cosine``: ``abar = cos^2((t + s) / (1 + s) pi / 2) / cos^2(s / (1 + s) pi / 2)``, ``s = 0.008``
  (Nichol & Dhariwal 2021, arXiv 2102.09672). Continuous time stops at ``t = 0.9946`` where
  ``abar`` would reach 0 (Lu et al. 2022, DPM-Solver; flow-rl's continuous DDPM); DDPM clips its
  betas at 0.999 as Nichol & Dhariwal do.

Samplers: ``ddpm`` (ancestral, eta = 1) and ``ddim`` (eta = 0); any eta in [0, 1] works with
either. ``clip_denoised`` is on by default (``x0`` clipped to [-1, 1] inside every step, as Ho et
al. and Diffusion-QL).

The ancestral step's noise, ``ddpm_variance`` (Ho et al. 2020, section 3.2, give both choices of
``sigma_i^2`` and find them similar on images):

- ``"posterior"``: ``sigma_i^2 = beta-tilde_i = (1 - abar_{i-1}) / (1 - abar_i) beta_i``, the
  variance of ``q(x_{i-1} | x_i, x0)``; the DDIM step at ``eta = 1``;
- ``"beta"``: ``sigma_i^2 = beta_i = 1 - abar_i / abar_{i-1}``, as flow-rl's ``ContinuousDDPM``
  (``flowrl/flow/continuous_ddpm.py``, solver ``ddpm``: ``sqrt(betas[i])``, at b1385e0 and
  bae22f4). The mean is the posterior mean in both; ``beta`` adds more noise per step, so the
  samples are wider: with the exact denoiser of two modes at +-0.5 of std 0.1, 20 cosine steps
  end at a mode std of 0.08 (posterior) and 0.11 (beta) (``tests/test_generative.py``).

The final step into ``t = 0`` adds no noise in either (flow-rl's last step, ``i = 1``, neither).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fluxrl.errors import FluxError, close_matches
from fluxrl.generative import conversions as cv
from fluxrl.generative.base import GenerativeModel, check_steps

Array = jax.Array
SCHEDULES = ("cosine", "linear")
#: Noise of the ancestral step: the posterior variance beta-tilde or beta (module docstring).
VARIANCES = ("posterior", "beta")


def log_alpha_bar(t: Array, schedule: str, beta_min: float, beta_max: float, s: float) -> Array:
    """``log abar(t)`` of the continuous schedules (works on numpy and jax arrays)."""
    xp = jnp if isinstance(t, jax.Array) else np
    if schedule == "linear":
        return -(beta_min * t + 0.5 * (beta_max - beta_min) * t**2)
    f = xp.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2)
    return 2 * xp.log(xp.maximum(f, 1e-20))


@dataclass(frozen=True)
class VPDiffusion(GenerativeModel):
    """Continuous-time VP diffusion; training ``t ~ U(t_min, t_max)``. Sampling walks ``t_i =
    t_max (1 - i / N)^grid_power`` down to 0 (the last step returns the ``x0`` estimate): 1 is the
    usual uniform grid, 2 the quadratic one of flow-rl's ``quad_t_schedule``, which spends more
    steps near the data and helps the linear schedule at few steps."""

    schedule: str = "cosine"
    beta_min: float = 0.1
    beta_max: float = 20.0
    cosine_s: float = 0.008
    t_min: float = 1e-3
    grid_power: float = 1.0
    clip_denoised: bool = True
    ddpm_variance: str = "posterior"

    prediction: ClassVar[str] = "eps"
    methods: ClassVar[dict[str, tuple[int, float]]] = {"ddpm": (1, 1.0), "ddim": (1, 0.0)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.schedule not in SCHEDULES:
            raise FluxError(f"unknown noise schedule {self.schedule!r}; "
                            f"{close_matches(self.schedule, SCHEDULES)}")
        if self.ddpm_variance not in VARIANCES:
            raise FluxError(f"unknown ddpm_variance {self.ddpm_variance!r}; "
                            f"{close_matches(self.ddpm_variance, VARIANCES)}")

    @property
    def t_max(self) -> float:
        """Largest time: 0.9946 for cosine (DPM-Solver's choice), 1 for linear."""
        return 0.9946 if self.schedule == "cosine" else 1.0

    def alpha_bar(self, t: Array) -> Array:
        return jnp.exp(log_alpha_bar(jnp.asarray(t), self.schedule, self.beta_min, self.beta_max,
                                     self.cosine_s))

    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        abar = self.alpha_bar(t)
        return jnp.sqrt(abar), jnp.sqrt(jnp.maximum(1.0 - abar, 0.0))

    def sample_time(self, key: Array, shape: Sequence[int]) -> Array:
        return jax.random.uniform(key, tuple(shape), minval=self.t_min, maxval=self.t_max)

    def time_grid(self, steps: int) -> Array:
        return self.t_max * jnp.linspace(1.0, 0.0, steps + 1) ** self.grid_power

    def split(self, pred: Array, x_t: Array, t: Array) -> tuple[Array, Array]:
        a, s = self.alpha_sigma(t)
        return cv.eps_to_x0(pred, x_t, a, s), pred

    def step_std(self, t: Array, s: Array, eta: float = 1.0) -> tuple[Array, Array]:
        """The base class's ``(c, n)``; with ``ddpm_variance="beta"`` the added noise is ``n = eta
        sqrt(sigma_t^2 - (alpha_t sigma_s / alpha_s)^2)``, which on a VP path is ``eta
        sqrt(beta)`` with ``beta = 1 - alpha_t^2 / alpha_s^2`` (``= c sigma_t / sigma_s``), and
        0 on the final step into ``sigma_s = 0``."""
        c, n = super().step_std(t, s, eta)
        if self.ddpm_variance == "posterior":
            return c, n
        a_t, s_t = self.alpha_sigma(t)
        a_s, s_s = self.alpha_sigma(s)
        beta = eta * jnp.sqrt(jnp.maximum(s_t**2 - (a_t * s_s / a_s) ** 2, 0.0))
        return c, jnp.where(s_s > 0, beta, 0.0)

    def join(self, x0: Array, eps: Array, t: Array) -> Array:
        return eps


@lru_cache(maxsize=32)
def ddpm_alpha_bar(timesteps: int, schedule: str, beta_min: float, beta_max: float,
                   s: float) -> np.ndarray:
    """``abar_0 .. abar_T`` (``abar_0 = 1``) of the continuous schedule at ``t = i / T``, with
    ``beta_i = 1 - abar_i / abar_{i-1}`` clipped to [0, 0.999] (Nichol & Dhariwal 2021)."""
    t = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    abar = np.exp(log_alpha_bar(t, schedule, beta_min, beta_max, s))
    betas = np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)]).astype(np.float32)


@dataclass(frozen=True)
class DDPM(VPDiffusion):
    """Discrete DDPM with ``timesteps`` noise levels (protocol: 20, cosine). Times are ``i / T``;
    training draws ``i ~ U{1..T}``; sampling with ``steps < T`` walks an evenly spaced subsequence
    (DDIM, Song et al. 2021; ``grid_power`` bends it as in :class:`VPDiffusion`). The network sees
    ``t = i / T``; ``t_min`` is unused."""

    timesteps: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check_steps(self.timesteps, "timesteps")
        self.check_sampling(self.steps)

    @property
    def t_max(self) -> float:
        return 1.0

    def check_sampling(self, steps: int) -> None:
        if steps > self.timesteps:
            raise FluxError(f"DDPM with {self.timesteps} timesteps cannot sample in {steps} steps")

    def alpha_bar(self, t: Array) -> Array:
        table = jnp.asarray(ddpm_alpha_bar(self.timesteps, self.schedule, self.beta_min,
                                           self.beta_max, self.cosine_s))
        return table[jnp.round(jnp.asarray(t) * self.timesteps).astype(jnp.int32)]

    def sample_time(self, key: Array, shape: Sequence[int]) -> Array:
        i = jax.random.randint(key, tuple(shape), 1, self.timesteps + 1)
        return i.astype(jnp.float32) / self.timesteps

    def time_grid(self, steps: int) -> Array:
        i = np.round(self.timesteps * np.linspace(1.0, 0.0, steps + 1) ** self.grid_power)
        if np.any(np.diff(i) >= 0):
            raise FluxError(f"{steps} steps with grid_power {self.grid_power} repeat a timestep "
                            f"of {self.timesteps}; use fewer steps or more timesteps")
        return jnp.asarray(i / self.timesteps, jnp.float32)
