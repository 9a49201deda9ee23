"""Hand BPTT of the GRU (SPEC §8) against jax.grad, the checker's autodiff reference and an
independent NumPy loop, in float64; planted mistakes are blamed on the right value and step.

Set-up of the planted mistakes: T = 8 steps, the loss reaches h(t) only at steps 1..K = 5,
so every adjoint at steps 6..8 is 0 for any formula of the right shape and the backward
pass first meets a nonzero value at step K.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bptt_lstm import assert_close_rel, random_sequences

import jaxrnn
from jaxrnn import bptt
from jaxrnn.bptt import reference
from jaxrnn.cells import gru

STEP_NAMES = ("h", "n", "z", "n_pre", "r", "m", "r_pre", "z_pre", "x", "h_prev")
T, K = 8, 5


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_bptt(params, xs, dL_dh, mistake=None):
    """SPEC §8 BPTT for one sequence (T, D) or a batch (T, B, D), as plain loops.

    ``mistake="dropped_direct_path"`` leaves out h̄_t z_t from dL/dh_{t-1};
    ``mistake="z_sign"`` writes z̄_t = h̄_t (n_t - h_{t-1}).
    """
    xs, dL_dh = np.asarray(xs, float), np.asarray(dL_dh, float)
    if xs.ndim == 3:  # one sequence at a time; parameter gradients add up
        runs = [numpy_bptt(params, xs[:, b], dL_dh[:, b], mistake) for b in range(xs.shape[1])]
        return {
            k: np.stack([r[k] for r in runs], 1) if k in STEP_NAMES else sum(r[k] for r in runs)
            for k in runs[0]
        }
    P = {k: np.asarray(v, float) for k, v in params.items()}
    n_steps, hidden = dL_dh.shape
    h = np.zeros((n_steps + 1, hidden))  # h[t] = h_t, h[0] = 0
    r, z, m, n = (np.zeros((n_steps + 1, hidden)) for _ in range(4))
    for t in range(1, n_steps + 1):
        x = xs[t - 1]
        r[t] = sigmoid(P["W_r"] @ x + P["U_r"] @ h[t - 1] + P["b_r"])
        z[t] = sigmoid(P["W_z"] @ x + P["U_z"] @ h[t - 1] + P["b_z"])
        m[t] = P["U_n"] @ h[t - 1] + P["b_hn"]
        n[t] = np.tanh(P["W_n"] @ x + P["b_n"] + r[t] * m[t])
        h[t] = (1 - z[t]) * n[t] + z[t] * h[t - 1]
    out = {name: np.zeros((n_steps, xs.shape[1] if name == "x" else hidden)) for name in STEP_NAMES}
    grads = {k: np.zeros_like(v) for k, v in P.items()}
    to_h = np.zeros(hidden)
    for t in range(n_steps, 0, -1):
        h_bar = dL_dh[t - 1] + to_h
        n_bar = h_bar * (1 - z[t])
        z_bar = h_bar * ((n[t] - h[t - 1]) if mistake == "z_sign" else (h[t - 1] - n[t]))
        a_n = n_bar * (1 - n[t] ** 2)
        r_bar, m_bar = a_n * m[t], a_n * r[t]
        a_r, a_z = r_bar * r[t] * (1 - r[t]), z_bar * z[t] * (1 - z[t])
        to_h = P["U_r"].T @ a_r + P["U_z"].T @ a_z + P["U_n"].T @ m_bar
        if mistake != "dropped_direct_path":
            to_h = to_h + h_bar * z[t]
        x_bar = P["W_r"].T @ a_r + P["W_z"].T @ a_z + P["W_n"].T @ a_n
        values = (h_bar, n_bar, z_bar, a_n, r_bar, m_bar, a_r, a_z, x_bar, to_h)
        for name, value in zip(STEP_NAMES, values, strict=True):
            out[name][t - 1] = value
        for q, a in (("r", a_r), ("z", a_z), ("n", a_n)):
            grads[f"W_{q}"] += np.outer(a, xs[t - 1])
            grads[f"b_{q}"] += a
        for q, a in (("r", a_r), ("z", a_z), ("n", m_bar)):
            grads[f"U_{q}"] += np.outer(a, h[t - 1])
        grads["b_hn"] += m_bar
    return {**out, **grads}


def make_problem(seed, n_steps, batch, in_dim=3, hidden=4):
    rng = np.random.default_rng(seed)
    shapes = gru.param_shapes(in_dim, hidden)
    params = {k: jnp.asarray(rng.normal(0, 0.8, s)) for k, s in shapes.items()}
    return params, *random_sequences(seed, (n_steps, *batch), in_dim, hidden)


def test_params_x_and_h0_gradients_equal_jax_grad_of_the_cell():
    params, xs, dL_dh = make_problem(0, T, (2,))
    hand = bptt.gru(params, xs, dL_dh)

    def loss(p, h0, xs):
        return jnp.sum(dL_dh * jaxrnn.scan(gru.apply, p, h0, xs)[1])

    d_params, d_h0, d_xs = jax.grad(loss, argnums=(0, 1, 2))(params, jnp.zeros((2, 4)), xs)
    for name in params:
        assert_close_rel(hand[name], d_params[name], 1e-12)
    assert_close_rel(hand["x"], d_xs, 1e-12)
    assert_close_rel(hand["h_prev"][0], d_h0, 1e-12)  # dL/dh_0, through step 1
    # the checker's reference differentiates the same cell
    auto = reference.gru(params, xs, dL_dh)
    for name in params:
        assert_close_rel(auto[name], d_params[name], 1e-12)


def test_every_adjoint_equals_the_autodiff_reference_and_a_numpy_loop():
    params, xs, dL_dh = make_problem(1, T, (2,))
    hand, auto = bptt.gru(params, xs, dL_dh), reference.gru(params, xs, dL_dh)
    loop = numpy_bptt(params, xs, dL_dh)
    assert set(hand) == set(auto) == set(loop) == set(STEP_NAMES) | set(params)
    for name in hand:
        assert_close_rel(hand[name], auto[name], 1e-12)
        assert_close_rel(hand[name], loop[name], 1e-12)
    # h̄_t = dL/dh_t (direct) + dL/dh_t through step t+1
    np.testing.assert_allclose(hand["h"][:-1], dL_dh[:-1] + hand["h_prev"][1:], rtol=1e-13)


def test_the_checker_passes_the_library_and_the_loop():
    params, xs, dL_dh = make_problem(2, T, (2,))
    for hand in (bptt.gru, numpy_bptt):
        report = bptt.check(hand, "gru", params, xs, dL_dh)
        assert report.ok and report.blame is None, str(report)
        assert len(report.quantities) == len(STEP_NAMES) + len(params)


def _until_K(seed=3):
    params, xs, dL_dh = make_problem(seed, T, ())
    return params, xs, dL_dh.at[K:].set(0.0)


def test_a_dropped_direct_path_is_blamed_on_h_prev_at_step_K():
    # dL/dh_{t-1} without h̄_t z_t: at step 5 every value before h_prev is right (h̄(5) is
    # the direct term alone), h_prev(5) is the first wrong one; h̄ goes wrong from step 4.
    args = _until_K()
    report = bptt.check(lambda *a: numpy_bptt(*a, mistake="dropped_direct_path"), "gru", *args)
    assert report.blame == ("h_prev", K)
    assert report["h_prev"].wrong_steps == (1, 2, 3, 4, 5)
    assert report["h"].first_step == 4 and report["x"].first_step == 4
    assert not report["U_z"].ok and report["U_z"].first_step is None
    right, wrong = numpy_bptt(*args), numpy_bptt(*args, mistake="dropped_direct_path")
    assert report["h_prev"].max_abs_error == pytest.approx(
        np.max(np.abs(right["h_prev"] - wrong["h_prev"]))
    )
    assert "blame: 'h_prev' at step 5" in str(report)


def test_a_wrong_sign_in_the_update_gate_is_blamed_on_z_at_step_K():
    # z̄ = h̄ (n - h_{t-1}): h̄(5) and n̄(5) are right, z̄(5) is the first wrong value.
    report = bptt.check(lambda *a: numpy_bptt(*a, mistake="z_sign"), "gru", *_until_K())
    assert report.blame == ("z", K)
    assert report["n"].first_step == K - 1 and report["z_pre"].first_step == K
    assert "z̄_5 = h̄_5 ⊙ (h_4 - n_5)" in str(report)


def test_bad_input_is_named():
    params, xs, dL_dh = make_problem(4, 3, ())
    with pytest.raises(ValueError, match="W_r"):
        bptt.gru({"W_x": params["W_r"]}, xs, dL_dh)
    with pytest.raises(ValueError, match=r"dL_dh: expected shape \(3, 4\)"):
        bptt.gru(params, xs, dL_dh[:, :2])
    with pytest.raises(ValueError, match=r"params\['b_hn'\]"):
        reference.gru({**params, "b_hn": params["b_r"][:2]}, xs, dL_dh)
