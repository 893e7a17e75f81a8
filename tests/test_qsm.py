"""QSM: the score-matching actor loss on known inputs, best-of-N acting, its config errors and
paper defaults, and learning on Pendulum. The clipped double-Q critic step, acting shapes and
exploration noise, and the shared config errors are tested for every agent in
test_agent_contract.py."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import PENDULUM

from fluxrl.agents.q_guidance.qsm import QSMConfig, qsm_actor_loss
from fluxrl.agents.registry import get_algo
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.generative import make_model
from fluxrl.guidance.best_of_n import best_of_n, sample_n, select_best
from fluxrl.train.run import train


def cosine_sigma(t: np.ndarray, s: float = 0.008) -> np.ndarray:
    """sigma_t of the continuous cosine VP schedule (Nichol & Dhariwal 2021), in float64."""
    abar = (np.cos((t + s) / (1 + s) * np.pi / 2) / np.cos(s / (1 + s) * np.pi / 2)) ** 2
    return np.sqrt(1.0 - abar)


# --- the actor loss -----------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [True, False])
def test_actor_loss_matches_hand_computation_and_leaves_critic_alone(normalize):
    """Q(s, a) = -|a - c|^2 / 2 has grad_a Q = c - a; a linear 'network' w * a_t predicts the
    noise. Target: -sigma_t (c - a_t) / (lambda * (mean|c - a_t| + 1e-6)) (flow-rl qsm.py)."""
    rng = np.random.default_rng(0)
    a_t = rng.uniform(-1.5, 1.5, (32, 2)).astype(np.float32)
    t = rng.uniform(0.01, 0.99, 32).astype(np.float32)
    obs = rng.normal(size=(32, 3)).astype(np.float32)
    critic = {"c": jnp.array([0.3, -0.5])}
    actor = {"w": jnp.array(0.7)}
    lam = 0.1

    def q_value(p, o, a):
        return -0.5 * jnp.sum((a - p["c"]) ** 2, -1) + 0.0 * o.sum(-1)

    def predict(p, x, tt, o):
        return p["w"] * x

    args = (predict, q_value, make_model("vp-cosine"), jnp.asarray(obs), jnp.asarray(a_t),
            jnp.asarray(t), lam, normalize)
    loss, aux = qsm_actor_loss(actor, critic, *args)

    g = np.array([0.3, -0.5]) - a_t.astype(np.float64)
    scale = lam * (np.abs(g).mean() + 1e-6 if normalize else 1.0)
    target = -cosine_sigma(t.astype(np.float64))[:, None] * g / scale
    resid = 0.7 * a_t - target
    np.testing.assert_allclose(float(loss), np.mean(resid**2), rtol=1e-4)
    np.testing.assert_allclose(float(aux["q_grad_abs"]), np.abs(g).mean(), rtol=1e-5)

    g_critic = jax.grad(lambda c: qsm_actor_loss(actor, c, *args)[0])(critic)
    np.testing.assert_array_equal(np.asarray(g_critic["c"]), 0.0)  # the critic is not trained here
    g_actor = jax.grad(lambda p: qsm_actor_loss(p, critic, *args)[0])(actor)
    np.testing.assert_allclose(float(g_actor["w"]), np.mean(2 * resid * a_t), rtol=1e-4)


# --- acting -------------------------------------------------------------------------------------


def test_select_best_and_best_of_n_pick_the_highest_value():
    acts = jnp.array([[[0.1], [0.9], [-0.4]], [[0.5], [0.2], [0.8]]])
    vals = jnp.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    np.testing.assert_array_equal(np.asarray(select_best(acts, vals)), np.asarray(acts)[[0, 1], [1, 2]])
    with pytest.raises(FluxError):
        select_best(acts, vals[:, :2])

    model = make_model("vp-cosine", steps=3)
    net = lambda p, x, t, c: 0.0 * x  # noqa: E731 - predicts zero noise
    obs, key = jnp.zeros((4, 2)), jax.random.PRNGKey(0)
    value = lambda o, a: -jnp.abs(a[..., 0] - 0.3)  # noqa: E731
    best = best_of_n(model, net, {}, obs, key, 7, 1, value)
    cands = sample_n(model, net, {}, obs, key, 7, 1)
    assert cands.shape == (4, 7, 1) and best.shape == (4, 1)
    closest = np.take_along_axis(np.asarray(cands), np.abs(np.asarray(cands) - 0.3).argmin(1)[:, None], 1)
    np.testing.assert_array_equal(np.asarray(best), closest[:, 0])
    np.testing.assert_array_equal(np.asarray(best_of_n(model, net, {}, obs, key, 1, 1, value)),
                                  np.asarray(sample_n(model, net, {}, obs, key, 1, 1))[:, 0])


# --- config errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("override, words", [
    ("algo.temperature=0", "temperature"), ("algo.temperature=-0.1", "temperature"),
    ("algo.temperature=nan", "temperature"), ("algo.grad_agg=max", "grad_agg"),
    ("algo.model=flow", "vp-cosine, vp-linear, ddpm, ddpm-linear"), ("algo.model=edm", "edm"),
])
def test_bad_qsm_values_are_flux_errors(override, words):
    """QSM's own fields; the shared ones are in test_agent_contract.py."""
    with pytest.raises(FluxError) as info:
        resolve(compose(["algo=qsm", override]))
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg


