"""What every registered algorithm must do, whatever its family: these tests are parametrised over
``fluxrl.agents.registry.REGISTRY``, so an algorithm gets them by being registered. Its small
settings come from rules on its config class (tests/agent_helpers.py); what is its own (its loss,
its schedules, its config fields, its paper defaults) is tested in its own file.

- the registry entry and the config errors its config bases share (one-line FluxErrors from
  ``resolve(compose(...))``, before anything compiles), and ``make`` validating on its own;
- acting, sampling and valuing: shapes, the box, randomness; exploration noise where the config
  has ``explore_noise``;
- one update: the state keeps its layout, every parameter tree moves, the metrics are finite
  scalars; terminal transitions do not bootstrap and the others do; every class of generative
  model the config accepts trains;
- ``vmap`` over two seeds, as the trainer runs it: each seed as if alone, conditionals
  kept, no host callbacks;
- the clipped double-Q critic step of ``GenerativeActorCritic.critic_update``, for the agents that
  use it: the target by hand, the critics one ``critic_step`` on it, the target critics its EMA."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from agent_helpers import (
    TINY_ENV,
    assert_trees_close,
    bootstrapped,
    layout,
    online_q,
    random_batch,
    set_q_head,
    tiny_overrides,
    trees_differ,
)

from fluxrl.agents.base import CONTRACTS, OffPolicyAgent, OnPolicyAgent, Rollout, Shapes
from fluxrl.agents.common import GenerativeActorCritic, critic_step, soft_update
from fluxrl.agents.config import (
    FIELD_RULES,
    AlgoConfig,
    CandidateConfig,
    GenerativeConfig,
    PolicyGradientConfig,
)
from fluxrl.agents.registry import REGISTRY, get_algo, make_agent
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.generative import MODELS, model_class

NAMES = list(REGISTRY)
#: settings whose contract this file tests; a new setting needs its own tests here first
TESTED_SETTINGS = ("off_policy", "offline", "on_policy")
#: the config base of each setting's algorithms
CONFIG_BASES = {"off_policy": AlgoConfig, "offline": AlgoConfig, "on_policy": PolicyGradientConfig}
OFF_POLICY = [n for n in NAMES if CONTRACTS[REGISTRY[n].setting] is OffPolicyAgent]
ON_POLICY = [n for n in NAMES if CONTRACTS[REGISTRY[n].setting] is OnPolicyAgent]
GENERATIVE = [n for n in OFF_POLICY if issubclass(REGISTRY[n].config, GenerativeConfig)]
EXPLORING = [n for n in OFF_POLICY
             if "explore_noise" in {f.name for f in dataclasses.fields(REGISTRY[n].config)}]
#: generative models an algorithm refuses (its own file tests the refusal's wording)
REFUSED = {
    "qsm": {"flow", "edm"},  # QSM regresses the prediction on a score: eps-predicting models only
    "idem": {"flow", "edm"},  # iDEM's target is a noise estimate: eps-predicting models only
}
#: algorithms whose ``make`` does not validate its config (resolve does)
MAKE_SKIPS_VALIDATION = {"sac", "td3"}

SHAPES = Shapes(obs_dim=3, act_dim=2)
KEY = jax.random.PRNGKey(0)
N = 32  #: states per batch
K = 5  #: samples per state


# --- building ------------------------------------------------------------------------------------


def every_step(name: str) -> list[str]:
    """Overrides that put every part of the update into update 0: ``policy_delay=1`` where the
    config has one (the other schedules, alpha_every and refresh_every, fire at index 0)."""
    fields = {f.name for f in dataclasses.fields(REGISTRY[name].config)}
    return ["algo.policy_delay=1"] if "policy_delay" in fields else []


@dataclasses.dataclass(frozen=True)
class Built:
    cfg: Any
    agent: Any  #: make_agent's: the trainer's agent, with best-of-N acting where configured
    init: Any  #: jitted
    update: Any  #: jitted


@functools.cache
def built(name: str, *extra: str) -> Built:
    """The tiny agent on SHAPES with every part of the update firing, compiled once per session."""
    cfg = resolve(compose(tiny_overrides(name, *every_step(name), *extra))).algo
    agent = make_agent(cfg, SHAPES)
    return Built(cfg, agent, jax.jit(agent.init), jax.jit(agent.update))


def state_of(name: str, *extra: str) -> Any:
    """The initial state of ``built(name, *extra)``. The variants here (critic_agg, model,
    explore_noise) change what the agent computes, not its parameters, so they reuse the base
    agent's compiled init after checking the layout is the same."""
    base = built(name)
    if extra:
        variant = built(name, *extra)
        assert layout(jax.eval_shape(variant.agent.init, KEY)) == layout(
            jax.eval_shape(base.agent.init, KEY))
    return base.init(KEY)


