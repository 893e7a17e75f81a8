"""Hydra composition, suite defaults and validation of :mod:`fluxrl.config`."""

from __future__ import annotations

import pytest

from fluxrl.agents.baselines.sac import SACConfig
from fluxrl.agents.baselines.td3 import TD3Config
from fluxrl.config import compose, from_dict, resolve, to_dict
from fluxrl.errors import FluxError


def cfg_of(*overrides: str):
    return resolve(compose(list(overrides)))


def error_of(*overrides: str) -> str:
    """The FluxError message for ``overrides``; it must be one non-empty line."""
    with pytest.raises(FluxError) as info:
        cfg_of(*overrides)
    msg = str(info.value)
    assert msg.strip(), "empty error message"
    assert "\n" not in msg and "\r" not in msg, f"multi-line error: {msg!r}"
    return msg


# --- defaults -------------------------------------------------------------------------------


def test_defaults_are_gym_paper_settings():
    cfg = cfg_of()
    assert isinstance(cfg.algo, SACConfig)
    assert cfg.env.startswith("gym/")
    assert (cfg.off_policy.batch_size, cfg.off_policy.warmup_frames, cfg.action_repeat) == (256, 5000, 1)
    for net in (cfg.algo.actor, cfg.algo.critic):
        assert (net.backbone, net.width, net.depth, net.act) == ("mlp", 256, 2, "relu")
    assert cfg.algo.num_critics == 2 and cfg.algo.discount == 0.99 and cfg.algo.tau == 0.005


def test_dmc_env_gets_dmc_paper_settings():
    cfg = cfg_of("env=dmc/cheetah-run")
    assert cfg.env == "dmc/cheetah-run"
    assert (cfg.off_policy.batch_size, cfg.off_policy.warmup_frames, cfg.action_repeat) == (512, 10_000, 2)
    for net in (cfg.algo.actor, cfg.algo.critic):
        assert (net.width, net.depth, net.act) == (512, 3, "elu")


def test_explicit_values_beat_suite_defaults():
    cfg = cfg_of("env=dmc/cheetah-run", "off_policy.batch_size=128", "algo.actor.width=64", "action_repeat=4")
    assert cfg.off_policy.batch_size == 128 and cfg.action_repeat == 4
    assert cfg.off_policy.warmup_frames == 10_000  # untouched fields still take the DMC default
    assert (cfg.algo.actor.width, cfg.algo.actor.depth, cfg.algo.actor.act) == (64, 3, "elu")
    assert cfg.algo.critic.width == 512


def test_compose_leaves_suite_fields_unset_and_resolve_is_pure():
    raw = compose(["env=dmc/cheetah-run"])
    assert raw.off_policy.batch_size is None and raw.algo.actor.width is None
    once = resolve(raw)
    assert raw.off_policy.batch_size is None and raw.algo.actor.width is None, \
        "resolve mutated its input"
    assert resolve(once) == once


# --- overrides ------------------------------------------------------------------------------


def test_algo_td3_and_nested_overrides():
    cfg = cfg_of("algo=td3", "algo.lr_actor=1e-4", "algo.actor.backbone=simba")
    assert isinstance(cfg.algo, TD3Config) and cfg.algo.name == "td3"
    assert cfg.algo.lr_actor == pytest.approx(1e-4)
    assert cfg.algo.lr_critic == pytest.approx(3e-4)
    assert cfg.algo.actor.backbone == "simba" and cfg.algo.critic.backbone == "mlp"
    assert cfg.algo.policy_delay == 2


def test_nested_override_before_group_choice_still_applies():
    cfg = cfg_of("algo.lr_actor=1e-4", "algo=td3")
    assert isinstance(cfg.algo, TD3Config) and cfg.algo.lr_actor == pytest.approx(1e-4)


def test_top_level_overrides_are_typed():
    cfg = cfg_of("seeds=3", "frames=20000", "env=gym/Hopper-v5", "algo.critic.layer_norm=true",
                 "algo.num_critics=5")
    assert cfg.seeds == 3 and isinstance(cfg.seeds, int)
    assert cfg.frames == 20_000 and cfg.env == "gym/Hopper-v5"
    assert cfg.algo.critic.layer_norm is True and cfg.algo.num_critics == 5


def test_to_dict_from_dict_round_trip():
    cfg = cfg_of("algo=td3", "env=dmc/cheetah-run", "algo.actor.backbone=bronet", "seeds=2")
    d = to_dict(cfg)
    assert "defaults" not in d and d["algo"]["name"] == "td3"
    assert from_dict(d) == cfg


