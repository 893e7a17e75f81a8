"""Small pure-JAX tasks of fluxrl's own, ``jax/<Name>``: fast enough on a CPU for learning tests.

- ``jax/Pendulum``: Gymnasium's ``Pendulum-v1`` (``gymnasium/envs/classic_control/pendulum.py``)
  in JAX, step for step (tests/test_jax_envs.py checks it against Gymnasium): swing-up with
  torque ``2 a``, reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)``, 200 steps, no termination.
- ``jax/PointReach``: a point in ``[-1, 1]^2`` moves by ``0.1 a`` per step towards a random goal;
  reward ``-|p - g|`` per step; the episode terminates when the point is within 0.1 of the goal
  and is truncated after 50 steps. A random policy scores about -35, a good one about -3.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Pendulum:
    """Gymnasium Pendulum-v1 dynamics (g = 10, m = l = 1, dt = 0.05, max speed 8, torque 2)."""

    obs_dim: int = 3
    act_dim: int = 1
    episode_length: int = 200
    g: float = 10.0
    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    fps: int = 20  #: 1 / dt, for videos

    def reset(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Angle in [-pi, pi], angular velocity in [-1, 1] (Gymnasium's default bounds)."""
        sim = jax.random.uniform(key, (2,), minval=jnp.array([-jnp.pi, -1.0]),
                                 maxval=jnp.array([jnp.pi, 1.0]))
        return sim, self.observe(sim)

    def observe(self, sim: jax.Array) -> jax.Array:
        """``[cos theta, sin theta, theta_dot]``."""
        return jnp.stack([jnp.cos(sim[0]), jnp.sin(sim[0]), sim[1]])

    def step(self, sim: jax.Array, action: jax.Array):
        """One step of Gymnasium's update (semi-implicit Euler, speed clipped)."""
        th, thdot = sim[0], sim[1]
        u = jnp.clip(action[0] * self.max_torque, -self.max_torque, self.max_torque)
        angle = ((th + jnp.pi) % (2 * jnp.pi)) - jnp.pi
        cost = angle**2 + 0.1 * thdot**2 + 0.001 * u**2
        thdot = jnp.clip(thdot + (3 * self.g / 2 * jnp.sin(th) + 3.0 * u) * self.dt,
                         -self.max_speed, self.max_speed)
        new = jnp.stack([th + thdot * self.dt, thdot])
        return new, self.observe(new), -cost, jnp.bool_(False)

    def render(self, sims: np.ndarray, width: int = 320, height: int = 240) -> list[np.ndarray]:
        """Frames of states ``[T, 2]`` drawn by Gymnasium's own Pendulum-v1 renderer."""
        import gymnasium

        env = gymnasium.make("Pendulum-v1", render_mode="rgb_array").unwrapped
        env.screen_dim = min(width, height)
        env.reset(seed=0)
        frames = []
        for th, thdot in np.asarray(sims, np.float64):
            env.state, env.last_u = np.array([th, thdot]), None
            frames.append(env.render())
        env.close()
        return frames


@dataclass(frozen=True)
class PointReach:
    """A 2-D point that reaches for a goal (module docs)."""

    obs_dim: int = 4
    act_dim: int = 2
    episode_length: int = 50
    speed: float = 0.1
    radius: float = 0.1
    fps: int = 10  #: video frame rate (the task has no physical time)

    def reset(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Point and goal uniform in the square."""
        sim = jax.random.uniform(key, (4,), minval=-1.0, maxval=1.0)
        return sim, self.observe(sim)

    def observe(self, sim: jax.Array) -> jax.Array:
        """``[point, goal - point]``."""
        return jnp.concatenate([sim[:2], sim[2:] - sim[:2]])

    def step(self, sim: jax.Array, action: jax.Array):
        """Move, pay the distance left, stop inside the goal radius."""
        point = jnp.clip(sim[:2] + self.speed * action, -1.0, 1.0)
        new = jnp.concatenate([point, sim[2:]])
        dist = jnp.linalg.norm(new[2:] - point)
        return new, self.observe(new), -dist, dist < self.radius

    def render(self, sims: np.ndarray, width: int = 240, height: int = 240) -> list[np.ndarray]:
        """Frames of states ``[T, 4]``: the goal's radius in green, the point in white."""
        size = min(width, height)
        yy, xx = np.mgrid[0:size, 0:size]
        to_px = lambda v: (np.asarray(v) + 1.0) / 2.0 * (size - 1)  # noqa: E731
        frames = []
        for sim in np.asarray(sims):
            img = np.full((size, size, 3), 30, np.uint8)
            gx, gy = to_px(sim[2:])
            img[(xx - gx) ** 2 + (yy - gy) ** 2 <= (self.radius * size / 2) ** 2] = (40, 160, 60)
            px, py = to_px(sim[:2])
            img[(xx - px) ** 2 + (yy - py) ** 2 <= (size / 60 + 1) ** 2] = (240, 240, 240)
            frames.append(img[::-1])  # y up
        return frames


#: ``jax/<name>`` -> task class
TASKS = {"Pendulum": Pendulum, "PointReach": PointReach}
