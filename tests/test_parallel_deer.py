"""DEER against the sequential scan: trajectories, gradients, convergence reports, errors."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import elman, gru, lstm, lstm_scalar
from jaxrnn.parallel import DeerNotConverged, DeerNotConvergedWarning, deer

T, B, D, H = 24, 2, 2, 3
KEY = jax.random.PRNGKey(7)
CELLS = {"elman": elman, "gru": gru, "lstm": lstm, "lstm_scalar": lstm_scalar}


def problem(name, dtype=jnp.float64, batch=B):
    """A cell, its params, a non-zero initial carry (batch) and inputs (T, batch, ...)."""
    module = CELLS[name]
    k_params, k_carry, k_xs = jax.random.split(KEY, 3)
    if name == "lstm_scalar":
        params = module.init(k_params, dtype=dtype)
        carry = module.init_carry((batch,), dtype=dtype)
        xs = jax.random.normal(k_xs, (T, batch), dtype)
    else:
        params = module.init(k_params, D, H, dtype=dtype)
        carry = module.init_carry((batch,), H, dtype=dtype)
        xs = jax.random.normal(k_xs, (T, batch, D), dtype)
    carry = jax.tree_util.tree_map(
        lambda leaf: 0.5 * jax.random.normal(k_carry, leaf.shape, dtype), carry
    )
    return module.apply, params, carry, xs


def max_diff(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in pairs)


def elman_with_radius(radius, hidden=4, dtype=jnp.float64):
    """An Elman cell whose recurrent matrix has spectral radius ``radius`` (SPEC §5)."""
    params = elman.init(KEY, D, hidden, dtype=dtype)
    W = np.asarray(params["W"])
    params["W"] = jnp.asarray(W * radius / np.max(np.abs(np.linalg.eigvals(W)))).astype(dtype)
    params["U"] = 2.0 * params["U"]
    return params


@pytest.mark.parametrize(
    ("name", "jacobian"),
    [
        ("elman", "full"),
        ("gru", "full"),
        ("lstm", "full"),
        ("lstm_scalar", "full"),
        ("gru", "diagonal"),
        ("lstm", "diagonal"),
    ],
)
def test_trajectory_equals_scan(name, jacobian):
    cell, params, carry, xs = problem(name)
    final, ys, info = deer(cell, params, carry, xs, jacobian=jacobian, batch_ndim=1)
    want_final, want_ys = jaxrnn.scan(cell, params, carry, xs)
    assert info.converged.shape == (B,) and bool(jnp.all(info.converged))
    assert max_diff(ys, want_ys) <= 1e-10
    assert max_diff(final, want_final) <= 1e-10
    assert float(jnp.max(info.residual)) <= 1e-10
    assert bool(jnp.all(info.iterations <= T + 1))


def test_whole_batch_as_one_state_equals_scan():
    """batch_ndim=0: the (B, 2H) LSTM carry is one Newton system, coupled but still right."""
    cell, params, carry, xs = problem("lstm")
    final, ys, info = deer(cell, params, carry, xs)
    assert info.iterations.shape == () and bool(info.converged)
    want_final, want_ys = jaxrnn.scan(cell, params, carry, xs)
    assert max_diff((final, ys), (want_final, want_ys)) <= 1e-10


def test_full_newton_needs_fewer_iterations_than_diagonal():
    cell, params, carry, xs = problem("gru")
    full = deer(cell, params, carry, xs, jacobian="full", batch_ndim=1)[2]
    diagonal = deer(cell, params, carry, xs, jacobian="diagonal", batch_ndim=1)[2]
    assert bool(jnp.all(full.iterations < diagonal.iterations))
    # quadratic convergence: the last useful full-Newton update squares the one before it
    norms = np.asarray(full.update_norms[0])
    k = int(full.iterations[0])
    assert np.all(np.isnan(norms[k:])) and not np.any(np.isnan(norms[:k]))
    assert norms[k - 2] <= 10 * norms[k - 3] ** 2


def test_iteration_k_makes_the_first_k_steps_exact():
    """Newton on a triangular system: after k iterations, s_1..s_k are exact (any dynamics)."""
    params = elman_with_radius(3.0)
    carry = jnp.zeros((4,))
    xs = jax.random.normal(KEY, (T, D), jnp.float64)
    _, want = jaxrnn.scan(elman.apply, params, carry, xs)
    for k in (1, 4):
        _, ys, info = deer(
            elman.apply, params, carry, xs, max_iters=k, jacobian="diagonal", on_failure="ignore"
        )
        assert int(info.iterations) == k and not bool(info.converged)
        # ys[t] = f(s_t) with s_1..s_k exact, so ys[0..k] are exact; ys[k+1] not yet
        assert float(jnp.max(jnp.abs(ys[: k + 1] - want[: k + 1]))) <= 1e-12
        assert float(jnp.max(jnp.abs(ys[k + 1] - want[k + 1]))) > 1e-6
    # and T + 1 iterations always suffice, even with an expanding Jacobian chain
    _, ys, info = deer(elman.apply, params, carry, xs, max_iters=T + 1, jacobian="diagonal")
    assert bool(info.converged)
    assert float(jnp.max(jnp.abs(ys - want))) <= 1e-10


def test_contracting_dynamics_converge_faster():
    """SPEC §5: a contracting Jacobian chain lets Newton's errors fade along the sequence."""
    xs = jax.random.normal(KEY, (200, D), jnp.float64)
    iterations = {}
    for radius in (0.5, 3.0):
        params = elman_with_radius(radius)
        info = deer(elman.apply, params, jnp.zeros(4), xs, jacobian="diagonal", max_iters=200)[2]
        assert bool(info.converged)
        iterations[radius] = int(info.iterations)
    assert iterations[0.5] * 3 < iterations[3.0]


