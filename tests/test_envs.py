"""Environment adapters and the vectorised driver: specs, action rescaling, seeding, episode ends,
auto-reset and exact state round-trips."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from fluxrl.envs import make_env, make_vec_env

# --- a recording task with asymmetric, per-dimension bounds -----------------------------------

RECORDER_ID = "FluxTestRecorder-v0"


class RecorderEnv(gymnasium.Env):
    """Records every action it receives; bounds differ per dimension and are not symmetric."""

    low = np.array([0.0, -3.0], np.float32)
    high = np.array([10.0, -1.0], np.float32)
    seen: list[np.ndarray] = []

    def __init__(self):
        self.action_space = gymnasium.spaces.Box(self.low, self.high, dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        RecorderEnv.seen.append(np.array(action, np.float64))
        return np.zeros(2, np.float32), 1.0, False, False, {}


if RECORDER_ID not in gymnasium.registry:
    gymnasium.register(RECORDER_ID, entry_point=RecorderEnv, max_episode_steps=50,
                       disable_env_checker=True)


def rollout(env, actions):
    return [env.step(a) for a in actions]


def assert_same_rollout(a, b):
    assert len(a) == len(b)
    for (o1, r1, te1, tr1), (o2, r2, te2, tr2) in zip(a, b, strict=True):
        assert o1.dtype == o2.dtype == np.float32
        np.testing.assert_array_equal(o1, o2)
        assert (r1, te1, tr1) == (r2, te2, tr2)


# --- specs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,obs_dim,act_dim,repeat,max_steps", [
    ("gym/Hopper-v5", 11, 3, 1, 1000),
    ("gym/Pendulum-v1", 3, 1, 1, 200),
    ("dmc/cheetah-run", 17, 6, 2, 500),
])
def test_spec(name, obs_dim, act_dim, repeat, max_steps):
    env = make_env(name)
    s = env.spec
    assert (s.name, s.suite) == (name, name.split("/")[0])
    assert (s.obs_dim, s.act_dim, s.action_repeat, s.max_episode_steps) == (
        obs_dim, act_dim, repeat, max_steps)
    obs = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32
    obs, r, term, trunc = env.step(np.zeros(act_dim))
    assert obs.shape == (obs_dim,) and isinstance(r, float)
    assert isinstance(term, bool) and isinstance(trunc, bool)
    env.close()


def test_explicit_action_repeat_overrides_suite_default():
    env = make_env("gym/Pendulum-v1", action_repeat=3)
    assert env.spec.action_repeat == 3 and env.spec.max_episode_steps == 67  # ceil(200 / 3)
    assert make_vec_env("dmc/cheetah-run", [0], action_repeat=1).spec.action_repeat == 1


# --- action rescaling and repeat ----------------------------------------------------------------


def test_pendulum_actions_are_scaled_to_torque_bound():
    env = make_env("gym/Pendulum-v1")
    raw = gymnasium.make("Pendulum-v1")
    assert raw.action_space.high[0] == 2.0
    np.testing.assert_array_equal(env.reset(seed=11), raw.reset(seed=11)[0])
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 1))
    for a in actions:
        obs, r, _, _ = env.step(a)
        raw_obs, raw_r, *_ = raw.step(2.0 * a)
        np.testing.assert_allclose(obs, raw_obs, rtol=1e-6, atol=1e-6)
        assert r == pytest.approx(float(raw_r), rel=1e-6, abs=1e-6)


def test_asymmetric_bounds_are_mapped_affinely_and_clipped():
    env = make_env(f"gym/{RECORDER_ID}")
    env.reset(seed=0)
    RecorderEnv.seen.clear()
    for a in ([-1.0, -1.0], [1.0, 1.0], [0.0, 0.5], [5.0, -7.0]):
        env.step(np.array(a))
    np.testing.assert_allclose(RecorderEnv.seen, [[0.0, -3.0], [10.0, -1.0], [5.0, -1.5],
                                                  [10.0, -3.0]])


def test_gym_action_repeat_sums_rewards():
    env = make_env("gym/Pendulum-v1", action_repeat=3)
    raw = gymnasium.make("Pendulum-v1")
    env.reset(seed=4)
    raw.reset(seed=4)
    a = np.array([0.3])
    obs, r, _, _ = env.step(a)
    raw_rewards = [raw.step(2.0 * a)[1] for _ in range(3)]
    raw_obs = raw.unwrapped._get_obs()
    np.testing.assert_allclose(obs, raw_obs, rtol=1e-6, atol=1e-6)
    assert r == pytest.approx(sum(raw_rewards), rel=1e-6)


def test_dmc_action_repeat_two_matches_raw_suite():
    from dm_control import suite

    def flat(ts):
        return np.concatenate([np.asarray(v).ravel() for v in ts.observation.values()]
                              ).astype(np.float32)

    env = make_env("dmc/cheetah-run")
    raw = suite.load("cheetah", "run", task_kwargs={"random": 5})
    np.testing.assert_array_equal(env.reset(seed=5), flat(raw.reset()))
    a = np.random.default_rng(1).uniform(-1, 1, 6)
    obs, r, _, _ = env.step(a)
    steps = [raw.step(a) for _ in range(2)]
    np.testing.assert_allclose(obs, flat(steps[-1]), rtol=1e-6, atol=1e-6)
    assert r == pytest.approx(sum(ts.reward for ts in steps), rel=1e-6)


# --- episode ends -------------------------------------------------------------------------------


def test_hopper_falls_and_terminates_early():
    env = make_env("gym/Hopper-v5")
    env.reset(seed=0)
    ends = [env.step(np.ones(3))[2:] for _ in range(100)]
    first_end = next(i for i, (term, trunc) in enumerate(ends) if term or trunc)
    assert ends[first_end] == (True, False)
    assert first_end < 50  # long before the 1000-step time limit


def test_pendulum_truncates_after_200_steps():
    env = make_env("gym/Pendulum-v1")
    env.reset(seed=0)
    ends = [env.step(np.ones(1))[2:] for _ in range(200)]
    assert ends[-1] == (False, True)
    assert all(e == (False, False) for e in ends[:-1])


# --- VecEnv -------------------------------------------------------------------------------------


def test_same_seeds_give_identical_resets_and_random_actions():
    a = make_vec_env("gym/Hopper-v5", [3, 4], envs_per_seed=2)
    b = make_vec_env("gym/Hopper-v5", [3, 4], envs_per_seed=2)
    oa, ob = a.reset(), b.reset()
    assert oa.shape == (2, 2, 11)
    np.testing.assert_array_equal(oa, ob)
    ra, rb = a.random_actions(), b.random_actions()
    assert ra.shape == (2, 2, 3) and ra.dtype == np.float32
    assert np.all(np.abs(ra) <= 1.0)
    np.testing.assert_array_equal(ra, rb)
    # different seeds (rows) and different envs of one seed differ
    assert not np.array_equal(oa[0], oa[1]) and not np.array_equal(oa[0, 0], oa[0, 1])
    assert not np.array_equal(ra[0], ra[1])


def test_seed_in_group_sees_what_it_sees_alone():
    group = make_vec_env("gym/Pendulum-v1", [7, 8])
    alone = make_vec_env("gym/Pendulum-v1", [8])
    np.testing.assert_array_equal(group.reset()[1], alone.reset()[0])
    np.testing.assert_array_equal(group.random_actions()[1], alone.random_actions()[0])
    other = make_vec_env("gym/Pendulum-v1", [9])
    assert not np.array_equal(other.reset()[0], alone.reset()[0])


def test_vec_env_auto_resets_on_truncation_and_records_returns():
    vec = make_vec_env("gym/Pendulum-v1", [0, 1], envs_per_seed=2)
    obs = vec.reset()
    rng = np.random.default_rng(0)
    running = np.zeros((2, 2))
    expected: list[list[tuple[float, int]]] = [[], []]
    for t in range(1, 451):
        act = rng.uniform(-1, 1, (2, 2, 1)).astype(np.float32)
        tr, nxt = vec.step(act)
        np.testing.assert_array_equal(tr.obs, obs)
        np.testing.assert_array_equal(tr.action, act)
        running += tr.reward
        if t % 200 == 0:
            assert np.all(tr.terminated == 0.0), "truncation must not be marked terminal"
            assert not np.any(np.all(np.isclose(tr.next_obs, nxt), axis=-1)), "no reset happened"
            for i in range(2):
                expected[i].extend((float(running[i, j]), 200) for j in range(2))
            running[:] = 0
        else:
            np.testing.assert_array_equal(tr.next_obs, nxt)
        obs = nxt
        if t == 200:
            first = vec.pop_finished()
            assert [len(f) for f in first] == [2, 2]
    second = vec.pop_finished()
    for got, want in zip([first[i] + second[i] for i in range(2)], expected, strict=True):
        assert [n for _, n in got] == [n for _, n in want]
        np.testing.assert_allclose([r for r, _ in got], [r for r, _ in want], rtol=1e-5)
    assert vec.pop_finished() == [[], []]
    np.testing.assert_array_equal(vec.ep_length, np.full((2, 2), 50))


def test_vec_env_marks_termination_and_resets_hopper():
    vec = make_vec_env("gym/Hopper-v5", [0])
    vec.reset()
    total, steps = 0.0, 0
    for _ in range(200):
        tr, nxt = vec.step(np.ones((1, 1, 3), np.float32))
        total += float(tr.reward[0, 0])
        steps += 1
        if tr.terminated[0, 0]:
            break
    assert tr.terminated[0, 0] == 1.0
    assert tr.next_obs[0, 0, 0] < 0.7 or abs(tr.next_obs[0, 0, 1]) > 0.2  # fallen or tilted
    assert abs(nxt[0, 0, 0] - 1.25) < 0.01, "next observation should be a fresh reset"
    (ret, length), = vec.pop_finished()[0]
    assert length == steps and ret == pytest.approx(total, rel=1e-5)


# --- exact state round-trips ----------------------------------------------------------------


def through_disk(state, tmp_path):
    """``state`` after a checkpoint's json + npz round trip (no pickle)."""
    from fluxrl.train.checkpoint import read_host, write_host

    d = tmp_path / "host"
    d.mkdir(exist_ok=True)
    write_host(d, {"env": state})
    return read_host(d)["env"]