def test_building_with_an_unsupported_model_is_a_flux_error():
    cfg = resolve(compose(["algo=qsm"])).algo
    with pytest.raises(FluxError, match="predicts velocity"):
        get_algo("qsm").make(dataclasses.replace(cfg, model="flow"), PENDULUM)


def test_paper_defaults():
    cfg = resolve(compose(["algo=qsm"])).algo
    assert isinstance(cfg, QSMConfig)
    assert (cfg.actor.width, cfg.actor.depth, cfg.actor.act) == (256, 3, "mish")
    assert (cfg.critic.width, cfg.critic.depth, cfg.critic.act) == (256, 2, "relu")
    assert (cfg.best_of_eval, cfg.temperature, cfg.diffusion_steps, cfg.time_dim) == (10, 0.1, 20, 64)
    assert cfg.lr_actor == cfg.lr_critic == 3e-4 and cfg.tau == 0.005 and cfg.num_critics == 2
    assert math.isclose(make_model(cfg.model).alpha_sigma(jnp.float32(0.5))[0] ** 2,
                        math.cos((0.5 + 0.008) / 1.008 * math.pi / 2) ** 2
                        / math.cos(0.008 / 1.008 * math.pi / 2) ** 2, rel_tol=1e-5)


# --- learning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_qsm_learns_pendulum(tmp_path):
    """Learning test: QSM on Pendulum-v1 with reduced settings, otherwise the paper's: 2x64 denoiser
    (Mish) and 2x64 critics, 5 diffusion steps (paper: 20), 6K frames with 1K random warmup, 2 seeds,
    5 evaluation episodes at 2K, 4K and 6K frames (best of 10 samples, as flow-rl evaluates).

    Calibration (this config, seeds 0-10): first evaluation -1275 to -1742, final -78 to -926
    (mean about -340); seeds 0 and 1 go -1735 / -1547 -> -198 / -98. A random policy scores about
    -1200 to -1500. QSM is still climbing at 6K frames (5K frames: -202 / -826), so the bounds below
    leave room: each seed gains 400 and beats -1000, and the mean beats -600."""
    overrides = ["env=gym/Pendulum-v1", "algo=qsm", "algo.actor.width=64", "algo.actor.depth=2",
                 "algo.critic.width=64", "algo.diffusion_steps=5", "seeds=2", "frames=6000",
                 "off_policy.warmup_frames=1000", "eval_every=2000", "eval_episodes=5", "checkpoint_every=0",
                 "progress=false", "tensorboard=false", "plot=false", f"run_dir={tmp_path / 'q'}"]
    result = train(compose(overrides), overrides)
    first, final = result.eval_returns[0], result.eval_returns[-1]
    assert len(result.eval_returns) == 3
    assert (final > first + 400).all() and (final > -1000).all() and final.mean() > -600, (
        f"first {first}, final {final}")
