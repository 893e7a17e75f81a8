"""Flow matching on the linear (optimal-transport) path, i.e. rectified flow (Lipman et al. 2023,
arXiv 2210.02747; Liu et al. 2023, arXiv 2209.03003).

``x_t = (1 - t) x0 + t eps``; the network regresses the velocity ``v = eps - x0`` with ``t ~
U(0, 1)``. The sign convention matches the diffusion models here (``t = 1`` is noise, sampling runs
``t`` from 1 to 0); papers that put the data at ``t = 1`` have ``v`` of the opposite sign.
Samplers: ``euler`` (default; the generalised DDIM step, which for ``eta = 0`` is exactly Euler on
``v``, and for ``eta > 0`` re-injects noise with the same marginals) and ``heun`` (second order,
``eta`` = churn). Samples are clipped to [-1, 1] at the end only (``clip_denoised`` off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from fluxrl.generative import conversions as cv
from fluxrl.generative.base import GenerativeModel

Array = jax.Array


@dataclass(frozen=True)
class FlowMatching(GenerativeModel):
    """Linear-path flow matching / rectified flow with a velocity-predicting network."""

    prediction: ClassVar[str] = "velocity"
    methods: ClassVar[dict[str, tuple[int, float]]] = {"euler": (1, 0.0), "heun": (2, 0.0)}

    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        t = jnp.asarray(t)
        return 1.0 - t, t

    def sample_time(self, key: Array, shape: Sequence[int]) -> Array:
        return jax.random.uniform(key, tuple(shape))

    def time_grid(self, steps: int) -> Array:
        return jnp.linspace(1.0, 0.0, steps + 1)

    def split(self, pred: Array, x_t: Array, t: Array) -> tuple[Array, Array]:
        return cv.velocity_to_x0(pred, x_t, t), cv.velocity_to_eps(pred, x_t, t)

    def join(self, x0: Array, eps: Array, t: Array) -> Array:
        return cv.x0_eps_to_velocity(x0, eps)