def rollout_auto(env, actions):
    """Like :func:`rollout`, resetting (unseeded, as VecEnv does) after each episode end."""
    out = []
    for a in actions:
        o, r, term, trunc = env.step(a)
        out.append((o, r, term, trunc))
        if term or trunc:
            out.append((env.reset(), 0.0, False, False))
    return out


ROUND_TRIP = ["gym/Hopper-v5", "gym/Pendulum-v1", "gym/MountainCarContinuous-v0",
              "dmc/cheetah-run", "dmc/cartpole-balance", "dmc/reacher-easy"]


@pytest.mark.parametrize("disk", [False, True], ids=["memory", "json+npz"])
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_get_set_state_is_bit_exact(name, disk, tmp_path):
    rng = np.random.default_rng(0)
    env = make_env(name)
    env.reset(seed=3)
    rollout(env, rng.uniform(-1, 1, (7, env.spec.act_dim)))
    state = env.get_state()
    if disk:
        state = through_disk(state, tmp_path)
    actions = rng.uniform(-1, 1, (15, env.spec.act_dim))
    reference = rollout(env, actions)

    fresh = make_env(name)
    fresh.reset(seed=12345)
    first = fresh.step(actions[0])[0]
    assert not np.array_equal(first, reference[0][0]), "fresh env must start elsewhere"
    fresh.reset(seed=12345)
    fresh.set_state(state)
    assert_same_rollout(rollout(fresh, actions), reference)


