"""DPPO: the step likelihood and the DDPM step against DPPO's formulas by hand, the clamp, the clip
schedule and denoising discount, the loss on known ratios, the ratio at the acting policy, the
direction of an update, the frozen first steps, and learning a small task."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import point_reach_returns
from scipy.stats import norm

from fluxrl.agents.base import Rollout, Shapes
from fluxrl.agents.policy_gradient.dppo import (
    DPPOConfig,
    chain_log_probs,
    clip_schedule,
    denoising_discount,
    dppo_policy,
    gaussian_log_density,
    step_mean_std,
)
from fluxrl.agents.registry import make_agent
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.generative.base import Network

SHAPES = Shapes(3, 2)
SMALL = ["algo=dppo", "env=jax/Pendulum", "algo.actor.width=32", "algo.critic.width=32"]


def _agent(*extra: str):
    cfg = resolve(compose(SMALL + list(extra))).algo
    agent = make_agent(cfg, SHAPES)
    return cfg, agent, agent.init(jax.random.PRNGKey(0))


def _obs(n: int = 64, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, SHAPES.obs_dim)), jnp.float32)


def _zero_output(state):
    """The denoiser with its output layer zeroed: it predicts eps = 0 everywhere."""
    out = jax.tree.map(jnp.zeros_like, state.actor["out"])
    return state.replace(actor={**state.actor, "out": out})


def dppo_schedule(k: int) -> tuple[np.ndarray, ...]:
    """DPPO's DDPM tables (``sampling.py cosine_beta_schedule``, ``diffusion.py``) in float64:
    betas, alphas, alpha-bar and its previous value, indexed by DPPO's step t = 0 .. K-1."""
    steps = k + 1
    x = np.linspace(0, steps, steps)
    ac = np.cos(((x / steps) + 0.008) / 1.008 * np.pi * 0.5) ** 2
    ac = ac / ac[0]
    betas = np.clip(1 - ac[1:] / ac[:-1], 0, 0.999)
    abar = np.cumprod(1 - betas)
    return betas, 1 - betas, abar, np.concatenate([[1.0], abar[:-1]])


def dppo_mean_var(x: np.ndarray, eps: np.ndarray, t: int, k: int) -> tuple[np.ndarray, float]:
    """DPPO's ``p_mean_var`` (DDPM, ``denoised_clip_value=1``) at step t by hand."""
    betas, alphas, abar, abar_prev = dppo_schedule(k)
    x0 = np.clip(np.sqrt(1 / abar[t]) * x - np.sqrt(1 / abar[t] - 1) * eps, -1, 1)
    mu = (betas[t] * np.sqrt(abar_prev[t]) / (1 - abar[t]) * x0
          + (1 - abar_prev[t]) * np.sqrt(alphas[t]) / (1 - abar[t]) * x)
    return mu, betas[t] * (1 - abar_prev[t]) / (1 - abar[t])


def test_gaussian_log_density_matches_scipy():
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=(2, 50)) * 2
    std = rng.uniform(0.05, 3.0, 50)
    np.testing.assert_allclose(gaussian_log_density(jnp.asarray(x), jnp.asarray(mean),
                                                    jnp.asarray(std)),
                               norm.logpdf(x, mean, std), rtol=1e-5, atol=1e-5)


def test_ddpm_step_is_dppos_posterior_mean_and_variance():
    """fluxrl's DDPM step (eta 1, posterior variance, clipped x0) on a known noise prediction
    equals DPPO's ``ddpm_mu_coef1 x0 + ddpm_mu_coef2 x_t`` and ``ddpm_var``, at every step."""
    k = 10
    model = dppo_policy(DPPOConfig(denoising_steps=k), 2)[0]
    net = Network(lambda p, c: c, lambda p, t: t, lambda p, x, c, e: 0.5 * x + 0.3)
    x = np.random.default_rng(1).normal(size=(200, 2)) * 1.5
    grid = np.asarray(model.time_grid(k))
    for i in range(k):  # fluxrl step i: time grid[i] = (K - i) / K, DPPO's t = K - 1 - i
        mean, std = step_mean_std(model, net, None, jnp.asarray(x, jnp.float32), grid[i],
                                  grid[i + 1], None, None)
        mu, var = dppo_mean_var(x, 0.5 * x + 0.3, k - 1 - i, k)
        np.testing.assert_allclose(mean, mu, rtol=2e-4, atol=2e-5, err_msg=f"step {i}")
        np.testing.assert_allclose(std, np.sqrt(var), rtol=2e-4, atol=1e-6, err_msg=f"step {i}")


