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
config choice among the eps-predicting ones (``QSMConfig.model``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import Agent, AlgoInfo, register
from fluxrl.agents.common import adam_step, critic_step, soft_update, td_target
from fluxrl.config import QSMConfig
from fluxrl.envs import EnvSpec
from fluxrl.generative import GenerativeModel, make_model
from fluxrl.guidance.best_of_n import best_of_n
from fluxrl.nets.backbones import backbone_from, make_backbone
from fluxrl.nets.critics import QEnsemble, aggregate
from fluxrl.nets.denoiser import make_denoiser

Array = jax.Array


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


@struct.dataclass
class QSMState:
    actor: dict
    critic: dict
    target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


def make_qsm(cfg: QSMConfig, spec: EnvSpec) -> Agent:
    """Build QSM's pure functions for one seed."""
    cfg.validate()
    model = make_model(cfg.model, steps=cfg.diffusion_steps)
    net = cfg.actor
    encoder = (make_backbone("mlp", cfg.obs_encoder_width, cfg.obs_encoder_depth, net.act, False)
               if cfg.obs_encoder_depth > 0 else None)
    actor = make_denoiser(spec.act_dim, net.backbone, net.width, net.depth, net.act, net.layer_norm,
                          cfg.time_dim, cond_encoder=encoder, fourier_scale=cfg.fourier_scale)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    tx_actor = optax.flatten(optax.adam(cfg.lr_actor))
    tx_critic = optax.flatten(optax.adam(cfg.lr_critic))

    def predict(p: Any, a_t: Array, t: Array, obs: Array) -> Array:
        return actor.apply({"params": p}, a_t, model.time_input(t), obs)

    def q_value(how: str) -> Callable[[Any, Array, Array], Array]:
        return lambda p, obs, a: aggregate(critic.apply({"params": p}, obs, a), how)

    def init(key: Array) -> QSMState:
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim))
        pa = actor.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = critic.init(kc, obs, act)["params"]
        return QSMState(pa, pc, pc, tx_actor.init(pa), tx_critic.init(pc))

    def act(state: QSMState, obs: Array, key: Array, deterministic: bool) -> Array:
        if deterministic:  # best of num_samples by the online critics (flow-rl sample_actions)
            return best_of_n(model, actor, state.actor, obs, key, cfg.num_samples, spec.act_dim,
                             lambda o, a: q_value(cfg.critic_agg)(state.critic, o, a))
        k_sample, k_noise = jax.random.split(key)
        a = model.sample(actor, state.actor, obs, k_sample, obs.shape[:-1] + (spec.act_dim,))
        a = a + cfg.explore_noise * jax.random.normal(k_noise, a.shape)
        return jnp.clip(a, -1.0, 1.0)

    def update(state: QSMState, batch: dict, key: Array, step: Array):
        k_next, k_time, k_noise = jax.random.split(key, 3)
        next_a = model.sample(actor, state.actor, batch["next_obs"], k_next, batch["action"].shape)
        next_q = q_value(cfg.critic_agg)(state.target, batch["next_obs"], next_a)
        target = td_target(batch["reward"], batch["terminated"], cfg.discount, next_q)

        pc, critic_opt, c_loss, q_mean = critic_step(critic, state.critic, state.critic_opt,
                                                     tx_critic, batch, target)
        pt = soft_update(state.target, pc, cfg.tau)

        # the actor matches the gradient of the freshly updated target critic at noised replay actions
        t = model.sample_time(k_time, batch["action"].shape[:-1])
        a_t, _ = model.q_sample(k_noise, batch["action"], t)
        (a_loss, aux), g = jax.value_and_grad(qsm_actor_loss, has_aux=True)(
            state.actor, pt, predict, q_value(cfg.grad_agg), model, batch["obs"], a_t, t,
            cfg.temperature, cfg.normalize_grad)
        pa, actor_opt = adam_step(state.actor, state.actor_opt, g, tx_actor)

        new = QSMState(pa, pc, pt, actor_opt, critic_opt)
        metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "q_mean": q_mean,
                   "next_action_abs": jnp.abs(next_a).mean(), **aux}
        return new, metrics

    return Agent(init, act, update)


register(AlgoInfo("qsm", "q_guidance", "uniform", "off_policy", make_qsm,
                  "Psenka et al. 2023, Learning a Diffusion Model Policy from Rewards via Q-Score "
                  "Matching"))
