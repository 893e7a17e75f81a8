"""Pieces every agent shares: optimiser steps, target networks, TD targets."""

from __future__ import annotations

from typing import Any

import jax
import optax


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
