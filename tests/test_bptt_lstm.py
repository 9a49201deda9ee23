"""Hand BPTT of the vector LSTM (SPEC §4) against jax.grad and a NumPy loop, in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import bptt
from jaxrnn.bptt import reference
from jaxrnn.cells import lstm

STEP_NAMES = ("h", "c", "i", "f", "o", "g", "i_pre", "f_pre", "o_pre", "g_pre", "x", "h_prev")
SUFFIX = {"i": "i", "f": "f", "o": "o", "g": "c"}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def numpy_bptt(params, xs, dL_dh, mistake=None):
    """SPEC §4 BPTT for one sequence (T, D), as plain loops over 1-based steps.

    ``mistake="U_not_transposed"`` plants U a where U^T a belongs in dL/dh_{t-1}.
    """
    P = {k: np.asarray(v, float) for k, v in params.items()}
    xs, dL_dh = np.asarray(xs, float), np.asarray(dL_dh, float)
    T, H = dL_dh.shape
    c, h = np.zeros((T + 2, H)), np.zeros((T + 2, H))
    gate = {q: np.zeros((T + 2, H)) for q in "ifog"}
    for t in range(1, T + 1):
        for q, s in SUFFIX.items():
            z = P[f"W_{s}"] @ xs[t - 1] + P[f"U_{s}"] @ h[t - 1] + P[f"b_{s}"]
            gate[q][t] = np.tanh(z) if q == "g" else sigmoid(z)
        c[t] = gate["f"][t] * c[t - 1] + gate["i"][t] * gate["g"][t]
        h[t] = gate["o"][t] * np.tanh(c[t])
    i, f, o, g = (gate[q] for q in "ifog")
    slope = {"i": i * (1 - i), "f": f * (1 - f), "o": o * (1 - o), "g": 1 - g**2}
    bar = {n: np.zeros((T + 2, H)) for n in ("h", "c", "i", "f", "o", "g", "h_prev")}
    pre = {q: np.zeros((T + 2, H)) for q in "ifog"}
    x_bar = np.zeros_like(xs)
    for t in range(T, 0, -1):
        bar["h"][t] = dL_dh[t - 1] + bar["h_prev"][t + 1]
        bar["o"][t] = bar["h"][t] * np.tanh(c[t])
        bar["c"][t] = bar["h"][t] * o[t] * (1 - np.tanh(c[t]) ** 2) + bar["c"][t + 1] * f[t + 1]
        bar["f"][t] = bar["c"][t] * c[t - 1]
        bar["i"][t] = bar["c"][t] * g[t]
        bar["g"][t] = bar["c"][t] * i[t]
        for q in "ifog":
            pre[q][t] = bar[q][t] * slope[q][t]
            U = P[f"U_{SUFFIX[q]}"]
            bar["h_prev"][t] += (U if mistake == "U_not_transposed" else U.T) @ pre[q][t]
            x_bar[t - 1] += P[f"W_{SUFFIX[q]}"].T @ pre[q][t]
    out = {n: v[1 : T + 1] for n, v in bar.items()}
    out.update({f"{q}_pre": pre[q][1 : T + 1] for q in "ifog"})
    out["x"] = x_bar
    for q, s in SUFFIX.items():
        a = pre[q][1 : T + 1]
        out[f"W_{s}"] = a.T @ xs
        out[f"U_{s}"] = a.T @ h[0:T]
        out[f"b_{s}"] = a.sum(axis=0)
    return out


def random_sequences(seed, shape, in_dim, hidden):
    """xs (*shape, in_dim) and dL_dh (*shape, hidden), float64, from NumPy's generator.

    (NumPy, not jax.random: every new shape would compile a sampler.)
    """
    rng = np.random.default_rng(seed)
    xs = jnp.asarray(rng.normal(size=(*shape, in_dim)))
    return xs, jnp.asarray(rng.normal(size=(*shape, hidden)))


def make_problem(seed, n_steps, batch, in_dim=3, hidden=4):
    params = lstm.init(jax.random.PRNGKey(seed), in_dim, hidden, dtype=jnp.float64)
    params = {k: v + 0.3 if k.startswith("b_") else 2.0 * v for k, v in params.items()}
    return params, *random_sequences(seed, (n_steps, *batch), in_dim, hidden)


def assert_close_rel(got, want, rtol):
    """Equal shapes and |got - want| <= rtol max|want| (a relative bound on the quantity)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = max(float(np.max(np.abs(want))), 1e-300)
    assert np.max(np.abs(got - want)) <= rtol * scale, (got, want)


@jax.jit
def grads_by_autodiff(params, h0, xs, dL_dh):
    """jax.grad of L = sum dL_dh * h w.r.t. params, h_0 and xs (carry from h_0, c_0 = 0)."""

    def loss(p, h0, xs):
        carry = (jnp.zeros_like(h0), h0)
        return jnp.sum(dL_dh * jaxrnn.scan(lstm.apply, p, carry, xs)[1])

    return jax.grad(loss, argnums=(0, 1, 2))(params, h0, xs)


