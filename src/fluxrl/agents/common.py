"""Pieces every agent shares: optimiser steps, target networks, TD targets, the generative actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from fluxrl.agents.base import Shapes
from fluxrl.agents.config import GenerativeConfig, config_model
from fluxrl.generative import GenerativeModel
from fluxrl.nets.backbones import make_backbone
from fluxrl.nets.denoiser import Denoiser, make_denoiser


def tanh_log_det(u: jax.Array) -> jax.Array:
    """``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, stable for large ``|u|``: the
    log-Jacobian of squashing a Gaussian sample by tanh, per dimension."""
    return 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def adam_step(params: Any, opt_state: Any, grads: Any, tx: optax.GradientTransformation):
    """One optimiser step: returns ``(params, opt_state)``."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def soft_update(target: Any, online: Any, tau: float) -> Any:
    """Polyak averaging ``target <- (1 - tau) target + tau online``."""
    return jax.tree.map(lambda t, o: t + tau * (o - t), target, online)


def td_target(reward: jax.Array, terminated: jax.Array, discount: float,
              next_value: jax.Array) -> jax.Array:
    """``r + gamma (1 - terminated) V(s')``: bootstraps on truncation, not on termination."""
    return jax.lax.stop_gradient(reward + discount * (1.0 - terminated) * next_value)


def critic_step(critic: Any, params: Any, opt_state: Any, tx: optax.GradientTransformation,
                batch: dict, target: jax.Array):
    """One regression step of a Q ensemble on ``target`` (every member, mean squared error).

    Returns ``(params, opt_state, loss, mean Q)``; written once for every agent."""

    def loss_fn(p):
        q = critic.apply({"params": p}, batch["obs"], batch["action"])
        return ((q - target) ** 2).mean(), q.mean()

    (loss, q_mean), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params, opt_state = adam_step(params, opt_state, grads, tx)
    return params, opt_state, loss, q_mean


def generative_actor(cfg: GenerativeConfig, act_dim: int) -> tuple[GenerativeModel, Denoiser]:
    """The configured generative model and its denoiser network (with the optional Mish state
    encoder), as every diffusion / flow agent builds them."""
    model = config_model(cfg)
    net = cfg.actor
    encoder = (make_backbone("mlp", cfg.obs_encoder_width, cfg.obs_encoder_depth, net.act, False)
               if cfg.obs_encoder_depth > 0 else None)
    actor = make_denoiser(act_dim, net.backbone, net.width, net.depth, net.act, net.layer_norm,
                          cfg.time_dim, cond_encoder=encoder, fourier_scale=cfg.fourier_scale)
    return model, actor


@struct.dataclass
class GenerativeACState:
    """State of a diffusion / flow actor with a Q ensemble and its EMA target."""

    actor: dict
    critic: dict
    target: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