def finite_scalars(metrics: dict) -> bool:
    return bool(metrics) and all(jnp.shape(v) == () and np.isfinite(float(v))
                                 for v in metrics.values())


# --- the registry and the config -----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_names_its_config_and_a_tested_setting(name):
    info = REGISTRY[name]
    assert info.name == name and get_algo(name) is info
    assert info.setting in TESTED_SETTINGS, f"{name}: no contract tests for {info.setting} yet"
    assert issubclass(info.config, CONFIG_BASES[info.setting]) and info.config().name == name
    env = f"env={TINY_ENV[info.setting]}"
    assert isinstance(resolve(compose([f"algo={name}", env])).algo, info.config)


#: a bad value for every rule in FIELD_RULES
BAD_RULE_VALUES = {"init_alpha": "nan", "policy_delay": "0", "target_noise": "-0.1",
                   "noise_clip": "-0.1", "explore_noise": "-1"}


def test_every_field_rule_has_a_bad_value():
    assert set(BAD_RULE_VALUES) == set(FIELD_RULES)


def shared_bad_values(name: str) -> list[tuple[str, str]]:
    """``(override, words its error must contain)`` for the checks ``name``'s config inherits:
    AlgoConfig's (networks, ensemble, rates, best-of-N, every ``lr_*`` field and every field of
    FIELD_RULES it has), GenerativeConfig's and CandidateConfig's."""
    cls = REGISTRY[name].config
    fields = {f.name for f in dataclasses.fields(cls)}
    nets = [("algo.actor.width=0", "algo.actor.width"), ("algo.critic.depth=0", "algo.critic.depth"),
            ("algo.actor.backbone=resnet", "algo.actor.backbone"), ("algo.critic.act=relux", "relux")]
    rates = [c for f in sorted(f for f in fields if f.startswith("lr_"))
             for c in ((f"algo.{f}=0", f), (f"algo.{f}=nan", f))]
    if issubclass(cls, PolicyGradientConfig):
        return nets + rates + [("algo.clip=1.5", "clip"), ("algo.clip=0", "clip"),
                               ("algo.max_grad_norm=-1", "max_grad_norm"),
                               ("algo.value_coef=nan", "value_coef")]
    cases = [("algo.discount=1.5", "discount"), ("algo.tau=-0.1", "tau"),
             ("algo.num_critics=0", "num_critics"), ("algo.critic_agg=max", "critic_agg"),
             ("algo.best_of_eval=0", "best_of_eval"), ("algo.best_of_act=-2", "best_of_act"),
             *nets, *rates]
    cases += [(f"algo.{f}={BAD_RULE_VALUES[f]}", f) for f in FIELD_RULES if f in fields]
    if issubclass(cls, GenerativeConfig):
        cases += [("algo.diffusion_steps=0", "diffusion_steps"), ("algo.time_dim=63", "even"),
                  ("algo.time_dim=0", "time_dim"), ("algo.obs_encoder_width=0", "obs_encoder_width"),
                  ("algo.obs_encoder_depth=-1", "obs_encoder_depth"),
                  ("algo.fourier_scale=0", "fourier_scale"), ("algo.model=vp-cosin", "vp-cosine"),
                  ("algo.ddpm_variance=bet", "ddpm_variance")]
    if issubclass(cls, CandidateConfig):
        cases += [("algo.critic_block=-1", "critic_block")]
    return cases


@pytest.mark.parametrize("name, override, words", [
    pytest.param(n, ov, w, id=f"{n}-{ov}") for n in NAMES for ov, w in shared_bad_values(n)])
