"""The on-policy setting: JAX environments, running statistics, GAE, the program on the harness
(learning, exact resume, seeds), PPO's math and the config errors."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.config import compose, resolve
from fluxrl.envs import make_jax_env
from fluxrl.errors import FluxError
from fluxrl.train.normalize import normalize, stats_init, stats_update
from fluxrl.train.on_policy import gae

# --- GAE ------------------------------------------------------------------------------------------


def gae_by_hand(r, v, nv, term, trunc, gamma, lam):
    """The textbook loop in float64, one environment at a time."""
    t_len, n = r.shape
    adv = np.zeros((t_len, n))
    for j in range(n):
        acc = 0.0
        for t in reversed(range(t_len)):
            delta = r[t, j] + gamma * (1 - term[t, j]) * nv[t, j] - v[t, j]
            done = max(term[t, j], trunc[t, j])
            acc = delta + gamma * lam * (1 - done) * acc
            adv[t, j] = acc
    return adv, adv + v


def test_gae_matches_the_loop_with_terminations_and_truncations():
    rng = np.random.default_rng(0)
    t_len, n = 17, 5
    r, v, nv = (rng.normal(size=(t_len, n)) for _ in range(3))
    term = (rng.random((t_len, n)) < 0.1).astype(float)
    trunc = ((rng.random((t_len, n)) < 0.1) & (term == 0)).astype(float)
    adv, target = gae(*(jnp.asarray(x, jnp.float32) for x in (r, v, nv, term, trunc)), 0.97, 0.9)
    want_adv, want_target = gae_by_hand(r, v, nv, term, trunc, 0.97, 0.9)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(target, want_target, rtol=1e-5, atol=1e-5)


def test_gae_bootstraps_a_time_out_and_not_a_termination():
    """One step each, V(s) = 0, V(s') = 10, r = 1, gamma = 0.5: a truncated step's advantage is
    r + gamma V(s') = 6, a terminated one's r = 1, and neither takes the next episode's."""
    f = lambda *xs: [jnp.asarray(x, jnp.float32) for x in xs]  # noqa: E731
    r, v, nv = f([[1.0], [100.0]], [[0.0], [0.0]], [[10.0], [0.0]])
    for term, trunc, want in (([[0.0], [0.0]], [[1.0], [0.0]], 6.0),
                              ([[1.0], [0.0]], [[0.0], [0.0]], 1.0)):
        adv, _ = gae(r, v, nv, *f(term, trunc), 0.5, 1.0)
        assert float(adv[0, 0]) == pytest.approx(want)
    adv, _ = gae(r, v, nv, *f([[0.0], [0.0]], [[0.0], [0.0]]), 0.5, 1.0)
    assert float(adv[0, 0]) == pytest.approx(1.0 + 0.5 * 10.0 + 0.5 * (100.0 - 0.0))


# --- running statistics ---------------------------------------------------------------------------


def test_running_stats_merge_batches_into_the_moments_of_all():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=(k, 4)) for k in (1, 7, 50)]
    stats = stats_init(4)
    x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    np.testing.assert_array_equal(normalize(stats, x), x)  # identity before any data
    for b in batches:
        stats = stats_update(stats, jnp.asarray(b, jnp.float32))
    allx = np.concatenate(batches)
    np.testing.assert_allclose(stats.mean, allx.mean(0), rtol=1e-5)
    np.testing.assert_allclose(normalize(stats, x), (np.asarray(x) - allx.mean(0)) / allx.std(0),
                               rtol=1e-4, atol=1e-5)


# --- environments ---------------------------------------------------------------------------------


