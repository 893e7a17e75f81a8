"""SAC/TD3 maths: the tanh-Gaussian density, TD targets, Polyak averaging and one update each."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import PENDULUM, random_batch, tiny_config, trees_differ

from fluxrl.agents.baselines.sac import tanh_gaussian_sample
from fluxrl.agents.common import soft_update, td_target
from fluxrl.agents.registry import get_algo


def normal_log_pdf(u, mean, std):
    return -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def draw_u(mean, log_std, key):
    """The pre-tanh sample the function draws, recomputed in float64 from the same key."""
    eps = np.asarray(jax.random.normal(key, np.shape(mean)), np.float64)
    return np.asarray(mean, np.float64) + np.exp(np.asarray(log_std, np.float64)) * eps


# --- tanh-Gaussian ------------------------------------------------------------------------------


def test_tanh_gaussian_log_density_matches_change_of_variables():
    rng = np.random.default_rng(0)
    mean = rng.uniform(-1.5, 1.5, (64, 3)).astype(np.float32)
    log_std = rng.uniform(-1.0, 0.5, (64, 3)).astype(np.float32)
    key = jax.random.PRNGKey(3)
    a, logp = tanh_gaussian_sample(jnp.asarray(mean), jnp.asarray(log_std), key)
    assert a.shape == (64, 3) and logp.shape == (64,)

    u = draw_u(mean, log_std, key)
    assert np.abs(u).max() < 6  # moderate: the direct formula is accurate in float64
    std = np.exp(log_std.astype(np.float64))
    ref = (normal_log_pdf(u, mean, std) - np.log(1.0 - np.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(np.asarray(a), np.tanh(u), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logp), ref, rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_jacobian_term_against_finite_differences():
    """log p(a) = log N(u) - log |d tanh(u) / du|, the derivative taken numerically."""
    mean, log_std = jnp.array([[0.3, -0.8]]), jnp.array([[-0.2, 0.1]])
    key = jax.random.PRNGKey(11)
    _, logp = tanh_gaussian_sample(mean, log_std, key)
    u = draw_u(mean, log_std, key)
    h = 1e-6
    jac = (np.tanh(u + h) - np.tanh(u - h)) / (2 * h)
    ref = (normal_log_pdf(u, np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64)))
           - np.log(jac)).sum(-1)
    np.testing.assert_allclose(np.asarray(logp), ref, atol=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_tanh_gaussian_is_stable_in_saturation(sign):
    mean = jnp.full((8, 2), 20.0 * sign)
    log_std = jnp.full((8, 2), -3.0)
    key = jax.random.PRNGKey(5)
    a, logp = tanh_gaussian_sample(mean, log_std, key)
    assert bool(jnp.all(jnp.isfinite(logp))), logp
    np.testing.assert_array_equal(np.asarray(a), sign)  # fully saturated in float32
    u = draw_u(mean, log_std, key)
    assert np.all(np.abs(u) > 19)
    # log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log1p(exp(-2|u|)), exact in float64 for any u
    log_jac = np.log(4.0) - 2 * np.abs(u) - 2 * np.log1p(np.exp(-2 * np.abs(u)))
    ref = (normal_log_pdf(u, 20.0 * sign, np.exp(-3.0)) - log_jac).sum(-1)
    assert np.all(ref > 70)  # the density of a saturated action is huge, not infinite
    np.testing.assert_allclose(np.asarray(logp), ref, rtol=1e-5)


def test_tanh_gaussian_mean_matches_monte_carlo_expectation():
    n = 200_000
    m = np.array([0.5, -1.0, 2.0])
    s = np.exp(np.array([0.0, -1.0, 0.5]))
    mean = jnp.broadcast_to(jnp.asarray(m, jnp.float32), (n, 3))
    log_std = jnp.broadcast_to(jnp.asarray(np.log(s), jnp.float32), (n, 3))
    a, _ = jax.jit(tanh_gaussian_sample)(mean, log_std, jax.random.PRNGKey(0))
    x, w = np.polynomial.hermite_e.hermegauss(80)
    expected = (w[:, None] * np.tanh(m + s * x[:, None])).sum(0) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(np.asarray(a).mean(0), expected, atol=6e-3)
    assert not np.allclose(np.tanh(m), expected, atol=0.02)  # E[tanh u] != tanh(E u) here


def test_tanh_gaussian_is_reparameterised():
    mean, log_std = jnp.array([[0.2, -0.4]]), jnp.array([[-0.5, 0.0]])
    key = jax.random.PRNGKey(2)
    g = jax.grad(lambda m: tanh_gaussian_sample(m, log_std, key)[0].sum())(mean)
    u = draw_u(mean, log_std, key)
    np.testing.assert_allclose(np.asarray(g), 1.0 - np.tanh(u) ** 2, rtol=1e-5)


# --- TD target and Polyak averaging -------------------------------------------------------


def test_td_target_bootstraps_unless_terminated():
    reward = jnp.array([1.0, 2.0, 3.0, -1.0])
    terminated = jnp.array([0.0, 1.0, 0.0, 1.0])  # truncated steps arrive with terminated=0
    next_value = jnp.array([10.0, 10.0, -5.0, 100.0])
    out = td_target(reward, terminated, 0.9, next_value)
    np.testing.assert_allclose(out, [10.0, 2.0, -1.5, -1.0], rtol=1e-6)


def test_td_target_blocks_gradients():
    g = jax.grad(lambda v: td_target(jnp.ones(2), jnp.zeros(2), 0.99, v).sum())(jnp.ones(2))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_soft_update_known_numbers():
    target = {"w": jnp.array([0.0, 10.0]), "b": jnp.array(4.0)}
    online = {"w": jnp.array([1.0, 20.0]), "b": jnp.array(0.0)}
    out = soft_update(target, online, 0.1)
    np.testing.assert_allclose(out["w"], [0.1, 11.0], rtol=1e-6)
    np.testing.assert_allclose(out["b"], 3.6, rtol=1e-6)
    assert np.array_equal(soft_update(target, online, 0.0)["w"], target["w"])
    assert np.array_equal(soft_update(target, online, 1.0)["w"], online["w"])


# --- one SAC / TD3 update -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec():
    return PENDULUM


def minibatch(seed: int = 0) -> dict:
    """64 Pendulum transitions, each terminated with probability 0.1."""
    return random_batch(PENDULUM, seed=seed, done_prob=0.1)


def test_sac_update(spec):
    cfg = tiny_config("sac")
    agent = get_algo("sac").make(cfg.algo, spec)
    update = jax.jit(agent.update)
    s0 = agent.init(jax.random.PRNGKey(0))
    assert not trees_differ(s0.target, s0.critic)
    s1, m1 = update(s0, minibatch(0), jax.random.PRNGKey(1), jnp.int32(0))
    s2, m2 = update(s1, minibatch(1), jax.random.PRNGKey(2), jnp.int32(1))
    for m in (m1, m2):
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in m.values()), m

    assert trees_differ(s1.critic, s0.critic) and trees_differ(s2.critic, s1.critic)
    assert trees_differ(s1.actor, s0.actor) and trees_differ(s2.actor, s1.actor)
    # target <- target + tau (new critic - target), checked where target != critic already
    tau = cfg.algo.tau
    expected = jax.tree.map(lambda t, c: np.asarray(t, np.float64)
                            + tau * (np.asarray(c, np.float64) - np.asarray(t, np.float64)),
                            s1.target, s2.critic)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7),
                 s2.target, expected)
    assert trees_differ(s2.target, s1.target) and trees_differ(s2.target, s2.critic)

    # entropy (about 0.5 nats at init) is above the target -act_dim = -1: alpha goes down
    assert float(m1["entropy"]) > -spec.act_dim
    assert float(m1["alpha"]) == pytest.approx(cfg.algo.init_alpha)
    assert float(jnp.exp(s1.log_alpha)) < cfg.algo.init_alpha
    assert float(s2.log_alpha) < float(s1.log_alpha)


def test_sac_alpha_rises_when_entropy_below_target(spec):
    cfg = tiny_config("sac")
    algo = dataclasses.replace(cfg.algo, target_entropy=5.0)  # above any tanh-Gaussian entropy
    agent = get_algo("sac").make(algo, spec)
    s0 = agent.init(jax.random.PRNGKey(0))
    s1, m = jax.jit(agent.update)(s0, minibatch(0), jax.random.PRNGKey(1), jnp.int32(0))
    assert float(m["entropy"]) < 5.0
    assert float(s1.log_alpha) > float(s0.log_alpha)


def test_sac_evaluation_does_not_depend_on_the_key(spec):
    """The tanh of the mean; exploration's randomness and the box are tested for every agent in
    test_agent_contract.py."""
    agent = get_algo("sac").make(tiny_config("sac").algo, spec)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.ones((4, spec.obs_dim))
    det = agent.act(state, obs, jax.random.PRNGKey(1), True)
    assert det.shape == (4, spec.act_dim)
    np.testing.assert_array_equal(det, agent.act(state, obs, jax.random.PRNGKey(2), True))


def test_td3_delays_actor_and_target_updates(spec):
    cfg = tiny_config("td3")
    assert cfg.algo.policy_delay == 2
    agent = get_algo("td3").make(cfg.algo, spec)
    update = jax.jit(agent.update)
    state = agent.init(jax.random.PRNGKey(0))
    for step in range(4):
        new, metrics = update(state, minibatch(step), jax.random.PRNGKey(step),
                              jnp.int32(step))
        delayed = step % 2 == 0
        assert trees_differ(new.critic, state.critic), step
        assert trees_differ(new.actor, state.actor) == delayed, step
        assert trees_differ(new.actor_target, state.actor_target) == delayed, step
        assert trees_differ(new.critic_target, state.critic_target) == delayed, step
        assert (float(metrics["actor_loss"]) != 0.0) == delayed, step
        state = new


def test_td3_actor_is_deterministic_and_explores_with_noise(spec):
    cfg = tiny_config("td3")
    agent = get_algo("td3").make(cfg.algo, spec)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, spec.obs_dim))
    det = agent.act(state, obs, jax.random.PRNGKey(2), True)
    noisy = agent.act(state, obs, jax.random.PRNGKey(2), False)
    assert bool(jnp.all(jnp.abs(noisy) <= 1.0))
    diff = np.asarray(noisy - det)
    assert 0.05 < diff.std() < 0.15  # explore_noise = 0.1, slightly reduced by clipping
