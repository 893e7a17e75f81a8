"""DeepMind Control adapter: flattened observations, action repeat, time-limit truncation, and
exact state round-trips as plain data (no pickle; see :meth:`DMCEnv.get_state`)."""

from __future__ import annotations

import copy
import os

import numpy as np

from fluxrl.envs.base import EnvSpec, HostEnv

#: The DMC tasks of the benchmark protocol (protocol.md section 2).
PROTOCOL = ["cartpole-balance", "hopper-stand", "cheetah-run", "quadruped-run", "humanoid-walk",
            "humanoid-run", "humanoid-stand", "dog-run"]


def available() -> list[str]:
    """Every ``domain-task`` in the dm_control suite."""
    from dm_control import suite

    return [f"{d}-{t}" for d, t in suite.ALL_TASKS]


class DMCEnv(HostEnv):
    """A dm_control suite task; actions rescaled from [-1, 1] to the task's action spec."""

    def __init__(self, task: str, action_repeat: int = 2, render: bool = False):
        if render:
            os.environ.setdefault("MUJOCO_GL", "egl")
        from dm_control import suite

        self._domain, self._task = task.split("-", 1)
        self._env = suite.load(self._domain, self._task, task_kwargs={"random": 0})
        aspec = self._env.action_spec()
        self._low = np.asarray(aspec.minimum, np.float64)
        self._high = np.asarray(aspec.maximum, np.float64)
        obs_dim = sum(int(np.prod(v.shape)) for v in self._env.observation_spec().values())
        limit = int(round(self._env._step_limit)) if np.isfinite(self._env._step_limit) else 1000
        self.spec = EnvSpec(f"dmc/{task}", "dmc", obs_dim, int(aspec.shape[0]), action_repeat,
                            -(-limit // action_repeat))
        self._repeat = action_repeat
        self._pristine = copy.copy(self._env.physics.model.ptr)  # the model as loaded

    @staticmethod
    def _flat(obs) -> np.ndarray:
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in obs.values()])

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._env.task._random = np.random.RandomState(seed)
        return self._flat(self._env.reset().observation)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        total = 0.0
        for _ in range(self._repeat):
            ts = self._env.step(a)
            total += float(ts.reward or 0.0)
            if ts.last():
                break
        last = ts.last()
        terminated = bool(last and ts.discount == 0.0)
        return self._flat(ts.observation), total, terminated, bool(last and not terminated)

    def get_state(self) -> dict:
        """Everything the episode needs to continue bit-exactly, as plain data:

        * ``mj``: MuJoCo's ``mjSTATE_INTEGRATION`` vector (time, qpos, qvel, act, warm start,
          ctrl, applied forces, mocap, user data, plugin state) of the raw MjModel/MjData;
        * ``model``: the MjModel fields (and ``opt.*`` options) that differ from the freshly loaded
          model, because many tasks move targets or change the terrain in ``initialize_episode``
          (reacher, finger, fish, swimmer, manipulator, point_mass, quadruped-escape);
        * ``random``: the task's ``RandomState`` (``get_state()``), which draws later resets;
        * ``task``: the task's plain attributes (per-episode values such as dog's
          ``_stand_height``);
        * ``step_count`` and ``reset_next_step``: the ``control.Environment`` counters (the time
          limit and the auto-reset flag).
        """
        import mujoco

        env = self._env
        model, data = env.physics.model.ptr, env.physics.data.ptr
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(model, spec), np.float64)
        mujoco.mj_getState(model, data, buf, spec)
        changed = {}
        for name, get in _model_fields(model):
            value, pristine = get(model), get(self._pristine)
            if not _same(value, pristine):
                changed[name] = copy.deepcopy(value)
        task = {k: copy.deepcopy(v) for k, v in vars(env.task).items()
                if k != "_random" and _plain(v)}
        return {"mj": buf, "model": changed, "random": env.task.random.get_state(),
                "task": task, "step_count": int(env._step_count),
                "reset_next_step": bool(env._reset_next_step)}

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (also after a json+npz round trip), then
        ``mj_forward`` so every derived quantity matches."""
        import mujoco

        env = self._env
        model, data = env.physics.model.ptr, env.physics.data.ptr
        changed = state["model"]
        for name, get in _model_fields(model):
            want = changed[name] if name in changed else get(self._pristine)
            if not _same(get(model), want):
                _set_field(model, name, want)
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(model, data, np.asarray(state["mj"], np.float64), spec)
        mujoco.mj_forward(model, data)
        random = state["random"]
        env.task.random.set_state((str(random[0]), np.asarray(random[1], np.uint32),
                                   *(int(x) for x in random[2:4]), float(random[4])))
        for k, v in state["task"].items():
            setattr(env.task, k, copy.deepcopy(v))
        env._step_count = int(state["step_count"])
        env._reset_next_step = bool(state["reset_next_step"])

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        return self._env.physics.render(height=height, width=width, camera_id=0)

    def close(self) -> None:
        self._env.close()


_FIELDS: list[tuple[str, object]] | None = None


def _model_fields(model) -> list[tuple[str, object]]:
    """``(name, getter)`` for every array field of an MjModel and every option in ``model.opt``."""
    global _FIELDS
    if _FIELDS is None:
        fields: list[tuple[str, object]] = []
        for name in dir(model):
            if not name.startswith("_") and isinstance(getattr(model, name, None), np.ndarray):
                fields.append((name, lambda m, n=name: getattr(m, n)))
        for name in dir(model.opt):
            if not name.startswith("_") and isinstance(getattr(model.opt, name, None),
                                                       int | float | np.ndarray):
                fields.append((f"opt.{name}", lambda m, n=name: getattr(m.opt, n)))
        _FIELDS = fields
    return _FIELDS


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def _set_field(model, name: str, value) -> None:
    if name.startswith("opt."):
        target, attr = model.opt, name[4:]
    else:
        target, attr = model, name
    current = getattr(target, attr)
    if isinstance(current, np.ndarray):
        current[...] = np.asarray(value, current.dtype).reshape(current.shape)
    else:
        setattr(target, attr, type(current)(value))


def _plain(value) -> bool:
    """Whether ``value`` is plain data a checkpoint can hold (numbers, str, arrays, containers)."""
    if value is None or isinstance(value, bool | int | float | str | np.generic):
        return True
    if isinstance(value, np.ndarray):
        return not value.dtype.hasobject
    if type(value) in (list, tuple):
        return all(_plain(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