def loss_of(runner):
    def loss(params, carry, xs, *extra):
        final, ys = runner(params, carry, xs, *extra)[:2]
        final_term = sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(final))
        weights = jnp.arange(1.0, T + 1).reshape((T,) + (1,) * (ys.ndim - 1))
        return jnp.sum(jnp.sin(ys) * weights) + final_term

    return loss


@pytest.mark.parametrize(
    ("name", "jacobian"),
    [
        ("elman", "full"),
        ("gru", "full"),
        ("lstm", "full"),
        ("lstm", "diagonal"),
    ],
)
def test_gradients_equal_grad_of_scan(name, jacobian):
    cell, params, carry, xs = problem(name)
    run_deer = functools.partial(deer, cell, jacobian=jacobian, batch_ndim=1)
    run_scan = functools.partial(jaxrnn.scan, cell)
    got = jax.jit(jax.grad(loss_of(run_deer), argnums=(0, 1, 2)))(params, carry, xs)
    want = jax.jit(jax.grad(loss_of(run_scan), argnums=(0, 1, 2)))(params, carry, xs)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)


def test_float32_converges_to_float32_tolerance():
    cell, params, carry, xs = problem("elman", jnp.float32)
    final, ys, info = deer(cell, params, carry, xs, batch_ndim=1)
    assert ys.dtype == jnp.float32 and bool(jnp.all(info.converged))
    assert max_diff(ys, jaxrnn.scan(cell, params, carry, xs)[1]) <= 1e-5


# --- padded batches (lengths) and reverse, with jaxrnn.scan's meaning -----------------------

LENGTHS = (T, 0, 1, 13)
PADDED_CASES = [
    ("elman", "full"),
    ("gru", "full"),
    ("lstm", "full"),
    ("lstm_scalar", "full"),
    ("elman", "diagonal"),
    ("gru", "diagonal"),
    ("lstm", "diagonal"),
]


