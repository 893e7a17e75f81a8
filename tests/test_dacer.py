"""DACER: the reparameterised actor loss (gradients through every denoising step), the distributional
critic target with reward scaling and terminal masking, the actor / temperature schedules and the
temperature's direction, exploration noise, its config errors, paper defaults, and learning on
Pendulum. Acting shapes, the model classes and the shared config errors are tested for every
agent in test_agent_contract.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import bootstrapped, random_batch, set_q_head, tiny_config, trees_differ

from fluxrl.agents.base import Shapes
from fluxrl.agents.registry import get_algo
from fluxrl.agents.reparam.dacer import DACERConfig, dacer_actor_loss
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.generative import make_model
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.distributional import GaussianQEnsemble, dsac_critic_loss
from fluxrl.train.run import train

SHAPES = Shapes(obs_dim=3, act_dim=2)


def tiny(*extra: str):
    """A small agent whose ``init`` is jitted (op by op it costs seconds)."""
    cfg = tiny_config("dacer", *extra).algo
    agent = get_algo("dacer").make(cfg, SHAPES)
    return cfg, dataclasses.replace(agent, init=jax.jit(agent.init))


# --- the actor loss -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vp-cosine", "flow"])
def test_actor_gradient_flows_through_the_whole_chain(name):
    """A linear 'network' ``w * x_t`` sampled over 4 steps and Q(s, a) = -|a - c|^2 / 2: the
    analytic gradient of -mean Q in w equals a central finite difference of the same loss (with the
    same key): a gradient stopped anywhere in the chain would drop that step's share (and with
    ``differentiable=False`` it is 0)."""
    model = make_model(name, steps=4, clip=False, clip_denoised=False)
    net = lambda p, x, t, c: p["w"] * x  # noqa: E731
    obs, key, c = jnp.zeros((256, 1)), jax.random.PRNGKey(0), jnp.array([0.3, -0.5])

    def loss(w):
        return dacer_actor_loss({"w": w}, model, net, lambda a: -0.5 * jnp.sum((a - c) ** 2, -1),
                                obs, key, 2)

    w, h = jnp.float32(0.4), 1e-2
    g = float(jax.grad(loss)(w))
    fd = (float(loss(w + h)) - float(loss(w - h))) / (2 * h)
    assert abs(g) > 1e-3 and abs(g - fd) < 2e-2 * abs(fd), (g, fd)


# --- the critic ---------------------------------------------------------------------------------


@pytest.mark.parametrize("env, agg, scale, bootstrap", [
    ("gym/Pendulum-v1", "min", 0.2, -2.0), ("dmc/cartpole-balance", "mean", 1.0, 0.5)])
def test_critic_target_is_scaled_clipped_and_stops_at_termination(env, agg, scale, bootstrap):
    """Target critics set to the constant returns N(3, ~0) and N(-2, ~0) (zero last-layer kernel,
    std softplus(-30)): whatever the next action, the target is ``reward_scale r + gamma (1 -
    terminated) agg(3, -2)`` (reward scale 0.2 on Gym, 1.0 on DMC, the latter from
    fluxrl.task_defaults when the config is composed for a DMC task); the update's critic loss
    must equal the DSAC-T loss of the online critics against it, summed over the two members,
    with the running std at its initial 1."""
    cfg, agent = tiny(f"algo.critic_agg={agg}", f"env={env}")
    assert cfg.reward_scale == scale
    state = agent.init(jax.random.PRNGKey(0))
    state = state.replace(target=set_q_head(state.target, [[3.0, -30.0], [-2.0, -30.0]],
                                            head="VmapGaussianQHead_0"))
    batch = random_batch(SHAPES)
    _, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(2), jnp.int32(1))

    mean, std = GaussianQEnsemble(backbone_from(cfg.critic), 2).apply(
        {"params": state.critic}, batch["obs"], batch["action"])
    y = jnp.asarray(bootstrapped(batch, bootstrap, reward_scale=scale), jnp.float32)
    want = float(dsac_critic_loss(mean, std, y, y, jnp.float32(1.0)).sum())
    np.testing.assert_allclose(float(metrics["critic_loss"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["q_std"]), float(std.mean()), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["running_q_std"]),
                               0.005 * float(std.mean()) + 0.995, rtol=1e-6)


# --- schedules and temperature ------------------------------------------------------------------


@pytest.fixture(scope="module")
def scheduled():
    """Actor every 2 steps, temperature every 4; an impossible entropy target (+100) so alpha
    must rise."""
    cfg, agent = tiny("algo.alpha_every=4", "algo.target_entropy=100")
    return cfg, agent, jax.jit(agent.update)


def test_actor_every_second_and_temperature_every_fourth_step(scheduled):
    _, agent, update = scheduled
    state = agent.init(jax.random.PRNGKey(0))
    batch = random_batch(SHAPES)
    for step in (5, 6, 7, 8):
        new, m = update(state, batch, jax.random.PRNGKey(step), jnp.int32(step))
        assert trees_differ(state.critic, new.critic) and trees_differ(state.target, new.target)
        assert trees_differ(state.actor, new.actor) == (step % 2 == 0), step
        assert (float(new.log_alpha) != float(state.log_alpha)) == (step % 4 == 0), step
        assert (float(m["actor_loss"]) == 0.0) == (step % 2 == 1)
        assert all(np.isfinite(float(v)) for v in m.values()), m
        state = new


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_temperature_moves_toward_the_target_entropy(sign, scheduled):
    """loss = log alpha (H - target): an entropy below the target (+100) raises alpha, above it
    (-100) lowers it; the first Adam step moves log alpha by lr_alpha = 0.03. The estimate is a
    finite number of nats."""
    if sign > 0:
        agent, update = scheduled[1:]
    else:
        agent = tiny("algo.target_entropy=-100")[1]
        update = jax.jit(agent.update)
    state = agent.init(jax.random.PRNGKey(0))
    new, m = update(state, random_batch(SHAPES), jax.random.PRNGKey(3), jnp.int32(0))
    np.testing.assert_allclose(float(new.log_alpha - state.log_alpha), sign * 0.03, rtol=1e-3)
    np.testing.assert_allclose(float(m["alpha"]), 3.0 * np.exp(sign * 0.03), rtol=1e-4)
    assert np.isfinite(float(m["entropy"])) and float(m["entropy"]) != 0.0


def test_update_is_pure_xla_with_real_branches_under_seed_vmap(scheduled):
    """Seeds are vmapped with a shared step, so the actor and temperature schedules stay real
    ``cond`` branches (not both-branch selects) and the mixture fit is an XLA loop, no callback."""
    _, agent, _ = scheduled
    states = jax.eval_shape(jax.vmap(agent.init), jax.random.split(jax.random.PRNGKey(0), 2))
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    text = str(jax.make_jaxpr(jax.vmap(agent.update, in_axes=(0, None, 0, None)))(
        states, random_batch(SHAPES), keys, jnp.int32(0)))
    assert text.count(" cond[") >= 2 and "while[" in text and "callback" not in text


# --- acting -------------------------------------------------------------------------------------


def test_exploration_noise_is_alpha_times_the_noise_scaler():
    """Evaluation is the noise-free sample; exploration adds N(0, (alpha noise_scaler)^2) to the
    same sample (alpha = 3, noise_scaler 0.01: std 0.03, checked where the sample is inside +-0.8)
    and clips to the box (the untrained chain often lands on its faces)."""
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(4096, 3)), jnp.float32)
    key = jax.random.PRNGKey(1)
    _, agent = tiny("algo.noise_scaler=0.01")
    state = agent.init(jax.random.PRNGKey(0))
    act = jax.jit(agent.act, static_argnums=3)
    ev, ex = np.asarray(act(state, obs, key, True)), np.asarray(act(state, obs, key, False))
    assert ev.shape == ex.shape == (4096, 2) and np.abs(ev).max() <= 1 and np.abs(ex).max() <= 1
    inside = np.abs(ev) < 0.8
    assert 0.2 < inside.mean() and np.mean(np.abs(ex) == 1.0) > 0.01
    diff = (ex - ev)[inside]
    assert abs(np.std(diff) - 0.03) <= 0.0015 and abs(np.mean(diff)) < 0.002, np.std(diff)


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, words", [
    ("algo.alpha_every=0", "alpha_every"),
    ("algo.gmm_components=0", "gmm_components"), ("algo.entropy_samples=1", "entropy_samples"),
    ("algo.noise_scaler=-0.1", "noise_scaler"),
    ("algo.noise_scaler=inf", "noise_scaler"), ("algo.reward_scale=0", "reward_scale"),
    ("algo.target_entropy=nan", "target_entropy"),
])
def test_bad_dacer_values_are_flux_errors(override, words):
    """DACER's own fields; the shared ones (policy_delay, init_alpha, lr_alpha, ...) are in
    test_agent_contract.py."""
    with pytest.raises(FluxError) as info:
        resolve(compose(["algo=dacer", override]))
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg


def test_entropy_samples_must_cover_the_mixture():
    cfg = resolve(compose(["algo=dacer"])).algo
    with pytest.raises(FluxError, match="at least max"):
        dataclasses.replace(cfg, gmm_components=8, entropy_samples=5).validate()


def test_paper_defaults():
    """Paper A.3 / flow-rl mujoco/algo/dacer.yaml; DMC takes 3 x 512 nets (dmc/algo/dacer.yaml)."""
    cfg = resolve(compose(["algo=dacer", "env=gym/Hopper-v5"])).algo
    assert isinstance(cfg, DACERConfig)
    assert (cfg.actor.width, cfg.actor.depth, cfg.actor.act) == (256, 3, "mish")
    assert (cfg.critic.width, cfg.critic.depth, cfg.critic.act) == (256, 2, "relu")
    assert cfg.lr_actor == cfg.lr_critic == 1e-4 and cfg.lr_alpha == 0.03
    assert (cfg.policy_delay, cfg.alpha_every, cfg.entropy_samples, cfg.gmm_components) == (2, 10_000, 200, 3)
    assert (cfg.noise_scaler, cfg.init_alpha, cfg.reward_scale, cfg.target_entropy) == (0.1, 3.0, 0.2, None)
    assert cfg.ddpm_variance == "beta"  # flow-rl ContinuousDDPM adds sqrt(beta_i)
    assert (cfg.model, cfg.diffusion_steps, cfg.time_dim, cfg.best_of_eval) == ("vp-cosine", 20, 64, 1)
    assert (cfg.num_critics, cfg.tau, cfg.discount, cfg.critic_agg) == (2, 0.005, 0.99, "min")
    dmc = resolve(compose(["algo=dacer", "env=dmc/cheetah-run"])).algo
    assert (dmc.actor.width, dmc.critic.width, dmc.critic.depth, dmc.critic.act) == (512, 512, 3, "elu")
    assert dmc.reward_scale == 1.0 and dmc.noise_scaler == 0.1  # fluxrl.task_defaults
    cheetah = resolve(compose(["algo=dacer", "env=gym/HalfCheetah-v5"])).algo
    assert cheetah.noise_scaler == 0.15 and cheetah.reward_scale == 0.2


# --- learning -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_dacer_learns_pendulum(tmp_path):
    """Learning test: DACER on Pendulum-v1 with reduced settings, otherwise the paper's: 2x64
    denoiser (Mish) and 2x64 critics, 5 diffusion steps (paper: 20), critic Adam lr 3e-4 (paper:
    1e-4; the actor keeps 1e-4), the temperature every 1K updates from 64 samples per state (paper:
    10K, 200), 6K frames with 1K random warmup, 2 seeds, 5 evaluation episodes at 2K, 4K and 6K
    frames.

    Calibration (this config, seed pairs 0-1 .. 6-7): at 2K frames -1500 to -1706; at 6K frames
    -723, -661 | -666, -330 | -452, -808 | -596, -183, so every seed gains at least 800 and the
    worst pair averages -692. Both lrs at 1e-4 (the paper's) reach only -608 to -1111 by 6K frames;
    both at 3e-4 learn faster but seed 0 collapses from -489 at 4K to -1162 at 6K. A random policy
    scores about -1200 to -1500. Asserted: each seed gains 400 and beats -1000, and the mean of the
    two beats -800."""
    overrides = ["env=gym/Pendulum-v1", "algo=dacer", "algo.actor.width=64", "algo.actor.depth=2",
                 "algo.critic.width=64", "algo.diffusion_steps=5", "algo.lr_critic=3e-4",
                 "algo.alpha_every=1000", "algo.entropy_samples=64", "seeds=2", "frames=6000",
                 "off_policy.warmup_frames=1000", "eval_every=2000", "eval_episodes=5", "checkpoint_every=0",
                 "progress=false", "tensorboard=false", "plot=false", f"run_dir={tmp_path / 'd'}"]
    result = train(compose(overrides), overrides)
    first, final = result.eval_returns[0], result.eval_returns[-1]
    assert len(result.eval_returns) == 3
    assert (final > first + 400).all() and (final > -1000).all() and final.mean() > -800, (
        f"first {first}, final {final}")
