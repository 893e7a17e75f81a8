"""The on-policy program (design.md section 2): JAX environments, one jitted call per chunk.

A chunk of the harness (:mod:`fluxrl.train.harness`) is ``iterations_per_chunk`` iterations run
by one ``lax.scan`` on the device, Brax's ``training_epoch`` shape. One iteration:

1. ``lax.scan`` over ``unrolls_per_iteration x unroll_length`` steps of ``num_envs`` vmapped
   environments (:class:`fluxrl.envs.jax_env.JaxEnv`, auto-reset), acting on observations
   normalised by the running statistics of earlier iterations;
2. values of every observation and of every next observation (the last one of an episode that
   ended, so a time-out bootstraps from it), then GAE as a reverse ``lax.scan``;
3. the statistics absorb this rollout's observations;
4. ``update_epochs`` passes over the rollout in ``num_minibatches`` shuffled minibatches of single
   steps, each one ``OnPolicyAgent.update``.

Seeds are the leading ``vmap`` axis of the whole state; metrics stay on the device until the
harness asks for them. Random keys follow from (seed, iteration), so a run is a pure function of
its config, and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from fluxrl.agents.base import OnPolicyAgent, Rollout, Shapes
from fluxrl.agents.registry import make_agent
from fluxrl.envs.jax_env import EnvState, JaxEnv, StepOut
from fluxrl.errors import FluxError
from fluxrl.train.normalize import RunningStats, normalize, stats_init, stats_update

EVAL_KEY = 2_718_281  #: seed of evaluation keys (shared by all seeds, folded with the iteration)


@struct.dataclass
class OnPolicyState:
    """One seed's whole training state (the programs vmap it over seeds)."""

    agent: Any  #: the agent's pytree
    env: EnvState  #: ``[num_envs]`` environments
    stats: RunningStats  #: observation statistics (identity when normalisation is off)
    key: jax.Array  #: the seed's key (raw uint32)
    iteration: jax.Array  #: iterations done
    msum: dict  #: sums of update metrics since the last log
    mcount: jax.Array  #: updates summed in ``msum``
    ep_return: jax.Array  #: sum of the returns of training episodes finished since the last log
    ep_count: jax.Array  #: number of those episodes


def iteration_keys(state: OnPolicyState) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The rollout, shuffle and update keys of the state's next iteration."""
    k_roll, k_shuffle, k_update = jax.random.split(jax.random.fold_in(state.key, state.iteration), 3)
    return k_roll, k_shuffle, k_update