def padded_problem(name):
    """problem() with one sequence per entry of LENGTHS, NaN in every padding input."""
    cell, params, carry, xs = problem(name, batch=len(LENGTHS))
    lengths = jnp.array(LENGTHS)
    padding = jnp.arange(T)[:, None] >= lengths
    xs = jnp.where(padding.reshape(padding.shape + (1,) * (xs.ndim - 2)), jnp.nan, xs)
    return cell, params, carry, xs, lengths


def sequence(tree, n):
    return jax.tree_util.tree_map(lambda leaf: leaf[n], tree)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("name", "jacobian"), PADDED_CASES)
def test_lengths_and_reverse_equal_scan(name, jacobian, reverse):
    cell, params, carry, xs, lengths = padded_problem(name)
    final, ys, info = deer(
        cell, params, carry, xs, lengths=lengths, reverse=reverse, jacobian=jacobian, batch_ndim=1
    )
    want_final, want_ys = jaxrnn.scan(cell, params, carry, xs, lengths=lengths, reverse=reverse)
    assert max_diff(ys, want_ys) <= 1e-10
    assert max_diff(final, want_final) <= 1e-10
    padding = np.arange(T)[:, None] >= np.asarray(LENGTHS)
    for leaf in jax.tree_util.tree_leaves(ys):
        assert np.all(np.asarray(leaf)[padding] == 0.0)
    assert max_diff(sequence(final, 1), sequence(carry, 1)) == 0.0  # length 0: s_0 unchanged
    assert bool(jnp.all(info.converged)) and float(jnp.max(info.residual)) <= 1e-10
    assert bool(jnp.all(info.iterations <= lengths + 1))


@pytest.mark.parametrize(("name", "jacobian"), [("gru", "full"), ("lstm", "diagonal")])
def test_reverse_without_lengths_equals_scan(name, jacobian):
    cell, params, carry, xs = problem(name)
    final, ys, info = deer(cell, params, carry, xs, reverse=True, jacobian=jacobian, batch_ndim=1)
    want_final, want_ys = jaxrnn.scan(cell, params, carry, xs, reverse=True)
    assert bool(jnp.all(info.converged))
    assert max_diff((final, ys), (want_final, want_ys)) <= 1e-10


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("jacobian", ["full", "diagonal"])
def test_info_ignores_padding(jacobian, reverse):
    """Each padded sequence reports what deer reports for its first L steps alone."""
    cell, params, carry, xs, lengths = padded_problem("gru")
    info = deer(
        cell, params, carry, xs, lengths=lengths, reverse=reverse, jacobian=jacobian, batch_ndim=1
    )[2]
    assert int(info.iterations[1]) == 1 and float(info.update_norms[1, 0]) == 0.0  # L = 0
    for n, length in enumerate(LENGTHS):
        if length == 0:
            continue
        alone = deer(
            cell, params, sequence(carry, n), xs[:length, n], reverse=reverse, jacobian=jacobian
        )[2]
        assert int(info.iterations[n]) == int(alone.iterations) and bool(info.converged[n])
        np.testing.assert_allclose(info.update_norms[n], alone.update_norms, rtol=0, atol=1e-10)
        assert float(info.residual[n]) <= 1e-10 and float(alone.residual) <= 1e-10


