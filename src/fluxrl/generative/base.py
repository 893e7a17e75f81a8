"""The generative-model interface and the one ``lax.scan`` sampler every model shares.

A model is a frozen dataclass describing a Gaussian path ``x_t = alpha(t) x0 + sigma(t) eps``
(``t = 0`` data, large ``t`` noise), what its network predicts, how training times are drawn and
which time grid its sampler walks. Everything else is written here once:

- ``q_sample(key, x0, t) -> (x_t, eps)``: forward noising;
- ``loss(apply, params, x0, cond, key, weights=None)``: mean over the batch of ``weights *``
  per-sample regression loss (``per_sample_loss`` gives the ``[batch]`` vector);
- ``sample(apply, params, cond, key, shape, steps, ...)``: one ``lax.scan`` over steps;
- ``to_x0 / to_eps / to_score / from_score``: the model's prediction in other terms.

``apply`` is a :class:`~fluxrl.nets.denoiser.Denoiser` module (its ``embed_cond`` / ``embed_time``
run once per chain), a :class:`Network`, or any ``f(params, x_t, t_in, cond)``, where ``t_in =
model.time_input(t)`` (``t`` itself, EDM: ``ln(sigma) / 4``). ``params`` is the ``"params"``
collection.
"""

from __future__ import annotations

import abc
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fluxrl.errors import FluxError, close_matches
from fluxrl.generative import conversions as cv
from fluxrl.rng import normal

Array = jax.Array
Guide = Callable[[Array, Array, Array], Array]


class Network(NamedTuple):
    """A denoiser as three pure functions, so the sampler can hoist per-chain work out of the loop:
    ``embed_cond(params, cond)``, ``embed_time(params, t_in)``, ``head(params, x_t, c, e)``."""

    embed_cond: Callable[[Any, Array], Any]
    embed_time: Callable[[Any, Array], Any]
    head: Callable[[Any, Array, Any, Any], Array]


def as_network(apply: Any) -> Network:
    """Wrap a Denoiser module, a plain module / function ``f(params, x_t, t_in, cond)``, or pass a
    :class:`Network` through. Plain functions get ``t_in`` and ``cond`` broadcast to ``x_t``."""
    if isinstance(apply, Network):
        return apply
    if isinstance(apply, nn.Module) and hasattr(apply, "embed_cond"):
        m = apply
        return Network(lambda p, c: m.apply({"params": p}, c, method="embed_cond"),
                       lambda p, t: m.apply({"params": p}, t, method="embed_time"),
                       lambda p, x, c, e: m.apply({"params": p}, x, c, e, method="head"))
    if isinstance(apply, nn.Module):
        module = apply
        apply = lambda p, x, t, c: module.apply({"params": p}, x, t, c)  # noqa: E731
    if not callable(apply):
        raise FluxError(f"expected a Denoiser, a Network or a function, got {type(apply).__name__}")

    def head(p: Any, x: Array, c: Array, t: Array) -> Array:
        lead = x.shape[:-1]
        return apply(p, x, jnp.broadcast_to(t, lead), jnp.broadcast_to(c, lead + c.shape[-1:]))

    return Network(lambda p, c: c, lambda p, t: t, head)


def check_steps(steps: Any, what: str = "steps") -> int:
    """A positive Python int, else a :class:`FluxError`."""
    try:
        n = operator.index(steps)
    except TypeError:
        raise FluxError(f"{what} must be a positive integer, got {steps!r}") from None
    if n <= 0:
        raise FluxError(f"{what} must be a positive integer, got {n}")
    return n


def bcast(v: Array, x: Array) -> Array:
    """Append trailing axes to ``v`` (shape ``x.shape[:k]``) so it broadcasts against ``x``."""
    v = jnp.asarray(v, x.dtype)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