def test_stored_chain_and_log_probs_by_hand():
    """With eps = 0 every stored transition is DPPO's Gaussian step by hand: its noise, at the
    std floored at 0.1, lies in +-3 (randn_clip) and is about standard normal at every step; the stored
    log-probability is scipy's density, clamped to [-5, 2], averaged over dimensions."""
    cfg, agent, state = _agent()
    state = _zero_output(state)
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    chain, lp = np.asarray(ex["chain"], np.float64), np.asarray(ex["log_prob"])
    k = cfg.denoising_steps
    assert chain.shape == (64, k + 1, 2) and lp.shape == (64, k)
    np.testing.assert_array_equal(action, np.clip(chain[:, -1], -1, 1).astype(np.float32))
    want, zs = np.zeros_like(lp), []
    for i in range(k):
        mu, var = dppo_mean_var(chain[:, i], 0.0, k - 1 - i, k)
        std = max(math.sqrt(var), 0.1)
        zs.append((chain[:, i + 1] - mu) / std)
        want[:, i] = np.clip(norm.logpdf(chain[:, i + 1], mu, std), -5, 2).mean(-1)
    np.testing.assert_allclose(lp, want, rtol=1e-4, atol=1e-4)
    z = np.stack(zs)  # [K, 64, 2]; the last step too is noised at the 0.1 floor
    per_step = z.reshape(k, -1).std(-1)
    assert np.abs(z).max() <= 3.0 + 1e-3 and np.all((0.8 < per_step) & (per_step < 1.2)), per_step


def test_log_probs_are_clamped_to_minus_five_and_two():
    """A transition far from the step mean scores -5, not its density; at a 0.01 likelihood
    floor a noiseless last step (min_sampling_std = 0) has density 3.69 and scores 2."""
    cfg, agent, state = _agent("algo.min_logprob_std=0.01", "algo.min_sampling_std=0")
    obs = _obs()
    _, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert np.all(np.asarray(ex["log_prob"])[:, -1] == 2.0)
    model, _, network = dppo_policy(cfg, SHAPES.act_dim)
    grid = model.time_grid(cfg.denoising_steps)
    far = ex["chain"].at[:, 1:].add(50.0)
    lp = chain_log_probs(model, network, state.actor, obs, far, grid[:-1], grid[1:], 0.01)
    assert np.all(np.asarray(lp) == -5.0)