def test_jax_pendulum_is_gymnasium_pendulum_step_for_step():
    env = make_jax_env("jax/Pendulum")
    gym_env = gymnasium.make("Pendulum-v1").unwrapped
    gym_env.reset(seed=0)
    rng = np.random.default_rng(2)
    state = np.array([2.5, -0.7])
    gym_env.state = state.copy()
    sim = jnp.asarray(state, jnp.float32)
    step = jax.jit(env.task.step)
    for _ in range(60):
        a = rng.uniform(-1, 1, size=1)
        obs_g, r_g, term_g, _, _ = gym_env.step(2.0 * a)
        sim, obs, r, term = step(sim, jnp.asarray(a, jnp.float32))
        np.testing.assert_allclose(obs, obs_g, rtol=1e-4, atol=1e-4)
        assert float(r) == pytest.approx(r_g, rel=1e-4, abs=1e-4)
        assert bool(term) == term_g


def test_auto_reset_keeps_the_last_observation_and_the_episode_return():
    env = make_jax_env("jax/PointReach")
    state = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    # steer straight at the goal: the episode terminates inside the radius
    total, ended = 0.0, None
    for _ in range(env.episode_length):
        direction = state.obs[2:] / (jnp.linalg.norm(state.obs[2:]) + 1e-9)
        before = state
        state, out = step(state, direction)
        total += float(out.reward)
        if float(out.terminated):
            ended = (before, out)
            break
    assert ended is not None, "a straight path reaches the goal within 50 steps"
    before, out = ended
    assert float(out.truncated) == 0.0
    assert float(out.done_return) == pytest.approx(total, rel=1e-5)
    assert int(out.done_length) > 0
    goal = np.asarray(before.sim[2:])
    np.testing.assert_allclose(np.asarray(out.next_obs[:2]) + np.asarray(out.next_obs[2:]), goal,
                               atol=1e-5)  # next_obs is the final one, of the old goal
    assert int(state.t) == 0 and float(state.ep_return) == 0.0
    assert not np.allclose(np.asarray(state.sim[2:]), goal)  # a new episode, a new goal


def test_time_limit_truncates_without_terminating():
    env = make_jax_env("jax/Pendulum")
    state = env.reset(jax.random.PRNGKey(1))
    step = jax.jit(env.step)
    for t in range(env.episode_length):
        state, out = step(state, jnp.zeros(1))
        assert float(out.terminated) == 0.0
        assert float(out.truncated) == (1.0 if t == env.episode_length - 1 else 0.0)
    assert int(out.done_length) == env.episode_length and int(state.t) == 0


# --- PPO ------------------------------------------------------------------------------------------


def test_ppo_log_prob_is_the_density_of_the_squashed_gaussian():
    """Against the change of variables computed independently in float64, and the density
    integrates to one over (-1, 1)."""
    from scipy.stats import norm

    from fluxrl.agents.baselines.ppo import log_prob

    loc, scale = np.array([[0.3]]), np.array([[0.7]])
    a = np.linspace(-0.999, 0.999, 4001)
    u = np.arctanh(a)
    want = norm.logpdf(u, 0.3, 0.7) - np.log(1 - a**2)
    got = np.asarray(log_prob(jnp.asarray(loc, jnp.float32), jnp.asarray(scale, jnp.float32),
                              jnp.asarray(u[:, None], jnp.float32)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.trapezoid(np.exp(want), a) == pytest.approx(1.0, abs=1e-3)


def test_ppo_first_minibatch_has_ratio_one_and_no_clipping():
    from fluxrl.agents.base import Rollout, Shapes
    from fluxrl.agents.registry import make_agent

    cfg = resolve(compose(["algo=ppo", "env=jax/Pendulum", "algo.actor.width=16",
                           "algo.critic.width=16"])).algo
    agent = make_agent(cfg, Shapes(3, 1))
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 3)), jnp.float32)
    action, extras = agent.act(state, obs, jax.random.PRNGKey(1), False)
    adv = jnp.asarray(np.random.default_rng(1).normal(size=64), jnp.float32)
    z = jnp.zeros(64)
    _, metrics = agent.update(state, Rollout(obs, action, z, z, z, extras, adv, z),
                              jax.random.PRNGKey(2), jnp.int32(0))
    assert abs(float(metrics["policy_loss"])) < 1e-5  # -mean(standardised A) at ratio 1
    # PPO evaluates with the mode tanh(loc), whatever the key
    d1, _ = agent.act(state, obs, jax.random.PRNGKey(1), True)
    d2, _ = agent.act(state, obs, jax.random.PRNGKey(2), True)
    np.testing.assert_array_equal(d1, d2)
    assert float(metrics["clip_fraction"]) == 0.0 and abs(float(metrics["approx_kl"])) < 1e-6


