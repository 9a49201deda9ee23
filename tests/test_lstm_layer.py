"""The fast LSTM layer: equal to the plain scan and to a NumPy loop, gradients equal to
jax.grad of the plain scan (float64, <= 1e-10 relative), with and without lengths, forward
and reverse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cells import np_lstm

import jaxrnn
from jaxrnn._lstm_layer import lstm_layer
from jaxrnn.cells import lstm
from jaxrnn.lstm_fast import Choices, fuse, unfuse

T, B, D, H = 7, 4, 3, 5

# Every kernel choice must give the same numbers; each departs from the default in one way.
CHOICES = {
    "default": Choices(),
    "unroll1": Choices(unroll=1, backward_unroll=1),
    "unroll3_backward8": Choices(unroll=3, backward_unroll=8),
    "plain_sigmoid": Choices(sigmoid_via_tanh=False),
    "hoisted_input": Choices(hoist_input=True),
    "grads_after_scan": Choices(grads_after_scan=True),
    "batch_in_3_chunks": Choices(batch_split=3),
    "one_matmul": Choices(one_matmul=True),
    "blocks_of_3": Choices(block=3),
}


def _setup(seed, batch=(B,), n_steps=T, dtype=jnp.float64):
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = lstm.init(keys[0], D, H, dtype=dtype)
    # nonzero biases, larger weights: gates away from 1/2 so that mistakes show
    params = {k: v + 0.3 * jax.random.normal(keys[1], v.shape, dtype) for k, v in params.items()}
    xs = jax.random.normal(keys[2], (n_steps, *batch, D), dtype)
    carry = (
        jax.random.normal(keys[3], (*batch, H), dtype),
        jax.random.normal(keys[4], (*batch, H), dtype),
    )
    return params, carry, xs


def _numpy_lstm(params, carry, xs, lengths=None, reverse=False):
    """An independent float64 NumPy loop over SPEC §4 (test_cells.np_lstm), per sequence,
    stopping at each sequence's length; outputs past it stay zero. ``reverse`` runs the loop
    over the sequence's steps flipped (length - 1 down to 0) and flips its outputs back."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xs = np.asarray(xs, np.float64)
    c_all, h_all = (np.array(a, np.float64) for a in carry)
    ys = np.zeros(xs.shape[:-1] + (H,))
    for n in range(xs.shape[1]):
        length = xs.shape[0] if lengths is None else int(lengths[n])
        if not length:
            continue
        steps = xs[:length, n][::-1] if reverse else xs[:length, n]
        (c_all[n], h_all[n]), ys_n = np_lstm(p, steps, c_all[n], h_all[n])
        ys[:length, n] = ys_n[::-1] if reverse else ys_n
    return (c_all, h_all), ys


def _loss(run, weights):
    """A loss that touches every output: ys, the final c and the final h."""

    def loss(params, carry, xs):
        (c, h), ys = run(params, carry, xs)
        return jnp.sum(weights[0] * ys) + jnp.sum(jnp.sin(c)) + jnp.sum(weights[1] * h**2)

    return loss


def _max_relative_error(expected, got):
    errors = jax.tree_util.tree_map(
        lambda e, g: float(jnp.max(jnp.abs(e - g)) / max(float(jnp.max(jnp.abs(e))), 1e-300)),
        expected,
        got,
    )
    return max(jax.tree_util.tree_leaves(errors))


def _gradients(params, carry, xs, lengths, choices, seed=0, reverse=False):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed + 100))
    weights = (
        jax.random.normal(k1, xs.shape[:-1] + (H,), xs.dtype),
        jax.random.normal(k2, xs.shape[1:-1] + (H,), xs.dtype),
    )
    options = {"lengths": lengths, "reverse": reverse}
    reference = _loss(lambda p, c, x: jaxrnn.scan(lstm.apply, p, c, x, **options), weights)
    fast = _loss(lambda p, c, x: lstm_layer(p, c, x, choices=choices, **options), weights)
    expected = jax.jit(jax.grad(reference, argnums=(0, 1, 2)))(params, carry, xs)
    got = jax.jit(jax.grad(fast, argnums=(0, 1, 2)))(params, carry, xs)
    return expected, got


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, [7, 3, 0, 1]], ids=["full", "lengths"])
def test_forward_equals_a_numpy_loop_and_the_plain_scan(lengths, reverse):
    params, carry, xs = _setup(0)
    lengths = None if lengths is None else jnp.array(lengths)
    (c, h), ys = lstm_layer(params, carry, xs, lengths=lengths, reverse=reverse)
    (c_np, h_np), ys_np = _numpy_lstm(params, carry, xs, lengths, reverse)
    np.testing.assert_allclose(ys, ys_np, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c, c_np, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h, h_np, rtol=1e-12, atol=1e-13)
    (c_ref, h_ref), ys_ref = jaxrnn.scan(
        lstm.apply, params, carry, xs, lengths=lengths, reverse=reverse
    )
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c, c_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h, h_ref, rtol=1e-12, atol=1e-13)


