"""The IsaacLab adapter: DLPack conversions, IsaacLab's step contract (reset inside step, no
final observation, time-outs bootstrapping from the step's own observation), the clear errors,
and PPO learning through the host-stepped program on a small torch-CPU environment of the same
contract (tests/torch_envs.py)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fluxrl.config import compose, resolve  # noqa: E402
from fluxrl.envs import isaaclab  # noqa: E402
from fluxrl.envs.isaaclab import TorchVecEnv, to_jax, to_torch  # noqa: E402
from fluxrl.errors import FluxError  # noqa: E402
from tests.torch_envs import TorchPointReach  # noqa: E402


@pytest.fixture
def point_reach(monkeypatch):
    monkeypatch.setitem(isaaclab.FACTORIES, "TorchPointReach",
                        lambda n, device: TorchPointReach(n, device))
    return "isaaclab/TorchPointReach"


def test_dlpack_shares_the_buffer_both_ways():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    x = to_jax(t)
    assert x.unsafe_buffer_pointer() == t.data_ptr()
    np.testing.assert_array_equal(np.asarray(x), t.numpy())
    y = jnp.ones((5, 3)) * 2
    ty = to_torch(y)
    assert ty.data_ptr() == y.unsafe_buffer_pointer() and ty.dtype == torch.float32
    np.testing.assert_array_equal(ty.numpy(), np.asarray(y))


def test_dtypes_become_what_jax_computes_with():
    assert to_jax(torch.tensor([True, False])).dtype == jnp.float32
    np.testing.assert_array_equal(to_jax(torch.tensor([True, False])), [1.0, 0.0])
    assert to_jax(torch.tensor([1, 2], dtype=torch.int64)).dtype == jnp.int32
    assert to_jax(torch.tensor([0.5], dtype=torch.float64)).dtype == jnp.float32
    # a non-contiguous view is made contiguous, not misread
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).T
    np.testing.assert_array_equal(np.asarray(to_jax(t)), t.numpy())


def test_a_time_out_bootstraps_from_the_observation_it_acted_on():
    """IsaacLab resets inside step and keeps no final observation: the adapter hands back the
    step's own observation as the one to bootstrap from, and the new episode's to act on."""
    sim = TorchPointReach(3, max_episode_length=2)
    env = TorchVecEnv(sim, "isaaclab/TorchPointReach")
    assert (env.obs_dim, env.act_dim, env.episode_length, env.num_envs) == (4, 2, 2, 3)
    first = env.reset()
    zero = jnp.zeros((3, 2))
    obs1, next1, _, term1, trunc1 = env.step(zero)
    np.testing.assert_array_equal(trunc1, 0.0)
    np.testing.assert_array_equal(next1, obs1)  # not done: the next observation itself
    np.testing.assert_allclose(obs1, first, atol=1e-7)  # a zero action does not move the point
    obs2, next2, reward, term2, trunc2 = env.step(zero)
    cut = (np.asarray(trunc2) > 0)
    assert cut.sum() == 3 - int(np.asarray(term2).sum()) and cut.any()
    np.testing.assert_array_equal(np.asarray(next2)[cut], np.asarray(obs1)[cut])  # s_t
    assert not np.allclose(np.asarray(obs2)[cut], np.asarray(obs1)[cut])  # a new episode
    np.testing.assert_allclose(reward, -np.linalg.norm(np.asarray(obs1)[:, 2:], axis=-1),
                               rtol=1e-6)
    assert sim.actions_seen[-1].dtype == torch.float32 and tuple(sim.actions_seen[-1].shape) == (3, 2)
    with pytest.raises(ValueError, match="expected"):
        env.step(jnp.zeros((2, 2)))


def test_a_step_that_ends_and_times_out_counts_as_ended():
    sim = TorchPointReach(1, max_episode_length=1)
    env = TorchVecEnv(sim, "isaaclab/TorchPointReach")
    env.reset()
    sim.sim[:] = torch.tensor([[0.0, 0.0, 0.0, 0.01]])  # inside the goal radius
    env.obs = to_jax(sim._obs()["policy"])
    _, _, _, term, trunc = env.step(jnp.zeros((1, 2)))
    assert float(term[0]) == 1.0 and float(trunc[0]) == 0.0


def test_isaaclab_tasks_without_isaaclab_are_one_line(point_reach):
    with pytest.raises(FluxError, match="IsaacLab 3.0"):
        resolve(compose(["algo=ppo", "env=isaaclab/Isaac-Cartpole-v0"]))
    with pytest.raises(FluxError, match="unknown env"):
        resolve(compose(["algo=ppo", "env=isaaclab/NoSuchTask"]))
    with pytest.raises(FluxError, match="is a batched environment"):
        resolve(compose(["algo=sac", f"env={point_reach}"]))


def _overrides(tmp_path, **changed):
    base = {"algo": "ppo", "env": "isaaclab/TorchPointReach", "seeds": 2, "eval_every": 50000,
            "log_every": 50000, "progress": "false", "tensorboard": "false", "plot": "false",
            "checkpoint_every": 0, "on_policy.num_envs": 64, "on_policy.unroll_length": 32,
            "algo.actor.width": 64, "algo.critic.width": 64, "algo.actor.depth": 2,
            "algo.critic.depth": 2, "eval_episodes": 16, "run_dir": tmp_path / "run"}
    return [f"{k}={v}" for k, v in {**base, **changed}.items()]


@pytest.mark.slow
def test_ppo_learns_through_the_host_stepped_program(tmp_path, point_reach):
    """The same budget and networks as PPO's jax/PointReach test (tests/test_on_policy.py):
    100,352 env steps per seed, 2 seeds sharing one torch simulator of 128 envs. A random policy
    scores about -35; both seeds must finish above -10."""
    from fluxrl.train.run import train

    ov = _overrides(tmp_path, frames=100000)
    result = train(compose(ov), ov)
    assert result.frames == 100_352
    assert np.all(np.isfinite(result.eval_returns)) and np.all(result.eval_returns[-1] > -10.0), \
        result.eval_returns


def test_resume_restarts_the_episodes_and_keeps_the_agent(tmp_path, point_reach):
    """A host simulator's state is not checkpointed: a resumed run restarts its episodes but
    continues from the checkpoint's agent, statistics and iteration."""
    from fluxrl.train import checkpoint
    from fluxrl.train.run import train

    small = {"checkpoint_every": 4096, "eval_every": 4096, "on_policy.num_envs": 32,
             "on_policy.unroll_length": 16}
    ov = _overrides(tmp_path, frames=4096, **small)
    train(compose(ov), ov)
    first = checkpoint.open_latest(tmp_path / "run")
    assert first.frame == 4096
    ov2 = _overrides(tmp_path, frames=8192, resume=tmp_path / "run", **small)
    result = train(compose(ov2), ov2)
    assert result.frames == 8192 and checkpoint.open_latest(tmp_path / "run").frame == 8192
    assert result.eval_returns.shape[1] == 2 and np.all(np.isfinite(result.eval_returns))
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert [r["frame"] for r in meta["resumes"]] == [4096]
    assert np.asarray(result.state.iteration).tolist() == [16, 16]  # 8 + 8 iterations
