"""QVPO: the best-sample advantage weights and the entropy rows on known inputs, the assembled actor
loss and the critic target recomputed from the agent's parts, the EMA target actor, its config
errors, paper defaults, and learning on Pendulum. Acting with best-of-N, the model classes and the
shared config errors are tested for every agent in test_agent_contract.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import PENDULUM, random_batch, tiny_config

from fluxrl.agents.common import generative_actor
from fluxrl.agents.registry import get_algo
from fluxrl.agents.weighted_matching.qvpo import QVPOConfig, qvpo_targets
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.generative import MODELS
from fluxrl.guidance.best_of_n import sample_n
from fluxrl.guidance.weights import top_advantages
from fluxrl.nets.backbones import backbone_from
from fluxrl.nets.critics import QEnsemble
from fluxrl.train.run import train


def tiny_agent(*overrides: str):
    cfg = tiny_config("qvpo", *overrides).algo
    return cfg, PENDULUM, get_algo("qvpo").make(cfg, PENDULUM)


# --- the weights ---------------------------------------------------------------------------------


def test_top_advantages_on_known_values():
    q = jnp.array([[1.0, 4.0, 2.0, 1.0], [0.5, 0.5, 0.5, 0.5], [-3.0, 1.0, 5.0, 1.0]])
    idx, adv = top_advantages(q)
    np.testing.assert_array_equal(np.asarray(idx), [[1], [0], [2]])  # a tie goes to the first
    np.testing.assert_allclose(np.asarray(adv), [[2.0], [0.0], [4.0]])
    idx, adv = top_advantages(q, 3)
    np.testing.assert_array_equal(np.asarray(idx), [[1, 2, 0], [0, 1, 2], [2, 1, 3]])
    # means 2, 0.5, 1: advantages below the mean are clamped at 0
    np.testing.assert_allclose(np.asarray(adv), [[2.0, 0.0, 0.0], [0, 0, 0], [4.0, 0.0, 0.0]])
    with pytest.raises(FluxError, match="k <= N"):
        top_advantages(q, 5)


def test_targets_keep_the_best_sample_and_weight_uniform_rows_by_the_coefficient():
    samples = jnp.array([[[0.1, 0.2], [0.3, -0.4], [0.9, 0.9]],
                         [[-0.5, 0.0], [0.6, 0.1], [0.2, -0.2]]])
    q = jnp.array([[1.0, 2.5, 0.0], [3.0, -1.0, 1.0]])
    unif = jnp.full((2, 4, 2), -0.7)
    x0, w, adv = qvpo_targets(samples, q, unif, 0.01)
    assert x0.shape == (2, 5, 2) and w.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(x0[:, 0]), [[0.3, -0.4], [-0.5, 0.0]])
    np.testing.assert_allclose(np.asarray(x0[:, 1:]), -0.7)
    np.testing.assert_allclose(np.asarray(adv), [2.5 - 3.5 / 3, 3.0 - 1.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w[:, 0]), np.asarray(adv), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w[:, 1:]), 0.01 * np.asarray(adv)[:, None] * np.ones(4),
                               rtol=1e-6)
    x0, w, _ = qvpo_targets(samples, q, None, 0.01)  # entropy term off: only the best rows
    assert x0.shape == (2, 1, 2) and w.shape == (2, 1)
    # the weights are constants of the actor loss: no gradient reaches the critic values
    g = jax.grad(lambda qq: qvpo_targets(samples, qq, unif, 0.01)[1].sum())(q)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


# --- the assembled update ------------------------------------------------------------------------


def test_actor_loss_is_the_weighted_denoising_loss_on_best_and_uniform_actions():
    """Recompute the update's actor loss from its parts: 8 samples per state of the (pre-update)
    actor valued by the pre-update critics' ensemble mean, the best kept with weight Q_max - mean Q,
    10 uniform actions in [-1, 1] per state with weight 0.01 times that, the model's loss."""
    cfg, spec, agent = tiny_agent()
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    batch = random_batch(PENDULUM, 32, done_every=3)
    key = jax.random.PRNGKey(3)
    _, metrics = jax.jit(agent.update)(state, batch, key, jnp.int32(0))

    model, actor = generative_actor(cfg, spec.act_dim)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    _, k_train, k_unif, k_loss = jax.random.split(key, 4)
    obs = batch["obs"]
    samples = jax.jit(lambda p: sample_n(model, actor, p, obs, k_train, 8, 1))(state.actor)
    obs_n = jnp.broadcast_to(obs[:, None], (32, 8, 3))
    q = np.asarray(jax.jit(critic.apply)({"params": state.critic}, obs_n, samples)).mean(0)
    best = np.asarray(samples)[np.arange(32), q.argmax(1)]
    adv = q.max(1) - q.mean(1)
    unif = 2.0 * np.asarray(jax.random.uniform(k_unif, (32, 10, 1))) - 1.0
    assert unif.min() < -0.5 and unif.max() > 0.5  # the whole box, not flow-rl's [0, 1)
    x0 = np.concatenate([best[:, None], unif], 1)
    w = np.concatenate([adv[:, None], 0.01 * np.repeat(adv[:, None], 10, 1)], 1)
    expect = jax.jit(lambda p, x, ww: model.loss(actor, p, x, obs[:, None], k_loss, ww))(
        state.actor, jnp.asarray(x0, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(float(metrics["actor_loss"]), float(expect), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["advantage"]), adv.mean(), rtol=1e-4)


@pytest.mark.parametrize("agg, n_target", [("min", 3), ("mean", 2)])
def test_critic_target_is_the_best_target_actor_sample_under_the_target_critics(agg, n_target):
    """The TD target's next action is the best of n_target samples of the *target* actor by the
    target critics' reduction: recompute it with the actor's online weights perturbed (a wrong
    actor would change the number), terminal transitions not bootstrapping."""
    cfg, spec, agent = tiny_agent(f"algo.critic_agg={agg}", f"algo.target_samples={n_target}")
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    noisy = jax.tree.map(lambda p: p + 0.3 * jnp.sign(p + 1e-3), state.actor)
    state = state.replace(actor=noisy, target=jax.tree.map(lambda p: 1.5 * p, state.target))
    batch = random_batch(PENDULUM, 32, done_every=3)
    key = jax.random.PRNGKey(5)
    _, metrics = jax.jit(agent.update)(state, batch, key, jnp.int32(0))

    model, actor = generative_actor(cfg, spec.act_dim)
    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    k_next = jax.random.split(key, 4)[0]
    cands = jax.jit(lambda p: sample_n(model, actor, p, batch["next_obs"], k_next, n_target, 1))(
        state.actor_target)
    nobs = jnp.broadcast_to(batch["next_obs"][:, None], (32, n_target, 3))
    q_fn = jax.jit(critic.apply)
    qs = np.asarray(q_fn({"params": state.target}, nobs, cands))
    next_q = (qs.min(0) if agg == "min" else qs.mean(0)).max(1)
    r, done = np.asarray(batch["reward"]), np.asarray(batch["terminated"])
    target = r + 0.99 * (1.0 - done) * next_q
    q = np.asarray(q_fn({"params": state.critic}, batch["obs"], batch["action"]))
    np.testing.assert_allclose(float(metrics["critic_loss"]), np.mean((q - target) ** 2), rtol=1e-5)


def test_target_actor_and_critics_follow_by_ema_and_train_gradients_move_the_actor():
    cfg, _, agent = tiny_agent()
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), state.actor,
                                            state.actor_target)))
    batch = random_batch(PENDULUM, 32, done_every=3)
    new, metrics = jax.jit(agent.update)(state, batch, jax.random.PRNGKey(1), jnp.int32(0))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for old_t, online, new_t in [(state.actor_target, new.actor, new.actor_target),
                                 (state.target, new.critic, new.target)]:
        expect = jax.tree.map(lambda t, o: t + cfg.tau * (o - t), old_t, online)
        for a, b in zip(jax.tree.leaves(expect), jax.tree.leaves(new_t), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(state.actor),
                                                         jax.tree.leaves(new.actor), strict=True)]
    assert max(moved) > 0


