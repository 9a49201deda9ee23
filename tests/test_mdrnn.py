"""MDRNN grid cell, raster and wavefront: equal to a NumPy double loop, steps measured."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxrnn import mdrnn


def numpy_grid(params, x, phi=np.tanh):
    """The SPEC §6 recurrence as a plain double loop over one grid x of shape (H, W, D)."""
    height, width, _ = x.shape
    w_in, w_w, w_n = (np.asarray(params[k]) for k in ("W_in", "W_W", "W_N"))
    b = np.asarray(params["b"]) if "b" in params else 0.0
    h = np.zeros((height, width, w_w.shape[0]))
    outside = np.zeros(w_w.shape[0])
    for i in range(height):
        for j in range(width):
            west = h[i - 1, j] if i > 0 else outside
            north = h[i, j - 1] if j > 0 else outside
            h[i, j] = phi(w_in.T @ x[i, j] + w_w.T @ west + w_n.T @ north + b)
    return h


def numpy_batch(params, x, phi=np.tanh):
    x = np.asarray(x)
    flat = x.reshape((-1, *x.shape[-3:]))
    out = np.stack([numpy_grid(params, g, phi) for g in flat])
    return out.reshape((*x.shape[:-1], out.shape[-1]))


def setup(height, width, batch=(), in_dim=3, hidden=4, seed=0, dtype=jnp.float64, bias=False):
    key_p, key_x, key_b = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = mdrnn.init(key_p, in_dim, hidden, bias=bias, dtype=dtype)
    if bias:
        params["b"] = jax.random.normal(key_b, (hidden,), dtype)
    x = jax.random.normal(key_x, (*batch, height, width, in_dim), dtype)
    return params, x


RUNNERS = {
    "raster": mdrnn.raster,
    "raster_fast": mdrnn.raster_fast,
    "wavefront": mdrnn.wavefront,
    "wavefront_no_groups": lambda p, x, **kw: mdrnn.wavefront(p, x, min_length=1, fill=1.0),
    "wavefront_coarse": lambda p, x, **kw: mdrnn.wavefront(p, x, min_length=2, fill=0.3),
}
JITTED = {name: jax.jit(run) for name, run in RUNNERS.items()}

sides = st.integers(2, 7)
grid_shapes = st.one_of(
    st.just((1, 1)),
    st.tuples(st.just(1), sides),
    st.tuples(sides, st.just(1)),
    st.tuples(sides, sides),
)
batches = st.sampled_from([(), (2,), (2, 1)])


@settings(max_examples=6)
@given(shape=grid_shapes, batch=batches, seed=st.integers(0, 2**16))
def test_every_runner_equals_numpy_double_loop_float64(shape, batch, seed):
    """1x1, 1xW, Hx1 and HxW grids: every runner equals the double loop and each other."""
    height, width = shape
    params, x = setup(height, width, batch, seed=seed)
    expected = numpy_batch(params, x)
    got = {name: run(params, x) for name, run in JITTED.items()}
    for name, value in got.items():
        assert value.shape == (*batch, height, width, 4), name
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(got["wavefront"], got["raster"], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("shape", [(1, 30), (30, 1)])
def test_long_thin_grids(shape):
    params, x = setup(*shape, batch=(2,))
    expected = numpy_batch(params, x)
    for name, run in JITTED.items():
        np.testing.assert_allclose(run(params, x), expected, rtol=1e-12, atol=1e-12, err_msg=name)


def test_a_planted_mistake_is_caught_by_the_reference():
    """Swapping the roles of W_W and W_N changes the result: the reference sees orientation."""
    params, x = setup(4, 5)
    swapped = dict(params, W_W=params["W_N"], W_N=params["W_W"])
    assert np.max(np.abs(mdrnn.wavefront(swapped, x) - numpy_batch(params, x))) > 1e-3


def test_float32_paths():
    params, x = setup(13, 21, (3,), in_dim=5, hidden=8, dtype=jnp.float32)
    expected = numpy_batch(params, np.float64(x))
    for name, run in JITTED.items():
        got = run(params, x)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_bias_and_activation():
    params, x = setup(5, 6, (2,), bias=True)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))
    expected = numpy_batch(params, x, sigmoid)
    for run in (mdrnn.raster, mdrnn.raster_fast, mdrnn.wavefront):
        np.testing.assert_allclose(run(params, x, activation="sigmoid"), expected, rtol=1e-12)
    relu = numpy_batch(params, x, lambda z: np.maximum(z, 0.0))
    got = mdrnn.wavefront(params, x, activation=jax.nn.relu)
    np.testing.assert_allclose(got, relu, rtol=1e-12, atol=1e-12)


def test_grid_cell_apply_is_one_step_of_the_loop():
    params, x = setup(2, 2)
    h = numpy_grid(params, x)
    got = mdrnn.apply(params, h[0, 1], h[1, 0], x[1, 1])
    np.testing.assert_allclose(got, h[1, 1], rtol=1e-13)


# ---- plan of the wavefront ---------------------------------------------------------------


@settings(max_examples=50)
@given(
    height=st.integers(1, 80),
    width=st.integers(1, 80),
    fill=st.floats(0.1, 1.0),
    min_length=st.integers(1, 12),
)
def test_plan_covers_each_diagonal_once_with_bounded_padding(height, width, fill, min_length):
    groups = mdrnn.plan(height, width, fill=fill, min_length=min_length)
    covered = [g.first + t for g in groups for t in range(g.count)]
    assert covered == list(range(height + width - 1))
    for g in groups:
        lengths = [
            min(d, height - 1) - max(0, d - width + 1) + 1
            for d in range(g.first, g.first + g.count)
        ]
        assert g.length == max(lengths)
        assert g.length <= min_length or min(lengths) >= fill * g.length
        assert all(g.shifted == (d >= width) for d in range(g.first, g.first + g.count))


# ---- sequential steps, measured from the traced program -----------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (5, 8), (40, 23)])
def test_sequential_steps_measured(shape):
    height, width = shape
    params, x = setup(height, width, (2,))
    steps = lambda run: mdrnn.sequential_steps(lambda a: run(params, a), x)
    assert steps(mdrnn.wavefront) == height + width - 1
    assert steps(RUNNERS["wavefront_no_groups"]) == height + width - 1
    assert steps(mdrnn.raster) == height * width
    assert steps(mdrnn.raster_fast) == height * width


def test_sequential_steps_of_a_planted_extra_loop_is_seen():
    params, x = setup(4, 5)

    def wavefront_twice(a):
        return mdrnn.wavefront(params, mdrnn.wavefront(params, a)[..., :3])

    assert mdrnn.sequential_steps(wavefront_twice, x) == 2 * (4 + 5 - 1)


# ---- counts ------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("in_dim,hidden", [(1, 1), (3, 4), (32, 32), (7, 2)])
def test_n_weights_is_the_size_of_the_params(in_dim, hidden, bias):
    params = mdrnn.init(jax.random.PRNGKey(0), in_dim, hidden, bias=bias)
    size = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    assert mdrnn.n_weights(in_dim, hidden, bias=bias) == size
    assert size == in_dim * hidden + 2 * hidden**2 + (hidden if bias else 0)


def _xla_cost(fn, *args):
    """XLA:CPU's cost count (the bounds below are its counting, on any default backend)."""
    args = jax.device_put(args, jax.devices("cpu")[0])
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return cost[0] if isinstance(cost, list) else cost


