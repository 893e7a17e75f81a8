"""EDM (Karras et al. 2022, arXiv 2206.00364): ``x = x0 + sigma eps`` with time ``t = sigma``.

Preconditioning (their Table 1): ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with
``c_skip = s_d^2 / (sigma^2 + s_d^2)``, ``c_out = sigma s_d / sqrt(sigma^2 + s_d^2)``, ``c_in = 1 /
sqrt(sigma^2 + s_d^2)``, ``c_noise = ln(sigma) / 4``. Training: ``ln sigma ~ N(P_mean, P_std^2)``
and the weighted loss ``lambda(sigma) |D - x0|^2``, written as the equivalent unweighted regression
of ``F`` on ``(x0 - c_skip x) / c_out`` (their eq. 8). Sampling: ``sigma_i = (sigma_max^(1/rho) +
i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, ``sigma_N = 0``, with Heun's method
(default; ``eta`` = churn gamma, Alg. 2) or Euler. Defaults are the paper's (sigma_data 0.5 is also
a fair scale for actions in [-1, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from fluxrl.generative import conversions as cv
from fluxrl.generative.base import GenerativeModel
from fluxrl.rng import normal

Array = jax.Array


@dataclass(frozen=True)
class EDM(GenerativeModel):
    """Karras et al.'s EDM; the (preconditioned) prediction is the denoised ``x0``."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2

    prediction: ClassVar[str] = "x0"
    methods: ClassVar[dict[str, tuple[int, float]]] = {"heun": (2, 0.0), "euler": (1, 0.0)}
    t_ceiling: ClassVar[float] = math.inf

    @property
    def t_eps(self) -> float:  # smallest sigma the net sees
        return self.sigma_min

    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        t = jnp.asarray(t)
        return jnp.ones_like(t), t

    def time_input(self, t: Array) -> Array:
        return jnp.log(t) / 4.0

    def precondition(self, t: Array) -> tuple[Array, Array, Array]:
        sd2, s2 = self.sigma_data**2, jnp.asarray(t) ** 2
        return 1.0 / jnp.sqrt(s2 + sd2), sd2 / (s2 + sd2), t * self.sigma_data / jnp.sqrt(s2 + sd2)

    def sample_time(self, key: Array, shape: Sequence[int]) -> Array:
        return jnp.exp(self.p_mean + self.p_std * normal(key, tuple(shape)))

    def time_grid(self, steps: int) -> Array:
        r = 1.0 / self.rho
        sig = jnp.linspace(self.sigma_max**r, self.sigma_min**r, steps) ** self.rho
        return jnp.concatenate([sig, jnp.zeros(1)])

    def split(self, pred: Array, x_t: Array, t: Array) -> tuple[Array, Array]:
        return pred, cv.x0_to_eps(pred, x_t, 1.0, t)

    def join(self, x0: Array, eps: Array, t: Array) -> Array:
        return x0