def test_restored_pendulum_keeps_time_limit_and_reset_rng():
    env = make_env("gym/Pendulum-v1")
    env.reset(seed=1)
    rollout(env, np.zeros((195, 1)))
    state = env.get_state()
    actions = np.full((5, 1), 0.5)
    ref = rollout(env, actions)
    ref_reset = env.reset()

    fresh = make_env("gym/Pendulum-v1")
    fresh.reset(seed=2)
    fresh.set_state(state)
    got = rollout(fresh, actions)
    assert_same_rollout(got, ref)
    assert got[-1][3] is True and not any(s[3] for s in got[:-1])
    np.testing.assert_array_equal(fresh.reset(), ref_reset)


def test_restored_hopper_resets_like_original():
    env = make_env("gym/Hopper-v5")
    env.reset(seed=1)
    state = env.get_state()
    ref = rollout(env, np.ones((60, 3)))
    ref_reset = env.reset()

    fresh = make_env("gym/Hopper-v5")
    fresh.reset(seed=2)
    fresh.set_state(state)
    got = rollout(fresh, np.ones((60, 3)))
    assert_same_rollout(got, ref)
    assert any(s[2] for s in got)
    np.testing.assert_array_equal(fresh.reset(), ref_reset)


def test_vec_env_state_round_trip_includes_random_actions():
    a = make_vec_env("gym/Pendulum-v1", [0, 1])
    a.reset()
    for _ in range(3):
        a.step(a.random_actions())
    state = a.get_state()
    b = make_vec_env("gym/Pendulum-v1", [0, 1])
    b.reset()
    b.set_state(state)
    for _ in range(5):
        ra, rb = a.random_actions(), b.random_actions()
        np.testing.assert_array_equal(ra, rb)
        (ta, oa), (tb, ob) = a.step(ra), b.step(rb)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ta.reward, tb.reward)
    np.testing.assert_array_equal(a.ep_length, b.ep_length)


