"""Pieces every agent shares: optimiser steps, target networks, TD targets, the generative actor."""

from __future__ import annotations

from typing import Any

import jax
import optax

from fluxrl.config import GenerativeConfig
from fluxrl.generative import GenerativeModel, make_model
from fluxrl.nets.backbones import make_backbone
from fluxrl.nets.denoiser import Denoiser, make_denoiser


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
    model = make_model(cfg.model, steps=cfg.diffusion_steps)
    net = cfg.actor
    encoder = (make_backbone("mlp", cfg.obs_encoder_width, cfg.obs_encoder_depth, net.act, False)
               if cfg.obs_encoder_depth > 0 else None)
    actor = make_denoiser(act_dim, net.backbone, net.width, net.depth, net.act, net.layer_norm,
                          cfg.time_dim, cond_encoder=encoder, fourier_scale=cfg.fourier_scale)
    return model, actor
