"""The off-policy program (design.md section 2): host simulators, one jitted step per agent step.

A chunk of the harness (:mod:`fluxrl.train.harness`) is one agent step (``action_repeat``
frames): the host steps its simulators, then makes one device call, ``step``: insert the
transition into the device replay buffer, run ``updates_per_step`` gradient updates with
``lax.scan``, and compute the next action. Seeds are the leading ``vmap`` axis of the whole
state. Random keys are derived from (seed, agent step), so a run is a pure function of its config
and resumes exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fluxrl.agents.base import OffPolicyAgent, Shapes
from fluxrl.agents.registry import make_agent
from fluxrl.envs import Transition, make_env, make_vec_env
from fluxrl.train.evaluation import evaluate
from fluxrl.train.replay import Replay, replay_add, replay_grow, replay_init, replay_sample

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

    agent: OffPolicyAgent
    spec: Shapes
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
        """Insert the transition of agent step ``step``, update, and act on the observation that
        follows it."""
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


def replay_capacity(buffer_size: int, agent_steps: int, batch_size: int) -> int:
    """Rows a run allocates: no more than its budget can fill, at least one minibatch."""
    return max(min(buffer_size, agent_steps), batch_size)


class OffPolicyProgram:
    """The off-policy setting behind the harness's program protocol: one chunk is one agent
    step; the host state is the simulators, the pending observation and action, and the replay
    capacity (so that a resumed run with a larger budget grows its buffer)."""

    def __init__(self, cfg: Any, seeds: list[int]):
        tc = cfg.off_policy
        self.seeds = seeds
        self.repeat = cfg.action_repeat
        self.frames_per_chunk = cfg.action_repeat
        self.total_chunks = cfg.frames // cfg.action_repeat
        self.warmup = tc.warmup_frames // cfg.action_repeat
        self.env = make_vec_env(cfg.env, seeds, 1, cfg.action_repeat)
        agent = make_agent(cfg.algo, self.env.spec)
        shapes = Shapes(self.env.spec.obs_dim, self.env.spec.act_dim)
        capacity = replay_capacity(tc.buffer_size, self.total_chunks, tc.batch_size)
        self.programs = OffPolicyPrograms(agent, shapes, capacity, tc.batch_size,
                                          tc.updates_per_step)
        self.eval_envs = [[make_env(cfg.env, cfg.action_repeat) for _ in range(cfg.eval_episodes)]
                          for _ in seeds]
        self.keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
        self.obs: np.ndarray | None = None
        self.action: np.ndarray | None = None

    def memory_bytes(self) -> int:
        """Bytes of the device state (replay buffer and agent), from shapes only."""
        shapes = jax.eval_shape(self.programs.init, self.keys)
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    def init(self) -> TrainState:
        """A fresh start: initial state, first observations and first actions."""
        state = self.programs.init(self.keys)
        self.obs = self.env.reset()
        self.action = (self.env.random_actions() if self.warmup > 0
                       else np.asarray(self.programs.act_explore(state, self.obs, 0)))
        return state

    def restore(self, ckpt: Any) -> TrainState:
        """The state of checkpoint ``ckpt`` (:class:`fluxrl.train.checkpoint.Checkpoint`); a
        buffer sized for a smaller budget is grown to this run's capacity."""
        p = self.programs
        stored = int(ckpt.host["replay_capacity"])
        if stored > p.capacity:  # a shorter budget than the run had: keep what it holds
            self.programs = p = OffPolicyPrograms(p.agent, p.spec, stored, p.batch_size,
                                                  p.updates_per_step)
        target = jax.eval_shape(OffPolicyPrograms(p.agent, p.spec, stored, p.batch_size,
                                                  p.updates_per_step).init, self.keys)
        state = ckpt.device(target)
        if stored < p.capacity:
            state = state.replace(buffer=jax.vmap(lambda b: replay_grow(b, p.capacity))(
                state.buffer))
        self.env.set_state(ckpt.host["env"])
        self.obs, self.action = ckpt.host["obs"], ckpt.host["action"]
        return state

    def host_state(self) -> dict:
        """What a checkpoint must hold besides the device state."""
        return {"env": self.env.get_state(), "obs": self.obs, "action": self.action,
                "replay_capacity": self.programs.capacity}

    def run_chunk(self, state: TrainState, t: int) -> TrainState:
        """Agent step ``t``: step the simulators, then insert (warm-up) or insert, update and act."""
        tr, self.obs = self.env.step(self.action)
        if t + 1 < self.warmup:
            state = self.programs.insert(state, transition_dict(tr))
            self.action = self.env.random_actions()
        else:
            state, action = self.programs.step(state, transition_dict(tr), self.obs, t)
            self.action = np.asarray(action)
        return state

    def pop_metrics(self, state: TrainState) -> tuple[TrainState, dict[str, np.ndarray]]:
        """Mean update metrics per seed since the last call; empty before the first update."""
        self.env.pop_finished()  # training-episode bookkeeping is not logged; keep it bounded
        state, means, count = pop_metrics(state)
        return state, (means if count.max() > 0 else {})

    def pending_metrics(self, state: TrainState) -> dict[str, np.ndarray]:
        """Sums of the update metrics not yet popped (to refuse checkpointing a non-finite state)."""
        return {k: np.asarray(v) for k, v in jax.device_get(state.msum).items()}

    def evaluate(self, state: TrainState, envs: list | None = None,
                 frames: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One evaluation round on the run's evaluation envs (or ``envs[seed][episode]``):
        returns and lengths ``[seeds, episodes]``; ``frames`` collects rendered frames."""
        return evaluate(self.programs.eval_policy(state.agent), envs or self.eval_envs,
                        self.seeds, frames)

    def close(self) -> None:
        """Close every simulator."""
        self.env.close()
        for row in self.eval_envs:
            for e in row:
                e.close()


def transition_dict(tr: Transition) -> dict:
    """Host transition ``[S, E, ...]`` as the dict the device programs take."""
    return {"obs": tr.obs, "action": tr.action, "reward": tr.reward, "next_obs": tr.next_obs,
            "terminated": tr.terminated}


def pop_metrics(state: TrainState) -> tuple[TrainState, dict[str, np.ndarray], np.ndarray]:
    """Mean update metrics per seed since the last call and the update counts they average (one
    device-to-host transfer)."""
    msum, count = jax.device_get((state.msum, state.mcount))
    means = {k: np.asarray(v) / np.maximum(count, 1) for k, v in msum.items()}
    state = state.replace(msum=jax.tree.map(jnp.zeros_like, state.msum),
                          mcount=jnp.zeros_like(state.mcount))
    return state, means, np.asarray(count)
