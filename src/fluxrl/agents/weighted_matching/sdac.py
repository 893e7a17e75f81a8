"""Soft Diffusion Actor-Critic (Ma et al. 2025, arXiv 2502.00361): a maximum-entropy diffusion actor
fitted to ``pi* ~ Unif(A) exp(Q / lambda)`` by reverse-sampling score matching. At a noised replay
action ``a_t`` the denoising target is formed from many clean candidates drawn from ``a0 | a_t``
under the uniform reference, weighted by ``softmax(Q(s, a0) / lambda)`` over the candidates: no
sample of ``pi*`` and no backpropagation through the sampling chain is needed.

Faithful to flow-rl ``agent/online/sdac.py`` (the paper's reference setup, protocol.md section 3),
in the same update order:

- critic: clipped double Q; the next action is one sample of the current actor, no entropy term;
- actor: a replay action ``a0`` is noised to ``a_t = alpha_t a0 + sigma_t eps`` at ``t ~ U(1e-3,
  0.9946)``; ``num_reverse_samples`` candidates ``a0_i = (a_t - sigma_t eps_i) / alpha_t`` with
  ``-eps_i`` a standard normal truncated so that ``a0_i`` lies in [-1, 1]
  (:func:`fluxrl.guidance.reverse_sampling.reverse_sample`); the online critics as they were
  *before* this step's critic update value every candidate (the min of the ensemble), and the
  weights are ``softmax(Q / lambda)`` over a state's candidates; the loss is ``sum_i w_i |eps_pred
  - eps_i|^2``, i.e. the regression of the predicted noise on the weighted mean of the candidates'
  noises (flow-rl writes ``eps_reverse = -eps_i``);
- the target critics move by EMA; acting is one plain policy sample (the sampler's own noise, no
  added noise) while training and the best of 10 samples by the min of the online critics at
  evaluation (the trainer's ``best_of_eval``).

Deliberate differences:

- the loss sums the normalised weights over candidates where flow-rl averages over them too: flow-rl's
  loss is this one divided by ``num_reverse_samples``, a constant that Adam's scale invariance
  removes (up to its epsilon);
- the truncated normal is sampled by the inverse CDF on the side of zero where it is accurate
  (:mod:`fluxrl.guidance.reverse_sampling`); flow-rl calls ``jax.random.truncated_normal``, which
  loses the tails in float32, and falls back to a clipped normal when it returns NaN. Same
  distribution, computed accurately;
- the critic values the B x N candidates in ``lax.map`` blocks of about ``critic_block`` actions
  (:mod:`fluxrl.nets.blocked`), flow-rl in one call: the same numbers, about 2x faster for the
  whole update at paper settings on a 2-core CPU, where one call on 128K rows is memory-bound;
- the generative model is a config choice (``SDACConfig.model``): every Gaussian path of
  :data:`SUPPORTED_MODELS`, the target being the model's own (noise, velocity or EDM's
  preconditioned x0); flow-rl only has the cosine VP diffusion (``vp-cosine``, the default);
- the temperature is 0.05, and 0.01 on DMC (paper A.3; flow-rl ``mujoco/algo/sdac.yaml`` and
  ``dmc/algo/sdac.yaml`` ``temp``), the DMC value a row of :mod:`fluxrl.task_defaults`;
- the sampler injects ``sqrt(beta_i)`` noise per step (``ddpm_variance="beta"``, flow-rl
  ``ContinuousDDPM``).

Departures of flow-rl (and so of this file) from the authors' code
(mahaitongdae/diffusion_policy_online_rl at a50cf41, ``relax/algorithm/sdac.py``,
``relax/network/diffv2.py``, ``scripts/train_mujoco.py``):

- noisy actions: the authors noise a fresh policy action (best of 32 plus noise); flow-rl noises
  the replay action;
- reverse samples: the authors draw 64 and clip them to the box; flow-rl 500, truncated normal;
- temperature: the authors tune it (``lambda = alpha / 5``, ``alpha`` from 5, a step every 250
  updates towards a Gaussian-noise entropy of ``-0.9 |A|``); flow-rl fixes it (0.05, DMC 0.01);
- reward scale: the authors 0.2; flow-rl 1;
- acting: the authors act with the EMA target policy, best of 32 plus N(0, (0.1 alpha)^2), and
  evaluate it noise-free at best of 32; flow-rl acts with one plain sample, evaluates best of 10;
- delays and learning rate: the authors update the policy and the targets every 2 steps and decay
  the actor's lr linearly 3e-4 -> 3e-5; flow-rl updates every step at a constant lr;
- chain: the authors use a linear beta schedule (x 0.8), ``x_T ~ 0.5 N(0, I)`` and the posterior
  variance; flow-rl the cosine schedule, ``N(0, I)`` and ``sqrt(beta)``;
- critic: the authors 3 x 256 Mish; flow-rl 2 x 256 ReLU on Gym.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from fluxrl.agents.base import AlgoInfo, OffPolicyAgent, Shapes
from fluxrl.agents.common import GenerativeACState, GenerativeActorCritic, soft_update
from fluxrl.agents.config import CandidateConfig
from fluxrl.errors import FluxError
from fluxrl.generative import GenerativeModel
from fluxrl.guidance.reverse_sampling import candidate_loss, reverse_sample
from fluxrl.guidance.weights import softmax_weights
from fluxrl.nets.blocked import map_blocks

Array = jax.Array
#: Generative models SDAC trains: Gaussian paths with ``alpha_t > 0`` at training times.
SUPPORTED_MODELS = ("vp-cosine", "vp-linear", "ddpm", "ddpm-linear", "flow", "edm")


@dataclass
class SDACConfig(CandidateConfig):
    """Soft Diffusion Actor-Critic (Ma et al. 2025): reverse-sampled denoising targets weighted by
    exp(Q / temperature)."""

    name: str = "sdac"  #: algorithm name in the registry
    num_critics: int = 2  #: Q ensemble size (paper A.3; flow-rl sdac.py ensemble_size=2)
    lr_actor: float = 3e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl sdac.yaml diffusion.lr, no decay)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl sdac.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model: vp-cosine, vp-linear, ddpm, ddpm-linear, flow, edm (flow-rl sdac.py ContinuousDDPM, cosine)
    temperature: float = 0.05  #: lambda of the weights softmax(Q / lambda) (paper A.3; flow-rl mujoco sdac.yaml temp; DMC 0.01 via fluxrl.task_defaults)
    num_reverse_samples: int = 500  #: clean candidates per state drawn from a0 | a_t under the uniform reference (paper A.3; flow-rl sdac.yaml num_reverse_samples)
    best_of_eval: int = 10  #: evaluation takes the best of this many samples by the online critics' min (flow-rl sdac.yaml num_samples)

    def validate(self) -> None:
        """SDAC-specific checks (:func:`fluxrl.config.resolve` calls this)."""
        super().validate()
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise FluxError(f"algo.temperature must be a positive number, got {self.temperature}")
        if self.num_reverse_samples < 2:
            raise FluxError(f"algo.num_reverse_samples must be at least 2 (the weights compare "
                            f"candidates), got {self.num_reverse_samples}")
        if self.model not in SUPPORTED_MODELS:
            raise FluxError(f"algo.model={self.model!r} is not supported by SDAC; choose one of: "
                            + ", ".join(SUPPORTED_MODELS))


def sdac_actor_loss(actor_params: Any, critic_params: Any, model: GenerativeModel, actor: Any,
                    q_value: Callable[[Any, Array, Array], Array], obs: Array, a_t: Array,
                    t: Array, key: Array, num_samples: int, temperature: float,
                    block: int = 0) -> tuple[Array, dict]:
    """SDAC's reverse-sampling loss at noisy actions ``a_t [B, A]``, times ``t [B]``.

    ``q_value(critic_params, obs [B, n, obs], a [B, n, A]) -> [B, n]`` is the (reduced) critic.
    Draws ``num_samples`` candidates ``(a0, eps)`` per state from ``a0 | a_t`` under a uniform
    prior on [-1, 1], weights them by ``softmax(Q(s, a0) / temperature)`` over the candidates, and
    returns the batch mean of :func:`candidate_loss`. The weights are constants: this loss never
    trains the critic. ``block > 0`` values the candidates of ``max(1, block // num_samples)``
    states per ``lax.map`` step (:func:`fluxrl.nets.blocked.map_blocks`; same numbers, faster)."""
    a0, eps = reverse_sample(model, key, a_t, t, num_samples)

    def q_of(o: Array, a: Array) -> Array:
        return q_value(critic_params, jnp.broadcast_to(o[:, None, :], a.shape[:-1] + o.shape[-1:]), a)

    states = max(1, block // num_samples) if block > 0 else obs.shape[0]
    q = jax.lax.stop_gradient(map_blocks(q_of, obs, a0, block=states))
    w = softmax_weights(q, temperature)
    loss = candidate_loss(model, actor, actor_params, a_t, t, obs, a0, eps, w).mean()
    ess = 1.0 / jnp.sum(w**2, axis=-1)  # effective number of candidates per state
    return loss, {"weights_max": w.max(-1).mean(), "weights_ess": ess.mean(),
                  "q_candidates": q.mean()}


def make_sdac(cfg: SDACConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build SDAC's pure functions for one seed."""
    ac = GenerativeActorCritic.build(cfg, shapes)
    q_value = ac.q(cfg.critic_agg)

    def act(state: GenerativeACState, obs: Array, key: Array, deterministic: bool) -> Array:
        # one policy sample either way (flow-rl explores with the sampler's own noise); evaluation's
        # best of best_of_eval is added by the trainer
        return ac.policy_sample(state.actor, obs, key)

    def update(state: GenerativeACState, batch: dict, key: Array, update_index: Array):
        k_next, k_time, k_noise, k_rev = jax.random.split(key, 4)
        pc, critic_opt, c_metrics = ac.critic_update(state, batch, k_next)

        # the actor: noised replay actions, candidates valued by the pre-update online critics
        a_t, t = ac.noised_replay(batch["action"], k_time, k_noise)
        pa, actor_opt, a_loss, aux = ac.actor_fit(state, lambda p: sdac_actor_loss(
            p, state.critic, ac.model, ac.actor, q_value, batch["obs"], a_t, t, k_rev,
            cfg.num_reverse_samples, cfg.temperature, cfg.critic_block))

        new = GenerativeACState(pa, pc, soft_update(state.target, pc, cfg.tau), actor_opt,
                                critic_opt)
        return new, {**c_metrics, "actor_loss": a_loss, **aux}

    return OffPolicyAgent(ac.init, act, update, ac.value, ac.sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("sdac", "weighted_matching", "uniform", "off_policy", make_sdac,
                "Ma et al. 2025, Soft Diffusion Actor-Critic: Efficient Online Reinforcement "
                "Learning for Diffusion Policy", SDACConfig,
                follows="flowrl")