# --- errors: one line, naming the problem and a fix -----------------------------------------


def test_unknown_algorithm_suggests_sac():
    msg = error_of("algo=sacc")
    assert "sacc" in msg and "did you mean sac" in msg


def test_unknown_top_level_key_lists_options():
    msg = error_of("framez=10")
    assert "'framez'" in msg and "frames" in msg


@pytest.mark.parametrize("old,new", [
    ("steps", "frames"), ("warmup", "off_policy.warmup_frames"),
    ("batch_size", "off_policy.batch_size"), ("buffer_size", "off_policy.buffer_size"),
    ("updates_per_step", "off_policy.updates_per_step"),
])
def test_keys_of_earlier_versions_name_their_new_place(old, new):
    msg = error_of(f"{old}=100")
    assert msg == f"{old} is now {new}; write {new}=100"


def test_trainer_values_that_would_train_nothing_or_oversize_the_batch():
    msg = error_of("frames=5000", "off_policy.warmup_frames=5000")
    assert "never update" in msg and "frames=5000" in msg
    msg = error_of("off_policy.batch_size=512", "off_policy.buffer_size=100")
    assert "exceeds off_policy.buffer_size=100" in msg


def test_unknown_nested_key_is_named():
    msg = error_of("algo.lr_actorr=1")
    assert "lr_actorr" in msg and "unknown config key" in msg


def test_key_of_other_algorithm_is_unknown():
    msg = error_of("algo=td3", "algo.init_alpha=0.5")
    assert "init_alpha" in msg and "TD3Config" in msg


@pytest.mark.parametrize("value", ["abc", "1.5"])
def test_wrong_type_names_key_and_expected_type(value):
    msg = error_of(f"seeds={value}")
    assert "seeds" in msg and value in msg and "Integer" in msg


@pytest.mark.parametrize("override,key", [
    ("frames=0", "frames"), ("frames=-5", "frames"), ("seeds=0", "seeds"),
    ("eval_episodes=0", "eval_episodes"), ("off_policy.batch_size=-1", "batch_size"),
    ("off_policy.updates_per_step=0", "updates_per_step"),
])
def test_non_positive_budgets(override, key):
    msg = error_of(override)
    assert f"{key} must be a positive number" in msg
    assert override in msg  # echoes what was given


def test_negative_warmup_and_too_short_warmup():
    assert "warmup_frames must be zero or positive" in error_of("off_policy.warmup_frames=-1")
    msg = error_of("off_policy.warmup_frames=10")
    assert "off_policy.warmup_frames>=256" in msg


@pytest.mark.parametrize("env,suggestion", [
    ("gym/Hoper-v5", "gym/Hopper-v5"),
    ("dmc/cheeta-run", "dmc/cheetah-run"),
])
def test_unknown_env_suggests_close_matches(env, suggestion):
    msg = error_of(f"env={env}")
    assert env in msg and "did you mean" in msg and suggestion in msg


def test_unknown_suite_suggests_suite():
    msg = error_of("env=gmy/Hopper-v5")
    assert "gmy" in msg and "gym" in msg


def test_env_without_suite_slash():
    msg = error_of("env=Hopper-v5")
    assert "Hopper-v5" in msg and "suite/task" in msg and "gym/HalfCheetah-v5" in msg


def test_unknown_backbone():
    msg = error_of("algo.critic.backbone=simbaa")
    assert "algo.critic.backbone" in msg and "simbaa" in msg and "simba" in msg.split(";", 1)[1]


def test_unknown_activation():
    msg = error_of("algo.actor.act=rellu")
    assert "rellu" in msg and "relu" in msg.split(";", 1)[1]


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_discount_outside_unit_interval(value):
    msg = error_of(f"algo.discount={value}")
    assert "algo.discount" in msg and "[0, 1]" in msg


def test_discount_bounds_are_inclusive():
    assert cfg_of("algo.discount=0").algo.discount == 0.0
    assert cfg_of("algo.discount=1").algo.discount == 1.0


def test_num_critics_zero():
    msg = error_of("algo.num_critics=0")
    assert "algo.num_critics" in msg and "at least 1" in msg


def test_other_algo_checks():
    assert "algo.critic_agg" in error_of("algo.critic_agg=max")
    assert "algo.lr_critic must be a positive" in error_of("algo.lr_critic=0")
    assert "algo.actor.width must be positive" in error_of("algo.actor.width=0")


@pytest.mark.parametrize("arg", ["steps", "~env"])
def test_argument_without_equals(arg):
    msg = error_of(arg)
    assert repr(arg) in msg and "key=value" in msg


