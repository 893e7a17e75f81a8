"""Q-Score Matching (Psenka et al. 2023, arXiv 2312.11752): a diffusion actor whose score at every
noise level is regressed on the critic's action gradient, ``score(a_t | s) ~ grad_a Q(s, a_t) /
lambda``, with no backpropagation through the sampling chain.

Faithful to flow-rl ``agent/online/qsm.py`` (the paper's reference setup, protocol.md section 3):

- critic: clipped double Q; the next action is one sample of the current actor, no entropy term;
  the target network moves by EMA right after the critic step;
- actor: a replay action ``a0`` is noised to ``a_t = alpha_t a0 + sigma_t eps`` at a random time;
  the target critic's ensemble-mean ``g = grad_a Q(s, a_t)``, divided by its batch mean ``|g|``,
  gives the score target ``g / (lambda mean|g|)``, i.e. the noise target ``-sigma_t g / (lambda
  mean|g|)``; the loss is the mean squared error of the predicted noise;
- acting: one sample plus N(0, 0.1^2) noise while training, the best of 10 samples by the min of
  the online critics at evaluation.

Deliberate differences: the noisy exploratory action is clipped to [-1, 1] (the agent contract;
flow-rl leaves it to the environment, the authors' code clips too), and the generative model is a
config choice among the eps-predicting ones (``QSMConfig.model``). Evaluation's best of 10 is
the trainer's best-of-N switch (``best_of_eval``), not code in this file. The sampler injects
``sqrt(beta_i)`` noise per step (``ddpm_variance="beta"``, flow-rl ``ContinuousDDPM``; the QSM
authors' ``ddpm_sampler`` does the same).

The "10 samples per state" of paper A.3 are, in flow-rl ``qsm.py`` ``QSMAgent.sample_actions``,
the candidates of best-of-10 at evaluation only (training acts with one sample plus noise, the
critic's next action is one sample, the actor loss uses replay actions). We follow the code, the
only place the number has a definite meaning; ``best_of_act`` applies the same rule to training
actions if wanted.

Departures of flow-rl (and so of this file) from the authors' code (Alescontrela/score_matching_rl
at 2e77893, ``jaxrl5/agents/score_matching/score_matching_learner.py``,
``examples/states/configs/score_matching_config.py``):

- target: the authors regress ``eps_hat`` on ``-M_q grad_a Q`` with ``M_q = 50``, no ``sigma_t``
  factor, no normalisation, the gradient of the mean of the online critics after this step's
  critic update; flow-rl on ``-sigma_t g / (lambda mean|g|)``, ``lambda = 0.1``, target critics;
- diffusion: the authors 5 discrete VP steps; flow-rl 20 cosine steps;
- critic's next action: the authors add N(0, 0.1^2) noise (clipped); flow-rl none;
- evaluation: the authors one noise-free sample; flow-rl the best of 10 by the critics' min;
- actor lr: the authors decay it by a cosine over 2M steps; flow-rl constant;
- networks: the authors 2 x 512; flow-rl a 3 x 256 Mish actor and 2 x 256 ReLU critics on Gym.
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
from fluxrl.agents.config import GenerativeConfig
from fluxrl.errors import FluxError
from fluxrl.generative import GenerativeModel, model_class, models_predicting
from fluxrl.nets.critics import AGGREGATIONS
from fluxrl.rng import normal

Array = jax.Array


@dataclass
class QSMConfig(GenerativeConfig):
    """Q-Score Matching (Psenka et al. 2023): match the actor's score to grad_a Q / temperature."""

    name: str = "qsm"  #: algorithm name in the registry
    num_critics: int = 2  #: Q ensemble size (paper A.3; flow-rl qsm.py ensemble_size=2)
    lr_actor: float = 3e-4  #: denoiser Adam lr, constant (paper A.3; flow-rl qsm.yaml diffusion.lr, no decay)
    lr_critic: float = 3e-4  #: critic Adam lr (paper A.3; flow-rl qsm.yaml critic_lr)
    model: str = "vp-cosine"  #: generative model; eps-predicting only: vp-cosine, vp-linear, ddpm, ddpm-linear (flow-rl qsm.py ContinuousDDPM, cosine)
    temperature: float = 0.1  #: lambda: the score target is grad_a Q / lambda (paper A.3; flow-rl mujoco and dmc qsm.yaml temp, 0.1 on both)
    normalize_grad: bool = True  #: divide grad_a Q by its batch mean absolute value (flow-rl qsm.py; the QSM paper does not)
    grad_agg: str = "mean"  #: ensemble reduction of the target critic whose action gradient is matched (flow-rl qsm.py)
    best_of_eval: int = 10  #: evaluation takes the best of this many samples by the online critics' min (paper A.3 "10 samples per state"; flow-rl qsm.yaml num_samples, used at evaluation only)
    explore_noise: float = 0.1  #: std of Gaussian noise added to the single training-time sample (flow-rl qsm.py sample_actions)

    def validate(self) -> None:
        """QSM-specific checks (:func:`fluxrl.config.resolve` calls this): values, and a model
        with a score."""
        super().validate()
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise FluxError(f"algo.temperature must be a positive number, got {self.temperature}")
        if self.grad_agg not in AGGREGATIONS:
            raise FluxError(f"unknown algo.grad_agg={self.grad_agg!r}; choose one of: "
                            + ", ".join(AGGREGATIONS))
        prediction = model_class(self.model).prediction
        if prediction != "eps":
            ok = models_predicting("eps")
            raise FluxError(f"algo.model={self.model!r} predicts {prediction}: QSM regresses "
                            f"the prediction on the score grad_a Q / lambda, which in "
                            f"{prediction} terms blows up (velocity: 1 / (1 - t) at t -> 1; "
                            f"x0: sigma^2), while as noise it is -sigma grad_a Q / lambda; choose an "
                            f"eps-predicting model: {', '.join(ok)}")


