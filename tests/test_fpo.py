"""FPO: the CFM losses by hand, the ratio at the acting policy, the direction of an update, and
learning a small task."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import point_reach_returns

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
    returns = point_reach_returns("fpo", tmp_path / "run", "algo.lr_actor=3e-4")
    assert np.all(returns[-1] > -15.0), returns


# --- FPO++ (algo=fpo_pp) ------------------------------------------------------------------------

SMALL_PP = ["algo=fpo_pp", "env=jax/Pendulum", "algo.actor.width=32", "algo.critic.width=32"]


def _pp(*extra: str):
    cfg = resolve(compose(SMALL_PP + list(extra))).algo
    agent = make_agent(cfg, SHAPES)
    return cfg, agent, agent.init(jax.random.PRNGKey(0))


def _zero_out(params: dict, bias: float = 0.0) -> dict:
    """The velocity network with its output layer's kernel zeroed and its bias set to ``bias``."""
    out = params["out"]
    return {**params, "out": {"kernel": jnp.zeros_like(out["kernel"]),
                              "bias": jnp.full_like(out["bias"], bias)}}


def fpo_pp_loss_by_hand(old, new, adv, clip=0.05, cfm_clamp=20.0, negative=20.0, log_clamp=10.0,
                        mode="aspo", per_sample=True):
    """fpo-control fpo.py update() in numpy: loss clamps, per-pair log-ratios, the clamp, and
    the trust region; returns (policy loss, mean ratio)."""
    a = adv[:, None]
    if cfm_clamp:
        old, new = np.minimum(old, cfm_clamp), np.minimum(new, cfm_clamp)
    if negative:
        new = np.where(a < 0, np.minimum(new, negative), new)
    log_ratio = old - new if per_sample else (old.mean(1) - new.mean(1))
    a = a if per_sample else adv
    if log_clamp:
        log_ratio = np.minimum(log_ratio, log_clamp)
    r = np.exp(log_ratio)
    ppo = np.maximum(-a * r, -a * np.clip(r, 1 - clip, 1 + clip))
    spo = -(r * a - np.abs(a) / (2 * clip) * (r - 1) ** 2)
    loss = {"ppo": ppo, "spo": spo, "aspo": np.where(a > 0, ppo, spo)}[mode]
    return loss.mean(), r.mean()


def _known_batch(n: int = 64, k: int = 16, seed: int = 0):
    """Observations, actions in the box, pairs with eps large enough for losses above 20, and
    advantages of both signs."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, SHAPES.obs_dim))
    action = rng.uniform(-1, 1, (n, SHAPES.act_dim))
    eps = 3.0 * rng.normal(size=(n, k, SHAPES.act_dim))
    t = rng.uniform(0.005, 0.995, (n, k))
    adv = rng.normal(size=n)
    return obs, action, eps, t, adv


def _update_metrics(agent, state, obs, action, eps, t, old, adv):
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    z = jnp.zeros(obs.shape[0])
    batch = Rollout(f32(obs), f32(action), z, z, z, {"eps": f32(eps), "t": f32(t), "cfm": f32(old)},
                    f32(adv), z)
    return agent.update(state, batch, jax.random.PRNGKey(3), jnp.int32(0))


@pytest.mark.parametrize("extra, by_hand", [
    ((), {}),
    (("algo.cfm_clamp=0",), {"cfm_clamp": 0.0}),  # only the negative-advantage clamp is left
    (("algo.log_ratio_clamp=0", "algo.trust_region=ppo"), {"log_clamp": 0.0, "mode": "ppo"}),
    (("algo.trust_region=spo",), {"mode": "spo"}),
    (("algo.ratio_mode=mean",), {"per_sample": False}),
])
def test_fpo_pp_policy_loss_on_known_losses_matches_numpy(extra, by_hand):
    """A zero velocity makes the new CFM loss |eps - a|^2 / sqrt(d) by hand; stored old losses
    around it (some log-ratios beyond +-10, some losses above 20) and advantages of both signs
    give fpo-control's loss in numpy."""
    cfg, agent, state = _pp("algo.normalize_advantage=false", *extra)
    state = state.replace(actor=_zero_out(state.actor))
    obs, action, eps, t, adv = _known_batch()
    new = ((eps - action[:, None]) ** 2).sum(-1) / np.sqrt(SHAPES.act_dim)
    rng = np.random.default_rng(1)
    old = new + rng.uniform(-1.0, 1.0, new.shape)
    old[::5, 0] += 12.0  # log-ratios above the clamp
    old[1::5, 1] -= 12.0
    old[2::7, 2] = 35.0  # an old loss above 20
    assert (new > 20).mean() > 0.05 and (new < 20).mean() > 0.5
    _, m = _update_metrics(agent, state, obs, action, eps, t, old, adv)
    want_loss, want_ratio = fpo_pp_loss_by_hand(old, new, adv, **by_hand)
    np.testing.assert_allclose(float(m["ratio_mean"]), want_ratio, rtol=2e-4)
    np.testing.assert_allclose(float(m["policy_loss"]), want_loss, rtol=2e-4)