def test_shared_bad_values_are_one_line_flux_errors_before_any_compile(name, override, words):
    compiles = []

    def listen(event: str, duration: float, **kwargs):
        if "compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with pytest.raises(FluxError) as info:
            resolve(compose([f"algo={name}", f"env={TINY_ENV[REGISTRY[name].setting]}", override]))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    msg = str(info.value)
    assert words in msg and "\n" not in msg, msg
    if override.startswith(("algo.best_of_", "algo.num_critics")):
        assert "at least 1" in msg, msg
    assert not compiles, compiles


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(
        n in MAKE_SKIPS_VALIDATION, strict=True,
        reason="make does not call cfg.validate() (resolve does)")) for n in NAMES])
def test_make_validates_a_config_that_skipped_resolve(name):
    algo = resolve(compose(tiny_overrides(name))).algo
    field = "clip" if isinstance(algo, PolicyGradientConfig) else "num_critics"
    with pytest.raises(FluxError, match=field):
        REGISTRY[name].make(dataclasses.replace(algo, **{field: 0}), SHAPES)


# --- acting --------------------------------------------------------------------------------------


def probe(agent: Any, state: Any, obs: jax.Array, key: jax.Array) -> dict:
    """Everything the agent can be asked about ``obs``: both kinds of action, K samples, values."""
    k_act, k_sample = jax.random.split(key)
    out = {"explore": agent.act(state, obs, k_act, False), "eval": agent.act(state, obs, k_act, True)}
    out["value"] = agent.value(state, obs, out["eval"])
    if agent.sample is not None:
        s = agent.sample(state, obs, k_sample, K)
        obs_k = jnp.broadcast_to(obs[:, None], s.shape[:-1] + obs.shape[-1:])
        out.update(samples=s, values_k=agent.value(state, obs_k, s))
    return out


@pytest.mark.parametrize("name", OFF_POLICY)
def test_act_sample_and_value_shapes_box_and_randomness(name):
    """The trainer's agent (best-of-N where configured) on states far outside the unit box:
    actions of both kinds and samples are finite and in [-1, 1]; exploration depends on the key;
    most states' K samples differ; value takes any leading axes."""
    agent, state = built(name).agent, state_of(name)
    obs = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (N, SHAPES.obs_dim))
    run = jax.jit(probe, static_argnums=0)
    out, other = ({k: np.asarray(v) for k, v in run(agent, state, obs, jax.random.PRNGKey(k)).items()}
                  for k in (2, 3))
    for k in ("explore", "eval"):
        assert out[k].shape == (N, SHAPES.act_dim), k
        assert np.all(np.isfinite(out[k])) and np.abs(out[k]).max() <= 1.0, k
    assert not np.allclose(out["explore"], other["explore"])  # exploration draws with its key
    assert out["value"].shape == (N,) and np.all(np.isfinite(out["value"]))
    if agent.sample is None:  # the contract: best-of-N draws act(..., False) instead
        return
    s = out["samples"]
    assert s.shape == (N, K, SHAPES.act_dim) and np.all(np.isfinite(s)) and np.abs(s).max() <= 1.0
    # (an untrained chain may put all K samples of a state on one corner of the box)
    assert np.mean(np.ptp(s, axis=1).max(-1) > 0) > 0.5
    assert out["values_k"].shape == (N, K) and np.all(np.isfinite(out["values_k"]))
    if getattr(agent.value, "__func__", None) is GenerativeActorCritic.value:
        # the shared generative value also broadcasts one state over its samples
        np.testing.assert_allclose(np.asarray(agent.value(state, obs[:, None], jnp.asarray(s))),
                                   out["values_k"], rtol=1e-5, atol=1e-6)


def both_actions(agent: Any, state: Any, obs: jax.Array, key: jax.Array) -> tuple:
    """``(evaluation, exploration)`` actions with the same key."""
    return agent.act(state, obs, key, True), agent.act(state, obs, key, False)


