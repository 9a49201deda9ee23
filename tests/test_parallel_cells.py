"""minGRU, minLSTM and LRU: their steps against the papers' equations in NumPy, the LRU ring,
and their associative evaluation against jaxrnn.scan (lengths, reverse, resets, gradients)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import gru, lru, mingru, minlstm
from jaxrnn.parallel import scan_associative, scan_with_resets

T, B, D, H = 13, 4, 3, 5
KEY = jax.random.PRNGKey(11)
CELLS = {"mingru": mingru, "minlstm": minlstm, "lru": lru}
LENGTHS = (T, 0, 1, 8)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def g(v):
    """The paper's positive replacement of tanh."""
    return np.where(v >= 0, v + 0.5, sigmoid(v))


def numpy_step(name, p, h, x):
    """One step as the papers write it (not in log space), in NumPy."""
    p = {k: np.asarray(v) for k, v in p.items()}
    if name == "mingru":
        z = sigmoid(x @ p["W_z"].T + p["b_z"])
        h = (1 - z) * h + z * g(x @ p["W_h"].T + p["b_h"])
        return h, h
    if name == "minlstm":
        f = sigmoid(x @ p["W_f"].T + p["b_f"])
        i = sigmoid(x @ p["W_i"].T + p["b_i"])
        h = f / (f + i) * h + i / (f + i) * g(x @ p["W_h"].T + p["b_h"])
        return h, h
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    h = lam * h + np.exp(p["gamma_log"]) * (x @ (p["B_re"] + 1j * p["B_im"]).T)
    return h, np.real(h @ (p["C_re"] + 1j * p["C_im"]).T) + p["D"] * x


def problem(name, dtype=jnp.float64):
    """Params, a non-zero carry (B, H) and inputs (T, B, D), NaN on every padded step."""
    module = CELLS[name]
    k_params, k_carry, k_xs = jax.random.split(KEY, 3)
    params = module.init(k_params, D, H, dtype=dtype)
    carry = module.init_carry((B,), H, dtype=dtype)
    carry = carry + jax.random.uniform(k_carry, carry.shape, dtype, 0.1, 1.0).astype(carry.dtype)
    xs = 2 * jax.random.normal(k_xs, (T, B, D), dtype)
    padding = jnp.arange(T)[:, None] >= jnp.array(LENGTHS)
    return module, params, carry, jnp.where(padding[..., None], jnp.nan, xs)