def test_per_sample_ratio_is_the_mean_of_the_pair_ratios_by_hand():
    """Offsets d_k between stored and new losses: per_sample averages exp(d_k), mean mode takes
    exp(mean_k d_k); they differ (Jensen) and each matches its formula."""
    obs, action, eps, t, adv = _known_batch()
    eps = eps / 3.0  # losses below every clamp
    new = ((eps - action[:, None]) ** 2).sum(-1) / np.sqrt(SHAPES.act_dim)
    d = np.random.default_rng(2).uniform(-2.0, 2.0, new.shape)
    ratios = {}
    for mode in ("per_sample", "mean"):
        _, agent, state = _pp(f"algo.ratio_mode={mode}")
        state = state.replace(actor=_zero_out(state.actor))
        _, m = _update_metrics(agent, state, obs, action, eps, t, new + d, adv)
        ratios[mode] = float(m["ratio_mean"])
    np.testing.assert_allclose(ratios["per_sample"], np.exp(d).mean(), rtol=1e-5)
    np.testing.assert_allclose(ratios["mean"], np.exp(d.mean(1)).mean(), rtol=1e-5)
    assert ratios["per_sample"] > ratios["mean"] * 1.2


def test_log_ratio_clamp_is_straight_through():
    """Clamped in value, the gradient of the unclamped log-ratio; a hard minimum would stop it."""
    from fluxrl.agents.policy_gradient.fpo import clamp_ste

    x = jnp.array([-3.0, 9.0, 10.5, 40.0])
    np.testing.assert_array_equal(clamp_ste(x, 10.0), [-3.0, 9.0, 10.0, 10.0])
    w = jnp.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(jax.grad(lambda v: (clamp_ste(v, 10.0) * w).sum())(x), w)
    np.testing.assert_allclose(jax.grad(lambda v: jnp.exp(clamp_ste(v, 10.0)).sum())(x),
                               np.exp(np.minimum(np.asarray(x), 10.0)), rtol=1e-6)
    # in the agent: every log-ratio above the clamp and A < 0 (SPO's penalty): the policy moves
    obs, action, eps, t, _ = _known_batch()
    _, agent, state = _pp("algo.cfm_clamp=0", "algo.cfm_clamp_negative=0",
                          "algo.normalize_advantage=false", "algo.weight_decay=0")
    new = np.asarray(_cfm(state, obs, action, eps, t))
    moved, m = _update_metrics(agent, state, obs, action, eps, t, new + 15.0, -np.ones(64))
    assert float(m["ratio_mean"]) == pytest.approx(np.exp(10.0), rel=1e-5)
    assert max(float(jnp.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(moved.actor), jax.tree.leaves(state.actor), strict=True)) > 0


def _cfm(state, obs, action, eps, t):
    from fluxrl.agents.policy_gradient.fpo import cfm_losses, flow_policy

    cfg = resolve(compose(SMALL_PP)).algo
    model, _, velocity = flow_policy(cfg, SHAPES.act_dim)
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return cfm_losses(model, velocity, state.actor, f32(obs), f32(action), f32(eps), f32(t),
                      cfg.cfm_loss)