def test_padding_never_delays_convergence():
    """Two quasi-Newton iterations solve sequences of lengths 1 and 0 of any T."""
    cell, params, carry, xs, options = failing_problem()
    lengths = jnp.array([1, 0])
    final, ys, info = deer(cell, params, carry, xs, lengths=lengths, **options)
    assert bool(jnp.all(info.converged)) and info.iterations.tolist() == [2, 1]
    want = jaxrnn.scan(cell, params, carry, xs, lengths=lengths)
    assert max_diff((final, ys), want) <= 1e-12


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    ("name", "jacobian"),
    [("elman", "full"), ("gru", "full"), ("lstm", "full"), ("lstm", "diagonal")],
)
def test_gradients_with_lengths_equal_grad_of_scan(name, jacobian, reverse):
    """Traced lengths under jit; NaN padding reaches no gradient."""
    cell, params, carry, xs, lengths = padded_problem(name)

    def run_deer(p, c, x, n):
        return deer(cell, p, c, x, lengths=n, reverse=reverse, jacobian=jacobian, batch_ndim=1)

    def run_scan(p, c, x, n):
        return jaxrnn.scan(cell, p, c, x, lengths=n, reverse=reverse)

    got = jax.jit(jax.grad(loss_of(run_deer), argnums=(0, 1, 2)))(params, carry, xs, lengths)
    want = jax.jit(jax.grad(loss_of(run_scan), argnums=(0, 1, 2)))(params, carry, xs, lengths)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert bool(jnp.all(jnp.isfinite(g)))
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-11)
    padding = np.arange(T)[:, None] >= np.asarray(LENGTHS)
    assert np.all(np.asarray(got[2])[padding] == 0.0)


def test_traced_lengths_under_jit():
    """One compiled function serves any lengths; out-of-range values act as the nearest bound."""
    cell, params, carry, xs, _ = padded_problem("lstm")
    xs = jnp.nan_to_num(xs)  # all inputs finite: every length is a valid choice here
    run = jax.jit(lambda x, n: deer(cell, params, carry, x, lengths=n, batch_ndim=1))
    for lengths, as_scan in [
        ([T, 0, 1, 13], [T, 0, 1, 13]),
        ([5, 24, 0, 2], [5, 24, 0, 2]),
        ([T + 9, -3, 7, 0], [T, 0, 7, 0]),
    ]:
        final, ys, info = run(xs, jnp.array(lengths))
        want = jaxrnn.scan(cell, params, carry, xs, lengths=jnp.array(as_scan))
        assert bool(jnp.all(info.converged)) and max_diff((final, ys), want) <= 1e-10


def test_lengths_with_the_whole_batch_as_one_state():
    """batch_ndim=0: padding masks rows of the one coupled Newton system."""
    cell, params, carry, xs, lengths = padded_problem("lstm")
    final, ys, info = deer(cell, params, carry, xs, lengths=lengths, reverse=True)
    assert info.iterations.shape == () and bool(info.converged)
    want = jaxrnn.scan(cell, params, carry, xs, lengths=lengths, reverse=True)
    assert max_diff((final, ys), want) <= 1e-10


@pytest.mark.parametrize("lengths", [[[6, 2, 0], [1, T, 9]], [3, 11]])
def test_lengths_with_two_batch_axes(lengths):
    """lengths (2, 3) per sequence, or (2,) shared along the second batch axis (as scan)."""
    params = elman.init(KEY, D, H, dtype=jnp.float64)
    carry = 0.5 * jax.random.normal(KEY, (2, 3, H), jnp.float64)
    xs = jax.random.normal(KEY, (T, 2, 3, D), jnp.float64)
    lengths = jnp.array(lengths)
    final, ys, info = deer(elman.apply, params, carry, xs, lengths=lengths, batch_ndim=2)
    assert info.converged.shape == (2, 3) and bool(jnp.all(info.converged))
    want = jaxrnn.scan(elman.apply, params, carry, xs, lengths=lengths)
    assert max_diff((final, ys), want) <= 1e-10


# --- non-convergence is never silent -------------------------------------------------------


def failing_problem():
    """Two quasi-Newton iterations cannot solve 24 steps of a strongly coupled LSTM."""
    cell, params, carry, xs = problem("lstm")
    return cell, params, carry, xs, dict(max_iters=2, jacobian="diagonal", batch_ndim=1)


def test_on_failure_warn_eager_and_under_jit():
    cell, params, carry, xs, options = failing_problem()
    with pytest.warns(DeerNotConvergedWarning, match="did not converge"):
        _, _, info = deer(cell, params, carry, xs, **options)
    assert not bool(jnp.any(info.converged)) and bool(jnp.all(info.iterations == 2))
    run = jax.jit(lambda p, c, x: deer(cell, p, c, x, **options))
    with pytest.warns(DeerNotConvergedWarning, match="iterations run: 2"):
        jax.block_until_ready(run(params, carry, xs))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a converged run warns nothing
        jax.block_until_ready(deer(cell, params, carry, xs, batch_ndim=1))


