"""iDEM for online RL: iterated Denoising Energy Matching (Akhound-Sadegh et al. 2024, arXiv
2402.06121) with the energy ``-Q(s, a) / lambda`` and a uniform reference on the action box, i.e. a
diffusion actor fitted to ``pi* ~ Unif(A) exp(Q / lambda)`` by regressing its score at every noise
level on a Monte Carlo estimate of the noised target's score (paper eq. 8-9,
:mod:`fluxrl.guidance.energy_score`). "Iterated": the noisy actions are noised replay actions, which
the current policy collected, so the buffer the estimator is evaluated on follows the policy.

Faithful to flow-rl ``agent/online/idem.py`` (which reuses its QSM agent for all but the actor
loss), in the same update order:

- critic: clipped double Q; the next action is one sample of the current actor, no entropy term;
  the target network moves by EMA right after the critic step;
- actor: a replay action ``a0`` is noised to ``a_t = alpha_t a0 + sigma_t eps`` at ``t ~ U(1e-3,
  0.9946)``; ``num_reverse_samples`` candidates ``a_k = (a_t - sigma_t eps_k) / alpha_t`` are drawn
  with ``eps_k`` a standard normal truncated so that ``a_k`` lies in [-1, 1]; the freshly updated
  *target* critics, reduced by their min, give ``Q_k`` and ``g_k = grad_a Q(s, a_k)`` in one batched
  call; both are divided by one scalar, ``s = mean |g| + 1e-6`` over every candidate, state and
  action dimension of the batch, so the noise target is ``-(sigma_t / alpha_t) sum_k softmax(Q /
  (lambda s))_k g_k / (lambda s)`` (no clipping), and the loss is its mean squared error. The
  normalisation makes the target independent of the scale of Q; flow-rl's temperature 0.05 was
  set for this form (``normalize=False`` gives the original DEM estimator, whose weights collapse
  onto one candidate once ``|grad Q|`` is much larger than ``lambda``:
  :mod:`fluxrl.guidance.energy_score`);
- acting: one sample plus N(0, 0.1^2) noise while training; the best of 10 samples by the min of
  the online critics at evaluation (the trainer's ``best_of_eval``).

Supported models: the eps-predicting ones (vp-cosine, the default and flow-rl's, vp-linear, ddpm,
ddpm-linear); the target is handed to ``model.from_score``, which for them is ``-sigma_t`` times
the score. In velocity or x0 terms the same target grows like ``1 / alpha_t^2`` or ``sigma_t^2``
(flow's ``alpha_t -> 0``, EDM's large ``sigma``), so those models are refused.

Deliberate differences: the truncated normal is sampled by the inverse CDF on the accurate side
(:func:`fluxrl.guidance.reverse_sampling.reverse_sample`, the same distribution; flow-rl calls
``jax.random.truncated_normal`` and falls back to a clipped normal where it returns NaN); the
noisy exploratory action is clipped to [-1, 1] (the agent contract; flow-rl leaves it to the
environment); candidates are valued as one ``[B, K]`` batch with the gradient of the summed values
instead of a double ``vmap`` of per-sample gradients (the same numbers); the generative model is a
config choice among the eps-predicting ones; the sampler injects ``sqrt(beta_i)`` noise per step
(``ddpm_variance="beta"``, flow-rl ``ContinuousDDPM``). flow-rl has no DMC config for iDEM: on
DMC the suite defaults of :func:`fluxrl.config.resolve` apply and the temperature stays 0.05.

iDEM (Akhound-Sadegh et al. 2024) is a Boltzmann sampler with no RL code of its own; flow-rl's RL
version departs from the paper's estimator and from the RL baseline of the SDAC authors
(mahaitongdae/diffusion_policy_online_rl at a50cf41, ``relax/algorithm/idem.py``):

- normalisation: flow-rl divides Q and grad Q by ``mean|grad Q| + 1e-6``; the DEM paper and the
  SDAC authors' baseline do not;
- proposal: the SDAC authors noise a policy sample; flow-rl a replay action;
- candidates: the SDAC authors 64, clipped to the box; flow-rl 500 from the truncated normal;
- score: the SDAC authors differentiate ``logsumexp Q`` with respect to ``a_t`` (no lambda);
  flow-rl ``sum_k softmax_k grad Q / lambda`` with the target critics' min;
- training: the SDAC authors scale rewards by 0.2 and delay updates by 2; flow-rl neither.
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
from fluxrl.generative import GenerativeModel, models_predicting
from fluxrl.guidance.energy_score import energy_score
from fluxrl.nets.critics import AGGREGATIONS
from fluxrl.rng import normal

Array = jax.Array
#: Generative models iDEM trains: those whose network predicts the noise.
SUPPORTED_MODELS = models_predicting("eps")


@dataclass
class IDEMConfig(CandidateConfig):
    """iDEM (Akhound-Sadegh et al. 2024) for RL: match the actor's score to a Monte Carlo estimate
    of the score of Unif(A) exp(Q / temperature) noised."""

    name: str = "idem"  #: algorithm name in the registry
    num_critics: int = 2  #: Q ensemble size (paper A.3; flow-rl qsm.py ensemble_size=2, inherited by idem.py)
    lr_actor: float = 3e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl mujoco idem.yaml diffusion.lr, no decay)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl mujoco idem.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model; eps-predicting only: vp-cosine, vp-linear, ddpm, ddpm-linear (flow-rl qsm.py ContinuousDDPM, cosine)
    temperature: float = 0.05  #: lambda: the target is Unif(A) exp(Q / lambda) (flow-rl mujoco idem.yaml temp; no DMC config)
    num_reverse_samples: int = 500  #: K, Monte Carlo candidates per noisy action in the score estimate (flow-rl mujoco idem.yaml num_reverse_samples)
    energy_agg: str = "min"  #: ensemble reduction of the target critic that defines the energy, for weights and gradients (flow-rl idem.py min over the ensemble)
    best_of_eval: int = 10  #: evaluation takes the best of this many samples by the online critics' min (flow-rl mujoco idem.yaml num_samples)
    explore_noise: float = 0.1  #: std of Gaussian noise added to the single training-time sample (flow-rl qsm.py sample_actions, inherited by idem.py)
    normalize: bool = True  #: divide the candidates' Q values and action gradients by s = mean|grad_a Q| + 1e-6 before the softmax and the weighted sum, i.e. temperature lambda * s (flow-rl idem.py at b1385e0 and bae22f4; False: the unnormalised DEM estimator of Akhound-Sadegh et al. 2024, eq. 8-9)

    def validate(self) -> None:
        """iDEM-specific checks (:func:`fluxrl.config.resolve` calls this)."""
        super().validate()
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise FluxError(f"algo.temperature must be a positive number, got {self.temperature}")
        if not (isinstance(self.num_reverse_samples, int) and self.num_reverse_samples >= 1):
            raise FluxError(f"algo.num_reverse_samples must be a positive integer, got "
                            f"{self.num_reverse_samples}")
        if self.energy_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.energy_agg={self.energy_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        if not (math.isfinite(self.explore_noise) and self.explore_noise >= 0):
            raise FluxError(f"algo.explore_noise must be a non-negative number, got "
                            f"{self.explore_noise}")
        if self.model not in SUPPORTED_MODELS:
            raise FluxError(f"algo.model={self.model!r} is not supported by iDEM (its target is a "
                            f"score, usable as a noise prediction only); choose one of: "
                            + ", ".join(SUPPORTED_MODELS))


def idem_actor_loss(actor_params: Any, critic_params: Any,
                    predict: Callable[[Any, Array, Array, Array], Array],
                    q_value: Callable[[Any, Array, Array], Array], model: GenerativeModel,
                    obs: Array, a_t: Array, t: Array, key: Array, num_samples: int,
                    temperature: float, block: int = 0,
                    normalize: bool = True) -> tuple[Array, dict]:
    """iDEM's denoising energy matching loss at noisy actions ``a_t [B, A]``, times ``t [B]``.

    ``predict(actor_params, a_t, t, obs)`` is the model's prediction and ``q_value(critic_params,
    obs [B, K, obs], a [B, K, A]) -> [B, K]`` the (reduced) critic. The target is
    ``model.from_score(S, a_t, t)`` with ``S`` the DEM score estimate over ``num_samples``
    candidates (:func:`fluxrl.guidance.energy_score.energy_score`); for an eps-predicting model
    ``-(sigma_t / alpha_t) sum_k w_k grad_a Q(s, a_k) / lambda'`` with ``w = softmax(Q /
    lambda')`` and ``lambda' = lambda (mean|grad_a Q| + 1e-6)`` (``normalize``, flow-rl) or
    ``lambda`` itself. The target is a constant: this loss never trains the critic. ``block > 0``
    values the candidates ``block`` actions at a time (same numbers, faster on CPU)."""
    def value(a: Array, o: Array) -> Array:
        return q_value(critic_params, jnp.broadcast_to(o[:, None, :], a.shape[:-1] + o.shape[-1:]), a)

    score, info = energy_score(model, key, a_t, t, value, num_samples, temperature,
                               per_state=(obs,), block=block, normalize=normalize)
    target = jax.lax.stop_gradient(model.from_score(score, a_t, t))
    loss = jnp.mean((predict(actor_params, a_t, t, obs) - target) ** 2)
    w = info["weights"]
    return loss, {"target_abs": jnp.abs(target).mean(), "weights_max": w.max(-1).mean(),
                  "weights_ess": (1.0 / jnp.sum(w**2, axis=-1)).mean(),
                  "q_candidates": info["q"].mean(), "grad_scale": info["scale"]}


def make_idem(cfg: IDEMConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build iDEM's pure functions for one seed."""
    ac = GenerativeActorCritic.build(cfg, shapes)

    def act(state: GenerativeACState, obs: Array, key: Array, deterministic: bool) -> Array:
        k_sample, k_noise = jax.random.split(key)
        a = ac.policy_sample(state.actor, obs, k_sample)
        if deterministic:  # evaluation: a policy sample (best of best_of_eval by the trainer)
            return a
        return jnp.clip(a + cfg.explore_noise * normal(k_noise, a.shape), -1.0, 1.0)

    def update(state: GenerativeACState, batch: dict, key: Array, update_index: Array):
        k_next, k_time, k_noise, k_rev = jax.random.split(key, 4)
        pc, critic_opt, c_metrics = ac.critic_update(state, batch, k_next)
        pt = soft_update(state.target, pc, cfg.tau)

        # the actor: noised replay actions, candidates valued by the freshly updated target critics
        a_t, t = ac.noised_replay(batch["action"], k_time, k_noise)
        pa, actor_opt, a_loss, aux = ac.actor_fit(state, lambda p: idem_actor_loss(
            p, pt, ac.predict, ac.q(cfg.energy_agg), ac.model, batch["obs"], a_t, t,
            k_rev, cfg.num_reverse_samples, cfg.temperature, cfg.critic_block, cfg.normalize))

        new = GenerativeACState(pa, pc, pt, actor_opt, critic_opt)
        return new, {**c_metrics, "actor_loss": a_loss, **aux}

    return OffPolicyAgent(ac.init, act, update, ac.value, ac.sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("idem", "q_guidance", "uniform", "off_policy", make_idem,
                "Akhound-Sadegh et al. 2024, Iterated Denoising Energy Matching for Sampling "
                "from Boltzmann Densities (RL variant: energy -Q / temperature)", IDEMConfig,
                follows="flowrl")