def test_reverse_runs_each_sequence_from_its_own_last_step():
    # Sequence 1 (length 3) in reverse sees xs[2], xs[1], xs[0] only: its final carry is one
    # forward run over those three steps, and its output at t = 0 is that run's last output.
    params, carry, xs = _setup(11)
    lengths = jnp.array([7, 3, 0, 1])
    (c, h), ys = lstm_layer(params, carry, xs, lengths=lengths, reverse=True)
    p = {k: np.asarray(v) for k, v in params.items()}
    xs_np, c0, h0 = np.asarray(xs), np.asarray(carry[0]), np.asarray(carry[1])
    (c1, h1), ys1 = np_lstm(p, xs_np[2::-1, 1], c0[1], h0[1])
    np.testing.assert_allclose(c[1], c1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h[1], h1, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ys[:3, 1], ys1[::-1], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(ys[3:, 1], np.zeros((T - 3, H)))
    # length 1: one step on xs[0]; length 0: the carry unchanged and no output
    (_, h3), _ = np_lstm(p, xs_np[:1, 3], c0[3], h0[3])
    np.testing.assert_allclose(h[3], h3, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(h[2], h0[2])
    np.testing.assert_array_equal(ys[:, 2], np.zeros((T, H)))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gradients_equal_jax_grad_of_the_plain_scan_without_lengths(reverse):
    params, carry, xs = _setup(1)
    expected, got = _gradients(params, carry, xs, None, Choices(), reverse=reverse)
    assert _max_relative_error(expected, got) <= 1e-10


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", sorted(CHOICES))
def test_gradients_equal_jax_grad_of_the_plain_scan_with_lengths_for_every_choice(name, reverse):
    # lengths exercise the masked code path, which contains the unmasked one (all active
    # for sequence 0) as well as stopped (3, 1) and never-started (0) sequences
    params, carry, xs = _setup(1)
    lengths = jnp.array([7, 3, 0, 1])
    expected, got = _gradients(params, carry, xs, lengths, CHOICES[name], reverse=reverse)
    assert _max_relative_error(expected, got) <= 1e-10


@settings(max_examples=6)
@given(
    n_steps=st.integers(1, 6),
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple),
    seed=st.integers(0, 10_000),
    use_lengths=st.booleans(),
    reverse=st.booleans(),
)
def test_gradients_equal_jax_grad_for_random_shapes_and_lengths(
    n_steps, batch, seed, use_lengths, reverse
):
    params, carry, xs = _setup(seed, batch=batch, n_steps=n_steps)
    lengths = None
    if use_lengths:
        lengths = jax.random.randint(jax.random.PRNGKey(seed), batch, 0, n_steps + 1)
    expected, got = _gradients(params, carry, xs, lengths, Choices(), seed, reverse)
    assert _max_relative_error(expected, got) <= 1e-10


def test_a_sequence_of_length_zero_passes_its_carry_and_gradient_through():
    params, carry, xs = _setup(2)
    lengths = jnp.array([0, 0, 0, 0])
    (c, h), ys = lstm_layer(params, carry, xs, lengths=lengths)
    np.testing.assert_array_equal(c, carry[0])
    np.testing.assert_array_equal(h, carry[1])
    assert float(jnp.abs(ys).max()) == 0.0
    # d(sum h_T)/d h_0 = 1 exactly, and nothing reaches the weights
    grads = jax.grad(
        lambda p, cr: lstm_layer(p, cr, xs, lengths=lengths)[0][1].sum(), argnums=(0, 1)
    )(params, carry)
    np.testing.assert_array_equal(grads[1][1], np.ones((B, H)))
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(grads[0]))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_nan_padding_reaches_neither_outputs_nor_gradients(reverse):
    params, carry, xs = _setup(3)
    lengths = jnp.array([T, 3, 0, 1])
    zero_pad = xs.at[3:, 1].set(0.0).at[:, 2].set(0.0).at[1:, 3].set(0.0)
    weights = (jnp.ones(xs.shape[:-1] + (H,)), jnp.ones(xs.shape[1:-1] + (H,)))
    loss = _loss(lambda p, c, x: lstm_layer(p, c, x, lengths=lengths, reverse=reverse), weights)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    want = grad(params, carry, zero_pad)
    for bad in (jnp.nan, jnp.inf, 1e300):
        padded = xs.at[3:, 1].set(bad).at[:, 2].set(bad).at[1:, 3].set(bad)
        np.testing.assert_array_equal(loss(params, carry, padded), loss(params, carry, zero_pad))
        got = grad(params, carry, padded)
        for g, w in zip(jax.tree.leaves(got[:2]), jax.tree.leaves(want[:2]), strict=True):
            np.testing.assert_array_equal(g, w)
            assert np.isfinite(g).all()
        # the input gradient of a padding step is zero, of a valid step unchanged
        np.testing.assert_array_equal(got[2], want[2])
        assert not got[2][3:, 1].any() and not got[2][:, 2].any() and got[2][:3, 1].all()


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [[2, 5], 3], ids=["leading_axis", "scalar"])
def test_lengths_of_fewer_axes_broadcast_over_the_batch_as_in_scan(lengths, reverse):
    params, carry, xs = _setup(5, batch=(2, 3), n_steps=5)
    lengths = np.array(lengths)
    got = lstm_layer(params, carry, xs, lengths=lengths, reverse=reverse)
    want = jaxrnn.scan(lstm.apply, params, carry, xs, lengths=lengths, reverse=reverse)
    assert _max_relative_error(want, got) <= 1e-12


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lengths_under_jit_as_traced_values(reverse):
    params, carry, xs = _setup(3)
    lengths = jnp.array([2, 7, 5, 1])
    run = jax.jit(lambda p, c, x, n: lstm_layer(p, c, x, lengths=n, reverse=reverse))
    (c, h), ys = run(params, carry, xs, lengths)
    (c_np, h_np), ys_np = _numpy_lstm(params, carry, xs, lengths, reverse)
    np.testing.assert_allclose(ys, ys_np, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(h, h_np, rtol=1e-12, atol=1e-13)


def test_float32_matches_the_plain_scan_in_float32():
    params, carry, xs = _setup(4, dtype=jnp.float32)
    (c, h), ys = lstm_layer(params, carry, xs)
    assert ys.dtype == jnp.float32 and c.dtype == jnp.float32
    (c_ref, h_ref), ys_ref = jaxrnn.scan(lstm.apply, params, carry, xs)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    expected, got = _gradients(params, carry, xs, None, Choices())
    assert _max_relative_error(expected, got) <= 1e-4


def test_the_gradient_is_the_custom_vjp_and_runs_two_scans():
    params, carry, xs = _setup(5)
    jaxpr = str(jax.make_jaxpr(lambda p: lstm_layer(p, carry, xs)[1].sum())(params))
    assert "custom_vjp_call" in jaxpr

    def steps(choices):
        loss = lambda p: lstm_layer(p, carry, xs, choices=choices)[1].sum()
        return jaxrnn.steps.sequential_steps(jax.grad(loss), params)

    assert steps(Choices(1, 1, block=1)) == 2 * T  # one forward scan, one reverse scan
    assert steps(Choices(block=3)) == 2 * 3  # ceil(7 / 3) blocks each way
    assert steps(Choices()) == 2  # the default's blocks of 8 steps: T = 7 is one block


def test_fuse_stacks_gates_i_f_o_c_and_unfuse_inverts_it():
    params, carry, xs = _setup(6)
    W, U, b = fuse(params)
    assert W.shape == (D, 4 * H) and U.shape == (H, 4 * H) and b.shape == (4 * H,)
    h_prev, x = carry[1], xs[0]
    z = x @ W + h_prev @ U + b
    for k, gate in enumerate("ifoc"):
        pre = x @ params[f"W_{gate}"].T + h_prev @ params[f"U_{gate}"].T + params[f"b_{gate}"]
        np.testing.assert_allclose(z[:, k * H : (k + 1) * H], pre, rtol=1e-13)
    back = unfuse(W, U, b)
    for key in params:
        np.testing.assert_array_equal(back[key], params[key])


def test_empty_sequence_returns_the_carry():
    params, carry, _ = _setup(7)
    (c, h), ys = lstm_layer(params, carry, jnp.zeros((0, B, D)))
    assert ys.shape == (0, B, H)
    np.testing.assert_array_equal(h, carry[1])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, c, x: (p, c, x[0, 0]), "xs: expected shape"),
        (lambda p, c, x: (p, c, x[..., :2]), r"xs: expected shape \(\*batch, 3\)"),
        (lambda p, c, x: (p, c[0], x), "carry: expected a tuple"),
        (lambda p, c, x: (p, (c[0][:, :2], c[1]), x), r"carry\[0\]"),
        (lambda p, c, x: (p, (c[0][:2], c[1][:2]), x), "the batch shape of xs"),
        (lambda p, c, x: ({**p, "U_f": p["U_f"][:2]}, c, x), "U_f"),
        (lambda p, c, x: ({k: v for k, v in p.items() if k != "b_o"}, c, x), "missing"),
        (lambda p, c, x: ({**p, "b_o": p["b_o"].astype(jnp.float32)}, c, x), "one floating"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_them(change, message):
    args = change(*_setup(8))
    with pytest.raises(ValueError, match=message):
        lstm_layer(*args)


@pytest.mark.parametrize(
    "lengths, message",
    [
        (jnp.array([1.0, 2.0, 3.0, 4.0]), "integer"),
        (jnp.array([1, 2]), "batch shape"),
        (jnp.array([1, 2, 3, T + 1]), r"\[0, T\]"),
    ],
)
def test_bad_lengths_raise(lengths, message):
    with pytest.raises(ValueError, match=f"lengths: .*{message}"):
        lstm_layer(*_setup(9), lengths=lengths)


@pytest.mark.parametrize(
    "choices, message",
    [
        ((4, 4), "choices: expected"),
        (Choices(unroll=0), "choices.unroll"),
        (Choices(backward_unroll=True), "choices.backward_unroll"),
        (Choices(batch_split=0), "choices.batch_split"),
        (Choices(block=0), "choices.block"),
    ],
)
def test_bad_choices_raise(choices, message):
    with pytest.raises(ValueError, match=message):
        lstm_layer(*_setup(10), choices=choices)


@pytest.mark.parametrize("reverse", [1, "yes", None, jnp.array(True)])
def test_bad_reverse_raises(reverse):
    with pytest.raises(ValueError, match=r"reverse: expected True or False, got"):
        lstm_layer(*_setup(12), reverse=reverse)


def test_traced_lengths_out_of_range_act_as_the_bounds_unless_checkified():
    from jax.experimental import checkify

    params, carry, xs = _setup(11, batch=(2,))
    n_steps = xs.shape[0]
    run = jax.jit(lambda lengths: lstm_layer(params, carry, xs, lengths=lengths))
    (c, h), ys = run(jnp.array([-1, n_steps + 4]))  # act as 0 and T
    np.testing.assert_array_equal(c[0], carry[0][0])
    np.testing.assert_array_equal(ys[:, 0], 0.0)
    (_, h_full), ys_full = lstm_layer(params, carry, xs)
    np.testing.assert_allclose(h[1], h_full[1], rtol=1e-12)
    np.testing.assert_allclose(ys[:, 1], ys_full[:, 1], rtol=1e-12)
    checked = checkify.checkify(
        jax.jit(lambda L: lstm_layer(params, carry, xs, lengths=L, checkify_lengths=True))
    )
    error, _ = checked(jnp.array([-1, n_steps + 4]))
    assert error.get().startswith(f"lengths: expected values in [0, T] = [0, {n_steps}]")
    assert checked(jnp.array([0, n_steps]))[0].get() is None