def test_on_failure_raise():
    cell, params, carry, xs, options = failing_problem()
    with pytest.raises(DeerNotConverged, match="did not converge") as error:
        deer(cell, params, carry, xs, on_failure="raise", **options)
    assert error.value.info.update_norms.shape == (B, 2)
    with pytest.raises(ValueError, match="^on_failure: 'raise' needs concrete"):
        jax.jit(lambda x: deer(cell, params, carry, x, on_failure="raise", **options))(xs)
    final, ys, info = deer(cell, params, carry, xs, on_failure="raise", batch_ndim=1)  # converges
    assert bool(jnp.all(info.converged))


def test_on_failure_nan_marks_only_failing_sequences():
    cell, params, carry, xs = problem("elman")
    xs = xs.at[:, 1].multiply(0.0)  # sequence 1: constant input, converges fast
    options = dict(max_iters=3, jacobian="diagonal", batch_ndim=1, on_failure="nan")
    final, ys, info = deer(cell, params, carry, xs, **options)
    assert not bool(info.converged[0])
    assert bool(jnp.all(jnp.isnan(ys[:, 0]))) and bool(jnp.all(jnp.isnan(final[0])))
    if bool(info.converged[1]):
        assert max_diff(ys[:, 1], jaxrnn.scan(cell, params, carry, xs)[1][:, 1]) <= 1e-5


def test_on_failure_ignore_returns_info_only():
    cell, params, carry, xs, options = failing_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ys, info = deer(cell, params, carry, xs, on_failure="ignore", **options)
    assert not bool(jnp.any(info.converged)) and bool(jnp.all(jnp.isfinite(ys)))


def test_divergence_to_nan_is_reported():
    """An exploding linearisation (huge weights) yields NaN/inf: stopped, not converged."""
    params = elman_with_radius(50.0)
    params["W"] = params["W"] * 1e300
    xs = jax.random.normal(KEY, (T, D), jnp.float64)
    with pytest.raises(DeerNotConverged):
        deer(elman.apply, params, jnp.zeros(4), xs, on_failure="raise")


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (dict(max_iters=0), "^max_iters: expected a positive integer"),
        (dict(max_iters=2.5), "^max_iters: expected a positive integer"),
        (dict(tol=0.0), "^tol: expected a positive finite float"),
        (dict(tol=-1e-3), "^tol: expected a positive finite float"),
        (dict(tol=float("nan")), "^tol: expected a positive finite float"),
        (dict(tol="small"), "^tol: expected a positive float"),
        (dict(jacobian="dense"), "^jacobian: expected one of"),
        (dict(on_failure="shout"), "^on_failure: expected one of"),
        (dict(batch_ndim=-1), "^batch_ndim: expected a non-negative int"),
        (dict(batch_ndim=True), "^batch_ndim: expected a non-negative int"),
        (dict(batch_ndim=2), "^batch_ndim: expected 2 leading batch axes"),
    ],
)
def test_bad_options_raise(options, pattern):
    cell, params, carry, xs = problem("elman")
    with pytest.raises(ValueError, match=pattern):
        deer(cell, params, carry, xs, **options)


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (dict(lengths=jnp.array([3.0, 4.0])), "^lengths: expected an integer dtype, got float"),
        (dict(lengths=jnp.array([3, 4, 5])), r"^lengths: expected the batch shape of xs, \(2,\)"),
        (dict(lengths=jnp.array([3, T + 1])), r"^lengths: expected values in \[0, T\] = \[0, 24\]"),
        (dict(lengths=jnp.array([-1, 4])), r"^lengths: expected values in \[0, T\]"),
        (dict(reverse="yes"), "^reverse: expected True or False, got 'yes'"),
        (dict(reverse=None), "^reverse: expected True or False, got None"),
    ],
)
def test_bad_lengths_and_reverse_raise(options, pattern):
    cell, params, carry, xs = problem("gru")
    with pytest.raises(ValueError, match=pattern):
        deer(cell, params, carry, xs, batch_ndim=1, **options)


