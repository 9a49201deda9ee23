"""Each cell against a NumPy reference loop written here, under jit, vmap and grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.cells import elman, gru, lstm, lstm_scalar, threshold

KEY = jax.random.PRNGKey(0)
T, B, D, H = 6, 3, 4, 5


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_params(params):
    return {k: np.asarray(v) for k, v in params.items()}


def np_elman(p, xs, h, act):
    ys = []
    for x in xs:
        h = act(p["W"] @ h + p["U"] @ x + p["b"])
        ys.append(h)
    return h, np.stack(ys)


def np_lstm(p, xs, c, h):
    ys = []
    for x in xs:
        i = np_sigmoid(p["W_i"] @ x + p["U_i"] @ h + p["b_i"])
        f = np_sigmoid(p["W_f"] @ x + p["U_f"] @ h + p["b_f"])
        o = np_sigmoid(p["W_o"] @ x + p["U_o"] @ h + p["b_o"])
        g = np.tanh(p["W_c"] @ x + p["U_c"] @ h + p["b_c"])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return (c, h), np.stack(ys)


def np_lstm_scalar(p, xs, c, h):
    ys = []
    for x in xs:
        i = np_sigmoid(p["w_ix"] * x + p["w_ih"] * h)
        f = np_sigmoid(p["w_fx"] * x + p["w_fh"] * h)
        o = np_sigmoid(p["w_ox"] * x + p["w_oh"] * h)
        g = np.tanh(p["w_gx"] * x + p["w_gh"] * h)
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return (c, h), np.array(ys)


def np_gru(p, xs, h):
    ys = []
    for x in xs:
        r = np_sigmoid(p["W_r"] @ x + p["U_r"] @ h + p["b_r"])
        z = np_sigmoid(p["W_z"] @ x + p["U_z"] @ h + p["b_z"])
        n = np.tanh(p["W_n"] @ x + p["b_n"] + r * (p["U_n"] @ h + p["b_hn"]))
        h = (1 - z) * n + z * h
        ys.append(h)
    return h, np.stack(ys)


def np_threshold(p, xs, h):
    ys = []
    for x in xs:
        h = (p["U"] @ x + p["W"] @ h + p["b_h"] > 0).astype(float)
        ys.append((p["V"] @ h + p["b_y"] > 0).astype(float))
    return h, np.stack(ys)


def random_biases(params, key):
    """Non-zero biases, so that the tests see every term of the equations."""
    out = dict(params)
    for k, name in enumerate(sorted(n for n in params if n.startswith("b"))):
        out[name] = jax.random.normal(jax.random.fold_in(key, k), params[name].shape)
    return out


@pytest.mark.parametrize("activation, np_act", [("tanh", np.tanh), ("sigmoid", np_sigmoid)])
def test_elman_matches_numpy(activation, np_act):
    params = random_biases(elman.init(KEY, D, H, dtype=jnp.float64), KEY)
    xs = jax.random.normal(KEY, (T, B, D))
    h0 = jax.random.normal(jax.random.PRNGKey(1), (B, H))
    cell = lambda p, c, x: elman.apply(p, c, x, activation=activation)
    h, ys = jaxrnn.scan(cell, params, h0, xs)
    p = np_params(params)
    for n in range(B):
        h_ref, ys_ref = np_elman(p, np.asarray(xs[:, n]), np.asarray(h0[n]), np_act)
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12)
        np.testing.assert_allclose(ys[:, n], ys_ref, rtol=1e-12)


def test_lstm_matches_numpy():
    params = random_biases(lstm.init(KEY, D, H, dtype=jnp.float64), KEY)
    xs = jax.random.normal(KEY, (T, B, D))
    c0 = jax.random.normal(jax.random.PRNGKey(1), (B, H))
    h0 = jax.random.normal(jax.random.PRNGKey(2), (B, H))
    (c, h), ys = jaxrnn.scan(lstm.apply, params, (c0, h0), xs)
    p = np_params(params)
    for n in range(B):
        (c_ref, h_ref), ys_ref = np_lstm(
            p, np.asarray(xs[:, n]), np.asarray(c0[n]), np.asarray(h0[n])
        )
        np.testing.assert_allclose(c[n], c_ref, rtol=1e-12)
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12)
        np.testing.assert_allclose(ys[:, n], ys_ref, rtol=1e-12)


def test_lstm_scalar_matches_numpy_and_has_exactly_eight_weights():
    params = lstm_scalar.init(KEY, dtype=jnp.float64)
    assert sorted(params) == sorted(
        ["w_ix", "w_ih", "w_fx", "w_fh", "w_ox", "w_oh", "w_gx", "w_gh"]
    )
    xs = jax.random.normal(KEY, (T,))
    (c, h), ys = jaxrnn.scan(
        lstm_scalar.apply, params, lstm_scalar.init_carry((), 1, jnp.float64), xs
    )
    (c_ref, h_ref), ys_ref = np_lstm_scalar(np_params(params), np.asarray(xs), 0.0, 0.0)
    np.testing.assert_allclose(ys, ys_ref, rtol=1e-12)
    np.testing.assert_allclose([c, h], [c_ref, h_ref], rtol=1e-12)


def test_lstm_scalar_batched():
    params = lstm_scalar.init(KEY, dtype=jnp.float64)
    xs = jax.random.normal(KEY, (T, 2, 3))
    _, ys = jaxrnn.scan(
        lstm_scalar.apply, params, lstm_scalar.init_carry((2, 3), 1, jnp.float64), xs
    )
    _, ys_ref = np_lstm_scalar(np_params(params), np.asarray(xs[:, 1, 2]), 0.0, 0.0)
    np.testing.assert_allclose(ys[:, 1, 2], ys_ref, rtol=1e-12)


def test_gru_matches_numpy():
    params = random_biases(gru.init(KEY, D, H, dtype=jnp.float64), KEY)
    xs = jax.random.normal(KEY, (T, B, D))
    h0 = jax.random.normal(jax.random.PRNGKey(1), (B, H))
    h, ys = jaxrnn.scan(gru.apply, params, h0, xs)
    p = np_params(params)
    for n in range(B):
        h_ref, ys_ref = np_gru(p, np.asarray(xs[:, n]), np.asarray(h0[n]))
        np.testing.assert_allclose(h[n], h_ref, rtol=1e-12)
        np.testing.assert_allclose(ys[:, n], ys_ref, rtol=1e-12)


def test_threshold_matches_numpy_and_step_of_zero_is_zero():
    # non-zero biases (init makes them zero) and two output units, so b_h, b_y and every
    # row of V are exercised
    params = random_biases(threshold.init(KEY, 2, 3, out_dim=2, dtype=jnp.float64), KEY)
    assert float(jnp.abs(params["b_h"]).min()) > 0 and params["V"].shape == (2, 3)
    xs = jax.random.bernoulli(KEY, 0.5, (T, B, 2)).astype(jnp.float64)
    h, ys = jaxrnn.scan(threshold.apply, params, threshold.init_carry((B,), 3, jnp.float64), xs)
    p = np_params(params)
    for n in range(B):
        h_ref, ys_ref = np_threshold(p, np.asarray(xs[:, n]), np.zeros(3))
        np.testing.assert_array_equal(h[n], h_ref)
        np.testing.assert_array_equal(ys[:, n], ys_ref)
    np.testing.assert_array_equal(threshold.step(jnp.array([-1.0, 0.0, 1e-30])), [0, 0, 1])


def test_threshold_accepts_integer_bits():
    params = random_biases(threshold.init(KEY, 2, 3), KEY)
    params = {k: v.astype(jnp.float32) for k, v in params.items()}
    bits = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.int32)
    h, y = threshold.apply(params, threshold.init_carry((4,), 3), jnp.asarray(bits))
    assert h.dtype == jnp.float32 and y.shape == (4, 1)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    for n in range(4):
        h_ref, y_ref = np_threshold(p, bits[n : n + 1].astype(float), np.zeros(3))
        np.testing.assert_array_equal(h[n], h_ref)
        np.testing.assert_array_equal(y[n], y_ref[0])


@pytest.mark.parametrize("module", [elman, gru, lstm, threshold])
def test_lists_and_a_shared_unbatched_carry_are_accepted(module):
    # x as nested lists equals x as an array; a carry of shape (H,) is shared by every
    # sequence of the batch: the same as the carry tiled to (B, H).
    params = random_biases(module.init(KEY, D, H, dtype=jnp.float64), KEY)
    x = np.asarray(jax.random.normal(KEY, (B, D)))
    one = module.init_carry((), H, jnp.float64)
    one = jax.tree_util.tree_map(lambda leaf: leaf + jnp.linspace(-0.5, 0.5, H), one)
    tiled = jax.tree_util.tree_map(lambda leaf: jnp.broadcast_to(leaf, (B, H)), one)
    want = module.apply(params, tiled, jnp.asarray(x))
    for got in (module.apply(params, one, x.tolist()), module.apply(params, one, jnp.asarray(x))):
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-14), got, want)
    if module is lstm:  # and the batch rows against the NumPy loop
        (c_ref, h_ref), _ = np_lstm(
            np_params(params), x[1:2], np.asarray(one[0]), np.asarray(one[1])
        )
        np.testing.assert_allclose(want[0][0][1], c_ref, rtol=1e-12)
        np.testing.assert_allclose(want[0][1][1], h_ref, rtol=1e-12)


def test_lstm_scalar_broadcasts_the_carry_against_x_like_the_vector_cells():
    # one state () shared by a batch x (B,), and states (B,) all fed one input x ()
    params = np_params(lstm_scalar.init(KEY, scale=1.5, dtype=jnp.float64))
    x = np.linspace(-1.0, 1.5, B)
    c0, h0 = np.float64(0.3), np.float64(-0.4)
    want = [np_lstm_scalar(params, [x[n]], c0, h0)[0] for n in range(B)]
    for x_in in (x, x.tolist()):
        (c, h), y = lstm_scalar.apply(params, (c0, h0), x_in)
        assert c.shape == h.shape == y.shape == (B,)
        np.testing.assert_allclose(c, [w[0] for w in want], rtol=1e-12)
        np.testing.assert_allclose(h, [w[1] for w in want], rtol=1e-12)
        np.testing.assert_array_equal(y, h)
    cs, hs = np.linspace(-0.5, 0.5, B), np.linspace(0.2, -0.6, B)
    (c, h), _ = lstm_scalar.apply(params, (cs, hs), x[0])
    want = [np_lstm_scalar(params, [x[0]], cs[n], hs[n])[0] for n in range(B)]
    np.testing.assert_allclose(c, [w[0] for w in want], rtol=1e-12)
    np.testing.assert_allclose(h, [w[1] for w in want], rtol=1e-12)


@pytest.mark.parametrize("module", [elman, gru])
def test_jit_vmap_and_grad(module):
    params = module.init(KEY, D, H, dtype=jnp.float64)
    xs = jax.random.normal(KEY, (T, B, D))

    def loss(p, xs_one):
        _, ys = jaxrnn.scan(module.apply, p, module.init_carry((), H, jnp.float64), xs_one)
        return jnp.sum(ys**2)

    batched = jax.jit(jax.vmap(loss, in_axes=(None, 1)))(params, xs)
    direct = jnp.array([loss(params, xs[:, n]) for n in range(B)])
    np.testing.assert_allclose(batched, direct, rtol=1e-12)
    grads = jax.grad(loss)(params, xs[:, 0])
    # central finite difference on one weight entry
    eps = 1e-6
    bumped = lambda s: {
        **params,
        "W" if module is elman else "U_r": (
            params["W" if module is elman else "U_r"].at[1, 2].add(s)
        ),
    }
    fd = (loss(bumped(eps), xs[:, 0]) - loss(bumped(-eps), xs[:, 0])) / (2 * eps)
    name = "W" if module is elman else "U_r"
    np.testing.assert_allclose(grads[name][1, 2], fd, rtol=1e-6)


def test_lstm_forget_bias_and_init_shapes():
    params = lstm.init(KEY, 3, 7, forget_bias=1.0)
    np.testing.assert_array_equal(params["b_f"], np.ones(7))
    np.testing.assert_array_equal(params["b_i"], np.zeros(7))
    assert params["W_c"].shape == (7, 3) and params["U_o"].shape == (7, 7)
    bound = 1 / np.sqrt(7)
    for name in ("W_i", "U_i", "W_c", "U_o"):  # U(-bound, bound): inside, and spread over it
        values = np.asarray(params[name])
        assert np.abs(values).max() <= bound
        assert values.min() < -bound / 3 and values.max() > bound / 3
    assert not np.array_equal(params["U_i"], params["U_f"])  # independent draws per gate
    c, h = lstm.init_carry((2, 5), 7)
    assert c.shape == h.shape == (2, 5, 7)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: elman.init(KEY, 0, 3), "in_dim: expected a positive integer, got 0"),
        (lambda: elman.init(KEY, 2, 2.5), "hidden: expected a positive integer"),
        (lambda: lstm_scalar.init(KEY, 2, 1), "in_dim, hidden"),
        (lambda: lstm_scalar.init(KEY, scale=-1.0), "scale: expected a positive number"),
        (lambda: elman.init(0, 2, 3), "key: expected one jax.random key .* got int"),
        (lambda: gru.init(jax.random.split(KEY, 3), 2, 3), r"key: .* of shape \(3, 2\)"),
        (lambda: lstm_scalar.init("seed"), "key: expected one jax.random key"),
        (lambda: elman.init_carry((2, -1), 3), "batch_shape: expected non-negative"),
        (lambda: elman.init_carry("ab", 3), "batch_shape: expected an int or a tuple"),
        (
            lambda: elman.apply(elman.init(KEY, 2, 3), jnp.zeros((3,)), jnp.zeros((4,))),
            r"x: expected shape \(\*batch, 2\), got \(4,\)",
        ),
        (
            lambda: elman.apply(elman.init(KEY, 2, 3), jnp.zeros((4,)), jnp.zeros((2,))),
            r"carry: expected shape \(\*batch, 3\), got \(4,\)",
        ),
        (
            lambda: elman.apply(
                {"W": jnp.zeros((3, 3)), "U": jnp.zeros((3, 2))}, jnp.zeros(3), jnp.zeros(2)
            ),
            r"params: missing entries \['b'\]",
        ),
        (
            lambda: elman.apply(
                {**elman.init(KEY, 2, 3), "W": jnp.zeros((3, 4))}, jnp.zeros(3), jnp.zeros(2)
            ),
            r"params\['W'\]: expected shape \(3, 3\), got \(3, 4\)",
        ),
        (
            lambda: elman.apply(
                {**elman.init(KEY, 2, 3), "extra": jnp.zeros(1)}, jnp.zeros(3), jnp.zeros(2)
            ),
            r"unexpected entries \['extra'\]",
        ),
        (lambda: elman.apply([1, 2], jnp.zeros(3), jnp.zeros(2)), "params: expected a dict"),
        (
            lambda: elman.apply(
                elman.init(KEY, 2, 3), jnp.zeros(3), jnp.zeros(2), activation="relu"
            ),
            "activation: expected one of",
        ),
        (
            lambda: lstm.apply(lstm.init(KEY, 2, 3), jnp.zeros((3,)), jnp.zeros((2,))),
            r"carry: expected a tuple \(c, h\)",
        ),
        (
            lambda: lstm.apply(lstm.init(KEY, 2, 3), (jnp.zeros(3), jnp.zeros(4)), jnp.zeros(2)),
            r"carry\[1\] \(h\): expected shape \(\*batch, 3\), got \(4,\)",
        ),
        (
            lambda: lstm.apply(
                {**lstm.init(KEY, 2, 3), "b_o": jnp.zeros(2)}, lstm.init_carry((), 3), jnp.zeros(2)
            ),
            r"params\['b_o'\]: expected shape \(3,\), got \(2,\)",
        ),
        (
            lambda: gru.apply(
                {**gru.init(KEY, 2, 3), "U_z": jnp.zeros((3, 3), jnp.int32)},
                jnp.zeros(3),
                jnp.zeros(2),
            ),
            r"params\['U_z'\]: expected a floating",
        ),
        (
            lambda: lstm_scalar.apply(
                lstm_scalar.init(KEY), lstm_scalar.init_carry((2,)), jnp.zeros(3)
            ),
            r"carry\[0\] \(c\), carry\[1\] \(h\), x: expected the batch shape of x .* got "
            r"carry\[0\] \(c\) of shape \(2,\), carry\[1\] \(h\) of shape \(2,\), "
            r"x of shape \(3,\)",
        ),
        (
            lambda: lstm_scalar.apply(
                lstm_scalar.init(KEY), (0.0, jnp.zeros(2)), jnp.zeros((2, 3))
            ),
            r"x: expected the batch shape of x .* carry\[0\] \(c\) of shape \(\), "
            r"carry\[1\] \(h\) of shape \(2,\), x of shape \(2, 3\)",
        ),
        (
            lambda: lstm_scalar.apply(lstm_scalar.init(KEY), (0.0, 1j), jnp.zeros(2)),
            r"carry\[1\] \(h\): expected real numbers \(integer or floating\), got complex",
        ),
        (
            lambda: threshold.apply(threshold.init(KEY, 2, 3), jnp.zeros(3), jnp.zeros(3)),
            r"x: expected shape \(\*batch, 2\), got \(3,\)",
        ),
        (lambda: threshold.init(KEY, 2, 3, out_dim=0), "out_dim: expected a positive integer"),
        # carry and x of different batches: named, not an XLA broadcasting error
        (
            lambda: elman.apply(elman.init(KEY, 2, 3), jnp.zeros((4, 3)), jnp.zeros((5, 2))),
            r"carry, x: expected the same batch shape .* carry of shape \(4, 3\), x of shape "
            r"\(5, 2\)",
        ),
        (
            lambda: gru.apply(gru.init(KEY, 2, 3), jnp.zeros((2, 4, 3)), jnp.zeros((4, 2, 2))),
            "carry, x: expected the same batch shape",
        ),
        (
            lambda: lstm.apply(lstm.init(KEY, 2, 3), lstm.init_carry((4,), 3), jnp.zeros((5, 2))),
            r"carry\[0\] \(c\), carry\[1\] \(h\), x: expected the same batch shape",
        ),
        (
            lambda: threshold.apply(
                threshold.init(KEY, 2, 3), jnp.zeros((3, 3)), jnp.zeros((2, 2), jnp.int32)
            ),
            "carry, x: expected the same batch shape",
        ),
        (
            lambda: lstm.apply(lstm.init(KEY, 2, 3), lstm.init_carry((), 3), jnp.ones(2, complex)),
            r"x: expected real numbers \(integer or floating\), got complex",
        ),
        (
            lambda: elman.apply(elman.init(KEY, 2, 3), jnp.zeros(3), jnp.ones(2, bool)),
            "x: expected real numbers",
        ),
        (
            lambda: lstm_scalar.apply(
                lstm_scalar.init(KEY), lstm_scalar.init_carry((2,)), jnp.ones(2, complex)
            ),
            "x: expected real numbers",
        ),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