# --- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, words", [
    ("algo.train_samples=1", "train_samples"), ("algo.target_samples=0", "target_samples"),
    ("algo.train_agg=max", "train_agg"), ("algo.entropy_coef=-0.1", "entropy_coef"),
    ("algo.entropy_coef=nan", "entropy_coef"), ("algo.entropy_samples=0", "entropy_samples"),
    ("algo.entropy_samples=-2", "entropy_samples"),
])
def test_bad_qvpo_values_are_one_line_flux_errors(override, words):
    """QVPO's own fields; the shared ones are in test_agent_contract.py."""
    with pytest.raises(FluxError) as info:
        resolve(compose(["algo=qvpo", override]))
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg


def test_entropy_term_can_be_turned_off():
    cfg = resolve(compose(["algo=qvpo", "algo.entropy_coef=0", "algo.entropy_samples=0"])).algo
    assert cfg.entropy_coef == 0


def test_paper_defaults():
    """Paper A.3 / flow-rl mujoco qvpo.yaml on a task without a row in fluxrl.task_defaults
    (behaviour samples 2), and the rows for HalfCheetah (4) and Hopper (1)."""
    cfg = resolve(compose(["algo=qvpo", "env=gym/Walker2d-v5"])).algo
    assert isinstance(cfg, QVPOConfig)
    assert (cfg.actor.width, cfg.actor.depth, cfg.actor.act) == (256, 2, "mish")
    assert (cfg.critic.width, cfg.critic.depth, cfg.critic.act) == (256, 2, "relu")
    assert (cfg.train_samples, cfg.entropy_coef, cfg.entropy_samples) == (64, 0.01, 10)
    assert (cfg.best_of_act, cfg.target_samples, cfg.best_of_eval) == (2, None, 32)
    assert (cfg.model, cfg.diffusion_steps, cfg.time_dim, cfg.train_agg) == ("vp-cosine", 20, 64, "mean")
    assert cfg.lr_actor == cfg.lr_critic == 3e-4 and cfg.tau == 0.005 and cfg.num_critics == 2
    assert cfg.critic_agg == "min" and cfg.discount == 0.99
    assert resolve(compose(["algo=qvpo", "env=gym/HalfCheetah-v5"])).algo.best_of_act == 4
    assert resolve(compose(["algo=qvpo", "env=gym/Hopper-v5"])).algo.best_of_act == 1
    for name in MODELS:  # every generative model is a valid choice
        dataclasses.replace(cfg, model=name).validate()