def qsm_actor_loss(actor_params: Any, critic_params: Any,
                   predict: Callable[[Any, Array, Array, Array], Array],
                   q_value: Callable[[Any, Array, Array], Array], model: GenerativeModel,
                   obs: Array, a_t: Array, t: Array, temperature: float,
                   normalize: bool = True) -> tuple[Array, dict]:
    """QSM's score-matching loss at noisy actions ``a_t [B, A]`` and times ``t [B]``.

    ``predict(actor_params, a_t, t, obs)`` is the model's prediction and ``q_value(critic_params,
    obs, a) -> [B]`` the (reduced) critic. The target is ``model.from_score(g / (lambda s), a_t,
    t)`` with ``g = grad_a Q(s, a_t)`` and ``s = mean|g| + 1e-6`` (or 1 without ``normalize``);
    for an eps-predicting model that is ``-sigma_t g / (lambda s)``. The target is a constant:
    this loss never trains the critic."""
    g = jax.grad(lambda a: q_value(critic_params, obs, a).sum())(a_t)
    g_abs = jnp.abs(g).mean()
    scale = temperature * (g_abs + 1e-6 if normalize else 1.0)
    target = jax.lax.stop_gradient(model.from_score(g / scale, a_t, t))
    loss = jnp.mean((predict(actor_params, a_t, t, obs) - target) ** 2)
    return loss, {"q_grad_abs": jax.lax.stop_gradient(g_abs), "target_abs": jnp.abs(target).mean()}


def make_qsm(cfg: QSMConfig, shapes: Shapes) -> OffPolicyAgent:
    """Build QSM's pure functions for one seed."""
    ac = GenerativeActorCritic.build(cfg, shapes)

    def act(state: GenerativeACState, obs: Array, key: Array, deterministic: bool) -> Array:
        k_sample, k_noise = jax.random.split(key)
        a = ac.policy_sample(state.actor, obs, k_sample)
        if deterministic:  # evaluation: a policy sample (best of best_of_eval by the trainer)
            return a
        a = a + cfg.explore_noise * normal(k_noise, a.shape)
        return jnp.clip(a, -1.0, 1.0)

    def update(state: GenerativeACState, batch: dict, key: Array, update_index: Array):
        k_next, k_time, k_noise = jax.random.split(key, 3)
        pc, critic_opt, c_metrics = ac.critic_update(state, batch, k_next)
        pt = soft_update(state.target, pc, cfg.tau)

        # the actor matches the gradient of the freshly updated target critic at noised replay actions
        a_t, t = ac.noised_replay(batch["action"], k_time, k_noise)
        pa, actor_opt, a_loss, aux = ac.actor_fit(state, lambda p: qsm_actor_loss(
            p, pt, ac.predict, ac.q(cfg.grad_agg), ac.model, batch["obs"], a_t, t,
            cfg.temperature, cfg.normalize_grad))

        new = GenerativeACState(pa, pc, pt, actor_opt, critic_opt)
        return new, {**c_metrics, "actor_loss": a_loss, **aux}

    return OffPolicyAgent(ac.init, act, update, ac.value, ac.sample)


#: this algorithm's entry in the registry (fluxrl.agents.registry)
ALGO = AlgoInfo("qsm", "q_guidance", "uniform", "off_policy", make_qsm,
                "Psenka et al. 2023, Learning a Diffusion Model Policy from Rewards via Q-Score "
                "Matching", QSMConfig,
                follows="flowrl")
