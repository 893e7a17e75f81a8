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
