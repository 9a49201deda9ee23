"""The scan runner: lengths, reverse and bidirectional against independent references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxrnn
from jaxrnn.cells import elman, gru, lstm

KEY = jax.random.PRNGKey(0)
D, H = 3, 4


def np_elman_run(p, xs, h):
    """NumPy Elman loop over the given steps; returns (final h, outputs)."""
    ys = []
    for x in xs:
        h = np.tanh(p["W"] @ h + p["U"] @ x + p["b"])
        ys.append(h)
    return h, np.array(ys).reshape(len(ys), len(h))


def elman_setup(n_steps, batch):
    params = elman.init(KEY, D, H, dtype=jnp.float64)
    params["b"] = jnp.linspace(-0.5, 0.5, H)
    xs = jax.random.normal(jax.random.PRNGKey(1), (n_steps, batch, D))
    h0 = jax.random.normal(jax.random.PRNGKey(2), (batch, H))
    return params, xs, h0


@pytest.mark.parametrize("reverse", [False, True])
def test_lengths_equal_running_each_sequence_alone(reverse):
    params, xs, h0 = elman_setup(7, 4)
    lengths = jnp.array([7, 3, 0, 1])
    h, ys = jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths, reverse=reverse)
    p = {k: np.asarray(v) for k, v in params.items()}
    for n, length in enumerate(lengths.tolist()):
        steps = np.asarray(xs[:length, n])
        if reverse:
            steps = steps[::-1]
        h_ref, ys_ref = np_elman_run(p, steps, np.asarray(h0[n]))
        if reverse:
            ys_ref = ys_ref[::-1]
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12)
        np.testing.assert_allclose(ys[:length, n], ys_ref.reshape(length, H), rtol=1e-12)
        np.testing.assert_array_equal(ys[length:, n], 0.0)


def test_no_lengths_is_lax_scan_and_reverse_keeps_alignment():
    params, xs, h0 = elman_setup(5, 2)
    h, ys = jaxrnn.scan(elman.apply, params, h0, xs, reverse=True)
    p = {k: np.asarray(v) for k, v in params.items()}
    h_ref, ys_ref = np_elman_run(p, np.asarray(xs[::-1, 0]), np.asarray(h0[0]))
    np.testing.assert_allclose(h[0], h_ref, rtol=1e-12)
    np.testing.assert_allclose(ys[:, 0], ys_ref[::-1], rtol=1e-12)


def test_full_lengths_equal_no_lengths_and_unroll_changes_nothing():
    params, xs, h0 = elman_setup(9, 3)
    plain = jaxrnn.scan(elman.apply, params, h0, xs)
    masked = jaxrnn.scan(elman.apply, params, h0, xs, lengths=jnp.full((3,), 9), unroll=4)
    np.testing.assert_allclose(plain[0], masked[0], rtol=1e-14)
    np.testing.assert_allclose(plain[1], masked[1], rtol=1e-14)
    for unroll in (True, False):  # as lax.scan: all T steps, or one
        full = jaxrnn.scan(elman.apply, params, h0, xs, unroll=unroll)
        np.testing.assert_allclose(plain[1], full[1], rtol=1e-14)


def test_lengths_with_lstm_tuple_carry_and_two_batch_axes():
    params = lstm.init(KEY, D, H, dtype=jnp.float64)
    xs = jax.random.normal(KEY, (6, 2, 3, D))
    lengths = jnp.array([[6, 2, 4], [1, 0, 5]])
    (c, h), ys = jaxrnn.scan(
        lstm.apply, params, lstm.init_carry((2, 3), H, jnp.float64), xs, lengths=lengths
    )
    for a in range(2):
        for b in range(3):
            n = int(lengths[a, b])
            (c1, h1), ys1 = jax.lax.scan(
                functools.partial(lstm.apply, params),
                lstm.init_carry((), H, jnp.float64),
                xs[:n, a, b],
            )
            np.testing.assert_allclose(c[a, b], c1, rtol=1e-12)
            np.testing.assert_allclose(h[a, b], h1, rtol=1e-12)
            np.testing.assert_allclose(ys[:n, a, b], ys1, rtol=1e-12)
            np.testing.assert_array_equal(ys[n:, a, b], 0.0)


def test_bidirectional_under_padding():
    params_fw, xs, h0 = elman_setup(6, 3)
    params_bw = elman.init(jax.random.PRNGKey(9), D, H, dtype=jnp.float64)
    lengths = jnp.array([6, 2, 4])
    (h_fw, h_bw), ys = jaxrnn.bidirectional(
        elman.apply, (params_fw, params_bw), (h0, h0), xs, lengths=lengths
    )
    assert ys.shape == (6, 3, 2 * H)
    p_fw = {k: np.asarray(v) for k, v in params_fw.items()}
    p_bw = {k: np.asarray(v) for k, v in params_bw.items()}
    for n, length in enumerate(lengths.tolist()):
        seq = np.asarray(xs[:length, n])
        hf, yf = np_elman_run(p_fw, seq, np.asarray(h0[n]))
        hb, yb = np_elman_run(p_bw, seq[::-1], np.asarray(h0[n]))
        np.testing.assert_allclose(h_fw[n], hf, rtol=1e-12)
        np.testing.assert_allclose(h_bw[n], hb, rtol=1e-12)
        np.testing.assert_allclose(ys[:length, n, :H], yf, rtol=1e-12)
        # the backward output at step t has seen steps t..length-1 (never the padding)
        np.testing.assert_allclose(ys[:length, n, H:], yb[::-1], rtol=1e-12)
        np.testing.assert_array_equal(ys[length:, n], 0.0)


def test_bidirectional_with_two_cells_and_custom_merge():
    xs = jax.random.normal(KEY, (5, 2, D))
    p_e = elman.init(KEY, D, H, dtype=jnp.float64)
    p_g = gru.init(KEY, D, H, dtype=jnp.float64)
    carries = (elman.init_carry((2,), H, jnp.float64), gru.init_carry((2,), H, jnp.float64))
    _, ys = jaxrnn.bidirectional(
        (elman.apply, gru.apply), (p_e, p_g), carries, xs, merge=lambda a, b: a + b
    )
    _, y_fw = jaxrnn.scan(elman.apply, p_e, carries[0], xs)
    _, y_bw = jaxrnn.scan(gru.apply, p_g, carries[1], xs, reverse=True)
    np.testing.assert_allclose(ys, y_fw + y_bw, rtol=1e-12)


def test_gradient_through_lengths_ignores_padding():
    params, xs, h0 = elman_setup(6, 2)
    lengths = jnp.array([6, 3])

    def loss(xs):
        h, _ = jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths)
        return jnp.sum(h)

    g = jax.grad(loss)(xs)
    np.testing.assert_array_equal(g[3:, 1], 0.0)
    assert float(jnp.abs(g[:3, 1]).min()) > 0.0


@pytest.mark.parametrize("lengths", [None, jnp.zeros(2, jnp.int32)])
def test_zero_steps_return_the_initial_carry(lengths):
    # as lax.scan does for T = 0 (an IndexError before)
    params, xs, h0 = elman_setup(0, 2)
    h, ys = jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths)
    np.testing.assert_array_equal(h, h0)
    assert ys.shape == (0, 2, H)


@pytest.mark.parametrize("reverse", [False, True])
def test_nan_padding_reaches_neither_outputs_nor_gradients(reverse):
    params, xs, h0 = elman_setup(6, 2)
    lengths = jnp.array([6, 3])
    zero_pad = xs.at[3:, 1].set(0.0)

    def loss(p, xs):
        h, ys = jaxrnn.scan(elman.apply, p, h0, xs, lengths=lengths, reverse=reverse)
        return jnp.sum(h**2) + jnp.sum(ys**3)

    for bad in (jnp.nan, jnp.inf, 1e300):
        padded = xs.at[3:, 1].set(bad)
        np.testing.assert_array_equal(loss(params, padded), loss(params, zero_pad))
        grads, want = jax.grad(loss)(params, padded), jax.grad(loss)(params, zero_pad)
        for name in params:
            np.testing.assert_array_equal(grads[name], want[name])
            assert np.isfinite(grads[name]).all()


def test_scan_under_jit_with_traced_lengths():
    params, xs, h0 = elman_setup(5, 2)
    run = jax.jit(lambda lengths: jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths))
    h, ys = run(jnp.array([2, 5]))
    p = {k: np.asarray(v) for k, v in params.items()}
    for n, length in enumerate((2, 5)):
        h_ref, ys_ref = np_elman_run(p, np.asarray(xs[:length, n]), np.asarray(h0[n]))
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12)
        np.testing.assert_allclose(ys[:length, n], ys_ref, rtol=1e-12)
        np.testing.assert_array_equal(ys[length:, n], 0.0)


def test_traced_lengths_out_of_range_act_as_the_bounds_unless_checkified():
    from jax.experimental import checkify

    params, xs, h0 = elman_setup(5, 2)
    p = {k: np.asarray(v) for k, v in params.items()}
    run = jax.jit(lambda lengths: jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths))
    h, ys = run(jnp.array([-3, 9]))  # unchecked under jit: -3 acts as 0 and 9 as T = 5
    np.testing.assert_array_equal(h[0], h0[0])
    np.testing.assert_array_equal(ys[:, 0], 0.0)
    h_ref, ys_ref = np_elman_run(p, np.asarray(xs[:, 1]), np.asarray(h0[1]))
    np.testing.assert_allclose(h[1], h_ref, rtol=1e-12)
    np.testing.assert_allclose(ys[:, 1], ys_ref, rtol=1e-12)

    def checked(lengths):
        return jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths, checkify_lengths=True)

    checked_run = checkify.checkify(jax.jit(checked))
    error, _ = checked_run(jnp.array([-3, 9]))
    with pytest.raises(
        checkify.JaxRuntimeError, match=r"\[0, T\] = \[0, 5\], got min -3 and max 9"
    ):
        error.throw()
    error, (h, _) = checked_run(jnp.array([2, 5]))  # in range: no error, the same result
    assert error.get() is None
    np.testing.assert_allclose(h, run(jnp.array([2, 5]))[0], rtol=1e-12)
    both = checkify.checkify(
        jax.jit(
            lambda lengths: jaxrnn.bidirectional(
                elman.apply,
                (params, params),
                (h0, h0),
                xs,
                lengths=lengths,
                checkify_lengths=True,
            )
        )
    )
    assert "got min 0 and max 6" in both(jnp.array([0, 6]))[0].get()
    with pytest.raises(ValueError, match="checkify_lengths: expected True or False, got 1"):
        jaxrnn.scan(elman.apply, params, h0, xs, lengths=jnp.array([1, 2]), checkify_lengths=1)


PROPERTY_T, PROPERTY_B = 6, 4


@functools.partial(jax.jit, static_argnames="reverse")
def _elman_scan(params, h0, xs, lengths, reverse):
    return jaxrnn.scan(elman.apply, params, h0, xs, lengths=lengths, reverse=reverse)


@given(
    lengths=st.lists(st.integers(0, PROPERTY_T), min_size=PROPERTY_B, max_size=PROPERTY_B),
    reverse=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_lengths_match_numpy_loops(lengths, reverse, seed):
    params, _, h0 = elman_setup(PROPERTY_T, PROPERTY_B)
    xs = jax.random.normal(jax.random.PRNGKey(seed), (PROPERTY_T, PROPERTY_B, D))
    h, ys = _elman_scan(params, h0, xs, jnp.array(lengths), reverse)
    p = {k: np.asarray(v) for k, v in params.items()}
    for n, length in enumerate(lengths):
        steps = np.asarray(xs[:length, n])
        h_ref, ys_ref = np_elman_run(p, steps[::-1] if reverse else steps, np.asarray(h0[n]))
        if reverse:
            ys_ref = ys_ref[::-1]
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ys[:length, n], ys_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(ys[length:, n], 0.0)


# --- bad input -----------------------------------------------------------------------------


def test_errors():
    params, xs, h0 = elman_setup(5, 2)
    cases = [
        (dict(xs=jnp.zeros(())), "xs: expected arrays with a leading time axis T"),
        (dict(xs={}), "xs: expected an array of shape"),
        (dict(xs=(jnp.zeros((5, 2, D)), jnp.zeros((4, 2, D)))), "same leading T"),
        (dict(lengths=jnp.array([1, 6])), r"lengths: expected values in \[0, T\] = \[0, 5\]"),
        (dict(lengths=jnp.array([-1, 2])), "got min -1"),
        (dict(lengths=jnp.array([1, 2, 3])), r"lengths: expected the batch shape of xs, \(2,\)"),
        (dict(lengths=jnp.array([1.0, 2.0])), "lengths: expected an integer dtype"),
        (dict(unroll=0), "unroll: expected a positive integer"),
        (dict(carry=h0.astype(jnp.float32)), "carry: the cell maps a carry leaf of dtype"),
        (
            dict(carry=h0[:1]),
            r"carry: the cell maps a carry leaf of shape \(1, 4\) to shape \(2, 4\)",
        ),
        # float32 params and carry, float64 xs: the message names the dtype of xs
        (
            dict(params=elman.init(KEY, D, H), carry=h0.astype(jnp.float32)),
            r"float32 to dtype float64 \(xs has dtype float64\)",
        ),
        (dict(xs=jnp.zeros((5, 2, D + 1))), r"x: expected shape \(\*batch, 3\)"),
        (dict(carry=jnp.zeros((3, H))), r"carry, x: expected the same batch shape"),
        (dict(reverse="yes"), "reverse: expected True or False, got 'yes'"),
        (dict(cell=None), r"cell: expected a callable cell\(params, carry, x\), got None"),
        (dict(cell=lambda p, c, x: c), r"cell: expected .* to return a pair \(carry, y\)"),
    ]
    for overrides, message in cases:
        kwargs = dict(cell=elman.apply, params=params, carry=h0, xs=xs)
        kwargs.update(overrides)
        cell, p, carry, seq = (kwargs.pop(k) for k in ("cell", "params", "carry", "xs"))
        with pytest.raises(ValueError, match=message):
            jaxrnn.scan(cell, p, carry, seq, **kwargs)


def test_bidirectional_errors():
    params, xs, h0 = elman_setup(5, 2)
    with pytest.raises(ValueError, match="params: expected a pair"):
        jaxrnn.bidirectional(elman.apply, params, (h0, h0), xs)
    with pytest.raises(ValueError, match="carries: expected a pair"):
        jaxrnn.bidirectional(elman.apply, (params, params), h0, xs)
    with pytest.raises(ValueError, match="cells: expected a callable"):
        jaxrnn.bidirectional((1, 2), (params, params), (h0, h0), xs)
    with pytest.raises(ValueError, match="cells: expected a pair"):
        jaxrnn.bidirectional((elman.apply,) * 3, (params, params), (h0, h0), xs)


def test_batch_major_xs_get_a_message_about_the_time_axis():
    params = lstm.init(jax.random.PRNGKey(0), 4, 8)
    carry = lstm.init_carry((3,), 8)
    with pytest.raises(ValueError, match=r"x of shape \(20, 4\).*of xs \(3, 20, 4\).*"
                       r"time-major.*swapaxes"):  # fmt: skip
        jaxrnn.scan(lstm.apply, params, carry, jnp.ones((3, 20, 4)))
    # No hint where swapping the axes would not help either.
    with pytest.raises(ValueError, match=r"x of shape \(7, 4\)") as raised:
        jaxrnn.scan(lstm.apply, params, carry, jnp.ones((20, 7, 4)))
    assert "swapaxes" not in str(raised.value)
    # Errors that are not about x keep their message, and name what came without tracer types.
    run = jax.jit(lambda c: jaxrnn.scan(lstm.apply, params, c, jnp.ones((20, 3, 4))))
    with pytest.raises(ValueError, match=r"^carry: expected a tuple \(c, h\), got an array of "
                       r"shape \(3, 8\) and dtype float32"):  # fmt: skip
        run(jnp.ones((3, 8), jnp.float32))