# --- learning ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_qvpo_learns_pendulum(tmp_path):
    """Learning test: QVPO on Pendulum-v1 with reduced settings, otherwise the paper's: 2x64 denoiser
    (Mish) with a 16-d time embedding (paper: 64) and a 32-wide state encoder (flow-rl: 128), 2x64
    critics, 5 diffusion steps (paper: 20), 16 training samples per state (paper: 64), batch 128
    (paper: 256), 8K frames with 1K random warmup, 2 seeds, 5 evaluation episodes at 2K, 4K, 6K and
    8K frames (best of 32 samples, as flow-rl evaluates). The per-row time embedding of the loss
    dominates a small update on CPU, hence the small time_dim.

    Calibration (this config, seeds 0-9, about 90 s of CPU time per pair of seeds): first evaluation
    -1458 to -1729, final -97 to -665 (mean -305; pair means -197 to -572); every seed gains at
    least 899. Seeds 0 and 1 go -1647 / -1458 -> -524 / -97. QVPO is slower than QSM here: at 6K
    frames seeds 4, 5 and 9 were still at -1054, -673 and -1178. A random policy scores about -1200
    to -1500. Bounds: each seed gains 500 and beats -900, and the mean beats -700."""
    overrides = ["env=gym/Pendulum-v1", "algo=qvpo", "algo.actor.width=64", "algo.critic.width=64",
                 "algo.time_dim=16", "algo.obs_encoder_width=32", "algo.diffusion_steps=5",
                 "algo.train_samples=16", "off_policy.batch_size=128", "seeds=2", "frames=8000", "off_policy.warmup_frames=1000",
                 "eval_every=2000", "eval_episodes=5", "checkpoint_every=0", "progress=false",
                 "tensorboard=false", "plot=false", f"run_dir={tmp_path / 'q'}"]
    result = train(compose(overrides), overrides)
    first, final = result.eval_returns[0], result.eval_returns[-1]
    assert len(result.eval_returns) == 4
    assert (final > first + 500).all() and (final > -900).all() and final.mean() > -700, (
        f"first {first}, final {final}")
