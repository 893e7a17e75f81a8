"""Gymnasium adapter: any registered task with Box observations and Box actions (MuJoCo v5 first)."""

from __future__ import annotations

import copy
import os

import numpy as np

from fluxrl.envs.base import EnvSpec, HostEnv

#: The Gym-Locomotion tasks of the benchmark protocol (protocol.md section 2).
LOCOMOTION = ["Ant-v5", "HalfCheetah-v5", "Hopper-v5", "Humanoid-v5", "Swimmer-v5", "Walker2d-v5"]

#: What a non-MuJoCo task (classic control: Pendulum, MountainCarContinuous, ...) keeps from one
#: step to the next besides its ``np_random``: ``state`` (an ndarray, a tuple of numbers or None
#: before the first reset), Pendulum's ``last_u`` (rendering) and CartPole's episode-end counter.
CLASSIC_STATE = ("state", "last_u", "steps_beyond_terminated")


def available() -> list[str]:
    """Every Gymnasium id this adapter can build (continuous control)."""
    import gymnasium

    names = []
    for env_id, spec in gymnasium.registry.items():
        ep = spec.entry_point if isinstance(spec.entry_point, str) else (
            f"{getattr(spec.entry_point, '__module__', '')}:{getattr(spec.entry_point, '__name__', '')}")
        builtin = ep.startswith("gymnasium.")
        continuous = "mujoco" in ep or "pendulum:" in ep or "continuous_mountain_car" in ep
        legacy = "mujoco" in ep and env_id.endswith(("-v2", "-v3"))  # need mujoco-py
        if (continuous and not legacy) or not builtin:  # user-registered tasks are checked when built
            names.append(env_id)
    return names


class GymEnv(HostEnv):
    """A Gymnasium environment with actions rescaled from [-1, 1] to the task's bounds."""

    def __init__(self, task: str, action_repeat: int = 1, render: bool = False):
        import gymnasium

        if render:
            os.environ.setdefault("MUJOCO_GL", "egl")
        kwargs = {"render_mode": "rgb_array"} if render else {}
        kwargs["disable_env_checker"] = True  # its step-to-step state would break set_state
        try:
            self._env = gymnasium.make(task, **kwargs)
        except (ImportError, gymnasium.error.Error) as exc:
            from fluxrl.errors import FluxError

            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FluxError(f"gym/{task} cannot be built here: {first}") from None
        space = self._env.action_space
        self._low = np.asarray(space.low, np.float64)
        self._high = np.asarray(space.high, np.float64)
        if not (np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high))):
            from fluxrl.errors import FluxError

            raise FluxError(f"gym/{task} has unbounded actions; fluxrl needs a bounded Box")
        obs_dim = int(np.prod(self._env.observation_space.shape))
        limit = self._env.spec.max_episode_steps or 1000
        self.spec = EnvSpec(f"gym/{task}", "gym", obs_dim, int(space.shape[0]), action_repeat,
                            -(-limit // action_repeat))
        self._repeat = action_repeat
        u = self._env.unwrapped
        self._mj = hasattr(u, "model") and hasattr(u, "data") and type(u.model).__name__ == "MjModel"

    def reset(self, seed: int | None = None) -> np.ndarray:
        obs, _ = self._env.reset(seed=seed)
        return np.asarray(obs, np.float32).ravel()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        a = self._low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._high - self._low)
        total = 0.0
        for _ in range(self._repeat):
            obs, r, term, trunc, _ = self._env.step(a)
            total += float(r)
            if term or trunc:
                break
        return np.asarray(obs, np.float32).ravel(), total, bool(term), bool(trunc)

    def _time_limit(self):
        env = self._env
        while env is not None:
            if hasattr(env, "_elapsed_steps"):
                return env
            env = getattr(env, "env", None)
        return None

    def get_state(self) -> dict:
        """Plain data: ``mj`` (the MuJoCo ``mjSTATE_INTEGRATION`` vector) or ``classic`` (the
        :data:`CLASSIC_STATE` attributes the task has), plus ``elapsed`` (the time limit's step
        counter) and ``rng`` (the task's bit-generator state, for later resets)."""
        u = self._env.unwrapped
        tl = self._time_limit()
        extra = {"elapsed": getattr(tl, "_elapsed_steps", None),
                 "rng": copy.deepcopy(u.np_random.bit_generator.state)}
        if self._mj:
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            buf = np.empty(mujoco.mj_stateSize(u.model, spec), np.float64)
            mujoco.mj_getState(u.model, u.data, buf, spec)
            return {"mj": buf, **extra}
        classic = {k: copy.deepcopy(u.__dict__[k]) for k in CLASSIC_STATE if k in u.__dict__}
        return {"classic": classic, **extra}

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned (also after a json+npz round trip)."""
        u = self._env.unwrapped
        if self._mj:
            import mujoco

            spec = mujoco.mjtState.mjSTATE_INTEGRATION
            mujoco.mj_setState(u.model, u.data, np.asarray(state["mj"], np.float64), spec)
            mujoco.mj_forward(u.model, u.data)
        else:
            for k, v in state["classic"].items():
                setattr(u, k, copy.deepcopy(v))
        u.np_random.bit_generator.state = state["rng"]
        tl = self._time_limit()
        if tl is not None:
            tl._elapsed_steps = state["elapsed"]
        # Gymnasium's order-enforcing wrapper must know a reset happened before.
        env = self._env
        while env is not None:
            if hasattr(env, "_has_reset"):
                env._has_reset = True
            env = getattr(env, "env", None)

    def render(self, width: int = 320, height: int = 240) -> np.ndarray:
        return np.asarray(self._env.render())

    def close(self) -> None:
        self._env.close()