@pytest.mark.parametrize("name", EXPLORING)
def test_exploration_noise_is_added_to_the_evaluation_action_and_clipped(name):
    """The agent itself (no best-of-N): with the same key, exploring with explore_noise=0 is the
    evaluation action, and with 0.5 it is that action moved and clipped to the box."""
    state = state_of(name)
    obs = jax.random.normal(jax.random.PRNGKey(1), (256, SHAPES.obs_dim))
    for noise in (0.0, 0.5):
        agent = REGISTRY[name].make(built(name, f"algo.explore_noise={noise}").cfg, SHAPES)
        ev, ex = (np.asarray(a) for a in jax.jit(both_actions, static_argnums=0)(agent, state, obs, KEY))
        assert ev.shape == ex.shape == (256, SHAPES.act_dim)
        assert np.abs(ev).max() <= 1.0 and np.abs(ex).max() <= 1.0
        if noise == 0.0:
            np.testing.assert_array_equal(ex, ev)
        else:
            assert np.abs(ex - ev).max() > 0.25 and np.mean(np.abs(ex) == 1.0) > 0.01


# --- one update ----------------------------------------------------------------------------------


def parameter_trees(state: Any) -> list[str]:
    """The state's fields that hold parameters (mappings), e.g. actor, critic, target."""
    return [f.name for f in dataclasses.fields(state) if isinstance(getattr(state, f.name), Mapping)]


@pytest.mark.parametrize("name", OFF_POLICY)
def test_update_keeps_the_layout_moves_every_parameter_tree_and_logs_finite_scalars(name):
    b = built(name)
    state = state_of(name)
    trees = parameter_trees(state)
    assert {"actor", "critic"} <= set(trees), trees
    new, metrics = b.update(state, random_batch(SHAPES, N), jax.random.PRNGKey(1), jnp.int32(0))
    assert layout(new) == layout(state)  # a scan carry: the trainer loops over updates
    assert finite_scalars(metrics), metrics
    for tree in trees:
        assert trees_differ(getattr(new, tree), getattr(state, tree)), tree
    newer, metrics = b.update(new, random_batch(SHAPES, N, seed=2), jax.random.PRNGKey(2),
                              jnp.int32(1))
    assert layout(newer) == layout(state) and finite_scalars(metrics), metrics
    assert trees_differ(newer.critic, new.critic)


@pytest.mark.parametrize("name", OFF_POLICY)
def test_terminal_transitions_do_not_bootstrap_and_the_others_do(name):
    """With every transition terminated, other next states leave the critic step unchanged to the
    bit; with none terminated (a truncation looks the same), they change it."""
    b = built(name)
    state = state_of(name)
    batch = random_batch(SHAPES, N)
    moved = {**batch, "next_obs": batch["next_obs"] + 1.0}
    for done in (1.0, 0.0):
        (new_a, m_a), (new_b, m_b) = (
            b.update(state, {**bt, "terminated": jnp.full((N,), done, jnp.float32)}, jax.random.PRNGKey(1),
                     jnp.int32(0)) for bt in (batch, moved))
        if done:
            assert not trees_differ(new_a.critic, new_b.critic)
            assert float(m_a["critic_loss"]) == float(m_b["critic_loss"])
        else:
            assert trees_differ(new_a.critic, new_b.critic)
            assert float(m_a["critic_loss"]) != float(m_b["critic_loss"])


#: one model of each class (the others differ from it by their noise schedule only)
MODEL_CLASSES = list({model_class(m): m for m in reversed(MODELS)}.values())[::-1]


@pytest.mark.parametrize("name, model", [
    pytest.param(n, m, id=f"{n}-{m}") for n in GENERATIVE for m in MODEL_CLASSES
    if model_class(m) is not model_class(REGISTRY[n].config.model)])
def test_every_class_of_generative_model_the_config_accepts_trains(name, model):
    """The default model trains in the tests above; one model of each other class either is
    refused in one line (REFUSED) or takes an update with finite metrics that moves the actor."""
    if model in REFUSED.get(name, ()):
        with pytest.raises(FluxError) as info:
            built(name, f"algo.model={model}")
        assert model in str(info.value) and "\n" not in str(info.value)
        return
    b = built(name, f"algo.model={model}")
    state = state_of(name, f"algo.model={model}")
    new, metrics = b.update(state, random_batch(SHAPES, N), jax.random.PRNGKey(1), jnp.int32(0))
    assert finite_scalars(metrics), metrics
    assert trees_differ(new.actor, state.actor)


# --- seeds under vmap ----------------------------------------------------------------------------


def stack(trees: list) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def seed(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda x: x[i], tree)