@pytest.mark.parametrize("name", ["dmc/cartpole-balance", "dmc/reacher-easy", "gym/Pendulum-v1"])
def test_state_restores_into_never_reset_env_across_episode_end(name, tmp_path):
    """What a resumed run does: a fresh env that never saw reset gets the saved state (after a
    json+npz round trip) and steps on through the time limit and the unseeded reset after it."""
    env = make_env(name)
    env.reset(seed=5)
    limit = env.spec.max_episode_steps
    rollout(env, np.zeros((limit - 3, env.spec.act_dim)))
    state = through_disk(env.get_state(), tmp_path)
    actions = np.random.default_rng(2).uniform(-1, 1, (10, env.spec.act_dim))
    reference = rollout_auto(env, actions)
    assert any(trunc for *_, trunc in reference), "the rollout must cross the time limit"

    fresh = make_env(name)
    fresh.set_state(state)
    assert_same_rollout(rollout_auto(fresh, actions), reference)


def test_dmc_state_restores_the_task_model_changes():
    """reacher moves its target inside the MjModel at every reset; the state carries that."""
    env = make_env("dmc/reacher-easy")
    env.reset(seed=1)
    state = env.get_state()
    assert "geom_pos" in state["model"]
    fresh = make_env("dmc/reacher-easy")
    fresh.reset(seed=2)
    assert not np.array_equal(fresh._env.physics.model.geom_pos, env._env.physics.model.geom_pos)
    fresh.set_state(state)
    np.testing.assert_array_equal(fresh._env.physics.model.geom_pos,
                                  env._env.physics.model.geom_pos)


def test_vec_env_state_survives_json_npz(tmp_path):
    a = make_vec_env("dmc/cartpole-balance", [0, 1])
    a.reset()
    for _ in range(3):
        a.step(a.random_actions())
    state = through_disk(a.get_state(), tmp_path)
    b = make_vec_env("dmc/cartpole-balance", [0, 1])
    b.set_state(state)
    for _ in range(5):
        ra, rb = a.random_actions(), b.random_actions()
        np.testing.assert_array_equal(ra, rb)
        (ta, oa), (tb, ob) = a.step(ra), b.step(rb)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ta.reward, tb.reward)
