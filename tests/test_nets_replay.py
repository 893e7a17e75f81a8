"""Backbones, Q ensembles and aggregation, and the packed device replay buffer."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fluxrl.errors import FluxError
from fluxrl.nets.backbones import BACKBONES, make_backbone
from fluxrl.nets.critics import QEnsemble, aggregate
from fluxrl.train.replay import replay_add, replay_init, replay_sample


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


# --- backbones --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "simba", "bronet"])
def test_backbone_shapes_and_init_keys(name):
    net = make_backbone(name, width=16, depth=2, act="elu", layer_norm=False)
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
    p0 = net.init(jax.random.PRNGKey(0), x)
    p1 = net.init(jax.random.PRNGKey(1), x)
    y = net.apply(p0, x)
    assert y.shape == (5, 16) and y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))
    assert not leaves_equal(p0, p1)
    assert not np.allclose(y, net.apply(p1, x))
    assert leaves_equal(p0, net.init(jax.random.PRNGKey(0), x))  # same key, same params
    # unbatched and extra leading axes work too
    assert net.apply(p0, x[0]).shape == (16,)
    assert net.apply(p0, x.reshape(1, 5, 7)).shape == (1, 5, 16)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_depth_adds_parameters(name):
    x = jnp.ones((2, 3))
    sizes = []
    for depth in (1, 3):
        params = make_backbone(name, 8, depth, "relu", False).init(jax.random.PRNGKey(0), x)
        sizes.append(sum(p.size for p in jax.tree.leaves(params)))
    assert sizes[1] > sizes[0]


def test_mlp_layer_norm_flag():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3))
    plain = make_backbone("mlp", 8, 2, "relu", False).init(jax.random.PRNGKey(0), x)
    normed = make_backbone("mlp", 8, 2, "relu", True).init(jax.random.PRNGKey(0), x)
    assert not any("LayerNorm" in k for k in plain["params"])
    assert sum("LayerNorm" in k for k in normed["params"]) == 2


def test_make_backbone_rejects_unknown_names():
    with pytest.raises(FluxError, match="mlp"):
        make_backbone("mpl", 8, 2, "relu", False)
    with pytest.raises(FluxError, match="relu"):
        make_backbone("mlp", 8, 2, "rleu", False)


# --- Q ensembles ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
def test_q_ensemble_shape_and_distinct_members(n):
    q = QEnsemble(make_backbone("mlp", 16, 2, "relu", False), num=n)
    obs = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    act = jax.random.uniform(jax.random.PRNGKey(1), (6, 2), minval=-1, maxval=1)
    params = q.init(jax.random.PRNGKey(2), obs, act)
    out = q.apply(params, obs, act)
    assert out.shape == (n, 6)
    leaves = jax.tree.leaves(params)
    assert len(leaves) == 6  # 2 hidden layers + head, kernel and bias each: one stacked set
    assert all(leaf.shape[0] == n for leaf in leaves), "every member parameter is stacked"
    for i in range(n):
        for j in range(i + 1, n):
            assert not np.allclose(out[i], out[j]), f"members {i} and {j} coincide"
            assert all(not np.allclose(leaf[i], leaf[j]) for leaf in leaves if leaf.ndim == 3)


def test_q_ensemble_depends_on_action():
    q = QEnsemble(make_backbone("mlp", 16, 1, "tanh", False), num=2)
    obs = jnp.ones((3, 4))
    params = q.init(jax.random.PRNGKey(0), obs, jnp.zeros((3, 2)))
    assert not np.allclose(q.apply(params, obs, jnp.zeros((3, 2))),
                           q.apply(params, obs, jnp.ones((3, 2))))


def test_aggregate_min_and_mean():
    q = jnp.array([[1.0, -2.0, 5.0], [3.0, -4.0, 0.0], [2.0, 0.0, 1.0]])
    np.testing.assert_allclose(aggregate(q, "min"), [1.0, -4.0, 0.0])
    np.testing.assert_allclose(aggregate(q, "mean"), [2.0, -2.0, 2.0])
    np.testing.assert_allclose(aggregate(q[:1], "min"), q[0])


def test_aggregate_unknown_name():
    with pytest.raises(FluxError, match="min, mean"):
        aggregate(jnp.zeros((2, 3)), "max")


# --- replay -----------------------------------------------------------------------------------

OBS, ACT = 3, 2


def transitions(values) -> dict:
    """One transition per value v: obs=v, action=-v, reward=10v, next_obs=v+0.5, terminated=v%2."""
    v = jnp.asarray(values, jnp.float32)
    n = v.shape[0]
    return {"obs": jnp.tile(v[:, None], (1, OBS)), "action": -jnp.tile(v[:, None], (1, ACT)),
            "reward": 10.0 * v, "next_obs": jnp.tile(v[:, None] + 0.5, (1, OBS)),
            "terminated": (v % 2).reshape(n)}


def test_replay_init_is_empty():
    buf = replay_init(5, OBS, ACT)
    assert buf.data.shape == (5, 2 * OBS + ACT + 2)
    assert int(buf.ptr) == 0 and int(buf.size) == 0


def test_replay_ring_wraps_around():
    buf = replay_init(5, OBS, ACT)
    add = jax.jit(replay_add)
    history = []
    for i in range(7):
        buf = add(buf, transitions([i + 1]))
        history.append((int(buf.ptr), int(buf.size)))
    assert history == [(1, 1), (2, 2), (3, 3), (4, 4), (0, 5), (1, 5), (2, 5)]
    # rows 0 and 1 were overwritten by the 6th and 7th inserts
    np.testing.assert_array_equal(buf.data[:, 0], [6, 7, 3, 4, 5])
    row = np.asarray(buf.data[1])
    np.testing.assert_array_equal(row, [7, 7, 7, -7, -7, 70, 7.5, 7.5, 7.5, 1])


def test_replay_batched_insert_wraps():
    buf = replay_init(5, OBS, ACT)
    buf = replay_add(buf, transitions([1, 2, 3]))
    buf = replay_add(buf, transitions([4, 5, 6, 7]))
    assert (int(buf.ptr), int(buf.size)) == (2, 5)
    np.testing.assert_array_equal(buf.data[:, 0], [6, 7, 3, 4, 5])


def test_replay_sample_shapes_and_filled_rows_only():
    buf = replay_add(replay_init(100, OBS, ACT), transitions([11, 22, 33]))
    batch = jax.jit(replay_sample, static_argnums=2)(buf, jax.random.PRNGKey(0), 1000)
    assert batch["obs"].shape == (1000, OBS) and batch["next_obs"].shape == (1000, OBS)
    assert batch["action"].shape == (1000, ACT)
    assert batch["reward"].shape == (1000,) and batch["terminated"].shape == (1000,)
    v = np.asarray(batch["obs"][:, 0])
    assert set(np.unique(v)) == {11.0, 22.0, 33.0}
    counts = np.array([(v == x).sum() for x in (11, 22, 33)])
    assert counts.min() > 250  # uniform over the 3 filled rows (expected 333 each)
    # fields of one sample come from the same row
    np.testing.assert_array_equal(batch["obs"], np.tile(v[:, None], (1, OBS)))
    np.testing.assert_array_equal(batch["action"], -np.tile(v[:, None], (1, ACT)))
    np.testing.assert_array_equal(batch["reward"], 10 * v)
    np.testing.assert_array_equal(batch["next_obs"], np.tile(v[:, None] + 0.5, (1, OBS)))
    np.testing.assert_array_equal(batch["terminated"], v % 2)


def test_replay_under_vmap_over_seeds():
    seeds = 3
    bufs = jax.vmap(lambda _: replay_init(8, OBS, ACT))(jnp.arange(seeds))
    assert bufs.data.shape == (seeds, 8, 2 * OBS + ACT + 2)
    add = jax.jit(jax.vmap(replay_add))
    for step in range(2):
        # seed s inserts values 100 s + 10 step + {0, 1}
        tr = jax.vmap(lambda s, step=step: transitions(100 * s + 10 * step + jnp.arange(2)))(
            jnp.arange(seeds))
        bufs = add(bufs, tr)
    np.testing.assert_array_equal(bufs.ptr, [4, 4, 4])
    np.testing.assert_array_equal(bufs.size, [4, 4, 4])
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    batch = jax.jit(jax.vmap(partial(replay_sample, batch_size=64)))(bufs, keys)
    assert batch["obs"].shape == (seeds, 64, OBS) and batch["reward"].shape == (seeds, 64)
    for s in range(seeds):
        allowed = {100 * s + 10 * step + k for step in range(2) for k in range(2)}
        assert set(np.unique(batch["obs"][s, :, 0]).tolist()) <= allowed
    # each seed's buffer only holds its own data
    np.testing.assert_array_equal(bufs.data[1, :4, 0], [100, 101, 110, 111])


def test_mish_matches_its_textbook_form_and_gradient():
    from fluxrl.nets.backbones import mish

    x = jnp.linspace(-60.0, 60.0, 100_001)
    ref = lambda v: v * jnp.tanh(jax.nn.softplus(v))  # noqa: E731
    np.testing.assert_allclose(mish(x), ref(x), atol=2e-6, rtol=1e-6)
    g, g_ref = jax.vmap(jax.grad(mish))(x), jax.vmap(jax.grad(ref))(x)
    np.testing.assert_allclose(g, g_ref, atol=2e-5, rtol=1e-5)
    assert bool(jnp.all(jnp.isfinite(jax.vmap(jax.grad(mish))(jnp.array([-1e4, 1e4, 0.0])))))
    huge = jnp.array([-1e30, 1e30])  # no overflow: x times a ratio, never x times e^(2x)
    np.testing.assert_array_equal(mish(huge), huge * jnp.array([0.0, 1.0]))
    np.testing.assert_array_equal(jax.vmap(jax.grad(mish))(huge), [0.0, 1.0])