@pytest.mark.parametrize("name", OFF_POLICY)
def test_jit_vmap_over_two_seeds_runs_each_seed_as_if_alone(name):
    """The trainer's programs: ``vmap(init)`` over seed keys and ``jit(vmap(update))`` with
    per-seed batches and a shared update index. Each seed's state and metrics are those of the
    same seed run alone; the seeds differ; the update keeps its conditionals (they branch on the
    shared index, so vmap must not turn them into both-branch selects) and calls no host
    callback."""
    b = built(name)
    agent = b.agent
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    # the seeds' states as the compiled single init gives them (jit(vmap(init)) compiles for
    # seconds); vmap(init) traced to the same layout
    states = stack([b.init(k) for k in keys])
    assert layout(jax.eval_shape(jax.vmap(lambda k: agent.init(k)), keys)) == layout(states)
    alone = seed(states, 1)
    assert trees_differ(seed(states, 0).actor, alone.actor)

    batches = stack([random_batch(SHAPES, N, seed=s) for s in (1, 2)])
    ukeys = jax.random.split(jax.random.PRNGKey(4), 2)
    index = jnp.int32(0)
    traced = jax.jit(jax.vmap(agent.update, in_axes=(0, 0, 0, None))).trace(
        states, batches, ukeys, index)
    new, metrics = traced.lower().compile()(states, batches, ukeys, index)
    for m in metrics.values():
        assert m.shape == (2,) and np.all(np.isfinite(np.asarray(m)))
    assert trees_differ(seed(new, 0).actor, seed(new, 1).actor)
    alone_new, alone_metrics = b.update(alone, seed(batches, 1), ukeys[1], index)
    for k, m in alone_metrics.items():
        np.testing.assert_allclose(float(metrics[k][1]), float(m), rtol=1e-4, atol=1e-6, err_msg=k)
    assert_trees_close(seed(new, 1), alone_new, rtol=1e-3, atol=1e-5)

    vmapped = str(traced.jaxpr)
    single = str(b.update.trace(alone, seed(batches, 1), ukeys[1], index).jaxpr)
    assert vmapped.count(" cond[") == single.count(" cond[")
    assert "callback" not in vmapped


# --- the shared clipped double-Q critic step -----------------------------------------------------


@functools.cache
def uses_shared_critic_step(name: str) -> bool:
    """Whether ``name``'s update calls ``GenerativeActorCritic.critic_update`` (traced, not run)."""
    agent, calls = built(name).agent, []
    original = GenerativeActorCritic.critic_update

    def spy(self, *args, **kwargs):
        calls.append(True)
        return original(self, *args, **kwargs)

    GenerativeActorCritic.critic_update = spy
    try:
        # a fresh callable: jax caches the traces of the agent's own update
        jax.eval_shape(lambda *args: agent.update(*args), jax.eval_shape(agent.init, KEY),
                       random_batch(SHAPES, N), KEY, jnp.int32(0))
    finally:
        GenerativeActorCritic.critic_update = original
    return bool(calls)


@pytest.mark.parametrize("agg, bootstrap", [("min", -2.0), ("mean", 0.5)])
@pytest.mark.parametrize("name", OFF_POLICY)
def test_shared_critic_step_is_clipped_double_q_and_stops_at_termination(name, agg, bootstrap):
    """Target critics set to the constants 3 and -2 (zero last-layer kernel): whatever action the
    actor samples at s', the target is r + gamma (1 - terminated) agg(3, -2). The update's critic
    loss is the online critics' squared error against exactly that, its new critics are one
    ``critic_step`` on it (nothing else, no actor loss, moves them) and its target critics their
    EMA."""
    if not uses_shared_critic_step(name):
        pytest.skip(f"{name} has its own critic step, tested in its own file")
    extra = () if built(name).cfg.critic_agg == agg else (f"algo.critic_agg={agg}",)
    b = built(name, *extra)
    cfg = b.cfg
    state = state_of(name, *extra)
    state = state.replace(target=set_q_head(state.target, [3.0, -2.0]))
    batch = random_batch(SHAPES, N)
    new, metrics = b.update(state, batch, jax.random.PRNGKey(2), jnp.int32(0))

    target = bootstrapped(batch, bootstrap, cfg.discount)
    q = online_q(cfg, state.critic, batch["obs"], batch["action"])
    np.testing.assert_allclose(float(metrics["critic_loss"]), np.mean((q - target) ** 2), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["q_mean"]), q.mean(), rtol=1e-5, atol=1e-6)
    assert 0.0 < float(metrics["next_action_abs"]) <= 1.0

    from fluxrl.nets.backbones import backbone_from
    from fluxrl.nets.critics import QEnsemble

    critic = QEnsemble(backbone_from(cfg.critic), cfg.num_critics)
    tx = optax.flatten(optax.adam(cfg.lr_critic))
    pc, _, loss, _ = jax.jit(lambda p, o, bt, y: critic_step(critic, p, o, tx, bt, y))(
        state.critic, state.critic_opt, batch, jnp.asarray(target, jnp.float32))
    np.testing.assert_allclose(float(metrics["critic_loss"]), float(loss), rtol=1e-5)
    assert_trees_close(new.critic, pc, rtol=1e-5, atol=1e-7)
    assert_trees_close(new.target, soft_update(state.target, pc, cfg.tau), rtol=1e-5, atol=1e-7)


