"""The fast GRU layer: equal to a NumPy loop and to the plain scan; gradients equal to
jax.grad of the plain scan (float64, <= 1e-10 relative) with lengths and reverse, for
every kernel choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_cells import np_gru
from test_lstm_layer import _max_relative_error

import jaxrnn
from jaxrnn.cells import gru
from jaxrnn.gru_fast import Choices, fuse, unfuse

T, B, D, H = 7, 4, 3, 5
LENGTHS = [7, 3, 0, 1]
# every non-default choice at once (the default is covered by the other tests)
OTHER_CHOICES = Choices(
    unroll=3, backward_unroll=2, sigmoid_via_tanh=False, hoist_input=True, grads_after_scan=True
)


def _setup(seed, batch=(B,), n_steps=T, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    # nonzero biases, larger weights: gates away from 1/2 so that mistakes show
    params = {
        k: jnp.asarray(rng.normal(0, 0.6, s), dtype) for k, s in gru.param_shapes(D, H).items()
    }
    xs = jnp.asarray(rng.normal(size=(n_steps, *batch, D)), dtype)
    carry = jnp.asarray(rng.normal(size=(*batch, H)), dtype)
    return params, carry, xs


def _numpy_gru(params, carry, xs, lengths=None, reverse=False):
    """test_cells.np_gru per sequence, over its first L_n steps (flipped for ``reverse``)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    xs, h_all = np.asarray(xs, np.float64), np.array(carry, np.float64)
    ys = np.zeros(xs.shape[:-1] + (H,))
    for n in range(xs.shape[1]):
        length = xs.shape[0] if lengths is None else int(lengths[n])
        if length:
            steps = xs[:length, n][::-1] if reverse else xs[:length, n]
            h_all[n], ys_n = np_gru(p, steps, h_all[n])
            ys[:length, n] = ys_n[::-1] if reverse else ys_n
    return h_all, ys


def _gradients(params, carry, xs, lengths, reverse, choices=None):
    """jax.grad of a loss on ys and h_T, through the plain scan and through gru_layer."""
    rng = np.random.default_rng(100)
    w_ys, w_h = rng.normal(size=xs.shape[:-1] + (H,)), rng.normal(size=xs.shape[1:-1] + (H,))

    def loss(run):
        def value(p, c, x):
            h, ys = run(p, c, x, lengths=lengths, reverse=reverse)
            return jnp.sum(w_ys * ys) + jnp.sum(w_h * jnp.sin(h))

        return jax.jit(jax.grad(value, argnums=(0, 1, 2)))

    scan = lambda p, c, x, **kw: jaxrnn.scan(gru.apply, p, c, x, **kw)
    fast = lambda p, c, x, **kw: jaxrnn.gru_layer(p, c, x, choices=choices, **kw)
    return loss(scan)(params, carry, xs), loss(fast)(params, carry, xs)