@pytest.mark.parametrize("shape", [(3, 4, 6, 8), (3, 3, 8, 32)])
def test_n_flops_against_xla_cost_analysis(shape):
    """XLA counts the flops of the fully unrolled raster (loops are counted once otherwise).

    Per cell it counts the three matmuls (the formula: 2·(D·hidden + 2·hidden²)) plus the
    elementwise ops around them (two additions and the boundary select: 3·hidden) and some
    scalar index arithmetic; the tanh goes into 'transcendentals', exactly H·W·hidden of
    them. So XLA's flops lie between the formula and the formula + (4·hidden + 64) per cell,
    which is within 10% of the formula once hidden >= 16.
    """
    height, width, in_dim, hidden = shape
    params, x = setup(height, width, (), in_dim=in_dim, hidden=hidden, dtype=jnp.float32)
    cost = _xla_cost(lambda p, a: mdrnn.raster(p, a, unroll=True), params, x)
    formula = mdrnn.n_flops(height, width, in_dim, hidden)
    assert formula == 2 * height * width * (in_dim * hidden + 2 * hidden**2)
    assert formula <= cost["flops"] <= formula + height * width * (4 * hidden + 64)
    if hidden >= 16:
        assert cost["flops"] <= 1.1 * formula
    assert cost["transcendentals"] == height * width * hidden
    assert mdrnn.n_multiply_adds(height, width, in_dim, hidden) * 2 == formula
