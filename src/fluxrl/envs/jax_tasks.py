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


@dataclass(frozen=True)
class PointReach:
    """A 2-D point that reaches for a goal (module docs)."""

    obs_dim: int = 4
    act_dim: int = 2
    episode_length: int = 50
    speed: float = 0.1
    radius: float = 0.1

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


#: ``jax/<name>`` -> task class
TASKS = {"Pendulum": Pendulum, "PointReach": PointReach}
