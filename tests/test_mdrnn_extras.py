"""MDRNN beyond the textbook: gradients, MD-LSTM, four directions, sizes, 3-D, receptive
field, and every error path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import mdrnn
from jaxrnn.mdrnn import grid3d, mdlstm

sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))


def numpy_grid(params, x):
    """SPEC §6 as a double loop over one grid (H, W, D)."""
    height, width, _ = x.shape
    w_in, w_w, w_n = (np.asarray(params[k]) for k in ("W_in", "W_W", "W_N"))
    h = np.zeros((height + 1, width + 1, w_w.shape[0]))  # row/column -1 stored at index 0
    for i in range(height):
        for j in range(width):
            h[i + 1, j + 1] = np.tanh(w_in.T @ x[i, j] + w_w.T @ h[i, j + 1] + w_n.T @ h[i + 1, j])
    return h[1:, 1:]


def numpy_mdlstm(params, x):
    """Graves et al. (2007) MD-LSTM as a double loop over one grid (H, W, D)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    height, width, _ = x.shape
    hidden = p["b_i"].shape[0]
    c = np.zeros((height + 1, width + 1, hidden))
    h = np.zeros((height + 1, width + 1, hidden))
    for i in range(height):
        for j in range(width):
            h_w, h_n = h[i, j + 1], h[i + 1, j]

            def a(g, i=i, j=j, h_w=h_w, h_n=h_n):
                return (
                    p[f"W_{g}"].T @ x[i, j]
                    + p[f"U_{g}W"].T @ h_w
                    + p[f"U_{g}N"].T @ h_n
                    + p[f"b_{g}"]
                )

            c[i + 1, j + 1] = (
                sigmoid(a("fW")) * c[i, j + 1]
                + sigmoid(a("fN")) * c[i + 1, j]
                + sigmoid(a("i")) * np.tanh(a("c"))
            )
            h[i + 1, j + 1] = sigmoid(a("o")) * np.tanh(c[i + 1, j + 1])
    return h[1:, 1:]


def numpy_grid3d(params, x):
    """The 3-D recurrence as a triple loop over one grid (n1, n2, n3, D)."""
    p = {k: np.asarray(v) for k, v in params.items()}
    n1, n2, n3, _ = x.shape
    h = np.zeros((n1 + 1, n2 + 1, n3 + 1, p["W_1"].shape[0]))
    for i in range(n1):
        for j in range(n2):
            for k in range(n3):
                h[i + 1, j + 1, k + 1] = np.tanh(
                    p["W_in"].T @ x[i, j, k]
                    + p["W_1"].T @ h[i, j + 1, k + 1]
                    + p["W_2"].T @ h[i + 1, j, k + 1]
                    + p["W_3"].T @ h[i + 1, j + 1, k]
                )
    return h[1:, 1:, 1:]


def grid_inputs(shape, in_dim=3, seed=1):
    return jax.random.normal(jax.random.PRNGKey(seed), (*shape, in_dim), jnp.float64)


PARAMS = mdrnn.init(jax.random.PRNGKey(0), 3, 4, dtype=jnp.float64)


