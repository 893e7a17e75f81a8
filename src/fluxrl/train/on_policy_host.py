"""The host-stepped form of the on-policy program, for simulators that are not JAX functions
(IsaacLab's torch environments, :mod:`fluxrl.envs.isaaclab`).

The simulator steps from the host, so the rollout is a Python loop of ``unrolls x unroll_length``
steps, each one jitted ``act`` (all seeds at once) and one simulator step, with tensors passed
through DLPack; the rest of the iteration (values, GAE, statistics, epochs x minibatches) is the
device program's own :meth:`fluxrl.train.on_policy.OnPolicyPrograms.learn`, jitted and vmapped
over seeds, so the agents run unchanged. Seed ``s`` owns environments ``s * num_envs`` to
``(s + 1) * num_envs - 1`` of one simulator.

What differs from the device program: IsaacLab keeps no final observation, so a time-out
bootstraps from the value of the step's own observation (``r + gamma V(s_t)``); evaluation runs
deterministic episodes on the training simulator (IsaacLab runs one per process) and restarts
the training episodes after it; the simulator's state is not checkpointed, so a resumed run
restarts its episodes (the agent, statistics and keys resume exactly).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fluxrl.agents.base import Shapes
from fluxrl.agents.registry import make_agent
from fluxrl.envs.jax_env import StepOut
from fluxrl.errors import FluxError
from fluxrl.train.on_policy import (
    EVAL_KEY,
    OnPolicyProgram,
    OnPolicyPrograms,
    OnPolicyState,
    iteration_keys,
)


def sim_device() -> str:
    """The torch device of the simulator: the GPU JAX runs on, else the CPU."""
    return "cuda:0" if jax.default_backend() == "gpu" else "cpu"


class HostOnPolicyProgram(OnPolicyProgram):
    """The on-policy setting on a host-stepped batched simulator (module docs)."""

    def __init__(self, cfg: Any, seeds: list[int]):
        from fluxrl.envs import check_env_name
        from fluxrl.envs.isaaclab import make_torch_env

        tc = cfg.on_policy
        self.seeds, self.tc = seeds, tc
        self.eval_episodes = cfg.eval_episodes
        if cfg.eval_episodes > tc.num_envs:
            raise FluxError(f"eval_episodes={cfg.eval_episodes} exceeds on_policy.num_envs="
                            f"{tc.num_envs}: evaluation on {cfg.env} runs one episode per "
                            "training environment; lower eval_episodes")
        _, task = check_env_name(cfg.env)
        self.env = make_torch_env(task, tc.num_envs * len(seeds), sim_device())
        agent = make_agent(cfg.algo, Shapes(self.env.obs_dim, self.env.act_dim))
        self.programs = OnPolicyPrograms(agent, self.env, tc)
        self.agent = agent
        self.steps = tc.unroll_length * tc.unrolls_per_iteration
        self.frames_per_chunk = self.programs.steps_per_iteration * tc.iterations_per_chunk
        self.total_chunks = math.ceil(cfg.frames / self.frames_per_chunk)
        self.keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
        self._init = jax.jit(jax.vmap(self._init_one))
        self._act = jax.jit(jax.vmap(self._act_one, in_axes=(0, 0, None, None)),
                            static_argnums=3)
        self._learn = jax.jit(self._learn_all, donate_argnums=0)
        self._ep = None  # running (return, length) of the training episodes, [seeds, num_envs]

    # --- the jitted pieces ------------------------------------------------------------------------

    def _init_one(self, key: jax.Array) -> OnPolicyState:
        k_agent, _, k_run = jax.random.split(key, 3)
        return self.programs.initial_state(k_agent, k_run, ())

    def _act_one(self, state: OnPolicyState, obs: jax.Array, t: jax.Array, deterministic: bool):
        key = jax.random.fold_in(iteration_keys(state)[0], t)
        if deterministic:
            key = jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), t)
        return self.agent.act(state.agent, self.programs.norm(state.stats, obs), key, deterministic)

    def _learn_all(self, state: OnPolicyState, steps: list, ep: tuple):
        """The rollout's steps ``[S*N, ...]`` each, stacked, split by seed, and learnt from."""
        s, n = len(self.seeds), self.tc.num_envs
        per_seed = lambda x: jnp.swapaxes(x.reshape((x.shape[0], s, n) + x.shape[2:]), 0, 1)  # noqa: E731
        obs, action, extras, next_obs, reward, term, trunc = jax.tree.map(
            lambda *xs: per_seed(jnp.stack(xs)), *steps)  # each [S, T, N, ...]
        done = jnp.maximum(term, trunc)

        def book(carry: tuple, x: tuple):  # episode returns and lengths, [S, N] per step
            ret, length = carry
            r, d = x
            ret, length = ret + r, length + 1
            out = (d * ret, d * length)
            return (ret * (1 - d), length * (1 - d)), out

        ep, (done_return, done_length) = jax.lax.scan(
            book, ep, (jnp.swapaxes(reward, 0, 1), jnp.swapaxes(done, 0, 1)))
        out = StepOut(next_obs, reward, term, trunc, jnp.swapaxes(done_return, 0, 1),
                      jnp.swapaxes(done_length, 0, 1))
        learn = lambda st, *xs: self.programs.learn(st, (), *xs)  # noqa: E731
        state = jax.vmap(learn)(state, obs, action, extras, out)
        return state, ep

    # --- the program protocol ---------------------------------------------------------------------

    def memory_bytes(self) -> int:
        """Bytes of the device state (agent, statistics), from shapes only."""
        shapes = jax.eval_shape(self._init, self.keys)
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    def _restart(self) -> jax.Array:
        zeros = jnp.zeros((len(self.seeds), self.tc.num_envs))
        self._ep = (zeros, zeros)
        return self._split(self.env.reset())

    def _split(self, x: jax.Array) -> jax.Array:
        return x.reshape((len(self.seeds), self.tc.num_envs) + x.shape[1:])

    def init(self) -> OnPolicyState:
        """A fresh start; the simulator is reset."""
        self._restart()
        return self._init(self.keys)

    def restore(self, ckpt: Any) -> OnPolicyState:
        """The checkpoint's agent, statistics and keys; the simulator restarts its episodes."""
        self._restart()
        return ckpt.device(jax.eval_shape(self._init, self.keys))

    def run_chunk(self, state: OnPolicyState, t: int) -> OnPolicyState:
        """``iterations_per_chunk`` iterations, the simulator stepped from the host."""
        for _ in range(self.tc.iterations_per_chunk):
            steps = []
            for k in range(self.steps):
                obs = self._split(self.env.obs)
                action, extras = self._act(state, obs, jnp.int32(k), False)
                flat = action.reshape((-1, action.shape[-1]))
                _, next_obs, reward, term, trunc = self.env.step(flat)
                steps.append((self.env_flat(obs), flat, jax.tree.map(self.env_flat, extras),
                              next_obs, reward, term, trunc))
            state, self._ep = self._learn(state, steps, self._ep)
        return state

    @staticmethod
    def env_flat(x: jax.Array) -> jax.Array:
        """``[S, N, ...] -> [S*N, ...]``."""
        return x.reshape((-1,) + x.shape[2:])

    def evaluate(self, state: OnPolicyState, envs: list | None = None,
                 frames: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic episodes on the training simulator, the first ``eval_episodes``
        environments of each seed, one episode each; the training episodes restart after."""
        if envs is not None or frames is not None:
            raise FluxError("host-stepped simulators are evaluated on their own environments: "
                            "host envs and rendered frames (videos) are not available for them")
        s, n = len(self.seeds), self.tc.num_envs
        obs = self._split(self.env.reset())
        ret, length, alive = np.zeros((s, n)), np.zeros((s, n)), np.ones((s, n))
        for k in range(self.env.episode_length):
            action, _ = self._act(state, obs, jnp.int32(k), True)
            obs, _, reward, term, trunc = self.env.step(action.reshape((-1, action.shape[-1])))
            obs = self._split(obs)
            r, d = (np.asarray(self._split(x)) for x in (reward, jnp.maximum(term, trunc)))
            ret, length = ret + alive * r, length + alive
            alive = alive * (1 - d)
            if not alive.any():
                break
        self._restart()
        e = self.eval_episodes
        return ret[:, :e], length[:, :e]

    def close(self) -> None:
        """Close the simulator."""
        self.env.close()
