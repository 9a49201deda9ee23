"""Hand BPTT of the Elman RNN (SPEC §5): the recursion and the textbook double sum, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bptt_lstm import assert_close_rel, random_sequences

import jaxrnn
from jaxrnn import bptt
from jaxrnn.bptt import reference
from jaxrnn.cells import elman

ACT = {"tanh": np.tanh, "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z))}
SLOPE = {"tanh": lambda h: 1 - h**2, "sigmoid": lambda h: h * (1 - h)}


def numpy_forward(params, xs, activation):
    P = {k: np.asarray(v, float) for k, v in params.items()}
    T, H = len(xs), P["W"].shape[0]
    h = np.zeros((T + 1, H))  # h[0] = 0, h[t] for t = 1..T
    for t in range(1, T + 1):
        h[t] = ACT[activation](P["W"] @ h[t - 1] + P["U"] @ np.asarray(xs[t - 1]) + P["b"])
    return P, h


def numpy_bptt(params, xs, dL_dh, activation="tanh", mistake=None):
    """The O(T) recursion for one sequence (T, D), 1-based steps.

    ``mistake="W_not_transposed"`` plants W z̄ where W^T z̄ belongs in h̄_{t-1};
    ``mistake="activation_for_slope"`` uses sigma(z) = h where sigma'(z) belongs.
    """
    P, h = numpy_forward(params, xs, activation)
    T, H = len(xs), P["W"].shape[0]
    dL_dh = np.asarray(dL_dh, float)
    h_bar, z_bar = np.zeros((T + 2, H)), np.zeros((T + 2, H))
    for t in range(T, 0, -1):
        W_back = P["W"] if mistake == "W_not_transposed" else P["W"].T
        h_bar[t] = dL_dh[t - 1] + W_back @ z_bar[t + 1]
        slope = h[t] if mistake == "activation_for_slope" else SLOPE[activation](h[t])
        z_bar[t] = h_bar[t] * slope
    z = z_bar[1 : T + 1]
    return {
        "h": h_bar[1 : T + 1],
        "z": z,
        "x": z @ P["U"],
        "W": z.T @ h[0:T],
        "U": z.T @ np.asarray(xs, float),
        "b": z.sum(axis=0),
    }


def numpy_double_sum(params, xs, dL_dh, activation):
    """SPEC §5(b) literally: sum_t sum_{k<=t} dL_t/dh_t (prod diag(sigma') W) dh_k/dW."""
    P, h = numpy_forward(params, xs, activation)
    T, H = len(xs), P["W"].shape[0]
    slope = SLOPE[activation](h)
    dW = np.zeros((H, H))
    for t in range(1, T + 1):
        for k in range(1, t + 1):
            J = np.eye(H)  # dh_t/dh_k
            for j in range(t, k, -1):
                J = J @ (np.diag(slope[j]) @ P["W"])
            # dh_k/dW_ab = slope_k[a] h_{k-1}[b] e_a
            dW += np.outer((np.asarray(dL_dh[t - 1]) @ J) * slope[k], h[k - 1])
    return dW


def make_problem(seed, n_steps, batch, in_dim=3, hidden=4):
    params = elman.init(jax.random.PRNGKey(seed), in_dim, hidden, dtype=jnp.float64)
    params["W"] = 1.5 * params["W"]
    params["b"] = jnp.asarray(0.3 * np.random.default_rng(seed + 1000).normal(size=hidden))
    return params, *random_sequences(seed, (n_steps, *batch), in_dim, hidden)


def grads_by_autodiff(params, xs, dL_dh, activation):
    def loss(p, xs):
        cell = lambda p, c, x: elman.apply(p, c, x, activation=activation)  # noqa: E731
        h0 = elman.init_carry(xs.shape[1:-1], p["W"].shape[0], dtype=jnp.float64)
        return jnp.sum(dL_dh * jaxrnn.scan(cell, p, h0, xs)[1])

    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)


@pytest.mark.parametrize("activation, batch", [("tanh", ()), ("sigmoid", (2, 3))])
def test_W_both_ways_U_b_and_x_equal_jax_grad(activation, batch):
    params, xs, dL_dh = make_problem(0, 8, batch)
    hand = bptt.elman(params, xs, dL_dh, activation=activation)
    d_params, d_xs = grads_by_autodiff(params, xs, dL_dh, activation)
    assert_close_rel(hand["W"], d_params["W"], 1e-12)
    assert_close_rel(hand["W_double_sum"], d_params["W"], 1e-12)
    assert_close_rel(hand["U"], d_params["U"], 1e-12)
    assert_close_rel(hand["b"], d_params["b"], 1e-12)
    assert_close_rel(hand["x"], d_xs, 1e-12)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_per_step_adjoints_equal_autodiff_reference(activation):
    params, xs, dL_dh = make_problem(1, 8, (2,))
    hand = bptt.elman(params, xs, dL_dh, activation=activation)
    auto = reference.elman(params, xs, dL_dh, activation=activation)
    assert set(hand) == set(auto) == {"h", "z", "x", "W", "W_double_sum", "U", "b"}
    for name in hand:
        assert_close_rel(hand[name], auto[name], 1e-12)


def test_double_sum_equals_the_literal_numpy_triple_loop():
    params, xs, dL_dh = make_problem(2, 8, ())
    hand = bptt.elman(params, xs, dL_dh, activation="sigmoid")
    assert_close_rel(hand["W_double_sum"], numpy_double_sum(params, xs, dL_dh, "sigmoid"), 1e-12)


def test_recursion_equals_an_independent_numpy_loop():
    params, xs, dL_dh = make_problem(3, 8, ())
    hand, loop = bptt.elman(params, xs, dL_dh), numpy_bptt(params, xs, dL_dh)
    for name in loop:
        assert_close_rel(hand[name], loop[name], 1e-12)


def test_single_step_by_hand():
    # T = 1: h̄_1 = dL/dh_1, z̄_1 = h̄_1 (1 - h_1²), dL/dW = z̄_1 h_0^T = 0 since h_0 = 0.
    params, xs, dL_dh = make_problem(4, 1, ())
    hand = bptt.elman(params, xs, dL_dh)
    h1 = np.tanh(np.asarray(params["U"]) @ np.asarray(xs[0]) + np.asarray(params["b"]))
    np.testing.assert_allclose(hand["z"][0], np.asarray(dL_dh[0]) * (1 - h1**2), rtol=1e-14)
    np.testing.assert_array_equal(hand["W"], np.zeros((4, 4)))
    np.testing.assert_array_equal(hand["W_double_sum"], np.zeros((4, 4)))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p, x, d: (p, x[..., :2], d), "xs"),
        (lambda p, x, d: (p, x, d[..., :3]), "dL_dh"),
        (lambda p, x, d: ({**p, "W": p["W"][:3]}, x, d), "W"),
        (lambda p, x, d: ({k: v for k, v in p.items() if k != "b"}, x, d), "b"),
        (lambda p, x, d: ({"W": p["W"]}, x, d), "U"),
        (lambda p, x, d: (p, x.astype(complex), d), "xs: expected real numbers"),
    ],
)
def test_bad_input_raises_value_error_naming_it(change, match):
    params, xs, dL_dh = change(*make_problem(0, 3, ()))
    with pytest.raises(ValueError, match=match):
        bptt.elman(params, xs, dL_dh)


def test_double_sum_can_be_left_out_for_long_sequences():
    params, xs, dL_dh = make_problem(5, 8, ())
    out = bptt.elman(params, xs, dL_dh, double_sum=False)
    assert set(out) == {"h", "z", "x", "W", "U", "b"}
    np.testing.assert_array_equal(out["W"], bptt.elman(params, xs, dL_dh)["W"])
    with pytest.raises(ValueError, match="double_sum"):
        bptt.elman(params, xs, dL_dh, double_sum="no")


def test_unknown_activation_is_refused():
    params, xs, dL_dh = make_problem(0, 3, ())
    for activation in ("relu", ["tanh"], None):
        with pytest.raises(ValueError, match="activation: expected one of"):
            bptt.elman(params, xs, dL_dh, activation=activation)