# ---- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 7)])
def test_gradients_through_wavefront_equal_raster(shape):
    x = grid_inputs((2, *shape))
    target = jax.random.normal(jax.random.PRNGKey(5), (2, *shape, 4), jnp.float64)
    loss = lambda run: lambda p, a: jnp.sum((run(p, a) - target) ** 2)
    g_wave = jax.grad(loss(mdrnn.wavefront), argnums=(0, 1))(PARAMS, x)
    g_raster = jax.grad(loss(mdrnn.raster), argnums=(0, 1))(PARAMS, x)
    leaves = zip(
        jax.tree_util.tree_leaves(g_wave), jax.tree_util.tree_leaves(g_raster), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    # and against a central finite difference of the NumPy loop in one direction
    direction = jax.random.normal(jax.random.PRNGKey(9), (3, 4), jnp.float64)
    eps = 1e-6
    f = lambda w: np.sum(
        (np.stack([numpy_grid(dict(PARAMS, W_in=w), g) for g in np.asarray(x)]) - target) ** 2
    )
    w0 = np.asarray(PARAMS["W_in"])
    numeric = (f(w0 + eps * direction) - f(w0 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(np.sum(g_wave[0]["W_in"] * direction), numeric, rtol=1e-6)


@pytest.mark.parametrize("activation", ["sigmoid", "softplus"])
def test_hand_backward_of_the_wavefront_with_bias_sizes_and_any_activation(activation):
    """The wavefront's own backward pass (a wavefront on the flipped grid) equals autodiff
    of the raster run on each grid alone: with a bias, grids of different sizes, and an
    activation whose slope is not read from h (softplus: from the recomputed z)."""
    phi = jax.nn.softplus if activation == "softplus" else activation
    params = dict(PARAMS, b=jnp.linspace(-0.3, 0.4, 4))
    x = grid_inputs((2, 5, 6))
    sizes = np.array([[5, 2], [3, 6]])
    target = jax.random.normal(jax.random.PRNGKey(6), (2, 5, 6, 4), jnp.float64)

    def wave_loss(p, a):
        return jnp.sum((mdrnn.wavefront(p, a, activation=phi, sizes=sizes) - target) ** 2)

    def raster_loss(p, a):  # each grid alone, of its own size
        total = 0.0
        for b, (rows, cols) in enumerate(sizes):
            h = mdrnn.raster(p, a[b, :rows, :cols], activation=phi)
            total = total + jnp.sum((h - target[b, :rows, :cols]) ** 2)
        return (
            total
            + jnp.sum(target**2)
            - sum(  # the cells outside the grids: h = 0
                jnp.sum(target[b, :r, :c] ** 2) for b, (r, c) in enumerate(sizes)
            )
        )

    np.testing.assert_allclose(wave_loss(params, x), raster_loss(params, x), rtol=1e-12)
    g_wave = jax.grad(wave_loss, argnums=(0, 1))(params, x)
    g_raster = jax.grad(raster_loss, argnums=(0, 1))(params, x)
    assert set(g_wave[0]) == {"W_in", "W_W", "W_N", "b"}
    for a, b in zip(
        jax.tree_util.tree_leaves(g_wave), jax.tree_util.tree_leaves(g_raster), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g_wave[1][0, :, 2:], 0.0)  # outside grid 0: no gradient


@pytest.mark.parametrize("batch_chunk", [None, 1, 4])
def test_a_batch_run_in_chunks_equals_each_grid_alone_with_gradients(batch_chunk):
    """Six grids (batch (2, 3)) run ``batch_chunk`` at a time (4: one chunk padded with two
    empty grids): h equals the NumPy double loop on each grid, and the gradients equal
    autodiff of the raster of each grid alone."""
    x = grid_inputs((2, 3, 4, 5))
    target = jax.random.normal(jax.random.PRNGKey(7), (2, 3, 4, 5, 4), jnp.float64)
    h = mdrnn.wavefront(PARAMS, x, batch_chunk=batch_chunk)
    for b in np.ndindex(2, 3):
        np.testing.assert_allclose(h[b], numpy_grid(PARAMS, np.asarray(x[b])), rtol=1e-12)

    def wave_loss(p, a):
        return jnp.sum((mdrnn.wavefront(p, a, batch_chunk=batch_chunk) - target) ** 2)

    def raster_loss(p, a):
        return sum(jnp.sum((mdrnn.raster(p, a[b]) - target[b]) ** 2) for b in np.ndindex(2, 3))

    g_wave = jax.grad(wave_loss, argnums=(0, 1))(PARAMS, x)
    g_raster = jax.grad(raster_loss, argnums=(0, 1))(PARAMS, x)
    for a, b in zip(jax.tree.leaves(g_wave), jax.tree.leaves(g_raster), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_default_chunks_differ_forward_and_backward_and_change_nothing(monkeypatch):
    """With a 1280-byte budget, 4x5 grids of hidden 4 in float64 run 2 at a time forward
    (the per-cell inputs: 20 x 4 x 8 = 640 bytes a grid) and 1 at a time backward (twice
    that); five grids leave a padded chunk. Values and gradients equal the whole batch's."""
    from jaxrnn.mdrnn import _batch_chunks

    x = grid_inputs((5, 4, 5))
    loss = lambda p, a, **kw: jnp.sum(jnp.sin(mdrnn.wavefront(p, a, **kw)))
    whole = jax.value_and_grad(loss, argnums=(0, 1))(PARAMS, x, batch_chunk=5)
    monkeypatch.setattr(_batch_chunks, "CHUNK_BYTES", 1280)
    assert _batch_chunks.default_chunk((5, 4, 5), 4, jnp.float64) == 2
    assert _batch_chunks.default_chunk((5, 4, 5), 8, jnp.float64) == 1
    split = jax.value_and_grad(loss, argnums=(0, 1))(PARAMS, x)
    for a, b in zip(jax.tree.leaves(split), jax.tree.leaves(whole), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # and the forward really runs in chunks: 3 of them, H+W-1 = 8 steps each
    assert mdrnn.sequential_steps(lambda a: mdrnn.wavefront(PARAMS, a), x) == 3 * 8


def test_chunk_size_keeps_a_chunk_of_grids_within_2_mib():
    """H x W x per_cell x itemsize x chunk <= 2 MiB, and at least one grid."""
    from jaxrnn.mdrnn._batch_chunks import chunk_size

    assert chunk_size(128, 128, 32, jnp.float32) == 1  # 128 * 128 * 32 * 4 = 2 MiB a grid
    assert chunk_size(64, 64, 32, jnp.float32) == 4
    assert chunk_size(32, 32, 32, jnp.float32) == 16
    assert chunk_size(64, 64, 64, jnp.float64) == 1
    assert chunk_size(1000, 1000, 64, jnp.float32) == 1  # larger than the budget alone
    assert chunk_size(1, 1, 1, jnp.float32) == 2**19


# ---- MD-LSTM -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (6, 9)])
def test_mdlstm_wavefront_equals_numpy_loop(shape):
    params = mdlstm.init(jax.random.PRNGKey(2), 3, 4, forget_bias=0.5, dtype=jnp.float64)
    params = dict(params, b_o=jnp.linspace(-1.0, 1.0, 4))
    x = grid_inputs((2, *shape))
    got = mdlstm.wavefront(params, x)
    expected = np.stack([numpy_mdlstm(params, g) for g in np.asarray(x)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert mdrnn.sequential_steps(lambda a: mdlstm.wavefront(params, a), x) == sum(shape) - 1


def test_mdlstm_single_cell_and_float32():
    params = mdlstm.init(jax.random.PRNGKey(2), 3, 4)
    x = grid_inputs((5, 6)).astype(jnp.float32)
    expected = numpy_mdlstm(params, np.float64(x))
    np.testing.assert_allclose(mdlstm.wavefront(params, x), expected, rtol=1e-5, atol=1e-5)
    zero = (jnp.zeros(4), jnp.zeros(4))
    _, h = mdlstm.apply(params, zero, zero, x[0, 0])
    np.testing.assert_allclose(h, expected[0, 0], rtol=1e-5, atol=1e-6)


# ---- four directions ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 1), (4, 6)])
def test_four_directions_each_equal_a_flipped_numpy_loop(shape):
    params = mdrnn.init_four(jax.random.PRNGKey(3), 3, 4, dtype=jnp.float64)
    x = grid_inputs((2, *shape))
    got = mdrnn.four_directions(params, x)
    assert got.shape == (2, *shape, 4, 4)
    for k, (rows, cols) in enumerate(mdrnn.DIRECTIONS):
        p = {name: v[k] for name, v in params.items()}
        axes = tuple(ax for ax, on in ((0, rows), (1, cols)) if on)
        for b in range(2):
            flipped = np.flip(np.asarray(x[b]), axes)
            expected = np.flip(numpy_grid(p, flipped), axes)
            np.testing.assert_allclose(got[b, ..., k, :], expected, rtol=1e-12, atol=1e-12)
    steps = mdrnn.sequential_steps(lambda a: mdrnn.four_directions(params, a), x)
    assert steps == sum(shape) - 1


# ---- a batch of grids of different sizes --------------------------------------------------


def test_grids_of_different_sizes_in_one_batch():
    sizes = np.array([[3, 5], [6, 2], [1, 1], [6, 7], [0, 4]])
    x = np.asarray(grid_inputs((5, 6, 7)))
    garbage = 1e3 * np.ones_like(x)
    for b, (h, w) in enumerate(sizes):
        garbage[b, :h, :w] = x[b, :h, :w]
    got = mdrnn.wavefront(PARAMS, jnp.asarray(garbage), sizes=jnp.asarray(sizes))
    params4 = mdrnn.init_four(jax.random.PRNGKey(3), 3, 4, dtype=jnp.float64)
    four = mdrnn.four_directions(params4, jnp.asarray(garbage), sizes=jnp.asarray(sizes))
    lstm_params = mdlstm.init(jax.random.PRNGKey(2), 3, 4, dtype=jnp.float64)
    lstm_got = mdlstm.wavefront(lstm_params, jnp.asarray(garbage), sizes=sizes)
    for b, (h, w) in enumerate(sizes):
        alone = numpy_grid(PARAMS, x[b, :h, :w])
        np.testing.assert_allclose(got[b, :h, :w], alone, rtol=1e-12, atol=1e-12)
        outside = np.ones((6, 7), bool)
        outside[:h, :w] = False
        assert np.all(got[b][outside] == 0) and np.all(four[b][outside] == 0)
        np.testing.assert_allclose(
            lstm_got[b, :h, :w], numpy_mdlstm(lstm_params, x[b, :h, :w]), rtol=1e-12, atol=1e-12
        )
        if h and w:  # the bottom-right direction starts at the grid's own corner
            p = {name: v[3] for name, v in params4.items()}
            expected = np.flip(numpy_grid(p, np.flip(x[b, :h, :w], (0, 1))), (0, 1))
            np.testing.assert_allclose(four[b, :h, :w, 3], expected, rtol=1e-12, atol=1e-12)


# ---- 3-D grid ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 4, 1), (3, 4, 5)])
def test_grid3d_equals_numpy_triple_loop_in_n1_n2_n3_minus_2_steps(shape):
    params = grid3d.init(jax.random.PRNGKey(4), 3, 4, dtype=jnp.float64)
    x = grid_inputs((2, *shape))
    got = grid3d.wavefront(params, x)
    expected = np.stack([numpy_grid3d(params, g) for g in np.asarray(x)])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert mdrnn.sequential_steps(lambda a: grid3d.wavefront(params, a), x) == sum(shape) - 2


# ---- receptive field ---------------------------------------------------------------------


def causal_conv_stack(kernels, x):
    """Layers h <- tanh(A x(i,j) + B h(i-1,j) + C h(i,j-1)), no recurrence: a conv stack
    with the MDRNN cell's own footprint, one layer per step of depth."""
    h = x
    for a, b, c in kernels:
        west = jnp.pad(h, ((1, 0), (0, 0), (0, 0)))[:-1]
        north = jnp.pad(h, ((0, 0), (1, 0), (0, 0)))[:, :-1]
        h = jnp.tanh(h @ a + west @ b + north @ c)
    return h


def dependence(fn, x):
    """Boolean (H, W, H, W): does output (i, j) depend on input (i', j')? From jax.jacrev."""
    jac = jax.jacrev(fn)(x)  # (H, W, hidden, H, W, D)
    return np.abs(np.asarray(jac)).sum(axis=(2, 5)) > 0


def test_receptive_field_is_the_quadrant_and_a_conv_stack_sees_a_triangle():
    height, width, depth = 7, 9, 3
    x = grid_inputs((height, width))
    keys = jax.random.split(jax.random.PRNGKey(6), 3 * depth)
    kernels = [
        tuple(jax.random.normal(keys[3 * layer + n], (3, 3), jnp.float64) for n in range(3))
        for layer in range(depth)
    ]
    mdrnn_sees = dependence(lambda a: mdrnn.wavefront(PARAMS, a), x)
    conv_sees = dependence(lambda a: causal_conv_stack(kernels, a), x)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    for i in range(height):
        for j in range(width):
            quadrant = (rows <= i) & (cols <= j)
            assert np.array_equal(mdrnn_sees[i, j], quadrant), (i, j)
            triangle = quadrant & ((i - rows) + (j - cols) <= depth)
            assert np.array_equal(conv_sees[i, j], triangle), (i, j)
    # a planted mistake: a quadrant missing its far corner is not what jax.grad sees
    wrong = (rows <= 6) & (cols <= 8)
    wrong[0, 0] = False
    assert not np.array_equal(mdrnn_sees[6, 8], wrong)


# ---- errors ------------------------------------------------------------------------------

X = grid_inputs((4, 5))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: mdrnn.wavefront(PARAMS, X[0]), r"x: expected shape \(\*batch, H, W, 3\)"),
        (lambda: mdrnn.raster(PARAMS, X[..., :2]), r"x: expected shape .* got \(4, 5, 2\)"),
        (lambda: mdrnn.raster_fast(PARAMS, jnp.zeros((0, 5, 3))), "H >= 1 and W >= 1"),
        (lambda: mdrnn.wavefront(PARAMS, jnp.zeros((4, 5, 3), int)), "floating dtype"),
        (lambda: mdrnn.wavefront({"W_in": PARAMS["W_in"]}, X), "missing entries"),
        (lambda: mdrnn.wavefront(dict(PARAMS, W_W=jnp.zeros((4, 3))), X), r"W_W.*\(4, 4\)"),
        (lambda: mdrnn.wavefront(dict(PARAMS, b=jnp.zeros(3)), X), r"'b'.*\(4,\)"),
        (lambda: mdrnn.wavefront(PARAMS, X, sizes=jnp.array([4, 5, 1])), "sizes: expected shape"),
        (lambda: mdrnn.wavefront(PARAMS, X, sizes=jnp.array([4.0, 5.0])), "integer dtype"),
        (lambda: mdrnn.wavefront(PARAMS, X, sizes=jnp.array([5, 5])), "H_b <= 4"),
        (lambda: mdrnn.wavefront(PARAMS, X, fill=0.0), "fill"),
        (lambda: mdrnn.wavefront(PARAMS, X, min_length=0), "min_length"),
        (lambda: mdrnn.wavefront(PARAMS, X, batch_chunk=0), "batch_chunk"),
        (lambda: mdrnn.wavefront(PARAMS, X, batch_chunk=2.0), "batch_chunk"),
        (lambda: mdrnn.wavefront(PARAMS, X, batch_chunk=True), "batch_chunk"),
        (lambda: mdrnn.wavefront(PARAMS, X, activation="relu6"), "activation"),
        (lambda: mdrnn.init(jax.random.PRNGKey(0), 0, 4), "in_dim"),
        (lambda: mdrnn.n_flops(0, 4, 3, 4), "height"),
        (lambda: mdrnn.n_weights(3, -1), "hidden"),
        (lambda: mdrnn.four_directions(PARAMS, X), "leading axis of 4"),
        (lambda: mdlstm.wavefront(PARAMS, X), "W_i"),
        (lambda: grid3d.wavefront(grid3d.init(jax.random.PRNGKey(0), 3, 4), X), "n1, n2, n3"),
        (lambda: mdrnn.sequential_steps(42), "fn: expected a callable"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sizes_are_checked_against_the_batch_shape():
    with pytest.raises(ValueError, match=r"sizes: expected shape \(\*batch, 2\) = \(2, 2\)"):
        mdrnn.wavefront(PARAMS, grid_inputs((2, 4, 5)), sizes=jnp.array([[4, 5]]))
