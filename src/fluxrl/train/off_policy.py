"""Off-policy training (design.md section 2): host simulators, one jitted step per env step.

Per env step the host makes one device call, ``step``: insert the transition into the device
replay buffer, run ``updates_per_step`` gradient updates with ``lax.scan``, and compute the next
action. Seeds are the leading ``vmap`` axis of the whole state. Random keys are derived from
(seed, step), so a run is a pure function of its config and resumes exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fluxrl.agents.base import Agent
from fluxrl.envs import EnvSpec, Transition
from fluxrl.train.replay import Replay, replay_add, replay_init, replay_sample

ACT_STREAM = 1  #: index of the acting key in a seed's key pair (0 is the update stream)
EVAL_KEY = 2_718_281  #: seed of evaluation keys (shared by all seeds; each round starts afresh)


@struct.dataclass
class TrainState:
    agent: Any  #: the agent's pytree, leading axis seeds
    buffer: Replay  #: device replay buffer, leading axis seeds
    keys: jax.Array  #: per seed: [update key, act key] (raw uint32)
    msum: dict  #: sums of update metrics since the last log
    mcount: jax.Array  #: number of updates summed in msum


@dataclass
class OffPolicyPrograms:
    """The jitted programs of an off-policy run: built once, reused every step."""

    agent: Agent
    spec: EnvSpec
    capacity: int
    batch_size: int
    updates_per_step: int

    def __post_init__(self):
        self.init = jax.jit(jax.vmap(self._init))
        self.insert = jax.jit(jax.vmap(self._insert), donate_argnums=0)
        self.step = jax.jit(jax.vmap(self._step, in_axes=(0, 0, 0, None)), donate_argnums=0)
        self.act_eval = jax.jit(jax.vmap(
            lambda a, o, i: self.agent.act(a, o, jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), i),
                                           True), in_axes=(0, 0, None)))
        self.act_explore = jax.jit(jax.vmap(self._act, in_axes=(0, 0, None)))

    def eval_policy(self, agent_state: Any):
        """``obs -> action`` for evaluation: deterministic where the agent has a mode; sampling
        agents (best-of-N over a diffusion chain) get a fresh key at every call."""
        calls = itertools.count()
        return lambda obs: self.act_eval(agent_state, obs, next(calls))

    # ---- per-seed pure functions (vmapped above) ----
    def _init(self, key: jax.Array) -> TrainState:
        k_agent, k_update, k_act = jax.random.split(key, 3)
        agent_state = self.agent.init(k_agent)
        buffer = replay_init(self.capacity, self.spec.obs_dim, self.spec.act_dim)
        batch = replay_sample(buffer, k_update, self.batch_size)
        metrics = jax.eval_shape(self.agent.update, agent_state, batch, k_update, jnp.int32(0))[1]
        msum = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)
        return TrainState(agent_state, buffer, jnp.stack([k_update, k_act]), msum, jnp.int32(0))

    def _insert(self, state: TrainState, tr: dict) -> TrainState:
        return state.replace(buffer=replay_add(state.buffer, tr))

    def _act(self, state: TrainState, obs: jax.Array, step: jax.Array) -> jax.Array:
        key = jax.random.fold_in(state.keys[ACT_STREAM], step)
        return self.agent.act(state.agent, obs, key, False)

    def _step(self, state: TrainState, tr: dict, next_obs: jax.Array, step: jax.Array):
        """Insert transition ``step``, update, and act on the observation that follows it."""
        state = self._insert(state, tr)
        step_key = jax.random.fold_in(state.keys[0], step)
        k_sample, k_update = jax.random.split(step_key)
        # Sample every minibatch of this step up front: the buffer never enters the scan's loop
        # state, which would make XLA copy the whole buffer on every call.
        u, b = self.updates_per_step, self.batch_size
        batches = jax.tree.map(lambda x: x.reshape((u, b) + x.shape[1:]),
                               replay_sample(state.buffer, k_sample, u * b))

        def body(carry, xs):
            agent_state, msum = carry
            batch, i = xs
            agent_state, m = self.agent.update(agent_state, batch, jax.random.fold_in(k_update, i),
                                               step * u + i)
            return (agent_state, jax.tree.map(jnp.add, msum, m)), None

        (agent_state, msum), _ = jax.lax.scan(body, (state.agent, state.msum),
                                              (batches, jnp.arange(u)))
        state = state.replace(agent=agent_state, msum=msum,
                              mcount=state.mcount + self.updates_per_step)
        return state, self._act(state, next_obs, step + 1)


def transition_dict(tr: Transition) -> dict:
    """Host transition ``[S, E, ...]`` as the dict the device programs take."""
    return {"obs": tr.obs, "action": tr.action, "reward": tr.reward, "next_obs": tr.next_obs,
            "terminated": tr.terminated}


def pop_metrics(state: TrainState) -> tuple[TrainState, dict[str, np.ndarray]]:
    """Mean update metrics per seed since the last call (one device-to-host transfer)."""
    msum, count = jax.device_get((state.msum, state.mcount))
    means = {k: np.asarray(v) / np.maximum(count, 1) for k, v in msum.items()}
    state = state.replace(msum=jax.tree.map(jnp.zeros_like, state.msum),
                          mcount=jnp.zeros_like(state.mcount))
    return state, means