def gae(reward: jax.Array, value: jax.Array, next_value: jax.Array, terminated: jax.Array,
        truncated: jax.Array, discount: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over ``[T, N]`` as a reverse scan.

    ``delta_t = r_t + gamma (1 - terminated_t) V(s'_t) - V(s_t)`` with ``s'_t`` the observation
    the step led to (an episode's last one where it ended), and ``A_t = delta_t + gamma lambda
    (1 - done_t) A_{t+1}``: a time-out bootstraps from its last observation but takes nothing
    from the next episode. Returns ``(advantages, value targets = A + V)``."""
    delta = reward + discount * (1.0 - terminated) * next_value - value
    carry = 1.0 - jnp.maximum(terminated, truncated)

    def body(acc: jax.Array, x: tuple) -> tuple[jax.Array, jax.Array]:
        d, c = x
        acc = d + discount * lam * c * acc
        return acc, acc

    _, adv = jax.lax.scan(body, jnp.zeros_like(delta[0]), (delta, carry), reverse=True)
    return adv, adv + value


class OnPolicyPrograms:
    """The jitted per-seed functions of an on-policy run, vmapped over seeds."""

    def __init__(self, agent: OnPolicyAgent, env: JaxEnv, tc: Any):
        self.agent, self.env, self.tc = agent, env, tc
        self.steps_per_iteration = tc.num_envs * tc.unroll_length * tc.unrolls_per_iteration
        self.init = jax.jit(jax.vmap(self._init))
        self.chunk = jax.jit(jax.vmap(self._chunk), donate_argnums=0)
        self.evaluate = jax.jit(jax.vmap(self._evaluate, in_axes=(0, None)), static_argnums=1)
        self.trajectory = jax.jit(jax.vmap(self._trajectory))

    def _init(self, key: jax.Array) -> OnPolicyState:
        k_agent, k_env, k_run = jax.random.split(key, 3)
        env = jax.vmap(self.env.reset)(jax.random.split(k_env, self.tc.num_envs))
        return self.initial_state(k_agent, k_run, env)

    def initial_state(self, k_agent: jax.Array, k_run: jax.Array, env: Any) -> OnPolicyState:
        """A fresh state of one seed around the environments' state ``env``."""
        agent = self.agent.init(k_agent)
        stats = stats_init(self.env.obs_dim)
        mb = self.steps_per_iteration // self.tc.num_minibatches
        fake = jax.eval_shape(lambda a: self._fake_minibatch(a, mb), agent)
        metrics = jax.eval_shape(self.agent.update, agent, fake, k_run, jnp.int32(0))[1]
        msum = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)
        return OnPolicyState(agent, env, stats, k_run, jnp.int32(0), msum, jnp.int32(0),
                             jnp.float32(0.0), jnp.int32(0))

    def _fake_minibatch(self, agent: Any, b: int) -> Rollout:
        """A minibatch of the right shapes (for the metrics' shapes)."""
        obs = jnp.zeros((b, self.env.obs_dim))
        action, extras = self.agent.act(agent, obs, jax.random.PRNGKey(0), False)
        zeros = jnp.zeros((b,))
        return Rollout(obs, action, zeros, zeros, zeros, extras, zeros, zeros)

    def norm(self, stats: RunningStats, obs: jax.Array) -> jax.Array:
        """Observations normalised by ``stats`` (unchanged when normalisation is off)."""
        return normalize(stats, obs) if self.tc.normalize_observations else obs

    def _rollout(self, state: OnPolicyState, key: jax.Array):
        """``unrolls x unroll_length`` steps; returns the new env state and ``[T, U*N]`` data
        with raw observations."""
        tc = self.tc

        def step(env: EnvState, k: jax.Array):
            action, extras = self.agent.act(state.agent, self.norm(state.stats, env.obs), k, False)
            env_next, out = jax.vmap(self.env.step)(env, action)
            return env_next, (env.obs, action, extras, out)

        keys = jax.random.split(key, tc.unrolls_per_iteration * tc.unroll_length)
        env, data = jax.lax.scan(step, state.env, keys)
        u, t = tc.unrolls_per_iteration, tc.unroll_length

        def time_major(x: jax.Array) -> jax.Array:  # [U*T, N, ...] -> [T, U*N, ...]
            x = x.reshape((u, t) + x.shape[1:])
            return jnp.swapaxes(x, 0, 1).reshape((t, u * x.shape[2]) + x.shape[3:])

        return env, jax.tree.map(time_major, data)

    def _iteration(self, state: OnPolicyState, _: Any) -> tuple[OnPolicyState, None]:
        k_roll, _, _ = iteration_keys(state)
        env, (raw_obs, action, extras, out) = self._rollout(state, k_roll)
        return self.learn(state, env, raw_obs, action, extras, out), None

    def learn(self, state: OnPolicyState, env: Any, raw_obs: jax.Array, action: jax.Array,
              extras: dict, out: StepOut) -> OnPolicyState:
        """Steps 2-4 of an iteration on one seed's rollout ``[T, N, ...]`` (raw observations):
        values, GAE, statistics, epochs x minibatches; ``env`` becomes the state's env. The
        host-stepped program (:mod:`fluxrl.train.on_policy_host`) calls it too."""
        tc, agent = self.tc, self.agent
        _, k_shuffle, k_update = iteration_keys(state)
        obs = self.norm(state.stats, raw_obs)
        value = agent.value(state.agent, obs)
        next_value = agent.value(state.agent, self.norm(state.stats, out.next_obs))
        adv, target = gae(out.reward * tc.reward_scaling, value, next_value, out.terminated,
                          out.truncated, tc.discount, tc.gae_lambda)
        stats = stats_update(state.stats, raw_obs) if tc.normalize_observations else state.stats
        rollout = Rollout(obs, action, out.reward, out.terminated, out.truncated, extras,
                          jax.lax.stop_gradient(adv), jax.lax.stop_gradient(target))
        flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), rollout)
        n, m = flat.obs.shape[0], tc.num_minibatches
        per_iter = tc.update_epochs * m

        def epoch(carry: tuple, e: jax.Array):
            perm = jax.random.permutation(jax.random.fold_in(k_shuffle, e), n)
            mbs = jax.tree.map(lambda x: x[perm].reshape((m, n // m) + x.shape[1:]), flat)

            def minibatch(carry: tuple, xs: tuple):
                agent_state, msum = carry
                mb, i = xs
                index = state.iteration * per_iter + e * m + i
                agent_state, metrics = agent.update(agent_state, mb,
                                                    jax.random.fold_in(k_update, e * m + i), index)
                return (agent_state, jax.tree.map(jnp.add, msum, metrics)), None

            carry, _ = jax.lax.scan(minibatch, carry, (mbs, jnp.arange(m)))
            return carry, None

        (agent_state, msum), _ = jax.lax.scan(epoch, (state.agent, state.msum),
                                              jnp.arange(tc.update_epochs))
        done = out.terminated + out.truncated > 0
        state = state.replace(agent=agent_state, env=env, stats=stats,
                              iteration=state.iteration + 1, msum=msum,
                              mcount=state.mcount + per_iter,
                              ep_return=state.ep_return + out.done_return.sum(),
                              ep_count=state.ep_count + done.sum().astype(jnp.int32))
        return state

    def _chunk(self, state: OnPolicyState) -> OnPolicyState:
        state, _ = jax.lax.scan(self._iteration, state, None, length=self.tc.iterations_per_chunk)
        return state

    def _trajectory(self, state: OnPolicyState) -> Any:
        """The sim states ``[episode_length, ...]`` of the first evaluation episode (the
        states acted on; those after the episode's end belong to the next one)."""
        key = jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), state.iteration)
        env = self.env.reset(jax.random.split(key, 1)[0])

        def step(env: EnvState, k: jax.Array):
            action, _ = self.agent.act(state.agent, self.norm(state.stats, env.obs[None]), k, True)
            return self.env.step(env, action[0])[0], env.sim

        _, sims = jax.lax.scan(step, env, jax.random.split(key, self.env.episode_length))
        return sims

    def _evaluate(self, state: OnPolicyState, episodes: int) -> tuple[jax.Array, jax.Array]:
        """``episodes`` deterministic episodes from the same start states for every seed."""
        key = jax.random.fold_in(jax.random.PRNGKey(EVAL_KEY), state.iteration)
        env = jax.vmap(self.env.reset)(jax.random.split(key, episodes))

        def step(carry: tuple, k: jax.Array):
            env, ret, length, alive = carry
            action, _ = self.agent.act(state.agent, self.norm(state.stats, env.obs), k, True)
            env, out = jax.vmap(self.env.step)(env, action)
            ret = ret + alive * out.reward
            length = length + alive
            alive = alive * (1.0 - jnp.maximum(out.terminated, out.truncated))
            return (env, ret, length, alive), None

        zeros = jnp.zeros(episodes)
        (_, ret, length, _), _ = jax.lax.scan(
            step, (env, zeros, zeros, jnp.ones(episodes)),
            jax.random.split(key, self.env.episode_length))
        return ret, length


class OnPolicyProgram:
    """The on-policy setting behind the harness's program protocol (module docs); everything
    it must checkpoint is on the device."""

    def __init__(self, cfg: Any, seeds: list[int]):
        from fluxrl.envs import make_jax_env

        tc = cfg.on_policy
        self.seeds = seeds
        self.eval_episodes = cfg.eval_episodes
        self.env = make_jax_env(cfg.env, tc.physics)
        agent = make_agent(cfg.algo, Shapes(self.env.obs_dim, self.env.act_dim))
        self.programs = OnPolicyPrograms(agent, self.env, tc)
        self.frames_per_chunk = self.programs.steps_per_iteration * tc.iterations_per_chunk
        self.total_chunks = math.ceil(cfg.frames / self.frames_per_chunk)
        self.keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])

    def memory_bytes(self) -> int:
        """Bytes of the device state (agent, environments, statistics), from shapes only."""
        shapes = jax.eval_shape(self.programs.init, self.keys)
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))

    def init(self) -> OnPolicyState:
        """A fresh start."""
        return self.programs.init(self.keys)

    def restore(self, ckpt: Any) -> OnPolicyState:
        """The state of checkpoint ``ckpt`` (:class:`fluxrl.train.checkpoint.Checkpoint`)."""
        return ckpt.device(jax.eval_shape(self.programs.init, self.keys))

    def host_state(self) -> dict:
        """Nothing lives on the host."""
        return {}

    def run_chunk(self, state: OnPolicyState, t: int) -> OnPolicyState:
        """``iterations_per_chunk`` iterations in one device call (``t`` is implied by the state)."""
        return self.programs.chunk(state)

    def pop_metrics(self, state: OnPolicyState) -> tuple[OnPolicyState, dict[str, np.ndarray]]:
        """Mean update metrics per seed since the last call, and the mean return of the training
        episodes that ended (when every seed finished one)."""
        msum, count, ep_return, ep_count = jax.device_get(
            (state.msum, state.mcount, state.ep_return, state.ep_count))
        means = {k: np.asarray(v) / np.maximum(count, 1) for k, v in msum.items()}
        if np.all(ep_count > 0):
            means["episode_return"] = np.asarray(ep_return) / ep_count
        state = state.replace(msum=jax.tree.map(jnp.zeros_like, state.msum),
                              mcount=jnp.zeros_like(state.mcount),
                              ep_return=jnp.zeros_like(state.ep_return),
                              ep_count=jnp.zeros_like(state.ep_count))
        return state, (means if np.max(count) > 0 else {})

    def pending_metrics(self, state: OnPolicyState) -> dict[str, np.ndarray]:
        """Sums of the update metrics not yet popped."""
        return {k: np.asarray(v) for k, v in jax.device_get(state.msum).items()}

    def evaluate(self, state: OnPolicyState, envs: list | None = None,
                 frames: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One batched, jitted evaluation round: returns and lengths ``[seeds, episodes]``.
        With a list ``frames``, the first episode of every seed is rendered into it too,
        ``frames[t][seed]`` (the same episode: evaluation is deterministic from the same
        start)."""
        if envs is not None:
            raise FluxError("JAX environments are evaluated on the device: no host envs")
        ret, length = self.programs.evaluate(state, self.eval_episodes)
        if frames is not None:
            render = getattr(self.env.task, "render", None)
            if render is None:
                raise FluxError(f"{self.env.name} has no renderer: evaluate without --video")
            sims = jax.device_get(self.programs.trajectory(state))
            per_seed = [render(jax.tree.map(lambda x, i=i: x[i], sims))
                        for i in range(len(self.seeds))]
            frames.extend(list(step) for step in zip(*per_seed, strict=True))
        return np.asarray(ret, np.float64), np.asarray(length, np.float64)

    def close(self) -> None:
        """Nothing to release."""