def test_cfm_clamps_cap_old_and_new_losses_and_the_negative_advantage_one():
    """Old and new losses above 20 count as 20; with only the negative clamp, a new loss above
    20 is capped where A < 0 and not where A > 0."""
    obs, action, eps, t, _ = _known_batch()
    new = ((eps - action[:, None]) ** 2).sum(-1) / np.sqrt(SHAPES.act_dim)
    old = np.full_like(new, 30.0)
    adv = np.where(np.arange(64) % 2, 1.0, -1.0)
    for extra, want_new in ((("algo.cfm_clamp=20",), np.minimum(new, 20.0)),
                            (("algo.cfm_clamp=0",),
                             np.where(adv[:, None] < 0, np.minimum(new, 20.0), new))):
        _, agent, state = _pp("algo.normalize_advantage=false", "algo.log_ratio_clamp=0", *extra)
        state = state.replace(actor=_zero_out(state.actor))
        _, m = _update_metrics(agent, state, obs, action, eps, t, old, adv)
        want_old = 20.0 if extra == ("algo.cfm_clamp=20",) else 30.0
        np.testing.assert_allclose(float(m["cfm_loss"]), want_new.mean(), rtol=1e-5)
        np.testing.assert_allclose(float(m["ratio_mean"]), np.exp(want_old - want_new).mean(),
                                   rtol=1e-4)


def test_aspo_is_ppo_for_positive_and_spo_for_negative_advantages():
    from fluxrl.agents.policy_gradient.fpo import surrogate

    r = np.array([0.5, 0.97, 1.0, 1.03, 1.5, 3.0], np.float32)
    for a in (1.7, -1.7):
        adv = np.full_like(r, a)
        loss, frac = surrogate(jnp.asarray(r), jnp.asarray(adv), 0.05, "aspo")
        ppo = -np.minimum(r * a, np.clip(r, 0.95, 1.05) * a).mean()
        spo = -(r * a - abs(a) / 0.1 * (r - 1) ** 2).mean()
        np.testing.assert_allclose(float(loss), ppo if a > 0 else spo, rtol=1e-6)
        assert float(frac) == pytest.approx(3 / 6)
    # SPO penalises a negative-advantage ratio far from 1 where PPO's clip would stop at -A (1 - eps)
    assert float(surrogate(jnp.array([0.2]), jnp.array([-1.0]), 0.05, "aspo")[0]) > 1.0


def test_ema_copies_the_policy_in_warm_up_then_averages_once_per_block():
    _, agent, state = _pp("algo.ema_warmup=1", "algo.ema_every=4")
    zeros = jax.tree.map(jnp.zeros_like, state.actor)
    obs, action, eps, t, adv = _known_batch()
    new = np.asarray(_cfm(state, obs, action, eps, t))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    z = jnp.zeros(64)
    batch = Rollout(f32(obs), f32(action), z, z, z, {"eps": f32(eps), "t": f32(t), "cfm": f32(new)},
                    f32(adv), z)
    for index, want in ((0, "copy"), (3, "copy"), (4, "keep"), (6, "keep"), (7, "average")):
        out, _ = agent.update(state.replace(ema=zeros), batch, jax.random.PRNGKey(3),
                              jnp.int32(index))
        for e, p in zip(jax.tree.leaves(out.ema), jax.tree.leaves(out.actor), strict=True):
            expect = {"copy": p, "keep": 0.0 * p, "average": 0.05 * p}[want]
            np.testing.assert_allclose(e, expect, rtol=1e-5, atol=1e-8, err_msg=f"{index}")
        assert not np.allclose(out.actor["out"]["bias"], 0.0)


def test_evaluation_acts_with_the_ema_from_zero_noise():
    """Euler from x_1 = 0 with a constant velocity v ends at -v, whatever the key; evaluation
    uses the EMA's parameters, exploration the policy's."""
    cfg, agent, state = _pp()
    state = state.replace(ema=_zero_out(state.actor, bias=0.3))
    obs = _obs()
    a1, ex = agent.act(state, obs, jax.random.PRNGKey(1), True)
    a2, _ = agent.act(state, obs, jax.random.PRNGKey(2), True)
    assert ex == {}
    np.testing.assert_allclose(a1, np.full((64, 2), -0.3 * cfg.output_scale), rtol=1e-5)
    np.testing.assert_array_equal(a1, a2)
    online, _ = agent.act(state.replace(ema=state.actor), obs, jax.random.PRNGKey(1), True)
    assert np.abs(np.asarray(online) + 0.3).max() > 0.05
    explore, ex = agent.act(state, obs, jax.random.PRNGKey(1), False)
    assert np.asarray(explore).std() > 0.1 and ex["cfm"].shape == (64, 16)
    assert float(ex["t"].min()) >= 0.005 and float(ex["t"].max()) <= 0.995