def test_params_x_and_h0_gradients_equal_jax_grad():
    batch = (2, 3)
    params, xs, dL_dh = make_problem(0, 8, batch)
    hand = bptt.lstm(params, xs, dL_dh)
    d_params, d_h0, d_xs = grads_by_autodiff(params, jnp.zeros(batch + (4,)), xs, dL_dh)
    for name in params:
        assert_close_rel(hand[name], d_params[name], 1e-12)
    assert_close_rel(hand["x"], d_xs, 1e-12)
    assert_close_rel(hand["h_prev"][0], d_h0, 1e-12)  # dL/dh_0, through step 1


def test_every_adjoint_equals_autodiff_reference():
    # (batched: see test_bptt_check.py::test_the_librarys_own_formulas_pass[lstm])
    params, xs, dL_dh = make_problem(1, 8, ())
    hand, auto = bptt.lstm(params, xs, dL_dh), reference.lstm(params, xs, dL_dh)
    assert set(hand) == set(auto) == set(STEP_NAMES) | set(params)
    for name in hand:
        assert_close_rel(hand[name], auto[name], 1e-12)


def test_every_adjoint_equals_an_independent_numpy_loop():
    params, xs, dL_dh = make_problem(2, 8, ())
    hand, loop = bptt.lstm(params, xs, dL_dh), numpy_bptt(params, xs, dL_dh)
    for name in loop:
        assert_close_rel(hand[name], loop[name], 1e-12)


def test_integer_inputs_are_real_numbers_taken_in_the_params_dtype():
    # bits as int32 xs and small int32 dL_dh: the adjoints of the same values as floats
    params, xs, dL_dh = make_problem(5, 6, ())
    bits, counts = (xs > 0).astype(jnp.int32), jnp.round(2 * dL_dh).astype(jnp.int32)
    hand = bptt.lstm(params, bits, counts)
    loop = numpy_bptt(params, np.asarray(bits, float), np.asarray(counts, float))
    assert hand["x"].dtype == hand["W_i"].dtype == jnp.float64
    for name in loop:
        assert_close_rel(hand[name], loop[name], 1e-12)


def test_h_prev_is_the_part_through_step_t_and_h_adds_the_direct_term():
    # h̄_{t-1} = dL/dh_{t-1} (direct) + dL/dh_{t-1} through step t: h = dL_dh + shifted h_prev.
    params, xs, dL_dh = make_problem(3, 8, (2,))
    hand = bptt.lstm(params, xs, dL_dh)
    np.testing.assert_allclose(hand["h"][:-1], dL_dh[:-1] + hand["h_prev"][1:], rtol=1e-13)
    np.testing.assert_array_equal(hand["h"][-1], dL_dh[-1])


def test_pre_and_post_activation_adjoints_differ_by_the_gate_slopes():
    params, xs, dL_dh = make_problem(4, 8, ())
    hand = bptt.lstm(params, xs, dL_dh)
    carry = lstm.init_carry((), 4, dtype=jnp.float64)
    _, hs = jaxrnn.scan(lstm.apply, params, carry, xs)
    h_prev = jnp.concatenate([jnp.zeros((1, 4)), hs[:-1]])
    i, f, o, g = lstm.gates(params, h_prev, xs)
    for q, slope in (("i", i * (1 - i)), ("f", f * (1 - f)), ("o", o * (1 - o)), ("g", 1 - g**2)):
        np.testing.assert_allclose(hand[f"{q}_pre"], hand[q] * slope, rtol=1e-13)
        assert not np.allclose(hand[f"{q}_pre"], hand[q])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda p, x, d: (p, x[..., :2], d), "xs"),
        (lambda p, x, d: (p, x[0], d[0]), "xs"),
        (lambda p, x, d: (p, x, d[..., :3]), "dL_dh"),
        (lambda p, x, d: (p, x, d[:-1]), "dL_dh"),
        (lambda p, x, d: ({k: v for k, v in p.items() if k != "U_f"}, x, d), "U_f"),
        (lambda p, x, d: ({**p, "b_o": jnp.zeros(5)}, x, d), "b_o"),
        (lambda p, x, d: ({**p, "W_i": jnp.zeros(3)}, x, d), "W_i"),
        (lambda p, x, d: (p, x.astype(complex), d), r"xs: expected real numbers .* got complex"),
        (lambda p, x, d: (p, x, d.astype(complex)), r"dL_dh: expected real numbers .* complex"),
        (lambda p, x, d: (p, x > 0, d), r"xs: expected real numbers .* got bool"),
    ],
)
def test_bad_input_raises_value_error_naming_it(change, match):
    params, xs, dL_dh = change(*make_problem(0, 4, ()))
    with pytest.raises(ValueError, match=match):
        bptt.lstm(params, xs, dL_dh)
