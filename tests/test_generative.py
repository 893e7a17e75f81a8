"""The generative-model axis: every model fits a 2-D mixture, conversions agree, the sampler's
gradient switch, history and broadcasting work, per-sample weights mask samples, bad input is a
FluxError. Each model is trained once per module (3,000 Adam steps of a 2 x 64 net) and shared."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fluxrl.errors import FluxError
from fluxrl.generative import MODELS, Network, as_network, make_model
from fluxrl.generative import conversions as cv
from fluxrl.nets.backbones import MLP
from fluxrl.nets.denoiser import Denoiser, FourierTimeEmbedding, make_denoiser

# Mixture of three Gaussians with unequal weights on a circle inside [-1, 1]^2.
ANGLES = np.deg2rad([90.0, 210.0, 330.0])
MEANS = 0.6 * np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)
WEIGHTS = np.array([0.5, 0.3, 0.2])
STD = 0.06
# Tolerances: each mode's share of 2,000 samples within 0.07 of its weight, and under 10% of the
# samples farther than 4 std from every mean (the true mixture puts 0.03% there).
FRACTION_TOL, OUTLIER_TOL, N_SAMPLES = 0.07, 0.10, 2000
# The linear schedule needs a grid that is denser near the data at 20 steps (uniform: ~15% outliers).
FIT_OPTIONS = {"vp-cosine": {}, "vp-linear": {"grid_power": 2.0}, "ddpm": {}, "flow": {}, "edm": {}}
TRAIN_STEPS, BATCH, LR = 3000, 256, 1e-2
ALL = list(FIT_OPTIONS)


def small_net(out_dim: int = 2) -> Denoiser:
    """2 x 64 Mish: the fused input layer plus one backbone layer."""
    return Denoiser(MLP(64, 1, "mish"), out_dim, time_dim=16)


def init(net: Denoiser, key: jax.Array, x_dim: int = 2, c_dim: int = 1) -> dict:
    return net.init(key, jnp.zeros((1, x_dim)), jnp.zeros((1,)), jnp.zeros((1, c_dim)))["params"]


def mixture(key: jax.Array, n: int) -> jax.Array:
    k1, k2 = jax.random.split(key)
    idx = jax.random.choice(k1, 3, (n,), p=jnp.asarray(WEIGHTS))
    return jnp.asarray(MEANS, jnp.float32)[idx] + STD * jax.random.normal(k2, (n, 2))


def fit(name: str):
    model, net = make_model(name, **FIT_OPTIONS[name]), small_net()
    tx = optax.adam(optax.cosine_decay_schedule(LR, TRAIN_STEPS, 0.05))
    cond = jnp.zeros((BATCH, 1))

    def step(carry, key):
        params, opt = carry
        kd, kl = jax.random.split(key)
        x0 = mixture(kd, BATCH)
        g = jax.grad(lambda p: model.loss(net, p, x0, cond, kl))(params)
        updates, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, updates), opt), None

    @jax.jit
    def train(params, key):
        return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, TRAIN_STEPS))[0][0]

    return model, net, train(init(net, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))


@pytest.fixture(scope="module")
def trained():
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = fit(name)
        return cache[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name,method", [("vp-cosine", "ddpm"), ("vp-linear", "ddpm"),
                                         ("ddpm", "ddpm"), ("ddpm", "ddim"), ("flow", "euler"),
                                         ("flow", "heun"), ("edm", "heun")])
def test_fits_mixture_of_three_gaussians(trained, name, method):
    model, net, params = trained(name)
    n = N_SAMPLES
    x = jax.jit(lambda p, k: model.sample(net, p, jnp.zeros((n, 1)), k, (n, 2), method=method))(
        params, jax.random.PRNGKey(2))
    x = np.asarray(x)
    assert x.shape == (n, 2) and np.all(np.abs(x) <= 1.0)
    dist = np.linalg.norm(x[:, None] - MEANS[None], axis=-1)
    share = np.bincount(dist.argmin(1), minlength=3) / n
    outliers = float((dist.min(1) > 4 * STD).mean())
    assert np.all(np.abs(share - WEIGHTS) < FRACTION_TOL), (share, outliers)
    assert outliers < OUTLIER_TOL, (share, outliers)


def test_generic_conversions_round_trip():
    ks = jax.random.split(jax.random.PRNGKey(3), 4)
    x0, eps = jax.random.normal(ks[0], (64, 3)), jax.random.normal(ks[1], (64, 3))
    alpha = jax.random.uniform(ks[2], (64, 1), minval=0.2, maxval=1.0)
    sigma = jax.random.uniform(ks[3], (64, 1), minval=0.1, maxval=2.0)
    x_t = alpha * x0 + sigma * eps
    score = cv.eps_to_score(eps, sigma)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # noqa: E731
    close(cv.score_to_eps(score, sigma), eps)
    close(cv.eps_to_x0(eps, x_t, alpha, sigma), x0)
    close(cv.x0_to_eps(x0, x_t, alpha, sigma), eps)
    close(cv.x0_to_score(x0, x_t, alpha, sigma), score)
    close(cv.score_to_x0(score, x_t, alpha, sigma), x0)


def test_velocity_conversions_round_trip():
    ks = jax.random.split(jax.random.PRNGKey(4), 3)
    x0, eps = jax.random.normal(ks[0], (64, 3)), jax.random.normal(ks[1], (64, 3))
    t = jax.random.uniform(ks[2], (64, 1), minval=0.05, maxval=0.95)
    x_t = (1 - t) * x0 + t * eps
    v = cv.x0_eps_to_velocity(x0, eps)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # noqa: E731
    close(cv.velocity_to_x0(v, x_t, t), x0)
    close(cv.velocity_to_eps(v, x_t, t), eps)
    close(cv.velocity_to_score(v, x_t, t), cv.eps_to_score(eps, t))
    close(cv.score_to_velocity(cv.velocity_to_score(v, x_t, t), x_t, t), v)
    close(cv.ode_velocity(x0, eps, -1.0, 1.0), v)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_conversions_agree(name):
    model = make_model(name)
    ks = jax.random.split(jax.random.PRNGKey(5), 4)
    x0, pred = jax.random.normal(ks[0], (32, 3)), jax.random.normal(ks[1], (32, 3))
    if name.startswith("ddpm"):
        t = jax.random.randint(ks[2], (32,), 2, model.timesteps - 1) / model.timesteps
    elif name == "edm":
        t = jax.random.uniform(ks[2], (32,), minval=0.1, maxval=5.0)
    else:
        t = jax.random.uniform(ks[2], (32,), minval=0.1, maxval=0.9)
    x_t, eps = model.q_sample(ks[3], x0, t)
    target = model.join(x0, eps, t[:, None])
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)  # noqa: E731
    close(model.to_x0(target, x_t, t), x0)  # the training target encodes the true (x0, eps)
    close(model.to_eps(target, x_t, t), eps)
    close(model.from_score(model.to_score(pred, x_t, t), x_t, t), pred)
    a, s = model.alpha_sigma(t[:, None])
    close(model.to_score(pred, x_t, t), cv.x0_to_score(model.to_x0(pred, x_t, t), x_t, a, s))


@pytest.mark.parametrize("name,method", [("vp-cosine", "ddpm"), ("flow", "euler"), ("edm", "heun")])
def test_gradient_reaches_params_only_when_differentiable(name, method):
    model, net = make_model(name), small_net()
    params = init(net, jax.random.PRNGKey(6))
    cond = jax.random.normal(jax.random.PRNGKey(7), (16, 1))  # nonzero, so in_cond gets a gradient

    def loss(p, differentiable):
        a = model.sample(net, p, cond, jax.random.PRNGKey(8), (16, 2), 3, method=method,
                         eta=0.3, differentiable=differentiable, clip=False)
        return jnp.sum(a**2)

    grads = jax.jit(lambda p: (jax.grad(loss)(p, True), jax.grad(loss)(p, False)))(params)
    on, off = (jax.tree.leaves(g) for g in grads)
    assert all(bool(jnp.any(g != 0)) and bool(jnp.all(jnp.isfinite(g))) for g in on)
    assert all(bool(jnp.all(g == 0)) for g in off)


@pytest.mark.parametrize("name", ["ddpm", "edm"])
def test_history_and_broadcast_cond(name):
    model, net = make_model(name), small_net()
    params = init(net, jax.random.PRNGKey(9), c_dim=4)
    cond, key, steps = jax.random.normal(jax.random.PRNGKey(10), (5, 1, 4)), jax.random.PRNGKey(11), 4
    plain = lambda p, x, t, c: net.apply({"params": p}, x, t, c)  # noqa: E731

    @jax.jit
    def run(p):
        x, hist = model.sample(net, p, cond, key, (5, 3, 2), steps, return_history=True)
        # the same chain from a plain apply function, the cond repeated per sample, unrolled
        cond_rep = jnp.repeat(cond, 3, axis=1)
        return x, hist, model.sample(plain, p, cond_rep, key, (5, 3, 2), steps, unroll=2)

    x, hist, x_plain = run(params)
    assert hist.shape == (steps + 1, 5, 3, 2)
    np.testing.assert_array_equal(hist[-1], x)
    np.testing.assert_allclose(x_plain, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["ddpm", "edm"])
def test_zero_weights_remove_samples_from_the_gradient(name):
    model, net = make_model(name), small_net()
    params = init(net, jax.random.PRNGKey(12))
    ks = jax.random.split(jax.random.PRNGKey(13), 3)
    x0_a, cond_a = mixture(ks[0], 32), jnp.zeros((32, 1))
    mask = jnp.arange(32) % 3 == 0  # these samples get weight 0 and different data in run b
    x0_b = jnp.where(mask[:, None], jax.random.uniform(ks[1], (32, 2), minval=-1, maxval=1), x0_a)
    cond_b = jnp.where(mask[:, None], 5.0, cond_a)
    w = jnp.where(mask, 0.0, jax.random.uniform(ks[2], (32,), minval=0.5, maxval=2.0))
    ones = jnp.ones(32)

    @jax.jit
    def run(x0_a, x0_b, cond_a, cond_b, w, ones):
        grad = lambda x0, c, w: ravel(jax.grad(  # noqa: E731
            lambda p: model.loss(net, p, x0, c, ks[2], w))(params))
        loss = lambda w: model.loss(net, params, x0_a, cond_a, ks[2], w)  # noqa: E731
        return (grad(x0_a, cond_a, w), grad(x0_b, cond_b, w), grad(x0_a, cond_a, ones),
                grad(x0_b, cond_b, ones), loss(ones), loss(None))

    g_a, g_b, g1_a, g1_b, l_ones, l_none = run(x0_a, x0_b, cond_a, cond_b, w, ones)
    np.testing.assert_allclose(g_a, g_b, atol=1e-6)
    assert not np.allclose(g1_a, g1_b)  # with unit weights the changed samples do matter
    np.testing.assert_allclose(l_ones, l_none, rtol=1e-6)
    with pytest.raises(FluxError, match="weights must have shape"):
        model.loss(net, params, x0_a, cond_a, ks[2], jnp.ones(31))


def ravel(tree) -> jax.Array:
    return jnp.concatenate([v.ravel() for v in jax.tree.leaves(tree)])


def test_bad_inputs_are_flux_errors():
    with pytest.raises(FluxError, match="did you mean ddpm"):
        make_model("ddpn")
    with pytest.raises(FluxError, match="choose one of: .*edm.*flow"):
        make_model("zzz")
    with pytest.raises(FluxError, match="did you mean steps"):
        make_model("flow", stepz=5)
    with pytest.raises(FluxError, match="noise schedule"):
        make_model("vp-cosine", schedule="cosin")
    for bad in (0, -3):
        with pytest.raises(FluxError, match="steps must be a positive integer"):
            make_model("edm", steps=bad)
    with pytest.raises(FluxError, match="timesteps"):
        make_model("ddpm", timesteps=0)
    model, net = make_model("ddpm"), small_net()
    params, cond, key = init(net, jax.random.PRNGKey(0)), jnp.zeros((4, 1)), jax.random.PRNGKey(1)
    for bad in (0, -1, 2.5):
        with pytest.raises(FluxError, match="steps must be a positive integer"):
            model.sample(net, params, cond, key, (4, 2), bad)
    with pytest.raises(FluxError, match="cannot sample in 50 steps"):
        model.sample(net, params, cond, key, (4, 2), 50)
    with pytest.raises(FluxError, match="did you mean ddim"):
        model.sample(net, params, cond, key, (4, 2), method="ddin")
    with pytest.raises(FluxError, match="eta"):
        model.sample(net, params, cond, key, (4, 2), eta=-0.5)
    with pytest.raises(FluxError, match="even"):
        FourierTimeEmbedding(7).init(key, jnp.zeros(3))


def test_denoiser_pieces():
    # fixed Fourier features hold no parameters, learned ones do
    assert FourierTimeEmbedding(8, learned=False).init(jax.random.PRNGKey(0), jnp.zeros(3)) == {}
    emb = FourierTimeEmbedding(8).init(jax.random.PRNGKey(0), jnp.zeros(3))
    assert emb["params"]["freqs"].shape == (4,)
    # protocol actor: 3 hidden layers of 256 (fused input layer + 2 backbone layers), 64-d time
    net = make_denoiser(6)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), jnp.zeros((1, 6)), jnp.zeros((1,)),
                               jnp.zeros((1, 17)))
    p = params["params"]
    assert p["in_x"]["kernel"].shape == (6, 256) and p["in_cond"]["kernel"].shape == (17, 256)
    assert p["time_out"]["kernel"].shape == (128, 64) and len(p["backbone"]) == 2
    # the split input layer is one Dense over the concatenation: __call__ == head(embeds)
    x, t, c = jnp.ones((2, 6)), jnp.array([0.1, 0.7]), jnp.ones((2, 17))
    n = as_network(net)
    assert isinstance(n, Network)
    split = jax.jit(lambda p: n.head(p, x, n.embed_cond(p, c), n.embed_time(p, t)))
    np.testing.assert_allclose(jax.jit(net.apply)(params, x, t, c), split(p), rtol=1e-5)


# --- the ancestral step's noise (ddpm_variance) ---------------------------------------------------


@pytest.mark.parametrize("name", ["ddpm", "vp-cosine"])
def test_ancestral_noise_matches_beta_and_beta_tilde_closed_forms(name):
    """Per step i of a 20-step chain, the added noise has variance beta_i = 1 - abar_i / abar_{i-1}
    (``ddpm_variance="beta"``, flow-rl ContinuousDDPM) or beta-tilde_i = (1 - abar_{i-1}) / (1 -
    abar_i) beta_i ("posterior"), zero on the final step into t = 0; the mean coefficient c is
    the posterior one in both. For the discrete DDPM the abar are its table's."""
    grid = make_model(name).time_grid(20)
    for var in ("posterior", "beta"):
        m = make_model(name, ddpm_variance=var)
        abar_t, abar_s = (np.asarray(m.alpha_bar(g), np.float64) for g in (grid[:-1], grid[1:]))
        beta = 1.0 - abar_t / abar_s
        beta_tilde = (1.0 - abar_s) / (1.0 - abar_t) * beta
        c, n = (np.asarray(v, np.float64) for v in m.step_std(grid[:-1], grid[1:]))
        want = beta if var == "beta" else beta_tilde
        want[-1] = 0.0  # the final step returns the x0 estimate
        np.testing.assert_allclose(n**2, want, rtol=2e-4, atol=1e-7)
        np.testing.assert_allclose(c**2, beta_tilde, rtol=2e-4, atol=1e-7)
        half = np.asarray(m.step_std(grid[:-1], grid[1:], 0.5)[1], np.float64)
        np.testing.assert_allclose(half, 0.5 * np.sqrt(want), rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("var", ["posterior", "beta"])
def test_sampler_step_adds_the_stated_noise(var):
    """One first-order step of the sampler with a fixed (x0, eps) prediction, drawn 40000 times:
    the empirical std of x_{i-1} equals step_std's n and its mean is the posterior mean
    alpha_s x0 + sqrt(sigma_s^2 - c^2) eps in both variants."""
    m = make_model("vp-cosine", ddpm_variance=var)
    grid = m.time_grid(20)
    t, s = grid[8], grid[9]
    x = jnp.full((40000, 1), 0.3)
    out = m._first_order(lambda x_, t_, e_: (jnp.full_like(x_, 0.2), jnp.full_like(x_, -0.4)),
                         x, t, t, s, None, None, jax.random.PRNGKey(3), 1.0)
    c, n = (float(v) for v in m.step_std(t, s))
    a_s, s_s = (float(v) for v in m.alpha_sigma(s))
    mean = a_s * 0.2 + np.sqrt(s_s**2 - c**2) * -0.4
    got = np.asarray(out[:, 0], np.float64)
    assert abs(got.mean() - mean) < 4 * n / np.sqrt(len(got))
    np.testing.assert_allclose(got.std(), n, rtol=0.02)


def _two_mode_denoiser(model, modes=(-0.5, 0.5), std=0.1):
    """The exact noise prediction E[eps | x_t] for p0 = an equal mixture of N(mode, std^2)."""
    mu = jnp.asarray(modes)

    def apply(p, x, t, c):
        a, s = (v[..., None] for v in model.alpha_sigma(t))
        v = a**2 * std**2 + s**2
        r = jax.nn.softmax(-0.5 * (x - a * mu) ** 2 / v, axis=-1)
        x0 = jnp.sum(r * (mu + a * std**2 / v * (x - a * mu)), -1, keepdims=True)
        return (x - a[..., :1] * x0) / s[..., :1]

    return apply


def test_beta_variance_widens_the_modes_as_the_issue_measured():
    """Two modes at +-0.5 of std 0.1, the exact denoiser, 20 cosine steps, 20000 samples: the
    posterior variance ends at a mode std of about 0.08, flow-rl's beta variance at about 0.11
    (more noise per step than the reverse process needs); both keep the modes equally weighted."""
    stds = {}
    for var in ("posterior", "beta"):
        m = make_model("vp-cosine", ddpm_variance=var)
        x = np.asarray(m.sample(_two_mode_denoiser(m), {}, jnp.zeros((1,)), jax.random.PRNGKey(0),
                                (20000, 1), 20)[:, 0], np.float64)
        stds[var] = (x - np.sign(x) * 0.5).std()
        assert abs(np.mean(x > 0) - 0.5) < 0.02
    assert 0.07 < stds["posterior"] < 0.09 and 0.10 < stds["beta"] < 0.12, stds


def test_unknown_ddpm_variance_is_a_flux_error():
    with pytest.raises(FluxError, match="ddpm_variance.*posterior"):
        make_model("ddpm", ddpm_variance="tilde")