@dataclass(frozen=True)
class GenerativeModel(abc.ABC):
    """Base of every model. ``steps``: default sampling steps (protocol: 20). ``clip``: clip samples
    to [-1, 1], the action box (default on); with ``clip_denoised`` the ``x0`` estimate is also
    clipped inside every step (Ho et al. 2020's ``clip_denoised``, on by default for diffusion)."""

    steps: int = 20
    clip: bool = True
    clip_denoised: bool = False

    prediction: ClassVar[str] = ""  # "eps", "velocity" or "x0": what the (preconditioned) net outputs
    methods: ClassVar[dict[str, tuple[int, float]]] = {}  # sampler name -> (order, default eta)
    t_eps: ClassVar[float] = 1e-3  # smallest time at which a net is evaluated (Heun's last step)
    t_ceiling: ClassVar[float] = 1.0  # Heun's churn never raises t above this

    def __post_init__(self) -> None:
        check_steps(self.steps)

    # ---- what a model defines -------------------------------------------------------------
    @abc.abstractmethod
    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        """``(alpha_t, sigma_t)`` of the path, elementwise in ``t``."""

    @abc.abstractmethod
    def sample_time(self, key: Array, shape: Sequence[int]) -> Array:
        """Training times."""

    @abc.abstractmethod
    def time_grid(self, steps: int) -> Array:
        """``[steps + 1]`` decreasing times from the prior to the data; the last is 0."""

    @abc.abstractmethod
    def split(self, pred: Array, x_t: Array, t: Array) -> tuple[Array, Array]:
        """The model's prediction as ``(x0, eps)`` estimates (``t`` broadcast to ``x_t``)."""

    @abc.abstractmethod
    def join(self, x0: Array, eps: Array, t: Array) -> Array:
        """``(x0, eps) -> `` the model's prediction; with the true pair it is the training target."""

    def time_input(self, t: Array) -> Array:
        """What the network is told about the time."""
        return t

    def precondition(self, t: Array) -> tuple[Array, Array, Array] | None:
        """``(c_in, c_skip, c_out)``: prediction ``= c_skip x + c_out net(c_in x)``; None = identity."""
        return None

    def check_sampling(self, steps: int) -> None:  # noqa: B027 - optional hook, no limits by default
        """Model-specific limits on the number of sampling steps."""

    # ---- forward process and loss ---------------------------------------------------------
    def q_sample(self, key: Array, x0: Array, t: Array) -> tuple[Array, Array]:
        """``x_t = alpha_t x0 + sigma_t eps`` with fresh ``eps``; ``t`` has shape ``x0.shape[:-1]``
        (or is a scalar). Returns ``(x_t, eps)``."""
        eps = normal(key, x0.shape).astype(x0.dtype)
        a, s = self.alpha_sigma(jnp.asarray(t, x0.dtype))
        return bcast(a, x0) * x0 + bcast(s, x0) * eps, eps

    def _net(self, net: Network, params: Any, x: Array, t: Array, c: Any, e: Any) -> Array:
        """The model's prediction from the raw network output (applies EDM preconditioning)."""
        pre = self.precondition(t)
        if pre is None:
            return net.head(params, x, c, e)
        c_in, c_skip, c_out = (bcast(v, x) for v in pre)
        return c_skip * x + c_out * net.head(params, c_in * x, c, e)

    def per_sample_loss(self, apply: Any, params: Any, x0: Array, cond: Array,
                        key: Array, max_error: float | None = None) -> Array:
        """Denoising / matching loss of each sample, ``[batch]`` (mean over the last axis); with
        ``max_error`` each squared error is first clipped to at most that (flow-rl DPMD: 3.0)."""
        net = as_network(apply)
        kt, kn = jax.random.split(key)
        t = self.sample_time(kt, x0.shape[:-1])
        x_t, eps = self.q_sample(kn, x0, t)
        c, e = net.embed_cond(params, cond), net.embed_time(params, self.time_input(t))
        target = self.join(x0, eps, bcast(t, x0))
        pre = self.precondition(t)
        if pre is None:
            out = net.head(params, x_t, c, e)
        else:  # regress the raw net on the effective target (Karras et al. 2022, eq. 8)
            c_in, c_skip, c_out = (bcast(v, x0) for v in pre)
            out = net.head(params, c_in * x_t, c, e)
            target = (target - c_skip * x_t) / c_out
        err = (out - target) ** 2
        return jnp.mean(err if max_error is None else jnp.minimum(err, max_error), axis=-1)

    def loss(self, apply: Any, params: Any, x0: Array, cond: Array, key: Array,
             weights: Array | None = None, max_error: float | None = None) -> Array:
        """``mean(weights * per_sample_loss)``; ``weights`` has shape ``x0.shape[:-1]`` (e.g.
        ``exp(Q / lambda)`` in weighted matching) and is not normalised here."""
        per = self.per_sample_loss(apply, params, x0, cond, key, max_error)
        if weights is None:
            return per.mean()
        if jnp.shape(weights) != per.shape:
            raise FluxError(f"weights must have shape {per.shape}, got {jnp.shape(weights)}")
        return jnp.mean(weights * per)

    # ---- conversions ------------------------------------------------------------------------
    def _path(self, t: Array, x: Array) -> tuple[Array, Array, Array]:
        t = bcast(jnp.asarray(t, x.dtype), x)
        a, s = self.alpha_sigma(t)
        return t, a, s

    def to_x0(self, pred: Array, x_t: Array, t: Array) -> Array:
        """The prediction as a clean-sample estimate."""
        return self.split(pred, x_t, bcast(t, x_t))[0]

    def to_eps(self, pred: Array, x_t: Array, t: Array) -> Array:
        """The prediction as a noise estimate."""
        return self.split(pred, x_t, bcast(t, x_t))[1]

    def to_score(self, pred: Array, x_t: Array, t: Array) -> Array:
        """The prediction as a score ``grad_x log p_t(x_t)``."""
        t, _, s = self._path(t, x_t)
        return cv.eps_to_score(self.split(pred, x_t, t)[1], s)

    def from_score(self, score: Array, x_t: Array, t: Array) -> Array:
        """A score (e.g. the model's plus ``grad_a Q / lambda``) as this model's prediction."""
        t, a, s = self._path(t, x_t)
        eps = cv.score_to_eps(score, s)
        return self.join(cv.eps_to_x0(eps, x_t, a, s), eps, t)

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, apply: Any, params: Any, cond: Array, key: Array, shape: Sequence[int],
               steps: int | None = None, *, method: str | None = None, eta: float | None = None,
               differentiable: bool = False, return_history: bool = False,
               unroll: int | bool = 1, clip: bool | None = None,
               guide: Guide | None = None,
               grid: Array | None = None) -> Array | tuple[Array, Array]:
        """Draw ``shape = (..., dim)`` samples by one ``lax.scan`` over ``steps`` (default
        ``self.steps``).

        ``cond``'s leading dims broadcast against ``shape[:-1]``: ``cond [B, 1, obs]`` with ``shape
        (B, N, act)`` draws N actions per state and embeds each state once. ``method`` is one of
        ``self.methods`` (first order: DDPM / DDIM / Euler, one net call per step; ``heun``: two,
        one on the last step). ``eta`` is the stochasticity: for first-order steps the DDIM
        ``eta`` (Song et al. 2021, arXiv 2010.02502: 0 deterministic, 1 the DDPM posterior
        variance), for Heun the churn ``gamma`` of Karras et al. 2022, Alg. 2. Parameters enter
        through ``stop_gradient`` unless ``differentiable=True``, in which case gradients reach
        them through every step. ``clip`` (default ``self.clip``) clips the result to [-1, 1].
        ``guide(pred, x_t, t) -> pred`` edits every prediction (e.g. add ``grad_a Q`` via
        ``to_score`` / ``from_score``). Returns the samples, and with ``return_history`` also the
        chain ``[steps + 1, *shape]`` (prior draw first, returned samples last). ``grid``
        (``[steps + 1]`` decreasing times) replaces ``self.time_grid(steps)``, e.g. to stop at a
        positive time (DIME's chain, whose every step must stay stochastic).
        """
        steps = check_steps(len(grid) - 1 if grid is not None else steps if steps is not None
                            else self.steps)
        self.check_sampling(steps)
        method = method or next(iter(self.methods))
        if method not in self.methods:
            raise FluxError(f"unknown sampler {method!r} for {type(self).__name__}; "
                            f"{close_matches(method, self.methods)}")
        order, eta = self.methods[method][0], float(self.methods[method][1] if eta is None else eta)
        if eta < 0 or (order == 1 and eta > 1):
            raise FluxError(f"eta for the {method} sampler must be in "
                            f"{'[0, 1]' if order == 1 else '[0, inf)'}, got {eta}")
        clip = self.clip if clip is None else clip
        net = as_network(apply)
        p = params if differentiable else jax.lax.stop_gradient(params)

        grid = self.time_grid(steps) if grid is None else jnp.asarray(grid, jnp.float32)
        t_cur, t_next = grid[:-1], grid[1:]
        t_eval = t_cur if order == 1 or eta == 0 else jnp.minimum(t_cur * (1 + eta), self.t_ceiling)
        c = net.embed_cond(p, cond)
        e_eval = net.embed_time(p, self.time_input(t_eval))
        e_next = None  # Heun's second evaluation, at the next grid time
        if order == 2:
            e_next = net.embed_time(p, self.time_input(jnp.maximum(t_next, self.t_eps)))
        k0, ks = jax.random.split(key)
        x_init = self.alpha_sigma(grid[0])[1] * normal(k0, tuple(shape))

        def denoise(x: Array, t: Array, e: Any) -> tuple[Array, Array]:
            pred = self._net(net, p, x, t, c, e)
            if guide is not None:
                pred = guide(pred, x, t)
            x0, eps = self.split(pred, x, t)
            if clip and self.clip_denoised:
                a, s = self.alpha_sigma(t)
                x0 = jnp.clip(x0, -1.0, 1.0)
                eps = cv.x0_to_eps(x0, x, a, s)
            return x0, eps

        step = self._first_order if order == 1 else self._heun

        def body(x: Array, xs: tuple) -> tuple[Array, Array | None]:
            x = step(denoise, x, *xs, eta)
            return x, (x if return_history else None)

        xs = (t_cur, t_eval, t_next, e_eval, e_next, jax.random.split(ks, steps))
        x, hist = jax.lax.scan(body, x_init, xs, unroll=unroll)
        if clip:
            x = jnp.clip(x, -1.0, 1.0)
        if not return_history:
            return x
        return x, jnp.concatenate([x_init[None], hist[:-1], x[None]])

    def step_std(self, t: Array, s: Array, eta: float = 1.0) -> tuple[Array, Array]:
        """``(c, n)`` of the first-order step from time ``t`` to ``s < t``: ``c = eta sigma_s
        sqrt(1 - SNR_t / SNR_s)`` sets the step's mean ``alpha_s x0 + sqrt(sigma_s^2 - c^2) eps``
        (DDIM's family; ``eta = 1`` gives the DDPM posterior mean), and ``n`` is the std of the
        Gaussian noise the step adds. Here ``n = c`` (at ``eta = 1`` the posterior std, Ho et
        al.'s ``beta-tilde``); VP models may add more (:attr:`VPDiffusion.ddpm_variance`)."""
        a_t, s_t = self.alpha_sigma(t)
        a_s, s_s = self.alpha_sigma(s)
        c = eta * s_s * jnp.sqrt(jnp.maximum(1 - ((a_t * s_s) / (a_s * s_t)) ** 2, 0.0))
        return c, c

    def _first_order(self, denoise: Callable, x: Array, t: Array, t_eval: Array, t_next: Array,
                     e: Any, e_next: Any, key: Array, eta: float) -> Array:
        """Generalised DDIM step on the Gaussian path, ``x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2)
        eps + n z`` with ``(c, n) = step_std(t, s, eta)``. ``eta = 1`` is DDPM ancestral
        sampling; ``eta = 0`` is DDIM, which on the linear path is exactly Euler on the velocity
        and on EDM's path Euler on ``dx/dsigma``."""
        x0, eps = denoise(x, t, e)
        a_s, s_s = self.alpha_sigma(t_next)
        x_next = a_s * x0
        if eta == 0:
            return x_next + s_s * eps
        c, n = self.step_std(t, t_next, eta)
        x_next = x_next + jnp.sqrt(jnp.maximum(s_s**2 - c**2, 0.0)) * eps
        return x_next + n * normal(key, x.shape).astype(x.dtype)

    def _velocity(self, denoise: Callable, x: Array, t: Array, e: Any) -> Array:
        x0, eps = denoise(x, t, e)
        _, (da, ds) = jax.jvp(self.alpha_sigma, (t,), (jnp.ones_like(t),))
        return cv.ode_velocity(x0, eps, da, ds)

    def _heun(self, denoise: Callable, x: Array, t: Array, t_hat: Array, t_next: Array,
              e_hat: Any, e_next: Any, key: Array, eta: float) -> Array:
        """Heun's method on the probability-flow ODE (Karras et al. 2022, Alg. 1-2): optional churn
        from ``t`` up to ``t_hat`` by forward noising, an Euler step, and the trapezoidal
        correction, skipped on the final step into ``sigma = 0``."""
        if eta > 0:
            a, s = self.alpha_sigma(t)
            a_hat, s_hat = self.alpha_sigma(t_hat)
            r = jnp.where(t_hat > t, a_hat / jnp.where(a > 0, a, 1.0), 1.0)
            std = jnp.sqrt(jnp.maximum(s_hat**2 - (r * s) ** 2, 0.0))
            x = r * x + std * normal(key, x.shape).astype(x.dtype)
        dt = t_next - t_hat
        d1 = self._velocity(denoise, x, t_hat, e_hat)
        x_euler = x + dt * d1
        d2 = self._velocity(denoise, x_euler, jnp.maximum(t_next, self.t_eps), e_next)
        return jnp.where(self.alpha_sigma(t_next)[1] > 0, x + dt * 0.5 * (d1 + d2), x_euler)