def test_bad_shapes_raise():
    cell, params, carry, xs = problem("elman")
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*batch, 2\)"):
        deer(cell, params, carry, xs[..., :1])
    with pytest.raises(ValueError, match=r"^carry: expected shape \(\*batch, 3\)"):
        deer(cell, params, carry[:, :2], xs)
    with pytest.raises(ValueError, match=r"^carry: the cell maps a carry leaf of shape \(1, 3\)"):
        deer(cell, params, carry[:1], xs, batch_ndim=1)
    with pytest.raises(ValueError, match="^xs: expected at least one time step"):
        deer(cell, params, carry, xs[:0])
    with pytest.raises(ValueError, match="^cell: expected a callable"):
        deer("elman", params, carry, xs)
    with pytest.raises(ValueError, match=r"^params\['W'\]: expected shape \(3, 3\)"):
        deer(cell, {**params, "W": params["W"][:2]}, carry, xs)


def test_threshold_cell_with_integer_inputs():
    """The step cell has a zero Jacobian, so Newton is a plain fixed-point sweep; the inputs
    are integer bits; with a sigmoid surrogate, gradients still match the scan's."""
    from jaxrnn.cells import threshold

    params = threshold.init(KEY, 2, 3, dtype=jnp.float64)
    carry = threshold.init_carry((), 3, dtype=jnp.float64)
    bits = jax.random.bernoulli(KEY, 0.5, (T, 2)).astype(jnp.int32)
    _, ys, info = deer(threshold.apply, params, carry, bits)
    assert bool(info.converged) and int(info.iterations) <= T + 1
    np.testing.assert_array_equal(ys, jaxrnn.scan(threshold.apply, params, carry, bits)[1])
    smooth = functools.partial(threshold.apply, activation=jax.nn.sigmoid)
    got = jax.grad(lambda p: jnp.sum(deer(smooth, p, carry, bits)[1] ** 2))(params)
    want = jax.grad(lambda p: jnp.sum(jaxrnn.scan(smooth, p, carry, bits)[1] ** 2))(params)
    for key in params:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12)


# --- damped Newton (ELK): stable where Newton overflows ------------------------------------


def elman_float32(radius, n_steps):
    """The tour's Elman RNN (H = 4, one input) in float32, W scaled to spectral radius."""
    params = elman.init(jax.random.PRNGKey(3), 1, 4, dtype=jnp.float32)
    W = np.asarray(params["W"], np.float64)
    params["W"] = jnp.asarray(W * radius / np.max(np.abs(np.linalg.eigvals(W))), jnp.float32)
    key = jax.random.split(jax.random.PRNGKey(0), 4)[2]
    return params, jnp.zeros(4, jnp.float32), jax.random.normal(key, (n_steps, 1), jnp.float32)


