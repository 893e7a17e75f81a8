"""FPO: the CFM losses by hand, the ratio at the acting policy, the direction of an update, and
learning a small task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.agents.base import Rollout, Shapes
from fluxrl.agents.registry import make_agent
from fluxrl.config import compose, resolve

SHAPES = Shapes(3, 2)
SMALL = ["algo=fpo", "env=jax/Pendulum", "algo.actor.width=32", "algo.critic.width=32"]


def _agent(*extra: str):
    cfg = resolve(compose(SMALL + list(extra))).algo
    agent = make_agent(cfg, SHAPES)
    return cfg, agent, agent.init(jax.random.PRNGKey(0))


def _obs(n: int = 64, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, SHAPES.obs_dim)), jnp.float32)


def test_stored_cfm_losses_are_the_noise_error_of_a_zero_velocity_by_hand():
    """With the output layer zeroed the velocity is 0, the implied noise is x_t itself, and the
    loss is mean_d ((1 - t)(eps - a))^2."""
    _, agent, state = _agent()
    out = state.actor["out"]
    state = state.replace(actor={**state.actor, "out": jax.tree.map(jnp.zeros_like, out)})
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    # zero velocity: the ODE leaves the prior draw where it is (clipped to the box)
    assert np.abs(np.asarray(action)).max() <= 1.0 and np.asarray(action).std() > 0.3
    eps, t = np.asarray(ex["eps"]), np.asarray(ex["t"])
    want = (((1 - t[..., None]) * (eps - np.asarray(action)[:, None])) ** 2).mean(-1)
    np.testing.assert_allclose(ex["cfm"], want, rtol=1e-5, atol=1e-6)
    assert ex["cfm"].shape == (64, 8) and ex["t"].min() >= 0 and ex["t"].max() <= 1


def test_ratio_is_one_at_the_acting_policy():
    _, agent, state = _agent()
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    adv = jnp.asarray(np.random.default_rng(2).normal(size=64), jnp.float32)
    z = jnp.zeros(64)
    _, m = agent.update(state, Rollout(obs, action, z, z, z, ex, adv, z), jax.random.PRNGKey(3),
                        jnp.int32(0))
    assert float(m["ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(m["clip_fraction"]) == 0.0 and abs(float(m["policy_loss"])) < 1e-5


def test_a_positive_advantage_lowers_that_actions_cfm_loss():
    """One step with A = +1 on every sample raises the surrogate likelihood of those actions:
    their CFM losses on the stored pairs go down (and with A = -1 they go up)."""
    from fluxrl.agents.policy_gradient.fpo import cfm_losses, flow_policy

    cfg, agent, state = _agent("algo.lr_actor=1e-3", "algo.normalize_advantage=false")
    model, _, velocity = flow_policy(cfg, SHAPES.act_dim)
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    np.testing.assert_allclose(cfm_losses(model, velocity, state.actor, obs, action, ex["eps"],
                                          ex["t"]), ex["cfm"], rtol=1e-6)
    z = jnp.zeros(64)
    changes = []
    for sign in (1.0, -1.0):
        batch = Rollout(obs, action, z, z, z, ex, sign * jnp.ones(64), z)
        new, _ = agent.update(state, batch, jax.random.PRNGKey(3), jnp.int32(0))
        after = cfm_losses(model, velocity, new.actor, obs, action, ex["eps"], ex["t"])
        changes.append(float(after.mean() - ex["cfm"].mean()))
    assert changes[0] < 0 < changes[1], changes


@pytest.mark.slow
def test_fpo_learns_point_reach(tmp_path):
    """Budget: 100,352 env steps per seed (49 iterations of 64 envs x 32 steps), 2 seeds
    vmapped, 2 x 64 networks, lr 3e-4 for the actor (FPO's own rate). A random policy scores
    about -35 (tests/test_on_policy.py measures it); both seeds must finish above -15."""
    from fluxrl.train.run import train

    ov = ["algo=fpo", "env=jax/PointReach", "seeds=2", "frames=100000", "eval_every=25000",
          "log_every=25000", "progress=false", "tensorboard=false", "plot=false",
          "checkpoint_every=0", "on_policy.num_envs=64", "on_policy.unroll_length=32",
          "algo.actor.width=64", "algo.critic.width=64", "algo.actor.depth=2",
          "algo.critic.depth=2", "algo.lr_actor=3e-4", f"run_dir={tmp_path / 'run'}"]
    result = train(compose(ov), ov)
    assert np.all(result.eval_returns[-1] > -15.0), result.eval_returns