def test_clip_schedule_by_hand():
    """DPPO's exponential schedule from the base (noisiest step) to the clip (last step)."""
    np.testing.assert_allclose(clip_schedule("dppo", 0.1, 0.01, 3.0, 4),
                               [0.01, 0.0181028, 0.0401283, 0.1], rtol=1e-5)
    got = clip_schedule("dppo", 0.2, 1e-3, 3.0, 10)
    want = [1e-3 + 0.199 * (math.exp(3 * k / 9) - 1) / (math.exp(3) - 1) for k in range(10)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(clip_schedule("constant", 0.2, 1e-3, 3.0, 10), np.full(10, 0.2))
    np.testing.assert_allclose(clip_schedule("dppo", 0.2, 1e-3, 3.0, 1), [0.2])


def test_denoising_discount_by_hand():
    np.testing.assert_allclose(denoising_discount(0.99, 4), [0.970299, 0.9801, 0.99, 1.0],
                               rtol=1e-6)
    np.testing.assert_allclose(denoising_discount(0.5, 3), [0.25, 0.5, 1.0])


def _minibatch(obs, action, ex, adv):
    z = jnp.zeros(obs.shape[0])
    return Rollout(obs, action, z, z, z, ex, adv, z)


def test_ratio_is_one_at_the_acting_policy():
    _, agent, state = _agent()
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    adv = jnp.asarray(np.random.default_rng(2).normal(size=64), jnp.float32)
    _, m = agent.update(state, _minibatch(obs, action, ex, adv), jax.random.PRNGKey(3),
                        jnp.int32(0))
    assert float(m["ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(m["clip_fraction"]) == 0.0 and abs(float(m["approx_kl"])) < 1e-6
    assert float(m["log_prob"]) == pytest.approx(float(ex["log_prob"].mean()), abs=1e-5)


@pytest.mark.parametrize("schedule", ["dppo", "constant"])
def test_policy_loss_on_known_ratios_by_hand(schedule):
    """Old log-probabilities shifted by known amounts give ratios exp(delta); the loss is
    -mean_{b,k} min(r A_bk, clip(r, 1 - eps_k, 1 + eps_k) A_bk) with A_bk the standardised
    advantage times 0.99^(K-1-k), and the two schedules give different losses."""
    cfg, agent, state = _agent(f"algo.clip_schedule={schedule}")
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    rng = np.random.default_rng(4)
    delta = rng.uniform(-0.3, 0.3, ex["log_prob"].shape)
    adv = rng.normal(size=64)
    old = {**ex, "log_prob": ex["log_prob"] - jnp.asarray(delta, jnp.float32)}
    _, m = agent.update(state, _minibatch(obs, action, old, jnp.asarray(adv, jnp.float32)),
                        jax.random.PRNGKey(3), jnp.int32(0))
    k = cfg.denoising_steps
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    a_k = a[:, None] * 0.99 ** np.arange(k - 1, -1, -1)
    losses = {}
    for kind in ("dppo", "constant"):
        eps = clip_schedule(kind, 0.2, 1e-3, 3.0, k).astype(np.float64)
        r = np.exp(delta)
        losses[kind] = -np.minimum(r * a_k, np.clip(r, 1 - eps, 1 + eps) * a_k).mean()
        if kind == schedule:
            assert float(m["clip_fraction"]) == pytest.approx((np.abs(r - 1) > eps).mean(),
                                                              abs=1e-3)
    assert float(m["policy_loss"]) == pytest.approx(losses[schedule], rel=1e-4, abs=1e-6)
    assert abs(losses["dppo"] - losses["constant"]) > 1e-3


def test_a_positive_advantage_raises_the_chains_log_probability():
    """One step with A = +1 on every sample raises the likelihood of the stored chains under
    the new network, and A = -1 lowers it."""
    cfg, agent, state = _agent("algo.lr_actor=1e-3", "algo.normalize_advantage=false")
    model, _, network = dppo_policy(cfg, SHAPES.act_dim)
    grid = model.time_grid(cfg.denoising_steps)
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    changes = []
    for sign in (1.0, -1.0):
        batch = _minibatch(obs, action, ex, sign * jnp.ones(64))
        new, _ = agent.update(state, batch, jax.random.PRNGKey(3), jnp.int32(0))
        after = chain_log_probs(model, network, new.actor, obs, ex["chain"], grid[:-1], grid[1:],
                                cfg.min_logprob_std)
        changes.append(float(after.mean() - ex["log_prob"].mean()))
    assert changes[0] > 0 > changes[1], changes


def test_only_the_last_ft_steps_are_trained():
    """With ft_denoising_steps=2 of 4 the chain holds the last 3 states; its first comes from
    the frozen initial network alone, which no update moves."""
    _, agent, state = _agent("algo.denoising_steps=4", "algo.ft_denoising_steps=2")
    obs = _obs()
    action, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert ex["chain"].shape == (64, 3, 2) and ex["log_prob"].shape == (64, 2)
    _, ex_zero = agent.act(_zero_output(state), obs, jax.random.PRNGKey(1), False)
    np.testing.assert_array_equal(ex_zero["chain"][:, 0], ex["chain"][:, 0])
    assert not np.allclose(ex_zero["chain"][:, 1:], ex["chain"][:, 1:])
    base_zero = state.replace(base=_zero_output(state.replace(actor=state.base)).actor)
    _, ex_base = agent.act(base_zero, obs, jax.random.PRNGKey(1), False)
    assert not np.allclose(ex_base["chain"][:, 0], ex["chain"][:, 0])
    adv = jnp.asarray(np.random.default_rng(2).normal(size=64), jnp.float32)
    new, m = agent.update(state, _minibatch(obs, action, ex, adv), jax.random.PRNGKey(3),
                          jnp.int32(0))
    assert float(m["ratio_mean"]) == pytest.approx(1.0, abs=1e-6)
    jax.tree.map(np.testing.assert_array_equal, new.base, state.base)
    assert not np.allclose(new.actor["out"]["kernel"], state.actor["out"]["kernel"])


@pytest.mark.parametrize("override, words", [
    ("algo.ft_denoising_steps=11", "ft_denoising_steps"),
    ("algo.clip_schedule=linear", "clip_schedule"),
    ("algo.min_logprob_std=0", "min_logprob_std"),
    ("algo.gamma_denoising=0", "gamma_denoising"),
])
def test_bad_config_values_are_one_line_errors(override, words):
    with pytest.raises(FluxError, match=words) as err:
        resolve(compose(SMALL + [override]))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_dppo_learns_point_reach(tmp_path):
    """Budget: 100,352 env steps per seed (49 iterations of 64 envs x 32 steps), 2 seeds
    vmapped, 2 x 64 networks, every other setting DPPO's default (10 denoising steps, actor lr
    1e-4, the dppo clip schedule). A random policy scores about -35 (tests/test_on_policy.py
    measures it); both seeds must finish above -15."""
    returns = point_reach_returns("dppo", tmp_path / "run")
    assert np.all(returns[-1] > -15.0), returns