@dataclass(frozen=True)
class GenerativeActorCritic:
    """The parts every diffusion / flow actor-critic builds identically (QSM, iDEM, SDAC, DPMD,
    QVPO): model and denoiser, a Q ensemble, Adam for both, parameter init, policy samples, the
    critics' value, and the clipped double-Q critic step, by default with the next action one
    sample of the current actor (flow-rl ``qsm.py``). Agents with more state subclass
    :class:`GenerativeACState`."""

    cfg: Any
    shapes: Shapes
    model: GenerativeModel
    actor: Denoiser
    critic: Any
    tx_actor: optax.GradientTransformation
    tx_critic: optax.GradientTransformation

    @classmethod
    def build(cls, cfg: GenerativeConfig, shapes: Shapes) -> GenerativeActorCritic:
        """Validate ``cfg`` and build the networks and optimisers for ``shapes``."""
        from fluxrl.nets.backbones import backbone_from
        from fluxrl.nets.critics import QEnsemble

        cfg.validate()
        model, actor = generative_actor(cfg, shapes.act_dim)
        critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
        return cls(cfg, shapes, model, actor, critic, optax.flatten(optax.adam(cfg.lr_actor)),
                   optax.flatten(optax.adam(cfg.lr_critic)))

    def predict(self, p: Any, a_t: jax.Array, t: jax.Array, obs: jax.Array) -> jax.Array:
        """The denoiser's prediction at noisy actions ``a_t`` and times ``t``."""
        return self.actor.apply({"params": p}, a_t, self.model.time_input(t), obs)

    def q(self, how: str) -> Any:
        """``(critic params, obs, a) -> value`` reduced over the ensemble by ``how``; ``obs`` is
        broadcast over the leading axes of ``a`` (``obs [B, 1, O]`` with ``a [B, N, A]``)."""
        from fluxrl.nets.critics import aggregate

        def value(p: Any, obs: jax.Array, a: jax.Array) -> jax.Array:
            obs = jnp.broadcast_to(obs, a.shape[:-1] + obs.shape[-1:])
            return aggregate(self.critic.apply({"params": p}, obs, a), how)

        return value

    def init(self, key: jax.Array) -> GenerativeACState:
        """Fresh parameters; the target critic starts as a copy of the online one."""
        ka, kc = jax.random.split(key)
        obs, act = jnp.zeros((1, self.shapes.obs_dim)), jnp.zeros((1, self.shapes.act_dim))
        pa = self.actor.init(ka, act, jnp.zeros((1,)), obs)["params"]
        pc = self.critic.init(kc, obs, act)["params"]
        return GenerativeACState(pa, pc, pc, self.tx_actor.init(pa), self.tx_critic.init(pc))

    def policy_sample(self, params: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
        """One action per state from the sampler."""
        return self.model.sample(self.actor, params, obs, key, obs.shape[:-1] + (self.shapes.act_dim,))

    def samples(self, params: Any, obs: jax.Array, key: jax.Array, n: int) -> jax.Array:
        """``n`` samples per state of the actor with parameters ``params``, ``[B, n, act_dim]``."""
        from fluxrl.guidance.best_of_n import sample_n

        return sample_n(self.model, self.actor, params, obs, key, n, self.shapes.act_dim)

    def sample(self, state: GenerativeACState, obs: jax.Array, key: jax.Array, n: int) -> jax.Array:
        """``n`` policy samples per state (best-of-N candidates), ``[B, n, act_dim]``."""
        return self.samples(state.actor, obs, key, n)

    def value(self, state: GenerativeACState, obs: jax.Array, a: jax.Array) -> jax.Array:
        """The online critics' value reduced by ``critic_agg`` (what best-of-N picks by)."""
        return self.q(self.cfg.critic_agg)(state.critic, obs, a)

    def noised_replay(self, actions: jax.Array, k_time: jax.Array,
                      k_noise: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Replay actions noised along the model's path at random training times: ``(a_t, t)``."""
        t = self.model.sample_time(k_time, actions.shape[:-1])
        a_t, _ = self.model.q_sample(k_noise, actions, t)
        return a_t, t

    def actor_fit(self, state: GenerativeACState, loss_fn: Any):
        """One Adam step of the actor on ``loss_fn(actor params) -> (loss, aux)``. Returns
        ``(actor params, actor opt state, loss, aux)``."""
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(state.actor)
        pa, actor_opt = adam_step(state.actor, state.actor_opt, g, self.tx_actor)
        return pa, actor_opt, loss, aux

    def critic_fit(self, state: GenerativeACState, batch: dict, next_q: jax.Array):
        """One critic step on ``r + gamma (1 - d) next_q``. Returns ``(critic params, critic opt
        state, metrics)``."""
        target = td_target(batch["reward"], batch["terminated"], self.cfg.discount, next_q)
        pc, critic_opt, c_loss, q_mean = critic_step(self.critic, state.critic, state.critic_opt,
                                                     self.tx_critic, batch, target)
        return pc, critic_opt, {"critic_loss": c_loss, "q_mean": q_mean}

    def critic_update(self, state: GenerativeACState, batch: dict, key: jax.Array):
        """Clipped double-Q step on ``r + gamma (1 - d) agg Q_target(s', a')`` with ``a'`` one
        actor sample. Returns ``(critic params, critic opt state, metrics)``."""
        next_a = self.model.sample(self.actor, state.actor, batch["next_obs"], key,
                                   batch["action"].shape)
        next_q = self.q(self.cfg.critic_agg)(state.target, batch["next_obs"], next_a)
        pc, critic_opt, metrics = self.critic_fit(state, batch, next_q)
        return pc, critic_opt, {**metrics, "next_action_abs": jnp.abs(next_a).mean()}


# --- on-policy (policy gradient) pieces ----------------------------------------------------------


@struct.dataclass
class PGState:
    """State of an on-policy agent: a policy and a value network, each with its own Adam."""

    actor: dict
    critic: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState


class ValueHead(nn.Module):
    """The state value ``V(s)`` on a backbone."""

    backbone: nn.Module

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return nn.Dense(1)(self.backbone(obs))[..., 0]


def standardise(adv: jax.Array) -> jax.Array:
    """Advantages with zero mean and unit std over the minibatch (Brax ppo/losses.py)."""
    return (adv - adv.mean()) / (adv.std() + 1e-8)


def clipped_surrogate(ratio: jax.Array, adv: jax.Array, clip: float) -> tuple[jax.Array, jax.Array]:
    """PPO's loss ``-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A))`` (``ratio`` broadcast
    against ``adv``) and the fraction of ratios outside the clip range."""
    loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip, 1 + clip) * adv).mean()
    return loss, (jnp.abs(ratio - 1) > clip).mean()