def test_forward_equals_a_numpy_loop_with_lengths_and_reverse():
    params, carry, xs = _setup(0)
    for lengths in (None, np.array(LENGTHS)):
        for reverse in (False, True):
            h, ys = jaxrnn.gru_layer(params, carry, xs, lengths=lengths, reverse=reverse)
            h_np, ys_np = _numpy_gru(params, carry, xs, lengths, reverse)
            np.testing.assert_allclose(ys, ys_np, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(h, h_np, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "lengths, reverse, choices",
    [
        (None, False, None),
        (LENGTHS, True, None),
        (LENGTHS, False, OTHER_CHOICES),
    ],
    ids=["full", "lengths_reverse", "lengths_other_choices"],
)
def test_gradients_equal_jax_grad_of_the_plain_scan(lengths, reverse, choices):
    # lengths exercise the masked path: a full (7), a stopped (3, 1) and an empty (0) sequence
    params, carry, xs = _setup(1)
    lengths = None if lengths is None else jnp.array(lengths)
    expected, got = _gradients(params, carry, xs, lengths, reverse, choices)
    assert _max_relative_error(expected, got) <= 1e-10


def test_two_batch_axes_with_lengths_on_the_leading_one_as_in_scan():
    params, carry, xs = _setup(2, batch=(2, 3), n_steps=5)
    lengths = jnp.array([2, 5])
    want = jaxrnn.scan(gru.apply, params, carry, xs, lengths=lengths, reverse=True)
    assert _max_relative_error(want, jaxrnn.gru_layer(params, carry, xs, lengths=lengths)) > 1e-3
    got = jaxrnn.gru_layer(params, carry, xs, lengths=lengths, reverse=True)
    assert _max_relative_error(want, got) <= 1e-12


def test_nan_padding_reaches_neither_outputs_nor_gradients():
    params, carry, xs = _setup(3)
    lengths = jnp.array([T, 3, 0, 1])
    clean = xs.at[3:, 1].set(0.0).at[:, 2].set(0.0).at[1:, 3].set(0.0)
    padded = xs.at[3:, 1].set(jnp.nan).at[:, 2].set(jnp.nan).at[1:, 3].set(jnp.nan)

    def loss(p, c, x):
        h, ys = jaxrnn.gru_layer(p, c, x, lengths=lengths, reverse=True)
        return jnp.sum(ys) + jnp.sum(h**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    np.testing.assert_array_equal(loss(params, carry, padded), loss(params, carry, clean))
    for got, want in zip(
        jax.tree.leaves(grad(params, carry, padded)),
        jax.tree.leaves(grad(params, carry, clean)),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def test_a_sequence_of_length_zero_passes_its_carry_and_gradient_through():
    params, carry, xs = _setup(4)
    lengths = jnp.zeros(B, int)
    h, ys = jaxrnn.gru_layer(params, carry, xs, lengths=lengths)
    np.testing.assert_array_equal(h, carry)
    assert not np.asarray(ys).any()
    d_params, d_carry = jax.grad(
        lambda p, c: jaxrnn.gru_layer(p, c, xs, lengths=lengths)[0].sum(), argnums=(0, 1)
    )(params, carry)
    np.testing.assert_array_equal(d_carry, np.ones((B, H)))
    assert not any(np.asarray(g).any() for g in jax.tree.leaves(d_params))


def test_float32_and_no_steps():
    params, carry, xs = _setup(5, dtype=jnp.float32)
    h, ys = jaxrnn.gru_layer(params, carry, xs)
    assert ys.dtype == h.dtype == jnp.float32
    h_ref, ys_ref = jaxrnn.scan(gru.apply, params, carry, xs)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-5, atol=1e-6)
    h, ys = jaxrnn.gru_layer(params, carry, xs[:0])
    np.testing.assert_array_equal(h, carry)
    assert ys.shape == (0, B, H)


def test_the_gradient_is_the_custom_vjp_and_runs_two_scans():
    params, carry, xs = _setup(6)
    jaxpr = str(jax.make_jaxpr(lambda p: jaxrnn.gru_layer(p, carry, xs)[1].sum())(params))
    assert "custom_vjp_call" in jaxpr
    one_step = Choices(unroll=1, backward_unroll=1)
    steps = jaxrnn.steps.sequential_steps(
        jax.grad(lambda p: jaxrnn.gru_layer(p, carry, xs, choices=one_step)[1].sum()), params
    )
    assert steps == 2 * T  # one forward scan, one reverse scan


def test_fuse_stacks_gates_r_z_n_and_unfuse_inverts_it():
    params, carry, xs = _setup(7)
    W, U, b, b_hn = fuse(params)
    assert W.shape == (D, 3 * H) and U.shape == (H, 3 * H) and b.shape == (3 * H,)
    p, q = xs[0] @ W + b, carry @ U
    for k, gate in enumerate("rzn"):
        np.testing.assert_allclose(
            p[:, k * H : (k + 1) * H], xs[0] @ params[f"W_{gate}"].T + params[f"b_{gate}"]
        )
        np.testing.assert_allclose(q[:, k * H : (k + 1) * H], carry @ params[f"U_{gate}"].T)
    back = unfuse(W, U, b, b_hn)
    assert all(np.array_equal(back[k], params[k]) for k in params)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, c, x: (p, c[:2], x), r"carry: expected shape \(4, 5\)"),
        (lambda p, c, x: (p, c, x[..., :2]), r"xs: expected shape \(\*batch, 3\)"),
        (lambda p, c, x: (p, c, x[0]), r"carry: expected shape \(5,\)"),
        (lambda p, c, x: ({**p, "b_hn": p["b_r"][:2]}, c, x), r"params\['b_hn'\]"),
        (lambda p, c, x: ({k: v for k, v in p.items() if k != "U_z"}, c, x), "missing"),
        (lambda p, c, x: ({**p, "b_r": p["b_r"].astype(jnp.float32)}, c, x), "one floating"),
    ],
)
def test_bad_inputs_are_named(change, message):
    params, carry, xs = _setup(8)
    with pytest.raises(ValueError, match=message):
        jaxrnn.gru_layer(*change(params, carry, xs))