# --- the program ----------------------------------------------------------------------------------

#: a small PPO run on jax/PointReach: 64 envs x 32 steps = 2048 env steps per iteration
SMALL = ["algo=ppo", "env=jax/PointReach", "progress=false", "tensorboard=false", "plot=false",
         "on_policy.num_envs=64", "on_policy.unroll_length=32", "algo.actor.width=64",
         "algo.critic.width=64", "algo.actor.depth=2", "algo.critic.depth=2",
         "algo.lr_actor=3e-4", "checkpoint_every=0"]


def _train(run_dir: Path, extra: list[str]):
    from fluxrl.train.run import train

    ov = SMALL + extra + [f"run_dir={run_dir}"]
    return train(compose(ov), ov)


def _rows(run_dir: Path, seed: int, kind: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / f"seed_{seed}" / f"{kind}.jsonl").read_text().splitlines()]


def random_policy_return(name: str, episodes: int = 256) -> float:
    """Mean return of uniform random actions over ``episodes`` episodes."""
    env = make_jax_env(name)

    def episode(key):
        k_reset, k_act = jax.random.split(key)

        def step(carry, k):
            state, ret, alive = carry
            state, out = env.step(state, jax.random.uniform(k, (env.act_dim,), minval=-1, maxval=1))
            done = jnp.maximum(out.terminated, out.truncated)
            return (state, ret + alive * out.reward, alive * (1 - done)), None

        (_, ret, _), _ = jax.lax.scan(step, (env.reset(k_reset), 0.0, 1.0),
                                      jax.random.split(k_act, env.episode_length))
        return ret

    return float(jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(0), episodes)).mean())


@pytest.mark.slow
def test_ppo_learns_point_reach_within_100k_env_steps(tmp_path):
    """Budget: 100,352 env steps per seed (49 iterations of 64 envs x 32 steps), 2 seeds vmapped,
    about 15 s on 2 cores. A random policy scores about -35; both seeds must finish above -10
    (heading straight for the goal scores about -4)."""
    assert random_policy_return("jax/PointReach") < -25.0
    result = _train(tmp_path / "run", ["seeds=2", "frames=100000", "eval_every=25000",
                                       "log_every=25000"])
    assert result.frames == 100_352
    assert np.all(result.eval_returns[-1] > -10.0), result.eval_returns
    train_rows = _rows(tmp_path / "run", 0, "train")
    assert "episode_return" in train_rows[-1] and "approx_kl" in train_rows[-1]


@pytest.mark.slow
def test_resumed_on_policy_run_equals_an_uninterrupted_one(tmp_path):
    budget = ["seeds=2", "eval_every=2048", "log_every=2048"]
    whole = _train(tmp_path / "whole", budget + ["frames=8192"])
    _train(tmp_path / "part", budget + ["frames=4096"])
    from fluxrl.train.run import train

    ov = ["resume=" + str(tmp_path / "part"), "frames=8192"]
    resumed = train(compose(ov), ov)
    assert resumed.eval_frames == whole.eval_frames
    np.testing.assert_array_equal(resumed.eval_returns, whole.eval_returns)
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for s in (0, 1):
        assert _rows(tmp_path / "part", s, "train") == _rows(tmp_path / "whole", s, "train")