@pytest.mark.parametrize(
    ("radius", "n_steps", "jacobian"), [(3.0, 128, "full"), (1.5, 256, "diagonal")]
)
def test_damping_converges_where_plain_deer_does_not(radius, n_steps, jacobian):
    """float32: the first Newton solve multiplies T Jacobians J = W of spectral radius > 1
    (the diagonal ones too, at T = 256) and overflows; the damped (Kalman-filtered) steps
    stay finite and converge."""
    params, carry, xs = elman_float32(radius, n_steps)
    # the float64 trajectory, and how far float32 rounding takes the sequential scan from it
    to64 = functools.partial(jax.tree_util.tree_map, lambda leaf: leaf.astype(jnp.float64))
    _, want = jaxrnn.scan(elman.apply, *to64((params, carry, xs)))
    scan_error = float(jnp.max(jnp.abs(jaxrnn.scan(elman.apply, params, carry, xs)[1] - want)))
    run = functools.partial(
        deer, elman.apply, jacobian=jacobian, max_iters=2 * n_steps, on_failure="ignore"
    )
    plain = run(params, carry, xs)
    assert not bool(plain[2].converged) and bool(jnp.any(jnp.isnan(plain[1])))
    _, ys, info = run(params, carry, xs, damping=1e-4)
    assert bool(info.converged) and float(info.residual) <= 1e-5
    # near-neutral chains amplify float32 rounding: the scan itself is 1e-5 (rho 1.5) to
    # 3e-3 (rho 3) from float64; DEER's different order of operations lands as close
    assert float(jnp.max(jnp.abs(ys - want))) <= 10 * scan_error + 1e-5


def test_damped_step_solves_each_prefix_least_squares():
    """Filtered mean at t = argmin over s_1..s_t of sum |s - F s_prev - u|^2 + lam |s - y|^2,
    its last state: checked against dense normal equations, full and diagonal."""
    from jaxrnn.parallel.kalman import damped_newton_step

    rng = np.random.default_rng(0)
    n_steps, hidden, lam = 6, 2, 0.3
    for full in (True, False):
        F = 1.5 * rng.normal(size=(n_steps, hidden, hidden) if full else (n_steps, hidden))
        u, y, s0 = (
            rng.normal(size=(n_steps, hidden)),
            rng.normal(size=(n_steps, hidden)),
            rng.normal(size=hidden),
        )
        got = damped_newton_step(F, u, s0, y, lam, kind="full" if full else "diagonal")
        dense = [F[t] if full else np.diag(F[t]) for t in range(n_steps)]
        for t in range(1, n_steps + 1):
            size = t * hidden
            D = np.eye(size)  # residual r = D S - c, S = (s_1..s_t)
            c = u[:t].ravel().copy()
            c[:hidden] += dense[0] @ s0
            for k in range(1, t):
                D[k * hidden : (k + 1) * hidden, (k - 1) * hidden : k * hidden] = -dense[k]
            S = np.linalg.solve(D.T @ D + lam * np.eye(size), D.T @ c + lam * y[:t].ravel())
            np.testing.assert_allclose(got[t - 1], S[-hidden:], rtol=1e-10, atol=1e-12)


def test_damped_with_lengths_and_reverse_equals_scan():
    """Padding first (reverse): identity steps in the filter too; the same fixed point. And
    a huge damping makes every step tiny: the residual criterion refuses to stop there."""
    cell, params, carry, xs, lengths = padded_problem("gru")
    run = functools.partial(deer, cell, lengths=lengths, reverse=True, batch_ndim=1)
    final, ys, info = run(params, carry, xs, damping=1e-3)
    assert bool(jnp.all(info.converged))
    want = jaxrnn.scan(cell, params, carry, xs, lengths=lengths, reverse=True)
    assert max_diff((final, ys), want) <= 1e-10
    with pytest.warns(DeerNotConvergedWarning, match="iterations run: 100"):
        _, _, info = run(params, carry, xs, damping=1e12)  # the same compiled program
    assert not bool(info.converged[0])  # T steps, each moved by ~1e-12 of Newton's step
    assert float(jnp.nanmax(info.update_norms[0])) < 1e-9  # below tol, yet not converged


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (dict(damping=0.0), "^damping: expected a positive finite float, got 0.0"),
        (dict(damping="lm"), "^damping: expected a positive float or None, got 'lm'"),
        (dict(mesh=4), "^mesh: expected None or a 1-D jax.sharding.Mesh"),
    ],
)
def test_bad_damping_and_mesh_raise(options, pattern):
    cell, params, carry, xs = problem("elman")
    with pytest.raises(ValueError, match=pattern):
        deer(cell, params, carry, xs, **options)
