"""Best-of-N as a switch for any agent (``algo.best_of_eval``, ``algo.best_of_act``): the picked
action is the candidate the agent's critics value most, for a Gaussian and a diffusion policy.
Bad ``best_of_eval`` / ``best_of_act`` values are tested for every agent in
test_agent_contract.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agent_helpers import PENDULUM, tiny_config

from fluxrl.agents.registry import make_agent
from fluxrl.config import compose, resolve
from fluxrl.errors import FluxError
from fluxrl.guidance.best_of_n import with_best_of_n


@pytest.fixture(scope="module")
def spec():
    return PENDULUM


def build(algo: str, spec, n_eval: int, n_act: int):
    cfg = tiny_config(algo, f"algo.best_of_eval={n_eval}", f"algo.best_of_act={n_act}")
    return cfg.algo, make_agent(cfg.algo, spec)


@pytest.mark.parametrize("algo", ["sac", "qsm"])
def test_evaluation_picks_the_highest_valued_policy_sample(algo, spec):
    _, agent = build(algo, spec, 8, 1)
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, spec.obs_dim)), jnp.float32)
    key = jax.random.PRNGKey(3)
    picked = np.asarray(agent.act(state, obs, key, True))
    cands = agent.sample(state, obs, key, 8)  # the same candidates the wrapper drew
    assert cands.shape == (5, 8, spec.act_dim)
    values = np.asarray(agent.value(state, jnp.broadcast_to(obs[:, None], (5, 8, spec.obs_dim)),
                                    cands))
    want = np.asarray(cands)[np.arange(5), values.argmax(1)]
    np.testing.assert_array_equal(picked, want)
    assert len({tuple(np.round(c, 6)) for c in np.asarray(cands)[0]}) > 1  # candidates differ


@pytest.mark.parametrize("algo", ["sac", "td3", "qsm"])
def test_acting_picks_among_exploratory_actions(algo, spec):
    _, agent = build(algo, spec, 1, 6)
    plain = build(algo, spec, 1, 1)[1]
    state = agent.init(jax.random.PRNGKey(0))
    obs = jnp.asarray(np.random.default_rng(1).normal(size=(4, spec.obs_dim)), jnp.float32)
    key = jax.random.PRNGKey(7)
    picked = np.asarray(agent.act(state, obs, key, False))
    keys = jax.random.split(key, 6)  # the wrapper's candidates: one exploratory action per key
    cands = np.stack([np.asarray(plain.act(state, obs, k, False)) for k in keys], 1)
    values = np.asarray(agent.value(state, jnp.broadcast_to(obs[:, None], (4, 6, spec.obs_dim)),
                                    jnp.asarray(cands)))
    np.testing.assert_allclose(picked, cands[np.arange(4), values.argmax(1)], atol=1e-6)
    assert np.all(np.abs(picked) <= 1.0)


def test_best_of_one_is_the_agent_itself(spec):
    _, agent = build("sac", spec, 1, 1)
    assert with_best_of_n(agent, 1, 1) is agent


def test_qsm_evaluates_with_the_best_of_ten_by_default():
    cfg = resolve(compose(["algo=qsm"]))
    assert cfg.algo.best_of_eval == 10 and cfg.algo.best_of_act == 1
    sac = resolve(compose(["algo=sac"]))
    assert sac.algo.best_of_eval == 1 and sac.algo.best_of_act == 1


def test_wrapper_rejects_bad_n(spec):
    _, agent = build("sac", spec, 1, 1)
    with pytest.raises(FluxError, match="n >= 1"):
        with_best_of_n(dataclasses.replace(agent), 0, 1)