@pytest.mark.slow
def test_seed_in_a_group_follows_the_seed_alone(tmp_path):
    budget = ["eval_every=2048", "log_every=2048", "frames=4096"]
    group = _train(tmp_path / "group", budget + ["seed=0", "seeds=2"])
    alone = _train(tmp_path / "alone", budget + ["seed=1", "seeds=1"])
    for a, b in zip(jax.tree.leaves(group.state.agent), jax.tree.leaves(alone.state.agent),
                    strict=True):
        a, b = np.asarray(a)[1], np.asarray(b)[0]
        assert np.max(np.abs(a - b)) <= 2e-3 * max(1.0, np.max(np.abs(b)))
    np.testing.assert_allclose(group.eval_returns[:, 1], alone.eval_returns[:, 0], rtol=1e-3)


# --- config errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, words", [
    (["algo=ppo", "env=gym/Pendulum-v1"], "is a single host simulator"),
    (["algo=sac", "env=jax/Pendulum"], "is a batched environment"),
    (["algo=ppo", "env=jax/Pendulm"], "jax/Pendulum"),
    (["algo=ppo", "env=jax/Pendulum", "on_policy.num_minibatches=7"], "does not divide"),
    (["algo=ppo", "env=jax/Pendulum", "on_policy.num_envs=0"], "on_policy.num_envs"),
    (["algo=ppo", "env=jax/Pendulum", "on_policy.gae_lambda=1.5"], "gae_lambda"),
    (["algo=ppo", "env=jax/Pendulum", "on_policy.reward_scaling=0"], "reward_scaling"),
    (["algo=ppo", "env=jax/Pendulum", "action_repeat=2"], "action_repeat=1"),
    (["algo=ppo", "env=jax/Pendulum", "off_policy.batch_size=64"], "on_policy.*"),
    (["algo=sac", "env=gym/Pendulum-v1", "on_policy.num_envs=64"], "off_policy.*"),
    (["algo=ppo", "env=jax/Pendulum", "algo.entropy_cost=-1"], "entropy_cost"),
])
def test_on_policy_config_errors_are_one_line(overrides, words):
    with pytest.raises(FluxError) as info:
        resolve(compose(overrides))
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


# --- videos of JAX environments -------------------------------------------------------------------


def test_eval_video_of_a_jax_env_run(tmp_path):
    """`fluxrl eval --video` on a JAX-env run: one mp4 per seed, one frame per step of the
    first deterministic evaluation episode, the same episode as the evaluation's first."""
    import imageio.v3 as iio

    from fluxrl.train.run import evaluate_run, train

    ov = ["algo=ppo", "env=jax/PointReach", "seeds=2", "frames=2048", "eval_every=2048",
          "log_every=2048", "progress=false", "tensorboard=false", "plot=false",
          "checkpoint_every=2048", "on_policy.num_envs=32", "on_policy.unroll_length=16",
          "algo.actor.width=32", "algo.critic.width=32", f"run_dir={tmp_path / 'run'}"]
    train(compose(ov), ov)
    out = evaluate_run(tmp_path / "run", episodes=3, video=True)
    assert len(out["videos"]) == 2
    for i, path in enumerate(out["videos"]):
        frames = iio.imread(path)
        assert frames.shape[0] == int(out["lengths"][i, 0]) and frames.shape[-1] == 3
        assert frames.std() > 1.0


def test_pendulum_frames_are_gymnasiums_renderer_at_the_same_state():
    env = gymnasium.make("Pendulum-v1", render_mode="rgb_array").unwrapped
    env.reset(seed=0)
    env.state, env.last_u = np.array([0.7, -0.2]), None
    want = env.render()
    task = make_jax_env("jax/Pendulum").task
    got = task.render(np.array([[0.7, -0.2], [2.0, 0.0]]), width=want.shape[1],
                      height=want.shape[0])
    np.testing.assert_array_equal(got[0], want)
    assert not np.array_equal(got[0], got[1])