def max_diff(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in pairs)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_matches_the_papers_equations(name):
    module, params, carry, xs = problem(name)
    x = np.asarray(xs[0])
    h, y = module.apply(params, carry, x)
    want_h, want_y = numpy_step(name, params, np.asarray(carry), x)
    np.testing.assert_allclose(h, want_h, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(y, want_y, rtol=1e-13, atol=1e-14)
    # a whole sequence of coefficients at once is the steps' coefficients, stacked
    a, b = module.coefficients(params, xs[:3, 0])
    for t in range(3):
        np.testing.assert_allclose(module.coefficients(params, xs[t, 0])[1], b[t], rtol=1e-14)


def test_log_space_gates_keep_precision_and_states_positive():
    """1 - z is sigma(-k), not 1 - sigma(k): exact where the difference would round to 0."""
    params = mingru.init(KEY, 1, 1, dtype=jnp.float32)
    params = {**params, "W_z": jnp.ones((1, 1)), "W_h": jnp.ones((1, 1))}
    a, b = mingru.coefficients(params, jnp.array([[20.0], [-3.0]], jnp.float32))
    assert float(a[0, 0]) == pytest.approx(math.exp(-20.0), rel=1e-5)  # 1 - sigma(20) = 0 in f32
    assert float(b[1, 0]) == pytest.approx(sigmoid(-3.0) * sigmoid(-3.0), rel=1e-5)
    _, ys = jaxrnn.scan(
        mingru.apply, params, jnp.full((1,), 0.5), 5 * jax.random.normal(KEY, (50, 1))
    )
    assert bool(jnp.all(ys > 0))  # g > 0: positive states from a positive h0


def test_lru_initialisation_on_the_ring():
    params = lru.init(KEY, 2, 4000, r_min=0.4, r_max=0.9, max_phase=math.pi / 4)
    lam = np.asarray(lru.eigenvalues(params))
    radius, phase = np.abs(lam), np.angle(lam)
    assert radius.min() >= 0.4 - 1e-6 and radius.max() <= 0.9 + 1e-6
    assert phase.min() >= 0.0 and phase.max() <= math.pi / 4 + 1e-6
    # uniform on the ring's area: |lambda|^2 ~ U(r_min^2, r_max^2), mean 0.485, sd 0.135
    assert abs(np.mean(radius**2) - (0.16 + 0.81) / 2) < 4 * 0.135 / math.sqrt(4000)
    np.testing.assert_allclose(np.exp(params["gamma_log"]), np.sqrt(1 - radius**2), rtol=1e-4)
    assert params["B_re"].shape == (4000, 2) and params["C_im"].shape == (2, 4000)
    assert lru.init_carry((3,), 4000).dtype == jnp.complex64


@pytest.mark.parametrize("name", list(CELLS))
def test_scan_associative_equals_scan_with_lengths_and_reverse(name):
    module, params, carry, xs = problem(name)
    lengths = jnp.array(LENGTHS)
    weights = jnp.arange(1.0, T + 1)[:, None, None]

    def runs(params, carry, xs):
        """Outputs and gradients of both runners, both directions: one compiled program."""
        results = []
        for reverse in (False, True):
            for run in (
                functools.partial(scan_associative, module, lengths=lengths, reverse=reverse),
                functools.partial(jaxrnn.scan, module.apply, lengths=lengths, reverse=reverse),
            ):

                def loss(p, c, x, run=run):
                    final, ys = run(p, c, x)
                    return jnp.sum(weights * jnp.sin(ys)) + jnp.sum(jnp.abs(final) ** 2)

                grads = jax.grad(loss, argnums=(0, 1, 2))(params, carry, xs)
                results.append((run(params, carry, xs), grads))
        return results

    results = jax.jit(runs)(params, carry, xs)
    for (got, got_grads), (want, want_grads) in (results[:2], results[2:]):
        assert max_diff(got, want) <= 1e-12
        assert np.all(np.asarray(got[1])[np.arange(T)[:, None] >= np.array(LENGTHS)] == 0.0)
        np.testing.assert_array_equal(got[0][1], carry[1])  # length 0: the initial carry
        for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads), strict=True):
            assert bool(jnp.all(jnp.isfinite(a)))  # NaN padding reaches no gradient
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_resets_run_each_segment_alone():
    """scan_with_resets (a GRU, nonlinear) against a loop over each segment on its own."""
    params = gru.init(KEY, D, H, dtype=jnp.float64)
    carry = 0.5 * jax.random.normal(KEY, (B, H), jnp.float64)
    xs = jax.random.normal(KEY, (T, B, D), jnp.float64)
    starts = [[0, 4, 5], [0], [0, 1, 2, 12], [0, 9]]  # segment starts per sequence
    resets = np.zeros((T, B), bool)
    for n, row in enumerate(starts):
        resets[row, n] = True
    lengths = np.array([T, T, T, 7])  # sequence 3 stops inside its first segment
    for reverse in (False, True):
        final, ys = scan_with_resets(
            gru.apply, params, carry, xs, resets, lengths=lengths, reverse=reverse
        )
        for n, row in enumerate(starts):
            want_ys, want_final = np.zeros((T, H)), np.asarray(carry[n])
            segments = [
                range(a, min(b, lengths[n])) for a, b in zip(row, [*row[1:], T], strict=True)
            ]
            for segment in segments[::-1] if reverse else segments:
                h = carry[n]
                for t in reversed(segment) if reverse else segment:
                    h, want_ys[t] = gru.apply(params, h, xs[t, n])
                want_final = h if len(segment) else want_final
            np.testing.assert_allclose(ys[:, n], want_ys, rtol=1e-13, atol=1e-14)
            np.testing.assert_allclose(final[n], want_final, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", ["minlstm", "lru"])
def test_scan_associative_with_resets_equals_scan_with_resets(name):
    module, params, carry, xs = problem(name)
    lengths = jnp.array(LENGTHS)
    resets = jax.random.bernoulli(jax.random.PRNGKey(2), 0.3, (T, B))
    for reverse in (False, True):
        run = functools.partial(scan_associative, module, lengths=lengths, resets=resets)
        got = run(params, carry, xs, reverse=reverse)
        want = scan_with_resets(
            module.apply, params, carry, xs, resets, lengths=lengths, reverse=reverse
        )
        assert max_diff(got, want) <= 1e-12


def test_float32_lru_over_a_long_sequence():
    """T = 4096 in float32: the associative scan stays within float32 rounding of the loop."""
    params = lru.init(KEY, 2, 8, r_min=0.99, r_max=0.9999)
    xs = jax.random.normal(KEY, (4096, 2), jnp.float32)
    final, ys = jax.jit(functools.partial(scan_associative, lru))(params, lru.init_carry((), 8), xs)
    want_final, want_ys = jaxrnn.scan(lru.apply, params, lru.init_carry((), 8), xs)
    assert ys.dtype == jnp.float32 and final.dtype == jnp.complex64
    scale = float(jnp.max(jnp.abs(want_ys)))
    assert max_diff(ys, want_ys) <= 1e-4 * scale and max_diff(final, want_final) <= 1e-4 * scale


def test_bad_arguments_raise():
    module, params, carry, xs = problem("lru")
    with pytest.raises(ValueError, match="^cell: expected a linear cell's module with apply"):
        scan_associative(gru, params, carry, xs)
    with pytest.raises(ValueError, match="^carry: expected a complex state"):
        scan_associative(lru, params, jnp.zeros((B, H)), xs)
    with pytest.raises(ValueError, match=r"^x: expected shape \(\*batch, 3\)"):
        scan_associative(lru, params, carry, xs[..., :2])
    with pytest.raises(ValueError, match=r"^carry: the cell maps a carry leaf of shape \(5,\)"):
        scan_associative(lru, params, carry[0], xs)
    with pytest.raises(ValueError, match=r"^lengths: expected values in \[0, T\] = \[0, 13\]"):
        scan_associative(lru, params, carry, xs, lengths=jnp.array([1, 2, 3, 14]))
    with pytest.raises(ValueError, match="^resets: expected a boolean mask, got dtype float"):
        scan_associative(lru, params, carry, xs, resets=jnp.zeros((T, B)))
    with pytest.raises(ValueError, match=r"^resets: expected shape \(T, \*batch\) = \(13, 4\)"):
        scan_associative(lru, params, carry, xs, resets=jnp.zeros((T,), bool))
    with pytest.raises(ValueError, match=r"^resets: expected shape \(T, \*batch\), the leading"):
        scan_with_resets(lru.apply, params, carry, xs, jnp.zeros((T, B, D), bool))
    with pytest.raises(ValueError, match="^mesh: expected None or a 1-D jax.sharding.Mesh"):
        scan_associative(lru, params, carry, xs, mesh=jax.devices())
    with pytest.raises(ValueError, match="^r_min, r_max: expected 0 <= r_min < r_max < 1"):
        lru.init(KEY, D, H, r_min=0.5, r_max=1.0)
    with pytest.raises(ValueError, match=r"^params\['W_f'\]: expected shape \(5, 3\)"):
        minlstm.apply({**problem("minlstm")[1], "W_f": jnp.ones((5, 2))}, carry.real, xs[0])