def test_bad_options_are_named():
    params, carry, xs = _setup(8)
    with pytest.raises(ValueError, match="reverse: expected True or False"):
        jaxrnn.gru_layer(params, carry, xs, reverse="yes")
    with pytest.raises(ValueError, match="choices: expected a jaxrnn.gru_fast.Choices"):
        jaxrnn.gru_layer(params, carry, xs, choices={"unroll": 2})
    with pytest.raises(ValueError, match="choices.unroll: expected a positive integer"):
        jaxrnn.gru_layer(params, carry, xs, choices=Choices(unroll=0))
    with pytest.raises(ValueError, match="lengths: expected values in"):
        jaxrnn.gru_layer(params, carry, xs, lengths=jnp.array([8, 1, 1, 1]))


def test_inside_shard_map_with_a_carry_made_inside():
    # one device is enough: inside the map xs varies over the mesh axis and a carry made by
    # init_carry does not; the scan and the custom_vjp must reconcile the two
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    params, _, xs = _setup(9)
    lengths = jnp.array(LENGTHS)

    def inside(p, x, n):
        return jaxrnn.gru_layer(p, gru.init_carry(x.shape[1:2], H, x.dtype), x, lengths=n)[1]

    spec = jax.sharding.PartitionSpec
    mapped = jax.shard_map(
        inside,
        mesh=mesh,
        in_specs=(spec(), spec(None, "batch"), spec("batch")),
        out_specs=spec(None, "batch"),
    )
    grad = lambda run: jax.jit(jax.grad(lambda p, x: jnp.sum(run(p, x, lengths) ** 2), (0, 1)))
    expected, got = grad(inside)(params, xs), grad(mapped)(params, xs)
    assert _max_relative_error(expected, got) <= 1e-12


def test_traced_lengths_out_of_range_act_as_the_bounds_unless_checkified():
    from jax.experimental import checkify

    params, carry, xs = _setup(10, batch=(2,))
    h, ys = jax.jit(lambda n: jaxrnn.gru_layer(params, carry, xs, lengths=n))(jnp.array([-1, 99]))
    np.testing.assert_array_equal(h[0], carry[0])  # -1 acts as 0
    h_full, _ = jaxrnn.gru_layer(params, carry, xs)
    np.testing.assert_allclose(h[1], h_full[1], rtol=1e-12)  # 99 acts as T
    checked = checkify.checkify(
        jax.jit(lambda n: jaxrnn.gru_layer(params, carry, xs, lengths=n, checkify_lengths=True))
    )
    assert checked(jnp.array([-1, 99]))[0].get().startswith("lengths: expected values in [0, T]")
    assert checked(jnp.array([0, T]))[0].get() is None