def test_plus_prefixed_unknown_nested_key_is_rejected():
    error_of("+algo.lr_actorr=1e-4")


def test_negative_seed_is_rejected():
    error_of("seed=-1")


# --- per-suite and per-task algorithm defaults (fluxrl.task_defaults) ------------------------------

from fluxrl.task_defaults import TASK_DEFAULTS, TaskDefault  # noqa: E402

#: A task of each suite that no task row names, for the suite rows.
SUITE_TASK = {"gym": "gym/Walker2d-v5", "dmc": "dmc/cheetah-run",
              "playground": "playground/CheetahRun"}
#: a task of another suite of the same kind (host or JAX), and another algorithm of the setting
ELSEWHERE = {"gym": "dmc/cheetah-run", "dmc": "gym/Walker2d-v5", "playground": "jax/Pendulum"}
OTHER_ALGO = {"off_policy": "sac", "on_policy": "fpo"}


def _env_of(row: TaskDefault) -> str:
    return row.where if "/" in row.where else SUITE_TASK[row.where]


def _get(cfg, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def _other(key: str, value):
    """A valid value different from ``value`` for the same key."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return "elu" if value != "elu" else "relu"
    if isinstance(value, int):  # doubling keeps every divisibility rule (minibatches of a rollout)
        return value * 2
    if key.endswith(("discount", "gae_lambda", "clip")):  # must stay in (0, 1]
        return round(value / 2, 6)
    return round(value * 3, 6) if value else 0.5


@pytest.mark.parametrize("row", TASK_DEFAULTS, ids=lambda r: f"{r.algo}-{r.where}")
def test_each_task_default_resolves_as_stated_and_lands_in_config_yaml(row):
    from fluxrl.config import to_dict

    cfg = resolve(compose([f"algo={row.algo}", f"env={_env_of(row)}"]))
    saved = to_dict(cfg)
    for key, value in row.values.items():
        assert _get(cfg, key) == value, (key, _get(cfg, key))
        node = saved
        for part in key.split("."):
            node = node[part]
        assert node == value  # what run_dir/config.yaml holds


@pytest.mark.parametrize("row", TASK_DEFAULTS, ids=lambda r: f"{r.algo}-{r.where}")
def test_an_explicit_user_value_wins_over_each_task_default(row):
    for key, value in row.values.items():
        mine = _other(key, value)
        cfg = resolve(compose([f"algo={row.algo}", f"env={_env_of(row)}", f"{key}={mine}"]))
        assert _get(cfg, key) == mine, key
        for other, v in row.values.items():  # the row's other keys still apply
            if other != key:
                assert _get(cfg, other) == v


@pytest.mark.parametrize("row", TASK_DEFAULTS, ids=lambda r: f"{r.algo}-{r.where}")
def test_task_defaults_leave_other_tasks_and_algorithms_alone(row, monkeypatch):
    """Off the row's task every key of the row has the value it has with an empty table; another
    algorithm on the row's task is what it is with an empty table too."""
    import fluxrl.task_defaults as td
    from fluxrl.agents.registry import get_algo

    elsewhere = ELSEWHERE[row.where.split("/")[0]]
    other = OTHER_ALGO[get_algo(row.algo).setting]
    cfg = resolve(compose([f"algo={row.algo}", f"env={elsewhere}"]))
    sac = resolve(compose([f"algo={other}", f"env={_env_of(row)}"]))
    monkeypatch.setattr(td, "TASK_DEFAULTS", ())
    bare = resolve(compose([f"algo={row.algo}", f"env={elsewhere}"]))
    bare_sac = resolve(compose([f"algo={other}", f"env={_env_of(row)}"]))
    for key in row.values:
        assert _get(cfg, key) == _get(bare, key), key
    assert sac == bare_sac


def test_task_default_table_names_real_algorithms_keys_and_tasks():
    from fluxrl.config import _check_key, algo_configs
    from fluxrl.envs import check_env_name

    for row in TASK_DEFAULTS:
        assert row.algo in algo_configs(), row
        assert row.source.strip(), row
        if "/" in row.where:
            check_env_name(row.where)
        else:
            assert row.where in SUITE_TASK, row
        for key in row.values:
            _check_key(key, row.algo)  # FluxError for an unknown key


def test_no_agent_reads_the_task_name():
    """Task-dependent values live in the table: no agent file looks at EnvSpec.name or .suite."""
    import re
    from pathlib import Path

    import fluxrl.agents

    root = Path(fluxrl.agents.__file__).parent
    for f in root.rglob("*.py"):
        text = f.read_text()
        assert not re.search(r"spec\.(name|suite)\b", text), f