def value_loss(critic: nn.Module, params: Any, obs: jax.Array, target: jax.Array,
               coef: float) -> jax.Array:
    """``coef * 0.5 * mean((V(s) - target)^2)``."""
    return coef * 0.5 * ((critic.apply({"params": params}, obs) - target) ** 2).mean()


def pg_step(state: PGState, loss_fn: Any, batch: Any, key: jax.Array,
            tx_actor: optax.GradientTransformation, tx_critic: optax.GradientTransformation,
            max_grad_norm: float) -> tuple[PGState, dict]:
    """One step on ``loss_fn((actor, critic), batch, key) -> (loss, metrics)``: the joint gradient
    clipped to global norm ``max_grad_norm`` (0: no clipping), then each network's Adam."""
    (loss, metrics), (ga, gc) = jax.value_and_grad(loss_fn, has_aux=True)(
        (state.actor, state.critic), batch, key)
    norm = optax.tree.norm((ga, gc))
    if max_grad_norm > 0:
        scale = jnp.minimum(1.0, max_grad_norm / (norm + 1e-6))
        ga, gc = jax.tree.map(lambda g: g * scale, (ga, gc))
    ua, actor_opt = tx_actor.update(ga, state.actor_opt, state.actor)
    uc, critic_opt = tx_critic.update(gc, state.critic_opt, state.critic)
    new = PGState(optax.apply_updates(state.actor, ua), optax.apply_updates(state.critic, uc),
                  actor_opt, critic_opt)
    return new, {**metrics, "loss": loss, "grad_norm": norm}


def pg_update(loss_fn: Any, tx_actor: optax.GradientTransformation,
              tx_critic: optax.GradientTransformation, max_grad_norm: float) -> Any:
    """The on-policy contract's ``update(state, minibatch, key, update_index)`` for an agent
    without schedules: one :func:`pg_step` on ``loss_fn``."""

    def update(state: PGState, batch: Any, key: jax.Array, update_index: jax.Array):
        del update_index  # no schedule
        return pg_step(state, loss_fn, batch, key, tx_actor, tx_critic, max_grad_norm)

    return update