def test_plain_fpo_keeps_its_state_and_fpo_pp_the_ema():
    from fluxrl.agents.common import PGState
    from fluxrl.agents.policy_gradient.fpo import EMAState

    assert type(_agent()[2]) is PGState and isinstance(_pp()[2], EMAState)


@pytest.mark.parametrize("override, words", [
    ("algo.ratio_mode=median", "ratio_mode"), ("algo.trust_region=trpo", "trust_region"),
    ("algo.cfm_loss=x0", "cfm_loss"), ("algo.ema=1", "ema"), ("algo.ema_every=0", "ema_every"),
    ("algo.log_ratio_clamp=-1", "log_ratio_clamp"), ("algo.cfm_clamp=nan", "cfm_clamp"),
    ("algo.cfm_t_margin=0.5", "cfm_t_margin"), ("algo.action_noise=-0.1", "action_noise"),
])
def test_fpo_pp_bad_values_are_one_line_errors(override, words):
    from fluxrl.errors import FluxError

    with pytest.raises(FluxError) as info:
        resolve(compose(SMALL_PP + [override]))
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "FPO++ at its fpo-control defaults does not learn PointReach in 100K steps: final evaluations "
    "-51.6 / -35.8 (clean CI), -32.8 / -39.4 (64 Euler steps, loaded machine), -32.2 / -42.9 "
    "(10 steps), training returns flat at -40 to -50; ASPO with output_scale 1.0 stalls it "
    "(trust_region=ppo output_scale=0.25 on the rest of FPO++: -7.5 / -9.6), fpo-control's 16 "
    "epochs do not help (-30.2 / -38.0)"))
def test_fpo_pp_learns_point_reach(tmp_path):
    """FPO's budget and sizes (100,352 env steps per seed, 2 seeds, 2 x 64 networks, actor lr
    3e-4) with FPO++'s defaults otherwise, 10 Euler steps for speed (64 learn no better), and the
    EMA warmed up after 10 of the 49 iterations so that the evaluations use it; both seeds must
    finish above -15 (random about -35)."""
    from fluxrl.train.run import train

    ov = ["algo=fpo_pp", "env=jax/PointReach", "seeds=2", "frames=100000", "eval_every=25000",
          "log_every=25000", "progress=false", "tensorboard=false", "plot=false",
          "checkpoint_every=0", "on_policy.num_envs=64", "on_policy.unroll_length=32",
          "algo.actor.width=64", "algo.critic.width=64", "algo.actor.depth=2",
          "algo.critic.depth=2", "algo.lr_actor=3e-4", "algo.ema_warmup=10",
          "algo.flow_steps=10", f"run_dir={tmp_path / 'run'}"]
    result = train(compose(ov), ov)
    assert np.all(result.eval_returns[-1] > -15.0), result.eval_returns


@pytest.mark.slow
def test_fpo_pp_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """The EMA is checkpointed with the rest of the state: 4 iterations in one go, or 2 then 2
    after a resume, give the same evaluations and the same final state (the EMA averaging from
    the second iteration on, one EMA step per iteration of 4 x 4 updates)."""
    from fluxrl.train.run import train

    base = ["algo=fpo_pp", "env=jax/PointReach", "seeds=2", "eval_every=512", "log_every=512",
            "progress=false", "tensorboard=false", "plot=false", "checkpoint_every=0",
            "on_policy.num_envs=16", "on_policy.unroll_length=16", "algo.actor.width=16",
            "algo.critic.width=16", "algo.flow_steps=4", "algo.num_mc=4", "algo.ema_warmup=1"]
    whole = base + ["frames=1024", f"run_dir={tmp_path / 'whole'}"]
    whole = train(compose(whole), whole)
    part = base + ["frames=512", f"run_dir={tmp_path / 'part'}"]
    train(compose(part), part)
    ov = ["resume=" + str(tmp_path / "part"), "frames=1024"]
    resumed = train(compose(ov), ov)
    np.testing.assert_array_equal(resumed.eval_returns, whole.eval_returns)
    agent = resumed.state.agent
    assert not np.array_equal(agent.ema["out"]["bias"], agent.actor["out"]["bias"])
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
