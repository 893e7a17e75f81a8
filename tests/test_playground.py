"""MuJoCo Playground's DM Control suite behind the JAX env protocol, and PPO's Brax preset."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.config import compose, resolve
from fluxrl.envs import make_jax_env
from fluxrl.errors import FluxError


@pytest.fixture(scope="module")
def cartpole():
    return make_jax_env("playground/CartpoleBalance")


def test_cartpole_steps_as_playground_does(cartpole):
    """The adapter's step is Playground's own: same observation and reward for the same state
    and action; the time limit is Playground's episode_length."""
    assert (cartpole.obs_dim, cartpole.act_dim, cartpole.episode_length) == (5, 1, 1000)
    state = jax.jit(cartpole.reset)(jax.random.PRNGKey(0))
    action = jnp.array([0.5])
    new, out = jax.jit(cartpole.step)(state, action)
    direct = jax.jit(cartpole.task.env.step)(state.sim, action)
    np.testing.assert_allclose(out.next_obs, direct.obs, rtol=1e-6)
    assert float(out.reward) == pytest.approx(float(direct.reward))
    assert float(out.terminated) == 0.0 and float(out.truncated) == 0.0 and int(new.t) == 1


def test_vmapped_steps_of_many_envs_stay_finite(cartpole):
    states = jax.vmap(cartpole.reset)(jax.random.split(jax.random.PRNGKey(1), 8))

    @jax.jit
    def run(s):
        def body(s, k):
            a = jax.random.uniform(k, (8, 1), minval=-1, maxval=1)
            s, out = jax.vmap(cartpole.step)(s, a)
            return s, out.reward
        return jax.lax.scan(body, s, jax.random.split(jax.random.PRNGKey(2), 20))

    _, rewards = run(states)
    assert rewards.shape == (20, 8) and np.all(np.isfinite(rewards))
    assert np.all((rewards >= 0) & (rewards <= 1))  # DM Control rewards lie in [0, 1]


@pytest.mark.parametrize("name, words", [
    ("playground/CheetaRun", "playground/CheetahRun"),
    ("playground/Go1JoystickFlatTerrain", "Menagerie"),
])
def test_unknown_or_robot_tasks_are_one_line_errors(name, words):
    with pytest.raises(FluxError) as info:
        resolve(compose(["algo=ppo", f"env={name}"]))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_bad_physics_is_a_one_line_error():
    with pytest.raises(FluxError, match="on_policy.physics"):
        resolve(compose(["algo=ppo", "env=playground/CheetahRun", "on_policy.physics=mjx"]))


def test_ppo_takes_playgrounds_brax_preset_on_playground():
    cfg = resolve(compose(["algo=ppo", "env=playground/CheetahRun"]))
    tc, a = cfg.on_policy, cfg.algo
    assert (tc.num_envs, tc.unroll_length, tc.unrolls_per_iteration, tc.num_minibatches,
            tc.update_epochs) == (2048, 30, 16, 32, 16)
    assert (tc.discount, tc.reward_scaling, tc.normalize_observations) == (0.995, 10.0, True)
    assert (a.lr_actor, a.entropy_cost, a.clip, a.max_grad_norm) == (1e-3, 1e-2, 0.3, 0.0)
    assert (a.actor.width, a.actor.depth, a.critic.width, a.critic.depth) == (32, 4, 256, 5)
    # one iteration is Brax's training step: 1024 x 32 trajectories of 30 steps
    assert tc.num_envs * tc.unroll_length * tc.unrolls_per_iteration == 983_040
    assert resolve(compose(["algo=ppo", "env=playground/BallInCup"])).on_policy.discount == 0.95
    assert resolve(compose(["algo=ppo", "env=playground/PendulumSwingup"])).on_policy.discount == 0.995
    # the user's value wins
    assert resolve(compose(["algo=ppo", "env=playground/CheetahRun",
                            "on_policy.num_envs=64"])).on_policy.num_envs == 64


def test_frames_of_a_trajectory_follow_the_physics(cartpole):
    """Playground's renderer draws the stacked sim states: distinct states, distinct frames."""
    state = jax.jit(cartpole.reset)(jax.random.PRNGKey(0))
    step = jax.jit(cartpole.step)
    sims = [state.sim]
    for _ in range(3):
        state, _ = step(state, jnp.array([1.0]))
        sims.append(state.sim)
    stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *sims))
    frames = cartpole.task.render(stacked, width=64, height=48)
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert frames[0].std() > 1.0 and not np.array_equal(frames[0], frames[3])
    assert cartpole.fps == 100  # CartpoleBalance's control step is 0.01 s