# --- the on-policy contract ----------------------------------------------------------------------


def random_minibatch(agent: Any, state: Any, n: int = N, seed: int = 1) -> Rollout:
    """A minibatch as the on-policy program builds it: the agent's own actions and extras on
    normal observations, normal advantages and targets."""
    rng = np.random.default_rng(seed)
    obs = jnp.asarray(rng.normal(size=(n, SHAPES.obs_dim)), jnp.float32)
    action, extras = agent.act(state, obs, jax.random.PRNGKey(seed), False)
    z = jnp.zeros(n)
    adv, target = (jnp.asarray(rng.normal(size=n), jnp.float32) for _ in range(2))
    return Rollout(obs, action, z, z, z, extras, adv, target)


@pytest.mark.parametrize("name", ON_POLICY)
def test_on_policy_act_value_and_update(name):
    """Acting: actions in the box, extras of one row per state, random, reproducible by key;
    the value is one number per state; one update on a minibatch moves every parameter tree and
    logs finite scalars; vmapped over two seeds, each seed is as if alone."""
    cfg = resolve(compose(tiny_overrides(name))).algo
    agent = make_agent(cfg, SHAPES)
    state = jax.jit(agent.init)(KEY)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(N, SHAPES.obs_dim)), jnp.float32)
    a1, extras = agent.act(state, obs, jax.random.PRNGKey(1), False)
    a2, _ = agent.act(state, obs, jax.random.PRNGKey(2), False)
    d1, _ = agent.act(state, obs, jax.random.PRNGKey(1), True)
    d2, _ = agent.act(state, obs, jax.random.PRNGKey(1), True)
    assert a1.shape == (N, SHAPES.act_dim) and np.all(np.abs(np.asarray(a1)) <= 1.0)
    assert all(v.shape[0] == N for v in jax.tree.leaves(extras))
    # evaluation actions follow from the key (a mode for PPO, a sample for FPO, as its authors)
    assert not np.allclose(a1, a2) and np.array_equal(d1, d2)
    assert agent.value(state, obs).shape == (N,)

    update = jax.jit(agent.update)
    mb = random_minibatch(agent, state)
    new, metrics = update(state, mb, KEY, jnp.int32(0))
    assert layout(new) == layout(state) and finite_scalars(metrics)
    for field in dataclasses.fields(state):
        if isinstance(getattr(state, field.name), Mapping):
            assert trees_differ(getattr(new, field.name), getattr(state, field.name)), field.name

    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    states = jax.vmap(agent.init)(keys)
    mbs = stack([random_minibatch(agent, seed(states, s), seed=s) for s in (0, 1)])
    ukeys = jax.random.split(jax.random.PRNGKey(4), 2)
    both, both_metrics = jax.jit(jax.vmap(agent.update, in_axes=(0, 0, 0, None)))(
        states, mbs, ukeys, jnp.int32(0))
    alone, alone_metrics = update(seed(states, 1), seed(mbs, 1), ukeys[1], jnp.int32(0))
    assert_trees_close(seed(both, 1), alone, rtol=1e-4, atol=1e-6)
    for k, m in alone_metrics.items():
        np.testing.assert_allclose(float(both_metrics[k][1]), float(m), rtol=1e-4, atol=1e-6,
                                   err_msg=k)
