"""Hand BPTT of the univariate LSTM (SPEC §3) against jax.grad and a NumPy loop, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bptt_lstm import assert_close_rel, random_sequences

import jaxrnn
from jaxrnn import bptt
from jaxrnn.bptt import reference
from jaxrnn.cells import lstm_scalar

WEIGHTS = ("w_ix", "w_ih", "w_fx", "w_fh", "w_ox", "w_oh", "w_gx", "w_gh")
STEP_NAMES = ("h", "c", "o", "f", "i", "g")


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_bptt(params, xs, dL_dh, mistake=None):
    """SPEC §3 BPTT as a student writes it: plain loops, 1-based steps, index T+1 = 0.

    ``mistake`` plants one typical derivation error (used by the checker's tests):
    "index_shift" f̄(t) = c̄(t) c(t+1), "tanh_for_derivative" tanh(c) where 1 - tanh²(c)
    belongs in c̄, "dropped_direct" h̄(t) without dL/dh(t), "wrong_gate" i(t+1) where
    f(t+1) belongs in the c̄ recursion, "weight_index_shift" h(t+1) for h(t-1) in w̄_ih.
    """
    w = {k: float(v) for k, v in params.items()}
    xs, dL_dh = np.asarray(xs, float), np.asarray(dL_dh, float)
    T = len(xs)
    x = np.concatenate([[0.0], xs, [0.0]])  # x[t], t = 1..T
    c, h = np.zeros(T + 2), np.zeros(T + 2)  # c[0] = h[0] = 0; c[T+1] = h[T+1] = 0
    gate = {q: np.zeros(T + 2) for q in "ifog"}  # gates at T+1 are 0: no step T+1
    for t in range(1, T + 1):
        for q in "ifo":
            gate[q][t] = sigmoid(w[f"w_{q}x"] * x[t] + w[f"w_{q}h"] * h[t - 1])
        gate["g"][t] = np.tanh(w["w_gx"] * x[t] + w["w_gh"] * h[t - 1])
        c[t] = gate["f"][t] * c[t - 1] + gate["i"][t] * gate["g"][t]
        h[t] = gate["o"][t] * np.tanh(c[t])
    i, f, o, g = (gate[q] for q in "ifog")
    slope = {"i": i * (1 - i), "f": f * (1 - f), "o": o * (1 - o), "g": 1 - g**2}
    bar = {q: np.zeros(T + 2) for q in ("h", "c", "i", "f", "o", "g")}
    for t in range(T, 0, -1):
        bar["h"][t] = 0.0 if mistake == "dropped_direct" else dL_dh[t - 1]
        for q in "ifog":
            bar["h"][t] += w[f"w_{q}h"] * bar[q][t + 1] * slope[q][t + 1]
        bar["o"][t] = bar["h"][t] * np.tanh(c[t])
        tanh_slope = np.tanh(c[t]) if mistake == "tanh_for_derivative" else 1 - np.tanh(c[t]) ** 2
        carried_by = i if mistake == "wrong_gate" else f
        bar["c"][t] = bar["h"][t] * o[t] * tanh_slope + bar["c"][t + 1] * carried_by[t + 1]
        bar["f"][t] = bar["c"][t] * (c[t + 1] if mistake == "index_shift" else c[t - 1])
        bar["i"][t] = bar["c"][t] * g[t]
        bar["g"][t] = bar["c"][t] * i[t]
    out = {q: bar[q][1 : T + 1] for q in bar}
    steps = slice(1, T + 1)
    for q in "ifog":
        pre = bar[q][steps] * slope[q][steps]
        h_before = h[2 : T + 2] if (mistake == "weight_index_shift" and q == "i") else h[0:T]
        out[f"w_{q}x"] = np.sum(pre * x[steps])
        out[f"w_{q}h"] = np.sum(pre * h_before)
    return out


def make_problem(seed, n_steps, dtype=jnp.float64):
    params = lstm_scalar.init(jax.random.PRNGKey(seed), scale=1.5, dtype=dtype)
    xs, dL_dh = random_sequences(seed, (n_steps,), 1, 1)
    return params, xs[:, 0].astype(dtype), dL_dh[:, 0].astype(dtype)


def loss_by_autodiff(params, xs, dL_dh):
    """L = sum_t dL_dh(t) h(t), with h from the cell run by jaxrnn.scan."""
    carry = lstm_scalar.init_carry(xs.shape[1:], dtype=xs.dtype)
    _, hs = jaxrnn.scan(lstm_scalar.apply, params, carry, xs)
    return jnp.sum(dL_dh * hs)


def test_weight_gradients_equal_jax_grad_to_1e_12():
    params, xs, dL_dh = make_problem(0, 8)
    hand = bptt.lstm_scalar(params, xs, dL_dh)
    auto = jax.jit(jax.grad(loss_by_autodiff))(params, xs, dL_dh)
    for name in WEIGHTS:
        assert hand[name].shape == ()
        assert abs(float(hand[name]) - float(auto[name])) <= 1e-12 * abs(float(auto[name]))


@settings(max_examples=6)
@given(seed=st.integers(0, 10_000), n_steps=st.sampled_from([1, 8]))  # one compile per T
def test_every_adjoint_equals_autodiff_to_1e_12(seed, n_steps):
    params, xs, dL_dh = make_problem(seed, n_steps)
    hand = bptt.lstm_scalar(params, xs, dL_dh)
    auto = reference.lstm_scalar(params, xs, dL_dh)
    assert set(hand) == set(auto) == set(STEP_NAMES) | set(WEIGHTS)
    for name in hand:
        assert hand[name].shape == auto[name].shape
        assert_close_rel(hand[name], auto[name], 1e-12)


def test_every_adjoint_equals_an_independent_numpy_loop():
    params, xs, dL_dh = make_problem(3, 8)
    hand = bptt.lstm_scalar(params, xs, dL_dh)
    loop = numpy_bptt(params, xs, dL_dh)
    for name in STEP_NAMES + WEIGHTS:
        assert_close_rel(hand[name], loop[name], 1e-12)


def test_total_h_adjoint_is_the_gradient_wrt_a_perturbation_of_h():
    # h̄(t) includes the direct term: perturb h(t) after step t and differentiate.
    params, xs, dL_dh = make_problem(5, 6)

    def loss(eps, t):
        carry, total = lstm_scalar.init_carry((), dtype=jnp.float64), 0.0
        for s in range(len(xs)):
            carry, h = lstm_scalar.apply(params, carry, xs[s])
            if s == t:
                h = h + eps
                carry = (carry[0], h)
            total = total + dL_dh[s] * h
        return total

    hand = bptt.lstm_scalar(params, xs, dL_dh)["h"]
    for t in range(len(xs)):
        assert abs(float(hand[t]) - float(jax.grad(loss)(0.0, t))) <= 1e-13


def test_last_step_by_hand():
    # At t = T nothing comes from step T+1: h̄(T) = dL/dh(T), ō(T) = h̄ tanh(c),
    # c̄(T) = h̄ o (1 - tanh²(c)), f̄(T) = c̄(T) c(T-1).
    params, xs, dL_dh = make_problem(11, 8)
    carry = lstm_scalar.init_carry((), dtype=jnp.float64)
    states = []
    for t in range(8):
        carry, _ = lstm_scalar.apply(params, carry, xs[t])
        states.append(carry)
    (c_prev, h_prev), (c_last, _) = states[6], states[7]
    _, _, o, _ = lstm_scalar.gates(params, h_prev, xs[7])
    hand = bptt.lstm_scalar(params, xs, dL_dh)
    assert float(hand["h"][7]) == float(dL_dh[7])
    np.testing.assert_allclose(hand["o"][7], dL_dh[7] * np.tanh(c_last), rtol=1e-13)
    c_bar = dL_dh[7] * o * (1 - np.tanh(c_last) ** 2)
    np.testing.assert_allclose(hand["c"][7], c_bar, rtol=1e-13)
    np.testing.assert_allclose(hand["f"][7], c_bar * c_prev, rtol=1e-13)


def test_carousel_of_spec_3c_c_bar_passes_h_bar_vanishes():
    # f ≈ 1, i ≈ 0, o ≈ 0 (inputs x = 1 with large weights, SPEC §3(c)); loss at step T
    # only. c̄(t) = c̄(t+1) f(t+1) + (terms ∝ o ≈ 1e-9) stays ≈ c̄(T); h̄(t) for t < T is
    # ∝ the gate slopes ≈ 1e-9 times c̄, so about 0 apart from its direct term.
    params = {name: jnp.float64(0.0) for name in WEIGHTS}
    params.update(w_fx=jnp.float64(20.0), w_ix=jnp.float64(-20.0), w_ox=jnp.float64(-20.0))
    params.update(w_gx=jnp.float64(1.0))
    params.update({name: jnp.float64(0.5) for name in ("w_ih", "w_fh", "w_oh", "w_gh")})
    n_steps = 30
    xs = jnp.ones(n_steps)
    dL_dh = jnp.zeros(n_steps).at[-1].set(1.0)
    out = bptt.lstm_scalar(params, xs, dL_dh)
    c_bar, h_bar = np.asarray(out["c"]), np.asarray(out["h"])
    assert c_bar[-1] != 0
    np.testing.assert_allclose(c_bar / c_bar[-1], 1.0, atol=1e-6)
    assert 0 < np.max(np.abs(h_bar[:-1])) < 1e-6 * abs(h_bar[-1])
    assert h_bar[-1] == 1.0


def test_batch_dims_are_independent_sequences():
    params, xs, dL_dh = make_problem(2, 8)
    xs2 = jnp.stack([xs, -xs], axis=1)
    dl2 = jnp.stack([dL_dh, 2 * dL_dh], axis=1)
    both = bptt.lstm_scalar(params, xs2, dl2)
    first, second = bptt.lstm_scalar(params, xs, dL_dh), bptt.lstm_scalar(params, -xs, 2 * dL_dh)
    for name in STEP_NAMES:
        np.testing.assert_allclose(both[name][:, 0], first[name], rtol=1e-13)
        np.testing.assert_allclose(both[name][:, 1], second[name], rtol=1e-13)
    for name in WEIGHTS:
        np.testing.assert_allclose(both[name], first[name] + second[name], rtol=1e-12)


def test_float32_agrees_with_float64():
    p64, xs, dL_dh = make_problem(4, 8)
    p32 = {k: v.astype(jnp.float32) for k, v in p64.items()}
    out32 = bptt.lstm_scalar(p32, xs.astype(jnp.float32), dL_dh.astype(jnp.float32))
    out64 = bptt.lstm_scalar(p64, xs, dL_dh)
    for name in out64:
        assert out32[name].dtype == jnp.float32
        assert_close_rel(out32[name], out64[name], 1e-5)


def test_runs_under_jit():
    params, xs, dL_dh = make_problem(6, 8)
    jitted = jax.jit(bptt.lstm_scalar)(params, xs, dL_dh)
    eager = bptt.lstm_scalar(params, xs, dL_dh)
    for name in eager:
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-14)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p, x, d: (p, jnp.float64(1.0), d), "xs"),
        (lambda p, x, d: (p, x[:0], d[:0]), "xs"),
        (lambda p, x, d: (p, x, d[:-1]), "dL_dh"),
        (lambda p, x, d: (p, x, d[:, None]), "dL_dh"),
        (lambda p, x, d: ({k: v for k, v in p.items() if k != "w_gh"}, x, d), "w_gh"),
        (lambda p, x, d: ({**p, "w_ix": jnp.ones(2)}, x, d), "w_ix"),
        (lambda p, x, d: (p, x.astype(bool), d), "xs"),
        (lambda p, x, d: (p, x.astype(complex), d), "xs: expected real numbers"),
        (lambda p, x, d: (p, x, d.astype(complex)), "dL_dh: expected real numbers"),
    ],
)
def test_bad_input_raises_value_error_naming_it(change, match):
    params, xs, dL_dh = change(*make_problem(0, 4))
    with pytest.raises(ValueError, match=match):
        bptt.lstm_scalar(params, xs, dL_dh)
